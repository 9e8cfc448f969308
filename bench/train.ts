/**
 * `npm run bench:train`: local training speed of the three reference models with Adam and batch 32, on every
 * backend that loads here, against PyTorch (one thread) on the same models, data and number of steps.
 *
 *   wdbc-mlp    WDBC (data/tabular/wdbc.csv, standardised), MLP 30-32-16-1            (template mlp)
 *   digits-cnn  digits (data/images/digits/digits.csv), conv16-pool-conv32-dense64-10  (template cnn-small)
 *   cnn64       synthetic 64x64x1 images, three conv+pool blocks (16, 32, 64), dense 64 (template cnn)
 *
 * Paths, each measured in its own process (tfjs's backend and kernel registry are process-wide):
 *   stock   `model.fit` on the backend as tfjs ships it (no Cohort kernels): the in-run baseline
 *   fit     `model.fit` with Cohort's wasm kernels (wasm only): what the kernels alone give
 *   cohort  `train()` from site-agent/training/trainer.ts: what a site runs
 * PyTorch runs bench/train_torch.py under `python3` or `/usr/bin/python3`, whichever imports torch.
 * Every figure is the best of `--repeats` runs (default 3) of the same number of steps after a warm-up, so a
 * busy machine hurts both sides alike (PyTorch runs before and after the tfjs runs); ratios compare figures of the
 * same run.
 *
 * Options: --quick (fewer steps), --repeats N, --models a,b, --backends wasm,cpu,tensorflow, --json FILE
 * (default reports/bench-train.json).
 */
import { spawn, spawnSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

const ROOT = join(dirname(fileURLToPath(import.meta.url)), '..');
const BATCH = 32;
const LEARNING_RATE = 0.001;

interface ModelCase {
  name: 'wdbc-mlp' | 'digits-cnn' | 'cnn64';
  spec: unknown;
  inputShape: number[];
  classes: number;
  /** Measured steps (of 32 examples) and warm-up steps. */
  steps: number;
  warmup: number;
}

const MODELS: ModelCase[] = [
  { name: 'wdbc-mlp', spec: { template: 'mlp', hidden: [32, 16] }, inputShape: [30], classes: 2, steps: 400, warmup: 40 },
  { name: 'digits-cnn', spec: { template: 'cnn-small' }, inputShape: [8, 8, 1], classes: 10, steps: 300, warmup: 30 },
  { name: 'cnn64', spec: { template: 'cnn', blocks: [{ filters: 16 }, { filters: 32 }, { filters: 64 }], dense: [64] }, inputShape: [64, 64, 1], classes: 2, steps: 24, warmup: 4 },
];

type Path = 'stock' | 'fit' | 'cohort';
type Backend = 'tensorflow' | 'wasm' | 'cpu';

interface Measurement {
  model: ModelCase['name'];
  backend: Backend | 'pytorch';
  path: Path | 'torch';
  samplesPerSec?: number;
  steps?: number;
  error?: string;
  note?: string;
}

// ---------------------------------------------------------------- data (identical rows for tfjs and PyTorch)

interface Dataset { x: Float32Array; y: Int32Array; n: number }

function readCsv(file: string): { rows: number[][]; labels: string[] } {
  const lines = readFileSync(file, 'utf8').trim().split('\n').slice(1);
  const rows: number[][] = [];
  const labels: string[] = [];
  for (const line of lines) {
    const cells = line.split(',');
    labels.push(cells.pop()!);
    rows.push(cells.map(Number));
  }
  return { rows, labels };
}

function wdbc(): Dataset {
  const { rows, labels } = readCsv(join(ROOT, 'data', 'tabular', 'wdbc.csv'));
  const width = rows[0]!.length;
  const mean = new Array<number>(width).fill(0), sd = new Array<number>(width).fill(0);
  for (const r of rows) r.forEach((v, j) => { mean[j]! += v / rows.length; });
  for (const r of rows) r.forEach((v, j) => { sd[j]! += (v - mean[j]!) ** 2 / rows.length; });
  const x = Float32Array.from(rows.flatMap((r) => r.map((v, j) => (v - mean[j]!) / (Math.sqrt(sd[j]!) || 1))));
  return { x, y: Int32Array.from(labels, Number), n: rows.length };
}

function digits(): Dataset {
  const { rows, labels } = readCsv(join(ROOT, 'data', 'images', 'digits', 'digits.csv'));
  return { x: Float32Array.from(rows.flatMap((r) => r.map((v) => v / 16))), y: Int32Array.from(labels, Number), n: rows.length };
}

/** 256 synthetic 64x64 images: noise plus a bright square whose corner says the class (so the task is learnable). */
function synthetic64(): Dataset {
  const n = 256, side = 64;
  let s = 12345;
  const rand = () => ((s = (Math.imul(s, 1103515245) + 12345) >>> 0) / 4294967296);
  const x = new Float32Array(n * side * side);
  const y = new Int32Array(n);
  for (let i = 0; i < n; i++) {
    y[i] = i % 2;
    for (let p = 0; p < side * side; p++) x[i * side * side + p] = rand() * 0.5;
    const o = y[i] ? 40 : 8;
    for (let r = o; r < o + 16; r++) for (let c = o; c < o + 16; c++) x[i * side * side + r * side + c]! += 0.5;
  }
  return { x, y, n };
}

function datasetOf(name: ModelCase['name']): Dataset {
  return name === 'wdbc-mlp' ? wdbc() : name === 'digits-cnn' ? digits() : synthetic64();
}

/** `steps` batches of data, cycling through the dataset (a site's epoch is this, shuffled). */
function stepsOf(d: Dataset, width: number, steps: number): Dataset {
  const n = steps * BATCH;
  const x = new Float32Array(n * width), y = new Int32Array(n);
  for (let i = 0; i < n; i++) {
    const src = i % d.n;
    x.set(d.x.subarray(src * width, (src + 1) * width), i * width);
    y[i] = d.y[src]!;
  }
  return { x, y, n };
}

// ---------------------------------------------------------------- worker: one backend, one path

async function worker(backend: Backend, path: Path, models: ModelCase[], repeats: number): Promise<void> {
  const tf = await import('@tensorflow/tfjs');
  const { buildModel, lossName } = await import('../protocol/models.ts');
  const { ModelSpecSchema } = await import('../protocol/messages.ts');
  const { selectBackend } = await import('../site-agent/training/backends.ts');
  const { train } = await import('../site-agent/training/trainer.ts');
  if (path !== 'stock') {
    const got = await selectBackend(backend);
    if (got !== backend) throw new Error(`backend ${backend} does not load here (got ${got})`);
  } else {
    // tfjs as shipped: no Cohort kernels, no custom loop.
    if (backend === 'wasm') await import('@tensorflow/tfjs-backend-wasm');
    if (backend === 'tensorflow') await import(['@tensorflow', 'tfjs-node'].join('/'));
    if (!(await tf.setBackend(backend))) throw new Error(`backend ${backend} does not load here`);
    await tf.ready();
  }
  // Pure-JS cpu is slow: cap each run's time instead of its steps there.
  const budgetMs = backend === 'cpu' ? 6000 : Infinity;
  for (const m of models) {
    const resolved = { spec: ModelSpecSchema.parse(m.spec), inputShape: m.inputShape, numClasses: m.classes };
    const width = m.inputShape.reduce((a, b) => a * b, 1);
    const full = datasetOf(m.name);
    const out: Measurement = { model: m.name, backend, path };
    try {
      const runSteps = async (steps: number): Promise<number> => {
        const d = stepsOf(full, width, steps);
        const started = performance.now();
        if (path === 'cohort') {
          const model = buildModel(resolved, 1);
          const global = model.getWeights().map((w) => ({ shape: [...w.shape], data: w.dataSync() as Float32Array }));
          model.dispose();
          await train(resolved, global, { ...d, inputShape: m.inputShape, classes: [] }, { epochs: 1, batchSize: BATCH, optimizer: 'adam', learningRate: LEARNING_RATE, seed: 1 });
        } else {
          const model = buildModel(resolved, 1);
          model.compile({ optimizer: tf.train.adam(LEARNING_RATE), loss: lossName(m.classes) });
          const x = tf.tensor(d.x, [d.n, ...m.inputShape]);
          const y = m.classes === 2 ? tf.tensor2d(Float32Array.from(d.y), [d.n, 1]) : tf.tensor1d(Float32Array.from(d.y));
          await model.fit(x, y, { epochs: 1, batchSize: BATCH, shuffle: true, verbose: 0 });
          tf.dispose([x, y]);
          model.dispose();
        }
        return performance.now() - started;
      };
      // Under a time budget (the cpu backend) a one-step probe sizes a single timed run; a probe that already
      // spends the budget is the measurement. Otherwise: warm-up, then the best of `repeats` runs.
      let steps = m.steps;
      let best = 0;
      if (Number.isFinite(budgetMs)) {
        const probeMs = await runSteps(1);
        steps = Math.min(m.steps, Math.floor(budgetMs / probeMs));
        if (steps < 2) {
          steps = 1;
          best = BATCH / (probeMs / 1000);
        } else {
          best = (steps * BATCH) / ((await runSteps(steps)) / 1000);
        }
      } else {
        await runSteps(m.warmup);
        for (let r = 0; r < repeats; r++) best = Math.max(best, (steps * BATCH) / ((await runSteps(steps)) / 1000));
      }
      out.samplesPerSec = best;
      out.steps = steps;
      if (steps < m.steps) out.note = `${steps} steps (time-capped)`;
    } catch (e) {
      out.error = (e instanceof Error ? e.message : String(e)).split('\n')[0]!.slice(0, 160);
    }
    process.stdout.write(`${JSON.stringify(out)}\n`);
  }
}

// ---------------------------------------------------------------- PyTorch

function findTorchPython(): { python: string; version: string } | undefined {
  for (const python of ['python3', '/usr/bin/python3']) {
    const r = spawnSync(python, ['-c', 'import torch; print(torch.__version__)'], { encoding: 'utf8' });
    if (r.status === 0) return { python, version: r.stdout.trim() };
  }
  return undefined;
}

async function runTorch(python: string, models: ModelCase[], repeats: number, dir: string): Promise<Measurement[]> {
  const jobs = models.map((m) => {
    const width = m.inputShape.reduce((a, b) => a * b, 1);
    const d = datasetOf(m.name);
    const file = join(dir, `${m.name}.f32`);
    const buf = new Float32Array(d.n * width + d.n);
    buf.set(d.x, 0);
    buf.set(Float32Array.from(d.y), d.n * width);
    writeFileSync(file, Buffer.from(buf.buffer));
    return { name: m.name, inputShape: m.inputShape, classes: m.classes, n: d.n, data: file, steps: m.steps, warmup: m.warmup, batchSize: BATCH, learningRate: LEARNING_RATE, repeats };
  });
  const out = await collect(python, [join(ROOT, 'bench', 'train_torch.py')], JSON.stringify(jobs));
  return out.map((r) => {
    const o = r as { name: ModelCase['name']; samplesPerSec: number; steps: number };
    return { model: o.name, backend: 'pytorch', path: 'torch', samplesPerSec: o.samplesPerSec, steps: o.steps, note: '1 thread' };
  });
}

/** Runs a command, feeds it `input`, returns its stdout JSON lines (progress to stderr as they come). */
function collect(cmd: string, args: string[], input = '', env: NodeJS.ProcessEnv = process.env): Promise<unknown[]> {
  return new Promise((resolve) => {
    const child = spawn(cmd, args, { cwd: ROOT, env, stdio: ['pipe', 'pipe', 'pipe'] });
    const lines: unknown[] = [];
    let buf = '';
    let err = '';
    child.stdout.on('data', (chunk: Buffer) => {
      buf += chunk.toString();
      let i;
      while ((i = buf.indexOf('\n')) >= 0) {
        const line = buf.slice(0, i).trim();
        buf = buf.slice(i + 1);
        if (!line.startsWith('{')) continue;
        const row = JSON.parse(line) as Measurement;
        lines.push(row);
        const what = row.samplesPerSec ? `${fmt(row.samplesPerSec)} samples/s` : (row.error ?? '');
        process.stderr.write(`  ${String(row.model ?? (row as { name?: string }).name).padEnd(11)} ${String(row.backend ?? 'pytorch').padEnd(10)} ${String(row.path ?? 'torch').padEnd(7)} ${what}\n`);
      }
    });
    child.stderr.on('data', (chunk: Buffer) => { err += chunk.toString(); });
    child.on('close', (code) => {
      if (code !== 0 && lines.length === 0) process.stderr.write(`  ${cmd} ${args.join(' ')} failed: ${err.split('\n').filter((l) => /Error|error/.test(l))[0] ?? `exit ${code}`}\n`);
      resolve(lines);
    });
    child.stdin.end(input);
  });
}

// ---------------------------------------------------------------- main

function arg(name: string): string | undefined {
  const i = process.argv.indexOf(`--${name}`);
  return i >= 0 ? process.argv[i + 1] : undefined;
}

function fmt(v: number | undefined): string {
  if (v === undefined) return '-';
  return v >= 100 ? v.toFixed(0) : v >= 1 ? v.toFixed(1) : v.toFixed(2);
}

function ratio(v: number): string {
  return v >= 0.1 ? `${v.toFixed(2)}x` : `${v.toFixed(4)}x`;
}

async function main(): Promise<void> {
  const quick = process.argv.includes('--quick');
  const repeats = Number(arg('repeats') ?? (quick ? 1 : 3));
  const wanted = arg('models')?.split(',');
  const models = MODELS.filter((m) => !wanted || wanted.includes(m.name)).map((m) => (quick ? { ...m, steps: Math.ceil(m.steps / 4), warmup: Math.ceil(m.warmup / 2) } : m));
  const backends = (arg('backends')?.split(',') ?? ['tensorflow', 'wasm', 'cpu']) as Backend[];
  const jsonFile = arg('json') ?? join(ROOT, 'reports', 'bench-train.json');
  const started = Date.now();
  const load = (await import('node:os')).loadavg()[0]!;
  console.log(`bench:train  batch ${BATCH}, Adam lr ${LEARNING_RATE}, best of ${repeats}; ${(await import('node:os')).cpus().length} cores, load ${load.toFixed(1)}`);
  const results: Measurement[] = [];
  const dir = mkdtempSync(join(tmpdir(), 'cohort-bench-train-'));
  try {
    const torch = findTorchPython();
    // PyTorch runs before and after the tfjs runs and keeps its best: on a shared machine the load drifts.
    const torchRuns: Measurement[][] = [];
    const runTorchOnce = async () => {
      if (!torch) return;
      console.error(`PyTorch ${torch.version} (${torch.python}), 1 thread`);
      torchRuns.push(await runTorch(torch.python, models, repeats, dir));
    };
    if (!torch) console.error('PyTorch not found (neither python3 nor /usr/bin/python3 imports torch; Debian: apt-get install python3-torch): no ratio to PyTorch');
    await runTorchOnce();
    const modelArg = models.map((m) => m.name).join(',');
    for (const backend of backends) {
      for (const path of (backend === 'wasm' ? ['stock', 'fit', 'cohort'] : ['stock', 'cohort']) as Path[]) {
        console.error(`tfjs ${backend} ${path}`);
        const rows = await collect(process.execPath, [join(ROOT, 'bin', 'run-ts.js'), join(ROOT, 'bench', 'train.ts'), '--worker', backend, path, '--models', modelArg, '--repeats', String(repeats), ...(quick ? ['--quick'] : [])]);
        results.push(...(rows as Measurement[]));
      }
    }
    await runTorchOnce();
    for (const m of models) {
      const runs = torchRuns.flat().filter((r) => r.model === m.name);
      const best = runs.reduce<Measurement | undefined>((a, r) => ((r.samplesPerSec ?? 0) > (a?.samplesPerSec ?? 0) ? r : a), undefined);
      if (best) results.unshift({ ...best, note: `1 thread, best of ${runs.length * repeats}` });
    }
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
  report(results, models);
  mkdirSync(dirname(jsonFile), { recursive: true });
  writeFileSync(jsonFile, `${JSON.stringify({ date: new Date().toISOString(), load, repeats, batch: BATCH, learningRate: LEARNING_RATE, seconds: (Date.now() - started) / 1000, results }, null, 2)}\n`);
  console.log(`\nJSON: ${jsonFile}`);
}

function report(all: Measurement[], models: ModelCase[]): void {
  // A backend that does not load (tfjs-node not installed) is one line under the table, not a row per model.
  const absent = new Map<string, string>();
  for (const b of ['tensorflow', 'wasm', 'cpu']) {
    const rows = all.filter((r) => r.backend === b);
    if (rows.length && rows.every((r) => r.error && /does not load|Cannot find package/.test(r.error))) absent.set(b, rows[0]!.error!);
  }
  const results = all.filter((r) => !absent.has(r.backend));
  const find = (model: string, backend: string, path: string) => results.find((r) => r.model === model && r.backend === backend && r.path === path);
  console.log('\n| model | backend | path | samples/s | vs PyTorch 1 thread | vs stock tfjs, same backend | |');
  console.log('| --- | --- | --- | ---: | ---: | ---: | --- |');
  for (const m of models) {
    const torch = find(m.name, 'pytorch', 'torch')?.samplesPerSec;
    const top = Math.max(...results.filter((r) => r.model === m.name).map((r) => r.samplesPerSec ?? 0));
    for (const r of results.filter((x) => x.model === m.name)) {
      const stock = r.path !== 'stock' && r.path !== 'torch' ? find(m.name, r.backend, 'stock') : undefined;
      const bar = r.samplesPerSec ? '#'.repeat(Math.max(1, Math.round((20 * r.samplesPerSec) / top))) : '';
      const vsTorch = r.samplesPerSec && torch && r.path !== 'torch' ? ratio(r.samplesPerSec / torch) : '';
      const vsStock = stock?.samplesPerSec && r.samplesPerSec ? `${(r.samplesPerSec / stock.samplesPerSec).toFixed(1)}x` : stock?.error ? 'stock fails' : '';
      const value = r.samplesPerSec ? fmt(r.samplesPerSec) : `fails: ${r.error ?? '?'}`;
      console.log(`| ${m.name} | ${r.backend} | ${r.path} | ${value}${r.note ? ` (${r.note})` : ''} | ${vsTorch} | ${vsStock} | \`${bar}\` |`);
    }
  }
  for (const [b, why] of absent) console.log(`\n${b}: not measured, it does not load here (${why})`);
}

if (process.argv.includes('--worker')) {
  const i = process.argv.indexOf('--worker');
  const backend = process.argv[i + 1] as Backend;
  const path = process.argv[i + 2] as Path;
  const wanted = arg('models')?.split(',');
  const quick = process.argv.includes('--quick');
  const models = MODELS.filter((m) => !wanted || wanted.includes(m.name)).map((m) => (quick ? { ...m, steps: Math.ceil(m.steps / 4), warmup: Math.ceil(m.warmup / 2) } : m));
  worker(backend, path, models, Number(arg('repeats') ?? 3)).catch((e: unknown) => {
    for (const m of models) process.stdout.write(`${JSON.stringify({ model: m.name, backend, path, error: (e instanceof Error ? e.message : String(e)).slice(0, 160) })}\n`);
  });
} else {
  await main();
}
