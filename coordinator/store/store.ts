/**
 * The coordinator's durable state: studies, rounds, sites, tokens, audit. `Store` is the interface every backend
 * implements; the embedded default is lowdb (one JSON file, one serialized writer: `lowdb-store.ts`), and a
 * PostgreSQL backend (`postgres-store.ts`) lets several coordinator replicas share one state. Both run the same
 * operations (`operations.ts`), so they enforce the same rules.
 *
 * Reads are synchronous: every backend keeps the whole state in memory and serves reads from it. Writes are
 * promises that resolve once the change is durable.
 */
import type { ResolvedModel, SchemaReport, Standardization, StudyManifest, EvalCounts } from '../../protocol/messages.ts';
import type { Metrics } from '../../protocol/metrics.ts';
import type { WireError } from '../../protocol/errors.ts';
import type { LosoResult } from '../rounds/leave-one-site-out.ts';
import type { RoundPrivacy, StudyPrivacy } from '../privacy/study-privacy.ts';
import { LowdbStore } from './lowdb-store.ts';

export type StudyStatus = 'created' | 'running' | 'stopped' | 'completed' | 'failed';

export interface StudyRecord {
  id: string;
  manifest: StudyManifest;
  /** The manifest exactly as the researcher submitted (and signed) it; sites verify and approve this. */
  manifestRaw?: unknown;
  manifestHash?: string;
  signature?: string;
  researcherPublicKey?: string;
  createdBy?: string;
  status: StudyStatus;
  createdAt: string;
  updatedAt: string;
  /** Rounds whose aggregate is checkpointed and recorded; the next round to run is completedRounds + 1. */
  completedRounds: number;
  /** Set once every site's schema is checked, before round 1. */
  model?: ResolvedModel;
  schemas?: Record<string, SchemaReport>;
  /** Feature means and standard deviations pooled across sites before round 1 (federated standardization). */
  standardization?: Standardization;
  /**
   * Latest coded refusal per site (not approved, policy breach, ...), shown to the researcher. A schema mismatch
   * carries `details.mismatches`: each field that differs from the manifest, with what was expected and found.
   */
  refusals?: Record<string, { code: string; message: string; at: string; details?: Record<string, unknown> }>;
  error?: WireError;
  /** Differential privacy: epsilon spent per site (record- and client-level apart); see coordinator/privacy. */
  privacy?: StudyPrivacy;
  /** Leave-one-site-out evaluation, when the manifest asks for it (coordinator/rounds/leave-one-site-out.ts). */
  loso?: LosoResult;
}

export interface SiteFailure {
  site: string;
  code: string;
  message: string;
  stage: 'train' | 'evaluate' | 'describe' | 'stats' | 'secagg-advertise' | 'secagg-share' | 'secagg-unmask';
  details?: Record<string, unknown>;
}

export interface RoundRecord {
  studyId: string;
  round: number;
  participants: string[];
  failures: SiteFailure[];
  numExamples: number;
  trainLoss: number;
  pooled: Metrics;
  pooledCounts: EvalCounts;
  perSite: Record<string, Metrics>;
  /**
   * Each site's evaluation counts of the new global model on its own hold-out (cross-site evaluation), as the site
   * sent them (already cut down to its minimum cell count); per-site metrics with intervals are computed from these.
   */
  perSiteCounts?: Record<string, EvalCounts>;
  /** Which tfjs backend each site trained on (tensorflow, wasm or cpu). */
  backends?: Record<string, string>;
  /** Set when the round ran under secure aggregation: the session's shape and how many sites it kept. */
  secureAggregation?: { sessionId: string; sites: number; threshold: number; degree: number; survivors: number; dropped: number; maxWeight: number };
  /** Task ids per participating site; they match the `taskId` in each site's ledger. */
  tasks?: Record<string, { train: string; evaluate?: string }>;
  /** Differential privacy: what this round spent, per site and (client modes) at the coordinator. */
  privacy?: RoundPrivacy;
  attempts: number;
  startedAt: string;
  completedAt: string;
  durationMs: number;
}

export interface SiteRecord {
  id: string;
  name: string;
  publicKey: string;
  registeredAt: string;
  lastSeenAt: string;
  revokedAt?: string;
  /** Id of the enrollment token used, if any. */
  enrolledWith?: string;
}

export interface TokenRecord {
  id: string;
  kind: 'api' | 'enrollment';
  /** SHA-256 of the token; the token itself is never stored. */
  hash: string;
  role: string;
  name: string;
  createdAt: string;
  expiresAt?: string;
  usedAt?: string;
  revokedAt?: string;
}

/** The coordinator's own audit trail; ids (study, round, task) match the sites' ledgers. */
export interface AuditRecord {
  seq: number;
  at: string;
  action: string;
  actor?: string | undefined;
  studyId?: string;
  round?: number;
  site?: string;
  details?: Record<string, unknown>;
}

export interface StoreData {
  version: 1;
  coordinatorId: string;
  studies: StudyRecord[];
  rounds: RoundRecord[];
  sites: SiteRecord[];
  tokens: TokenRecord[];
  audit: AuditRecord[];
}

/** Held by the one replica that runs a study; see `Store.leaseStudy`. */
export interface StudyLease {
  /** Calls `fn` once if the lease is lost (database connection gone, or the study stopped elsewhere). */
  onLost(fn: () => void): void;
  release(): Promise<void>;
}

export interface Store {
  /** 'lowdb': this process alone owns the state. 'postgres': replicas share it. */
  readonly backend: 'lowdb' | 'postgres';
  readonly coordinatorId: string;

  listStudies(): StudyRecord[];
  getStudy(id: string): StudyRecord | undefined;
  mustGetStudy(id: string): StudyRecord;
  addStudy(study: StudyRecord): Promise<void>;
  updateStudy(id: string, patch: Partial<Omit<StudyRecord, 'id'>>): Promise<StudyRecord>;
  /**
   * Records a completed round and advances the study in one write. Refuses a round that is not the next one, so
   * a round is recorded exactly once even if a resumed runner (or a second replica) repeats work.
   */
  completeRound(record: RoundRecord): Promise<void>;
  listRounds(studyId: string): RoundRecord[];

  listSites(): SiteRecord[];
  getSiteByName(name: string): SiteRecord | undefined;
  addSite(site: SiteRecord): Promise<void>;
  revokeSite(id: string): Promise<SiteRecord>;
  touchSite(id: string): Promise<void>;

  listTokens(): TokenRecord[];
  addToken(t: TokenRecord): Promise<void>;
  /** Spends a one-time enrollment token and registers the site in the same write (one token, one site). */
  enrollSite(tokenHash: string, site: SiteRecord): Promise<void>;
  revokeToken(id: string): Promise<void>;

  appendAudit(entry: Omit<AuditRecord, 'seq' | 'at'>): Promise<AuditRecord>;
  listAudit(filter?: { studyId?: string }): AuditRecord[];

  /**
   * Brings this process's view up to date with writes made by other replicas (a no-op for lowdb). Called before
   * serving a request or a handshake, so a client that wrote through one replica reads its write through another.
   */
  sync(): Promise<void>;
  /**
   * Claims the right to run a study. lowdb: always granted. PostgreSQL: a session advisory lock, so one replica
   * runs a study at a time and another takes over when that one dies. Resolves undefined when another holds it.
   */
  leaseStudy(studyId: string): Promise<StudyLease | undefined>;
  /** Waits for queued writes (for shutdown). */
  flush(): Promise<void>;
  /** Flushes and releases connections. */
  close(): Promise<void>;
}

/** The embedded default: `Store.open(file | null, coordinatorId)` opens a lowdb store (null: in memory). */
export const Store = {
  open(file: string | null, coordinatorId: string): Promise<Store> {
    return LowdbStore.open(file, coordinatorId);
  },
};
