/** Terminal rendering shared by `cohort demo` and `cohort study status --watch`. */
export interface RoundRow {
  round: number;
  participants: string[];
  failures: { site: string; code: string }[];
  trainLoss: number;
  pooled: { loss: number; accuracy: number; auc?: number; sensitivity?: number; specificity?: number; n: number };
  durationMs: number;
}

export function progressBar(done: number, total: number, width = 30): string {
  const frac = total > 0 ? Math.min(1, done / total) : 0;
  const full = Math.round(frac * width);
  return `[${'#'.repeat(full)}${'-'.repeat(width - full)}] ${done}/${total} rounds (${Math.round(frac * 100)}%)`;
}

const f = (v: number | undefined, d = 3) => (v === undefined || Number.isNaN(v) ? '  -  ' : v.toFixed(d));

export const TABLE_HEADER = 'round  sites  train-loss  holdout-loss    AUC   accuracy  sensitivity  specificity  time(s)';

export function formatRow(r: RoundRow): string {
  const drop = r.failures.length ? `  (${r.failures.length} failed: ${r.failures.map((x) => `${x.site} ${x.code}`).join(', ')})` : '';
  return [
    String(r.round).padStart(5), String(r.participants.length).padStart(6), f(r.trainLoss, 4).padStart(11),
    f(r.pooled.loss, 4).padStart(13), f(r.pooled.auc).padStart(6), f(r.pooled.accuracy).padStart(10),
    f(r.pooled.sensitivity).padStart(12), f(r.pooled.specificity).padStart(12), (r.durationMs / 1000).toFixed(1).padStart(8),
  ].join(' ') + drop;
}

/** The metrics report's per-site and leave-one-site-out parts, as `/api/studies/:id/metrics` returns them. */
interface EstimateLike { value: number; lower: number; upper: number }
interface SiteLike { n: number; minCellCount: number; auc?: EstimateLike; accuracy?: EstimateLike; sensitivity?: EstimateLike; specificity?: EstimateLike; suppressed: string[]; unverifiable?: string[] }
export interface MetricsReportLike {
  minCellCount: number;
  rounds: { round: number; pooled: SiteLike; perSite: Record<string, SiteLike>; epsilon?: Record<string, number> }[];
  loso?: { status: string; folds: { heldOut: string; trainedOn: string[]; status: string; metrics?: SiteLike; global?: SiteLike; error?: { code: string } }[]; pooled?: SiteLike };
}

function est(m: SiteLike | undefined, k: 'auc' | 'accuracy' | 'sensitivity' | 'specificity'): string {
  const e = m?.[k];
  if (e) return `${e.value.toFixed(3)} (${e.lower.toFixed(3)}-${e.upper.toFixed(3)})`;
  if (m?.suppressed.includes(k)) return `<${m.minCellCount} cases`;
  if (m?.unverifiable?.includes(k)) return 'not shown';
  return '  -  ';
}

/** Cross-site evaluation of the latest round: the global model on each site's hold-out, and pooled. */
export function formatSiteTable(r: MetricsReportLike): string[] {
  const last = r.rounds.at(-1);
  if (!last) return [];
  const lines = [`per site, round ${last.round} (global model on each site's own hold-out; values from < ${r.minCellCount} cases withheld):`,
    `  ${'site'.padEnd(18)} ${'n'.padStart(5)}  ${'AUC (95% CI)'.padEnd(21)}  ${'sensitivity'.padEnd(21)}  ${'specificity'.padEnd(21)}${last.epsilon ? '  epsilon' : ''}`];
  const line = (name: string, m: SiteLike) => `  ${name.padEnd(18)} ${(m.n >= m.minCellCount ? String(m.n) : `<${m.minCellCount}`).padStart(5)}  ${est(m, 'auc').padEnd(21)}  ${est(m, 'sensitivity').padEnd(21)}  ${est(m, 'specificity').padEnd(21)}`;
  for (const [site, m] of Object.entries(last.perSite).sort(([a], [b]) => a.localeCompare(b))) {
    const eps = last.epsilon?.[site];
    lines.push(line(site, m) + (eps !== undefined ? `  ${eps.toFixed(2)}` : ''));
  }
  lines.push(line('pooled', last.pooled));
  return lines;
}

/** Leave-one-site-out: each site scored by a model trained without it, beside the global model's score. */
export function formatLosoTable(r: MetricsReportLike): string[] {
  if (!r.loso) return [];
  const lines = [`leave-one-site-out (${r.loso.status}): each site scored by a model trained without it`,
    `  ${'held-out site'.padEnd(18)} ${'AUC without it (95% CI)'.padEnd(24)}  ${'AUC of global model'.padEnd(21)}  status`];
  for (const f of r.loso.folds) lines.push(`  ${f.heldOut.padEnd(18)} ${est(f.metrics, 'auc').padEnd(24)}  ${est(f.global, 'auc').padEnd(21)}  ${f.status}${f.error ? ` ${f.error.code}` : ''}`);
  if (r.loso.pooled) lines.push(`  ${'pooled (unseen)'.padEnd(18)} ${est(r.loso.pooled, 'auc').padEnd(24)}`);
  return lines;
}
