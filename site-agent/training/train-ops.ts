/**
 * Training ops with few kernel launches, for the wasm and cpu backends, where a kernel launch (engine bookkeeping,
 * tape entry, tensor handles) costs about as much as a small layer's arithmetic. tfjs's own ops, under a gradient
 * tape, run a dense or convolution layer as matmul/conv + bias add + activation, with a cast, a step and a multiply
 * in the backward pass, and clone every input of a fused op; its softmax cross-entropy is a dozen kernels.
 *
 * Here each is one kernel with a registered gradient:
 * - `CohortDense` / `CohortConv2D`: the backend's fused matmul / convolution (bias and ReLU inside XNNPACK on wasm);
 *   their gradients are lazy per input, so the first layer never computes the gradient of the data.
 * - `CohortActBiasGrad`: the ReLU mask and the bias gradient in one pass.
 * - `CohortSoftmaxCE` / `CohortSigmoidCE`: the mean loss from logits and its gradient in one pass.
 * tests/unit/fast-training.test.ts checks every op and gradient against tfjs's own.
 */
import * as tf from '@tensorflow/tfjs';
import type { KernelFunc, NamedAttrMap, TensorInfo } from '@tensorflow/tfjs';
import { storageOf, type BackendStorage, type StorageBackendName } from './backend-storage.ts';

export type FusedActivation = 'linear' | 'relu';
type Pad = 'valid' | 'same';

const BACKENDS: readonly StorageBackendName[] = ['wasm', 'cpu'];

function kernel(name: string, impl: (s: BackendStorage, inputs: Record<string, TensorInfo>, attrs: NamedAttrMap) => TensorInfo | TensorInfo[]): void {
  for (const backendName of BACKENDS) {
    const kernelFunc: KernelFunc = ({ inputs, backend, attrs }) => impl(storageOf(backendName, backend), inputs as Record<string, TensorInfo>, attrs ?? {});
    tf.registerKernel({ kernelName: name, backendName, kernelFunc });
  }
}

function run(name: string, inputs: tf.NamedTensorMap, attrs: NamedAttrMap = {}): tf.Tensor | tf.Tensor[] {
  return tf.engine().runKernel(name, inputs, attrs) as unknown as tf.Tensor | tf.Tensor[];
}

// ---------------------------------------------------------------- activation and bias gradient

/** [dz, db]: dz = dy where the (ReLU) output is positive (all of dy when linear), db = dz summed per channel. */
function actBiasGrad(s: BackendStorage, inputs: Record<string, TensorInfo>, attrs: NamedAttrMap): TensorInfo[] {
  const { dy, y } = inputs as { dy: TensorInfo; y: TensorInfo };
  const relu = attrs.activation === 'relu';
  const channels = dy.shape[dy.shape.length - 1]!;
  const dz = s.alloc([...dy.shape]);
  const db = s.alloc([channels]);
  const dzv = dz.view(), dbv = db.view(), dyv = s.read(dy), yv = s.read(y);
  dbv.fill(0);
  for (let i = 0, c = 0; i < dzv.length; i++) {
    const g = relu && !(yv[i]! > 0) ? 0 : dyv[i]!;
    dzv[i] = g;
    dbv[c] = dbv[c]! + g;
    if (++c === channels) c = 0;
  }
  return [dz.info, db.info];
}

/**
 * The gradients' shared first step. Computed when the gradient function is called, not inside the per-input
 * closures: the engine runs each closure in its own tidy scope, which would free a shared tensor after the first.
 */
function actBias(dy: tf.Tensor, y: tf.Tensor, activation: FusedActivation): [tf.Tensor, tf.Tensor] {
  return run('CohortActBiasGrad', { dy, y }, { activation }) as [tf.Tensor, tf.Tensor];
}

// ---------------------------------------------------------------- dense

function dense(s: BackendStorage, inputs: Record<string, TensorInfo>, attrs: NamedAttrMap): TensorInfo {
  const { x, kernel: w, bias } = inputs as { x: TensorInfo; kernel: TensorInfo; bias?: TensorInfo };
  const [b, n] = x.shape as [number, number];
  const m = w.shape[1]!;
  const out = s.call('_FusedMatMul', {
    a: { dataId: x.dataId, shape: [1, b, n], dtype: 'float32' },
    b: { dataId: w.dataId, shape: [1, n, m], dtype: 'float32' },
    ...(bias ? { bias } : {}),
  }, { transposeA: false, transposeB: false, activation: attrs.activation as string }) as TensorInfo;
  return { dataId: out.dataId, shape: [b, m], dtype: 'float32' };
}

// ---------------------------------------------------------------- conv2d (NHWC, dilation 1)

function conv2D(s: BackendStorage, inputs: Record<string, TensorInfo>, attrs: NamedAttrMap): TensorInfo {
  const { x, filter, bias } = inputs as { x: TensorInfo; filter: TensorInfo; bias?: TensorInfo };
  return s.call('FusedConv2D', { x, filter, ...(bias ? { bias } : {}) }, {
    strides: attrs.strides as [number, number], pad: attrs.pad as Pad, dataFormat: 'NHWC', dilations: [1, 1], activation: attrs.activation as string,
  }) as TensorInfo;
}

// ---------------------------------------------------------------- cross-entropy from logits

/** [mean loss, d(mean loss)/d logits] of softmax cross-entropy; `labels` are one-hot rows. */
function softmaxCE(s: BackendStorage, inputs: Record<string, TensorInfo>): TensorInfo[] {
  const { logits, labels } = inputs as { logits: TensorInfo; labels: TensorInfo };
  const [b, k] = logits.shape as [number, number];
  const loss = s.alloc([]);
  const grad = s.alloc([b, k]);
  const lv = loss.view(), gv = grad.view(), z = s.read(logits), y = s.read(labels);
  let total = 0;
  for (let r = 0; r < b; r++) {
    const o = r * k;
    let max = -Infinity;
    for (let j = 0; j < k; j++) max = Math.max(max, z[o + j]!);
    let sum = 0;
    for (let j = 0; j < k; j++) sum += Math.exp(z[o + j]! - max);
    const lse = max + Math.log(sum);
    let ySum = 0;
    for (let j = 0; j < k; j++) {
      const yj = y[o + j]!;
      total += yj * (lse - z[o + j]!);
      ySum += yj;
    }
    for (let j = 0; j < k; j++) gv[o + j] = (ySum * Math.exp(z[o + j]! - lse) - y[o + j]!) / b;
  }
  lv[0] = total / b;
  return [loss.info, grad.info];
}

/** [mean loss, d(mean loss)/d logits] of sigmoid cross-entropy; `labels` are 0/1, same shape as `logits`. */
function sigmoidCE(s: BackendStorage, inputs: Record<string, TensorInfo>): TensorInfo[] {
  const { logits, labels } = inputs as { logits: TensorInfo; labels: TensorInfo };
  const n = logits.shape.reduce((a, c) => a * c, 1);
  const loss = s.alloc([]);
  const grad = s.alloc([...logits.shape]);
  const lv = loss.view(), gv = grad.view(), z = s.read(logits), y = s.read(labels);
  let total = 0;
  for (let i = 0; i < n; i++) {
    const zi = z[i]!, yi = y[i]!;
    // max(z, 0) - z*y + log(1 + exp(-|z|)): no overflow for any z.
    total += Math.max(zi, 0) - zi * yi + Math.log1p(Math.exp(-Math.abs(zi)));
    gv[i] = (1 / (1 + Math.exp(-zi)) - yi) / n;
  }
  lv[0] = total / n;
  return [loss.info, grad.info];
}

// ---------------------------------------------------------------- registration

let registered = false;

function register(): void {
  if (registered) return;
  kernel('CohortActBiasGrad', actBiasGrad);
  kernel('CohortDense', dense);
  kernel('CohortConv2D', conv2D);
  kernel('CohortSoftmaxCE', (s, i) => softmaxCE(s, i));
  kernel('CohortSigmoidCE', (s, i) => sigmoidCE(s, i));
  tf.registerGradient({
    kernelName: 'CohortDense',
    inputsToSave: ['x', 'kernel'],
    outputsToSave: [true],
    gradFunc: (dy, saved, attrs) => {
      const [x, w, y] = saved as [tf.Tensor2D, tf.Tensor2D, tf.Tensor2D];
      const [dz, db] = actBias(dy as tf.Tensor, y, attrs.activation as FusedActivation);
      return {
        x: () => tf.matMul(dz as tf.Tensor2D, w, false, true),
        kernel: () => tf.matMul(x, dz as tf.Tensor2D, true, false),
        bias: () => db,
      };
    },
  });
  tf.registerGradient({
    kernelName: 'CohortConv2D',
    inputsToSave: ['x', 'filter'],
    outputsToSave: [true],
    gradFunc: (dy, saved, attrs) => {
      const [x, filter, y] = saved as [tf.Tensor4D, tf.Tensor4D, tf.Tensor4D];
      const [dz, db] = actBias(dy as tf.Tensor, y, attrs.activation as FusedActivation);
      const conv = { strides: attrs.strides as [number, number], pad: attrs.pad as Pad, dataFormat: 'NHWC' };
      return {
        x: () => run('Conv2DBackpropInput', { dy: dz, filter }, { ...conv, inputShape: x.shape }) as tf.Tensor,
        filter: () => run('Conv2DBackpropFilter', { x, dy: dz }, { ...conv, filterShape: filter.shape }) as tf.Tensor,
        bias: () => db,
      };
    },
  });
  for (const name of ['CohortSoftmaxCE', 'CohortSigmoidCE']) {
    tf.registerGradient({
      kernelName: name,
      outputsToSave: [false, true],
      gradFunc: (dys, saved) => {
        const dLoss = (Array.isArray(dys) ? dys[0] : dys)!;
        const [g] = saved as [tf.Tensor];
        return { logits: () => tf.mul(g, dLoss), labels: () => tf.zerosLike(g) };
      },
    });
  }
  registered = true;
}

/** Whether these ops run on the current backend (the native backend keeps tfjs's own ops). */
export function trainOpsAvailable(): boolean {
  return (BACKENDS as readonly string[]).includes(tf.getBackend());
}

/** y = act(x W + b), x of shape [batch, in]. */
export function denseOp(x: tf.Tensor, w: tf.Tensor, b: tf.Tensor | undefined, activation: FusedActivation): tf.Tensor {
  register();
  return run('CohortDense', { x, kernel: w, ...(b ? { bias: b } : {}) }, { activation }) as tf.Tensor;
}

/** y = act(conv(x, W) + b), NHWC, dilation 1. */
export function conv2dOp(x: tf.Tensor, w: tf.Tensor, b: tf.Tensor | undefined, strides: [number, number], pad: Pad, activation: FusedActivation): tf.Tensor {
  register();
  return run('CohortConv2D', { x, filter: w, ...(b ? { bias: b } : {}) }, { strides, pad, activation }) as tf.Tensor;
}

/** Mean softmax cross-entropy of `logits` [b, k] against one-hot `labels` [b, k]. */
export function softmaxCrossEntropyOp(logits: tf.Tensor, labels: tf.Tensor): tf.Scalar {
  register();
  return (run('CohortSoftmaxCE', { logits, labels }) as tf.Tensor[])[0] as tf.Scalar;
}

/** Mean sigmoid cross-entropy of `logits` against 0/1 `labels` of the same shape. */
export function sigmoidCrossEntropyOp(logits: tf.Tensor, labels: tf.Tensor): tf.Scalar {
  register();
  return (run('CohortSigmoidCE', { logits, labels }) as tf.Tensor[])[0] as tf.Scalar;
}
