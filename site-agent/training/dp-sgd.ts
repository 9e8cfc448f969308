/**
 * DP-SGD (Abadi et al. 2016) for a site's local training: record-level differential privacy for the site's
 * patients, whatever the coordinator or other sites do.
 *
 * Each step Poisson-samples the training set (every example independently with probability q = batchSize / n, from
 * the OS CSPRNG, so the batch composition is secret), clips each example's gradient to L2 norm `clip`, sums, adds
 * N(0, (noiseMultiplier * clip)^2) to every coordinate, and divides by the expected batch size q n (a public
 * number, unlike the sampled batch's size). One epoch is ceil(n / batchSize) steps. This is exactly what the
 * accountant's sampled Gaussian mechanism assumes (`recordPlan` in protocol/privacy/plan.ts).
 *
 * Per-example gradients: for stacks of dense layers (the logreg and mlp templates) they are never materialised. A
 * dense layer's per-example weight gradient is the outer product a_i (x) delta_i, whose norm is |a_i| |delta_i|, and
 * the clipped sum is (c * A)^T Delta: one forward and one backward pass per step, as cheap as ordinary training
 * (Goodfellow 2015, "Efficient per-example gradient computations"). Other models (dropout, convolutions) take the
 * general path: one tfjs gradient per microbatch.
 *
 * Microbatches (`microbatch` > 1): each sampled example goes to one of ceil(q n / m) microbatches chosen
 * independently at random, and each microbatch's mean gradient is clipped. Removing one example then changes one
 * microbatch's clipped gradient by at most 2 * clip, so the accountant uses noiseMultiplier / 2.
 */
import * as tf from '@tensorflow/tfjs';
import type { Tensor } from '../../protocol/codec.ts';
import type { ResolvedModel } from '../../protocol/messages.ts';
import { buildModel, getWeights, outputUnits, setWeights } from '../../protocol/models.ts';
import { gaussianNoise, secureUniform, type Uniform } from '../../protocol/privacy/noise.ts';
import { dpSgdSchedule } from '../../protocol/privacy/plan.ts';
import type { LoadedSplit } from '../data/data-source.ts';
import { selectBackend, type BackendName } from './backends.ts';

export interface DpSgdOptions {
  epochs: number;
  /** Expected batch size L; the sampling rate is L / n. */
  batchSize: number;
  optimizer: 'adam' | 'sgd';
  learningRate: number;
  /** L2 bound on each example's (or microbatch's) gradient. */
  clip: number;
  /** Noise standard deviation over clip, as applied (the accountant's is half of it with microbatches > 1). */
  noiseMultiplier: number;
  microbatch?: number;
  /**
   * Return the mean of the iterates over the second half of the round's steps instead of the last one (tail
   * averaging): post-processing of iterates DP-SGD releases anyway, so free in privacy, and it averages out noise.
   */
  averageIterates?: boolean;
  /** Uniform source for sampling and noise; default the OS CSPRNG. Tests only pass another. */
  uniform?: Uniform;
}

export interface DpSgdOutcome {
  weights: Tensor[];
  numExamples: number;
  backend: BackendName;
  steps: number;
  sampleRate: number;
  /** Which per-example gradient path ran. */
  path: 'dense' | 'general';
  /** Largest per-example (or microbatch) gradient norm seen before clipping, for diagnostics at the site only. */
  maxNormSeen: number;
}

interface DenseLayer {
  kernel: tf.Variable;
  bias: tf.Variable | undefined;
  activation: string;
  l2: number;
}

/** The dense layers of a model whose every layer is Dense (or Flatten/zero-rate Dropout): the fast path applies. */
function denseStack(model: tf.Sequential): DenseLayer[] | undefined {
  const out: DenseLayer[] = [];
  for (const layer of model.layers) {
    const cls = layer.getClassName();
    const cfg = layer.getConfig() as { activation?: string; rate?: number; kernelRegularizer?: { config?: { l2?: number } } | null };
    if (cls === 'Flatten' || (cls === 'Dropout' && !cfg.rate)) continue;
    if (cls !== 'Dense') return undefined;
    const weights = layer.trainableWeights.map((w) => w.read() as tf.Variable);
    out.push({ kernel: weights[0]!, bias: weights[1], activation: cfg.activation ?? 'linear', l2: cfg.kernelRegularizer?.config?.l2 ?? 0 });
  }
  const hiddenOk = out.slice(0, -1).every((l) => ['relu', 'tanh', 'elu', 'linear'].includes(l.activation));
  const last = out.at(-1);
  return hiddenOk && last && ['sigmoid', 'softmax'].includes(last.activation) ? out : undefined;
}

function activate(z: tf.Tensor, act: string): tf.Tensor {
  switch (act) {
    case 'relu': return tf.relu(z);
    case 'tanh': return tf.tanh(z);
    case 'elu': return tf.elu(z);
    case 'sigmoid': return tf.sigmoid(z);
    case 'softmax': return tf.softmax(z);
    default: return z;
  }
}

/** d act / d z, from z and a = act(z). */
function activationGrad(z: tf.Tensor, a: tf.Tensor, act: string): tf.Tensor {
  switch (act) {
    case 'relu': return tf.cast(tf.greater(z, 0), 'float32');
    case 'tanh': return tf.sub(1, tf.square(a));
    case 'elu': return tf.where(tf.greater(z, 0), tf.onesLike(z), tf.add(a, 1));
    default: return tf.onesLike(z);
  }
}

/**
 * Forward and backward pass of a dense stack on batch (x, y): each layer's input activations and output-side
 * gradients (per example: the layer's kernel gradient is acts[k]_i (x) deltas[k]_i, its bias gradient deltas[k]_i),
 * and each example's gradient norm. Call inside tf.tidy.
 */
function denseBackward(layers: readonly DenseLayer[], x: tf.Tensor2D, y: tf.Tensor, numClasses: number): { acts: tf.Tensor[]; deltas: tf.Tensor[]; norms: tf.Tensor1D } {
  const acts: tf.Tensor[] = [x];
  const pre: tf.Tensor[] = [];
  let a: tf.Tensor = x;
  for (const l of layers) {
    let z = tf.matMul(a as tf.Tensor2D, l.kernel as tf.Tensor2D);
    if (l.bias) z = tf.add(z, l.bias);
    pre.push(z);
    a = activate(z, l.activation);
    acts.push(a);
  }
  // Output gradient of the summed loss with respect to the last pre-activation: p - y for sigmoid + binary
  // cross-entropy and for softmax + categorical cross-entropy alike.
  const p = acts.at(-1)!;
  const target = outputUnits(numClasses) === 1 ? tf.reshape(y, p.shape) : tf.oneHot(tf.cast(y, 'int32') as tf.Tensor1D, numClasses);
  let delta: tf.Tensor = tf.sub(p, target);
  const deltas: tf.Tensor[] = new Array<tf.Tensor>(layers.length);
  for (let k = layers.length - 1; k >= 0; k--) {
    deltas[k] = delta;
    if (k > 0) {
      const back = tf.matMul(delta as tf.Tensor2D, layers[k]!.kernel as tf.Tensor2D, false, true);
      delta = tf.mul(back, activationGrad(pre[k - 1]!, acts[k]!, layers[k - 1]!.activation));
    }
  }
  // |grad_i|^2 = sum over layers of |a_i|^2 |delta_i|^2 (kernel) + |delta_i|^2 (bias).
  let sq: tf.Tensor = tf.zeros([x.shape[0]]);
  layers.forEach((l, k) => {
    const d2 = tf.sum(tf.square(deltas[k]!), 1);
    sq = tf.add(sq, tf.mul(tf.sum(tf.square(acts[k]!), 1), d2));
    if (l.bias) sq = tf.add(sq, d2);
  });
  return { acts: acts.slice(0, layers.length), deltas, norms: tf.sqrt(sq) as tf.Tensor1D };
}

/**
 * Sum of per-example clipped gradients for a dense stack on batch (x, y), with the per-example norms. Returned
 * gradients are in the order of the layers' trainable weights (kernel, bias per layer).
 */
export function denseClippedSum(layers: readonly DenseLayer[], x: tf.Tensor2D, y: tf.Tensor, numClasses: number, clip: number): { sum: tf.Tensor[]; norms: tf.Tensor1D } {
  return tf.tidy(() => {
    const { acts, deltas, norms } = denseBackward(layers, x, y, numClasses);
    const factor = tf.minimum(1, tf.div(clip, tf.maximum(norms, 1e-12)));
    const sum: tf.Tensor[] = [];
    layers.forEach((l, k) => {
      const scaled = tf.mul(deltas[k]!, tf.expandDims(factor, 1));
      sum.push(tf.matMul(acts[k]! as tf.Tensor2D, scaled as tf.Tensor2D, true, false));
      if (l.bias) sum.push(tf.sum(scaled, 0));
    });
    return { sum, norms };
  });
}

function lossOf(model: tf.Sequential, x: tf.Tensor, y: tf.Tensor, numClasses: number): tf.Scalar {
  const p = tf.clipByValue(model.apply(x, { training: true }) as tf.Tensor, 1e-7, 1 - 1e-7);
  const data = outputUnits(numClasses) === 1
    ? tf.metrics.binaryCrossentropy(tf.reshape(y, p.shape), p)
    : tf.neg(tf.log(tf.sum(tf.mul(p, tf.oneHot(tf.cast(y, 'int32') as tf.Tensor1D, numClasses)), 1)));
  const base = tf.mean(data) as tf.Scalar;
  // Weight penalties (l2 in the spec) come as functions; they are part of each microbatch's clipped gradient.
  const reg = model.losses.map((f) => f());
  return reg.length ? (tf.addN([base, ...reg]) as tf.Scalar) : base;
}

/** Sum of clipped microbatch gradients, one tfjs gradient per microbatch (any model). */
function generalClippedSum(model: tf.Sequential, vars: tf.Variable[], groups: readonly Int32Array[], data: LoadedSplit, numClasses: number, clip: number): { sum: tf.Tensor[]; maxNorm: number } {
  const width = data.inputShape.reduce((a, b) => a * b, 1);
  let sum = vars.map((v) => tf.zerosLike(v) as tf.Tensor);
  let maxNorm = 0;
  for (const idx of groups) {
    if (idx.length === 0) continue;
    const xs = new Float32Array(idx.length * width);
    idx.forEach((src, dst) => xs.set(data.x.subarray(src * width, (src + 1) * width), dst * width));
    const x = tf.tensor(xs, [idx.length, ...data.inputShape]);
    const y = tf.tensor1d(Float32Array.from(idx, (i) => data.y[i]!));
    const { grads } = tf.variableGrads(() => lossOf(model, x, y, numClasses), vars);
    const g = vars.map((v) => grads[v.name]!);
    const norm = Math.sqrt(tf.tidy(() => tf.addN(g.map((t) => tf.sum(tf.square(t)))).dataSync()[0]!));
    maxNorm = Math.max(maxNorm, norm);
    const f = Math.min(1, clip / Math.max(norm, 1e-12));
    const next = sum.map((s, k) => tf.tidy(() => tf.add(s, tf.mul(g[k]!, f))));
    tf.dispose([...sum, ...g, x, y]);
    sum = next;
  }
  return { sum, maxNorm };
}

/** Poisson sampling: each index in [0, n) independently with probability q. */
function poissonSample(n: number, q: number, uniform: Uniform): Int32Array {
  const out: number[] = [];
  for (let i = 0; i < n; i++) if (uniform() < q) out.push(i);
  return Int32Array.from(out);
}

/** Splits sampled indices into `slots` microbatches, each index to an independently uniform slot. */
function assignSlots(idx: Int32Array, slots: number, uniform: Uniform): Int32Array[] {
  if (slots <= 1) return [idx];
  const groups: number[][] = Array.from({ length: slots }, () => []);
  for (const i of idx) groups[Math.min(slots - 1, Math.floor(uniform() * slots))]!.push(i);
  return groups.map((g) => Int32Array.from(g));
}

export async function trainDpSgd(resolved: ResolvedModel, global: readonly Tensor[], data: LoadedSplit, opts: DpSgdOptions): Promise<DpSgdOutcome> {
  const backend = await selectBackend();
  const uniform = opts.uniform ?? secureUniform();
  const micro = opts.microbatch ?? 1;
  const { sampleRate: q, steps } = dpSgdSchedule(data.n, opts.batchSize, opts.epochs);
  const expected = q * data.n;
  const model = buildModel(resolved);
  const optimizer = opts.optimizer === 'adam' ? tf.train.adam(opts.learningRate) : tf.train.sgd(opts.learningRate);
  let maxNormSeen = 0;
  const dense = micro === 1 ? denseStack(model) : undefined;
  const width = data.inputShape.reduce((a, b) => a * b, 1);
  try {
    setWeights(model, global);
    const vars = model.trainableWeights.map((w) => w.read() as tf.Variable);
    const stdNoise = opts.noiseMultiplier * opts.clip;
    const tailFrom = opts.averageIterates ? Math.floor(steps / 2) : steps - 1;
    let tail: Float64Array[] | undefined;
    let tailCount = 0;
    for (let step = 0; step < steps; step++) {
      const idx = poissonSample(data.n, q, uniform);
      let sum: tf.Tensor[];
      if (dense) {
        if (idx.length === 0) {
          sum = vars.map((v) => tf.zerosLike(v));
        } else {
          const xs = new Float32Array(idx.length * width);
          idx.forEach((src, dst) => xs.set(data.x.subarray(src * width, (src + 1) * width), dst * width));
          const x = tf.tensor2d(xs, [idx.length, width]);
          const y = tf.tensor1d(Float32Array.from(idx, (i) => data.y[i]!));
          const out = denseClippedSum(dense, x, y, resolved.numClasses, opts.clip);
          maxNormSeen = Math.max(maxNormSeen, ...(await out.norms.data()));
          tf.dispose([x, y, out.norms]);
          sum = out.sum;
        }
      } else {
        const groups = micro === 1 ? Array.from(idx, (i) => Int32Array.of(i)) : assignSlots(idx, Math.max(1, Math.ceil(expected / micro)), uniform);
        const out = generalClippedSum(model, vars, groups, data, resolved.numClasses, opts.clip);
        maxNormSeen = Math.max(maxNormSeen, out.maxNorm);
        sum = out.sum;
      }
      // Noise on the sum, then divide by the expected number of clipped units (examples or microbatches).
      const units = micro === 1 ? expected : Math.max(1, Math.ceil(expected / micro));
      const grads: { name: string; tensor: tf.Tensor }[] = [];
      vars.forEach((v, k) => {
        const noise = tf.tensor(Float32Array.from(gaussianNoise(v.size, stdNoise, uniform)), v.shape);
        grads.push({ name: v.name, tensor: tf.tidy(() => {
          let g = tf.div(tf.add(sum[k]!, noise), units);
          // A kernel's L2 penalty does not touch the data: its gradient is added after the noise, unclipped.
          const layer = dense?.find((l) => l.kernel === v);
          if (layer && layer.l2 > 0) g = tf.add(g, tf.mul(v, 2 * layer.l2));
          return g;
        }) });
        noise.dispose();
      });
      tf.dispose(sum);
      optimizer.applyGradients(grads);
      tf.dispose(grads.map((g) => g.tensor));
      if (opts.averageIterates && step >= tailFrom) {
        const now = getWeights(model);
        tail ??= now.map((t) => new Float64Array(t.data.length));
        now.forEach((t, k) => { const acc = tail![k]!; for (let i = 0; i < acc.length; i++) acc[i]! += t.data[i]!; });
        tailCount++;
      }
    }
    const weights = tail && tailCount > 0
      ? getWeights(model).map((t, k) => ({ shape: t.shape, data: Float32Array.from(tail![k]!, (v) => v / tailCount) }))
      : getWeights(model);
    return { weights, numExamples: data.n, backend, steps, sampleRate: q, path: dense ? 'dense' : 'general', maxNormSeen };
  } finally {
    optimizer.dispose();
    model.dispose();
  }
}

/** Records per chunk of the dense path of `clippedRecordGradients` (bounds the activations held at once). */
const RECORD_CHUNK = 512;

/**
 * Every training record's gradient of its loss at `global`, clipped to L2 norm `clip`, handed to `visit` one at a
 * time as one flat vector in the order of the model's weights (flatDelta's order; the buffer is reused, so copy
 * what must outlive the call). This is what `record-distributed`
 * DP sums (protocol/privacy/distributed.ts, RecordLaneEncoder): one full-batch gradient step per round, whose
 * rounding and noise the encoder adds. Dense stacks compute the per-example gradients as outer products (one
 * forward and one backward pass per chunk); other models take one tfjs gradient per record. Weight penalties are
 * not part of these gradients (they do not touch the data; this mode does not apply them).
 */
export async function clippedRecordGradients(resolved: ResolvedModel, global: readonly Tensor[], data: LoadedSplit, clip: number, visit: (gradient: Float64Array) => void): Promise<{ numExamples: number; backend: BackendName; path: 'dense' | 'general'; maxNormSeen: number }> {
  const backend = await selectBackend();
  const model = buildModel(resolved);
  const width = data.inputShape.reduce((a, b) => a * b, 1);
  let maxNormSeen = 0;
  try {
    setWeights(model, global);
    const total = global.reduce((n, t) => n + t.data.length, 0);
    const g = new Float64Array(total);
    const dense = denseStack(model);
    if (dense) {
      for (let start = 0; start < data.n; start += RECORD_CHUNK) {
        const rows = Math.min(RECORD_CHUNK, data.n - start);
        const x = tf.tensor2d(data.x.subarray(start * width, (start + rows) * width), [rows, width]);
        const y = tf.tensor1d(Float32Array.from(data.y.subarray(start, start + rows)));
        const parts = tf.tidy(() => denseBackward(dense, x, y, resolved.numClasses));
        const acts = await Promise.all(parts.acts.map((t) => t.data() as Promise<Float32Array>));
        const deltas = await Promise.all(parts.deltas.map((t) => t.data() as Promise<Float32Array>));
        const norms = await parts.norms.data() as Float32Array;
        tf.dispose([x, y, ...parts.acts, ...parts.deltas, parts.norms]);
        for (let i = 0; i < rows; i++) {
          const norm = norms[i]!;
          maxNormSeen = Math.max(maxNormSeen, norm);
          const f = Math.min(1, clip / Math.max(norm, 1e-12));
          let off = 0;
          dense.forEach((l, k) => {
            const inW = l.kernel.shape[0]!;
            const outW = l.kernel.shape[1]!;
            const a = acts[k]!;
            const dl = deltas[k]!;
            for (let j = 0; j < inW; j++) {
              const aj = a[i * inW + j]! * f;
              for (let o = 0; o < outW; o++) g[off + j * outW + o] = aj * dl[i * outW + o]!;
            }
            off += inW * outW;
            if (l.bias) {
              for (let o = 0; o < outW; o++) g[off + o] = dl[i * outW + o]! * f;
              off += outW;
            }
          });
          visit(g);
        }
      }
      return { numExamples: data.n, backend, path: 'dense', maxNormSeen };
    }
    // General path: the trainable variables' places in the flat vector (non-trainable weights get 0).
    const all = model.weights;
    const offsets: number[] = [];
    let acc = 0;
    for (const w of all) { offsets.push(acc); acc += w.shape.reduce<number>((a, b) => a * (b ?? 1), 1); }
    const trainable = model.trainableWeights.map((w) => ({ v: w.read() as tf.Variable, off: offsets[all.indexOf(w)]! }));
    for (let i = 0; i < data.n; i++) {
      const x = tf.tensor(data.x.subarray(i * width, (i + 1) * width), [1, ...data.inputShape]);
      const y = tf.tensor1d([data.y[i]!]);
      const { grads } = tf.variableGrads(() => lossOf(model, x, y, resolved.numClasses), trainable.map((t) => t.v));
      g.fill(0);
      let sq = 0;
      for (const t of trainable) {
        const v = grads[t.v.name]!.dataSync();
        for (let j = 0; j < v.length; j++) { g[t.off + j] = v[j]!; sq += v[j]! * v[j]!; }
      }
      tf.dispose([x, y, ...Object.values(grads)]);
      const norm = Math.sqrt(sq);
      maxNormSeen = Math.max(maxNormSeen, norm);
      const f = Math.min(1, clip / Math.max(norm, 1e-12));
      if (f < 1) for (let j = 0; j < g.length; j++) g[j]! *= f;
      visit(g);
    }
    return { numExamples: data.n, backend, path: 'general', maxNormSeen };
  } finally {
    model.dispose();
  }
}
