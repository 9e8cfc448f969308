/**
 * `cohort simulate [scenario.json]`: many virtual sites on this machine through the production coordinator,
 * strategies and site agents, with live progress, then a report folder (results.json, results.csv, sites.csv,
 * index.html).
 */
import { resolve } from 'node:path';
import { Option, type Command } from 'commander';
import * as tf from '@tensorflow/tfjs';
import { expandSweeps, loadScenarioRaw, parseAssignment, type Sweep } from '../simulations/scenario.ts';
import { simulate, type Progress, type SimulationResult } from '../simulations/simulate.ts';
import { writeReport } from '../simulations/report/results.ts';
import { progressBar } from './render.ts';

export interface SimulateFlags {
  sites?: string;
  rounds?: string;
  seed?: string;
  strategy?: string;
  workers?: string;
  set: string[];
  sweep: string[];
  out?: string;
  quiet?: boolean;
}

const collect = (v: string, prev: string[]) => [...prev, v];

/** Progress on stderr: one line rewritten in place on a terminal, a line per round otherwise. */
function progressPrinter(): (p: Progress) => void {
  const tty = process.stderr.isTTY;
  return (p) => {
    const head = `[${p.setting}/${p.settings}] ${p.label}`;
    const r = p.round;
    const metrics = r ? `  acc ${(100 * r.accuracy).toFixed(1)}%  auc ${r.auc === null ? '-' : r.auc.toFixed(3)}${Object.keys(r.failures).length ? `  ${Object.values(r.failures).reduce((a, b) => a + b, 0)} site failures` : ''}` : '';
    if (p.result) {
      const status = p.result.status === 'completed' ? 'done' : `FAILED ${p.result.error?.code ?? ''}`;
      const mia = p.result.membership?.auc;
      process.stderr.write(`${tty ? '\r\x1b[2K' : ''}${head}: ${status} in ${(p.result.durationMs / 1000).toFixed(1)} s${metrics}${mia !== undefined && mia !== null ? `  MIA AUC ${mia.toFixed(3)}` : ''}\n`);
      return;
    }
    const line = `${head}  ${progressBar(r?.round ?? 0, p.rounds, 20)}${metrics}`;
    process.stderr.write(tty ? `\r\x1b[2K${line}` : `${line}\n`);
  };
}

function summary(r: SimulationResult): string {
  const w = Math.max(7, ...r.settings.map((s) => s.label.length));
  const lines = [`${'setting'.padEnd(w)}  status     accuracy    AUC   MIA-AUC  epsilon  rounds   time`];
  for (const s of r.settings) {
    const f = s.final;
    lines.push([
      s.label.padEnd(w), (s.status === 'completed' ? 'completed' : 'FAILED').padEnd(9),
      (f ? `${(100 * f.accuracy).toFixed(1)}%` : '-').padStart(9), (f?.auc === null || f?.auc === undefined ? '-' : f.auc.toFixed(3)).padStart(6),
      (s.membership?.auc === null || s.membership?.auc === undefined ? '-' : s.membership.auc.toFixed(3)).padStart(8),
      (s.epsilon !== null ? s.epsilon.toFixed(2) : s.privacy.dp !== 'none' ? 'inf' : '-').padStart(7),
      String(s.rounds.length).padStart(7), `${(s.durationMs / 1000).toFixed(1)} s`.padStart(8),
    ].join('  ') + (s.error ? `  ${s.error.code}: ${s.error.message}` : ''));
    // Why sites said no (policy, budget, schema), when the setting failed.
    if (s.status !== 'completed') for (const [code, r] of Object.entries(s.refusals ?? {})) lines.push(`${' '.repeat(w)}  ${r.sites} site${r.sites === 1 ? '' : 's'} refused: ${code}: ${r.message}`);
  }
  return lines.join('\n');
}

/** Runs the command; resolves to the exit code (0: every setting completed, 1: some failed). */
export async function runSimulate(file: string | undefined, o: SimulateFlags, argv: string[] = process.argv): Promise<number> {
  // The coordinator builds models in this thread: no tfjs debug checks or console banner.
  tf.env().set('PROD', true);
  const sets: Sweep[] = o.set.map((s) => parseAssignment(s, false));
  if (o.sites !== undefined) sets.push({ key: 'sites', values: [Number(o.sites)] });
  if (o.rounds !== undefined) sets.push({ key: 'rounds', values: [Number(o.rounds)] });
  if (o.seed !== undefined) sets.push({ key: 'seed', values: [Number(o.seed)] });
  if (o.strategy !== undefined) sets.push({ key: 'strategy', values: [{ name: o.strategy }] });
  if (o.workers !== undefined) sets.push({ key: 'workers', values: [Number(o.workers)] });
  const sweeps = o.sweep.map((s) => parseAssignment(s, true));
  const { raw, baseDir } = loadScenarioRaw(file, sets);
  const settings = expandSweeps(raw, baseDir, sweeps);
  const name = settings[0]!.scenario.name;
  const out = resolve(o.out ?? `reports/${name.replace(/[^A-Za-z0-9._-]+/g, '-')}-${new Date().toISOString().slice(0, 19).replace(/[:T]/g, '')}`);
  const first = settings[0]!.scenario;
  const privacy = [first.privacy.secureAggregation === false ? 'no secure aggregation' : 'secure aggregation', ...(first.privacy.dp && first.privacy.dp.mode !== 'none' ? [`DP ${first.privacy.dp.mode}`] : [])].join(', ');
  process.stderr.write(`simulating "${name}": ${settings.length} setting${settings.length === 1 ? '' : 's'}, ${first.sites} sites, ${first.rounds} rounds, strategy ${first.strategy.name}, ${privacy}\n`);
  const result = await simulate(settings, { sweeps, ...(o.quiet ? {} : { onProgress: progressPrinter() }) });
  const command = ['cohort', ...argv.slice(2)].map((a) => (/[\s"']/.test(a) ? JSON.stringify(a) : a)).join(' ');
  const files = writeReport(out, result, { command });
  console.log(summary(result));
  console.log(`\nreport: ${files.find((f) => f.endsWith('index.html'))}  (also results.json, results.csv, sites.csv)`);
  return result.settings.every((s) => s.status === 'completed') ? 0 : 1;
}

export function registerSimulate(program: Command, example: (cmd: Command, text: string) => Command): void {
  example(program.command('simulate')
    .description('run many virtual sites through the real coordinator, strategies and site agents on this machine; sweep settings; write a report with plots')
    .argument('[scenario]', 'scenario JSON file (see examples/scenarios/ and docs/simulations.md); default: WDBC, 10 sites, FedAvg')
    .option('--sites <n>', 'number of virtual sites')
    .option('--rounds <n>', 'rounds')
    .option('--seed <n>', 'seed for the partition, model, shuffles, faults and attacks')
    .addOption(new Option('--strategy <name>', 'aggregation strategy (parameters via --set strategy.<param>=...); the robust ones (fedmedian, trimmed-mean, krum, multi-krum) need --set privacy.secureAggregation=false')
      .choices(['fedavg', 'fedavgm', 'fedprox', 'fedadam', 'fedyogi', 'fedadagrad', 'fedmedian', 'trimmed-mean', 'krum', 'multi-krum']))
    .option('--workers <n>', 'worker threads for the virtual sites (default: one per core)')
    .option('--set <key=value>', 'set any scenario field by its dotted path (repeatable), e.g. partition.kind=dirichlet or privacy.secureAggregation=false', collect, [])
    .option('--sweep <key=v1,v2,...>', 'run every value (repeatable; every combination), e.g. strategy.name=fedavg,fedmedian or dp.noiseMultiplier=0,1,4 (dp.* and secureAggregation stand for privacy.dp.* and privacy.secureAggregation)', collect, [])
    .option('--out <dir>', 'report folder (default: reports/<name>-<time>)')
    .option('--quiet', 'no live progress')
    .action(async (file: string | undefined, o: SimulateFlags) => {
      process.exitCode = await runSimulate(file, o);
    }), `cohort simulate examples/scenarios/sign-flip.json --sweep strategy.name=fedavg,fedmedian,krum --out reports/sign-flip

  More:
  cohort simulate examples/scenarios/dp-sweep.json --sweep dp.noiseMultiplier=0,1,4,16 --out reports/dp
  cohort simulate --sites 20 --rounds 15 --set partition.kind=dirichlet --set partition.alpha=0.3 --strategy fedprox
  cohort simulate examples/scenarios/wdbc-iid.json --sweep sites=5,20 --sweep strategy.name=fedavg,fedadam`);
}
