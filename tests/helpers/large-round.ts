/**
 * One round of a large model: a real coordinator in this process, real site agents (in this process, or each as
 * its own `cohort site run` process so its memory is its own) on WDBC, secure aggregation on unless told
 * otherwise. Measures what the scale claims rest on: round latency, the coordinator's memory sampled through the
 * round, each site process's peak memory, bytes on the wire (every TCP byte the coordinator's server read or wrote)
 * and the chunked-transfer counters. Used by tests/integration/large-model.test.ts and bench/large.ts.
 */
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Socket as NetSocket } from 'node:net';
import { makeSite, runStudy, startCoordinator, wdbcManifest, type TestSite } from './cluster.ts';
import { logMessages, startSiteProcess, type Proc } from './processes.ts';
import { splitCsvForSites, WDBC } from '../../cli/demo.ts';
import { countParameters, weightShapes } from '../../protocol/models.ts';
import { frameBytes } from '../../protocol/codec.ts';
import type { TransferStats } from '../../coordinator/transport/transfers.ts';

export interface LargeRoundOptions {
  /** Hidden layers of the MLP (30 WDBC features in, one sigmoid unit out). */
  hidden: number[];
  sites: number;
  /** Each site as its own process (memory measured per site), or every agent in this process. */
  processes: boolean;
  secureAggregation?: boolean;
  /** Chunk size of transfers (default: the coordinator's, 4 MiB). */
  chunkBytes?: number;
  roundDeadlineMs?: number;
  log?: (message: string) => void;
  /** Write each site process's log lines into this directory (site-N.log), to see where time went. */
  logDir?: string;
}

export interface LargeRoundResult {
  params: number;
  /** Size of the model as one float32 tensor frame. */
  modelBytes: number;
  sites: number;
  status: string;
  error?: { code: string; message: string };
  participants: string[];
  attempts: number;
  /** The round record's duration: training (transfers, local training, secure aggregation), evaluation, checkpoint. */
  roundMs: number;
  /** From start to completion, including the schema check, statistics and initialising the model. */
  studyMs: number;
  coordinator: { rssBeforeMB: number; peakRssMB: number; peakArrayBuffersMB: number; peakHeapMB: number };
  /** Peak resident memory (VmHWM) of each site process; empty when the agents ran in this process. */
  sitePeakRssMB: number[];
  /** TCP bytes read and written by the coordinator's server during the study (REST polling included). */
  wireBytes: number;
  transfer: Omit<TransferStats, 'resumes'> & { resumes: number };
  /** Where the time went, from the agents' and the coordinator's own log lines (medians over sites, ms). */
  phases: { download: number; trainTask: number; upload: number; evaluateTask: number; sumAdd: number; unmask: number };
}

const median = (xs: number[]) => {
  const s = xs.filter(Number.isFinite).sort((a, b) => a - b);
  return s.length ? s[Math.floor((s.length - 1) / 2)]! : NaN;
};

const MB = 1024 * 1024;
const mb = (n: number) => Math.round((n / MB) * 10) / 10;

function vmHwmMB(pid: number): number {
  const kb = Number(/VmHWM:\s+(\d+)/.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1] ?? NaN);
  return Math.round((kb / 1024) * 10) / 10;
}

function mlpShapes(hidden: readonly number[]): number[][] {
  return weightShapes({ spec: { template: 'mlp', hidden: [...hidden], activation: 'relu', dropout: 0, l2: 0 }, inputShape: [30], numClasses: 2 });
}

export function mlpParams(hidden: readonly number[]): number {
  return countParameters(mlpShapes(hidden));
}

export async function runLargeRound(o: LargeRoundOptions): Promise<LargeRoundResult> {
  const say = o.log ?? (() => undefined);
  const params = mlpParams(o.hidden);
  const c = await startCoordinator({ ...(o.chunkBytes ? { transferChunkBytes: o.chunkBytes } : {}) });
  // Every byte through the coordinator's server: sockets still open are read at the end, closed ones as they close.
  const open = new Set<NetSocket>();
  let closedBytes = 0;
  c.coordinator.app.server.on('connection', (s: NetSocket) => {
    open.add(s);
    s.once('close', () => { closedBytes += s.bytesRead + s.bytesWritten; open.delete(s); });
  });
  const wire = () => closedBytes + [...open].reduce((n, s) => n + s.bytesRead + s.bytesWritten, 0);
  const procs: Proc[] = [];
  const agents: TestSite[] = [];
  try {
    const parts = splitCsvForSites(WDBC, o.sites);
    const policy = { maxModelParameters: Math.max(10_000_000, params) };
    const made = await Promise.all(parts.map((csv, i) => makeSite(c.url, `Site ${i + 1}`, csv, { policy })));
    if (o.processes) {
      for (const s of made) procs.push(await startSiteProcess(s.dir));
    } else {
      agents.push(...made);
      await Promise.all(made.map((s) => s.agent.start()));
    }
    say(`${o.sites} sites up (${o.processes ? 'one process each' : 'in this process'}); ${params.toLocaleString('en')} parameters, secure aggregation ${o.secureAggregation === false ? 'off' : 'on'}`);
    const before = process.memoryUsage();
    const peak = { rss: before.rss, arrayBuffers: before.arrayBuffers, heap: before.heapUsed };
    const sample = setInterval(() => {
      const m = process.memoryUsage();
      peak.rss = Math.max(peak.rss, m.rss);
      peak.arrayBuffers = Math.max(peak.arrayBuffers, m.arrayBuffers);
      peak.heap = Math.max(peak.heap, m.heapUsed);
    }, 20);
    const wire0 = wire();
    const started = Date.now();
    const deadline = o.roundDeadlineMs ?? 600_000;
    const res = await runStudy(c.url, wdbcManifest({
      name: `large model, ${params} parameters`,
      model: { template: 'mlp', hidden: o.hidden },
      training: { rounds: 1, localEpochs: 1, batchSize: 32, optimizer: 'sgd', learningRate: 0.01 },
      participation: { minSites: o.sites, roundDeadlineMs: deadline, waitForSitesMs: 60_000, maxRoundAttempts: 1 },
      ...(o.secureAggregation === false ? { privacy: { secureAggregation: false } } : {}),
    }), deadline * 3 + 120_000);
    const studyMs = Date.now() - started;
    clearInterval(sample);
    const round = (res.rounds[0] ?? {}) as { participants?: string[]; attempts?: number; durationMs?: number };
    const { resumes, ...transfer } = c.coordinator.transport.transferStats();
    const modelBytes = frameBytes(mlpShapes(o.hidden));
    if (o.logDir) procs.forEach((p, i) => writeFileSync(join(o.logDir!, `site-${i + 1}.log`), `${p.lines.join('\n')}\n`));
    const siteLines = (o.processes ? procs.flatMap((p) => logMessages(p.lines)) : agents.flatMap((a) => a.log.lines)) as { msg?: string; ms?: number; task?: string }[];
    const msOf = (pred: (l: { msg?: string; task?: string }) => boolean) => median(siteLines.filter(pred).map((l) => Number(l.ms)));
    const sum = c.log.lines.find((l) => l.msg === 'secure aggregation: sum unmasked') as { addMs?: number; unmaskMs?: number } | undefined;
    const phases = {
      download: msOf((l) => l.msg === 'download done'), trainTask: msOf((l) => l.msg === 'task done' && l.task === 'train'),
      upload: msOf((l) => l.msg === 'upload done'), evaluateTask: msOf((l) => l.msg === 'task done' && l.task === 'evaluate'),
      sumAdd: Number(sum?.addMs ?? NaN), unmask: Number(sum?.unmaskMs ?? NaN),
    };
    return {
      params, modelBytes, sites: o.sites, status: res.study.status, ...(res.study.error ? { error: res.study.error } : {}),
      participants: round.participants ?? [], attempts: round.attempts ?? 0, roundMs: round.durationMs ?? NaN, studyMs,
      coordinator: { rssBeforeMB: mb(before.rss), peakRssMB: mb(peak.rss), peakArrayBuffersMB: mb(peak.arrayBuffers), peakHeapMB: mb(peak.heap) },
      sitePeakRssMB: procs.map((p) => vmHwmMB(p.child.pid!)),
      wireBytes: wire() - wire0,
      transfer: { ...transfer, resumes: resumes.length }, phases,
    };
  } finally {
    await Promise.all(agents.map((s) => s.agent.stop()));
    await Promise.all(procs.map((p) => p.kill()));
    await c.coordinator.close();
  }
}
