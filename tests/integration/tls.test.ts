/**
 * TLS end to end with a throwaway CA: a coordinator on HTTPS (REST and socket.io on one port), real agents that
 * trust the CA through site.json `caFile` or NODE_EXTRA_CA_CERTS complete a study, and agents that trust another
 * CA, or see an expired certificate, are refused with COHORT_ERR_TLS_UNTRUSTED before they send anything.
 */
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { agentFor, json, makeSite, rememberCa, runStudy, startCoordinator, tempDir, wdbcManifest, type TestSite } from '../helpers/cluster.ts';
import { makeCa, makeServerCert, writePem, type Ca } from '../helpers/tls-certs.ts';
import { BIN, startCoordinatorProcess, startSiteProcess, type Proc } from '../helpers/processes.ts';
import { spawnSync } from 'node:child_process';
import { newToken } from '../../coordinator/auth.ts';
import { splitCsvForSites, WDBC } from '../../cli/demo.ts';
import { checkTls } from '../../coordinator/tls.ts';
import { siteInit } from '../../cli/site-commands.ts';
import type { Coordinator } from '../../coordinator/app.ts';
import { HSTS } from '../../coordinator/security-headers.ts';

describe('TLS between sites and the coordinator', () => {
  let ca: Ca;
  let otherCa: Ca;
  let dir: string;
  let coordinator: Coordinator;
  let url: string;
  let coordLog: { text(): string };
  let serverKey: string;
  const sites: TestSite[] = [];
  const procs: Proc[] = [];
  const parts = splitCsvForSites(WDBC, 2);

  beforeAll(async () => {
    [ca, otherCa] = await Promise.all([makeCa('Cohort Test CA'), makeCa('Some Other CA')]);
    dir = tempDir('cohort-tls-');
    const server = await makeServerCert(ca);
    serverKey = server.key;
    ({ coordinator, url, log: coordLog } = await startCoordinator({ tls: server }));
    rememberCa(url, ca.pem);
  });
  afterAll(async () => {
    await Promise.all(sites.map((s) => s.agent.stop()));
    await Promise.all(procs.map((p) => p.kill()));
    await coordinator?.close();
  });

  it('should complete a study over HTTPS with one agent trusting the CA by caFile and one by NODE_EXTRA_CA_CERTS', async () => {
    expect(url.startsWith('https://')).toBe(true);
    const caFile = writePem(dir, 'ca.pem', ca.pem);
    const inProcess = await makeSite(url, 'Site 1', parts[0]!, { caFile });
    expect(JSON.parse(readFileSync(join(inProcess.dir, 'site.json'), 'utf8'))).toMatchObject({ caFile });
    sites.push(inProcess);
    await inProcess.agent.start();
    // The second site is a real `cohort site run` process with no caFile: it trusts the CA through the environment.
    const viaEnv = await makeSite(url, 'Site 2', parts[1]!, { caFile });
    const cfgFile = join(viaEnv.dir, 'site.json');
    const cfg = JSON.parse(readFileSync(cfgFile, 'utf8')) as Record<string, unknown>;
    delete cfg.caFile;
    writeFileSync(cfgFile, JSON.stringify(cfg));
    procs.push(await startSiteProcess(viaEnv.dir, { env: { NODE_EXTRA_CA_CERTS: caFile } }));

    const res = await runStudy(url, wdbcManifest({ training: { rounds: 2, localEpochs: 1, batchSize: 32, optimizer: 'adam', learningRate: 0.05 } }));
    expect(res.study.status).toBe('completed');
    expect(res.rounds.at(-1)!.participants.sort()).toEqual(['Site 1', 'Site 2']);
    // The TLS private key never reaches a log.
    const keyBody = serverKey.split('\n').filter((l) => l && !l.startsWith('-----')).join('');
    expect(coordLog.text()).not.toContain(keyBody.slice(10, 40));
  });

  it('should serve HTTPS from the CLI with --tls-cert/--tls-key and refuse a mismatched key with COHORT_ERR_TLS_CONFIG', async () => {
    const good = await makeServerCert(ca);
    const other = await makeServerCert(ca);
    const cert = writePem(dir, 'cli-cert.pem', good.cert);
    const admin = newToken('cht');
    const p = await startCoordinatorProcess(tempDir('cohort-tls-cli-'), { adminToken: admin, args: ['--tls-cert', cert, '--tls-key', writePem(dir, 'cli-key.pem', good.key)] });
    procs.push(p);
    expect(p.url.startsWith('https://')).toBe(true);
    rememberCa(p.url, ca.pem);
    expect((await json<{ ok: boolean }>(p.url, '/healthz')).body.ok).toBe(true);
    const bad = spawnSync(process.execPath, [BIN, 'coordinator', '--data-dir', tempDir('cohort-tls-bad-'), '--port', '0', '--tls-cert', cert, '--tls-key', writePem(dir, 'other-key.pem', other.key)], { encoding: 'utf8', timeout: 60_000 });
    expect(bad.status).toBe(3);
    expect(bad.stderr).toContain('COHORT_ERR_TLS_CONFIG');
    expect(bad.stderr).not.toContain('PRIVATE KEY');
  });

  it('should refuse a coordinator certificate from another CA with COHORT_ERR_TLS_UNTRUSTED, at enrollment and at connection', async () => {
    const wrongCa = writePem(dir, 'other-ca.pem', otherCa.pem);
    // Enrollment: the token never leaves the site over an untrusted connection.
    const token = (await json<{ token: string }>(url, '/api/admin/site-invites', { method: 'POST', body: { name: 'Wrong CA' } })).body.token;
    await expect(siteInit({ dir: tempDir('cohort-site-'), coordinator: url, name: 'Wrong CA', token, caFile: wrongCa })).rejects.toMatchObject({ code: 'COHORT_ERR_TLS_UNTRUSTED' });
    // Connection: an enrolled site whose caFile names the wrong CA stops with the code, without retrying.
    const site = await makeSite(url, 'Site 3', parts[0]!, { caFile: writePem(dir, 'ca3.pem', ca.pem) });
    const cfgFile = join(site.dir, 'site.json');
    writeFileSync(cfgFile, JSON.stringify({ ...(JSON.parse(readFileSync(cfgFile, 'utf8')) as object), caFile: wrongCa }));
    const wrong = agentFor(site.dir);
    sites.push(wrong);
    const err = await wrong.agent.start().catch((e: unknown) => e);
    expect(err).toMatchObject({ code: 'COHORT_ERR_TLS_UNTRUSTED' });
    expect(String((err as Error).message)).toMatch(/not trusted/);
    expect(wrong.log.lines.some((l) => l.code === 'COHORT_ERR_TLS_UNTRUSTED')).toBe(true);
    // Nothing reached the coordinator: the site never came online.
    const online = await json<{ sites: { name: string; online: boolean }[] }>(url, '/api/sites');
    expect(online.body.sites.find((s) => s.name === 'Site 3')?.online).toBe(false);
  });

  it('should refuse an expired certificate and a certificate for another host with COHORT_ERR_TLS_UNTRUSTED', async () => {
    const caFile = writePem(dir, 'ca-x.pem', ca.pem);
    for (const bad of [await makeServerCert(ca, { expired: true }), await makeServerCert(ca, { hosts: ['coordinator.example.org'] })]) {
      const c = await startCoordinator({ tls: bad });
      try {
        const siteDir = tempDir('cohort-site-');
        await siteInit({ dir: siteDir, coordinator: c.url, name: 'Expired', caFile });
        const a = agentFor(siteDir);
        await expect(a.agent.start()).rejects.toMatchObject({ code: 'COHORT_ERR_TLS_UNTRUSTED' });
        await a.agent.stop();
      } finally {
        await c.coordinator.close();
      }
    }
  });

  it('should send HSTS and the security headers over HTTPS, and refuse mismatched or broken PEM files with COHORT_ERR_TLS_CONFIG', async () => {
    const dash = await fetchHeaders(url, '/');
    expect(dash['strict-transport-security']).toBe(HSTS);
    expect(dash['content-security-policy']).toContain("script-src 'self'");
    const api = await fetchHeaders(url, '/api/sites');
    expect(api['cache-control']).toBe('no-store');
    expect(api['content-security-policy']).toContain("default-src 'none'");
    const a = await makeServerCert(ca);
    const b = await makeServerCert(ca);
    expect(() => checkTls({ cert: a.cert, key: b.key })).toThrow(expect.objectContaining({ code: 'COHORT_ERR_TLS_CONFIG', message: 'the key does not match the certificate' }));
    expect(() => checkTls({ cert: 'not a certificate', key: a.key })).toThrow(expect.objectContaining({ code: 'COHORT_ERR_TLS_CONFIG' }));
  });

  async function fetchHeaders(base: string, path: string): Promise<Record<string, string | string[] | undefined>> {
    const { request } = await import('node:https');
    return new Promise((resolve, reject) => {
      request(new URL(path, base), { ca: ca.pem }, (res) => {
        res.resume();
        resolve(res.headers);
      }).on('error', reject).end();
    });
  }
});
