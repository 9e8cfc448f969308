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
