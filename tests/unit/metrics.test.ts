import { describe, expect, it } from 'vitest';
import { binOf, exactAuc, histogramAuc, HISTOGRAM_BINS, metricsFromCounts, poolCounts } from '../../protocol/metrics.ts';
import type { EvalCounts } from '../../protocol/messages.ts';
import { seededRandom } from '../../site-agent/data/split.ts';

function siteCounts(scores: number[], labels: number[]): EvalCounts {
  const histPos = new Array<number>(HISTOGRAM_BINS).fill(0);
  const histNeg = new Array<number>(HISTOGRAM_BINS).fill(0);
  let tp = 0, fp = 0, tn = 0, fn = 0;
  scores.forEach((s, i) => {
    const pos = labels[i] === 1;
    (pos ? histPos : histNeg)[binOf(s)]!++;
    if (s >= 0.5) (pos ? tp++ : fp++);
    else (pos ? fn++ : tn++);
  });
  return { n: scores.length, lossSum: 0, correct: tp + tn, tp, fp, tn, fn, histPos, histNeg };
}

/** AUC by its definition: the share of (positive, negative) pairs ranked correctly, ties counting half. */
function pairwiseAuc(scores: readonly number[], labels: readonly number[]): number {
  const pos = scores.filter((_, i) => labels[i] === 1);
  const neg = scores.filter((_, i) => labels[i] !== 1);
  let wins = 0;
  for (const p of pos) for (const q of neg) wins += p > q ? 1 : p === q ? 0.5 : 0;
  return wins / (pos.length * neg.length);
}

describe('metrics from counts', () => {
  it('should compute exact AUC with ties counted half', () => {
    expect(exactAuc([0.1, 0.4, 0.35, 0.8], [0, 0, 1, 1])).toBeCloseTo(0.75, 12);
    expect(exactAuc([0.5, 0.5], [0, 1])).toBe(0.5);
    expect(exactAuc([0.2, 0.3], [1, 1])).toBeUndefined();
  });

  it('should give a pooled AUC from summed histograms within 0.002 of the AUC of the pooled scores', () => {
    const rand = seededRandom(11);
    const allScores: number[] = [];
    const allLabels: number[] = [];
    const sites: EvalCounts[] = [];
    for (let s = 0; s < 4; s++) {
      const scores: number[] = [];
      const labels: number[] = [];
      const shift = 0.1 * s; // sites differ in calibration, so the mean of site AUCs is not the pooled AUC
      for (let i = 0; i < 150 + 50 * s; i++) {
        const y = rand() < 0.4 ? 1 : 0;
        const score = Math.min(1, Math.max(0, (y ? 0.62 : 0.4) + shift * 0.5 + (rand() - 0.5) * 0.6));
        scores.push(score);
        labels.push(y);
      }
      allScores.push(...scores);
      allLabels.push(...labels);
      sites.push(siteCounts(scores, labels));
    }
    const pooled = metricsFromCounts(poolCounts(sites));
    const exact = exactAuc(allScores, allLabels)!;
    expect(Math.abs(pooled.auc! - exact)).toBeLessThan(0.002);
    expect(pooled.n).toBe(allScores.length);
  });

  it('should give a pooled AUC from counts within 0.002 of the AUC of the pooled scores on tied and saturated scores', () => {
    const rand = seededRandom(2025);
    const normal = () => Math.sqrt(-2 * Math.log(Math.max(rand(), 1e-12))) * Math.cos(2 * Math.PI * rand());
    const sigmoid = (z: number) => 1 / (1 + Math.exp(-z));
    // Three kinds of score a clinical model really produces, at five sites of different size and prevalence.
    const scenarios: Record<string, (y: number, site: number) => number> = {
      // A points score (0-12 points mapped to a risk): only 13 distinct values, so nearly every pair is tied.
      'integer points score': (y, site) => (Math.max(0, Math.min(12, Math.round(4 + 3 * y + 2.2 * normal() + site * 0.3))) + 0.5) / 13,
      // Probabilities reported to two decimals: 101 distinct values.
      'rounded to 0.01': (y) => Math.round(sigmoid(normal() * 1.5 + (y ? 1.6 : -1.2)) * 100) / 100,
      // A confident model: most scores pile up within a few thousandths of 0 or 1, where histogram bins are crowded.
      'saturated near 0 and 1': (y, site) => sigmoid(normal() * 2.5 + (y ? 4 : -5) + site * 0.4),
    };
    for (const [name, score] of Object.entries(scenarios)) {
      const allScores: number[] = [];
      const allLabels: number[] = [];
      const sites: EvalCounts[] = [];
      for (let s = 0; s < 5; s++) {
        const n = [1500, 800, 400, 200, 120][s]!;
        const prevalence = [0.05, 0.12, 0.25, 0.4, 0.3][s]!;
        const scores: number[] = [];
        const labels: number[] = [];
        for (let i = 0; i < n; i++) {
          const y = rand() < prevalence ? 1 : 0;
          scores.push(score(y, s));
          labels.push(y);
        }
        allScores.push(...scores);
        allLabels.push(...labels);
        sites.push(siteCounts(scores, labels));
      }
      const exact = exactAuc(allScores, allLabels)!;
      expect(exact, name).toBeCloseTo(pairwiseAuc(allScores, allLabels), 12); // the reference itself, checked pair by pair
      const pooled = metricsFromCounts(poolCounts(sites));
      expect(Math.abs(pooled.auc! - exact), name).toBeLessThan(0.002);
      const distinct = new Set(allScores).size;
      if (name === 'integer points score') expect(distinct).toBeLessThanOrEqual(13);
      if (name === 'rounded to 0.01') expect(distinct).toBeLessThanOrEqual(101);
      // Crowded: many distinct scores share the outermost histogram bins, where ties inside a bin are approximated.
      if (name === 'saturated near 0 and 1') expect(allScores.filter((x) => binOf(x) === 0 || binOf(x) === HISTOGRAM_BINS - 1).length / allScores.length).toBeGreaterThan(0.15);
    }
  });

  it('should sum confusion counts into sensitivity and specificity', () => {
    const m = metricsFromCounts(poolCounts([
      { n: 10, lossSum: 2, correct: 8, tp: 3, fn: 1, tn: 5, fp: 1 },
      { n: 10, lossSum: 3, correct: 9, tp: 4, fn: 0, tn: 5, fp: 1 },
    ]));
    expect(m.sensitivity).toBeCloseTo(7 / 8, 12);
    expect(m.specificity).toBeCloseTo(10 / 12, 12);
    expect(m.accuracy).toBeCloseTo(17 / 20, 12);
    expect(m.loss).toBeCloseTo(0.25, 12);
  });
});
