/**
 * The load scenario shared by the test (tests/load/load.test.ts, 50 agents) and the bench (bench/load.ts, 10 and
 * 200 agents): a real coordinator in this process, N real site agents spread over worker processes, all on
 * loopback, each enrolled with its own token and data; a few FedAvg rounds of logistic regression. Reports round
 * latency and the coordinator's memory (this process holds only the coordinator and the harness).
 */
import { spawn, type ChildProcess } from 'node:child_process';
import { mkdirSync, writeFileSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { json, RESEARCHER, startCoordinator, tempDir, waitFor, wdbcManifest, createStudy, type StudyStatusBody } from '../helpers/cluster.ts';
import { siteInit } from '../../cli/site-commands.ts';
import { WDBC } from '../../cli/demo.ts';
import { seededRandom } from '../../site-agent/data/split.ts';

const ROOT = join(import.meta.dirname, '..', '..');

export interface LoadResult {
  agents: number;
  workers: number;
  rounds: number;
  status: string;
  /** Per-round duration as the coordinator recorded it (train fan-out to checkpointed record). */
  roundMs: number[];
  p50: number;
  p95: number;
  participants: number[];
  enrollMs: number;
  connectMs: number;
  rssBeforeMB: number;
  peakRssMB: number;
  peakHeapMB: number;
  /** Heap still in use after a full GC at the end (needs --expose-gc): what the coordinator keeps. */
  retainedHeapMB: number;
  /** CPU time this process (the coordinator) used during the study, as a share of the study's wall time. */
  coordinatorCpuShare: number;
}

export const percentile = (xs: readonly number[], p: number): number => {
  const s = [...xs].sort((a, b) => a - b);
  return s[Math.min(s.length - 1, Math.max(0, Math.ceil((p / 100) * s.length) - 1))] ?? NaN;
};
const mb = (b: number) => Math.round((b / 1024 / 1024) * 10) / 10;

/** `rows` rows drawn (seeded, with replacement) from WDBC, with its header. */
function sampleCsv(rows: number, seed: number): string {
  const [header, ...all] = readFileSync(WDBC, 'utf8').trim().split('\n');
  const rand = seededRandom(seed);
  return [header, ...Array.from({ length: rows }, () => all[Math.floor(rand() * all.length)]!)].join('\n');
}

export async function runLoad(o: { agents: number; workers: number; rounds: number; rowsPerSite?: number; onProgress?: (msg: string) => void }): Promise<LoadResult> {
  const say = o.onProgress ?? (() => undefined);
  const dir = tempDir('cohort-load-');
  const c = await startCoordinator({ dataDir: join(dir, 'coordinator'), authFailuresPerMinute: 100_000 });
  const children: ChildProcess[] = [];
  try {
    const t0 = Date.now();
    const sites: string[] = [];
    for (let i = 0; i < o.agents; i += 20) {
      await Promise.all(Array.from({ length: Math.min(20, o.agents - i) }, async (_, k) => {
        const n = i + k;
        const siteDir = join(dir, `site-${n}`);
        mkdirSync(siteDir, { recursive: true });
        writeFileSync(join(siteDir, 'data.csv'), sampleCsv(o.rowsPerSite ?? 60, 1000 + n));
        const name = `Load Site ${n}`;
        const token = (await json<{ token: string }>(c.url, '/api/admin/site-invites', { method: 'POST', body: { name } })).body.token;
        await siteInit({
          dir: siteDir, coordinator: c.url, name, token, dataset: 'wdbc', csv: join(siteDir, 'data.csv'), label: 'malignant',
          policy: { autoApprove: [{ name: RESEARCHER.name, publicKey: RESEARCHER.publicKey }] },
        });
        sites[n] = siteDir;
      }));
    }
    const enrollMs = Date.now() - t0;
    say(`${o.agents} sites enrolled in ${enrollMs} ms`);

    const t1 = Date.now();
    const ready = Array.from({ length: o.workers }, (_, w) => {
      const mine = sites.filter((_, i) => i % o.workers === w);
      const list = join(dir, `worker-${w}.json`);
      writeFileSync(list, JSON.stringify(mine));
      const child = spawn(process.execPath, [join(ROOT, 'bin', 'run-ts.js'), join(ROOT, 'tests', 'load', 'agent-worker.ts'), list], { stdio: ['pipe', 'pipe', 'pipe'] });
      children.push(child);
      let err = '';
      child.stderr!.on('data', (d: Buffer) => { err = (err + d.toString()).slice(-2000); });
      return new Promise<void>((resolve, reject) => {
        child.stdout!.on('data', (d: Buffer) => { if (d.toString().includes('READY')) resolve(); });
        child.once('exit', (code) => reject(new Error(`load worker ${w} exited (${code}): ${err}`)));
      });
    });
    await Promise.all(ready);
    const connectMs = Date.now() - t1;
    say(`${o.agents} agents connected from ${o.workers} worker processes in ${connectMs} ms`);

    global.gc?.();
    const rssBefore = process.memoryUsage().rss;
    let peakRss = rssBefore;
    let peakHeap = process.memoryUsage().heapUsed;
    const cpu0 = process.cpuUsage();
    const wall0 = Date.now();
    const sampler = setInterval(() => {
      const m = process.memoryUsage();
      peakRss = Math.max(peakRss, m.rss);
      peakHeap = Math.max(peakHeap, m.heapUsed);
    }, 50);
    try {
      const id = await createStudy(c.url, wdbcManifest({
        name: `load ${o.agents}`,
        training: { rounds: o.rounds, localEpochs: 1, batchSize: 32, optimizer: 'adam', learningRate: 0.05 },
        participation: { minSites: o.agents, roundDeadlineMs: 300_000, waitForSitesMs: 120_000, maxRoundAttempts: 2 },
        evaluation: { holdoutFraction: 0.25 },
      }));
      await json(c.url, `/api/studies/${id}/start`, { method: 'POST' });
      let last = 0;
      const progress = setInterval(() => {
        const done = c.coordinator.store.getStudy(id)?.completedRounds ?? 0;
        if (done !== last) say(`round ${done}/${o.rounds} done`);
        last = done;
      }, 250);
      // Watch the store in-process: polling the REST API would make the coordinator serialize every round
      // several times a second and the memory figures would measure the harness.
      await waitFor(() => (['completed', 'failed', 'stopped'].includes(c.coordinator.store.getStudy(id)?.status ?? '') ? true : undefined), 900_000, 200)
        .finally(() => clearInterval(progress));
      const final = (await json<StudyStatusBody>(c.url, `/api/studies/${id}`)).body;
      global.gc?.();
      const retained = process.memoryUsage().heapUsed;
      const cpu = process.cpuUsage(cpu0);
      const coordinatorCpuShare = Math.round(((cpu.user + cpu.system) / 1000 / (Date.now() - wall0)) * 100) / 100;
      const records = c.coordinator.store.listRounds(id);
      const roundMs = records.map((r) => r.durationMs);
      return {
        agents: o.agents, workers: o.workers, rounds: o.rounds, status: final.study.status, roundMs, p50: percentile(roundMs, 50), p95: percentile(roundMs, 95),
        participants: records.map((r) => r.participants.length), enrollMs, connectMs,
        rssBeforeMB: mb(rssBefore), peakRssMB: mb(peakRss), peakHeapMB: mb(peakHeap), retainedHeapMB: mb(retained), coordinatorCpuShare,
      };
    } finally {
      clearInterval(sampler);
    }
  } finally {
    for (const ch of children) ch.kill('SIGTERM');
    await Promise.all(children.map((ch) => (ch.exitCode === null ? new Promise((r) => ch.once('exit', r)) : undefined)));
    await c.coordinator.close();
  }
}
