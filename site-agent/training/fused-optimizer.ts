/**
 * Adam and SGD as one kernel call per step for the wasm and cpu backends. tfjs's own optimizers issue about a
 * dozen elementwise kernels per weight tensor (about 100 for a small CNN); on these backends each kernel costs
 * more in dispatch than in arithmetic, so one pass over every weight, gradient and moment in plain loops is several
 * times cheaper. The arithmetic is exactly tfjs's (same epsilon, same bias correction), which
 * tests/unit/fast-training.test.ts checks against `tf.train.adam`. On the native backend tfjs's optimizers stay.
 */
import * as tf from '@tensorflow/tfjs';
import type { KernelFunc, TensorInfo } from '@tensorflow/tfjs';
import { storageOf, type StorageBackendName } from './backend-storage.ts';

const KERNEL = 'CohortFusedOptimizer';

/** Attributes of one fused step. `count` weight tensors come in as inputs w{i}, g{i} (and m{i}, v{i} for Adam). */
interface StepAttrs {
  kind: 'adam' | 'sgd';
  count: number;
  learningRate: number;
  beta1: number;
  beta2: number;
  epsilon: number;
  /** 1 - beta1^t and 1 - beta2^t for this step t (t from 1). */
  correction1: number;
  correction2: number;
}

function fusedStep(name: StorageBackendName): KernelFunc {
  return ({ inputs, backend, attrs }) => {
    const s = storageOf(name, backend);
    const a = attrs as unknown as StepAttrs;
    const outputs: TensorInfo[] = [];
    for (let i = 0; i < a.count; i++) {
      const w = inputs[`w${i}`]!;
      const shape = [...w.shape];
      if (a.kind === 'sgd') {
        const nw = s.alloc(shape);
        const out = nw.view(), wv = s.read(w), gv = s.read(inputs[`g${i}`]!);
        const lr = a.learningRate;
        for (let j = 0; j < out.length; j++) out[j] = wv[j]! - lr * gv[j]!;
        outputs.push(nw.info);
        continue;
      }
      const nw = s.alloc(shape), nm = s.alloc(shape), nv = s.alloc(shape);
      // Views after the last allocation: growing the wasm heap detaches earlier ones.
      const ow = nw.view(), om = nm.view(), ov = nv.view();
      const wv = s.read(w), gv = s.read(inputs[`g${i}`]!), mv = s.read(inputs[`m${i}`]!), vv = s.read(inputs[`v${i}`]!);
      const { beta1, beta2, epsilon, correction1, correction2, learningRate } = a;
      const c1 = 1 - beta1, c2 = 1 - beta2, i1 = 1 / correction1, i2 = 1 / correction2;
      for (let j = 0; j < ow.length; j++) {
        const g = gv[j]!;
        const m = beta1 * mv[j]! + c1 * g;
        const v = beta2 * vv[j]! + c2 * g * g;
        om[j] = m;
        ov[j] = v;
        ow[j] = wv[j]! - learningRate * ((m * i1) / (Math.sqrt(v * i2) + epsilon));
      }
      outputs.push(nw.info, nm.info, nv.info);
    }
    return outputs;
  };
}

let registered = false;

function register(): void {
  if (registered) return;
  for (const name of ['cpu', 'wasm'] as const) tf.registerKernel({ kernelName: KERNEL, backendName: name, kernelFunc: fusedStep(name) });
  registered = true;
}

/** Whether the fused step runs on the current backend (otherwise use tfjs's optimizers). */
export function fusedOptimizerAvailable(): boolean {
  return tf.getBackend() === 'wasm' || tf.getBackend() === 'cpu';
}

/**
 * Adam or SGD over a fixed list of variables, one kernel per step. Moments are plain tensors it owns; call
 * `dispose()` when done.
 */
export class FusedOptimizer {
  private readonly m: tf.Tensor[] = [];
  private readonly v: tf.Tensor[] = [];
  private t = 0;

  constructor(
    private readonly vars: readonly tf.Variable[],
    private readonly kind: 'adam' | 'sgd',
    private readonly learningRate: number,
    private readonly beta1 = 0.9,
    private readonly beta2 = 0.999,
    private readonly epsilon = tf.backend().epsilon(),
  ) {
    register();
    if (kind === 'adam') {
      for (const w of vars) {
        this.m.push(tf.zerosLike(w));
        this.v.push(tf.zerosLike(w));
      }
    }
  }

  /** Applies one step; `grads[i]` is the gradient of `vars[i]`. Does not dispose the gradients. */
  apply(grads: readonly tf.Tensor[]): void {
    this.t++;
    const inputs: tf.NamedTensorMap = {};
    this.vars.forEach((w, i) => {
      inputs[`w${i}`] = w;
      inputs[`g${i}`] = grads[i]!;
      if (this.kind === 'adam') {
        inputs[`m${i}`] = this.m[i]!;
        inputs[`v${i}`] = this.v[i]!;
      }
    });
    const attrs: StepAttrs = {
      kind: this.kind, count: this.vars.length, learningRate: this.learningRate, beta1: this.beta1, beta2: this.beta2,
      epsilon: this.epsilon, correction1: 1 - this.beta1 ** this.t, correction2: 1 - this.beta2 ** this.t,
    };
    const out = tf.engine().runKernel(KERNEL, inputs, attrs as unknown as tf.NamedAttrMap) as unknown as tf.Tensor[];
    const per = this.kind === 'adam' ? 3 : 1;
    this.vars.forEach((w, i) => {
      w.assign(out[i * per]!);
      if (this.kind === 'adam') {
        this.m[i]!.dispose();
        this.v[i]!.dispose();
        // Kept: the step may run inside a tidy scope.
        this.m[i] = tf.keep(out[i * per + 1]!);
        this.v[i] = tf.keep(out[i * per + 2]!);
      }
    });
    for (let i = 0; i < this.vars.length; i++) out[i * per]!.dispose();
  }

  dispose(): void {
    tf.dispose([...this.m, ...this.v]);
  }
}
