import { existsSync, mkdirSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:http';
import { join, resolve } from 'node:path';
import { makeLogger } from '../protocol/logging.ts';
import { SiteAgent } from '../site-agent/agent.ts';
import { loadSiteConfig, resolveIn, writeSiteConfig, SITE_CONFIG_FILE } from '../site-agent/config.ts';
import { createIdentity, loadIdentity, publicKeyB64 } from '../site-agent/keys.ts';

export interface SiteInitOptions {
  dir: string;
  coordinator: string;
  name: string;
  dataset?: string;
  csv?: string;
  label?: string;
}

/** Creates the site's identity key (mode 0600) and `site.json`. Never overwrites an existing identity. */
export function siteInit(o: SiteInitOptions): { publicKey: string; configFile: string } {
  const dir = resolve(o.dir);
  mkdirSync(dir, { recursive: true, mode: 0o700 });
  if (existsSync(join(dir, SITE_CONFIG_FILE))) throw new Error(`${join(dir, SITE_CONFIG_FILE)} already exists`);
  const keyFile = 'keys/identity.json';
  const id = createIdentity(join(dir, keyFile));
  const datasets = o.dataset && o.csv && o.label ? [{ id: o.dataset, kind: 'csv' as const, path: resolve(o.csv), label: o.label }] : [];
  writeSiteConfig(dir, { name: o.name, coordinator: o.coordinator, keyFile, datasets });
  return { publicKey: publicKeyB64(id), configFile: join(dir, SITE_CONFIG_FILE) };
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
  writeFileSync(join(dir, '.agent.pid'), String(process.pid));
}
