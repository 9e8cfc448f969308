/**
 * Operations: an agent behind an HTTP proxy, a network that blocks WebSocket, the local health endpoint, and API
 * roles on every endpoint.
 */
import { createServer, request, type Server } from 'node:http';
import { connect } from 'node:net';
import { spawn } from 'node:child_process';
import { join } from 'node:path';
import { readFileSync, writeFileSync } from 'node:fs';
import { afterEach, describe, expect, it } from 'vitest';
import { agentFor, createStudy, json, makeSite, startCoordinator, waitFor, waitForEnd, wdbcManifest, type TestSite } from '../helpers/cluster.ts';
import { splitCsvForSites, WDBC } from '../../cli/demo.ts';
import type { Coordinator } from '../../coordinator/app.ts';

const parts = splitCsvForSites(WDBC, 2);
const manifest = () => wdbcManifest({ training: { rounds: 2, localEpochs: 1, batchSize: 32, optimizer: 'adam', learningRate: 0.05 } });

/** A minimal HTTP CONNECT proxy on loopback that counts the tunnels it opened. */
function startProxy(): Promise<{ server: Server; url: string; tunnels: string[] }> {
  const tunnels: string[] = [];
  const server = createServer((_req, res) => { res.writeHead(405); res.end(); });
  server.on('connect', (req, client, head) => {
    const [host, port] = (req.url ?? '').split(':');
    tunnels.push(req.url ?? '');
    const upstream = connect(Number(port), host, () => {
      client.write('HTTP/1.1 200 Connection Established\r\n\r\n');
      upstream.write(head);
      upstream.pipe(client);
      client.pipe(upstream);
    });
    upstream.on('error', () => client.destroy());
    client.on('error', () => upstream.destroy());
  });
  return new Promise((resolve) => server.listen(0, '127.0.0.1', () => {
    const a = server.address() as { port: number };
    resolve({ server, url: `http://127.0.0.1:${a.port}`, tunnels });
  }));
}

describe('operations', () => {
  let coordinator: Coordinator | undefined;
  let sites: TestSite[] = [];
  let proxy: Server | undefined;
  afterEach(async () => {
    await Promise.all(sites.map((s) => s.agent.stop()));
    sites = [];
    await coordinator?.close();
    proxy?.close();
  });

  it('should complete a study with one site behind an HTTP proxy (HTTPS_PROXY)', async () => {
    const c = await startCoordinator();
    coordinator = c.coordinator;
    const p = await startProxy();
    proxy = p.server;
    // What hospital IT does: name the proxy in site.json (or export HTTPS_PROXY).
    const made = await makeSite(c.url, 'Behind Proxy', parts[0]!);
    const cfgFile = join(made.dir, 'site.json');
    writeFileSync(cfgFile, JSON.stringify({ ...JSON.parse(readFileSync(cfgFile, 'utf8')) as object, proxy: p.url }));
    const behind = agentFor(made.dir);
    const direct = await makeSite(c.url, 'Direct', parts[1]!);
    sites = [behind, direct];
    await Promise.all(sites.map((s) => s.agent.start()));
    const id = await createStudy(c.url, manifest());
    await json(c.url, `/api/studies/${id}/start`, { method: 'POST' });
    const res = await waitForEnd(c.url, id, 60_000);
    expect(res.study.status).toBe('completed');
    expect(res.rounds.at(-1)!.participants.sort()).toEqual(['Behind Proxy', 'Direct']);
    expect(p.tunnels.length).toBeGreaterThan(0);
    expect(p.tunnels.every((t) => t === new URL(c.url).host)).toBe(true);
  });

  it('should complete a study over long-polling when WebSocket is blocked', async () => {
    const c = await startCoordinator({ transports: ['polling'] });
    coordinator = c.coordinator;
    sites = await Promise.all(parts.map((csv, i) => makeSite(c.url, `Polling ${i + 1}`, csv)));
    await Promise.all(sites.map((s) => s.agent.start()));
    const id = await createStudy(c.url, manifest());
    await json(c.url, `/api/studies/${id}/start`, { method: 'POST' });
    const res = await waitForEnd(c.url, id, 60_000);
    expect(res.study.status).toBe('completed');
    expect(res.rounds.at(-1)!.pooled.auc).toBeGreaterThan(0.95);
  });

  it('should serve /healthz on localhost from a running agent process', async () => {
    const c = await startCoordinator();
    coordinator = c.coordinator;
    const s = await makeSite(c.url, 'Health', parts[0]!);
    const port = 20000 + Math.floor(Math.random() * 20000);
    const child = spawn(process.execPath, [join(import.meta.dirname, '..', '..', 'bin', 'cohort.js'), 'site', 'run', '--dir', s.dir, '--health-port', String(port)], { stdio: 'ignore' });
    try {
      const body = await waitFor(() => new Promise<Record<string, unknown> | undefined>((resolve) => {
        const r = request({ host: '127.0.0.1', port, path: '/healthz' }, (res) => {
          let t = '';
          res.on('data', (d: Buffer) => (t += d.toString()));
          res.on('end', () => resolve(res.statusCode === 200 ? JSON.parse(t) as Record<string, unknown> : undefined));
        });
        r.on('error', () => resolve(undefined));
        r.end();
      }), 20_000, 200);
      expect(body).toMatchObject({ ok: true, site: 'Health' });
    } finally {
      child.kill('SIGTERM');
    }
  });

  it('should reject a missing or wrong-role token on every endpoint', async () => {
    const c = await startCoordinator({ authFailuresPerMinute: 1000 });
    coordinator = c.coordinator;
    const viewer = (await json<{ token: string }>(c.url, '/api/admin/tokens', { method: 'POST', body: { name: 'v', role: 'viewer' } })).body.token;
    const researcher = (await json<{ token: string }>(c.url, '/api/admin/tokens', { method: 'POST', body: { name: 'r', role: 'researcher' } })).body.token;
    const endpoints: [string, string, 'viewer' | 'researcher' | 'admin'][] = [
      ['GET', '/api/studies', 'viewer'], ['GET', '/api/sites', 'viewer'], ['GET', '/api/studies/x', 'viewer'],
      ['POST', '/api/studies', 'researcher'], ['POST', '/api/studies/x/start', 'researcher'], ['POST', '/api/studies/x/stop', 'researcher'],
      ['GET', '/api/studies/x/model/model.json', 'researcher'], ['GET', '/api/studies/x/model/weights.bin', 'researcher'], ['GET', '/api/audit', 'researcher'],
      ['POST', '/api/admin/site-invites', 'admin'], ['POST', '/api/admin/tokens', 'admin'], ['GET', '/api/admin/tokens', 'admin'],
      ['POST', '/api/admin/tokens/x/revoke', 'admin'], ['POST', '/api/admin/sites/x/revoke', 'admin'],
    ];
    const tokens = { viewer, researcher };
    for (const [method, path, role] of endpoints) {
      const none = await json<{ error: { code: string } }>(c.url, path, { method, token: null, ...(method === 'POST' ? { body: {} } : {}) });
      expect(none.status, `${method} ${path} without token`).toBe(401);
      expect(none.body.error.code).toBe('COHORT_ERR_AUTH_TOKEN_MISSING');
      const bad = await json<{ error: { code: string } }>(c.url, path, { method, token: 'cht_not_a_real_token', ...(method === 'POST' ? { body: {} } : {}) });
      expect(bad.body.error.code).toBe('COHORT_ERR_AUTH_TOKEN_INVALID');
      const lower = role === 'admin' ? tokens.researcher : role === 'researcher' ? tokens.viewer : undefined;
      if (lower) {
        const r = await json<{ error: { code: string } }>(c.url, path, { method, token: lower, ...(method === 'POST' ? { body: {} } : {}) });
        expect(r.status, `${method} ${path} with a lower role`).toBe(403);
        expect(r.body.error.code).toBe('COHORT_ERR_AUTH_FORBIDDEN');
      }
    }
    // Tokens are stored hashed only.
    expect(JSON.stringify(c.coordinator.store.listTokens())).not.toContain(viewer);
  });

  it('should rate-limit repeated failed authentications', async () => {
    const c = await startCoordinator();
    coordinator = c.coordinator;
    let status = 0;
    for (let i = 0; i < 25 && status !== 429; i++) status = (await json(c.url, '/api/studies', { token: `cht_guess_${i}` })).status;
    expect(status).toBe(429);
  });
});
