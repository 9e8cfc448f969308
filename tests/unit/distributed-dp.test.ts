/**
 * Client-level DP with distributed Skellam noise: the accountant's pieces against direct computation and the
 * Gaussian limit, the noise tail bound against the exact Skellam tail, and the real encoder, the real SecAgg+
 * stages (in memory) and the real decoder over a large vector, whose noise must have the planned variance, with
 * and without a site dropping out after sharing its keys.
 *
 * No published numerical epsilon exists for the Skellam bound that we could find (Agarwal et al. 2021 show it in
 * figures; the reference accounting code in google-research ships no test values), so the checks are the
 * Gaussian limit (the Skellam RDP tends to the Gaussian's as the variance grows with the ratio fixed) and the
 * closed forms evaluated by hand.
 */
import { describe, expect, it } from 'vitest';
import {
  DEFAULT_ORDERS, conditionalRoundedSensitivity, epsilonOf, noiseMultiplierFor, rdpSkellam, skellamNoiseMultiplierFor,
} from '../../protocol/privacy/accountant.ts';
import { distributedMechanism, distributedRoundPlan } from '../../protocol/privacy/plan.ts';
import { decodeDistributedLanes, encodeDistributedLanes, skellamHeadroom } from '../../protocol/privacy/distributed.ts';
import { logGamma } from '../../protocol/privacy/special.ts';
import { DpSettingsSchema, StudyManifestSchema, type StudyManifestInput } from '../../protocol/messages.ts';
import { CohortError } from '../../protocol/errors.ts';
import { checkSecureAggregationStudy } from '../../coordinator/secure-aggregation/study-check.ts';
import { SiteDp } from '../../site-agent/mods/dp.ts';
import { PolicySchema } from '../../site-agent/policy.ts';
import { makeSimSites, secureRound, testRandom } from '../helpers/secagg-harness.ts';
import { wdbcManifest } from '../helpers/cluster.ts';
import type { TrainTask } from '../../protocol/messages.ts';
import { moments } from '../helpers/moments.ts';

const dpOf = (o: object) => DpSettingsSchema.parse({ mode: 'client-distributed', ...o });
const rel = (a: number, b: number) => Math.abs(a - b) / Math.abs(b);

describe('Skellam accounting', () => {
  it('should bound conditionally rounded vectors as Kairouz et al. 2021 do, by hand', () => {
    // beta = e^-1/2 makes sqrt(2 log(1/beta)) = 1: l2 = sqrt(c^2 + d/4 + c + sqrt(d)/2) when that is below c + sqrt(d).
    const a = conditionalRoundedSensitivity(1, 100, 100);
    expect(a.l2).toBeCloseTo(Math.sqrt(10_000 + 25 + 100 + 5), 12);
    expect(a.l1).toBeCloseTo(a.l2 * 10, 10);
    // Tiny scale: L1 <= L2^2 for an integer vector is then the tighter L1 bound.
    const b = conditionalRoundedSensitivity(1, 0.1, 100);
    expect(b.l2).toBeCloseTo(Math.sqrt(0.01 + 25 + 0.1 + 5), 12);
    expect(b.l1).toBeCloseTo(0.01 + 25 + 0.1 + 5, 10);
    // c + sqrt(d) is the deterministic bound of plain stochastic rounding; the conditional one is never above it.
    for (const [scale, dim] of [[1e-3, 1], [10, 10_000], [1e6, 31]] as const) {
      expect(conditionalRoundedSensitivity(1, scale, dim).l2).toBeLessThanOrEqual(scale + Math.sqrt(dim));
    }
    const c = conditionalRoundedSensitivity(1, 0.5, 4);
    expect(c.l1).toBeCloseTo(c.l2 * Math.min(2, c.l2), 12);
  });

  it('should charge a fractional order the bound of the next integer, and tend to the Gaussian as the variance grows', () => {
    const s = { l1: 500, l2: 100, variance: 1e5 };
    expect(rdpSkellam(2.5, s)).toBe(rdpSkellam(3, s));
    expect(rdpSkellam(3, s)).toBeCloseTo(3 * 1e4 / 2e5 + Math.min((5 * 1e4 + 3000) / 4e10, 1500 / 2e5), 15);
    // At a fixed ratio z = sqrt(variance) / l2, epsilon approaches the Gaussian mechanism's with multiplier z (over
    // the integer orders both are evaluated at; with fractional orders the Gaussian gains about 1e-3 relative).
    const orders = DEFAULT_ORDERS.filter((a) => Number.isInteger(a));
    const gauss = epsilonOf([{ kind: 'sampled-gaussian', q: 1, noiseMultiplier: 2, steps: 10 }], 1e-5, orders).epsilon;
    let last = Infinity;
    for (const l2 of [4, 64, 1024, 2 ** 18]) {
      const sk = epsilonOf([{ kind: 'skellam', l2, l1: l2 * Math.min(Math.sqrt(31), l2), variance: (2 * l2) ** 2, steps: 10 }], 1e-5, orders).epsilon;
      const gap = sk - gauss;
      expect(gap).toBeGreaterThanOrEqual(0);
      expect(gap).toBeLessThan(last);
      last = gap;
    }
    expect(last / gauss).toBeLessThan(1e-5);
  });

  it('should find the noise for a target epsilon, spending no more than the target, close to the Gaussian noise', () => {
    const dp = dpOf({ clip: 0.5, targetEpsilon: 4 });
    const m = distributedMechanism(dp, 10, 31, 22);
    const eps = epsilonOf([{ ...m.event, steps: 10 }], 1e-5).epsilon;
    expect(eps).toBeLessThanOrEqual(4 * (1 + 1e-12));
    expect(4 - eps).toBeLessThan(1e-6);
    const gaussZ = noiseMultiplierFor({ targetEpsilon: 4, delta: 1e-5, q: 1, steps: 10 });
    expect(m.noiseMultiplier).toBeGreaterThan(gaussZ);
    expect(rel(m.noiseMultiplier, gaussZ)).toBeLessThan(1e-3);
    // The noise is z times the rounded sensitivity; in the model's units about z times the clip.
    expect(Math.sqrt(m.variance) / m.l2).toBeCloseTo(m.noiseMultiplier, 9);
    expect(rel(m.noiseStd, m.noiseMultiplier * 0.5)).toBeLessThan(1e-3);
    // The search is the same bisection as the Gaussian one: a direct call agrees.
    const z = skellamNoiseMultiplierFor({ targetEpsilon: 4, delta: 1e-5, steps: 10, mechanism: (x) => ({ l2: 1000, l1: 1000 * Math.sqrt(31), variance: (1000 * x) ** 2 }) });
    expect(rel(z, gaussZ)).toBeLessThan(1e-3);
  });

  it('should split the noise over the threshold, so that any sum that can be unmasked carries the planned variance', () => {
    const dp = dpOf({ clip: 1, noiseMultiplier: 1.5 });
    const p = distributedRoundPlan(dp, 5, { dim: 1000, sites: 5, threshold: 3, bits: 22 });
    expect(p.noiseSites).toBe(3);
    expect(p.siteVariance * 3).toBeCloseTo(p.variance, 3);
    expect(p.l2).toBeLessThanOrEqual(2 ** 21);
    expect(() => distributedRoundPlan(dpOf({ clip: 1, noiseMultiplier: 1, adaptiveClipping: {} }), 5, { dim: 10, sites: 3, threshold: 2, bits: 22 })).toThrow(expect.objectContaining({ code: 'COHORT_ERR_DP_UNSUPPORTED' }));
    expect(() => distributedRoundPlan(dpOf({ clip: 1, noiseMultiplier: 0 }), 5, { dim: 10, sites: 3, threshold: 2, bits: 22 })).toThrow(expect.objectContaining({ code: 'COHORT_ERR_DP_INVALID' }));
    // Too many parameters for the lane: rounding error would outweigh the update.
    expect(() => distributedRoundPlan(dp, 5, { dim: 1e6, sites: 3, threshold: 2, bits: 12 })).toThrow(expect.objectContaining({ code: 'COHORT_ERR_DP_INVALID' }));
  });
});

describe('Skellam noise headroom', () => {
  /** Exact P(X >= h) for X = Poisson(mu) - Poisson(mu), summed in log space. */
  const upperTail = (mu: number, h: number) => {
    const logPmf = (k: number) => -mu + k * Math.log(mu) - logGamma(k + 1);
    let total = 0;
    for (let j = 0; j < mu + 60 * Math.sqrt(mu) + 60; j++) {
      let tail = 0;
      for (let k = j + h; k < j + h + 60 * Math.sqrt(mu) + 200; k++) tail += Math.exp(logPmf(k));
      total += Math.exp(logPmf(j)) * tail;
    }
    return total;
  };

  it.each([[2, 1], [2, 1000], [100, 31]])('should bound the tail of variance %d over %d lanes below 2^-40, without gross slack', (variance, dim) => {
    const h = skellamHeadroom(variance, dim);
    const mu = variance / 2;
    expect(2 * dim * upperTail(mu, h + 1)).toBeLessThanOrEqual(2 ** -40);
    // The Chernoff bound is within a few units of the exact quantile at these sizes.
    expect(2 * dim * upperTail(mu, Math.floor(h * 0.7))).toBeGreaterThan(2 ** -40);
  });

  it('should match the Gaussian tail for large variances (about 8 standard deviations at 2^-40 over 31 lanes)', () => {
    const sd = 2 ** 17;
    const h = skellamHeadroom(sd * sd, 31);
    expect(h / sd).toBeGreaterThan(7.5);
    expect(h / sd).toBeLessThan(8.5);
    expect(skellamHeadroom(0, 31)).toBe(0);
  });
});

describe('client-distributed encoding through real secure aggregation', () => {

  /** The noise-free mean of the survivors' L2-clipped updates, and the rounding variance their scaled values imply. */
  const truth = (deltas: Float32Array[], clip: number, scale: number) => {
    const d = deltas[0]!.length;
    const mean = new Float64Array(d);
    let rounding = 0;
    for (const x of deltas) {
      const norm = Math.sqrt(x.reduce((s, v) => s + v * v, 0));
      const f = Math.min(1, clip / norm);
      for (let i = 0; i < d; i++) {
        mean[i]! += (f * x[i]!) / deltas.length;
        const y = f * x[i]! * scale;
        const frac = y - Math.floor(y);
        rounding += frac * (1 - frac);
      }
    }
    return { mean, roundingPerLane: rounding / d };
  };

  it.each([
    ['every site', new Map(), 5],
    ['a site lost at the masked-input stage', new Map([[4, 'masked-input' as const]]), 4],
  ])('should decode the noisy mean with the planned noise variance, within a few percent over 40,000 lanes: %s', async (_label, dropAt, survivors) => {
    const d = 40_000;
    const sites = makeSimSites(5, d, { seed: 11, clip: 0.02 });
    const dp = dpOf({ clip: 1, noiseMultiplier: 0.8 });
    const { decoded, result, plan } = await secureRound(sites, { dp, dropAt });
    expect(result.survivors).toHaveLength(survivors);
    expect(plan!.noiseSites).toBe(3);
    const names = new Set(result.survivors);
    const { mean, roundingPerLane } = truth(sites.filter((s) => names.has(s.site.name)).map((s) => s.delta), dp.clip, plan!.scale);
    const dev = Float64Array.from(decoded.meanDelta, (v, i) => (v - mean[i]!) * plan!.scale * survivors); // integer units
    const m = moments(dev);
    // Each survivor's Skellam share plus its rounding: the noise really is there, as planned, and unbiased.
    const expected = survivors * plan!.siteVariance + roundingPerLane;
    expect(Math.abs(m.variance / expected - 1)).toBeLessThan(0.04);
    expect(Math.abs(m.mean)).toBeLessThan(5 * Math.sqrt(expected / d));
    // Fewer survivors than sites: still at least the variance the accountant charges.
    expect(survivors * plan!.siteVariance).toBeGreaterThanOrEqual(plan!.variance * (1 - 1e-12));
    // In the model's units, the mean's noise is about z * clip / survivors.
    expect(rel(Math.sqrt(m.variance) / (plan!.scale * survivors), (0.8 * Math.sqrt(survivors / 3)) / survivors)).toBeLessThan(0.03);
  });

  it('should clip in L2, keep every rounded vector within its bound and put 0 and 1 in the loss and weight lanes', () => {
    const plan = distributedRoundPlan(dpOf({ clip: 0.5, noiseMultiplier: 1 }), 1, { dim: 64, sites: 4, threshold: 3, bits: 16 });
    const u = testRandom(3);
    const big = Float64Array.from({ length: 64 }, (_, i) => (i % 2 ? 3 : -3));
    const quiet = encodeDistributedLanes(big, { ...plan, siteVariance: 0 }, u);
    let sq = 0;
    for (let i = 0; i < 64; i++) sq += quiet[i]! ** 2;
    expect(Math.sqrt(sq)).toBeLessThanOrEqual(plan.l2);
    expect(Math.sqrt(sq)).toBeGreaterThan(0.5 * plan.scale - 8);
    expect([quiet[64], quiet[65]]).toEqual([0, 1]);
    expect(() => encodeDistributedLanes(Float64Array.of(NaN, ...new Array(63).fill(0)), plan)).toThrow(expect.objectContaining({ code: 'COHORT_ERR_TENSOR_NONFINITE' }));
    // The decoder refuses a sum whose weight lane does not count the survivors.
    const sum = Int32Array.from(quiet);
    expect(() => decodeDistributedLanes(sum, plan, 2)).toThrow(expect.objectContaining({ code: 'COHORT_ERR_SECAGG_BAD_SHARE' }));
    expect(decodeDistributedLanes(sum, plan, 1).meanDelta[1]).toBeCloseTo(quiet[1]! / plan.scale, 12);
  });
});

describe('client-distributed study checks', () => {
  const manifest = (privacy: StudyManifestInput['privacy'], over: Partial<StudyManifestInput> = {}) => StudyManifestSchema.parse(wdbcManifest({ privacy, ...over }));
  const participation = (n: number) => ({ minSites: 2, sites: Array.from({ length: n }, (_, i) => `Site ${i}`), roundDeadlineMs: 1000, waitForSitesMs: 1000, maxRoundAttempts: 1 });

  it('should refuse at creation distributed DP without secure aggregation, with adaptive clipping, or whose noise could wrap a lane', () => {
    const dp = { mode: 'client-distributed' as const, clip: 1, noiseMultiplier: 1 };
    const code = (f: () => void) => { try { f(); return 'ok'; } catch (err) { return (err as CohortError).code; } };
    expect(code(() => checkSecureAggregationStudy(manifest({ secureAggregation: false, dp })))).toBe('COHORT_ERR_DP_INVALID');
    expect(code(() => checkSecureAggregationStudy(manifest({ secureAggregation: true, dp: { ...dp, adaptiveClipping: {} } })))).toBe('COHORT_ERR_DP_UNSUPPORTED');
    expect(code(() => checkSecureAggregationStudy(manifest({ secureAggregation: true, dp })))).toBe('ok');
    // 250 sites at 24 bits fit without noise (250 * 2^23 < 2^31) but not with each site's noise headroom on top.
    const wide = { quantizationBits: 24 };
    expect(code(() => checkSecureAggregationStudy(manifest({ secureAggregation: wide }, { participation: participation(250) })))).toBe('ok');
    expect(code(() => checkSecureAggregationStudy(manifest({ secureAggregation: wide, dp }, { participation: participation(250) })))).toBe('COHORT_ERR_SECAGG_OVERFLOW');
    expect(code(() => checkSecureAggregationStudy(manifest({ secureAggregation: { quantizationBits: 22 }, dp }, { participation: participation(250) })))).toBe('ok');
  });

  it('should make a site refuse a round without its session plan, with other decoding parameters, or past its budget', () => {
    const m = manifest({ secureAggregation: true, dp: { mode: 'client-distributed', clip: 1, noiseMultiplier: 1 } });
    const plan = distributedRoundPlan(m.privacy.dp!, m.training.rounds, { dim: 31, sites: 3, threshold: 2, bits: 22 });
    const task = (round: number, dp?: TrainTask['dp']) => ({ kind: 'train', taskId: `t${round}`, studyId: 's', dataset: 'wdbc', round, participants: 3, ...(dp ? { dp } : {}) }) as TrainTask;
    const one = epsilonOf([{ ...plan.event }], 1e-5).epsilon;
    const two = epsilonOf([{ ...plan.event, steps: 2 }], 1e-5).epsilon;
    const site = new SiteDp(undefined, PolicySchema.parse({ maxEpsilonPerStudy: (one + two) / 2, delta: 1e-5 }));
    expect(() => site.beforeTrain(task(1), m, 100)).toThrow(expect.objectContaining({ code: 'COHORT_ERR_SITE_TASK_MISMATCH' }));
    expect(() => site.beforeTrain(task(1, { clip: 1, distributed: { scale: plan.scale * 2, siteVariance: plan.siteVariance, headroom: plan.headroom } }), m, 100, plan)).toThrow(expect.objectContaining({ code: 'COHORT_ERR_SITE_TASK_MISMATCH' }));
    expect(site.budget.entries()).toHaveLength(0);
    const r = site.beforeTrain(task(1, { clip: 1, distributed: { scale: plan.scale, siteVariance: plan.siteVariance, headroom: plan.headroom } }), m, 100, plan)!;
    expect(r.report.clientEpsilon).toBeCloseTo(one, 12);
    // The encoder clips; nothing about the update (not even whether it was within the clip) is reported.
    const global = [{ shape: [2], data: Float32Array.of(0, 0) }];
    expect(site.release(r, global, [{ shape: [2], data: Float32Array.of(9, 9) }]).privacy.withinClip).toBeUndefined();
    expect(() => site.checkBudget('s', 'wdbc', 2, 'client', plan.event)).toThrow(expect.objectContaining({ code: 'COHORT_ERR_POLICY_EPSILON_EXCEEDED' }));
    expect(site.budget.entries()).toHaveLength(1);
  });
});
