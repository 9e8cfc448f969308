/**
 * Local training and evaluation with tfjs. The model is built from the study's spec (data, never code), so the
 * weight list matches the coordinator's. Shuffling is seeded per (study, round, epoch) so a round can be
 * reproduced.
 */
import * as tf from '@tensorflow/tfjs';
import type { Tensor } from '../../protocol/codec.ts';
import type { EvalCounts, ResolvedModel } from '../../protocol/messages.ts';
import { DEFAULT_MIN_CELL_COUNT, HISTOGRAM_BINS, binOf, exactAuc, suppressSiteCounts } from '../../protocol/metrics.ts';
import { buildModel, getWeights, lossName, outputUnits, setWeights } from '../../protocol/models.ts';
import type { LoadedSplit } from '../data/data-source.ts';
import { selectBackend, type BackendName } from './backends.ts';
import { addProximalTerm } from './proximal.ts';

export interface TrainOptions {
  epochs: number;
  batchSize: number;
  optimizer: 'adam' | 'sgd';
  learningRate: number;
  seed: number;
  /** FedProx: adds (mu / 2) * ||w - w_global||^2 to the loss (see proximal.ts). */
  proximalMu?: number;
}

export interface TrainOutcome {
  weights: Tensor[];
  numExamples: number;
  trainLoss: number;
  backend: BackendName;
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

function permutation(n: number, seed: number): Int32Array {
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

function labelsTensor(data: LoadedSplit, numClasses: number, order?: Int32Array): tf.Tensor {
  const y = order ? Float32Array.from(order, (i) => data.y[i]!) : Float32Array.from(data.y);
  return outputUnits(numClasses) === 1 ? tf.tensor2d(y, [y.length, 1]) : tf.tensor1d(y);
}

function featuresTensor(data: LoadedSplit, order?: Int32Array): tf.Tensor {
  const width = data.inputShape.reduce((a, b) => a * b, 1);
  let x = data.x;
  if (order) {
    x = new Float32Array(data.x.length);
    order.forEach((src, dst) => x.set(data.x.subarray(src * width, (src + 1) * width), dst * width));
  }
  return tf.tensor(x, [data.n, ...data.inputShape]);
}

export async function train(resolved: ResolvedModel, global: readonly Tensor[], data: LoadedSplit, opts: TrainOptions): Promise<TrainOutcome> {
  const backend = await selectBackend();
  const model = buildModel(resolved, opts.seed);
  try {
    setWeights(model, global);
    const optimizer = opts.optimizer === 'adam' ? tf.train.adam(opts.learningRate) : tf.train.sgd(opts.learningRate);
    model.compile({ optimizer, loss: lossName(resolved.numClasses) });
    const freeProximal = opts.proximalMu ? addProximalTerm(model, global, opts.proximalMu) : undefined;
    let lastLoss = NaN;
    for (let epoch = 0; epoch < opts.epochs; epoch++) {
      const order = permutation(data.n, opts.seed * 1009 + epoch);
      const x = featuresTensor(data, order);
      const y = labelsTensor(data, resolved.numClasses, order);
      const h = await model.fit(x, y, { epochs: 1, batchSize: opts.batchSize, shuffle: false, verbose: 0 });
      tf.dispose([x, y]);
      lastLoss = Number(h.history.loss?.[0] ?? NaN);
    }
    optimizer.dispose();
    freeProximal?.();
    return { weights: getWeights(model), numExamples: data.n, trainLoss: lastLoss, backend };
  } finally {
    model.dispose();
  }
}

/**
 * Scores a hold-out split into counts: confusion counts, score histograms and summed loss (see protocol/metrics).
 * A value the site derives itself (its exact AUC) is withheld when fewer than `minCellCount` cases are behind it.
 */
export async function evaluate(resolved: ResolvedModel, weights: readonly Tensor[], data: LoadedSplit, opts: { minCellCount?: number } = {}): Promise<EvalCounts> {
  await selectBackend();
  const model = buildModel(resolved);
  try {
    setWeights(model, weights);
    const x = featuresTensor(data);
    const out = model.predict(x) as tf.Tensor;
    const scores = (await out.data()) as Float32Array;
    tf.dispose([x, out]);
    const eps = 1e-7;
    if (outputUnits(resolved.numClasses) === 1) {
      const histPos = new Array<number>(HISTOGRAM_BINS).fill(0);
      const histNeg = new Array<number>(HISTOGRAM_BINS).fill(0);
      let tp = 0, fp = 0, tn = 0, fn = 0, lossSum = 0;
      for (let i = 0; i < data.n; i++) {
        const s = Math.min(1 - eps, Math.max(eps, scores[i]!));
        const pos = data.y[i] === 1;
        lossSum += pos ? -Math.log(s) : -Math.log(1 - s);
        (pos ? histPos : histNeg)[binOf(s)]!++;
        if (s >= 0.5) (pos ? tp++ : fp++);
        else (pos ? fn++ : tn++);
      }
      const counts: EvalCounts = { n: data.n, lossSum, correct: tp + tn, tp, fp, tn, fn, histPos, histNeg };
      const auc = exactAuc(scores.subarray(0, data.n), data.y);
      if (auc !== undefined) counts.auc = auc;
      return suppressSiteCounts(counts, opts.minCellCount ?? DEFAULT_MIN_CELL_COUNT);
    }
    const k = resolved.numClasses;
    let correct = 0, lossSum = 0;
    for (let i = 0; i < data.n; i++) {
      let best = 0;
      for (let c = 1; c < k; c++) if (scores[i * k + c]! > scores[i * k + best]!) best = c;
      if (best === data.y[i]) correct++;
      lossSum += -Math.log(Math.max(eps, scores[i * k + data.y[i]!]!));
    }
    return { n: data.n, lossSum, correct };
  } finally {
    model.dispose();
  }
}
