/**
 * Clinical metrics from counts. Sites report confusion counts and score histograms; pooled metrics are sums of
 * those, so the coordinator never needs a per-patient score. With 1,000 bins the pooled AUC from histograms
 * differs from the exact pooled AUC only by ties inside a bin.
 */
import type { EvalCounts } from './messages.ts';

export const HISTOGRAM_BINS = 1000;

export function binOf(score: number, bins = HISTOGRAM_BINS): number {
  if (!(score > 0)) return 0;
  if (score >= 1) return bins - 1;
  return Math.min(bins - 1, Math.floor(score * bins));
}

/** Exact AUC (Mann-Whitney U with ties counted half) from scores and 0/1 labels. */
export function exactAuc(scores: ArrayLike<number>, labels: ArrayLike<number>): number | undefined {
  const idx = Array.from({ length: scores.length }, (_, i) => i).sort((a, b) => scores[a]! - scores[b]!);
  let pos = 0;
  let neg = 0;
  for (let i = 0; i < labels.length; i++) (labels[i] === 1 ? pos++ : neg++);
  if (pos === 0 || neg === 0) return undefined;
  // Average ranks over ties.
  let rankSumPos = 0;
  for (let i = 0; i < idx.length;) {
    let j = i;
    while (j + 1 < idx.length && scores[idx[j + 1]!] === scores[idx[i]!]) j++;
    const avgRank = (i + j) / 2 + 1;
    for (let k = i; k <= j; k++) if (labels[idx[k]!] === 1) rankSumPos += avgRank;
    i = j + 1;
  }
  return (rankSumPos - (pos * (pos + 1)) / 2) / (pos * neg);
}

/** AUC from per-class score histograms (ties within a bin count half). */
export function histogramAuc(histPos: readonly number[], histNeg: readonly number[]): number | undefined {
  const pos = histPos.reduce((a, b) => a + b, 0);
  const neg = histNeg.reduce((a, b) => a + b, 0);
  if (pos === 0 || neg === 0) return undefined;
  let negBelow = 0;
  let u = 0;
  for (let b = 0; b < histPos.length; b++) {
    const p = histPos[b] ?? 0;
    const n = histNeg[b] ?? 0;
    u += p * (negBelow + n / 2);
    negBelow += n;
  }
  return u / (pos * neg);
}

export interface Metrics {
  n: number;
  loss: number;
  accuracy: number;
  auc?: number;
  sensitivity?: number;
  specificity?: number;
}

export function metricsFromCounts(c: EvalCounts): Metrics {
  const m: Metrics = { n: c.n, loss: c.n > 0 ? c.lossSum / c.n : NaN, accuracy: c.n > 0 ? c.correct / c.n : NaN };
  if (c.tp !== undefined && c.fn !== undefined && c.tp + c.fn > 0) m.sensitivity = c.tp / (c.tp + c.fn);
  if (c.tn !== undefined && c.fp !== undefined && c.tn + c.fp > 0) m.specificity = c.tn / (c.tn + c.fp);
  const auc = c.auc ?? (c.histPos && c.histNeg ? histogramAuc(c.histPos, c.histNeg) : undefined);
  if (auc !== undefined) m.auc = auc;
  return m;
}

function addOpt(a: number | undefined, b: number | undefined): number | undefined {
  return a === undefined && b === undefined ? undefined : (a ?? 0) + (b ?? 0);
}

function addHist(a: readonly number[] | undefined, b: readonly number[] | undefined): number[] | undefined {
  if (!a) return b ? [...b] : undefined;
  if (!b) return [...a];
  const len = Math.max(a.length, b.length);
  return Array.from({ length: len }, (_, i) => (a[i] ?? 0) + (b[i] ?? 0));
}

/** Pools site counts by summation. The pooled AUC comes from the summed histograms, never from site AUCs. */
export function poolCounts(all: readonly EvalCounts[]): EvalCounts {
  let out: EvalCounts = { n: 0, lossSum: 0, correct: 0 };
  for (const c of all) {
    const next: EvalCounts = { n: out.n + c.n, lossSum: out.lossSum + c.lossSum, correct: out.correct + c.correct };
    const tp = addOpt(out.tp, c.tp); if (tp !== undefined) next.tp = tp;
    const fp = addOpt(out.fp, c.fp); if (fp !== undefined) next.fp = fp;
    const tn = addOpt(out.tn, c.tn); if (tn !== undefined) next.tn = tn;
    const fn = addOpt(out.fn, c.fn); if (fn !== undefined) next.fn = fn;
    const hp = addHist(out.histPos, c.histPos); if (hp) next.histPos = hp;
    const hn = addHist(out.histNeg, c.histNeg); if (hn) next.histNeg = hn;
    out = next;
  }
  return out;
}
