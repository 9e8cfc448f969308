/**
 * The fast training path (train-ops.ts, fused-optimizer.ts, training-graph.ts, fit-loop.ts) against tfjs's own ops,
 * optimizers and `model.predict`, on the wasm and the cpu backends; then real training on WDBC on both backends.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import * as tf from '@tensorflow/tfjs';
import { beforeAll, describe, expect, it } from 'vitest';
import { ModelSpecSchema, type ResolvedModel } from '../../protocol/messages.ts';
import { buildModel, getWeights } from '../../protocol/models.ts';
import type { LoadedSplit } from '../../site-agent/data/data-source.ts';
import { selectBackend } from '../../site-agent/training/backends.ts';
import { fitModel } from '../../site-agent/training/fit-loop.ts';
import { FusedOptimizer } from '../../site-agent/training/fused-optimizer.ts';
import { conv2dOp, denseOp, sigmoidCrossEntropyOp, softmaxCrossEntropyOp } from '../../site-agent/training/train-ops.ts';
import { leanPredict, trainingGraph } from '../../site-agent/training/training-graph.ts';
import { evaluate, train } from '../../site-agent/training/trainer.ts';

const ROOT = join(import.meta.dirname, '..', '..');
type Backend = 'wasm' | 'cpu';
const BACKENDS: Backend[] = ['wasm', 'cpu'];

function rng(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}
const randomArray = (r: () => number, n: number) => Float32Array.from({ length: n }, () => r() * 2 - 1);

function maxRelErr(ref: Float32Array, got: Float32Array): number {
  expect(got.length).toBe(ref.length);
  let diff = 0, scale = 1e-3;
  for (let i = 0; i < ref.length; i++) {
    diff = Math.max(diff, Math.abs(ref[i]! - got[i]!));
    scale = Math.max(scale, Math.abs(ref[i]!));
  }
  return diff / scale;
}

/** Values of f's outputs on a backend. */
async function valuesOn(backend: Backend, f: () => tf.Tensor[]): Promise<Float32Array[]> {
  await tf.setBackend(backend);
  const out = tf.tidy(f);
  const v = out.map((t) => t.dataSync() as Float32Array);
  tf.dispose(out);
  return v;
}

/** WDBC, standardised, as a LoadedSplit. */
function wdbc(): LoadedSplit {
  const lines = readFileSync(join(ROOT, 'data', 'tabular', 'wdbc.csv'), 'utf8').trim().split('\n').slice(1);
  const rows = lines.map((l) => l.split(',').map(Number));
  const width = rows[0]!.length - 1;
  const mean = new Array<number>(width).fill(0), sd = new Array<number>(width).fill(0);
  for (const r of rows) for (let j = 0; j < width; j++) mean[j]! += r[j]! / rows.length;
  for (const r of rows) for (let j = 0; j < width; j++) sd[j]! += (r[j]! - mean[j]!) ** 2 / rows.length;
  const x = Float32Array.from(rows.flatMap((r) => r.slice(0, width).map((v, j) => (v - mean[j]!) / Math.sqrt(sd[j]!))));
  return { x, y: Int32Array.from(rows, (r) => r[width]!), n: rows.length, inputShape: [width], classes: ['0', '1'] };
}

/** The digits (8x8, 0-16) as [8, 8, 1] images in [0, 1]. */
function digits(): LoadedSplit {
  const lines = readFileSync(join(ROOT, 'data', 'images', 'digits', 'digits.csv'), 'utf8').trim().split('\n').slice(1);
  const rows = lines.map((l) => l.split(',').map(Number));
  return {
    x: Float32Array.from(rows.flatMap((r) => r.slice(0, 64).map((v) => v / 16))), y: Int32Array.from(rows, (r) => r[64]!),
    n: rows.length, inputShape: [8, 8, 1], classes: Array.from({ length: 10 }, (_, i) => String(i)),
  };
}

beforeAll(async () => {
  // Registers the wasm backend and its training kernels.
  expect(await selectBackend('wasm')).toBe('wasm');
});

describe('fused training ops', () => {
  it.each(BACKENDS)('should match tfjs dense, conv and cross-entropy values and gradients when run on %s', async (backend) => {
    const r = rng(5);
    const x = randomArray(r, 6 * 9 * 8 * 3), k = randomArray(r, 3 * 3 * 3 * 4), b = randomArray(r, 4);
    const w1 = randomArray(r, 80 * 5), b1 = randomArray(r, 5);
    // One-hot rows (tfjs's softmax cross-entropy gradient assumes rows that sum to 1).
    const labels = Float32Array.from({ length: 6 * 5 }, (_, i) => (i % 5 === Math.floor(i / 5) % 5 ? 1 : 0));
    const bin = Float32Array.from({ length: 6 }, (_, i) => i % 2);
    const build = (ours: boolean) => () => {
      const xt = tf.tensor4d(x, [6, 9, 8, 3]), kt = tf.tensor4d(k, [3, 3, 3, 4]), bt = tf.tensor1d(b);
      const w1t = tf.tensor2d(w1, [80, 5]), b1t = tf.tensor1d(b1);
      const yt = tf.tensor2d(labels, [6, 5]), ybt = tf.tensor2d(bin, [6, 1]);
      const f = (xi: tf.Tensor, ki: tf.Tensor, bi: tf.Tensor, wi: tf.Tensor, ci: tf.Tensor) => {
        const conv = ours ? conv2dOp(xi, ki, bi, [2, 2], 'same', 'relu') : tf.relu(tf.add(tf.conv2d(xi as tf.Tensor4D, ki as tf.Tensor4D, 2, 'same'), bi));
        const flat = tf.reshape(conv, [6, -1]);
        const logits = ours ? denseOp(flat, wi, ci, 'linear') : tf.add(tf.matMul(flat as tf.Tensor2D, wi as tf.Tensor2D), ci);
        const ce = ours ? softmaxCrossEntropyOp(logits, yt) : tf.losses.softmaxCrossEntropy(yt, logits);
        const one = tf.slice(logits, [0, 0], [6, 1]);
        const bce = ours ? sigmoidCrossEntropyOp(one, ybt) : tf.losses.sigmoidCrossEntropy(ybt, one);
        return tf.add(ce, tf.mul(bce, 0.5)) as tf.Scalar;
      };
      const { value, grads } = tf.valueAndGrads(f)([xt, kt, bt, w1t, b1t]);
      return [value, ...grads];
    };
    const ref = await valuesOn('cpu', build(false));
    const got = await valuesOn(backend, build(true));
    ref.forEach((v, i) => expect(maxRelErr(v, got[i]!), `output ${i}`).toBeLessThan(1e-4));
  });

  it.each(BACKENDS)('should take the same steps as tf.train.adam and tf.train.sgd when the fused optimizer runs on %s', async (backend) => {
    const r = rng(9);
    const w0 = randomArray(r, 12), w1 = randomArray(r, 5);
    const grads = [0, 1, 2].map(() => [randomArray(r, 12), randomArray(r, 5)]);
    for (const kind of ['adam', 'sgd'] as const) {
      const steps = async (fused: boolean) => {
        await tf.setBackend(fused ? backend : 'cpu');
        const vars = [tf.variable(tf.tensor2d(w0, [3, 4])), tf.variable(tf.tensor1d(w1))];
        const opt = fused ? new FusedOptimizer(vars, kind, 0.05) : undefined;
        const stock = fused ? undefined : kind === 'adam' ? tf.train.adam(0.05) : tf.train.sgd(0.05);
        for (const [g0, g1] of grads) {
          const gs = [tf.tensor2d(g0!, [3, 4]), tf.tensor1d(g1!)];
          if (opt) opt.apply(gs);
          else stock!.applyGradients(vars.map((v, i) => ({ name: v.name, tensor: gs[i]! })));
          tf.dispose(gs);
        }
        const out = vars.map((v) => v.dataSync() as Float32Array);
        opt?.dispose();
        stock?.dispose();
        tf.dispose(vars);
        return out;
      };
      const ref = await steps(false);
      const got = await steps(true);
      ref.forEach((v, i) => expect(maxRelErr(v, got[i]!), `${kind} weight ${i}`).toBeLessThan(1e-5));
    }
  });
});

describe('lean forward pass', () => {
  const specs: [string, unknown, number[], number][] = [
    ['mlp', { template: 'mlp', hidden: [16, 8], activation: 'tanh' }, [30], 2],
    ['cnn-small', { template: 'cnn-small' }, [8, 8, 1], 10],
    ['cnn', { template: 'cnn', blocks: [{ filters: 4, convs: 2 }, { filters: 6, kernel: 5 }], padding: 'same', dense: [12, 7], activation: 'elu', dropout: 0.2 }, [16, 12, 2], 3],
    ['layers', {
      template: 'layers', topology: {
        class_name: 'Sequential', config: {
          layers: [
            { class_name: 'Conv2D', config: { filters: 3, kernel_size: [3, 2], strides: 2, padding: 'same', activation: 'selu' } },
            { class_name: 'AveragePooling2D', config: { pool_size: 2, strides: 1 } },
            { class_name: 'Activation', config: { activation: 'softsign' } },
            { class_name: 'Conv2D', config: { filters: 4, kernel_size: 2, activation: 'relu' } },
            { class_name: 'GlobalMaxPooling2D', config: {} },
            { class_name: 'Dense', config: { units: 5, activation: 'relu6' } },
          ],
        },
      },
    }, [12, 12, 2], 4],
  ];

  it.each(specs)('should equal model.predict for the %s template when not training', async (_name, spec, shape, k) => {
    await tf.setBackend('wasm');
    const model = buildModel({ spec: ModelSpecSchema.parse(spec), inputShape: shape, numClasses: k }, 4);
    const x = tf.tensor(randomArray(rng(1), 5 * shape.reduce((a, b) => a * b, 1)), [5, ...shape]);
    const lean = leanPredict(model, k, x);
    expect(lean, 'the template should run on the lean path').toBeDefined();
    const ref = model.predict(x) as tf.Tensor;
    expect(maxRelErr(ref.dataSync() as Float32Array, lean!.dataSync() as Float32Array)).toBeLessThan(1e-5);
    tf.dispose([x, lean!, ref]);
    model.dispose();
  });

  it('should add layer losses (weight penalties, a FedProx term) to the data loss when a layer has them', async () => {
    await tf.setBackend('wasm');
    const plain = buildModel({ spec: ModelSpecSchema.parse({ template: 'mlp', hidden: [8] }), inputShape: [4], numClasses: 2 }, 2);
    const l2 = buildModel({ spec: ModelSpecSchema.parse({ template: 'mlp', hidden: [8], l2: 0.1 }), inputShape: [4], numClasses: 2 }, 2);
    const x = tf.tensor2d(randomArray(rng(3), 12), [3, 4]);
    const y = tf.tensor2d([0, 1, 1], [3, 1]);
    const lossOf = (m: tf.Sequential) => tf.tidy(() => trainingGraph(m, 2).loss(x, y, 0).dataSync()[0]!);
    const penalty = tf.tidy(() => l2.layers.filter((l) => l.getClassName() === 'Dense').slice(0, 1)
      .reduce((a, l) => a + 0.1 * tf.sum(tf.square(l.getWeights()[0]!)).dataSync()[0]!, 0));
    expect(lossOf(l2) - lossOf(plain)).toBeCloseTo(penalty, 4);
    // What the FedProx strategy does: a loss added to the first layer.
    plain.layers[0]!.addLoss(() => tf.scalar(1.5));
    expect(lossOf(plain) - lossOf(l2) + penalty).toBeCloseTo(1.5, 4);
    tf.dispose([x, y]);
    plain.dispose();
    l2.dispose();
  });

  it('should fall back to model.apply with the same loss when a model has batch normalization', async () => {
    await tf.setBackend('wasm');
    const resolved: ResolvedModel = { spec: ModelSpecSchema.parse({ template: 'cnn', blocks: [{ filters: 4 }], batchNorm: true }), inputShape: [8, 8, 1], numClasses: 3 };
    const model = buildModel(resolved);
    const graph = trainingGraph(model, 3);
    expect(graph.lean).toBe(false);
    const x = tf.tensor(randomArray(rng(2), 4 * 64), [4, 8, 8, 1]);
    const y = tf.oneHot(tf.tensor1d([0, 1, 2, 1], 'int32'), 3).toFloat();
    const movingMean = model.getWeights().at(-2)!.dataSync().slice();
    const loss = tf.tidy(() => graph.loss(x, y, 0).dataSync()[0]!);
    expect(Number.isFinite(loss) && loss > 0).toBe(true);
    // Training-mode batch norm moves its statistics, as it does under model.fit.
    expect(Array.from(model.getWeights().at(-2)!.dataSync())).not.toEqual(Array.from(movingMean));
    tf.dispose([x, y]);
    model.dispose();
  });
});

describe('local training on wasm and cpu', () => {
  const data = wdbc();
  const resolved: ResolvedModel = { spec: ModelSpecSchema.parse({ template: 'mlp', hidden: [32, 16] }), inputShape: [30], numClasses: 2 };
  const opts = { epochs: 3, batchSize: 32, optimizer: 'adam' as const, learningRate: 0.01, seed: 3 };

  async function trainOn(backend: Backend): Promise<{ weights: Float32Array[]; loss: number }> {
    await tf.setBackend(backend);
    const model = buildModel(resolved, 1);
    const loss = await fitModel(model, 2, data, opts);
    const weights = getWeights(model).map((w) => w.data);
    model.dispose();
    return { weights, loss };
  }

  it('should learn WDBC and end with the same weights on wasm as on cpu when both train from the same seed', async () => {
    const wasm = await trainOn('wasm');
    const cpu = await trainOn('cpu');
    for (const run of [wasm, cpu]) expect(run.loss).toBeLessThan(0.2);
    cpu.weights.forEach((w, i) => expect(maxRelErr(w, wasm.weights[i]!), `weight ${i}`).toBeLessThan(2e-3));
  });

  it('should train to the same weights with tfjs ops and optimizer (the native backend path) as with the fused ones', async () => {
    const run = async (native: boolean) => {
      await tf.setBackend('cpu');
      const model = buildModel(resolved, 1);
      await fitModel(model, 2, data, { ...opts, epochs: 1, stockOptimizer: native, tfjsOps: native });
      const w = getWeights(model).map((t) => t.data);
      model.dispose();
      return w;
    };
    const fused = await run(false);
    const native = await run(true);
    fused.forEach((w, i) => expect(maxRelErr(w, native[i]!), `weight ${i}`).toBeLessThan(1e-3));
  });

  it.each([['cnn-small', { template: 'cnn-small' }, [8, 8, 1], 10], ['a binary cnn with dropout', { template: 'cnn', blocks: [{ filters: 3 }], dropout: 0.3 }, [6, 6, 2], 2]] as [string, unknown, number[], number][])(
    'should give the same loss gradients with tfjs ops as with the fused ops for %s', async (_name, spec, shape, k) => {
      await tf.setBackend('cpu');
      const model = buildModel({ spec: ModelSpecSchema.parse(spec), inputShape: shape, numClasses: k }, 2);
      const x = tf.tensor(randomArray(rng(4), 8 * shape.reduce((a, b) => a * b, 1)), [8, ...shape]);
      const y = k === 2 ? tf.tensor2d([0, 1, 1, 0, 1, 0, 0, 1], [8, 1]) : tf.oneHot(tf.tensor1d([0, 1, 2, 3, 4, 5, 6, 7], 'int32'), k).toFloat();
      const gradsOf = (tfjsOps: boolean) => tf.tidy(() => {
        const g = trainingGraph(model, k, { tfjsOps });
        expect(g.lean).toBe(true);
        const { value, grads } = tf.variableGrads(() => g.loss(x, y, 7), g.vars);
        return [value, ...g.vars.map((v) => grads[v.name]!)].map((t) => t.dataSync() as Float32Array);
      });
      const fused = gradsOf(false);
      const native = gradsOf(true);
      fused.forEach((v, i) => expect(maxRelErr(v, native[i]!), `tensor ${i}`).toBeLessThan(1e-4));
      tf.dispose([x, y]);
      model.dispose();
    });

  it('should give identical weights when the same training runs twice, and others with another seed', async () => {
    await tf.setBackend('wasm');
    const model = buildModel(resolved, 1);
    const global = getWeights(model);
    model.dispose();
    const a = await train(resolved, global, data, opts);
    const b = await train(resolved, global, data, opts);
    const c = await train(resolved, global, data, { ...opts, seed: 4 });
    expect(a.backend).toBe('wasm');
    expect(a.weights.map((w) => Array.from(w.data))).toEqual(b.weights.map((w) => Array.from(w.data)));
    expect(Array.from(a.weights[0]!.data)).not.toEqual(Array.from(c.weights[0]!.data));
    const counts = await evaluate(resolved, a.weights, data);
    expect(counts.correct / counts.n).toBeGreaterThan(0.95);
  });

  it('should train cnn-small on the digits images to over 90% training accuracy on wasm in three epochs', async () => {
    await tf.setBackend('wasm');
    const d = digits();
    const r: ResolvedModel = { spec: ModelSpecSchema.parse({ template: 'cnn-small' }), inputShape: [8, 8, 1], numClasses: 10 };
    const model = buildModel(r, 1);
    const global = getWeights(model);
    model.dispose();
    const out = await train(r, global, d, { epochs: 3, batchSize: 32, optimizer: 'adam', learningRate: 0.003, seed: 1 });
    const counts = await evaluate(r, out.weights, d);
    expect(counts.correct / counts.n).toBeGreaterThan(0.9);
  });

  it('should let timers run while a long epoch trains', async () => {
    await tf.setBackend('wasm');
    let ticks = 0;
    const timer = setInterval(() => { ticks++; }, 5);
    const model = buildModel(resolved, 1);
    // 1,440 steps: far longer than the loop's 40 ms between yields, on any machine.
    await fitModel(model, 2, data, { ...opts, epochs: 20, batchSize: 8 });
    clearInterval(timer);
    model.dispose();
    expect(ticks).toBeGreaterThan(2);
  });
});
