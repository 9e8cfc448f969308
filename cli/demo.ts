/**
 * `cohort demo` (= `npm start`): a real coordinator and N real site agents, each its own process on loopback, the
 * bundled WDBC data split across the sites, a study of 10 rounds under secure aggregation with a live table, then
 * the pooled hold-out metrics. Nothing is simulated: the agents dial the coordinator over socket.io, train tfjs
 * models and send only masked updates.
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdtempSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { api } from './http.ts';
import { siteInit } from './site-commands.ts';
import { createResearcherKey, signedStudyRequest } from './researcher.ts';
import { newToken } from '../coordinator/auth.ts';
import { watchStudy } from './watch.ts';
import type { StudyManifestInput } from '../protocol/messages.ts';

const ROOT = fileURLToPath(new URL('..', import.meta.url));
const BIN = join(ROOT, 'bin', 'cohort.js');
export const WDBC = join(ROOT, 'data', 'tabular', 'wdbc.csv');

export interface DemoOptions {
  rounds: number;
  sites: number;
  keep: boolean;
  dir?: string;
  /** Also run leave-one-site-out evaluation after the rounds (each round then needs one site fewer). */
  loso?: boolean;
  /**
   * Differential privacy: `record-distributed` (full-batch DP gradient descent, the noise split among the sites under
   * secure aggregation, record-level epsilon 2), `record` (the same steps with the whole noise at every site), or
   * `client-distributed` (Skellam noise from the sites on their updates, client-level epsilon 8), all at delta 1e-5.
   */
  dp?: DemoDpMode | false;
  /** SecAgg+ on (default) or off (plain FedAvg: the coordinator sees each site's update). */
  secureAggregation?: boolean;
}

/**
 * Record-level DP for WDBC: full-batch DP gradient descent at each site. Every round each site takes one step of
 * plain SGD on its whole training set (the batch size is above any demo site's size, so the sampling rate is 1),
 * each patient's gradient clipped to L2 norm 0.5, Gaussian noise calibrated by the site's own accountant so that
 * the whole study spends epsilon 2 at delta 1e-5. Fewer, larger noisy steps: at a fixed epsilon the noise relative
 * to the signal hardly depends on how the budget is cut into steps, so the recipe takes as few steps as reach the
 * noise-free optimum (20 rounds at learning rate 4). Chosen by principle and by experiment on this benchmark over a
 * range of settings that all score about the same (docs/privacy.md, "Choosing the recipe"); bench/dp.ts measures
 * what it costs in accuracy.
 */
export const WDBC_DP = {
  training: { localEpochs: 1, batchSize: 65_536, optimizer: 'sgd' as const, learningRate: 4 },
  dp: { mode: 'record' as const, clip: 0.5, targetEpsilon: 2, delta: 1e-5 },
};

/**
 * Client-level DP with distributed noise for WDBC: each site clips its update to L2 norm 1 and adds its share of
 * Skellam noise under secure aggregation, calibrated so that the whole study spends client-level epsilon 8 at delta
 * 1e-5 (a guarantee for each hospital's whole contribution, not for each patient). bench/dp.ts measures its cost.
 */
export const WDBC_DISTRIBUTED_DP = {
  dp: { mode: 'client-distributed' as const, clip: 1, targetEpsilon: 8, delta: 1e-5 },
};

/**
 * Record-level DP for WDBC with the noise split among the sites (`record-distributed`): the same full-batch DP
 * gradient descent as WDBC_DP (clip 0.5 per patient, learning rate 4, epsilon 2 at delta 1e-5), but each round the
 * sites send the rounded sum of their patients' clipped gradients, each with its share of Skellam noise, under
 * secure aggregation, and the coordinator takes the step. The global step carries the noise of one release instead of
 * one per site. bench/dp.ts measures it against WDBC_DP.
 */
export const WDBC_DISTRIBUTED_RECORD_DP = {
  training: WDBC_DP.training,
  dp: { mode: 'record-distributed' as const, clip: 0.5, targetEpsilon: 2, delta: 1e-5 },
};

export type DemoDpMode = 'record' | 'client-distributed' | 'record-distributed';

/** Splits a CSV's rows across sites: seeded shuffle, then unequal shares (hospitals differ in size). */
export function splitCsvForSites(csvFile: string, sites: number, seed = 7): string[] {
  const [header, ...rows] = readFileSync(csvFile, 'utf8').trim().split('\n');
  let a = seed >>> 0;
  const rand = () => { a = (a * 1664525 + 1013904223) >>> 0; return a / 2 ** 32; };
  for (let i = rows.length - 1; i > 0; i--) {
    const j = Math.floor(rand() * (i + 1));
    [rows[i], rows[j]] = [rows[j]!, rows[i]!];
  }
  const weights = Array.from({ length: sites }, (_, i) => sites - i + 1);
  const total = weights.reduce((x, y) => x + y, 0);
  const out: string[] = [];
  let start = 0;
  weights.forEach((w, i) => {
    const end = i === sites - 1 ? rows.length : start + Math.round((rows.length * w) / total);
    out.push([header, ...rows.slice(start, end)].join('\n') + '\n');
    start = end;
  });
  return out;
}

export function demoManifest(rounds: number, sites: number, loso = false, dp: boolean | DemoDpMode = false, secureAggregation = true): StudyManifestInput {
  if (dp === 'record-distributed') {
    // The sites' share of the noise needs secure aggregation: the coordinator only ever holds the noisy gradient sum.
    const base = demoManifest(rounds, sites, loso, false, true);
    return {
      ...base, name: 'WDBC malignancy with record-level distributed DP (demo)',
      training: { rounds, ...WDBC_DISTRIBUTED_RECORD_DP.training }, privacy: { secureAggregation: true, dp: WDBC_DISTRIBUTED_RECORD_DP.dp },
    };
  }
  if (dp === 'client-distributed') {
    // The sites' own integer noise needs secure aggregation: the coordinator only ever holds the noisy sum.
    const base = demoManifest(rounds, sites, loso, false, true);
    return { ...base, name: 'WDBC malignancy with client-level distributed DP (demo)', privacy: { secureAggregation: true, dp: WDBC_DISTRIBUTED_DP.dp } };
  }
  if (dp) {
    const base = demoManifest(rounds, sites, loso, false, secureAggregation);
    // Record-level DP and secure aggregation combine: each site noises its own training, and the coordinator still
    // sees only the sum of what the sites send.
    return {
      ...base, name: 'WDBC malignancy with record-level DP (demo)',
      training: { rounds, ...WDBC_DP.training }, privacy: { secureAggregation, dp: WDBC_DP.dp },
    };
  }
  return {
    name: 'WDBC malignancy (demo)',
    description: 'Logistic regression on the Wisconsin Diagnostic Breast Cancer data, split across sites',
    task: { dataset: 'wdbc', label: 'malignant' },
    model: { template: 'logreg' },
    training: { rounds, localEpochs: 2, batchSize: 16, optimizer: 'adam', learningRate: 0.05 },
    strategy: { name: 'fedavg' },
    // Leave-one-site-out trains on every site but one, so each round may then have one site fewer.
    participation: { minSites: loso ? Math.max(2, sites - 1) : sites, roundDeadlineMs: 60_000, waitForSitesMs: 60_000, maxRoundAttempts: 3 },
    evaluation: { holdoutFraction: 0.25, leaveOneSiteOut: loso },
    privacy: { secureAggregation },
    seed: 42,
  };
}

function spawnCohort(args: string[], logFile: string, env: Record<string, string> = {}): ChildProcess {
  const child = spawn(process.execPath, [BIN, ...args], { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, ...env } });
  const log: string[] = [];
  child.stderr?.on('data', (d: Buffer) => log.push(d.toString()));
  child.on('exit', () => writeFileSync(logFile, log.join('')));
  return child;
}

function waitForUrl(child: ChildProcess): Promise<string> {
  return new Promise((resolveUrl, reject) => {
    let buf = '';
    const t = setTimeout(() => reject(new Error('coordinator did not start within 30 s')), 30_000);
    child.stdout?.on('data', (d: Buffer) => {
      buf += d.toString();
      const m = /listening on (http:\/\/\S+)/.exec(buf);
      if (m) { clearTimeout(t); resolveUrl(m[1]!); }
    });
    child.on('exit', (code) => { clearTimeout(t); reject(new Error(`coordinator exited with ${code}`)); });
  });
}

export async function runDemo(o: DemoOptions): Promise<number> {
  const dir = resolve(o.dir ?? mkdtempSync(join(tmpdir(), 'cohort-demo-')));
  mkdirSync(dir, { recursive: true });
  const children: ChildProcess[] = [];
  const cleanup = () => { for (const c of children) if (c.exitCode === null) c.kill('SIGTERM'); };
  process.once('SIGINT', () => { cleanup(); process.exit(130); });
  try {
    console.log(`Cohort demo: 1 coordinator + ${o.sites} site agents (separate processes) on loopback; working dir ${dir}`);
    // The demo plays every role: it seeds the admin token, signs the study as a researcher, and has each site's
    // policy auto-approve that researcher (a real site would run `cohort site approve`).
    const token = newToken('cht');
    const coord = spawnCohort(['coordinator', '--data-dir', join(dir, 'coordinator'), '--port', '0'], join(dir, 'coordinator.log'), { COHORT_ADMIN_TOKEN: token });
    children.push(coord);
    const url = await waitForUrl(coord);
    console.log(`coordinator: ${url}   API docs: ${url}/docs`);
    // A throwaway loopback demo: the dashboard link carries the admin token (the page moves it out of the address bar).
    console.log(`dashboard (live): ${url}/?token=${token}`);
    const researcher = createResearcherKey(join(dir, 'researcher.json'), 'Demo Researcher');
    const parts = splitCsvForSites(WDBC, o.sites);
    for (const [i, csv] of parts.entries()) {
      const name = `Hospital ${String.fromCharCode(65 + i)}`;
      const siteDir = join(dir, `site-${i + 1}`);
      mkdirSync(siteDir, { recursive: true });
      writeFileSync(join(siteDir, 'wdbc.csv'), csv);
      const invite = await api<{ token: string }>(url, '/api/admin/site-invites', { method: 'POST', token, body: { name } });
      await siteInit({
        dir: siteDir, coordinator: url, name, token: invite.token, dataset: 'wdbc', csv: join(siteDir, 'wdbc.csv'), label: 'malignant',
        policy: { autoApprove: [{ name: researcher.name, publicKey: researcher.publicKey }] },
      });
      children.push(spawnCohort(['site', 'run', '--dir', siteDir], join(dir, `site-${i + 1}.log`)));
      console.log(`site agent: ${name} with ${csv.trim().split('\n').length - 1} patients, enrolled with a one-time token (records stay in ${siteDir})`);
    }
    const secure = o.dp === 'client-distributed' || o.dp === 'record-distributed' || (o.secureAggregation ?? true);
    const { study } = await api<{ study: { id: string } }>(url, '/api/studies', { method: 'POST', token, body: signedStudyRequest(demoManifest(o.rounds, o.sites, o.loso ?? false, o.dp ?? false, secure), researcher) });
    await api(url, `/api/studies/${study.id}/start`, { method: 'POST', token });
    console.log(`study ${study.id} (manifest signed by ${researcher.name}) started: ${o.rounds} rounds of FedAvg, logistic regression, ${secure ? 'under secure aggregation (SecAgg+)' : 'WITHOUT secure aggregation (--no-secure-aggregation)'}\n`);
    const final = await watchStudy(url, study.id, { watch: true, json: false, token });
    const last = final.rounds.at(-1);
    if (final.study.status !== 'completed' || !last) {
      console.error(`study ended ${final.study.status}${final.study.error ? `: ${final.study.error.code} ${final.study.error.message}` : ''}; logs in ${dir}`);
      return 1;
    }
    const p = last.pooled;
    const backends = [...new Set(Object.values((last as { backends?: Record<string, string> }).backends ?? {}))];
    if (backends.length) console.log(`\nSites trained on the tfjs ${backends.join(' and ')} backend${backends.length > 1 ? 's' : ''}${backends.includes('tensorflow') ? '' : ' (native TensorFlow did not load here; see README, Training backends)'}.`);
    const sa = (last as { secureAggregation?: { sites: number; threshold: number; degree: number } }).secureAggregation;
    if (sa) {
      console.log(`\nSecure aggregation: on in every round (SecAgg+, ${sa.sites} sites, any ${sa.threshold} of them needed to unmask, ${sa.degree === sa.sites - 1 ? 'complete graph' : `${sa.degree} neighbours each`}). Each site sent only a masked ${o.dp === 'record-distributed' ? 'sum of its patients\' clipped gradients' : 'update'}; the coordinator never held one in the clear, only their ${o.dp === 'client-distributed' || o.dp === 'record-distributed' ? 'sum, with the sites\' noise in it' : 'weighted sum'}.`);
    } else {
      console.log('\nSecure aggregation: off. The coordinator saw each site\'s update in the clear.');
    }
    console.log(`\nPooled hold-out (${p.n} patients across ${o.sites} sites, never seen in training):`);
    console.log(`  AUC ${p.auc?.toFixed(3)}   accuracy ${p.accuracy.toFixed(3)}   sensitivity ${p.sensitivity?.toFixed(3)}   specificity ${p.specificity?.toFixed(3)}`);
    if (o.dp) {
      const { study: s } = await api<{ study: { privacy?: { delta: number; perSite: Record<string, { record?: number; client?: number }>; client?: { epsilon: number; noiseMultiplier: number }; record?: { epsilon: number; noiseMultiplier: number } } } }>(url, `/api/studies/${study.id}`, { token });
      const distributed = o.dp === 'client-distributed';
      console.log(distributed
        ? `\nClient-level differential privacy, noise added by the sites under secure aggregation (Skellam, noise multiplier ${s.privacy?.client?.noiseMultiplier.toFixed(3)}); epsilon spent at delta ${s.privacy?.delta ?? WDBC_DISTRIBUTED_DP.dp.delta}: study ${s.privacy?.client?.epsilon.toFixed(3)} by the coordinator's accountant, and by each site's own:`
        : o.dp === 'record-distributed'
          ? `\nRecord-level differential privacy, one noisy full-batch gradient step per round, the noise split among the sites under secure aggregation (Skellam, noise multiplier ${s.privacy?.record?.noiseMultiplier.toFixed(3)}); epsilon spent at delta ${s.privacy?.delta ?? WDBC_DP.dp.delta}: study ${s.privacy?.record?.epsilon.toFixed(3)} by the coordinator's accountant, and by each site's own:`
          : `\nRecord-level differential privacy (DP-SGD at each site), epsilon spent at delta ${s.privacy?.delta ?? WDBC_DP.dp.delta}, by each site's own accountant:`);
      for (const [site, e] of Object.entries(s.privacy?.perSite ?? {}).sort()) console.log(`  ${site.padEnd(12)} epsilon ${(distributed ? e.client : e.record)?.toFixed(3) ?? '-'}`);
    }
    console.log(`\nAPI: ${url}/api/studies/${study.id}   model: ${url}/api/studies/${study.id}/model/model.json`);
    console.log(`logs: ${dir}/*.log   site ledgers: cohort site audit --dir ${join(dir, 'site-1')} --verify`);
    if (o.keep) console.log(`admin token for this demo: export COHORT_TOKEN=${token}`);
    if (o.keep) {
      console.log('coordinator and agents keep running; Ctrl-C to stop');
      await new Promise(() => undefined);
    }
    return 0;
  } finally {
    if (!o.keep) cleanup();
  }
}
