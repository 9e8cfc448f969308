/**
 * Test helpers: a real coordinator on port 0, real site agents over real sockets, real WDBC data.
 */
import { mkdtempSync, mkdirSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import pino, { type Logger } from 'pino';
import { createCoordinator, type Coordinator, type CoordinatorOptions } from '../../coordinator/app.ts';
import { SiteAgent } from '../../site-agent/agent.ts';
import { REDACT_PATHS } from '../../protocol/logging.ts';
import { loadSiteConfig } from '../../site-agent/config.ts';
import { loadIdentity } from '../../site-agent/keys.ts';
import { siteInit } from '../../cli/site-commands.ts';
import { splitCsvForSites, WDBC } from '../../cli/demo.ts';
import type { StudyManifestInput } from '../../protocol/messages.ts';

export interface CapturedLog {
  logger: Logger;
  lines: Record<string, unknown>[];
  text: () => string;
}

/** A pino logger whose JSON lines land in memory, so tests can assert what was logged (and what was not). */
export function captureLogger(): CapturedLog {
  const raw: string[] = [];
  const lines: Record<string, unknown>[] = [];
  const logger = pino({ level: 'debug', redact: { paths: REDACT_PATHS, censor: '[redacted]' } }, {
    write(s: string) {
      raw.push(s);
      lines.push(JSON.parse(s) as Record<string, unknown>);
    },
  });
  return { logger, lines, text: () => raw.join('') };
}

export function tempDir(prefix = 'cohort-test-'): string {
  return mkdtempSync(join(tmpdir(), prefix));
}

export async function startCoordinator(opts: Partial<CoordinatorOptions> = {}): Promise<{ coordinator: Coordinator; url: string; log: CapturedLog }> {
  const log = captureLogger();
  const coordinator = await createCoordinator({ dataDir: null, port: 0, logger: log.logger, ...opts });
  const url = await coordinator.start();
  return { coordinator, url, log };
}

export interface TestSite {
  agent: SiteAgent;
  dir: string;
  name: string;
  log: CapturedLog;
}

/** Creates a site directory (identity key + site.json) holding `csv`, and an agent for it (not started). */
export function makeSite(url: string, name: string, csv: string, dir = tempDir('cohort-site-')): TestSite {
  mkdirSync(dir, { recursive: true });
  writeFileSync(join(dir, 'data.csv'), csv);
  siteInit({ dir, coordinator: url, name, dataset: 'wdbc', csv: join(dir, 'data.csv'), label: 'malignant' });
  const config = loadSiteConfig(dir);
  config.reconnect = { initialDelayMs: 100, maxDelayMs: 500 };
  const log = captureLogger();
  const agent = new SiteAgent({ dir, config, identity: loadIdentity(join(dir, config.keyFile)), log: log.logger });
  return { agent, dir, name, log };
}

/** WDBC split across `n` sites, each started and authenticated. */
export async function startSites(url: string, n: number): Promise<TestSite[]> {
  const parts = splitCsvForSites(WDBC, n);
  const sites = parts.map((csv, i) => makeSite(url, `Site ${i + 1}`, csv));
  await Promise.all(sites.map((s) => s.agent.start()));
  return sites;
}

export function wdbcManifest(over: Partial<StudyManifestInput> = {}): StudyManifestInput {
  return {
    name: 'wdbc test',
    task: { dataset: 'wdbc', label: 'malignant' },
    model: { template: 'logreg' },
    training: { rounds: 3, localEpochs: 2, batchSize: 16, optimizer: 'adam', learningRate: 0.05 },
    participation: { minSites: 2, roundDeadlineMs: 20_000, waitForSitesMs: 20_000, maxRoundAttempts: 2 },
    evaluation: { holdoutFraction: 0.25 },
    seed: 42,
    ...over,
  };
}

export async function json<T>(url: string, path: string, init: { method?: string; body?: unknown } = {}): Promise<{ status: number; body: T }> {
  const res = await fetch(new URL(path, url), {
    method: init.method ?? 'GET',
    ...(init.body === undefined ? {} : { body: typeof init.body === 'string' ? init.body : JSON.stringify(init.body), headers: { 'content-type': 'application/json' } }),
  });
  return { status: res.status, body: (await res.json()) as T };
}

export async function waitFor<T>(fn: () => Promise<T | undefined> | T | undefined, timeoutMs = 60_000, everyMs = 100): Promise<T> {
  const end = Date.now() + timeoutMs;
  for (;;) {
    const v = await fn();
    if (v !== undefined && v !== false) return v;
    if (Date.now() > end) throw new Error(`waitFor timed out after ${timeoutMs} ms`);
    await new Promise((r) => setTimeout(r, everyMs));
  }
}

export interface StudyStatusBody {
  study: { id: string; status: string; completedRounds: number; error?: { code: string; message: string } };
  rounds: { round: number; participants: string[]; failures: { site: string; code: string; stage: string }[]; pooled: { auc?: number; accuracy: number; n: number }; perSite: Record<string, { auc?: number }> }[];
}

export async function runStudy(url: string, manifest: StudyManifestInput, timeoutMs = 120_000): Promise<StudyStatusBody> {
  const created = await json<{ study: { id: string } }>(url, '/api/studies', { method: 'POST', body: manifest });
  if (created.status !== 201) throw new Error(`create failed: ${JSON.stringify(created.body)}`);
  const id = created.body.study.id;
  await json(url, `/api/studies/${id}/start`, { method: 'POST' });
  return waitFor(async () => {
    const s = await json<StudyStatusBody>(url, `/api/studies/${id}`);
    return ['completed', 'failed', 'stopped'].includes(s.body.study.status) ? s.body : undefined;
  }, timeoutMs, 200);
}
