/**
 * A study's clinical metrics, per round, pooled and per site (cross-site evaluation: each site's hold-out scored by
 * the global model), plus leave-one-site-out results, all computed from the counts the sites sent with
 * protocol/metrics. The API, the dashboard, the CLI and the model card all read this one report, so no client
 * re-implements a statistic.
 *
 * Small cells: a per-site value resting on fewer cases than the larger of the coordinator's floor and the site's
 * own declared minimum cell count is withheld (named in `suppressed`). Pooled values sum every site's counts.
 */
import type { EvalCounts } from '../protocol/messages.ts';
import { clinicalMetrics, DEFAULT_MIN_CELL_COUNT, poolCounts, wilsonInterval, type ClinicalMetrics, type Metrics } from '../protocol/metrics.ts';
import type { LosoFold } from './rounds/leave-one-site-out.ts';
import type { RoundRecord, SiteFailure, StudyRecord } from './store/store.ts';

/** Per-site metrics; `unverifiable` names values whose case counts this coordinator cannot check. */
export type SiteMetrics = ClinicalMetrics & { unverifiable?: string[] };

export interface RoundMetrics {
  round: number;
  participants: string[];
  failures: SiteFailure[];
  attempts: number;
  trainLoss: number;
  startedAt: string;
  completedAt: string;
  durationMs: number;
  pooled: ClinicalMetrics;
  /** Cross-site evaluation: the new global model on each site's own hold-out. */
  perSite: Record<string, SiteMetrics>;
  /** Privacy loss spent so far per site (epsilon), when the study uses differential privacy. */
  epsilon?: Record<string, number>;
}

export interface LosoFoldMetrics {
  heldOut: string;
  trainedOn: string[];
  rounds: number;
  status: LosoFold['status'];
  /** The fold's model (trained without `heldOut`) on `heldOut`'s hold-out. */
  metrics?: SiteMetrics;
  /** For comparison: the study's final global model (which `heldOut` helped train) on the same hold-out. */
  global?: SiteMetrics;
  failures: SiteFailure[];
  error?: { code: string; message: string };
}

export interface LosoMetrics {
  status: 'running' | 'completed';
  folds: LosoFoldMetrics[];
  /** Every held-out site's counts summed: each patient scored by a model that never saw their hospital. */
  pooled?: ClinicalMetrics;
}

export interface StudyMetricsReport {
  studyId: string;
  minCellCount: number;
  methods: { auc: string; proportions: string; calibration: string; suppression: string };
  rounds: RoundMetrics[];
  loso?: LosoMetrics;
}

export const METHODS: StudyMetricsReport['methods'] = {
  auc: 'DeLong (1988) from score histograms, Wald 95% interval clipped to [0, 1]',
  proportions: 'Wilson score 95% interval; threshold 0.5',
  calibration: '10 equal-width score bins; ECE weighted by bin size',
  suppression: 'a per-site value from fewer cases than the minimum cell count (the larger of the coordinator floor and the site policy) is withheld',
};

/** A site's metrics from its counts, honouring its own declared minimum cell count. */
export function siteMetrics(counts: EvalCounts, floor: number): SiteMetrics {
  return clinicalMetrics(counts, { minCellCount: Math.max(floor, counts.minCellCount ?? 0) });
}

/**
 * Without the site's counts (rounds recorded before they were kept) only n is known, not how many positives and
 * negatives are behind a sensitivity, specificity or AUC; those are withheld rather than shown from a cell that
 * might be tiny.
 */
function fromSummary(m: Metrics, minCellCount: number): SiteMetrics {
  const out: SiteMetrics = { n: m.n, minCellCount, suppressed: [], unverifiable: [] };
  if (m.n >= minCellCount && m.n > 0) {
    out.loss = m.loss;
    out.accuracy = { value: m.accuracy, n: m.n, ...wilsonInterval(Math.round(m.accuracy * m.n), m.n) };
  } else if (m.n > 0) {
    out.suppressed.push('loss', 'accuracy');
  }
  for (const k of ['auc', 'sensitivity', 'specificity'] as const) if (m[k] !== undefined) out.unverifiable!.push(k);
  return out;
}

/**
 * Epsilon per site from a round record (`round.privacy`, coordinator/privacy/study-privacy.ts): each site's
 * record-level epsilon in record mode, its client-level epsilon in the client modes.
 */
export function epsilonOf(r: RoundRecord): Record<string, number> | undefined {
  const e = r.privacy ? Object.fromEntries(Object.entries(r.privacy.perSite).map(([site, s]) => [site, s.record ?? s.client])) : undefined;
  if (!e) return undefined;
  const out = Object.fromEntries(Object.entries(e).filter((kv): kv is [string, number] => typeof kv[1] === 'number' && Number.isFinite(kv[1])));
  return Object.keys(out).length ? out : undefined;
}

export function roundMetrics(r: RoundRecord, floor: number): RoundMetrics {
  const perSite: Record<string, SiteMetrics> = {};
  for (const [site, m] of Object.entries(r.perSite)) {
    const c = r.perSiteCounts?.[site];
    perSite[site] = c ? siteMetrics(c, floor) : fromSummary(m, floor);
  }
  const epsilon = epsilonOf(r);
  return {
    round: r.round, participants: r.participants, failures: r.failures, attempts: r.attempts, trainLoss: r.trainLoss,
    startedAt: r.startedAt, completedAt: r.completedAt, durationMs: r.durationMs,
    pooled: clinicalMetrics(r.pooledCounts, { minCellCount: floor }),
    perSite,
    ...(epsilon ? { epsilon } : {}),
  };
}

/** The whole report. `minCellCount` may only raise the coordinator's floor (default 10). */
export function studyMetrics(study: StudyRecord, rounds: readonly RoundRecord[], opts: { minCellCount?: number } = {}): StudyMetricsReport {
  const floor = Math.max(DEFAULT_MIN_CELL_COUNT, opts.minCellCount ?? 0);
  const out: StudyMetricsReport = { studyId: study.id, minCellCount: floor, methods: METHODS, rounds: rounds.map((r) => roundMetrics(r, floor)) };
  if (study.loso) {
    const last = rounds.at(-1);
    const folds: LosoFoldMetrics[] = study.loso.folds.map((f) => {
      const globalCounts = last?.perSiteCounts?.[f.heldOut];
      return {
        heldOut: f.heldOut, trainedOn: f.trainedOn, rounds: f.rounds, status: f.status, failures: f.failures,
        ...(f.counts ? { metrics: siteMetrics(f.counts, floor) } : {}),
        ...(globalCounts ? { global: siteMetrics(globalCounts, floor) } : {}),
        ...(f.error ? { error: { code: f.error.code, message: f.error.message } } : {}),
      };
    });
    const counts = study.loso.folds.flatMap((f) => (f.counts ? [f.counts] : []));
    out.loso = { status: study.loso.status, folds, ...(counts.length ? { pooled: clinicalMetrics(poolCounts(counts), { minCellCount: floor }) } : {}) };
  }
  return out;
}

/** NaN and infinities are not JSON: send them as null, which clients show as "—". */
export function jsonSafe<T>(v: T): T {
  return JSON.parse(JSON.stringify(v, (_k, x: unknown) => (typeof x === 'number' && !Number.isFinite(x) ? null : x))) as T;
}
