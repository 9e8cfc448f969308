/**
 * DP-SGD at the site: per-example gradients are right, clipping really bounds what one example can do to the
 * model, noise is really there at the scale the accountant assumes.
 */
import * as tf from '@tensorflow/tfjs';
import { describe, expect, it } from 'vitest';
import { denseClippedSum, trainDpSgd } from '../../site-agent/training/dp-sgd.ts';
import { buildModel, getWeights, setWeights } from '../../protocol/models.ts';
import type { Tensor } from '../../protocol/codec.ts';
import type { LoadedSplit } from '../../site-agent/data/data-source.ts';
import type { ModelSpec, ResolvedModel } from '../../protocol/messages.ts';
import { selectBackend } from '../../site-agent/training/backends.ts';

/** A small, seeded, linearly separable-ish data set. */
function data(n: number, d: number, seed = 1): LoadedSplit {
  let s = seed;
  const r = () => { s = (s * 1664525 + 1013904223) >>> 0; return s / 2 ** 32 - 0.5; };
  const x = new Float32Array(n * d);
  const y = new Int32Array(n);
  for (let i = 0; i < n; i++) {
    let dot = 0;
    for (let j = 0; j < d; j++) { x[i * d + j] = r() * 2; dot += x[i * d + j]! * (j % 2 ? 1 : -1); }
    y[i] = dot > 0 ? 1 : 0;
  }
  return { x, y, n, inputShape: [d], classes: ['0', '1'] };
}

const model = (spec: ModelSpec, d = 4): ResolvedModel => ({ spec, inputShape: [d], numClasses: 2 });
const flat = (ws: readonly Tensor[]) => ws.flatMap((w) => Array.from(w.data));
const dist = (a: readonly Tensor[], b: readonly Tensor[]) => Math.sqrt(flat(a).reduce((s, v, i) => s + (v - flat(b)[i]!) ** 2, 0));

describe('DP-SGD', () => {
  it('should compute per-example gradient norms and sums equal to autodiff when a dense stack is used', async () => {
    await selectBackend();
    const d = 4;
    const ds = data(6, d);
    for (const spec of [{ template: 'logreg', l2: 0 }, { template: 'mlp', hidden: [5, 3], activation: 'tanh', dropout: 0, l2: 0 }, { template: 'mlp', hidden: [4], activation: 'elu', dropout: 0, l2: 0 }] as ModelSpec[]) {
      const m = buildModel(model(spec, d), 3);
      const vars = m.trainableWeights.map((w) => w.read() as tf.Variable);
      const layers = m.layers.filter((l) => l.getClassName() === 'Dense').map((l) => ({
        kernel: l.trainableWeights[0]!.read() as tf.Variable, bias: l.trainableWeights[1]!.read() as tf.Variable,
        activation: (l.getConfig() as { activation: string }).activation, l2: 0,
      }));
      const x = tf.tensor2d(ds.x, [ds.n, d]);
      const y = tf.tensor1d(Float32Array.from(ds.y));
      const { sum, norms } = denseClippedSum(layers, x, y, 2, 1e9);
      const got = await norms.data();
      // Autodiff, one example at a time, on the summed binary cross-entropy.
      const want: number[] = [];
      const total = vars.map((v) => new Float64Array(v.size));
      for (let i = 0; i < ds.n; i++) {
        const xi = x.slice([i, 0], [1, d]);
        const yi = y.slice([i], [1]).reshape([1, 1]);
        const { grads } = tf.variableGrads(() => tf.sum(tf.metrics.binaryCrossentropy(yi, m.apply(xi) as tf.Tensor)) as tf.Scalar, vars);
        const g = vars.map((v) => Array.from(grads[v.name]!.dataSync()));
        want.push(Math.sqrt(g.reduce((s, a) => s + a.reduce((t, v) => t + v * v, 0), 0)));
        g.forEach((a, k) => a.forEach((v, j) => { total[k]![j]! += v; }));
      }
      want.forEach((w, i) => expect(Math.abs(got[i]! - w)).toBeLessThan(1e-4 * Math.max(1, w)));
      sum.forEach((s, k) => Array.from(s.dataSync()).forEach((v, j) => expect(Math.abs(v - total[k]![j]!)).toBeLessThan(1e-4)));
      tf.dispose([x, y, norms, ...sum]);
      m.dispose();
    }
  });

  it('should bound one example\'s effect on the model by the clip when its gradient is huge', async () => {
    const d = 4;
    const clean = data(20, d);
    // The same data with example 0 made large (features x 10) and mislabeled: its raw gradient is tens of times
    // the clip (larger factors only saturate the sigmoid, which shrinks the gradient again).
    const x = clean.x.slice();
    for (let j = 0; j < d; j++) x[j] = x[j]! * 10;
    const y = clean.y.slice();
    y[0] = 1 - y[0]!;
    const poisoned: LoadedSplit = { ...clean, x, y };
    const without: LoadedSplit = { ...clean, x: clean.x.slice(d), y: clean.y.slice(1), n: 19 };
    const clip = 0.1, lr = 1;
    for (const spec of [{ template: 'logreg', l2: 0 }, { template: 'mlp', hidden: [8], activation: 'elu', dropout: 0.2, l2: 0 }] as ModelSpec[]) {
      const resolved = model(spec, d);
      const m = buildModel(resolved, 5);
      const global = getWeights(m);
      m.dispose();
      // One full-batch step (batchSize >= n: q = 1), no noise, plain SGD: the update is lr * sum(clipped) / n.
      const opts = { epochs: 1, batchSize: 20, optimizer: 'sgd' as const, learningRate: lr, clip, noiseMultiplier: 0 };
      const a = await trainDpSgd(resolved, global, poisoned, opts);
      const b = await trainDpSgd(resolved, global, clean, opts);
      const c = await trainDpSgd(resolved, global, without, { ...opts, batchSize: 20 });
      expect(a.maxNormSeen).toBeGreaterThan(20 * clip);
      // Replacing the example moves the model by at most 2 * clip * lr / n; the same holds for the contribution.
      expect(dist(a.weights, b.weights)).toBeLessThanOrEqual((2 * clip * lr) / 20 + 1e-5);
      expect(a.path).toBe(spec.template === 'logreg' ? 'dense' : 'general');
      expect(c.steps).toBe(1);
      // Without clipping the poisoned example would have thrown the model far away.
      const raw = await trainDpSgd(resolved, global, poisoned, { ...opts, clip: 1e9 });
      expect(dist(raw.weights, b.weights)).toBeGreaterThan(10 * dist(a.weights, b.weights));
    }
  });

  it('should add Gaussian noise of std lr * sigma * clip / (q n) per coordinate and draw it fresh every time', async () => {
    const d = 4;
    const ds = data(40, d);
    const resolved = model({ template: 'logreg', l2: 0 }, d);
    const m = buildModel(resolved, 5);
    const global = getWeights(m);
    m.dispose();
    const sigma = 2, clip = 1, lr = 1;
    const deltas: number[] = [];
    for (let rep = 0; rep < 30; rep++) {
      const out = await trainDpSgd(resolved, global, ds, { epochs: 1, batchSize: 40, optimizer: 'sgd', learningRate: lr, clip, noiseMultiplier: sigma });
      deltas.push(...flat(out.weights).map((v, i) => v - flat(global)[i]!));
    }
    const mean = deltas.reduce((s, v) => s + v, 0) / deltas.length;
    const sd = Math.sqrt(deltas.reduce((s, v) => s + (v - mean) ** 2, 0) / deltas.length);
    // q = 1 here (batch >= n): noise std on the mean gradient is sigma * clip / n = 0.05; signal adds a little.
    expect(sd).toBeGreaterThan(0.04);
    expect(sd).toBeLessThan(0.2);
    // And a second run never repeats the first: the noise is fresh every time.
    const x1 = await trainDpSgd(resolved, global, ds, { epochs: 1, batchSize: 10, optimizer: 'sgd', learningRate: lr, clip, noiseMultiplier: sigma });
    const x2 = await trainDpSgd(resolved, global, ds, { epochs: 1, batchSize: 10, optimizer: 'sgd', learningRate: lr, clip, noiseMultiplier: sigma });
    expect(x1.steps).toBe(4);
    expect(x1.sampleRate).toBe(0.25);
    expect(dist(x1.weights, x2.weights)).toBeGreaterThan(0);
  });

  it('should keep weights in the protocol order so that the coordinator can load them', async () => {
    const resolved = model({ template: 'mlp', hidden: [3], activation: 'relu', dropout: 0, l2: 0.01 }, 4);
    const m = buildModel(resolved, 5);
    const global = getWeights(m);
    const out = await trainDpSgd(resolved, global, data(16, 4), { epochs: 2, batchSize: 8, optimizer: 'adam', learningRate: 0.01, clip: 1, noiseMultiplier: 1, averageIterates: true });
    expect(out.weights.map((w) => w.shape)).toEqual(global.map((w) => w.shape));
    setWeights(m, out.weights);
    m.dispose();
  });
});
