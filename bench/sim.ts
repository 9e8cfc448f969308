/**
 * `npm run bench:sim`: many virtual sites through the production coordinator and site agents on worker threads.
 *
 * Measures N virtual sites (default 1,000; logistic regression; FedAvg; 5 rounds; 20 WDBC rows drawn per site) and,
 * in the same run, the baseline of the same rows, rounds and model at 10 sites, so the ratio is the cost of
 * spreading the data over many sites (per-site tasks, schema checks, policy, (de)serialisation, aggregation).
 * Also trains the same rows centrally (one model, as many epochs as rounds) for scale.
 *
 *   npm run bench:sim -- --sites 1000 --rounds 5 --rows 20
 */
import { parseArgs } from 'node:util';
import * as tf from '@tensorflow/tfjs';
import { expandSweeps } from '../simulations/scenario.ts';
import { simulate } from '../simulations/simulate.ts';
import { loadTable } from '../simulations/dataset.ts';
import { partitionRows } from '../simulations/partition.ts';
import { MatrixSource } from '../simulations/matrix-source.ts';
import { train } from '../site-agent/training/trainer.ts';
import { buildModel, getWeights } from '../protocol/models.ts';
import { selectBackend } from '../site-agent/training/backends.ts';
import { BUNDLED_WDBC } from '../simulations/scenario.ts';

const { values } = parseArgs({ options: { sites: { type: 'string', default: '1000' }, rounds: { type: 'string', default: '5' }, rows: { type: 'string', default: '20' }, workers: { type: 'string' } } });
const sites = Number(values.sites);
const rounds = Number(values.rounds);
const rows = Number(values.rows);
tf.env().set('PROD', true);

/** Peak resident memory of this process (main thread and every worker thread), sampled every 100 ms. */
function memoryWatch(): () => number {
  let peak = process.memoryUsage().rss;
  const t = setInterval(() => { peak = Math.max(peak, process.memoryUsage().rss); }, 100);
  return () => {
    clearInterval(t);
    return Math.max(peak, process.memoryUsage().rss);
  };
}

async function run(n: number, rowsPerSite: number) {
  const settings = expandSweeps({
    name: `bench ${n} sites`, sites: n, rounds, seed: 1,
    partition: { kind: 'sample', rowsPerSite },
    training: { localEpochs: 1, batchSize: 16, optimizer: 'sgd', learningRate: 0.1 },
    strategy: { name: 'fedavg' }, membershipInference: false,
    ...(values.workers ? { workers: Number(values.workers) } : {}),
  }, process.cwd(), []);
  const stop = memoryWatch();
  const t0 = performance.now();
  let last = t0;
  const perRound: number[] = [];
  const r = await simulate(settings, {
    onProgress: (p) => {
      if (!p.round || p.result) return;
      const now = performance.now();
      perRound.push(now - last);
      last = now;
      process.stderr.write(`  ${n} sites: round ${p.round.round}/${rounds}  acc ${(100 * p.round.accuracy).toFixed(1)}%  ${((now - t0) / 1000).toFixed(1)} s\n`);
    },
  });
  const wall = performance.now() - t0;
  const s = r.settings[0]!;
  if (s.status !== 'completed') throw new Error(`${n} sites: ${s.error?.code} ${s.error?.message}`);
  return { wall, peakRss: stop(), perRound, accuracy: s.final!.accuracy, auc: s.final!.auc, tasks: s.injected.tasks, workers: r.workers };
}

async function centralized(totalRows: number) {
  await selectBackend();
  const table = await loadTable({ csv: BUNDLED_WDBC, label: 'malignant', exclude: [], categorical: [] });
  const idx = partitionRows({ kind: 'sample', rowsPerSite: totalRows }, { n: table.n, labels: table.y, numClasses: 2, sites: 1, seed: 1 })[0]!.rows;
  const x = new Float64Array(idx.length * table.width);
  idx.forEach((r, k) => x.set(table.x.subarray(r * table.width, (r + 1) * table.width), k * table.width));
  const src = new MatrixSource({ label: 'malignant', features: table.features, classes: table.classes, width: table.width, x, y: Int32Array.from(idx, (r) => table.y[r]!), rowIds: idx }, { holdoutFraction: 0.25, seed: 1 });
  const data = src.loadSync('train');
  const model = { spec: { template: 'logreg' as const, l2: 0 }, inputShape: [table.width], numClasses: 2 };
  const m = buildModel(model, 1);
  const w = getWeights(m);
  m.dispose();
  const t0 = performance.now();
  await train(model, w, data, { epochs: rounds, batchSize: 16, optimizer: 'sgd', learningRate: 0.1, seed: 1 });
  return performance.now() - t0;
}

const mb = (b: number) => `${(b / 1024 / 1024).toFixed(0)} MiB`;
const sec = (ms: number) => `${(ms / 1000).toFixed(1)} s`;

console.log(`bench:sim: ${sites} virtual sites x ${rows} WDBC rows (drawn with replacement), logistic regression, FedAvg, ${rounds} rounds`);
const many = await run(sites, rows);
const baseSites = 10;
const few = await run(baseSites, Math.round((sites * rows) / baseSites));
const central = await centralized(sites * rows);

console.log('');
console.log(`  ${String(sites).padStart(5)} sites: ${sec(many.wall).padStart(8)} total, ${sec(many.wall / rounds)} per round (incl. start-up and schema check), ${many.tasks} tasks, peak RSS ${mb(many.peakRss)}, ${many.workers} worker threads, final accuracy ${(100 * many.accuracy).toFixed(1)}%`);
console.log(`  ${String(baseSites).padStart(5)} sites: ${sec(few.wall).padStart(8)} total (same ${sites * rows} rows, rounds and model), peak RSS ${mb(few.peakRss)}, final accuracy ${(100 * few.accuracy).toFixed(1)}%`);
console.log(`  centralized: ${sec(central).padStart(6)} to train the same rows for ${rounds} epochs in one model`);
console.log('');
console.log(`  ${sites} sites vs ${baseSites} sites: ${(many.wall / few.wall).toFixed(1)}x the time; ${((many.wall - few.wall) / (many.tasks - few.tasks)).toFixed(2)} ms per extra site task`);
console.log(`  per-round times at ${sites} sites (s): ${many.perRound.map((t) => (t / 1000).toFixed(1)).join(', ')}`);
console.log(`  target: ${sites} sites x ${rounds} rounds in < 300 s: ${many.wall < 300_000 ? 'met' : 'NOT met'} (${sec(many.wall)})`);
