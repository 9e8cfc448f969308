/**
 * Runs one simulation setting: partitions the data over virtual sites, starts them on the worker pool, and drives
 * the production StudyRunner over the in-memory transport, with an in-memory store, until the study ends. Then
 * audits the final model with the membership-inference attack.
 */
import { join } from 'node:path';
import pino, { type Logger } from 'pino';
import { CohortError, toWireError, type WireError } from '../protocol/errors.ts';
import type { StudyEvent } from '../protocol/events.ts';
import { StudyManifestSchema, parseMessage, type StudyManifestInput } from '../protocol/messages.ts';
import type { Metrics } from '../protocol/metrics.ts';
import { manifestHash, sha256Hex } from '../protocol/signing.ts';
import { Checkpoints } from '../coordinator/checkpoints.ts';
import { StudyRunner } from '../coordinator/rounds/study-runner.ts';
import { Store, type RoundRecord, type StudyRecord } from '../coordinator/store/store.ts';
import { checkStudyStrategy } from '../coordinator/strategies/registry.ts';
import { checkSecureAggregationStudy } from '../coordinator/secure-aggregation/study-check.ts';
import { krumMinUpdates } from '../coordinator/strategies/krum.ts';
import type { OnlineSite } from '../coordinator/transport/transport.ts';
import { membershipAudit, type MembershipResult } from './attacks/membership.ts';
import { loadTable, type Table } from './dataset.ts';
import { FaultPlan, attackPlan, maliciousSites } from './faults.ts';
import { InMemoryTransport } from './in-memory-transport.ts';
import { partitionRows } from './partition.ts';
import { seededEntropy, virtualIdentity } from './rng.ts';
import { scalingStats } from './matrix-source.ts';
import type { Scenario } from './scenario.ts';
import type { SitePool } from './site-pool.ts';

export interface RoundSummary {
  round: number;
  accuracy: number;
  auc: number | null;
  loss: number;
  /** Example-weighted training loss the sites reported; null under record-level DP, where sites report none. */
  trainLoss: number | null;
  participants: number;
  /** Site failures in the round (dropouts, stragglers, refusals), by code. */
  failures: Record<string, number>;
  attempts: number;
  /** Under secure aggregation: the session's neighbour degree and threshold, survivors and dropped sites. */
  secureAggregation?: { degree: number; threshold: number; survivors: number; dropped: number };
  durationMs: number;
}

export interface SiteSummary {
  name: string;
  rows: number;
  malicious: boolean;
  /** The site's metrics on its own hold-out rows under the final model (absent if it did not evaluate). */
  final: { n: number; accuracy: number; auc: number | null } | null;
}

/** What a setting's privacy was, and what it spent. */
export interface SettingPrivacy {
  secureAggregation: boolean;
  dp: 'none' | 'record' | 'client-central' | 'client-distributed' | 'record-distributed';
  /** `record`: each patient's guarantee; `client`: each site's whole contribution. */
  level: 'record' | 'client' | null;
  delta: number | null;
  noiseMultiplier: number | null;
  targetEpsilon: number | null;
  /**
   * Epsilon at delta after the last round: record level, the largest of the sites' own accountants (every site's
   * patients are protected at least this well); client level, the coordinator's. Null when there is no finite bound
   * (no DP, or a noise multiplier of 0).
   */
  epsilon: number | null;
  /** Smallest and largest per-site epsilon (sites with fewer rows spend more at the same noise). */
  perSiteRange: [number, number] | null;
}

export interface SettingResult {
  label: string;
  overrides: Record<string, unknown>;
  status: 'completed' | 'failed';
  error?: WireError;
  /** Sites' latest refusals of the study (policy, schema, budget), by code: how many, and one message. */
  refusals?: Record<string, { sites: number; message: string }>;
  strategy: string;
  sites: SiteSummary[];
  rounds: RoundSummary[];
  final: RoundSummary | null;
  membership: MembershipResult | null;
  /** Privacy spent (epsilon at delta) when the setting uses differential privacy; null without a finite bound. */
  epsilon: number | null;
  privacy: SettingPrivacy;
  injected: { tasks: number; dropouts: number; stragglers: number; coordinatorRestarts: number };
  /** SHA-256 of the final global model's checkpoint frame (equal across runs of the same scenario and seed). */
  modelSha256: string | null;
  durationMs: number;
}

export interface RunContext {
  pool: SitePool;
  /** Scratch folder for site directories. */
  workDir: string;
  /** Tables by CSV path, so a sweep reads its data once. */
  tables: Map<string, Promise<Table>>;
  onRound?: (round: RoundSummary, total: number) => void;
  /** Keep checkpoints on disk here (tests of resume); default in memory. */
  checkpointsDir?: string;
}

const EPOCH = new Date(0).toISOString();
const siteId = (name: string) => `virtual:${name}`;
const num = (x: number | undefined): number | null => (x === undefined || !Number.isFinite(x) ? null : x);

function summarize(r: RoundRecord, recordDp: boolean): RoundSummary {
  const failures: Record<string, number> = {};
  for (const f of r.failures) failures[f.code] = (failures[f.code] ?? 0) + 1;
  return {
    round: r.round, accuracy: r.pooled.accuracy, auc: num(r.pooled.auc), loss: r.pooled.loss, trainLoss: recordDp || !Number.isFinite(r.trainLoss) ? null : r.trainLoss,
    participants: r.participants.length, failures, attempts: r.attempts,
    ...(r.secureAggregation ? { secureAggregation: { degree: r.secureAggregation.degree, threshold: r.secureAggregation.threshold, survivors: r.secureAggregation.survivors, dropped: r.secureAggregation.dropped } } : {}),
    durationMs: r.durationMs,
  };
}

function refusalsByCode(refusals: NonNullable<StudyRecord['refusals']>): Record<string, { sites: number; message: string }> {
  const out: Record<string, { sites: number; message: string }> = {};
  for (const r of Object.values(refusals)) out[r.code] = { sites: (out[r.code]?.sites ?? 0) + 1, message: out[r.code]?.message ?? r.message };
  return out;
}

const finiteOrNull = (v: number | undefined): number | null => (v !== undefined && Number.isFinite(v) ? v : null);

/** The setting's privacy settings and, from the study's record, the epsilon it spent. */
function privacyOf(s: Scenario, study: StudyRecord | undefined): SettingPrivacy {
  const dp = s.privacy.dp;
  const mode = dp?.mode ?? 'none';
  const level = mode === 'none' ? null : mode === 'record' || mode === 'record-distributed' ? 'record' : 'client';
  const perSite = Object.values(study?.privacy?.perSite ?? {}).map((e) => (level === 'record' ? e.record : e.client)).filter((v): v is number => v !== undefined && Number.isFinite(v));
  const epsilon = level === null ? null
    : level === 'client' && study?.privacy?.client ? finiteOrNull(study.privacy.client.epsilon)
      : mode === 'record-distributed' && study?.privacy?.record ? finiteOrNull(study.privacy.record.epsilon)
      : perSite.length ? Math.max(...perSite) : null;
  return {
    secureAggregation: s.privacy.secureAggregation !== false, dp: mode, level, delta: dp && mode !== 'none' ? dp.delta : null,
    noiseMultiplier: dp?.noiseMultiplier ?? null, targetEpsilon: dp?.targetEpsilon ?? null, epsilon,
    perSiteRange: perSite.length ? [Math.min(...perSite), Math.max(...perSite)] : null,
  };
}

/** Default `minSites`: half the sites, at least 2 (when there are 2), and enough for Krum's n > 2f + 2. */
function minSitesFor(s: Scenario, sites: number): number {
  if (s.participation.minSites !== undefined) return s.participation.minSites;
  let min = Math.max(Math.min(2, sites), Math.ceil(sites / 2));
  if (s.strategy.name === 'krum' || s.strategy.name === 'multi-krum') min = Math.max(min, Math.min(sites, krumMinUpdates(s.strategy.byzantine)));
  return min;
}

/** The study manifest a scenario describes (what a researcher would submit). */
export function manifestFor(s: Scenario, sites: number): StudyManifestInput {
  return {
    name: s.name,
    task: { dataset: s.data.id, label: s.data.label },
    model: s.model,
    training: { rounds: s.rounds, ...s.training },
    strategy: s.strategy,
    participation: {
      // Virtual sites are all online from the start and a refusal does not change its mind: the schema check asks once.
      minSites: minSitesFor(s, sites), roundDeadlineMs: s.participation.roundDeadlineMs, waitForSitesMs: 0,
      maxRoundAttempts: s.participation.maxRoundAttempts,
    },
    privacy: { secureAggregation: s.privacy.secureAggregation, ...(s.privacy.dp ? { dp: s.privacy.dp } : {}) },
    evaluation: { holdoutFraction: s.evaluation.holdoutFraction },
    seed: s.seed,
  };
}

/** Every setting's study id: the same in every setting, so seeded draws keyed by it match across a sweep. */
export const STUDY_ID = 'simulation';

/**
 * What the coordinator refuses at study creation, checked for every setting before a simulation starts: the
 * manifest itself, a strategy that needs individual updates under secure aggregation
 * (COHORT_ERR_STUDY_STRATEGY_NEEDS_INDIVIDUAL), DP that cannot run with secure aggregation.
 */
export function checkSetting(setting: { label: string; scenario: Scenario }): void {
  const s = setting.scenario;
  try {
    const manifest = parseMessage(StudyManifestSchema, manifestFor(s, s.sites), 'study manifest');
    checkStudyStrategy(manifest);
    checkSecureAggregationStudy(manifest);
    // Malicious sites attack the quantized training lanes (simulations/faults.ts attackLanes); client-distributed DP
    // encodes its lanes differently (scaled, rounded, noised), and a silently honest "malicious" site would mislead.
    if (s.malicious.fraction > 0 && (s.privacy.dp?.mode === 'client-distributed' || s.privacy.dp?.mode === 'record-distributed')) {
      throw new CohortError('COHORT_ERR_SIM_SCENARIO_INVALID', `malicious sites are not simulated under ${s.privacy.dp.mode} DP yet; set malicious.fraction to 0 or use another DP mode`);
    }
  } catch (err) {
    if (!(err instanceof CohortError)) throw err;
    const hint = err.code === 'COHORT_ERR_STUDY_STRATEGY_NEEDS_INDIVIDUAL' || (err.code === 'COHORT_ERR_DP_INVALID' && s.privacy.secureAggregation !== false)
      ? ' (a simulation mirrors a real study: secure aggregation is on unless the scenario sets "privacy": {"secureAggregation": false}, or --set privacy.secureAggregation=false)' : '';
    throw new CohortError(err.code, `setting "${setting.label}": ${err.message}${hint}`, err.details);
  }
}

export async function runSetting(setting: { label: string; overrides: Record<string, unknown>; scenario: Scenario }, ctx: RunContext, index = 0): Promise<SettingResult> {
  const started = Date.now();
  const s = setting.scenario;
  const drop = s.partition.kind === 'column' ? [s.partition.column] : [];
  const tableKey = JSON.stringify([s.data, drop]);
  if (!ctx.tables.has(tableKey)) ctx.tables.set(tableKey, loadTable(s.data, drop));
  const table = await ctx.tables.get(tableKey)!;
  const parts = partitionRows(s.partition, {
    n: table.n, labels: table.y, numClasses: table.classes.length, sites: s.sites, seed: s.seed,
    ...(s.partition.kind === 'column' ? { column: () => table.column(drop[0]!) } : {}),
  });
  const bad = maliciousSites(parts.map((p) => p.name), s.malicious.fraction, s.seed);
  const manifestRaw = manifestFor(s, parts.length);
  const manifest = parseMessage(StudyManifestSchema, manifestRaw, 'study manifest');
  checkStudyStrategy(manifest);
  checkSecureAggregationStudy(manifest);

  const log: Logger = pino({ level: s.logLevel, base: { component: 'simulation' } }, pino.destination(2));
  const store = await Store.open(null, 'simulation');
  const checkpoints = new Checkpoints(ctx.checkpointsDir ?? null);
  const study: StudyRecord = {
    id: STUDY_ID, manifest, manifestRaw, manifestHash: manifestHash(manifestRaw), status: 'running',
    createdAt: new Date(0).toISOString(), updatedAt: new Date(0).toISOString(), completedRounds: 0, createdBy: 'simulation',
  };
  const w = table.width;
  const identities = parts.map((p) => virtualIdentity(s.seed, p.name));
  // Enrolled, as a hospital is before it joins a study: secure aggregation checks each site's key advertisement
  // against the identity key the coordinator holds.
  for (const [k, p] of parts.entries()) {
    await store.addSite({ id: siteId(p.name), name: p.name, publicKey: Buffer.from(identities[k]!.publicKey).toString('base64'), registeredAt: EPOCH, lastSeenAt: EPOCH });
  }
  await ctx.pool.init({
    runDir: join(ctx.workDir, `setting-${index + 1}`), dataset: s.data.id,
    table: { label: table.label, features: table.features, classes: table.classes, width: w, stats: s.data.standardize === 'global' ? scalingStats(table.x, w) : undefined },
    sites: parts.map((p, k) => {
      const x = new Float64Array(p.rows.length * w);
      p.rows.forEach((r, k) => x.set(table.x.subarray(r * w, (r + 1) * w), k * w));
      return {
        name: p.name, id: siteId(p.name), secretKey: identities[k]!.secretKey,
        x, y: Int32Array.from(p.rows, (r) => table.y[r]!), rowIds: Int32Array.from(p.rows), malicious: bad.has(p.name),
      };
    }),
    policy: { requireSignedManifests: false, minSitesPerAggregate: 1, ...s.sitePolicy },
    approval: { studyId: study.id, manifestHash: study.manifestHash! },
    attack: bad.size ? attackPlan(s.malicious) : null,
    seed: s.seed, logLevel: s.logLevel,
  });
  const online: OnlineSite[] = parts.map((p) => ({ id: siteId(p.name), name: p.name, connectedAt: EPOCH }));
  const transport = new InMemoryTransport(online, (site, task) => ctx.pool.run(site, task), new FaultPlan(s.faults, s.seed));

  // Under record-level DP a site's training loss is a function of its data that no noise protects: it sends 0.
  const recordDp = s.privacy.dp?.mode === 'record' || s.privacy.dp?.mode === 'record-distributed';
  const restartAfter = new Set(s.faults.restartCoordinatorAfter);
  let restarts = 0;
  let finish: () => void = () => undefined;
  const done = new Promise<void>((resolve) => { finish = resolve; });
  const emit = (e: StudyEvent) => {
    if (e.studyId !== study.id) return;
    if (e.type === 'round' && e.status === 'completed' && e.round !== undefined) {
      const rec = store.listRounds(study.id).find((r) => r.round === e.round);
      if (rec) ctx.onRound?.(summarize(rec, recordDp), s.rounds);
      if (restartAfter.has(e.round) && e.round < s.rounds) {
        // A coordinator restart: this runner stops at its next checkpoint of control; a new one resumes the study.
        const old = runner;
        void old.stop(study.id).then(() => {
          restarts++;
          runner = makeRunner();
          runner.start(study.id);
        });
      }
    }
    if (e.type === 'study' && (e.status === 'completed' || e.status === 'failed')) finish();
  };
  const entropy = seededEntropy(s.seed);
  const makeRunner = () => new StudyRunner({ store, transport, checkpoints, log, emit, entropy });
  let runner = makeRunner();
  await store.addStudy(study);
  runner.start(study.id);
  await done;
  await runner.stopAll();
  if (ctx.pool.fatal) throw ctx.pool.fatal;

  const final = store.mustGetStudy(study.id);
  const rounds = store.listRounds(study.id).sort((a, b) => a.round - b.round).map((r) => summarize(r, recordDp));
  const last = store.listRounds(study.id).find((r) => r.round === final.completedRounds);
  let membership: MembershipResult | null = null;
  const weights = final.completedRounds > 0 ? await checkpoints.loadBytes(study.id, final.completedRounds) : null;
  if (s.membershipInference && final.model && weights) {
    membership = membershipAudit(await ctx.pool.losses({ dataset: s.data.id, model: final.model, weights, holdoutFraction: s.evaluation.holdoutFraction, seed: s.seed }));
  }
  const perSite: Record<string, Metrics> = last?.perSite ?? {};
  const privacy = privacyOf(s, final);
  return {
    label: setting.label, overrides: setting.overrides, status: final.status === 'completed' ? 'completed' : 'failed',
    ...(final.error ? { error: final.error } : {}),
    ...(final.refusals && Object.keys(final.refusals).length ? { refusals: refusalsByCode(final.refusals) } : {}),
    strategy: s.strategy.name,
    sites: parts.map((p) => {
      const m = perSite[p.name];
      return { name: p.name, rows: p.rows.length, malicious: bad.has(p.name), final: m ? { n: m.n, accuracy: m.accuracy, auc: num(m.auc) } : null };
    }),
    rounds, final: rounds.at(-1) ?? null, membership, epsilon: privacy.epsilon, privacy,
    injected: { tasks: transport.counts.sent, dropouts: transport.counts.dropout, stragglers: transport.counts.straggler, coordinatorRestarts: restarts },
    modelSha256: weights ? sha256Hex(weights) : null,
    durationMs: Date.now() - started,
  };
}

/** A setting that could not start (bad partition, refused strategy) as a failed result, so a sweep carries on. */
export function failedSetting(setting: { label: string; overrides: Record<string, unknown>; scenario: Scenario }, err: unknown, started: number): SettingResult {
  if (err instanceof CohortError && err.code === 'COHORT_ERR_SIM_WORKER_FAILED') throw err;
  return {
    label: setting.label, overrides: setting.overrides, status: 'failed', error: toWireError(err), strategy: setting.scenario.strategy.name,
    sites: [], rounds: [], final: null, membership: null, epsilon: null, privacy: privacyOf(setting.scenario, undefined), injected: { tasks: 0, dropouts: 0, stragglers: 0, coordinatorRestarts: 0 }, modelSha256: null, durationMs: Date.now() - started,
  };
}
