/**
 * `cohort`: one binary, subcommands for every user. Run `cohort <command> --help` for details and an example.
 */
import { readFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { Command, Option } from 'commander';
import { createCoordinator } from '../coordinator/app.ts';
import { loadTlsFiles } from '../coordinator/tls.ts';
import { CohortError } from '../protocol/errors.ts';
import { keyFingerprint } from '../protocol/signing.ts';
import { Approvals } from '../site-agent/approvals.ts';
import { loadSiteConfig, resolveIn } from '../site-agent/config.ts';
import { loadIdentity } from '../site-agent/keys.ts';
import { readLedger, verifyLedger } from '../site-agent/ledger.ts';
import { api, ApiError } from './http.ts';
import { downloadModel } from './study-model.ts';
import { createResearcherKey, loadResearcherKey, signedStudyRequest } from './researcher.ts';
import { siteInit, siteRun } from './site-commands.ts';
import { datasetAdd, datasetList, formatSchema, type DatasetAddOptions } from './dataset-commands.ts';
import { watchStudy } from './watch.ts';
import { runDemo, type DemoDpMode } from './demo.ts';
import { registerSimulate } from './simulate.ts';

// `cohort site audit | head` must not crash when the reader goes away.
process.stdout.on('error', (e: NodeJS.ErrnoException) => {
  if (e.code === 'EPIPE') process.exit(0);
  throw e;
});

const DEFAULT_URL = process.env.COHORT_URL ?? 'http://127.0.0.1:8443';
const program = new Command();
program.name('cohort').description('Cohort: federated learning for hospitals').version('0.1.0').showHelpAfterError();

const example = (cmd: Command, text: string) => cmd.addHelpText('after', `\nExample:\n  ${text}\n`);
const coordinatorOpt = () => new Option('--coordinator <url>', 'coordinator URL (or COHORT_URL)').default(DEFAULT_URL);
const tokenOpt = () => new Option('--token <token>', 'API token (or COHORT_TOKEN)');
const tokenOf = (o: { token?: string }) => o.token ?? process.env.COHORT_TOKEN;
interface Remote { coordinator: string; token?: string }

example(program.command('coordinator')
  .description('start the coordinator (REST API and site connections on one port)')
  .option('--data-dir <dir>', 'where the store and checkpoints live', './coordinator-data')
  .option('--host <host>', 'interface to bind', '127.0.0.1')
  .option('--port <port>', 'port (0 picks a free one)', '8443')
  .addOption(new Option('--enrollment <mode>', 'token: only sites enrolled with a one-time token; open: register unknown sites on first contact (development)').choices(['token', 'open']).default('token'))
  .option('--tls-cert <file>', 'serve HTTPS with this PEM certificate (chain); needs --tls-key')
  .option('--tls-key <file>', 'the PEM private key of --tls-cert')
  .option('--store <url>', 'postgres://... : shared PostgreSQL store for several replicas (or COHORT_STORE_URL); default: lowdb in --data-dir')
  .option('--redis <url>', 'redis://... : socket.io Redis adapter, so replicas share sites (or COHORT_REDIS_URL)')
  .option('--trust-proxy', 'behind a load balancer: take client addresses from X-Forwarded-For (rate limits)')
  .option('--auth-failures-per-minute <n>', 'failed authentications per client address per minute before it is refused', '20')
  .option('--max-message-mib <n>', 'largest socket.io message; larger payloads travel in chunks (raise only for 2.0 agents)', '16')
  .option('--chunk-mib <n>', 'chunk size of chunked transfers (at most half of --max-message-mib)', '4')
  .action(async (o: { dataDir: string; host: string; port: string; enrollment: 'open' | 'token'; tlsCert?: string; tlsKey?: string; store?: string; redis?: string; trustProxy?: boolean; authFailuresPerMinute: string; maxMessageMib: string; chunkMib: string }) => {
    if (Boolean(o.tlsCert) !== Boolean(o.tlsKey)) throw new CohortError('COHORT_ERR_TLS_CONFIG', '--tls-cert and --tls-key go together');
    const mib = (v: string, flag: string) => {
      const n = Number(v);
      if (!(n > 0 && n <= 4096)) throw new CohortError('COHORT_ERR_PROTOCOL_MALFORMED', `${flag} must be a number of MiB between 0 and 4096`);
      return Math.floor(n * 1024 * 1024);
    };
    const storeUrl = o.store ?? process.env.COHORT_STORE_URL;
    const redisUrl = o.redis ?? process.env.COHORT_REDIS_URL;
    const c = await createCoordinator({
      dataDir: resolve(o.dataDir), host: o.host, port: Number(o.port), enrollment: o.enrollment,
      ...(process.env.COHORT_ADMIN_TOKEN ? { adminToken: process.env.COHORT_ADMIN_TOKEN } : {}),
      ...(o.tlsCert && o.tlsKey ? { tls: loadTlsFiles(o.tlsCert, o.tlsKey) } : {}),
      ...(storeUrl ? { storeUrl } : {}),
      ...(redisUrl ? { redisUrl } : {}),
      ...(o.trustProxy ? { trustProxy: true } : {}),
      authFailuresPerMinute: Number(o.authFailuresPerMinute),
      maxMessageBytes: mib(o.maxMessageMib, '--max-message-mib'), transferChunkBytes: mib(o.chunkMib, '--chunk-mib'),
    });
    const url = await c.start();
    if (c.initialAdminToken) {
      console.log(`admin token (shown once, only its hash is stored; export COHORT_TOKEN=...):\n  ${c.initialAdminToken}`);
    }
    console.log(`coordinator key fingerprint: ${keyFingerprint(c.coordinatorPublicKey)}`);
    console.log(`cohort coordinator listening on ${url}`);
    const stop = async () => { await c.close(); process.exit(0); };
    process.once('SIGINT', () => void stop());
    process.once('SIGTERM', () => void stop());
  }), 'cohort coordinator --data-dir ./coord --port 8443 --tls-cert /etc/cohort/tls/fullchain.pem --tls-key /etc/cohort/tls/key.pem');

// ---------------------------------------------------------------- admin
const admin = program.command('admin').description('administer the coordinator (needs an admin token)');
example(admin.command('invite-site')
  .description('issue a one-time, expiring enrollment token for a site')
  .option('--name <name>', 'bind the token to this site name')
  .option('--expires-in-hours <h>', 'validity', '24')
  .addOption(coordinatorOpt()).addOption(tokenOpt())
  .action(async (o: Remote & { name?: string; expiresInHours: string }) => {
    const r = await api<{ token: string; expiresAt: string }>(o.coordinator, '/api/admin/site-invites', {
      method: 'POST', token: tokenOf(o), body: { expiresInHours: Number(o.expiresInHours), ...(o.name ? { name: o.name } : {}) },
    });
    console.log(`enrollment token (one use, expires ${r.expiresAt}):\n  ${r.token}`);
    console.log(`give it to the site's IT: cohort site init --dir ./site --name "${o.name ?? '<name>'}" --coordinator ${o.coordinator} --token <token>`);
  }), 'cohort admin invite-site --name "St Mary" --expires-in-hours 48');
example(admin.command('add-researcher')
  .description('issue an API token for a researcher (or a viewer)')
  .requiredOption('--name <name>', 'who the token is for')
  .addOption(new Option('--role <role>', 'role').choices(['researcher', 'viewer', 'admin']).default('researcher'))
  .addOption(coordinatorOpt()).addOption(tokenOpt())
  .action(async (o: Remote & { name: string; role: string }) => {
    const r = await api<{ token: string; role: string }>(o.coordinator, '/api/admin/tokens', { method: 'POST', token: tokenOf(o), body: { name: o.name, role: o.role } });
    console.log(`${r.role} token for ${o.name} (shown once):\n  ${r.token}`);
  }), 'cohort admin add-researcher --name "Dr Ada" --role researcher');
example(admin.command('revoke-site')
  .description('revoke a site: it is disconnected at once and cannot reconnect')
  .argument('<site>', 'site id or name')
  .addOption(coordinatorOpt()).addOption(tokenOpt())
  .action(async (site: string, o: Remote) => {
    const r = await api<{ site: { name: string; revokedAt: string } }>(o.coordinator, `/api/admin/sites/${encodeURIComponent(site)}/revoke`, { method: 'POST', token: tokenOf(o) });
    console.log(`revoked ${r.site.name} at ${r.site.revokedAt}`);
  }), 'cohort admin revoke-site "St Mary"');
example(admin.command('audit')
  .description("print the coordinator's audit log (studies, enrollments, rounds with task ids)")
  .option('--study <id>', 'only this study')
  .addOption(coordinatorOpt()).addOption(tokenOpt())
  .action(async (o: Remote & { study?: string }) => {
    const r = await api<{ audit: { seq: number; at: string; action: string; studyId?: string; round?: number; site?: string; actor?: string }[] }>(
      o.coordinator, `/api/audit${o.study ? `?studyId=${encodeURIComponent(o.study)}` : ''}`, { token: tokenOf(o) });
    for (const a of r.audit) console.log(`${String(a.seq).padStart(5)}  ${a.at}  ${a.action.padEnd(16)} ${a.studyId ?? ''} ${a.round ?? ''} ${a.site ?? ''} ${a.actor ? `by ${a.actor}` : ''}`);
  }), 'cohort admin audit --study study-1a2b3c4d');

// ---------------------------------------------------------------- researcher
const researcher = program.command('researcher').description("a researcher's signing key");
example(researcher.command('init')
  .description('create an Ed25519 key for signing study manifests (file mode 0600)')
  .requiredOption('--name <name>', 'your name, shown to sites')
  .option('--out <file>', 'key file', join(process.env.HOME ?? '.', '.cohort', 'researcher.json'))
  .action((o: { name: string; out: string }) => {
    const k = createResearcherKey(o.out, o.name);
    console.log(`wrote ${o.out}\npublic key: ${k.publicKey}\nfingerprint: ${keyFingerprint(k.publicKey)} (sites approve your studies by it)`);
  }), 'cohort researcher init --name "Dr Ada" --out ~/.cohort/researcher.json');

// ---------------------------------------------------------------- site
const site = program.command('site').description('run a hospital site agent');
example(site.command('init')
  .description("create the site's identity key (mode 0600) and site.json; with --token, enroll and pin the coordinator's key")
  .requiredOption('--dir <dir>', 'site directory')
  .requiredOption('--name <name>', 'site name, e.g. "St Mary"')
  .addOption(coordinatorOpt())
  .option('--token <token>', 'one-time enrollment token from the coordinator admin')
  .option('--dataset <id>', 'register a CSV dataset under this id')
  .option('--csv <path>', 'the CSV file for --dataset')
  .option('--label <column>', 'the label column for --dataset')
  .option('--ca-file <pem>', "CA that signed the coordinator's TLS certificate (a private CA); kept in site.json")
  .action(async (o: { dir: string; name: string; coordinator: string; token?: string; dataset?: string; csv?: string; label?: string; caFile?: string }) => {
    const r = await siteInit(o);
    console.log(`site initialised: ${r.configFile}\nsite public key: ${r.publicKey}`);
    if (r.siteId) console.log(`enrolled as ${r.siteId}; coordinator key pinned (fingerprint ${r.coordinatorFingerprint})`);
    else console.log('not enrolled (no --token): only a coordinator started with --enrollment open will accept this site');
  }), 'cohort site init --dir ./site --name "St Mary" --coordinator https://fl.example.org --token enr_... --dataset wdbc --csv wdbc.csv --label malignant');
const dataset = site.command('dataset').description("register the site's local data (it never leaves the site; only its schema does)");
example(dataset.command('add')
  .description('add a dataset to site.json after checking it; prints the schema the coordinator will see (names, types, classes, shape, rounded counts)')
  .requiredOption('--dir <dir>', 'site directory')
  .requiredOption('--id <id>', 'dataset id that studies name in task.dataset')
  .addOption(new Option('--kind <kind>', 'csv: a table; images: one folder per class (PNG/JPEG); dicom: a folder + labels CSV').choices(['csv', 'images', 'dicom']).makeOptionMandatory())
  .requiredOption('--path <path>', 'the CSV file, or the image / DICOM folder')
  .option('--label <name>', 'csv: the label column; images: the name reported for the class (default class); dicom: the labels CSV column (default label)')
  .option('--labels <csv>', 'dicom: CSV with columns file (path inside --path) and the label')
  .option('--shape <h,w,c>', 'images/dicom: the shape every example is resized to, channels 1 (grey) or 3 (RGB), e.g. 8,8,1')
  .option('--categorical <cols>', 'csv: columns to one-hot encode, comma-separated')
  .option('--types <col=type,...>', 'csv: declared column types: number, category or ignore')
  .option('--missing <col=strategy,...>', 'csv: missing-value strategy per column: mean, median, mode or drop (default: median for numbers, mode for categories)')
  .option('--levels <col=a|b;col2=...>', 'csv: category levels in one-hot order (the same at every site; a study manifest may declare them instead)')
  .option('--exclude <cols>', 'csv: columns to leave out, comma-separated')
  .option('--features <cols>', 'csv: feature columns in order (default: every column but the label and excluded ones)')
  .option('--classes <names>', 'images/dicom: class names in index order (default: sorted)')
  .option('--normalize <how>', 'images: scale (to [0,1], default) or MEAN/STD per channel, e.g. 0.5/0.25')
  .option('--window <policy>', 'dicom: file (default), minmax, none, or a fixed CENTER,WIDTH such as 40,400')
  .addOption(new Option('--frames <policy>', 'dicom multi-frame files: every frame an example, or only one').choices(['all', 'first', 'middle']))
  .option('--replace', 'replace a dataset with the same id')
  .option('--no-check', 'do not read the data now (by default it is read once and its schema printed)')
  .action(async (o: DatasetAddOptions) => {
    const r = await datasetAdd(o);
    console.log(`added dataset ${r.dataset.id} (${r.dataset.kind}, ${r.dataset.path}) to ${o.dir}/site.json`);
    if (r.schema) {
      console.log('what the coordinator will see of it:');
      for (const l of formatSchema(r.schema)) console.log(l);
    }
  }), 'cohort site dataset add --dir ./site --id digits --kind images --path ./data/images/digits/png --shape 8,8,1');
example(dataset.command('list')
  .description('list the datasets in site.json; --describe reads each and prints its schema')
  .requiredOption('--dir <dir>', 'site directory')
  .option('--describe', 'read each dataset and print what the coordinator would see of it')
  .action(async (o: { dir: string; describe?: boolean }) => {
    const all = await datasetList(o.dir, o.describe ?? false);
    if (all.length === 0) console.log('no datasets; add one with cohort site dataset add');
    for (const d of all) {
      const c = d.dataset;
      const extra = c.kind === 'csv' ? `label ${c.label}` : c.kind === 'images' ? `shape ${c.shape.join(',')}` : `labels ${c.labels}, shape ${c.shape.join(',')}`;
      console.log(`${c.id.padEnd(16)} ${c.kind.padEnd(7)} ${c.path}  (${extra})`);
      if (d.schema) for (const l of formatSchema(d.schema)) console.log(l);
      if (d.error) console.log(`  cannot be read: ${d.error}`);
    }
  }), 'cohort site dataset list --dir ./site --describe');
example(site.command('run')
  .description('run the agent: dial out, authenticate, train on local data when asked')
  .requiredOption('--dir <dir>', 'site directory')
  .option('--health-port <port>', 'serve GET /healthz on 127.0.0.1:<port>')
  .action(async (o: { dir: string; healthPort?: string }) => {
    await siteRun(o.dir, o.healthPort === undefined ? undefined : Number(o.healthPort));
  }), 'cohort site run --dir ./site --health-port 9464');
example(site.command('studies')
  .description('list studies offered to this site, with their manifest hash, researcher and decision')
  .requiredOption('--dir <dir>', 'site directory')
  .option('--show <studyId>', 'print the full manifest of one study')
  .action((o: { dir: string; show?: string }) => {
    const a = new Approvals(resolve(o.dir));
    const entries = a.inbox();
    if (o.show) {
      const e = entries.filter((x) => x.studyId === o.show).at(-1);
      if (!e) throw new CohortError('COHORT_ERR_STUDY_NOT_FOUND', `study ${o.show} has not been offered to this site`);
      console.log(JSON.stringify(e.manifest, null, 2));
      return;
    }
    if (entries.length === 0) console.log('no studies offered yet');
    const auto = new Set(loadSiteConfig(resolve(o.dir)).policy.autoApprove.map((r) => r.publicKey));
    for (const e of entries) {
      const d = a.decisionFor(e.studyId, e.manifestHash);
      const state = d?.decision ?? (e.researcherPublicKey && auto.has(e.researcherPublicKey) ? 'auto-approved' : 'pending');
      console.log(`${e.studyId}  ${state.padEnd(13)}  "${e.name}"  manifest ${e.manifestHash.slice(0, 16)}  researcher ${e.researcherFingerprint ?? 'UNSIGNED'}${e.lastRefusal ? `  last refusal ${e.lastRefusal}` : ''}`);
    }
  }), 'cohort site studies --dir ./site');
for (const verb of ['approve', 'reject'] as const) {
  example(site.command(verb)
    .description(`${verb} a study; binds to the manifest hash seen, so any change needs a new decision`)
    .argument('<studyId>', 'study id')
    .requiredOption('--dir <dir>', 'site directory')
    .option('--by <name>', 'who decides', process.env.USER ?? 'site-admin')
    .option('--reason <text>', 'reason (shown to the researcher for a rejection)')
    .action((studyId: string, o: { dir: string; by: string; reason?: string }) => {
      const d = new Approvals(resolve(o.dir)).decide(studyId, verb === 'approve' ? 'approved' : 'rejected', o.by, o.reason);
      console.log(`${d.decision} ${studyId} (manifest ${d.manifestHash.slice(0, 16)}) by ${d.by}`);
    }), `cohort site ${verb} study-1a2b3c4d --dir ./site`);
}
example(site.command('audit')
  .description("print the site's ledger of everything that left it; --verify checks the hash chain and signatures")
  .requiredOption('--dir <dir>', 'site directory')
  .option('--verify', 'verify the ledger; exit 4 if anything was edited, dropped or reordered')
  .action((o: { dir: string; verify?: boolean }) => {
    const dir = resolve(o.dir);
    const file = join(dir, 'ledger.jsonl');
    if (o.verify) {
      const config = loadSiteConfig(dir);
      const r = verifyLedger(file, loadIdentity(resolveIn(dir, config.keyFile)).publicKey);
      if (r.ok) console.log(`ledger OK: ${r.entries} entries, hash chain and signatures verified`);
      else {
        console.log(`ledger FAILED verification (${r.problems.length} problems in ${r.entries} entries):`);
        for (const p of r.problems) console.log(`  line ${p.line}: ${p.problem}`);
        process.exitCode = 4;
      }
      return;
    }
    console.log('  seq  time                      study            round  task       outcome  bytes  code');
    for (const e of readLedger(file)) {
      console.log(`${String(e.seq).padStart(5)}  ${e.at}  ${e.studyId.padEnd(16)} ${String(e.round).padStart(5)}  ${e.kind.padEnd(9)}  ${e.outcome.padEnd(7)} ${String(e.bytes).padStart(6)}  ${e.code ?? ''}`);
    }
  }), 'cohort site audit --dir ./site --verify');

// ---------------------------------------------------------------- studies
const study = program.command('study').description('create, run and inspect federated studies');
example(study.command('create')
  .description('create a study from a JSON manifest, signed with your researcher key')
  .argument('<manifest>', 'manifest file')
  .option('--key <file>', 'researcher key to sign with', join(process.env.HOME ?? '.', '.cohort', 'researcher.json'))
  .option('--unsigned', 'do not sign (sites whose policy requires signatures will refuse it)')
  .addOption(coordinatorOpt()).addOption(tokenOpt())
  .action(async (file: string, o: Remote & { key: string; unsigned?: boolean }) => {
    const manifest = JSON.parse(readFileSync(file, 'utf8')) as unknown;
    const body = o.unsigned ? manifest : signedStudyRequest(manifest, loadResearcherKey(o.key));
    const r = await api<{ study: { id: string } }>(o.coordinator, '/api/studies', { method: 'POST', body, token: tokenOf(o) });
    console.log(r.study.id);
  }), 'cohort study create examples/wdbc-study.json --key ~/.cohort/researcher.json');
for (const verb of ['start', 'stop'] as const) {
  example(study.command(verb)
    .description(`${verb} a study`)
    .argument('<id>', 'study id')
    .addOption(coordinatorOpt()).addOption(tokenOpt())
    .action(async (id: string, o: Remote) => {
      const r = await api<{ study: { id: string; status: string } }>(o.coordinator, `/api/studies/${encodeURIComponent(id)}/${verb}`, { method: 'POST', token: tokenOf(o) });
      console.log(`${r.study.id}: ${r.study.status}`);
    }), `cohort study ${verb} study-1a2b3c4d`);
}
example(study.command('list')
  .description('list studies')
  .addOption(coordinatorOpt()).addOption(tokenOpt())
  .action(async (o: Remote) => {
    const r = await api<{ studies: { id: string; name: string; status: string; completedRounds: number; rounds: number }[] }>(o.coordinator, '/api/studies', { token: tokenOf(o) });
    if (r.studies.length === 0) console.log('no studies');
    for (const s of r.studies) console.log(`${s.id}  ${s.status.padEnd(9)}  ${s.completedRounds}/${s.rounds} rounds  ${s.name}`);
  }), 'cohort study list');
example(study.command('status')
  .description('show a study: rounds, pooled hold-out metrics, failures, site refusals')
  .argument('<id>', 'study id')
  .option('--watch', 'refresh until the study ends')
  .option('--json', 'print the raw JSON')
  .addOption(coordinatorOpt()).addOption(tokenOpt())
  .action(async (id: string, o: Remote & { watch?: boolean; json?: boolean }) => {
    await watchStudy(o.coordinator, id, { watch: o.watch ?? false, json: o.json ?? false, token: tokenOf(o) });
  }), 'cohort study status study-1a2b3c4d --watch');
example(study.command('model')
  .description('download the global model (tfjs layers: model.json + weights.bin) and its model card (model-card.json, MODEL_CARD.md)')
  .argument('<id>', 'study id')
  .requiredOption('--out <dir>', 'output directory')
  .addOption(coordinatorOpt()).addOption(tokenOpt())
  .action(async (id: string, o: Remote & { out: string }) => {
    const r = await downloadModel(o.coordinator, id, o.out, tokenOf(o));
    console.log(`wrote ${r.files.join(', ')} (weights ${r.weightBytes} bytes)`);
    const auc = r.card.evaluation.final?.pooled.auc;
    if (auc) console.log(`round ${r.card.model.round}: pooled hold-out AUC ${auc.value.toFixed(3)} (95% CI ${auc.lower.toFixed(3)}-${auc.upper.toFixed(3)}) over ${r.card.sites.length} sites`);
  }), 'cohort study model study-1a2b3c4d --out ./model');

example(program.command('demo')
  .description('a coordinator and 3 site agents as separate processes on loopback, training on WDBC')
  .option('--rounds <n>', 'rounds', '10')
  .option('--sites <n>', 'site agents', '3')
  .option('--dir <dir>', 'working directory (default: a fresh temporary one)')
  .option('--keep', 'keep the coordinator and agents running after the study, until Ctrl-C')
  .option('--loso', 'also run leave-one-site-out evaluation after the rounds')
  .option('--dp', 'record-level differential privacy at epsilon 2 (delta 1e-5): full-batch DP gradient descent whose noise the sites split under secure aggregation (record-distributed); prints epsilon spent per site')
  .addOption(new Option('--dp-mode <mode>', 'differential privacy mode: record-distributed (same as --dp), record (full-batch DP-SGD with the whole noise at every site; works without secure aggregation), or client-distributed (each site adds Skellam noise to its update under secure aggregation; client-level epsilon 8 at delta 1e-5)').choices(['record-distributed', 'record', 'client-distributed']))
  .option('--no-secure-aggregation', 'run plain FedAvg: the coordinator sees each site\'s update (secure aggregation is on by default)')
  .action(async (o: { rounds: string; sites: string; dir?: string; keep?: boolean; loso?: boolean; dp?: boolean; dpMode?: DemoDpMode; secureAggregation: boolean }) => {
    const dp = o.dpMode ?? (o.dp ? 'record-distributed' : false);
    if ((dp === 'client-distributed' || dp === 'record-distributed') && !o.secureAggregation) {
      throw new CohortError('COHORT_ERR_DP_INVALID', `${dp} DP adds its noise under secure aggregation; drop --no-secure-aggregation${dp === 'record-distributed' ? ', or use --dp-mode record (the whole noise at every site)' : ''}`);
    }
    process.exitCode = await runDemo({
      rounds: Number(o.rounds), sites: Number(o.sites), keep: o.keep ?? false, loso: o.loso ?? false, dp,
      secureAggregation: o.secureAggregation, ...(o.dir ? { dir: o.dir } : {}),
    });
  }), 'cohort demo --rounds 10 --loso   (or: cohort demo --dp --sites 5 --rounds 20; cohort demo --dp-mode record --sites 5 --rounds 20; cohort demo --dp-mode client-distributed --sites 5)');

registerSimulate(program, example);

program.parseAsync(process.argv).catch((err: unknown) => {
  if (err instanceof CohortError || err instanceof ApiError) {
    console.error(`error ${err.code}: ${err.message}`);
    process.exit(err instanceof ApiError ? 2 : 3);
  }
  console.error(err instanceof Error ? err.message : String(err));
  process.exit(1);
});
