/**
 * The training loss of a built model as a plain function of a batch, for the custom training loop.
 *
 * For the layers Cohort's templates and topologies use, the forward pass is rebuilt from tfjs ops on the model's
 * own variables (no per-layer bookkeeping of the layers API), and the output activation is folded into the loss:
 * softmax / sigmoid cross-entropy from logits, whose gradient is one subtraction. Anything else (batch
 * normalization, a dense layer on non-flat input) runs through `model.apply` with the loss on probabilities, as
 * `model.fit` computes it. Either way the layer losses (weight regularizers, a FedProx term) are added, as
 * `model.fit` adds them. tests/unit/fast-training.test.ts checks the lean forward against `model.predict`.
 */
import * as tf from '@tensorflow/tfjs';
import { outputUnits } from '../../protocol/models.ts';
import { conv2dOp, denseOp, sigmoidCrossEntropyOp, softmaxCrossEntropyOp, trainOpsAvailable, type FusedActivation } from './train-ops.ts';

/** Clipping of probabilities in the fallback loss; tfjs-layers' `epsilon()`. */
const EPS = 1e-7;

export interface TrainingGraph {
  /** The trainable variables, in `model.trainableWeights` order. */
  vars: tf.Variable[];
  /** Whether the lean forward is used (false: `model.apply`). */
  lean: boolean;
  /**
   * Mean loss over a batch plus layer losses. `y` is [b, 1] of 0/1 for two classes, one-hot [b, k] otherwise.
   * `step` varies dropout masks from step to step, deterministically.
   */
  loss(x: tf.Tensor, y: tf.Tensor, step: number): tf.Scalar;
}

type Forward = (x: tf.Tensor, training: boolean, step: number) => tf.Tensor;
type ActivationName = 'linear' | 'relu' | 'relu6' | 'elu' | 'selu' | 'sigmoid' | 'tanh' | 'softmax' | 'softplus' | 'softsign';

function activate(x: tf.Tensor, name: ActivationName): tf.Tensor {
  switch (name) {
    case 'linear': return x;
    case 'relu': return tf.relu(x);
    case 'relu6': return tf.relu6(x);
    case 'elu': return tf.elu(x);
    case 'selu': return tf.selu(x);
    case 'sigmoid': return tf.sigmoid(x);
    case 'tanh': return tf.tanh(x);
    case 'softmax': return tf.softmax(x);
    case 'softplus': return tf.softplus(x);
    case 'softsign': return tf.div(x, tf.add(tf.abs(x), 1));
  }
}

const ACTIVATIONS = new Set<string>(['linear', 'relu', 'relu6', 'elu', 'selu', 'sigmoid', 'tanh', 'softmax', 'softplus', 'softsign']);

interface LayerConfig {
  activation?: string;
  useBias?: boolean;
  strides?: [number, number];
  padding?: 'valid' | 'same';
  dilationRate?: number | [number, number];
  dataFormat?: string;
  poolSize?: [number, number];
  rate?: number;
  seed?: number;
}

/** A mixing of the layer seed and the step, so each step draws a new, reproducible dropout mask. */
function stepSeed(seed: number, step: number): number {
  return (Math.imul(seed + 1, 0x9e3779b1) ^ Math.imul(step + 1, 0x85ebca6b)) >>> 0;
}

/**
 * The lean forward of one layer, or undefined when this layer needs the layers API. `last` marks the output
 * layer, whose activation the loss applies.
 */
function leanLayer(layer: tf.layers.Layer, rank: number, last: boolean, ops: boolean): { f: Forward; rank: number } | undefined {
  const cfg = layer.getConfig() as LayerConfig;
  const weights = layer.trainableWeights.map((w) => w.read() as tf.Variable);
  const act = (cfg.activation ?? 'linear') as ActivationName;
  if ('activation' in cfg && !ACTIVATIONS.has(act)) return undefined;
  switch (layer.getClassName()) {
    case 'InputLayer':
      return { f: (x) => x, rank };
    case 'Dense': {
      if (rank !== 2) return undefined;
      const [kernel, bias] = weights as [tf.Variable, tf.Variable | undefined];
      const apply = last ? 'linear' : act;
      if (ops) {
        const fused: FusedActivation = apply === 'relu' ? 'relu' : 'linear';
        return { f: (x) => activate(denseOp(x, kernel, bias, fused), fused === apply ? 'linear' : apply), rank: 2 };
      }
      return { f: (x) => activate(tf.fused.matMul({ a: x as tf.Tensor2D, b: kernel as tf.Tensor2D, ...(bias ? { bias } : {}) }), apply), rank: 2 };
    }
    case 'Conv2D': {
      const dil = cfg.dilationRate;
      if (rank !== 4 || cfg.dataFormat !== 'channelsLast' || (dil !== undefined && dil !== 1 && (dil as number[]).some((d) => d !== 1))) return undefined;
      const [kernel, bias] = weights as [tf.Variable, tf.Variable | undefined];
      const strides = cfg.strides ?? [1, 1];
      const pad = cfg.padding ?? 'valid';
      if (last) return undefined;
      if (ops) {
        const fused: FusedActivation = act === 'relu' ? 'relu' : 'linear';
        return { f: (x) => activate(conv2dOp(x, kernel, bias, strides, pad, fused), fused === act ? 'linear' : act), rank: 4 };
      }
      return {
        f: (x) => activate(tf.fused.conv2d({ x: x as tf.Tensor4D, filter: kernel as tf.Tensor4D, strides, pad, ...(bias ? { bias } : {}) }), act),
        rank: 4,
      };
    }
    case 'MaxPooling2D':
    case 'AveragePooling2D': {
      if (rank !== 4 || cfg.dataFormat !== 'channelsLast') return undefined;
      const pool = layer.getClassName() === 'MaxPooling2D' ? tf.maxPool : tf.avgPool;
      const size = cfg.poolSize ?? [2, 2];
      const strides = cfg.strides ?? size;
      const pad = cfg.padding ?? 'valid';
      return { f: (x) => pool(x as tf.Tensor4D, size, strides, pad), rank: 4 };
    }
    case 'GlobalAveragePooling2D':
      return rank === 4 && cfg.dataFormat === 'channelsLast' ? { f: (x) => tf.mean(x, [1, 2]), rank: 2 } : undefined;
    case 'GlobalMaxPooling2D':
      return rank === 4 && cfg.dataFormat === 'channelsLast' ? { f: (x) => tf.max(x, [1, 2]), rank: 2 } : undefined;
    case 'Flatten':
      return { f: (x) => tf.reshape(x, [x.shape[0]!, -1]), rank: 2 };
    case 'Dropout': {
      const rate = cfg.rate ?? 0;
      const seed = cfg.seed ?? 0;
      return { f: (x, training, step) => (training && rate > 0 && rate < 1 ? tf.dropout(x, rate, undefined, stepSeed(seed, step)) : x), rank };
    }
    case 'Activation':
      return last ? undefined : { f: (x) => activate(x, act), rank };
    default:
      return undefined;
  }
}

/** The lean forward to logits, or undefined when some layer is not covered. */
function leanForward(model: tf.Sequential, inputRank: number, units: number, ops: boolean): Forward | undefined {
  const layers = model.layers;
  const out = layers[layers.length - 1];
  if (!out || out.getClassName() !== 'Dense') return undefined;
  const outAct = (out.getConfig() as LayerConfig).activation;
  if (outAct !== (units === 1 ? 'sigmoid' : 'softmax')) return undefined;
  const steps: Forward[] = [];
  let rank = inputRank;
  for (let i = 0; i < layers.length; i++) {
    const lean = leanLayer(layers[i]!, rank, i === layers.length - 1, ops);
    if (!lean) return undefined;
    steps.push(lean.f);
    rank = lean.rank;
  }
  return (x, training, step) => steps.reduce((h, f) => f(h, training, step), x);
}

/** Binary cross-entropy from logits, mean over the batch, with the gradient (sigmoid(z) - y) / b in one kernel pair. */
const sigmoidCrossEntropy = tf.customGrad(((z: tf.Tensor, y: tf.Tensor, save: tf.GradSaveFunc) => {
  // max(z, 0) - z * y + log(1 + exp(-|z|)): stable for any z.
  const value = tf.mean(tf.add(tf.sub(tf.relu(z), tf.mul(z, y)), tf.log1p(tf.exp(tf.neg(tf.abs(z))))));
  save([z, y]);
  return {
    value,
    gradFunc: (dy: tf.Tensor, saved: tf.Tensor[]) => {
      const [zs, ys] = saved as [tf.Tensor, tf.Tensor];
      return [tf.mul(tf.sub(tf.sigmoid(zs), ys), tf.div(dy, zs.shape[0]!)), tf.zerosLike(ys)];
    },
  };
}) as unknown as Parameters<typeof tf.customGrad>[0]) as unknown as (z: tf.Tensor, y: tf.Tensor) => tf.Scalar;

/** Layer losses (weight regularizers, anything added with `addLoss`), as `model.fit` adds them. */
function layerLosses(model: tf.Sequential): tf.Scalar[] {
  return model.layers.flatMap((l) => l.calculateLosses());
}

/**
 * Builds the training loss for `model` (a template built by protocol/models.ts) and `numClasses`. `tfjsOps` uses
 * tfjs's own ops even where Cohort's fused ones run (what the native backend does; for tests).
 */
export function trainingGraph(model: tf.Sequential, numClasses: number, opts: { tfjsOps?: boolean } = {}): TrainingGraph {
  const units = outputUnits(numClasses);
  const vars = model.trainableWeights.map((w) => w.read() as tf.Variable);
  const inputRank = (model.inputs[0]?.shape.length ?? 2);
  const ops = !opts.tfjsOps && trainOpsAvailable();
  const lean = leanForward(model, inputRank, units, ops);
  const withLayerLosses = (data: tf.Scalar): tf.Scalar => layerLosses(model).reduce<tf.Scalar>((a, b) => tf.add(a, b), data);
  if (lean) {
    return {
      vars, lean: true,
      loss: (x, y, step) => {
        const logits = lean(x, true, step);
        const data = ops
          ? (units === 1 ? sigmoidCrossEntropyOp(logits, y) : softmaxCrossEntropyOp(logits, y))
          : (units === 1 ? sigmoidCrossEntropy(logits, y) : (tf.losses.softmaxCrossEntropy(y, logits) as tf.Scalar));
        return withLayerLosses(data);
      },
    };
  }
  return {
    vars, lean: false,
    loss: (x, y) => {
      const p = tf.clipByValue(model.apply(x, { training: true }) as tf.Tensor, EPS, 1 - EPS);
      const data = units === 1
        ? tf.neg(tf.mean(tf.add(tf.mul(y, tf.log(p)), tf.mul(tf.sub(1, y), tf.log(tf.sub(1, p))))))
        : tf.neg(tf.mean(tf.sum(tf.mul(y, tf.log(p)), -1)));
      return withLayerLosses(data as tf.Scalar);
    },
  };
}

/** The lean forward's output probabilities (for tests: they must equal `model.predict`). */
export function leanPredict(model: tf.Sequential, numClasses: number, x: tf.Tensor): tf.Tensor | undefined {
  const units = outputUnits(numClasses);
  const lean = leanForward(model, model.inputs[0]?.shape.length ?? 2, units, trainOpsAvailable());
  if (!lean) return undefined;
  return tf.tidy(() => {
    const logits = lean(x, false, 0);
    return units === 1 ? tf.sigmoid(logits) : tf.softmax(logits);
  });
}
