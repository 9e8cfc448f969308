/**
 * `site.json`: who the site is, where its coordinator is, which local datasets it offers. Paths are relative to
 * the site directory. Data never leaves the site; only a schema with rounded counts does.
 */
import { readFileSync, writeFileSync, existsSync } from 'node:fs';
import { isAbsolute, join } from 'node:path';
import { z } from 'zod';
import { CohortError } from '../protocol/errors.ts';
import { PolicySchema } from './policy.ts';

export const CsvDatasetSchema = z.object({
  id: z.string().min(1).max(128).regex(/^[A-Za-z0-9._:-]+$/),
  kind: z.literal('csv'),
  path: z.string().min(1),
  /** Label column (0/1 for binary tasks, or class names). */
  label: z.string().min(1),
  /** Feature columns in order; default: every column but the label and `exclude`. */
  features: z.array(z.string()).optional(),
  exclude: z.array(z.string()).default([]),
  /** Columns to one-hot encode. */
  categorical: z.array(z.string()).default([]),
});
export type CsvDatasetConfig = z.infer<typeof CsvDatasetSchema>;

export const SiteConfigSchema = z.object({
  name: z.string().min(1).max(200),
  coordinator: z.string().url(),
  /** The coordinator's Ed25519 key, pinned at enrollment; the agent refuses a coordinator that cannot prove it. */
  coordinatorPublicKey: z.string().optional(),
  siteId: z.string().optional(),
  keyFile: z.string().default('keys/identity.json'),
  /**
   * PEM CA bundle that signed the coordinator's TLS certificate (a private CA). When set, only it is trusted for the
   * coordinator; when absent, Node's roots and NODE_EXTRA_CA_CERTS are.
   */
  caFile: z.string().min(1).optional(),
  /** HTTP(S) proxy for the outbound connection; default: HTTPS_PROXY / HTTP_PROXY from the environment. */
  proxy: z.string().url().optional(),
  /** socket.io transports in order; long-polling first upgrades to WebSocket where the network allows it. */
  transports: z.array(z.enum(['polling', 'websocket'])).min(1).default(['polling', 'websocket']),
  policy: PolicySchema.default(PolicySchema.parse({})),
  datasets: z.array(CsvDatasetSchema).default([]),
  reconnect: z.object({
    initialDelayMs: z.number().int().min(50).default(1000),
    maxDelayMs: z.number().int().min(100).default(30_000),
  }).default({ initialDelayMs: 1000, maxDelayMs: 30_000 }),
});
export type SiteConfig = z.infer<typeof SiteConfigSchema>;

export const SITE_CONFIG_FILE = 'site.json';

export function resolveIn(dir: string, p: string): string {
  return isAbsolute(p) ? p : join(dir, p);
}

export function loadSiteConfig(dir: string): SiteConfig {
  const file = join(dir, SITE_CONFIG_FILE);
  if (!existsSync(file)) throw new CohortError('COHORT_ERR_SITE_CONFIG_INVALID', `${file} not found; run 'cohort site init' first`);
  let raw: unknown;
  try {
    raw = JSON.parse(readFileSync(file, 'utf8'));
  } catch (err) {
    throw new CohortError('COHORT_ERR_SITE_CONFIG_INVALID', `${file} is not valid JSON: ${(err as Error).message}`);
  }
  const res = SiteConfigSchema.safeParse(raw);
  if (!res.success) {
    const i = res.error.issues[0];
    throw new CohortError('COHORT_ERR_SITE_CONFIG_INVALID', `${file}: ${i?.path.join('.')}: ${i?.message}`);
  }
  return res.data;
}

export function writeSiteConfig(dir: string, config: z.input<typeof SiteConfigSchema>): void {
  writeFileSync(join(dir, SITE_CONFIG_FILE), `${JSON.stringify(config, null, 2)}\n`, { mode: 0o600 });
}
