/**
 * The coordinator's durable state: studies, rounds, sites. One serialized writer over lowdb: every mutation runs
 * in a queue and ends with an atomic write of the whole file (lowdb's JSONFile writes a temp file and renames).
 */
import { Low, Memory } from 'lowdb';
import { JSONFile } from 'lowdb/node';
import type { ResolvedModel, SchemaReport, Standardization, StudyManifest, EvalCounts } from '../../protocol/messages.ts';
import type { Metrics } from '../../protocol/metrics.ts';
import type { WireError } from '../../protocol/errors.ts';
import type { LosoResult } from '../rounds/leave-one-site-out.ts';
import { CohortError } from '../../protocol/errors.ts';
import type { RoundPrivacy, StudyPrivacy } from '../privacy/study-privacy.ts';

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
  stage: 'train' | 'evaluate' | 'describe' | 'stats';
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

export class Store {
  private queue: Promise<unknown> = Promise.resolve();

  private constructor(private readonly db: Low<StoreData>) {}

  static async open(file: string | null, coordinatorId: string): Promise<Store> {
    const initial: StoreData = { version: 1, coordinatorId, studies: [], rounds: [], sites: [], tokens: [], audit: [] };
    const db = new Low<StoreData>(file ? new JSONFile<StoreData>(file) : new Memory<StoreData>(), initial);
    await db.read();
    db.data ??= initial;
    db.data.tokens ??= [];
    db.data.audit ??= [];
    return new Store(db);
  }

  get coordinatorId(): string {
    return this.db.data.coordinatorId;
  }

  /** Runs `fn` against the data, alone, then persists. If `fn` throws, nothing is written. */
  private mutate<T>(fn: (data: StoreData) => T): Promise<T> {
    const run = this.queue.then(async () => {
      const snapshot = structuredClone(this.db.data);
      try {
        const out = fn(this.db.data);
        await this.db.write();
        return out;
      } catch (err) {
        this.db.data = snapshot;
        throw err;
      }
    });
    this.queue = run.catch(() => undefined);
    return run;
  }

  // studies
  listStudies(): StudyRecord[] {
    return structuredClone(this.db.data.studies);
  }
  getStudy(id: string): StudyRecord | undefined {
    const s = this.db.data.studies.find((x) => x.id === id);
    return s && structuredClone(s);
  }
  mustGetStudy(id: string): StudyRecord {
    const s = this.getStudy(id);
    if (!s) throw new CohortError('COHORT_ERR_STUDY_NOT_FOUND', `study ${id} not found`);
    return s;
  }
  addStudy(study: StudyRecord): Promise<void> {
    return this.mutate((d) => {
      d.studies.push(structuredClone(study));
    });
  }
  updateStudy(id: string, patch: Partial<Omit<StudyRecord, 'id'>>): Promise<StudyRecord> {
    return this.mutate((d) => {
      const s = d.studies.find((x) => x.id === id);
      if (!s) throw new CohortError('COHORT_ERR_STUDY_NOT_FOUND', `study ${id} not found`);
      Object.assign(s, structuredClone(patch), { updatedAt: new Date().toISOString() });
      return structuredClone(s);
    });
  }

  /**
   * Records a completed round and advances the study in one write. Refuses a round that is not the next one, so
   * a round is recorded exactly once even if a resumed runner repeats work.
   */
  completeRound(record: RoundRecord): Promise<void> {
    return this.mutate((d) => {
      const s = d.studies.find((x) => x.id === record.studyId);
      if (!s) throw new CohortError('COHORT_ERR_STUDY_NOT_FOUND', `study ${record.studyId} not found`);
      if (record.round !== s.completedRounds + 1) {
        throw new CohortError('COHORT_ERR_ROUND_STALE', `round ${record.round} is not the next round (${s.completedRounds + 1})`);
      }
      d.rounds.push(structuredClone(record));
      s.completedRounds = record.round;
      s.updatedAt = record.completedAt;
      d.audit.push({
        seq: (d.audit.at(-1)?.seq ?? 0) + 1, at: record.completedAt, action: 'round.completed', studyId: record.studyId, round: record.round,
        details: { participants: record.participants, tasks: record.tasks ?? {}, failures: record.failures.map((f) => ({ site: f.site, code: f.code })) },
      });
    });
  }
  listRounds(studyId: string): RoundRecord[] {
    return structuredClone(this.db.data.rounds.filter((r) => r.studyId === studyId).sort((a, b) => a.round - b.round));
  }

  // sites
  listSites(): SiteRecord[] {
    return structuredClone(this.db.data.sites);
  }
  getSiteByName(name: string): SiteRecord | undefined {
    const s = this.db.data.sites.find((x) => x.name === name);
    return s && structuredClone(s);
  }
  addSite(site: SiteRecord): Promise<void> {
    return this.mutate((d) => {
      if (d.sites.some((x) => x.name === site.name)) {
        throw new CohortError('COHORT_ERR_AUTH_KEY_MISMATCH', `site ${site.name} is already registered`);
      }
      d.sites.push(structuredClone(site));
    });
  }
  revokeSite(id: string): Promise<SiteRecord> {
    return this.mutate((d) => {
      const s = d.sites.find((x) => x.id === id || x.name === id);
      if (!s) throw new CohortError('COHORT_ERR_AUTH_UNKNOWN_SITE', `no site ${id}`);
      s.revokedAt ??= new Date().toISOString();
      return structuredClone(s);
    });
  }

  // tokens
  listTokens(): TokenRecord[] {
    return this.db.data.tokens.map((t) => ({ ...t }));
  }
  addToken(t: TokenRecord): Promise<void> {
    return this.mutate((d) => {
      d.tokens.push({ ...t });
    });
  }
  /**
   * Spends a one-time enrollment token and registers the site in the same write, so a token enrolls one site only
   * even when two requests race.
   */
  enrollSite(tokenHash: string, site: SiteRecord): Promise<void> {
    return this.mutate((d) => {
      const t = d.tokens.find((x) => x.kind === 'enrollment' && x.hash === tokenHash);
      if (!t || t.usedAt || t.revokedAt || (t.expiresAt && Date.parse(t.expiresAt) <= Date.now())) {
        throw new CohortError('COHORT_ERR_AUTH_ENROLLMENT_TOKEN');
      }
      if (t.name && t.name !== site.name) throw new CohortError('COHORT_ERR_AUTH_ENROLLMENT_TOKEN', `this token was issued for site "${t.name}"`);
      if (d.sites.some((x) => x.name === site.name)) throw new CohortError('COHORT_ERR_AUTH_KEY_MISMATCH', `site ${site.name} is already registered`);
      t.usedAt = new Date().toISOString();
      d.sites.push({ ...structuredClone(site), enrolledWith: t.id });
    });
  }
  revokeToken(id: string): Promise<void> {
    return this.mutate((d) => {
      const t = d.tokens.find((x) => x.id === id);
      if (t) t.revokedAt ??= new Date().toISOString();
    });
  }

  // audit
  appendAudit(entry: Omit<AuditRecord, 'seq' | 'at'>): Promise<AuditRecord> {
    return this.mutate((d) => {
      const rec: AuditRecord = { seq: (d.audit.at(-1)?.seq ?? 0) + 1, at: new Date().toISOString(), ...structuredClone(entry) };
      d.audit.push(rec);
      return structuredClone(rec);
    });
  }
  listAudit(filter: { studyId?: string } = {}): AuditRecord[] {
    return structuredClone(this.db.data.audit.filter((a) => !filter.studyId || a.studyId === filter.studyId));
  }

  touchSite(id: string): Promise<void> {
    return this.mutate((d) => {
      const s = d.sites.find((x) => x.id === id);
      if (s) s.lastSeenAt = new Date().toISOString();
    });
  }

  /** Waits for queued writes (for shutdown). */
  flush(): Promise<void> {
    return this.queue.then(() => undefined);
  }
}
