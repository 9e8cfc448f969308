/**
 * `npm run bench:dp-recipe`: an in-process replica of bench:dp's record-level pipeline, for comparing DP-SGD recipes
 * over many noise draws in seconds rather than minutes. Same data, split, pooled standardization, initial weights,
 * DP-SGD code (`trainDpSgd`) and per-site noise calibration (`recordRoundPlan`) as the real sites; FedAvg weighted by
 * example counts in memory instead of secure aggregation over sockets (whose rounding is far below the noise), and
 * pooled hold-out accuracy at threshold 0.5 as the coordinator reports it. bench:dp stays the measurement of record.
 *
 * Runs the current recipe (cli/demo.ts WDBC_DP) and, in the same run, the previous one (batch 16, learning rate 1,
 * tail-averaged iterates) as the baseline, `--runs` times each, and prints every run, mean, sd and runs >= 0.95.
 * `--recipe '{"learningRate":2,"clip":1}'` overrides fields of the current recipe; `--dump FILE` writes the
 * standardized site data and initial weights as JSON for bench/dp_grid.py (a numpy replica for wider sweeps);
 * `--noise-scale 0` trains both recipes without noise, to see where optimisation alone would take them.
 */
import { mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { parseArgs } from 'node:util';
import * as tf from '@tensorflow/tfjs';
import { splitCsvForSites, WDBC, WDBC_DP } from '../cli/demo.ts';
import type { Tensor } from '../protocol/codec.ts';
import type { ResolvedModel } from '../protocol/messages.ts';
import { buildModel, getWeights } from '../protocol/models.ts';
import { recordRoundPlan } from '../protocol/privacy/plan.ts';
import { standardizationFromSums, sumVectors } from '../protocol/standardization.ts';
import { CsvDatasetSchema } from '../site-agent/config.ts';
import { CsvSource } from '../site-agent/data/csv-source.ts';
import { featureSums, standardize } from '../site-agent/data/standardize.ts';
import { trainDpSgd } from '../site-agent/training/dp-sgd.ts';

const { values } = parseArgs({ options: { runs: { type: 'string', default: '40' }, rounds: { type: 'string', default: '20' }, recipe: { type: 'string', default: '{}' }, dump: { type: 'string' }, 'noise-scale': { type: 'string', default: '1' } } });
tf.env().set('PROD', true);
const SITES = 5;
const rounds = Number(values.rounds);
const runs = Number(values.runs);
/** Multiplies the calibrated noise: 0 shows where each recipe would end without noise (no privacy at all). */
const noiseScale = Number(values['noise-scale']);

interface Recipe { batchSize: number; localEpochs: number; learningRate: number; clip: number; averageIterates: boolean; targetEpsilon: number }
const current: Recipe = { ...WDBC_DP.training, clip: WDBC_DP.dp.clip, targetEpsilon: WDBC_DP.dp.targetEpsilon, averageIterates: false, ...(JSON.parse(values.recipe) as Partial<Recipe>) };
const previous: Recipe = { batchSize: 16, localEpochs: 1, learningRate: 1, clip: 0.5, averageIterates: true, targetEpsilon: 2 };

const dir = mkdtempSync(join(tmpdir(), 'cohort-dp-recipe-'));
const sources = splitCsvForSites(WDBC, SITES).map((csv, i) => {
  const file = join(dir, `site-${i + 1}.csv`);
  writeFileSync(file, csv);
  return new CsvSource(file, CsvDatasetSchema.parse({ id: 'wdbc', kind: 'csv', path: file, label: 'malignant' }), { holdoutFraction: 0.25, seed: 42 });
});
const rawTrain = await Promise.all(sources.map((s) => s.load('train')));
const rawHold = await Promise.all(sources.map((s) => s.load('holdout')));
rmSync(dir, { recursive: true, force: true });
const stats = standardizationFromSums(sumVectors(rawTrain.map((t) => featureSums(t).vector)));
const train = rawTrain.map((t) => standardize(t, stats));
const hold = rawHold.map((t) => standardize(t, stats));
const resolved: ResolvedModel = { spec: { template: 'logreg', l2: 0 } as ResolvedModel['spec'], inputShape: train[0]!.inputShape, numClasses: 2 };
const initModel = buildModel(resolved, 42);
const init = getWeights(initModel);
initModel.dispose();
if (values.dump) {
  const plain = (d: typeof train) => d.map((t) => ({ n: t.n, x: Array.from(t.x), y: Array.from(t.y) }));
  writeFileSync(values.dump, JSON.stringify({ train: plain(train), hold: plain(hold), init: init.map((t) => Array.from(t.data)) }));
}

function accuracy(w: Tensor[]): number {
  let ok = 0;
  let n = 0;
  const k = w[0]!.data;
  const b = w[1]!.data[0]!;
  for (const h of hold) {
    const d = h.inputShape[0]!;
    for (let i = 0; i < h.n; i++) {
      let z = b;
      for (let j = 0; j < d; j++) z += k[j]! * h.x[i * d + j]!;
      ok += Number((z > 0 ? 1 : 0) === h.y[i]);
      n++;
    }
  }
  return ok / n;
}

async function study(r: Recipe): Promise<number> {
  const dp = { mode: 'record' as const, clip: r.clip, targetEpsilon: r.targetEpsilon, delta: 1e-5, microbatch: 1, averageIterates: r.averageIterates };
  let global = init;
  for (let round = 0; round < rounds; round++) {
    const out: Awaited<ReturnType<typeof trainDpSgd>>[] = [];
    for (const data of train) {
      const plan = recordRoundPlan(dp, { batchSize: r.batchSize, localEpochs: r.localEpochs, rounds }, data.n);
      out.push(await trainDpSgd(resolved, global, data, { epochs: r.localEpochs, batchSize: r.batchSize, optimizer: 'sgd', learningRate: r.learningRate, clip: r.clip, noiseMultiplier: plan.noiseMultiplier * noiseScale, averageIterates: r.averageIterates }));
    }
    const total = out.reduce((s, o) => s + o.numExamples, 0);
    global = global.map((t, k) => ({ shape: t.shape, data: Float32Array.from(t.data, (_, j) => out.reduce((s, o) => s + (o.numExamples / total) * o.weights[k]!.data[j]!, 0)) }));
  }
  return accuracy(global);
}

const summary = (label: string, accs: number[]) => {
  const mean = accs.reduce((a, b) => a + b, 0) / accs.length;
  const sd = Math.sqrt(accs.reduce((a, x) => a + (x - mean) ** 2, 0) / Math.max(1, accs.length - 1));
  console.log(`${label}: mean ${mean.toFixed(4)} (sd ${sd.toFixed(4)}, min ${Math.min(...accs).toFixed(4)}, max ${Math.max(...accs).toFixed(4)}), ${accs.filter((a) => a >= 0.95).length} of ${accs.length} at or above 0.95`);
  console.log(`  runs: ${accs.map((a) => a.toFixed(4)).join(' ')}`);
  return mean;
};
console.log(`WDBC, ${SITES} sites (training sizes ${train.map((t) => t.n).join(', ')}), ${rounds} rounds, record-level epsilon ${current.targetEpsilon} at delta 1e-5${noiseScale === 1 ? '' : ` (noise scaled by ${noiseScale}: not that epsilon)`}, ${runs} runs per recipe, pooled hold-out of ${hold.reduce((s, h) => s + h.n, 0)}`);
const base: number[] = [];
for (let i = 0; i < runs; i++) base.push(await study(previous));
const b = summary(`baseline, previous recipe ${JSON.stringify(previous)}`, base);
const cur: number[] = [];
for (let i = 0; i < runs; i++) cur.push(await study(current));
const c = summary(`current recipe ${JSON.stringify(current)}`, cur);
console.log(`mean accuracy ratio current / previous: ${(c / b).toFixed(4)}`);
