import { describe, expect, it } from 'vitest';
import type { Tensor } from '../../protocol/codec.ts';
import { CohortError } from '../../protocol/errors.ts';
import { StrategySpecSchema, StudyManifestSchema, type StrategySpec } from '../../protocol/messages.ts';
import { checkStudyStrategy, strategyFor } from '../../coordinator/strategies/registry.ts';
import { weightedMean, type AggregateInput, type FitResult } from '../../coordinator/strategies/strategy.ts';
import { Krum } from '../../coordinator/strategies/krum.ts';

const t = (...v: number[]): Tensor => ({ shape: [v.length], data: Float32Array.from(v) });
const fit = (site: string, values: number[], numExamples = 1): FitResult => ({ site, weights: [t(...values)], numExamples });
const individual = (...results: FitResult[]): AggregateInput => ({ kind: 'individual', results });
const mean = (...v: number[]): AggregateInput => ({ kind: 'mean', mean: [t(...v)], totalWeight: 1, sites: ['a'] });
const spec = (s: unknown): StrategySpec => StrategySpecSchema.parse(s);
const values = (ts: Tensor[]) => Array.from(ts[0]!.data);

function codeOf(fn: () => unknown): string | undefined {
  try {
    fn();
  } catch (err) {
    return err instanceof CohortError ? err.code : 'not-coded';
  }
  return undefined;
}

describe('FedAvg', () => {
  it('should weight site models by their example counts when given individual results', () => {
    const s = strategyFor(spec({ name: 'fedavg' }));
    expect(values(s.aggregate([t(0, 0)], individual(fit('a', [1, 2], 1), fit('b', [3, 6], 3)), 1))).toEqual([2.5, 5]);
    expect(s.requires).toBe('sum');
  });

  it('should give bit-identical means whatever order the replies arrived in', () => {
    const rs = Array.from({ length: 7 }, (_, i) => fit(`s${i}`, [Math.fround(0.1 * i + 1e-7), Math.fround(1 / (i + 3))], i + 1));
    const a = weightedMean(rs).mean[0]!.data;
    const b = weightedMean([...rs].reverse()).mean[0]!.data;
    const c = weightedMean([rs[3]!, rs[0]!, rs[6]!, rs[1]!, rs[5]!, rs[2]!, rs[4]!]).mean[0]!.data;
    expect(Buffer.from(b.buffer).equals(Buffer.from(a.buffer))).toBe(true);
    expect(Buffer.from(c.buffer).equals(Buffer.from(a.buffer))).toBe(true);
  });
});

describe('FedAvgM (Hsu et al. 2019)', () => {
  it('should apply server momentum to the pseudo-gradient when rounds follow each other', () => {
    const s = strategyFor(spec({ name: 'fedavgm' })); // eta 1, beta 0.9
    // Round 1: delta = 0 - 1 = -1, v = -1, w = 0 - (-1) = 1.
    const w1 = s.aggregate([t(0)], mean(1), 1);
    expect(values(w1)[0]).toBeCloseTo(1, 6);
    // Round 2: delta = 1 - 1.5 = -0.5, v = 0.9 * -1 - 0.5 = -1.4, w = 1 + 1.4 = 2.4.
    expect(values(s.aggregate(w1, mean(1.5), 2))[0]).toBeCloseTo(2.4, 6);
  });

  it('should equal FedAvg when momentum is 0 and the server learning rate 1', () => {
    const s = strategyFor(spec({ name: 'fedavgm', momentum: 0, serverLearningRate: 1 }));
    expect(values(s.aggregate([t(5, -5)], mean(1, 2), 1))).toEqual([1, 2]);
  });

  it('should resume exactly from its saved state when a fresh instance restores it', () => {
    const a = strategyFor(spec({ name: 'fedavgm' }));
    const w1 = a.aggregate([t(0, 1)], mean(1, 3), 1);
    const b = strategyFor(spec({ name: 'fedavgm' }));
    b.restore!(a.state!());
    expect(values(b.aggregate(w1, mean(2, 2), 2))).toEqual(values(a.aggregate(w1, mean(2, 2), 2)));
  });
});

describe('FedProx (Li et al. 2020)', () => {
  it('should average like FedAvg and ask sites for the proximal term when mu is set', () => {
    const s = strategyFor(spec({ name: 'fedprox', mu: 0.1 }));
    expect(values(s.aggregate([t(0)], individual(fit('a', [1], 1), fit('b', [4], 2)), 1))).toEqual([3]);
    expect(s.trainConfig!()).toEqual({ proximalMu: 0.1 });
    expect(strategyFor(spec({ name: 'fedprox' })).trainConfig!()).toEqual({ proximalMu: 0.01 });
  });
});

describe('FedAdam, FedYogi, FedAdagrad (Reddi et al. 2021)', () => {
  // Defaults: eta 0.1, beta1 0.9, beta2 0.99, tau 1e-3; m starts at 0, v at tau^2. Pseudo-gradient delta = 1.
  it('should take the Adam step on the pseudo-gradient when the mean moves by 1', () => {
    const s = strategyFor(spec({ name: 'fedadam' }));
    const w1 = s.aggregate([t(0)], mean(1), 1);
    expect(values(w1)[0]).toBeCloseTo(0.09900504888254247, 6);
    // Round 2: delta 0.5; m = 0.9 * 0.1 + 0.1 * 0.5, v = 0.99 * v1 + 0.01 * 0.25.
    expect(values(s.aggregate(w1, mean(values(w1)[0]! + 0.5), 2))[0]).toBeCloseTo(0.22360489652905594, 5);
  });

  it('should take the Yogi step (additive second moment) when the mean moves by 1', () => {
    expect(values(strategyFor(spec({ name: 'fedyogi' })).aggregate([t(0)], mean(1), 1))[0]).toBeCloseTo(0.09900499987500627, 6);
  });

  it('should take the Adagrad step (accumulated second moment) when the mean moves by 1', () => {
    expect(values(strategyFor(spec({ name: 'fedadagrad' })).aggregate([t(0)], mean(1), 1))[0]).toBeCloseTo(0.009990004999998752, 7);
  });

  it('should resume bit for bit from saved moments when restored into a fresh instance', () => {
    for (const name of ['fedadam', 'fedyogi', 'fedadagrad']) {
      const a = strategyFor(spec({ name }));
      expect(a.state!()).toEqual([]);
      const w1 = a.aggregate([t(0, 0)], mean(1, -2), 1);
      const b = strategyFor(spec({ name }));
      b.restore!(a.state!());
      const wa = a.aggregate(w1, mean(0.5, 0.5), 2);
      const wb = b.aggregate(w1, mean(0.5, 0.5), 2);
      expect(values(wb)).toEqual(values(wa));
    }
  });
});

describe('FedMedian and trimmed mean (Yin et al. 2018)', () => {
  it('should take the coordinate-wise median when sites disagree', () => {
    const s = strategyFor(spec({ name: 'fedmedian' }));
    expect(s.requires).toBe('individual');
    // odd count: median of (1, 5, 3) and (-1, 0, 7); even count: mean of the middle two
    expect(values(s.aggregate([t(0, 0)], individual(fit('a', [1, -1]), fit('b', [5, 0]), fit('c', [3, 7])), 1))).toEqual([3, 0]);
    expect(values(s.aggregate([t(0)], individual(fit('a', [1]), fit('b', [5]), fit('c', [3]), fit('d', [100])), 1))).toEqual([4]);
  });

  it('should ignore one wild site that drags the mean away', () => {
    const honest = ['a', 'b', 'c', 'd'].map((s, i) => fit(s, [1 + i * 0.01, 1 - i * 0.01]));
    const input = individual(...honest, fit('evil', [-1000, 1000]));
    const avg = values(strategyFor(spec({ name: 'fedavg' })).aggregate([t(0, 0)], input, 1));
    const med = values(strategyFor(spec({ name: 'fedmedian' })).aggregate([t(0, 0)], input, 1));
    expect(Math.abs(avg[0]! - 1)).toBeGreaterThan(100);
    expect(Math.abs(med[0]! - 1)).toBeLessThan(0.05);
  });

  it('should drop floor(beta * n) values from each end before averaging when trimming', () => {
    const s = strategyFor(spec({ name: 'trimmed-mean', beta: 0.2 }));
    const input = individual(fit('a', [1]), fit('b', [2]), fit('c', [3]), fit('d', [4]), fit('e', [100]));
    expect(values(s.aggregate([t(0)], input, 1))).toEqual([3]);
    // beta 0.1 with 5 sites trims nothing: the plain mean 22
    expect(values(strategyFor(spec({ name: 'trimmed-mean' })).aggregate([t(0)], input, 1))).toEqual([22]);
  });

  it('should refuse a mean when the strategy needs individual updates', () => {
    expect(codeOf(() => strategyFor(spec({ name: 'fedmedian' })).aggregate([t(0)], mean(1), 1))).toBe('COHORT_ERR_STUDY_STRATEGY_NEEDS_INDIVIDUAL');
  });
});

describe('Krum and Multi-Krum (Blanchard et al. 2017)', () => {
  // 1-D points 0, 0.1, 0.2, 0.3, 10 with f = 1: each scored by its n - f - 2 = 2 nearest squared distances:
  // s0 0.05, s1 0.02, s2 0.02, s3 0.05, s4 94.09 + 96.04.
  const input = individual(fit('s0', [0]), fit('s1', [0.1]), fit('s2', [0.2]), fit('s3', [0.3]), fit('s4', [10]));

  it('should keep the update closest to its neighbours when one site is far away', () => {
    const k = new Krum('krum', 1);
    expect(values(k.aggregate([t(0)], input, 1))[0]).toBeCloseTo(0.1, 6);
    expect(k.lastSelected).toEqual(['s1']);
  });

  it('should average the m best-scored updates when multi-krum selects several', () => {
    const m3 = strategyFor(spec({ name: 'multi-krum', byzantine: 1, select: 3 })) as Krum;
    expect(values(m3.aggregate([t(0)], input, 1))[0]).toBeCloseTo(0.1, 6);
    expect(m3.lastSelected).toEqual(['s1', 's2', 's0']);
    // default m = n - f = 4: everything but the outlier
    expect(values(strategyFor(spec({ name: 'multi-krum' })).aggregate([t(0)], input, 1))[0]).toBeCloseTo(0.15, 6);
  });

  it('should fail the round with a coded error when there are not more than 2f + 2 updates', () => {
    const four = individual(fit('a', [0]), fit('b', [1]), fit('c', [2]), fit('d', [3]));
    expect(codeOf(() => strategyFor(spec({ name: 'krum' })).aggregate([t(0)], four, 1))).toBe('COHORT_ERR_ROUND_TOO_FEW_RESULTS');
  });
});

describe('strategy checks at study creation', () => {
  const manifest = (strategy: unknown, secureAggregation: boolean, minSites = 5) => StudyManifestSchema.parse({
    name: 'x', task: { dataset: 'd', label: 'y' }, model: { template: 'logreg' }, training: { rounds: 1 },
    strategy, privacy: { secureAggregation }, participation: { minSites },
  });

  it('should refuse every strategy that needs individual updates when secure aggregation is on', () => {
    for (const name of ['fedmedian', 'trimmed-mean', 'krum', 'multi-krum']) {
      expect(codeOf(() => checkStudyStrategy(manifest({ name }, true)))).toBe('COHORT_ERR_STUDY_STRATEGY_NEEDS_INDIVIDUAL');
      expect(codeOf(() => checkStudyStrategy(manifest({ name }, false)))).toBeUndefined();
    }
    for (const name of ['fedavg', 'fedavgm', 'fedprox', 'fedadam', 'fedyogi', 'fedadagrad']) {
      expect(codeOf(() => checkStudyStrategy(manifest({ name }, true)))).toBeUndefined();
    }
  });

  it('should refuse Krum when the study may aggregate fewer than 2f + 3 sites', () => {
    expect(codeOf(() => checkStudyStrategy(manifest({ name: 'krum', byzantine: 2 }, false, 6)))).toBe('COHORT_ERR_STUDY_STRATEGY_INVALID');
    expect(codeOf(() => checkStudyStrategy(manifest({ name: 'krum', byzantine: 2 }, false, 7)))).toBeUndefined();
  });

  it('should fill in the papers\' defaults and refuse unknown strategies when parsing a manifest', () => {
    expect(spec({ name: 'fedadam' })).toEqual({ name: 'fedadam', eta: 0.1, beta1: 0.9, beta2: 0.99, tau: 1e-3 });
    expect(spec({ name: 'trimmed-mean' })).toEqual({ name: 'trimmed-mean', beta: 0.1 });
    expect(StrategySpecSchema.safeParse({ name: 'fedsgd' }).success).toBe(false);
    expect(StrategySpecSchema.safeParse({ name: 'trimmed-mean', beta: 0.5 }).success).toBe(false);
  });
});
