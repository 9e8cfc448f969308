/**
 * `npm run bench:sim`: many virtual sites through the production coordinator and site agents on worker threads,
 * with and without secure aggregation.
 *
 * Measures, each configuration in its own process (so each peak RSS is its own):
 *   secagg    N virtual sites (default 1,000; logistic regression; FedAvg; 5 rounds; 20 WDBC rows drawn per site)
 *             under secure aggregation (SecAgg+, the production default: at 1,000 sites a random k-regular
 *             neighbour graph, k = 34): the target is 5 rounds in under 5 minutes
 *   plain     the same sites, rows, rounds and model without secure aggregation: the baseline of the secagg run
 *   10 sites  the same rows spread over 10 sites, plain: the baseline of the plain run (the cost of many sites)
 * and trains the same rows centrally (one model, as many epochs as rounds) for scale.
 *
 * Times are wall clock (first round includes start-up and the schema check) and the process's CPU time over all
 * threads, which is what the work costs when other jobs compete for the cores.
 *
 *   npm run bench:sim -- --sites 1000 --rounds 5 --rows 20 [--workers 2]
 */
import { execFile } from 'node:child_process';
import { availableParallelism, cpus, loadavg } from 'node:os';
import { promisify } from 'node:util';
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

const { values } = parseArgs({
  options: {
    sites: { type: 'string', default: '1000' }, rounds: { type: 'string', default: '5' }, rows: { type: 'string', default: '20' }, workers: { type: 'string' },
    // Internal: run one configuration and print its JSON (the parent starts one process per configuration).
    one: { type: 'string' },
  },
});
const sites = Number(values.sites);
const rounds = Number(values.rounds);
const rows = Number(values.rows);
tf.env().set('PROD', true);

interface Measured {
  label: string;
  sites: number;
  wallMs: number;
  cpuMs: number;
  peakRss: number;
  perRoundMs: number[];
  accuracy: number;
  tasks: number;
  workers: number;
  degree: number | null;
  threshold: number | null;
}

/** Peak resident memory of this process (main thread and every worker thread), sampled every 100 ms. */
function memoryWatch(): () => number {
  let peak = process.memoryUsage().rss;
  const t = setInterval(() => { peak = Math.max(peak, process.memoryUsage().rss); }, 100);
  return () => {
    clearInterval(t);
    return Math.max(peak, process.memoryUsage().rss);
  };
}

async function measure(label: string, n: number, rowsPerSite: number, secure: boolean): Promise<Measured> {
  const settings = expandSweeps({
    name: `bench ${label}`, sites: n, rounds, seed: 1,
    partition: { kind: 'sample', rowsPerSite },
    training: { localEpochs: 1, batchSize: 16, optimizer: 'sgd', learningRate: 0.1 },
    strategy: { name: 'fedavg' }, membershipInference: false,
    privacy: { secureAggregation: secure },
    ...(values.workers ? { workers: Number(values.workers) } : {}),
  }, process.cwd(), []);
  const stop = memoryWatch();
  const cpu0 = process.cpuUsage();
  const t0 = performance.now();
  let last = t0;
  const perRoundMs: number[] = [];
  const r = await simulate(settings, {
    onProgress: (p) => {
      if (!p.round || p.result) return;
      const now = performance.now();
      perRoundMs.push(now - last);
      last = now;
      process.stderr.write(`  ${label}: round ${p.round.round}/${rounds}  acc ${(100 * p.round.accuracy).toFixed(1)}%  ${((now - t0) / 1000).toFixed(1)} s\n`);
    },
  });
  const wallMs = performance.now() - t0;
  const cpu = process.cpuUsage(cpu0);
  const s = r.settings[0]!;
  if (s.status !== 'completed') throw new Error(`${label}: ${s.error?.code} ${s.error?.message}`);
  const sa = s.rounds.at(-1)?.secureAggregation;
  return {
    label, sites: n, wallMs, cpuMs: (cpu.user + cpu.system) / 1000, peakRss: stop(), perRoundMs, accuracy: s.final!.accuracy,
    tasks: s.injected.tasks, workers: r.workers, degree: sa?.degree ?? null, threshold: sa?.threshold ?? null,
  };
}

async function centralized(totalRows: number): Promise<number> {
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

const CONFIGS: Record<string, () => Promise<Measured>> = {
  secagg: () => measure(`${sites} sites, secure aggregation`, sites, rows, true),
  plain: () => measure(`${sites} sites, plain`, sites, rows, false),
  few: () => measure('10 sites, plain', 10, Math.round((sites * rows) / 10), false),
};

if (values.one) {
  const run = CONFIGS[values.one];
  if (!run) throw new Error(`unknown configuration ${values.one}`);
  console.log(JSON.stringify(await run()));
  process.exit(0);
}

const exec = promisify(execFile);
async function inChild(name: string): Promise<Measured> {
  const args = [process.argv[1]!, '--one', name, '--sites', String(sites), '--rounds', String(rounds), '--rows', String(rows), ...(values.workers ? ['--workers', values.workers] : [])];
  const child = exec(process.execPath, [new URL('../bin/run-ts.js', import.meta.url).pathname, ...args], { maxBuffer: 1 << 24, timeout: 30 * 60_000 });
  child.child.stderr?.pipe(process.stderr);
  const { stdout } = await child;
  return JSON.parse(stdout.trim().split('\n').at(-1)!) as Measured;
}

const mb = (b: number) => `${(b / 1024 / 1024).toFixed(0)} MiB`;
const sec = (ms: number) => `${(ms / 1000).toFixed(1)} s`;
const x = (a: number, b: number) => `${(a / b).toFixed(2)}x`;

console.log(`bench:sim: ${sites} virtual sites x ${rows} WDBC rows (drawn with replacement), logistic regression, FedAvg, ${rounds} rounds; ${availableParallelism()} cores (${cpus()[0]?.model ?? '?'}), load average ${loadavg().map((l) => l.toFixed(1)).join(' ')}`);
const secure = await inChild('secagg');
const plain = await inChild('plain');
const few = await inChild('few');
const central = await centralized(sites * rows);

const line = (m: Measured) => `  ${m.label.padEnd(34)} ${sec(m.wallMs).padStart(8)} wall, ${sec(m.cpuMs).padStart(8)} CPU, ${sec(m.wallMs / rounds)} per round, ${String(m.tasks).padStart(6)} tasks, peak RSS ${mb(m.peakRss)}, final accuracy ${(100 * m.accuracy).toFixed(1)}%`;
console.log('');
console.log(line(secure));
console.log(line(plain));
console.log(line(few));
console.log(`  ${'centralized, same rows'.padEnd(34)} ${sec(central).padStart(8)} to train ${sites * rows} rows for ${rounds} epochs in one model`);
console.log('');
console.log(`  secure aggregation at ${sites} sites: neighbour degree k = ${secure.degree}, threshold ${secure.threshold} of ${(secure.degree ?? 0) + 1}; ${x(secure.wallMs, plain.wallMs)} the plain run's wall time, ${x(secure.cpuMs, plain.cpuMs)} its CPU time`);
console.log(`  plain at ${sites} sites vs 10 sites: ${x(plain.wallMs, few.wallMs)} the time; ${((plain.wallMs - few.wallMs) / (plain.tasks - few.tasks)).toFixed(2)} ms per extra site task`);
console.log(`  per-round times at ${sites} sites (s), secure: ${secure.perRoundMs.map((t) => (t / 1000).toFixed(1)).join(', ')}; plain: ${plain.perRoundMs.map((t) => (t / 1000).toFixed(1)).join(', ')}`);
console.log(`  target: ${sites} sites with secure aggregation x ${rounds} rounds in < 300 s: ${secure.wallMs < 300_000 ? 'met' : 'NOT met'} (${sec(secure.wallMs)})`);
console.log(`\nRESULT sim sites=${sites} rounds=${rounds} secagg_s=${(secure.wallMs / 1000).toFixed(1)} plain_s=${(plain.wallMs / 1000).toFixed(1)} secagg_vs_plain=${(secure.wallMs / plain.wallMs).toFixed(2)} plain_vs_10_sites=${(plain.wallMs / few.wallMs).toFixed(2)} secagg_peak_rss_mb=${(secure.peakRss / 1048576).toFixed(0)} plain_peak_rss_mb=${(plain.peakRss / 1048576).toFixed(0)} target_met=${secure.wallMs < 300_000}`);
