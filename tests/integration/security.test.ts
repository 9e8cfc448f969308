/**
 * Security properties an operator relies on: no secret ever reaches a log, failed authentications are rate
 * limited on every door (REST, enrollment, site handshake, live events), and every response carries the security
 * headers.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { io } from 'socket.io-client';
import nacl from 'tweetnacl';
import { json, RESEARCHER, runStudy, startCoordinator, startSites, tempDir, wdbcManifest, type CapturedLog, type TestSite } from '../helpers/cluster.ts';
import { connectRogue } from '../helpers/rogue-site.ts';
import { EVENTS_NAMESPACE, SITE_NAMESPACE } from '../../protocol/events.ts';
import type { Coordinator } from '../../coordinator/app.ts';
import { API_CSP, DASHBOARD_CSP } from '../../coordinator/security-headers.ts';

/** Every spelling in which a secret could leak: raw, base64, base64url, hex, and a 12-character piece of each. */
function forms(secret: string | Uint8Array): string[] {
  const buf = typeof secret === 'string' ? Buffer.from(secret) : Buffer.from(secret);
  const out = typeof secret === 'string' ? [secret, secret.replace(/^[a-z]+_/, '')] : [];
  for (const enc of ['base64', 'base64url', 'hex'] as const) out.push(buf.toString(enc));
  return [...out, ...out.map((s) => s.slice(4, 16))].filter((s) => s.length >= 12);
}

describe('secrets and authentication limits', () => {
  const closers: (() => Promise<void>)[] = [];
  afterAll(async () => {
    for (const c of closers.reverse()) await c();
  });

  it('should keep every token, key and signature secret out of all logs of a full study, enrollment and failed authentications', async () => {
    const dataDir = tempDir('cohort-secrets-');
    const c = await startCoordinator({ dataDir });
    closers.push(() => c.coordinator.close());
    const sites = await startSites(c.url, 2);
    closers.push(async () => void (await Promise.all(sites.map((s) => s.agent.stop()))));
    const secrets: (string | Uint8Array)[] = [c.adminToken, RESEARCHER.secretKey.subarray(0, 32)];

    // Tokens made through the API: an invite used for enrollment, an unused invite, a researcher token (revoked).
    const invite = await json<{ token: string }>(c.url, '/api/admin/site-invites', { method: 'POST', body: { name: 'Late Site' } });
    const unused = await json<{ token: string }>(c.url, '/api/admin/site-invites', { method: 'POST', body: {} });
    const researcher = await json<{ token: string; tokenId: string }>(c.url, '/api/admin/tokens', { method: 'POST', body: { name: 'Dr R', role: 'researcher' } });
    secrets.push(invite.body.token, unused.body.token, researcher.body.token);
    await json(c.url, `/api/admin/tokens/${researcher.body.tokenId}/revoke`, { method: 'POST' });
    // Failed authentications of every kind, each carrying secret material the coordinator must not echo.
    await json(c.url, '/api/studies', { token: researcher.body.token }); // revoked
    await json(c.url, '/api/studies', { token: `${c.adminToken}x` }); // a near miss of the real token
    const kp = nacl.sign.keyPair();
    const badEnroll = { token: invite.body.token, name: 'Late Site', publicKey: Buffer.from(kp.publicKey).toString('base64'), signature: Buffer.from(nacl.sign.detached(new Uint8Array(8), kp.secretKey)).toString('base64') };
    await json(c.url, '/api/enroll', { method: 'POST', body: badEnroll, token: null });
    secrets.push(kp.secretKey.subarray(0, 32));
    const rogue = await connectRogue(c.url, 'Site 1', () => ({ ok: false }), kp);
    await rogue.authenticate({ signWith: kp.secretKey }); // right signature, wrong key for the registered name
    rogue.close();
    const ev = io(new URL(EVENTS_NAMESPACE, c.url).toString(), { transports: ['websocket'], reconnection: false, auth: { token: unused.body.token } });
    await new Promise((r) => ev.once('connect_error', r));
    ev.close();

    const res = await runStudy(c.url, wdbcManifest({ training: { rounds: 2, localEpochs: 1, batchSize: 32, optimizer: 'adam', learningRate: 0.05 } }));
    expect(res.study.status).toBe('completed');

    // Keys at rest: the coordinator identity and each site's identity.
    const coord = JSON.parse(readFileSync(join(dataDir, 'identity.json'), 'utf8')) as { secretKey: string };
    secrets.push(Buffer.from(coord.secretKey, 'base64').subarray(0, 32));
    for (const s of sites) {
      const k = JSON.parse(readFileSync(join(s.dir, 'keys', 'identity.json'), 'utf8')) as { secretKey: string };
      secrets.push(Buffer.from(k.secretKey, 'base64').subarray(0, 32));
    }

    const logs: CapturedLog[] = [c.log, ...sites.map((s: TestSite) => s.log)];
    const all = logs.map((l) => l.text()).join('\n');
    // The logs are real and cover what happened (so the search below searched something).
    for (const expected of ['round completed', 'site handshake refused', 'COHORT_ERR_AUTH_TOKEN_INVALID', 'COHORT_ERR_AUTH_KEY_MISMATCH', 'task done']) {
      expect(all, expected).toContain(expected);
    }
    for (const secret of secrets) {
      for (const f of forms(secret)) expect(all.includes(f), `a secret (${f.slice(0, 4)}...) appears in the logs`).toBe(false);
    }
  });

  it('should rate limit failed site handshakes per address and then refuse connections with COHORT_ERR_AUTH_RATE_LIMITED', async () => {
    const c = await startCoordinator({ authFailuresPerMinute: 5, enrollment: 'token' });
    closers.push(() => c.coordinator.close());
    const codes: string[] = [];
    for (let i = 0; i < 5; i++) {
      const r = await connectRogue(c.url, `Stranger ${i}`, () => ({ ok: false }));
      const reply = await r.authenticate();
      if (!reply.ok) codes.push(reply.error.code);
      r.close();
    }
    expect(codes).toEqual(Array(5).fill('COHORT_ERR_AUTH_UNKNOWN_SITE'));
    const blocked = io(new URL(SITE_NAMESPACE, c.url).toString(), { transports: ['websocket'], reconnection: false });
    const err = await new Promise<Error>((resolve) => blocked.once('connect_error', resolve));
    blocked.close();
    expect(err.message).toBe('COHORT_ERR_AUTH_RATE_LIMITED');
    // REST and enrollment share the limit for this address.
    const rest = await json<{ error: { code: string } }>(c.url, '/api/studies', { token: 'cht_guess' });
    expect(rest.status).toBe(429);
    expect(rest.body.error.code).toBe('COHORT_ERR_AUTH_RATE_LIMITED');
    const enroll = await json<{ error: { code: string } }>(c.url, '/api/enroll', { method: 'POST', body: { token: 'enr_guess_guess', name: 'x', publicKey: 'AA==', signature: 'AA==' }, token: null });
    expect(enroll.status).toBe(429);
    // Every refused handshake was logged with its code (and, per the test above, without secrets).
    expect(c.log.lines.filter((l) => l.code === 'COHORT_ERR_AUTH_UNKNOWN_SITE')).toHaveLength(5);
  });

  it('should refuse enrollment guesses past the limit with 429 and a code', async () => {
    const c = await startCoordinator({ authFailuresPerMinute: 3 });
    closers.push(() => c.coordinator.close());
    const statuses: number[] = [];
    for (let i = 0; i < 5; i++) {
      const r = await json<{ error: { code: string } }>(c.url, '/api/enroll', { method: 'POST', body: { token: `enr_guess_${i}_xxxxxxxx`, name: 'x', publicKey: Buffer.alloc(32).toString('base64'), signature: Buffer.alloc(64).toString('base64') }, token: null });
      statuses.push(r.status);
    }
    expect(statuses).toEqual([401, 401, 401, 429, 429]);
    // The hello of a valid-looking site from the same address is refused before any challenge is issued.
    const r = await connectRogue(c.url, 'Anyone', () => ({ ok: false })).catch((e: Error) => e);
    expect(r).toBeInstanceOf(Error);
    expect((r as Error).message).toBe('COHORT_ERR_AUTH_RATE_LIMITED');
  });

  it('should send security headers on the dashboard and the API, and no HSTS over plain HTTP', async () => {
    const c = await startCoordinator();
    closers.push(() => c.coordinator.close());
    const page = await fetch(new URL('/', c.url));
    expect(page.headers.get('content-security-policy')).toBe(DASHBOARD_CSP);
    expect(page.headers.get('x-frame-options')).toBe('DENY');
    expect(page.headers.get('x-content-type-options')).toBe('nosniff');
    expect(page.headers.get('strict-transport-security')).toBeNull();
    for (const path of ['/api/studies', '/api/nope', '/healthz']) {
      const r = await fetch(new URL(path, c.url));
      expect(r.headers.get('content-security-policy'), path).toBe(API_CSP);
      expect(r.headers.get('referrer-policy'), path).toBe('no-referrer');
      expect(r.headers.get('cross-origin-opener-policy'), path).toBe('same-origin');
      if (path.startsWith('/api/')) expect(r.headers.get('cache-control'), path).toBe('no-store');
    }
  });
});
