import { existsSync, mkdirSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:http';
import { join, resolve } from 'node:path';
import { makeLogger } from '../protocol/logging.ts';
import { keyFingerprint } from '../protocol/signing.ts';
import { SiteAgent } from '../site-agent/agent.ts';
import { loadSiteConfig, resolveIn, writeSiteConfig, SITE_CONFIG_FILE } from '../site-agent/config.ts';
import { createIdentity, loadIdentity, publicKeyB64 } from '../site-agent/keys.ts';
import { enroll } from '../site-agent/enroll.ts';
import { readCa } from '../site-agent/tls-trust.ts';
import { PolicySchema, type Policy } from '../site-agent/policy.ts';

export interface SiteInitOptions {
  dir: string;
  coordinator: string;
  name: string;
  /** One-time enrollment token from `cohort admin invite-site`. */
  token?: string;
  dataset?: string;
  csv?: string;
  label?: string;
  policy?: Partial<Policy>;
  /** PEM CA bundle for a coordinator with a private-CA certificate; kept in site.json as `caFile`. */
  caFile?: string;
}

/** What each policy field means, written next to it in site.json (JSON has no comments). */
const POLICY_NOTES = {
  '//': 'Site policy, enforced by this agent (docs/operations.md). Refusals reach the researcher as coded reasons.',
  '//requireSecureAggregation': 'true: join only studies where the coordinator learns nothing but the sum of updates',
  '//minSitesPerAggregate': 'refuse a round that combines fewer sites than this',
  '//maxEpsilonPerStudy': 'largest differential-privacy epsilon (at delta) spent on one study; null: no limit',
  '//minCellCount': 'no count or metric from fewer cases than this leaves the site',
  '//autoApprove': 'researchers (name + public key) whose signed studies need no manual approval',
};

/**
 * Creates the site's identity key (mode 0600) and `site.json`, and — given a one-time token — enrolls with the
 * coordinator and pins its public key. Never overwrites an existing identity.
 */
export async function siteInit(o: SiteInitOptions): Promise<{ publicKey: string; configFile: string; siteId?: string; coordinatorFingerprint?: string }> {
  const dir = resolve(o.dir);
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  if (existsSync(join(dir, SITE_CONFIG_FILE))) throw new Error(`${join(dir, SITE_CONFIG_FILE)} already exists`);
  const keyFile = 'keys/identity.json';
  const id = createIdentity(join(dir, keyFile));
  const caFile = o.caFile ? resolve(o.caFile) : undefined;
  const enrolled = o.token ? await enroll(o.coordinator, o.token, o.name, id, undefined, readCa(caFile)) : undefined;
  const datasets = o.dataset && o.csv && o.label ? [{ id: o.dataset, kind: 'csv' as const, path: resolve(o.csv), label: o.label }] : [];
  const policy = { ...POLICY_NOTES, ...PolicySchema.parse(o.policy ?? {}) };
  writeSiteConfig(dir, {
    name: o.name, coordinator: o.coordinator, keyFile, datasets, policy, ...(caFile ? { caFile } : {}),
    ...(enrolled ? { siteId: enrolled.siteId, coordinatorPublicKey: enrolled.coordinatorPublicKey } : {}),
  });
  return {
    publicKey: publicKeyB64(id), configFile: join(dir, SITE_CONFIG_FILE),
    ...(enrolled ? { siteId: enrolled.siteId, coordinatorFingerprint: keyFingerprint(enrolled.coordinatorPublicKey) } : {}),
  };
}

/** Runs the agent until SIGINT/SIGTERM. `healthPort` serves GET /healthz on 127.0.0.1 only. */
export async function siteRun(dirArg: string, healthPort?: number): Promise<void> {
  const dir = resolve(dirArg);
  const config = loadSiteConfig(dir);
  const log = makeLogger('cohort-site').child({ site: config.name });
  const identity = loadIdentity(resolveIn(dir, config.keyFile));
  const agent = new SiteAgent({ dir, config, identity, log });
  let health: ReturnType<typeof createServer> | undefined;
  if (healthPort !== undefined) {
    health = createServer((req, res) => {
      const ok = req.url === '/healthz';
      res.writeHead(ok ? (agent.connected ? 200 : 503) : 404, { 'content-type': 'application/json' });
      res.end(JSON.stringify(ok ? { ok: agent.connected, site: config.name, ...agent.stats } : { error: 'not found' }));
    }).listen(healthPort, '127.0.0.1');
  }
  const shutdown = async () => {
    log.info('shutting down');
    health?.close();
    await agent.stop();
    process.exit(0);
  };
  process.once('SIGINT', () => void shutdown());
  process.once('SIGTERM', () => void shutdown());
  await agent.start();
}
