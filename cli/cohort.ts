/**
 * `cohort`: one binary, subcommands for every user. Run `cohort <command> --help` for details and an example.
 */
import { mkdirSync, writeFileSync, readFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { Command, Option } from 'commander';
import { createCoordinator } from '../coordinator/app.ts';
import { CohortError } from '../protocol/errors.ts';
import { api, apiBytes, ApiError } from './http.ts';
import { watchStudy } from './watch.ts';
import { siteInit, siteRun } from './site-commands.ts';
import { runDemo } from './demo.ts';

const DEFAULT_URL = process.env.COHORT_URL ?? 'http://127.0.0.1:8443';
const program = new Command();
program.name('cohort').description('Cohort: federated learning for hospitals').version('0.1.0').showHelpAfterError();

const example = (cmd: Command, text: string) => cmd.addHelpText('after', `\nExample:\n  ${text}\n`);
const coordinatorOpt = () => new Option('--coordinator <url>', 'coordinator URL (or COHORT_URL)').default(DEFAULT_URL);

example(program.command('coordinator')
  .description('start the coordinator (REST API and site connections on one port)')
  .option('--data-dir <dir>', 'where the store and checkpoints live', './coordinator-data')
  .option('--host <host>', 'interface to bind', '127.0.0.1')
  .option('--port <port>', 'port (0 picks a free one)', '8443')
  .addOption(new Option('--enrollment <mode>', 'open: register unknown sites on first contact; closed: refuse them').choices(['open', 'closed']).default('open'))
  .action(async (o: { dataDir: string; host: string; port: string; enrollment: 'open' | 'closed' }) => {
    const c = await createCoordinator({ dataDir: resolve(o.dataDir), host: o.host, port: Number(o.port), enrollment: o.enrollment });
    const url = await c.start();
    console.log(`cohort coordinator listening on ${url}`);
    const stop = async () => { await c.close(); process.exit(0); };
    process.once('SIGINT', () => void stop());
    process.once('SIGTERM', () => void stop());
  }), 'cohort coordinator --data-dir ./coord --port 8443');

const site = program.command('site').description('run a hospital site agent');
example(site.command('init')
  .description("create a site's identity key (mode 0600) and site.json")
  .requiredOption('--dir <dir>', 'site directory')
  .requiredOption('--name <name>', 'site name, e.g. "St Mary"')
  .addOption(coordinatorOpt())
  .option('--dataset <id>', 'register a CSV dataset under this id')
  .option('--csv <path>', 'the CSV file for --dataset')
  .option('--label <column>', 'the label column for --dataset')
  .action((o: { dir: string; name: string; coordinator: string; dataset?: string; csv?: string; label?: string }) => {
    const r = siteInit(o);
    console.log(`site initialised: ${r.configFile}\npublic key: ${r.publicKey}`);
  }), 'cohort site init --dir ./site --name "St Mary" --coordinator http://127.0.0.1:8443 --dataset wdbc --csv data/tabular/wdbc.csv --label malignant');
example(site.command('run')
  .description('run the agent: dial out, authenticate, train on local data when asked')
  .requiredOption('--dir <dir>', 'site directory')
  .option('--health-port <port>', 'serve GET /healthz on 127.0.0.1:<port>')
  .action(async (o: { dir: string; healthPort?: string }) => {
    await siteRun(o.dir, o.healthPort === undefined ? undefined : Number(o.healthPort));
  }), 'cohort site run --dir ./site --health-port 9464');

const study = program.command('study').description('create, run and inspect federated studies');
example(study.command('create')
  .description('create a study from a JSON manifest')
  .argument('<manifest>', 'manifest file')
  .addOption(coordinatorOpt())
  .action(async (file: string, o: { coordinator: string }) => {
    const manifest = JSON.parse(readFileSync(file, 'utf8')) as unknown;
    const r = await api<{ study: { id: string } }>(o.coordinator, '/api/studies', { method: 'POST', body: manifest });
    console.log(r.study.id);
  }), 'cohort study create examples/wdbc-study.json');
for (const verb of ['start', 'stop'] as const) {
  example(study.command(verb)
    .description(`${verb} a study`)
    .argument('<id>', 'study id')
    .addOption(coordinatorOpt())
    .action(async (id: string, o: { coordinator: string }) => {
      const r = await api<{ study: { id: string; status: string } }>(o.coordinator, `/api/studies/${encodeURIComponent(id)}/${verb}`, { method: 'POST' });
      console.log(`${r.study.id}: ${r.study.status}`);
    }), `cohort study ${verb} study-1a2b3c4d`);
}
example(study.command('list')
  .description('list studies')
  .addOption(coordinatorOpt())
  .action(async (o: { coordinator: string }) => {
    const r = await api<{ studies: { id: string; name: string; status: string; completedRounds: number; rounds: number }[] }>(o.coordinator, '/api/studies');
    if (r.studies.length === 0) console.log('no studies');
    for (const s of r.studies) console.log(`${s.id}  ${s.status.padEnd(9)}  ${s.completedRounds}/${s.rounds} rounds  ${s.name}`);
  }), 'cohort study list');
example(study.command('status')
  .description('show a study: rounds, pooled hold-out metrics, failures')
  .argument('<id>', 'study id')
  .option('--watch', 'refresh until the study ends')
  .option('--json', 'print the raw JSON')
  .addOption(coordinatorOpt())
  .action(async (id: string, o: { coordinator: string; watch?: boolean; json?: boolean }) => {
    await watchStudy(o.coordinator, id, { watch: o.watch ?? false, json: o.json ?? false });
  }), 'cohort study status study-1a2b3c4d --watch');
example(study.command('model')
  .description('download the global model (tfjs layers format: model.json + weights.bin)')
  .argument('<id>', 'study id')
  .requiredOption('--out <dir>', 'output directory')
  .addOption(coordinatorOpt())
  .action(async (id: string, o: { coordinator: string; out: string }) => {
    const base = `/api/studies/${encodeURIComponent(id)}/model`;
    const modelJson = await api<Record<string, unknown>>(o.coordinator, `${base}/model.json`);
    const weights = await apiBytes(o.coordinator, `${base}/weights.bin`);
    mkdirSync(o.out, { recursive: true });
    writeFileSync(join(o.out, 'model.json'), JSON.stringify(modelJson, null, 2));
    writeFileSync(join(o.out, 'weights.bin'), weights);
    console.log(`wrote ${join(o.out, 'model.json')} and weights.bin (${weights.byteLength} bytes)`);
  }), 'cohort study model study-1a2b3c4d --out ./model');

example(program.command('demo')
  .description('a coordinator and 3 site agents as separate processes on loopback, training on WDBC')
  .option('--rounds <n>', 'rounds', '10')
  .option('--sites <n>', 'site agents', '3')
  .option('--dir <dir>', 'working directory (default: a fresh temporary one)')
  .option('--keep', 'keep the coordinator and agents running after the study, until Ctrl-C')
  .action(async (o: { rounds: string; sites: string; dir?: string; keep?: boolean }) => {
    process.exitCode = await runDemo({ rounds: Number(o.rounds), sites: Number(o.sites), keep: o.keep ?? false, ...(o.dir ? { dir: o.dir } : {}) });
  }), 'cohort demo --rounds 10');

program.parseAsync(process.argv).catch((err: unknown) => {
  if (err instanceof CohortError || err instanceof ApiError) {
    console.error(`error ${err.code}: ${err.message}`);
    process.exit(err instanceof ApiError ? 2 : 3);
  }
  console.error(err instanceof Error ? err.message : String(err));
  process.exit(1);
});
