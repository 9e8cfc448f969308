/**
 * The wasm training kernels (site-agent/training/wasm-kernels.ts) against the pure-JS cpu backend: every kernel on
 * random shapes with the stride and padding variants the templates and topologies allow, then whole-model
 * gradients of each reference model.
 */
import * as tf from '@tensorflow/tfjs';
import '@tensorflow/tfjs-backend-wasm';
import { beforeAll, describe, expect, it } from 'vitest';
import { ModelSpecSchema, type ResolvedModel } from '../../protocol/messages.ts';
import { buildModel } from '../../protocol/models.ts';
import { installWasmTrainingKernels } from '../../site-agent/training/wasm-kernels.ts';

type Backend = 'cpu' | 'wasm';

/** mulberry32, so every case is reproducible. */
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

function randomArray(r: () => number, size: number): Float32Array {
  return Float32Array.from({ length: size }, () => r() * 2 - 1);
}

/** Runs `f` on a backend and returns its outputs' values (tensors made inside are disposed). */
async function on(backend: Backend, f: () => tf.Tensor | tf.Tensor[]): Promise<Float32Array[]> {
  await tf.setBackend(backend);
  const out = tf.tidy(f);
  const list = Array.isArray(out) ? out : [out];
  const values = list.map((t) => t.dataSync() as Float32Array);
  tf.dispose(list);
  return values;
}

/** Largest difference relative to the largest magnitude in the reference (plus a floor for all-zero tensors). */
function relErr(ref: Float32Array, got: Float32Array): number {
  expect(got.length).toBe(ref.length);
  let diff = 0;
  let scale = 1e-3;
  for (let i = 0; i < ref.length; i++) {
    diff = Math.max(diff, Math.abs(ref[i]! - got[i]!));
    scale = Math.max(scale, Math.abs(ref[i]!));
  }
  return diff / scale;
}

async function expectSame(f: () => tf.Tensor | tf.Tensor[], tol = 1e-5): Promise<void> {
  const cpu = await on('cpu', f);
  const wasm = await on('wasm', f);
  expect(wasm).toHaveLength(cpu.length);
  cpu.forEach((ref, i) => expect(relErr(ref, wasm[i]!), `output ${i}`).toBeLessThan(tol));
}

type Pad = 'same' | 'valid' | [[number, number], [number, number], [number, number], [number, number]];
interface ConvCase { n: number; h: number; w: number; cin: number; cout: number; kh: number; kw: number; stride: number | [number, number]; pad: Pad }

const convCases: ConvCase[] = [
  { n: 2, h: 8, w: 8, cin: 1, cout: 16, kh: 3, kw: 3, stride: 1, pad: 'same' },
  { n: 3, h: 4, w: 4, cin: 16, cout: 32, kh: 3, kw: 3, stride: 1, pad: 'valid' },
  { n: 2, h: 9, w: 7, cin: 3, cout: 5, kh: 5, kw: 2, stride: 1, pad: 'same' },
  { n: 2, h: 9, w: 8, cin: 2, cout: 4, kh: 3, kw: 3, stride: 2, pad: 'same' },
  { n: 1, h: 11, w: 10, cin: 4, cout: 3, kh: 3, kw: 4, stride: [2, 3], pad: 'valid' },
  { n: 2, h: 6, w: 6, cin: 3, cout: 2, kh: 1, kw: 1, stride: 1, pad: 'valid' },
  { n: 2, h: 7, w: 6, cin: 2, cout: 3, kh: 3, kw: 3, stride: 1, pad: [[0, 0], [2, 1], [0, 2], [0, 0]] },
  { n: 2, h: 5, w: 5, cin: 2, cout: 2, kh: 2, kw: 2, stride: 1, pad: [[0, 0], [3, 0], [0, 3], [0, 0]] },
];
const label = (c: ConvCase) => `${c.n}x${c.h}x${c.w}x${c.cin} k${c.kh}x${c.kw}x${c.cout} stride ${String(c.stride)} pad ${JSON.stringify(c.pad)}`;

beforeAll(async () => {
  await tf.setBackend('wasm');
  await tf.ready();
  installWasmTrainingKernels();
});

describe('wasm training kernels against the cpu backend', () => {
  it.each(convCases)('should give the cpu filter and input gradients when a conv2d is $kh x $kw, stride $stride, pad $pad', async (c) => {
    const r = rng(c.h * 31 + c.kh);
    const x = randomArray(r, c.n * c.h * c.w * c.cin);
    const wt = randomArray(r, c.kh * c.kw * c.cin * c.cout);
    const outShape = tf.tidy(() => tf.conv2d(tf.zeros([c.n, c.h, c.w, c.cin]) as tf.Tensor4D, tf.zeros([c.kh, c.kw, c.cin, c.cout]) as tf.Tensor4D, c.stride, c.pad).shape);
    const dy = randomArray(r, outShape.reduce((a, b) => a * b, 1));
    await expectSame(() => {
      const xt = tf.tensor4d(x, [c.n, c.h, c.w, c.cin]);
      const wt4 = tf.tensor4d(wt, [c.kh, c.kw, c.cin, c.cout]);
      const dyt = tf.tensor4d(dy, outShape as [number, number, number, number]);
      return [
        tf.conv2d(xt, wt4, c.stride, c.pad),
        tf.conv2dTranspose(dyt, wt4, [c.n, c.h, c.w, c.cin], c.stride, c.pad),
        ...tf.grads((a: tf.Tensor, b: tf.Tensor) => tf.conv2d(a as tf.Tensor4D, b as tf.Tensor4D, c.stride, c.pad).mul(dyt).sum())([xt, wt4]),
      ];
    });
  }, 20_000);
  it('should name every conv case when listing them', () => expect(convCases.map(label)).toHaveLength(convCases.length));

  it.each([
    [[5, 7], [7, 3], false, false], [[7, 5], [7, 3], true, false], [[5, 7], [3, 7], false, true], [[7, 5], [3, 7], true, true],
    [[1, 9, 4], [1, 9, 6], true, false], [[1, 4, 9], [1, 6, 9], false, true], [[3, 4, 5], [3, 6, 5], false, true], [[64, 1], [64, 10], true, false],
  ] as [number[], number[], boolean, boolean][])('should give the cpu product when multiplying %j by %j with transposeA %s, transposeB %s', async (as, bs, ta, tb) => {
    const r = rng(as.length * 100 + bs[0]!);
    const a = randomArray(r, as.reduce((p, q) => p * q, 1));
    const b = randomArray(r, bs.reduce((p, q) => p * q, 1));
    await expectSame(() => tf.matMul(tf.tensor(a, as), tf.tensor(b, bs), ta, tb));
  });

  // Halves of ReLU output: all-zero windows and ties, where the first maximum must win (as on cpu).
  const tied = (v: Float32Array) => v.map((e) => Math.round(Math.max(0, e) * 2) / 2);
  it.each([
    ['maxPool 2 valid', (x: tf.Tensor4D) => tf.maxPool(x, 2, 2, 'valid'), false],
    ['maxPool 3 stride 2 same', (x: tf.Tensor4D) => tf.maxPool(x, 3, 2, 'same'), false],
    ['maxPool 2 valid on tied ReLU output', (x: tf.Tensor4D) => tf.maxPool(x, 2, 2, 'valid'), true],
    ['maxPool 3 stride 1 same on tied ReLU output', (x: tf.Tensor4D) => tf.maxPool(x, 3, 1, 'same'), true],
    ['avgPool 2 valid', (x: tf.Tensor4D) => tf.avgPool(x, 2, 2, 'valid'), false],
    ['avgPool 3 stride 1 same', (x: tf.Tensor4D) => tf.avgPool(x, 3, 1, 'same'), false],
  ] as [string, (x: tf.Tensor4D) => tf.Tensor4D, boolean][])('should give the cpu gradient of %s when backpropagating', async (_name, pool, ties) => {
    const raw = randomArray(rng(7), 2 * 8 * 7 * 3);
    const x = ties ? tied(raw) : raw;
    await expectSame(() => {
      const xt = tf.tensor4d(x, [2, 8, 7, 3]);
      const dy = tf.tidy(() => tf.randomUniform(pool(xt).shape, -1, 1, 'float32', 3));
      const g = tf.grad((a: tf.Tensor) => pool(a as tf.Tensor4D).mul(dy).sum())(xt);
      // The gradient must not be trivially zero.
      expect(g.abs().sum().arraySync()).toBeGreaterThan(1);
      return [pool(xt), g];
    });
  });
});

describe('model gradients on wasm against cpu', () => {
  const models: [string, unknown, number[], number][] = [
    ['the WDBC MLP 30-32-16-1', { template: 'mlp', hidden: [32, 16] }, [30], 2],
    ['cnn-small on digits', { template: 'cnn-small' }, [8, 8, 1], 10],
    ['a three-block cnn', { template: 'cnn', blocks: [{ filters: 8 }, { filters: 16 }, { filters: 16 }], dense: [32] }, [32, 32, 1], 2],
    ['a cnn with batch norm and dropout', { template: 'cnn', blocks: [{ filters: 4, convs: 2 }], batchNorm: true, dropout: 0.3, activation: 'elu' }, [8, 8, 3], 3],
    ['a topology with every activation', {
      template: 'layers', topology: {
        class_name: 'Sequential', config: {
          layers: ['relu', 'relu6', 'elu', 'selu', 'sigmoid', 'tanh', 'softplus', 'softsign', 'linear', 'softmax'].map((activation, i) => (i === 0
            ? { class_name: 'Conv2D', config: { filters: 4, kernel_size: 3, strides: 2, padding: 'same', activation } }
            : i === 1 ? { class_name: 'AveragePooling2D', config: { pool_size: 2, strides: 1 } }
              : i === 2 ? { class_name: 'Conv2D', config: { filters: 4, kernel_size: [2, 3], activation } }
                : i === 3 ? { class_name: 'GlobalMaxPooling2D', config: {} }
                  : { class_name: 'Dense', config: { units: 6, activation } })),
        },
      },
    }, [12, 12, 2], 3],
  ];

  it.each(models)('should compute the same loss gradients on wasm as on cpu when training %s', async (_name, spec, shape, k) => {
    const resolved: ResolvedModel = { spec: ModelSpecSchema.parse(spec), inputShape: shape, numClasses: k };
    const r = rng(11);
    const x = randomArray(r, 16 * shape.reduce((a, b) => a * b, 1));
    const y = Float32Array.from({ length: 16 }, () => Math.floor(r() * k));
    const grads = async (backend: Backend) => {
      await tf.setBackend(backend);
      const model = buildModel(resolved, 3);
      const values = tf.tidy(() => {
        const xt = tf.tensor(x, [16, ...shape]);
        const yt = k === 2 ? tf.tensor2d(y, [16, 1]) : tf.oneHot(tf.tensor1d(y, 'int32'), k).toFloat();
        const { value, grads: g } = tf.variableGrads(() => {
          const logits = model.apply(xt, { training: true }) as tf.Tensor;
          // The model ends in sigmoid/softmax; the loss on its output is what training minimises.
          return tf.losses.logLoss(yt, logits.clipByValue(1e-6, 1 - 1e-6));
        });
        return [value, ...model.trainableWeights.map((w) => g[w.originalName]!)];
      });
      const out = values.map((t) => t.dataSync() as Float32Array);
      tf.dispose(values);
      model.dispose();
      return out;
    };
    const cpu = await grads('cpu');
    const wasm = await grads('wasm');
    expect(wasm).toHaveLength(cpu.length);
    cpu.forEach((ref, i) => expect(relErr(ref, wasm[i]!), `tensor ${i}`).toBeLessThan(1e-4));
  }, 30_000);
});
