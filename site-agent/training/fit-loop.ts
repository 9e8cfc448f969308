/**
 * The local training loop: what `model.fit` does for one site, minus its per-batch overhead. Each epoch lays out
 * the seeded permutation of the data once and uploads one batch at a time; each step is one gradient tape
 * over the lean loss (training-graph.ts) and one fused optimizer kernel (fused-optimizer.ts) where the backend
 * takes it, tfjs's optimizer otherwise. It yields to the event loop every few tens of milliseconds, so the agent's
 * socket stays alive during long epochs.
 */
import * as tf from '@tensorflow/tfjs';
import { outputUnits } from '../../protocol/models.ts';
import type { LoadedSplit } from '../data/data-source.ts';
import { FusedOptimizer, fusedOptimizerAvailable } from './fused-optimizer.ts';
import { trainingGraph } from './training-graph.ts';

export interface FitOptions {
  epochs: number;
  batchSize: number;
  optimizer: 'adam' | 'sgd';
  learningRate: number;
  /** Seeds the shuffles (one permutation per epoch) and the dropout masks. */
  seed: number;
  /** Use tfjs's optimizers and ops even where Cohort's fused ones run: what the native backend does (for tests). */
  stockOptimizer?: boolean;
  tfjsOps?: boolean;
}

/** mulberry32: a tiny seeded PRNG, enough for shuffling order (not for anything secret). */
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

/** The seeded order of one epoch (Fisher-Yates). */
export function permutation(n: number, seed: number): Int32Array {
  const r = rng(seed);
  const p = Int32Array.from({ length: n }, (_, i) => i);
  for (let i = n - 1; i > 0; i--) {
    const j = Math.floor(r() * (i + 1));
    const t = p[i]!;
    p[i] = p[j]!;
    p[j] = t;
  }
  return p;
}

/** The examples of one epoch in `order`, row-major, and their targets: 0/1 for two classes, one-hot otherwise. */
function epochArrays(data: LoadedSplit, numClasses: number, order: Int32Array): { x: Float32Array; y: Float32Array; width: number; units: number } {
  const width = data.inputShape.reduce((a, b) => a * b, 1);
  const units = outputUnits(numClasses);
  const x = new Float32Array(data.n * width);
  const y = new Float32Array(data.n * units);
  order.forEach((src, dst) => {
    x.set(data.x.subarray(src * width, (src + 1) * width), dst * width);
    if (units === 1) y[dst] = data.y[src]!;
    else y[dst * units + data.y[src]!] = 1;
  });
  return { x, y, width, units };
}

const YIELD_MS = 40;

/**
 * Trains `model` in place on `data` and returns the mean training loss of the last epoch (layer losses included,
 * as `model.fit` reports it).
 */
export async function fitModel(model: tf.Sequential, numClasses: number, data: LoadedSplit, opts: FitOptions): Promise<number> {
  const graph = trainingGraph(model, numClasses, { tfjsOps: opts.tfjsOps ?? false });
  const fused = !opts.stockOptimizer && fusedOptimizerAvailable();
  const fusedOpt = fused ? new FusedOptimizer(graph.vars, opts.optimizer, opts.learningRate) : undefined;
  const stockOpt = fused ? undefined : opts.optimizer === 'adam' ? tf.train.adam(opts.learningRate) : tf.train.sgd(opts.learningRate);
  let lastLoss = NaN;
  let step = 0;
  let lastYield = performance.now();
  try {
    for (let epoch = 0; epoch < opts.epochs; epoch++) {
      const order = permutation(data.n, opts.seed * 1009 + epoch);
      const epochData = epochArrays(data, numClasses, order);
      const last = epoch === opts.epochs - 1;
      let lossSum = 0;
      for (let start = 0; start < data.n; start += opts.batchSize) {
        const size = Math.min(opts.batchSize, data.n - start);
        const s = step++;
        tf.tidy(() => {
          // Each batch is uploaded from the shuffled arrays: slicing a tensor copies all of it on wasm (tfjs 4.22).
          const { x, y, width, units } = epochData;
          const xb = tf.tensor(x.subarray(start * width, (start + size) * width), [size, ...data.inputShape]);
          const yb = tf.tensor2d(y.subarray(start * units, (start + size) * units), [size, units]);
          const f = () => graph.loss(xb, yb, s);
          if (stockOpt) {
            const cost = stockOpt.minimize(f, last, graph.vars);
            if (cost) lossSum += cost.dataSync()[0]! * size;
            return;
          }
          const { value, grads } = tf.variableGrads(f, graph.vars);
          fusedOpt!.apply(graph.vars.map((v) => grads[v.name]!));
          if (last) lossSum += value.dataSync()[0]! * size;
        });
        if (performance.now() - lastYield > YIELD_MS) {
          await new Promise((r) => setImmediate(r));
          lastYield = performance.now();
        }
      }
      if (last) lastLoss = lossSum / data.n;
    }
  } finally {
    fusedOpt?.dispose();
    stockOpt?.dispose();
  }
  return lastLoss;
}
