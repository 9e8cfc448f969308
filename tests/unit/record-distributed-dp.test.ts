/**
 * Record-level DP with distributed Skellam noise (`record-distributed`), with the real encoding: every record's
 * rounded gradient stays within the L2 and L1 bounds the accountant charges, a site cannot put more records in its
 * lanes than the scale allows, and the noise in the decoded step has the planned variance (with every site, and
 * with sites dropped down to the threshold). Per-record gradients equal autodiff's.
 */
import * as tf from '@tensorflow/tfjs';
import { describe, expect, it } from 'vitest';
import { checkRecordLanes, decodeRecordLanes, RecordLaneEncoder } from '../../protocol/privacy/distributed.ts';
import { distributedMechanism, distributedRoundPlan } from '../../protocol/privacy/plan.ts';
import { epsilonOf } from '../../protocol/privacy/accountant.ts';
import { keyedUniform } from '../../protocol/privacy/noise.ts';
import { DpSettingsSchema, StudyManifestSchema, type ModelSpec } from '../../protocol/messages.ts';
import { laneBound } from '../../protocol/crypto/quantize.ts';
import { checkSecureAggregationStudy } from '../../coordinator/secure-aggregation/study-check.ts';
import { clippedRecordGradients } from '../../site-agent/training/dp-sgd.ts';
import { buildModel, getWeights } from '../../protocol/models.ts';
import { selectBackend } from '../../site-agent/training/backends.ts';
import { wdbcManifest } from '../helpers/cluster.ts';

const seeded = (k: number) => keyedUniform(new Uint8Array(32).fill(k));
const dpOf = (over: Record<string, unknown> = {}) => DpSettingsSchema.parse({ mode: 'record-distributed', clip: 0.5, noiseMultiplier: 2, delta: 1e-5, ...over });

/** A gradient of L2 norm `norm`, direction from `u`. */
function gradient(dim: number, norm: number, u: () => number): Float64Array {
  const g = Float64Array.from({ length: dim }, () => u() - 0.5);
  const f = norm / Math.hypot(...g);
  return g.map((v) => v * f);
}

describe('record-distributed DP encoding', () => {
  it('should round every record within the charged L2 and L1 bounds and keep the sum within its lane', () => {
    const dim = 31;
    const plan = distributedRoundPlan(dpOf(), 20, { dim, sites: 5, threshold: 3, bits: 22, maxWeight: 150 });
    expect(plan.level).toBe('record');
    expect(plan.contributions).toBe(150);
    // The scale keeps maxWeight rounded records within the lane: no site's sum can wrap.
    expect(plan.l2 * 150).toBeLessThanOrEqual(2 ** 21);
    expect(plan.event).toEqual({ kind: 'skellam', l1: plan.l1, l2: plan.l2, variance: plan.variance, steps: 1 });
    const u = seeded(1);
    let worst = 0;
    let worstL1 = 0;
    for (let k = 0; k < 2000; k++) {
      // One record alone, noise off: the lanes hold exactly that record's rounded vector (what removing it removes).
      const enc = new RecordLaneEncoder({ ...plan, siteVariance: 0 }, u);
      enc.add(gradient(dim, k % 2 ? plan.clip : 40 * plan.clip, u));
      const lanes = enc.finish();
      expect(lanes[dim]).toBe(0);
      expect(lanes[dim + 1]).toBe(1);
      let sq = 0, l1 = 0;
      for (let i = 0; i < dim; i++) { sq += lanes[i]! ** 2; l1 += Math.abs(lanes[i]!); }
      worst = Math.max(worst, Math.sqrt(sq));
      worstL1 = Math.max(worstL1, l1);
    }
    expect(worst).toBeLessThanOrEqual(plan.l2);
    expect(worstL1).toBeLessThanOrEqual(plan.l1);
    // Every record is clipped at the clip: the rounded norm sits at the scaled clip, not below.
    expect(worst).toBeGreaterThan(plan.clip * plan.scale * 0.999);

    // A full site: maxWeight records of gradients far past the clip, same direction (the worst case for a lane).
    const enc = new RecordLaneEncoder(plan, seeded(2));
    const g = gradient(dim, 10, seeded(3));
    for (let i = 0; i < 150; i++) enc.add(g);
    expect(() => enc.add(g)).toThrow(expect.objectContaining({ code: 'COHORT_ERR_SECAGG_OVERFLOW' }));
    const lanes = enc.finish();
    expect(lanes[dim + 1]).toBe(150);
    expect(() => checkRecordLanes(lanes, plan, laneBound(22))).not.toThrow();
    expect(() => enc.finish()).toThrow();
  });

  it('should decode a step whose noise has the planned variance, with every site and with sites dropped to the threshold', () => {
    const dim = 20_000;
    const sites = 5;
    const threshold = 3;
    const lr = 4;
    const plan = distributedRoundPlan(dpOf({ noiseMultiplier: 1 }), 20, { dim, sites, threshold, bits: 22, maxWeight: 50 });
    const u = seeded(4);
    const encoded: Int32Array[] = [];
    const exact: Float64Array[] = [];
    const counts = [3, 2, 4, 1, 2];
    for (let s = 0; s < sites; s++) {
      const enc = new RecordLaneEncoder(plan, seeded(10 + s));
      const sum = new Float64Array(dim);
      for (let k = 0; k < counts[s]!; k++) {
        const g = gradient(dim, k === 0 ? 0.2 : 3, u); // one record inside the clip, the others clipped
        const f = Math.min(1, plan.clip / Math.hypot(...g));
        for (let i = 0; i < dim; i++) sum[i]! += g[i]! * f;
        enc.add(g);
      }
      encoded.push(enc.finish());
      exact.push(sum);
    }
    const measure = (survivors: number[]) => {
      const total = new Int32Array(dim + 2);
      for (const s of survivors) for (let i = 0; i < dim + 2; i++) total[i] = (total[i]! + encoded[s]![i]!) | 0;
      const { meanDelta, totalWeight } = decodeRecordLanes(total, plan, survivors.length, lr);
      const n = survivors.reduce((a, s) => a + counts[s]!, 0);
      expect(totalWeight).toBe(n);
      let sq = 0;
      for (let i = 0; i < dim; i++) {
        const clean = (-lr * survivors.reduce((a, s) => a + exact[s]![i]!, 0)) / n;
        sq += (meanDelta[i]! - clean) ** 2;
      }
      // Per coordinate, in integer units of the gradient sum: survivors * siteVariance (plus rounding, < 1/4 per record).
      return (sq / dim) * (plan.scale * n / lr) ** 2 / (survivors.length * plan.siteVariance);
    };
    // 20,000 coordinates: the variance estimate's relative standard deviation is 1%.
    expect(Math.abs(measure([0, 1, 2, 3, 4]) - 1)).toBeLessThan(0.04);
    // Two sites dropped: the three survivors' sum still carries the whole planned variance (what is charged).
    const dropped = measure([0, 2, 4]);
    expect(Math.abs(dropped - 1)).toBeLessThan(0.04);
    expect(3 * plan.siteVariance).toBeCloseTo(plan.variance, 6);
  });

  it('should plan the target epsilon over the rounds, and refuse what cannot work', () => {
    const dp = DpSettingsSchema.parse({ mode: 'record-distributed', clip: 0.5, targetEpsilon: 2, delta: 1e-5 });
    const m = distributedMechanism(dp, 20, 31, 22, 130);
    const eps = epsilonOf([{ ...m.event, steps: 20 }], 1e-5).epsilon;
    expect(eps).toBeLessThanOrEqual(2 * (1 + 1e-9));
    expect(eps).toBeGreaterThan(2 - 1e-3);
    // The integer mechanism costs next to nothing over the Gaussian: full-batch DP-SGD needs 9.61 for the same.
    expect(m.noiseMultiplier).toBeGreaterThan(9.5);
    expect(m.noiseMultiplier).toBeLessThan(9.8);
    expect(() => distributedRoundPlan(dp, 20, { dim: 31, sites: 5, threshold: 3, bits: 22 })).toThrow(expect.objectContaining({ code: 'COHORT_ERR_DP_INVALID' }));
    // Too many records per site for the lane at this precision: refused with a hint.
    expect(() => distributedMechanism(dp, 20, 31, 12, 1000)).toThrow(expect.objectContaining({ code: 'COHORT_ERR_DP_INVALID', message: expect.stringMatching(/maxWeight/) }));
    // Secure aggregation is required; microbatches and iterate averaging do not apply.
    const m0 = StudyManifestSchema.parse(wdbcManifest({ privacy: { secureAggregation: false, dp: { mode: 'record-distributed', clip: 0.5, targetEpsilon: 2 } } }));
    expect(() => checkSecureAggregationStudy(m0)).toThrow(expect.objectContaining({ code: 'COHORT_ERR_DP_INVALID' }));
    expect(DpSettingsSchema.safeParse({ mode: 'record-distributed', clip: 0.5, targetEpsilon: 2, microbatch: 4 }).success).toBe(false);
  });

  it('should hand out each record\'s clipped gradient as autodiff computes it', async () => {
    await selectBackend();
    const d = 4;
    const n = 7;
    const x = Float32Array.from({ length: n * d }, (_, i) => Math.sin(i * 1.7) * 2);
    const y = Int32Array.from({ length: n }, (_, i) => i % 2);
    for (const spec of [{ template: 'logreg', l2: 0 }, { template: 'mlp', hidden: [5], activation: 'tanh', dropout: 0, l2: 0 }] as ModelSpec[]) {
      const resolved = { spec, inputShape: [d], numClasses: 2 };
      const m = buildModel(resolved, 3);
      const global = getWeights(m);
      const vars = m.trainableWeights.map((w) => w.read() as tf.Variable);
      const got: Float64Array[] = [];
      const clip = 0.3;
      const out = await clippedRecordGradients(resolved, global, { x, y, n, inputShape: [d], classes: ['0', '1'] }, clip, (g) => got.push(Float64Array.from(g)));
      expect(out.path).toBe('dense');
      expect(got).toHaveLength(n);
      for (let i = 0; i < n; i++) {
        const xi = tf.tensor2d(x.subarray(i * d, (i + 1) * d), [1, d]);
        const yi = tf.tensor2d([y[i]!], [1, 1]);
        const { grads } = tf.variableGrads(() => tf.sum(tf.metrics.binaryCrossentropy(yi, m.apply(xi) as tf.Tensor)) as tf.Scalar, vars);
        const want = vars.flatMap((v) => Array.from(grads[v.name]!.dataSync()));
        const f = Math.min(1, clip / Math.hypot(...want));
        want.forEach((v, j) => expect(Math.abs(got[i]![j]! - v * f)).toBeLessThan(1e-5));
      }
      m.dispose();
    }
  });
});
