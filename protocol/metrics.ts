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

// ---------------------------------------------------------------- clinical metrics with uncertainty

/**
 * Clinical metrics with 95% intervals, all from counts (confusion counts and score histograms), so the same code
 * serves one site's hold-out and the pooled hold-out of a study.
 *
 * - AUC: DeLong, DeLong & Clarke-Pearson (1988) variance computed from the histograms. Every case in a bin has the
 *   same placement value (the share of the other class below it, ties counting half), so the DeLong structural
 *   components are exact sums over bins; the only approximation is that scores sharing a 1/1000-wide bin count as
 *   tied. The interval is the Wald interval auc ± z·SE clipped to [0, 1] (as pROC's `ci.auc(method = "delong")`).
 *   `hanleyMcNeilSe` (Hanley & McNeil 1982) is kept for comparison; it assumes exponential score distributions.
 * - Accuracy, sensitivity, specificity: proportions with Wilson score intervals (no continuity correction).
 * - Calibration: a reliability curve (per score bin, the observed positive rate against the mean predicted score)
 *   and the expected calibration error; the mean predicted score in a bin uses histogram bin centres, so it is
 *   within half a histogram bin (0.0005) of the mean of the raw scores.
 *
 * Small numbers: any value computed from fewer than `minCellCount` cases is suppressed (absent, and its name listed
 * in `suppressed`), so a per-site figure never describes a handful of identifiable patients.
 */

/** The default minimum number of cases behind any reported per-site value. */
export const DEFAULT_MIN_CELL_COUNT = 10;
/** Two-sided 95% normal quantile. */
export const Z95 = 1.959963984540054;

export interface Interval {
  lower: number;
  upper: number;
}

/** A proportion or AUC with its 95% interval and the number of cases it is computed from. */
export interface Estimate extends Interval {
  value: number;
  /** Cases behind the value (denominator of a proportion; positives + negatives for the AUC). */
  n: number;
}

export interface AucEstimate extends Estimate {
  se: number;
  method: 'delong';
  nPos: number;
  nNeg: number;
}

export interface CalibrationBin {
  /** Score range [lower, upper) of the bin (the last bin includes 1). */
  lower: number;
  upper: number;
  n: number;
  /** Absent when the bin is empty or holds fewer than minCellCount cases. */
  meanPredicted?: number;
  observedRate?: number;
}

export interface Calibration {
  bins: CalibrationBin[];
  /** Expected calibration error: Σ_b (n_b / N)·|observed_b − predicted_b|, over all bins (suppressed ones too). */
  ece: number;
  n: number;
}

export interface ClinicalMetrics {
  n: number;
  minCellCount: number;
  loss?: number;
  accuracy?: Estimate;
  sensitivity?: Estimate;
  specificity?: Estimate;
  auc?: AucEstimate;
  calibration?: Calibration;
  /** Names of the values withheld because fewer than minCellCount cases were behind them. */
  suppressed: string[];
}

export interface ClinicalOptions {
  /** Withhold any value computed from fewer cases than this (default 10; 0 disables suppression). */
  minCellCount?: number;
  /** Number of equal-width score bins of the reliability curve (default 10). */
  calibrationBins?: number;
  z?: number;
}

/** Wilson score interval for `successes` out of `trials` (Wilson 1927; Newcombe 1998, method 3). */
export function wilsonInterval(successes: number, trials: number, z = Z95): Interval {
  if (!(trials > 0)) return { lower: 0, upper: 1 };
  const p = successes / trials;
  const z2 = z * z;
  const denom = 1 + z2 / trials;
  const centre = (p + z2 / (2 * trials)) / denom;
  const half = (z / denom) * Math.sqrt((p * (1 - p)) / trials + z2 / (4 * trials * trials));
  return { lower: Math.max(0, centre - half), upper: Math.min(1, centre + half) };
}

/** Hanley & McNeil (1982) standard error of an AUC from `nPos` diseased and `nNeg` non-diseased cases. */
export function hanleyMcNeilSe(auc: number, nPos: number, nNeg: number): number {
  const q1 = auc / (2 - auc);
  const q2 = (2 * auc * auc) / (1 + auc);
  const a2 = auc * auc;
  const v = (auc * (1 - auc) + (nPos - 1) * (q1 - a2) + (nNeg - 1) * (q2 - a2)) / (nPos * nNeg);
  return Math.sqrt(Math.max(0, v));
}

/**
 * AUC and its DeLong variance from per-class score histograms. Undefined when a class is empty; the variance
 * needs at least two cases of each class (otherwise it is NaN).
 */
export function delongFromHistograms(histPos: readonly number[], histNeg: readonly number[]): { auc: number; variance: number; nPos: number; nNeg: number } | undefined {
  const bins = Math.max(histPos.length, histNeg.length);
  let nPos = 0;
  let nNeg = 0;
  for (let b = 0; b < bins; b++) {
    nPos += histPos[b] ?? 0;
    nNeg += histNeg[b] ?? 0;
  }
  if (nPos === 0 || nNeg === 0) return undefined;
  // Placement of a positive in bin b: share of negatives scored lower, ties half. Of a negative: share of
  // positives scored higher, ties half.
  const v10 = new Float64Array(bins);
  const v01 = new Float64Array(bins);
  let negBelow = 0;
  for (let b = 0; b < bins; b++) {
    const n = histNeg[b] ?? 0;
    v10[b] = (negBelow + n / 2) / nNeg;
    negBelow += n;
  }
  let posAbove = 0;
  for (let b = bins - 1; b >= 0; b--) {
    const p = histPos[b] ?? 0;
    v01[b] = (posAbove + p / 2) / nPos;
    posAbove += p;
  }
  let auc = 0;
  for (let b = 0; b < bins; b++) auc += (histPos[b] ?? 0) * v10[b]!;
  auc /= nPos;
  let s10 = 0;
  let s01 = 0;
  for (let b = 0; b < bins; b++) {
    s10 += (histPos[b] ?? 0) * (v10[b]! - auc) ** 2;
    s01 += (histNeg[b] ?? 0) * (v01[b]! - auc) ** 2;
  }
  const variance = nPos > 1 && nNeg > 1 ? s10 / (nPos - 1) / nPos + s01 / (nNeg - 1) / nNeg : NaN;
  return { auc, variance, nPos, nNeg };
}

/** Wald interval for an AUC, clipped to [0, 1]. */
export function aucInterval(auc: number, se: number, z = Z95): Interval {
  if (!Number.isFinite(se)) return { lower: 0, upper: 1 };
  return { lower: Math.max(0, auc - z * se), upper: Math.min(1, auc + z * se) };
}

/**
 * Reliability curve from per-class score histograms over [0, 1], regrouped into `bins` equal-width bins. Bins
 * holding fewer than `minCellCount` cases keep their count but not their rates.
 */
export function reliabilityCurve(histPos: readonly number[], histNeg: readonly number[], opts: { bins?: number; minCellCount?: number } = {}): Calibration {
  const bins = opts.bins ?? 10;
  const minCell = opts.minCellCount ?? 0;
  const fine = Math.max(histPos.length, histNeg.length);
  const n = new Float64Array(bins);
  const pos = new Float64Array(bins);
  const scoreSum = new Float64Array(bins);
  for (let f = 0; f < fine; f++) {
    const p = histPos[f] ?? 0;
    const q = histNeg[f] ?? 0;
    if (p + q === 0) continue;
    const centre = (f + 0.5) / fine;
    const b = Math.min(bins - 1, Math.floor((f * bins) / fine));
    n[b]! += p + q;
    pos[b]! += p;
    scoreSum[b]! += (p + q) * centre;
  }
  const total = n.reduce((a, b) => a + b, 0);
  let ece = 0;
  const out: CalibrationBin[] = [];
  for (let b = 0; b < bins; b++) {
    const bin: CalibrationBin = { lower: b / bins, upper: (b + 1) / bins, n: n[b]! };
    if (n[b]! > 0) {
      const meanPredicted = scoreSum[b]! / n[b]!;
      const observedRate = pos[b]! / n[b]!;
      ece += (n[b]! / total) * Math.abs(observedRate - meanPredicted);
      if (n[b]! >= minCell) Object.assign(bin, { meanPredicted, observedRate });
    }
    out.push(bin);
  }
  return { bins: out, ece: total > 0 ? ece : NaN, n: total };
}

function proportion(k: number, n: number, z: number): Estimate {
  return { value: k / n, n, ...wilsonInterval(k, n, z) };
}

/**
 * Clinical metrics with intervals from one set of counts (a site's, or pooled with `poolCounts`). Values computed
 * from fewer than `minCellCount` cases are left out and named in `suppressed`.
 */
export function clinicalMetrics(c: EvalCounts, opts: ClinicalOptions = {}): ClinicalMetrics {
  const minCell = opts.minCellCount ?? DEFAULT_MIN_CELL_COUNT;
  const z = opts.z ?? Z95;
  const out: ClinicalMetrics = { n: c.n, minCellCount: minCell, suppressed: [] };
  const enough = (name: string, cases: number): boolean => {
    if (cases > 0 && cases >= minCell) return true;
    if (cases > 0) out.suppressed.push(name); // from zero cases a value is undefined, not suppressed
    return false;
  };
  if (enough('loss', c.n)) out.loss = c.lossSum / c.n;
  if (enough('accuracy', c.n)) out.accuracy = proportion(c.correct, c.n, z);
  if (c.tp !== undefined && c.fn !== undefined && enough('sensitivity', c.tp + c.fn)) out.sensitivity = proportion(c.tp, c.tp + c.fn, z);
  if (c.tn !== undefined && c.fp !== undefined && enough('specificity', c.tn + c.fp)) out.specificity = proportion(c.tn, c.tn + c.fp, z);
  if (c.histPos && c.histNeg) {
    const d = delongFromHistograms(c.histPos, c.histNeg);
    const nPos = c.histPos.reduce((a, b) => a + b, 0);
    const nNeg = c.histNeg.reduce((a, b) => a + b, 0);
    // The AUC describes both classes, so each must reach the minimum on its own.
    if (d && enough('auc', Math.min(nPos, nNeg))) {
      const se = Math.sqrt(d.variance);
      out.auc = { value: d.auc, se, method: 'delong', nPos, nNeg, n: nPos + nNeg, ...aucInterval(d.auc, se, z) };
    }
    const cal = reliabilityCurve(c.histPos, c.histNeg, { bins: opts.calibrationBins ?? 10, minCellCount: minCell });
    if (enough('calibration', cal.n)) {
      out.calibration = cal;
      if (cal.bins.some((b) => b.n > 0 && b.observedRate === undefined)) out.suppressed.push('calibration bins');
    }
  }
  return out;
}

/**
 * What a site may send: its counts, minus any value it derived itself from fewer than `minCellCount` cases (today
 * the exact AUC on its own scores, which needs that many positives and negatives). The counts themselves stay:
 * the pooled metrics are sums of them, and the coordinator suppresses per-site values with `clinicalMetrics`.
 */
export function suppressSiteCounts(c: EvalCounts, minCellCount = DEFAULT_MIN_CELL_COUNT): EvalCounts {
  const nPos = c.histPos?.reduce((a, b) => a + b, 0) ?? (c.tp ?? 0) + (c.fn ?? 0);
  const nNeg = c.histNeg?.reduce((a, b) => a + b, 0) ?? (c.tn ?? 0) + (c.fp ?? 0);
  if (c.auc === undefined || Math.min(nPos, nNeg) >= minCellCount) return c;
  const { auc: _withheld, ...rest } = c;
  return rest;
}
