/**
 * The accountant against the published test values of TensorFlow Privacy / dp_accounting and Opacus. Each vector
 * names the file it comes from; every one is reproduced to 1e-7 relative or better.
 */
import { describe, expect, it } from 'vitest';
import {
  DEFAULT_ORDERS, OPACUS_ORDERS, RdpAccountant, TF_PRIVACY_ORDERS, deltaFromRdp, epsilonFromRdp, epsilonOf, noiseMultiplierFor, rdpOf,
  rdpSampledGaussian, rdpSkellam, roundedSensitivity, type PrivacyEvent,
} from '../../protocol/privacy/accountant.ts';
import { clientRoundPlan, recordRoundPlan } from '../../protocol/privacy/plan.ts';
import { logErfc, logGamma } from '../../protocol/privacy/special.ts';
import { DpSettingsSchema } from '../../protocol/messages.ts';

const sg = (q: number, noiseMultiplier: number, steps: number): PrivacyEvent => ({ kind: 'sampled-gaussian', q, noiseMultiplier, steps });
const rel = (a: number, b: number) => Math.abs(a - b) / Math.abs(b);

describe('privacy accountant: published vectors', () => {
  // tensorflow/privacy: tensorflow_privacy/privacy/analysis/compute_dp_sgd_privacy_test.py, test_compute_dp_sgd_privacy
  // (n, batch, noise, epochs, delta) -> (epsilon, order); steps = ceil(epochs n / batch), q = batch / n.
  it.each([
    ['Test0', 60000, 150, 1.3, 15, 1e-5, 0.7242234026109595, 19],
    ['Test1', 100000, 100, 1.0, 30, 1e-7, 1.4154988495444842, 13],
    ['Test2', 100000000, 1024, 0.1, 10, 1e-7, 5907982.3113984, 1.25],
  ])('should reproduce TensorFlow Privacy %s to 1e-7 relative when using its default orders', (_n, n, batch, sigma, epochs, delta, eps, order) => {
    const r = epsilonOf([sg(batch / n, sigma, Math.ceil((epochs * n) / batch))], delta, TF_PRIVACY_ORDERS);
    expect(rel(r.epsilon, eps)).toBeLessThan(1e-7);
    expect(r.order).toBe(order);
  });

  // pytorch/opacus: opacus/tests/accountants_test.py, test_rdp_accountant: 2250 steps at q 0.04, sigma 1.5.
  it('should reproduce Opacus test_rdp_accountant (7.32911117143) when using its default orders', () => {
    const r = epsilonOf([sg(0.04, 1.5, Math.trunc(90 / 0.04))], 1e-5, OPACUS_ORDERS);
    expect(rel(r.epsilon, 7.32911117143)).toBeLessThan(1e-7);
    // Its optimum is a fractional order: the signed fractional series is exercised.
    expect(Number.isInteger(r.order)).toBe(false);
  });

  // Opacus composes step by step (history of (sigma, q, steps)); composing in pieces must give the same number
  // (opacus/tests/accountants_test.py, test_rdp_accountant_state_dict resumes after steps - 1000).
  it('should give the same epsilon when the same steps are composed in pieces', () => {
    const acc = new RdpAccountant(OPACUS_ORDERS).compose(sg(0.04, 1.5, 1250)).compose(sg(0.04, 1.5, 1000));
    expect(rel(acc.epsilon(1e-5).epsilon, 7.32911117143)).toBeLessThan(1e-7);
  });

  // opacus/tests/accountants_test.py, test_get_noise_multiplier_rdp_epochs / _steps (epsilon_tolerance 0.01, places=4).
  it('should reproduce Opacus get_noise_multiplier (1.416, 1.3562) with its tolerance', () => {
    const a = noiseMultiplierFor({ targetEpsilon: 8, delta: 1e-5, q: 0.04, steps: Math.trunc(90 / 0.04), orders: OPACUS_ORDERS, tolerance: 0.01 });
    const b = noiseMultiplierFor({ targetEpsilon: 8, delta: 1e-5, q: 0.04, steps: 2000, orders: OPACUS_ORDERS, tolerance: 0.01 });
    expect(Math.abs(a - 1.416)).toBeLessThan(5e-5);
    expect(Math.abs(b - 1.3562)).toBeLessThan(5e-5);
  });

  // google/differential-privacy: python/dp_accounting/dp_accounting/rdp/rdp_privacy_accountant_test.py,
  // test_compute_rdp_poisson_sampled_gaussian (q 0.01, sigma 2.5, 50 steps). dp_accounting sums fractional orders'
  // series in absolute value; its values come back with series 'absolute', to the 9 digits it publishes.
  it('should reproduce dp_accounting test_compute_rdp_poisson_sampled_gaussian', () => {
    const orders = [1.5, 2.5, 5, 50, 100, Infinity];
    const want = [6.70579741e-04, 1.08548710e-03, 2.18075656e-03, 2.38460375e-02, 1.67416308e02, Infinity];
    const got = rdpOf(sg(0.01, 2.5, 50), orders, 'absolute');
    got.forEach((v, i) => (Number.isFinite(want[i]!) ? expect(rel(v, want[i]!)).toBeLessThan(1e-8) : expect(v).toBe(Infinity)));
    // The exact (signed) series agrees at integer orders and is lower (tighter) at fractional ones.
    const exact = rdpOf(sg(0.01, 2.5, 50), orders);
    expect(exact[2]).toBe(got[2]);
    expect(exact[0]!).toBeLessThan(got[0]!);
  });

  // rdp_privacy_accountant_test.py, test_compute_epsilon_delta_pure_dp: constant RDP 1.1 over orders 2..32.
  it('should reproduce dp_accounting test_compute_epsilon_delta_pure_dp in both directions', () => {
    const orders = Array.from({ length: 31 }, (_, i) => i + 2);
    const rdp = orders.map(() => 1.1);
    const e = epsilonFromRdp(orders, rdp, 1e-5);
    expect(Math.abs(e.epsilon - 1.32783806176)).toBeLessThan(1e-10);
    expect(e.order).toBe(32);
    const d = deltaFromRdp(orders, rdp, 1.32783806176);
    expect(rel(d.delta, 1e-5)).toBeLessThan(1e-7);
    expect(d.order).toBe(32);
  });

  // rdp_privacy_accountant_test.py, test_compute_epsilon_delta_gaussian: sigma 4.530877117 is exactly (1, 1e-6)-DP
  // over orders 1.000 to 99.999 by 0.001.
  it('should reproduce dp_accounting test_compute_epsilon_delta_gaussian', () => {
    const orders = Array.from({ length: 99_000 }, (_, i) => 0.001 * (i + 1000)).filter((a) => a > 1);
    const rdp = rdpOf(sg(1, 4.530877117, 1), orders);
    expect(Math.abs(epsilonFromRdp(orders, rdp, 1e-6).epsilon - 1)).toBeLessThan(1e-7);
    expect(rel(deltaFromRdp(orders, rdp, 1).delta, 1e-6)).toBeLessThan(1e-6);
  });
});

describe('privacy accountant: behaviour', () => {
  it('should find the noise multiplier for a target epsilon that round-trips to that epsilon', () => {
    for (const [eps, q, steps] of [[2, 0.125, 80], [0.5, 0.01, 10_000], [8, 1, 20]] as const) {
      const sigma = noiseMultiplierFor({ targetEpsilon: eps, delta: 1e-5, q, steps });
      const back = epsilonOf([sg(q, sigma, steps)], 1e-5).epsilon;
      expect(back).toBeLessThanOrEqual(eps);
      expect(eps - back).toBeLessThan(1e-6);
      // A little less noise would overspend.
      expect(epsilonOf([sg(q, sigma * 0.999, steps)], 1e-5).epsilon).toBeGreaterThan(eps);
    }
  });

  it('should compose heterogeneous rounds by adding RDP order by order', () => {
    const events = [sg(0.1, 1.1, 30), sg(0.05, 2, 100), sg(1, 5, 1)];
    const acc = new RdpAccountant();
    for (const e of events) acc.compose(e);
    const each = events.map((e) => rdpOf(e));
    const summed = DEFAULT_ORDERS.map((_, k) => each.reduce((s, r) => s + r[k]!, 0));
    expect(acc.rdp()).toEqual(summed);
    expect(acc.epsilonIf(sg(0.1, 1.1, 30), 1e-5).epsilon).toBeGreaterThan(acc.epsilon(1e-5).epsilon);
    expect(new RdpAccountant().epsilon(1e-5).epsilon).toBe(0);
  });

  it('should use the closed form alpha / (2 sigma^2) without sampling and give 0 without data access', () => {
    expect(rdpSampledGaussian(1, 2, 7)).toBeCloseTo(7 / 8, 15);
    expect(rdpSampledGaussian(0, 2, 7)).toBe(0);
    expect(rdpSampledGaussian(0.5, 0, 7)).toBe(Infinity);
    expect(() => rdpSampledGaussian(1.5, 1, 2)).toThrow(RangeError);
  });

  it('should stay finite and monotone at the extreme orders and rates dp_accounting tests for stability', () => {
    // rdp_privacy_accountant_test.py, params of test_compute_log_a_equals_log_a_sampled_gaussian (a few of them).
    for (const { q, sigma, order } of [{ q: 1e-7, sigma: 0.1, order: 1.01 }, { q: 1e-6, sigma: 0.1, order: 256 }, { q: 1e-5, sigma: 0.1, order: 256.1 }, { q: 0.99, sigma: 0.1, order: 256 }, { q: 0.1, sigma: 100, order: 20.5 }]) {
      const r = rdpSampledGaussian(q, sigma, order);
      expect(Number.isNaN(r)).toBe(false);
      expect(r).toBeGreaterThanOrEqual(0);
      // Subsampling never costs more than the unsampled Gaussian.
      expect(r).toBeLessThanOrEqual(order / (2 * sigma * sigma) * (1 + 1e-9));
    }
  });

  it('should bound the Skellam mechanism by the Gaussian plus a term that vanishes as the variance grows', () => {
    const l2 = 100, dim = 1000;
    const { l1 } = roundedSensitivity(1, l2 - Math.sqrt(dim), dim);
    for (const v of [1e4, 1e6, 1e8]) {
      const sk = rdpSkellam(8, { l1, l2, variance: v });
      const gauss = (8 * l2 * l2) / (2 * v);
      expect(sk).toBeGreaterThan(gauss);
      expect((sk - gauss) / gauss).toBeLessThan(v >= 1e6 ? 0.05 : 10);
    }
    // Agarwal et al. 2021's bound in their notation, Sk(mu, mu) of variance 2 mu: a l2^2 / (4 mu) + min(...).
    const mu = 5000;
    expect(rdpSkellam(4, { l1: 50, l2: 10, variance: 2 * mu })).toBeCloseTo(4 * 100 / (4 * mu) + Math.min((7 * 100 + 300) / (16 * mu * mu), 150 / (4 * mu)), 14);
    const e = epsilonOf([{ kind: 'skellam', l1, l2, variance: (l2 * 1.2) ** 2, steps: 10 }], 1e-5);
    expect(e.epsilon).toBeGreaterThan(epsilonOf([sg(1, 1.2, 10)], 1e-5).epsilon);
  });
});

describe('privacy plan', () => {
  const dp = (o: object) => DpSettingsSchema.parse({ mode: 'record', ...o });
  it('should calibrate record-level noise so that all rounds spend exactly the target', () => {
    const t = { batchSize: 16, localEpochs: 2, rounds: 10 };
    const plan = recordRoundPlan(dp({ targetEpsilon: 2 }), t, 128);
    expect(plan.sampleRate).toBe(0.125);
    expect(plan.steps).toBe(16);
    const total = epsilonOf([{ ...plan.event, steps: plan.steps * t.rounds }], 1e-5).epsilon;
    expect(2 - total).toBeGreaterThanOrEqual(0);
    expect(2 - total).toBeLessThan(1e-6);
    // Microbatches double the sensitivity: twice the noise for the same accounting.
    const micro = recordRoundPlan(dp({ noiseMultiplier: 2, microbatch: 4 }), t, 128);
    expect(micro.accountedNoiseMultiplier).toBe(1);
    expect(micro.noiseMultiplier).toBe(2);
  });

  it('should split the client-level budget between the update and the adaptive clipping count', () => {
    const plain = clientRoundPlan(DpSettingsSchema.parse({ mode: 'client-central', noiseMultiplier: 1 }), 10, 5);
    expect(plain.updateNoiseMultiplier).toBe(1);
    const adaptive = clientRoundPlan(DpSettingsSchema.parse({ mode: 'client-central', noiseMultiplier: 1, adaptiveClipping: {} }), 10, 5);
    expect(adaptive.bitNoiseStd).toBe(1);
    // z^-2 = sigmaU^-2 + (2 sigmaB)^-2
    expect(adaptive.updateNoiseMultiplier ** -2 + (2 * adaptive.bitNoiseStd) ** -2).toBeCloseTo(1, 12);
    expect(() => clientRoundPlan(DpSettingsSchema.parse({ mode: 'client-central', noiseMultiplier: 1, adaptiveClipping: { bitNoiseMultiplier: 0.4 } }), 10, 5)).toThrow(/bit noise/);
  });

  it('should refuse DP settings without noise or with adaptive clipping at record level', () => {
    expect(DpSettingsSchema.safeParse({ mode: 'record' }).success).toBe(false);
    expect(DpSettingsSchema.safeParse({ mode: 'record', noiseMultiplier: 1, adaptiveClipping: {} }).success).toBe(false);
    expect(DpSettingsSchema.safeParse({ mode: 'none' }).success).toBe(true);
  });
});

describe('special functions', () => {
  // Reference values from SciPy 1.17 (gammaln) and mpmath at 40 digits (log erfc).
  it('should match log erfc and log gamma references to 1e-13 relative', () => {
    const erfc: [number, number][] = [[-1, 0.6112323176780705], [0.5, -0.7350111298370848], [2, -5.36494126461664], [5, -27.200889545537446], [30, -903.9741171106442], [1e6, -1000000000014.3882], [1e-8, -1.12837917346171e-8]];
    for (const [x, v] of erfc) expect(rel(logErfc(x), v)).toBeLessThan(2e-13);
    const lg: [number, number][] = [[0.1, 2.252712651734206], [3.7, 1.428072326665388], [513, 2686.0604716263483], [-2.75, 0.0044878975359557705], [-10.1, -13.020973271011497]];
    for (const [x, v] of lg) expect(rel(logGamma(x), v)).toBeLessThan(2e-12);
  });
});
