/**
 * Test helpers: a real coordinator on port 0, real site agents over real sockets, real WDBC data, and the real
 * enrollment, signing and approval flow.
 */
import { mkdtempSync, mkdirSync, writeFileSync } from 'node:fs';
import { request as httpsRequest } from 'node:https';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import nacl from 'tweetnacl';
import pino, { type Logger } from 'pino';
import { createCoordinator, type Coordinator, type CoordinatorOptions } from '../../coordinator/app.ts';
import { newToken } from '../../coordinator/auth.ts';
import { SiteAgent } from '../../site-agent/agent.ts';
import { REDACT_PATHS } from '../../protocol/logging.ts';
import { loadSiteConfig } from '../../site-agent/config.ts';
import { loadIdentity } from '../../site-agent/keys.ts';
import type { Policy } from '../../site-agent/policy.ts';
import { siteInit } from '../../cli/site-commands.ts';
import { splitCsvForSites, WDBC } from '../../cli/demo.ts';
import { signedStudyRequest, type ResearcherKey } from '../../cli/researcher.ts';
import type { StudyManifestInput } from '../../protocol/messages.ts';
import { b64 } from '../../protocol/signing.ts';

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

/** The test researcher: signs every study the helpers create; test sites auto-approve it. */
const kp = nacl.sign.keyPair();
export const RESEARCHER: ResearcherKey = { name: 'Test Researcher', publicKey: b64(kp.publicKey), secretKey: kp.secretKey };

/** Admin token per coordinator URL, so `json()` authenticates as admin unless told otherwise. */
const adminTokens = new Map<string, string>();
export const adminTokenFor = (url: string): string => adminTokens.get(new URL(url).origin)!;
export const rememberAdminToken = (url: string, token: string): void => void adminTokens.set(new URL(url).origin, token);

export async function startCoordinator(opts: Partial<CoordinatorOptions> = {}): Promise<{ coordinator: Coordinator; url: string; log: CapturedLog; adminToken: string }> {
  const log = captureLogger();
  const adminToken = opts.adminToken ?? newToken('cht');
  const coordinator = await createCoordinator({ dataDir: null, port: 0, logger: log.logger, ...opts, adminToken });
  const url = await coordinator.start();
  adminTokens.set(new URL(url).origin, adminToken);
  return { coordinator, url, log, adminToken };
}

export interface TestSite {
  agent: SiteAgent;
  dir: string;
  name: string;
  log: CapturedLog;
}

export async function invite(url: string, name: string): Promise<string> {
  const r = await json<{ token: string }>(url, '/api/admin/site-invites', { method: 'POST', body: { name } });
  if (r.status !== 201) throw new Error(`invite failed: ${JSON.stringify(r.body)}`);
  return r.body.token;
}

/**
 * Creates and enrolls a site (identity key, one-time token, pinned coordinator key, site.json) holding `csv`, and
 * returns an agent for it (not started). Its policy auto-approves the test researcher unless overridden.
 */
export async function makeSite(url: string, name: string, csv: string, opts: { policy?: Partial<Policy>; dir?: string; enroll?: boolean; caFile?: string } = {}): Promise<TestSite> {
  const dir = opts.dir ?? tempDir('cohort-site-');
  mkdirSync(dir, { recursive: true });
  writeFileSync(join(dir, 'data.csv'), csv);
  const token = opts.enroll === false ? undefined : await invite(url, name);
  await siteInit({
    dir, coordinator: url, name, dataset: 'wdbc', csv: join(dir, 'data.csv'), label: 'malignant', ...(token ? { token } : {}), ...(opts.caFile ? { caFile: opts.caFile } : {}),
    policy: { autoApprove: [{ name: RESEARCHER.name, publicKey: RESEARCHER.publicKey }], ...opts.policy },
  });
  return agentFor(dir);
}

/** A fresh agent over an existing site directory (e.g. after editing its site.json). */
export function agentFor(dir: string): TestSite {
  const config = loadSiteConfig(dir);
  config.reconnect = { initialDelayMs: 100, maxDelayMs: 500 };
  const log = captureLogger();
  const agent = new SiteAgent({ dir, config, identity: loadIdentity(join(dir, config.keyFile)), log: log.logger });
  return { agent, dir, name: config.name, log };
}

/** WDBC split across `n` sites, each enrolled, started and authenticated. */
export async function startSites(url: string, n: number, policy?: Partial<Policy>): Promise<TestSite[]> {
  const parts = splitCsvForSites(WDBC, n);
  const sites = await Promise.all(parts.map((csv, i) => makeSite(url, `Site ${i + 1}`, csv, policy ? { policy } : {})));
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

/** CA (PEM) per HTTPS origin, for coordinators the tests start with a throwaway certificate. */
const trustedCas = new Map<string, string>();
export const rememberCa = (url: string, pem: string): void => void trustedCas.set(new URL(url).origin, pem);

function httpsJson(target: URL, init: { method: string; headers: Record<string, string>; body?: string }, ca: string): Promise<{ status: number; text: string; headers: Record<string, string | string[] | undefined> }> {
  return new Promise((resolve, reject) => {
    const req = httpsRequest(target, { method: init.method, headers: init.headers, ca }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => resolve({ status: res.statusCode ?? 0, text: Buffer.concat(chunks).toString('utf8'), headers: res.headers }));
    });
    req.on('error', reject);
    req.end(init.body);
  });
}

/** JSON over HTTP(S); authenticates as the coordinator's admin unless `token` is given (null: no token). */
export async function json<T>(url: string, path: string, init: { method?: string; body?: unknown; token?: string | null } = {}): Promise<{ status: number; body: T }> {
  const token = init.token === undefined ? adminTokens.get(new URL(url).origin) : init.token;
  const headers: Record<string, string> = {};
  if (init.body !== undefined) headers['content-type'] = 'application/json';
  if (token) headers.authorization = `Bearer ${token}`;
  const ca = trustedCas.get(new URL(url).origin);
  if (ca) {
    const body = init.body === undefined ? undefined : typeof init.body === 'string' ? init.body : JSON.stringify(init.body);
    const r = await httpsJson(new URL(path, url), { method: init.method ?? 'GET', headers, ...(body === undefined ? {} : { body }) }, ca);
    return { status: r.status, body: JSON.parse(r.text) as T };
  }
  const res = await fetch(new URL(path, url), {
    method: init.method ?? 'GET', headers,
    ...(init.body === undefined ? {} : { body: typeof init.body === 'string' ? init.body : JSON.stringify(init.body) }),
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
  study: { id: string; status: string; completedRounds: number; error?: { code: string; message: string }; refusals?: Record<string, { code: string; message: string }> };
  rounds: { round: number; participants: string[]; failures: { site: string; code: string; stage: string }[]; pooled: { auc?: number; accuracy: number; n: number }; perSite: Record<string, { auc?: number }>; tasks?: Record<string, { train: string; evaluate?: string }> }[];
}

/** Creates a study signed by the test researcher (or unsigned), without starting it. */
export async function createStudy(url: string, manifest: StudyManifestInput, opts: { unsigned?: boolean } = {}): Promise<string> {
  const body = opts.unsigned ? manifest : signedStudyRequest(manifest, RESEARCHER);
  const created = await json<{ study: { id: string } }>(url, '/api/studies', { method: 'POST', body });
  if (created.status !== 201) throw new Error(`create failed: ${JSON.stringify(created.body)}`);
  return created.body.study.id;
}

export async function waitForEnd(url: string, id: string, timeoutMs = 120_000): Promise<StudyStatusBody> {
  return waitFor(async () => {
    const s = await json<StudyStatusBody>(url, `/api/studies/${id}`);
    return ['completed', 'failed', 'stopped'].includes(s.body.study.status) ? s.body : undefined;
  }, timeoutMs, 200);
}

export async function runStudy(url: string, manifest: StudyManifestInput, timeoutMs = 120_000): Promise<StudyStatusBody> {
  const id = await createStudy(url, manifest);
  await json(url, `/api/studies/${id}/start`, { method: 'POST' });
  return waitForEnd(url, id, timeoutMs);
}
