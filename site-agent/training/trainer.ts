/**
 * Local training and evaluation with tfjs. The model is built from the study's spec (data, never code), so the
 * weight list matches the coordinator's. Shuffling is seeded per (study, round, epoch) so a round can be
 * reproduced; the loop itself is in fit-loop.ts.
 */
import * as tf from '@tensorflow/tfjs';
import type { Tensor } from '../../protocol/codec.ts';
import type { EvalCounts, ResolvedModel } from '../../protocol/messages.ts';
import { DEFAULT_MIN_CELL_COUNT, HISTOGRAM_BINS, binOf, exactAuc, suppressSiteCounts } from '../../protocol/metrics.ts';
import { buildModel, getWeights, outputUnits, setWeights } from '../../protocol/models.ts';
import type { LoadedSplit } from '../data/data-source.ts';
import { selectBackend, type BackendName } from './backends.ts';
import { fitModel } from './fit-loop.ts';
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

function featuresTensor(data: LoadedSplit): tf.Tensor {
  return tf.tensor(data.x, [data.n, ...data.inputShape]);
}

export async function train(resolved: ResolvedModel, global: readonly Tensor[], data: LoadedSplit, opts: TrainOptions): Promise<TrainOutcome> {
  const backend = await selectBackend();
  const model = buildModel(resolved, opts.seed);
  try {
    setWeights(model, global);
    // FedProx's term is a layer loss, which the loop adds to the data loss as model.fit would.
    const freeProximal = opts.proximalMu ? addProximalTerm(model, global, opts.proximalMu) : undefined;
    // The custom loop (fit-loop.ts) instead of model.fit: same shuffles and loss, a fraction of the per-batch cost.
    const lastLoss = await fitModel(model, resolved.numClasses, data, opts);
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
