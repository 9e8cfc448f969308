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
