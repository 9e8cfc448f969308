/**
 * Clinical metrics from counts: intervals against published values and against references computed here on the
 * raw scores (independent, naive implementations), calibration, and small-cell suppression at the site and at the
 * coordinator.
 */
import { describe, expect, it } from 'vitest';
import {
  binOf, clinicalMetrics, delongFromHistograms, exactAuc, hanleyMcNeilSe, HISTOGRAM_BINS, poolCounts,
  reliabilityCurve, suppressSiteCounts, wilsonInterval, Z95,
} from '../../protocol/metrics.ts';
import type { EvalCounts } from '../../protocol/messages.ts';
import { seededRandom } from '../../site-agent/data/split.ts';
import { evaluate } from '../../site-agent/training/trainer.ts';

function counts(scores: readonly number[], labels: readonly number[]): EvalCounts {
  const histPos = new Array<number>(HISTOGRAM_BINS).fill(0);
  const histNeg = new Array<number>(HISTOGRAM_BINS).fill(0);
  let tp = 0, fp = 0, tn = 0, fn = 0, lossSum = 0;
  scores.forEach((s, i) => {
    const pos = labels[i] === 1;
    (pos ? histPos : histNeg)[binOf(s)]!++;
    const c = Math.min(1 - 1e-7, Math.max(1e-7, s));
    lossSum += pos ? -Math.log(c) : -Math.log(1 - c);
    if (s >= 0.5) (pos ? tp++ : fp++);
    else (pos ? fn++ : tn++);
  });
  return { n: scores.length, lossSum, correct: tp + tn, tp, fp, tn, fn, histPos, histNeg };
}

/** Reference DeLong on raw scores: the O(m·n) definition, pair by pair. */
function naiveDelong(scores: readonly number[], labels: readonly number[]): { auc: number; variance: number } {
  const pos = scores.filter((_, i) => labels[i] === 1);
  const neg = scores.filter((_, i) => labels[i] !== 1);
  const psi = (x: number, y: number) => (x > y ? 1 : x === y ? 0.5 : 0);
  const v10 = pos.map((x) => neg.reduce((a, y) => a + psi(x, y), 0) / neg.length);
  const v01 = neg.map((y) => pos.reduce((a, x) => a + psi(x, y), 0) / pos.length);
  const auc = v10.reduce((a, b) => a + b, 0) / pos.length;
  const s10 = v10.reduce((a, v) => a + (v - auc) ** 2, 0) / (pos.length - 1);
  const s01 = v01.reduce((a, v) => a + (v - auc) ** 2, 0) / (neg.length - 1);
  return { auc, variance: s10 / pos.length + s01 / neg.length };
}

function normal(rand: () => number): number {
  const u = Math.max(rand(), 1e-12);
  return Math.sqrt(-2 * Math.log(u)) * Math.cos(2 * Math.PI * rand());
}

/** Binormal scores squashed into (0, 1): positives N(d, 1), negatives N(0, 1). The true AUC is Φ(d/√2). */
function binormal(rand: () => number, n: number, prevalence: number, d: number): { scores: number[]; labels: number[] } {
  const scores: number[] = [];
  const labels: number[] = [];
  for (let i = 0; i < n; i++) {
    const y = rand() < prevalence ? 1 : 0;
    scores.push(1 / (1 + Math.exp(-(normal(rand) + (y ? d : 0) - d / 2))));
    labels.push(y);
  }
  return { scores, labels };
}

describe('Wilson intervals', () => {
  it('should reproduce Newcombe (1998) method 3 for his four examples', () => {
    const cases: [number, number, number, number][] = [
      [81, 263, 0.2553, 0.3662],
      [15, 148, 0.0624, 0.1605],
      [0, 20, 0, 0.1611],
      [1, 29, 0.0061, 0.1718],
    ];
    for (const [k, n, lo, hi] of cases) {
      const w = wilsonInterval(k, n);
      expect(Math.abs(w.lower - lo), `${k}/${n} lower`).toBeLessThan(0.00006);
      expect(Math.abs(w.upper - hi), `${k}/${n} upper`).toBeLessThan(0.00006);
    }
  });
});

describe('AUC intervals', () => {
  it('should reproduce the Hanley & McNeil (1982) worked example: AUC 0.893, 51 vs 58 cases, SE 0.032', () => {
    // The paper prints the SE to three decimals.
    expect(Math.abs(hanleyMcNeilSe(0.893, 51, 58) - 0.032)).toBeLessThan(0.001);
  });

  it('should agree with Hanley & McNeil where their exponential model holds exactly', () => {
    // Negatives Exp(1), positives Exp(rate 1/3) (larger): Q1 and Q2 are then exact, so both SEs estimate the same.
    const rand = seededRandom(13);
    const scores: number[] = [];
    const labels: number[] = [];
    for (let i = 0; i < 2000; i++) {
      const y = rand() < 0.4 ? 1 : 0;
      const e = -Math.log(Math.max(rand(), 1e-12)) * (y ? 3 : 1);
      scores.push(1 - Math.exp(-e / 4)); // monotone into (0, 1); the AUC is unchanged
      labels.push(y);
    }
    const a = clinicalMetrics(counts(scores, labels)).auc!;
    expect(a.value).toBeGreaterThan(0.72); // true AUC 3/4
    expect(a.value).toBeLessThan(0.78);
    expect(Math.abs(a.se - hanleyMcNeilSe(a.value, a.nPos, a.nNeg)) / a.se).toBeLessThan(0.1);
  });

  it('should give the DeLong variance of a hand-worked example exactly (1/27)', () => {
    const scores = [0.9, 0.8, 0.4, 0.7, 0.3, 0.2, 0.5];
    const labels = [1, 1, 1, 0, 0, 0, 0];
    const c = counts(scores, labels);
    const d = delongFromHistograms(c.histPos!, c.histNeg!)!;
    expect(d.auc).toBeCloseTo(10 / 12, 12);
    expect(d.variance).toBeCloseTo(1 / 27, 12);
    expect(naiveDelong(scores, labels).variance).toBeCloseTo(1 / 27, 12);
  });

  it('should match DeLong on the raw scores to within the histogram resolution', () => {
    const rand = seededRandom(7);
    for (const [n, prev, d] of [[300, 0.3, 1.5], [1200, 0.5, 2.5], [200, 0.15, 0.8]] as const) {
      const { scores, labels } = binormal(rand, n, prev, d);
      const ref = naiveDelong(scores, labels);
      const m = clinicalMetrics(counts(scores, labels), { minCellCount: 0 });
      expect(Math.abs(m.auc!.value - ref.auc)).toBeLessThan(0.002);
      expect(Math.abs(m.auc!.value - exactAuc(scores, labels)!)).toBeLessThan(0.002);
      expect(Math.abs(m.auc!.se - Math.sqrt(ref.variance))).toBeLessThan(0.0005);
      expect(m.auc!.lower).toBeCloseTo(Math.max(0, ref.auc - Z95 * Math.sqrt(ref.variance)), 2);
      expect(m.auc!.upper).toBeCloseTo(Math.min(1, ref.auc + Z95 * Math.sqrt(ref.variance)), 2);
    }
  });

  it('should agree with the bootstrap standard error of the AUC', () => {
    const rand = seededRandom(3);
    const { scores, labels } = binormal(rand, 400, 0.35, 1.2);
    const se = clinicalMetrics(counts(scores, labels)).auc!.se;
    const aucs: number[] = [];
    for (let b = 0; b < 300; b++) {
      const idx = Array.from({ length: scores.length }, () => Math.floor(rand() * scores.length));
      aucs.push(exactAuc(idx.map((i) => scores[i]!), idx.map((i) => labels[i]!))!);
    }
    const mean = aucs.reduce((a, b) => a + b, 0) / aucs.length;
    const bootSe = Math.sqrt(aucs.reduce((a, v) => a + (v - mean) ** 2, 0) / (aucs.length - 1));
    expect(Math.abs(se - bootSe) / bootSe).toBeLessThan(0.15);
  });

  it('should cover the true AUC about 95% of the time', () => {
    const rand = seededRandom(2024);
    const d = 1.4;
    // True AUC Φ(d/√2), by numeric integration of the standard normal density.
    let trueAuc = 0;
    const steps = 20000;
    for (let i = 0; i < steps; i++) {
      const x = -8 + (16 * (i + 0.5)) / steps;
      trueAuc += (Math.exp(-x * x / 2) / Math.sqrt(2 * Math.PI)) * (16 / steps) * (x < d / Math.SQRT2 ? 1 : 0);
    }
    let covered = 0;
    const trials = 300;
    for (let t = 0; t < trials; t++) {
      const { scores, labels } = binormal(rand, 150, 0.4, d);
      const a = clinicalMetrics(counts(scores, labels)).auc!;
      if (a.lower <= trueAuc && trueAuc <= a.upper) covered++;
    }
    expect(covered / trials).toBeGreaterThan(0.9);
    expect(covered / trials).toBeLessThan(0.99);
  });
});

describe('calibration', () => {
  it('should give the reliability curve of the raw scores: exact observed rates, mean scores within half a bin', () => {
    const rand = seededRandom(5);
    const scores: number[] = [];
    const labels: number[] = [];
    for (let i = 0; i < 3000; i++) {
      const s = rand();
      scores.push(s);
      labels.push(rand() < s * s ? 1 : 0); // over-confident model: true risk is s², not s
    }
    const c = counts(scores, labels);
    const cal = reliabilityCurve(c.histPos!, c.histNeg!, { bins: 10 });
    let ece = 0;
    for (let b = 0; b < 10; b++) {
      const inBin = scores.map((s, i) => [s, labels[i]!] as const).filter(([s]) => Math.min(9, Math.floor(s * 10)) === b);
      const obs = inBin.filter(([, y]) => y === 1).length / inBin.length;
      const pred = inBin.reduce((a, [s]) => a + s, 0) / inBin.length;
      ece += (inBin.length / scores.length) * Math.abs(obs - pred);
      expect(cal.bins[b]!.n).toBe(inBin.length);
      expect(cal.bins[b]!.observedRate).toBeCloseTo(obs, 12);
      expect(Math.abs(cal.bins[b]!.meanPredicted! - pred)).toBeLessThanOrEqual(0.0005);
    }
    expect(Math.abs(cal.ece - ece)).toBeLessThanOrEqual(0.0005);
    expect(cal.ece).toBeGreaterThan(0.1); // E|s − s²| = 1/6 for uniform s
  });

  it('should find a well-calibrated model well calibrated', () => {
    const rand = seededRandom(6);
    const scores: number[] = [];
    const labels: number[] = [];
    for (let i = 0; i < 5000; i++) {
      const s = rand();
      scores.push(s);
      labels.push(rand() < s ? 1 : 0);
    }
    const m = clinicalMetrics(counts(scores, labels));
    expect(m.calibration!.ece).toBeLessThan(0.03);
    for (const b of m.calibration!.bins) expect(Math.abs(b.observedRate! - b.meanPredicted!)).toBeLessThan(0.08);
  });
});

describe('small-cell suppression', () => {
  it('should withhold every value computed from fewer than minCellCount cases, and only those', () => {
    // 8 positives, 40 negatives: sensitivity and AUC rest on 8 patients.
    const scores = [0.9, 0.8, 0.7, 0.65, 0.6, 0.55, 0.4, 0.3, ...Array.from({ length: 40 }, (_, i) => 0.02 + i * 0.015)];
    const labels = [...new Array<number>(8).fill(1), ...new Array<number>(40).fill(0)];
    const c = counts(scores, labels);
    const m = clinicalMetrics(c);
    expect(m.sensitivity).toBeUndefined();
    expect(m.auc).toBeUndefined();
    expect(m.suppressed).toEqual(expect.arrayContaining(['sensitivity', 'auc', 'calibration bins']));
    expect(m.suppressed).not.toContain('specificity');
    expect(m.specificity!.value).toBeCloseTo(c.tn! / 40, 12);
    expect(m.specificity!.n).toBe(40);
    expect(m.accuracy!.n).toBe(48);
    for (const b of m.calibration!.bins) {
      if (b.n > 0 && b.n < 10) expect(b.observedRate).toBeUndefined();
      if (b.n >= 10) expect(b.observedRate).toBeDefined();
    }
    const open = clinicalMetrics(c, { minCellCount: 0 });
    expect(open.suppressed).toEqual([]);
    expect(open.sensitivity!.value).toBeCloseTo(c.tp! / 8, 12);
    expect(open.auc!.value).toBeCloseTo(exactAuc(scores, labels)!, 3);
    const strict = clinicalMetrics(c, { minCellCount: 50 });
    expect(strict.accuracy).toBeUndefined();
    expect(strict.loss).toBeUndefined();
  });

  it('should pool suppressed sites into a pooled value that is reported', () => {
    const rand = seededRandom(9);
    const sites = [0, 1, 2].map(() => binormal(rand, 20, 0.3, 2));
    const perSite = sites.map((s) => clinicalMetrics(counts(s.scores, s.labels)));
    expect(perSite.every((m) => m.auc === undefined)).toBe(true); // about 6 positives each
    const pooled = clinicalMetrics(poolCounts(sites.map((s) => counts(s.scores, s.labels))));
    const all = { scores: sites.flatMap((s) => s.scores), labels: sites.flatMap((s) => s.labels) };
    expect(Math.abs(pooled.auc!.value - exactAuc(all.scores, all.labels)!)).toBeLessThan(0.002);
    expect(pooled.auc!.nPos + pooled.auc!.nNeg).toBe(60);
  });

  it('should drop a site-computed AUC resting on fewer than minCellCount cases of a class', () => {
    const base = counts([0.9, 0.2, 0.3, 0.8], [1, 0, 0, 1]);
    expect(suppressSiteCounts({ ...base, auc: 1 }).auc).toBeUndefined();
    expect(suppressSiteCounts({ ...base, auc: 1 }, 2).auc).toBe(1);
    expect(suppressSiteCounts({ ...base, auc: 1 }).histPos).toEqual(base.histPos);
  });

  it('should suppress at the site: evaluate() sends no AUC of its own from 6 positives, but does from 30', async () => {
    // A logistic regression on one feature with weight 1 and bias 0 scores sigmoid(x).
    const model = { spec: { template: 'logreg' as const, l2: 0 }, inputShape: [1], numClasses: 2 };
    const weights = [{ shape: [1, 1], data: Float32Array.of(1) }, { shape: [1], data: Float32Array.of(0) }];
    const split = (pos: number, neg: number) => {
      const xs = [...Array.from({ length: pos }, (_, i) => 1 - i * 0.3), ...Array.from({ length: neg }, (_, i) => -1 + i * 0.1)];
      return { x: Float32Array.from(xs), y: Int32Array.from([...new Array<number>(pos).fill(1), ...new Array<number>(neg).fill(0)]), n: xs.length, inputShape: [1], classes: ['0', '1'] };
    };
    const small = await evaluate(model, weights, split(6, 30));
    expect(small.auc).toBeUndefined();
    expect(small.tp! + small.fn!).toBe(6);
    expect(small.histPos!.reduce((a, b) => a + b, 0)).toBe(6);
    const large = await evaluate(model, weights, split(30, 30));
    expect(large.auc).toBeDefined();
    expect(Math.abs(large.auc! - clinicalMetrics(large).auc!.value)).toBeLessThan(0.002);
    expect((await evaluate(model, weights, split(6, 30), { minCellCount: 5 })).auc).toBeDefined();
  });
});
