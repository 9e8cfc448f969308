import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import nacl from 'tweetnacl';
import { io } from 'socket.io-client';
import { startCoordinator, json } from '../helpers/cluster.ts';
import { connectRogue } from '../helpers/rogue-site.ts';
import type { Coordinator } from '../../coordinator/app.ts';
import type { CapturedLog } from '../helpers/cluster.ts';
import { SITE_NAMESPACE } from '../../protocol/events.ts';
import { PROTOCOL_VERSION } from '../../protocol/version.ts';

describe('site authentication', () => {
  let coordinator: Coordinator;
  let url: string;
  let log: CapturedLog;

  beforeAll(async () => {
    // Trust on first use, so that hand-made clients can register; token enrollment is tested in enrollment.test.ts.
    ({ coordinator, url, log } = await startCoordinator({ enrollment: 'open' }));
  });
  afterAll(async () => coordinator.close());

  const codesLogged = () => log.lines.map((l) => l.code).filter(Boolean);

  it('should register a site on first contact and accept it again with the same key', async () => {
    const keys = nacl.sign.keyPair();
    const a = await connectRogue(url, 'General', () => ({ ok: false }), keys);
    const r = await a.authenticate();
    expect(r.ok).toBe(true);
    a.close();
    const b = await connectRogue(url, 'General', () => ({ ok: false }), keys);
    expect((await b.authenticate()).ok).toBe(true);
    b.close();
    expect(coordinator.store.listSites().filter((s) => s.name === 'General')).toHaveLength(1);
  });

  it('should refuse a site presenting another key for a registered name, and change nothing', async () => {
    const first = await connectRogue(url, 'St Mary', () => ({ ok: false }));
    expect((await first.authenticate()).ok).toBe(true);
    first.close();
    const before = JSON.stringify(coordinator.store.listSites());
    const impostor = await connectRogue(url, 'St Mary', () => ({ ok: false }));
    const r = await impostor.authenticate();
    expect(r).toMatchObject({ ok: false, error: { code: 'COHORT_ERR_AUTH_KEY_MISMATCH' } });
    expect(JSON.stringify(coordinator.store.listSites())).toBe(before);
    expect(codesLogged()).toContain('COHORT_ERR_AUTH_KEY_MISMATCH');
    // and the coordinator hangs up on it
    await new Promise<void>((resolve) => (impostor.socket.connected ? impostor.socket.once('disconnect', () => resolve()) : resolve()));
    expect(impostor.socket.connected).toBe(false);
  });

  it('should refuse a challenge signed with a key other than the one presented', async () => {
    const s = await connectRogue(url, 'Mallory', () => ({ ok: false }));
    const r = await s.authenticate({ signWith: nacl.sign.keyPair().secretKey });
    expect(r).toMatchObject({ ok: false, error: { code: 'COHORT_ERR_AUTH_BAD_SIGNATURE' } });
    expect(coordinator.store.getSiteByName('Mallory')).toBeUndefined();
    s.close();
  });

  it('should refuse a replayed challenge answer', async () => {
    const s = await connectRogue(url, 'Replay', () => ({ ok: false }));
    const hello = (await s.socket.emitWithAck('hello', { protocolVersion: PROTOCOL_VERSION, siteName: 'Replay', publicKey: Buffer.from(s.keys.publicKey).toString('base64') })) as { ok: true; data: { challenge: { nonce: string } } };
    const bogus = { nonce: hello.data.challenge.nonce, signature: Buffer.from(new Uint8Array(64)).toString('base64') };
    const first = (await s.socket.emitWithAck('auth', bogus)) as { ok: boolean; error?: { code: string } };
    expect(first.error?.code).toBe('COHORT_ERR_AUTH_BAD_SIGNATURE');
    s.close();
    const t = await connectRogue(url, 'Replay', () => ({ ok: false }), s.keys);
    const second = (await t.socket.emitWithAck('auth', bogus)) as { ok: boolean; error?: { code: string } };
    expect(second.error?.code).toBe('COHORT_ERR_AUTH_CHALLENGE_EXPIRED');
    t.close();
  });

  it('should answer malformed and incompatible hellos with coded errors and stay up', async () => {
    const socket = io(new URL(SITE_NAMESPACE, url).toString(), { transports: ['websocket'], reconnection: false });
    await new Promise<void>((r) => socket.once('connect', () => r()));
    const malformed = [undefined, 42, 'hello', { siteName: 'x' }, { protocolVersion: PROTOCOL_VERSION, siteName: 'x', publicKey: 'not base64!' }, { protocolVersion: PROTOCOL_VERSION, siteName: '<script>', publicKey: 'AAAA' }];
    for (const m of malformed) {
      const r = (await socket.timeout(2000).emitWithAck('hello', m)) as { ok: boolean; error?: { code: string } };
      expect(r.ok).toBe(false);
      expect(r.error?.code).toBe('COHORT_ERR_PROTOCOL_MALFORMED');
    }
    const v = (await socket.timeout(2000).emitWithAck('hello', { protocolVersion: '9.0.0', siteName: 'Future', publicKey: Buffer.from(nacl.sign.keyPair().publicKey).toString('base64') })) as { ok: boolean; error?: { code: string } };
    expect(v.error?.code).toBe('COHORT_ERR_PROTOCOL_VERSION');
    socket.close();
    const health = await json<{ ok: boolean }>(url, '/healthz');
    expect(health.body.ok).toBe(true);
  });

  it('should refuse sites that did not enroll when enrollment needs a token', async () => {
    const closed = await startCoordinator({ enrollment: 'token' });
    const s = await connectRogue(closed.url, 'Stranger', () => ({ ok: false }));
    expect(await s.authenticate()).toMatchObject({ ok: false, error: { code: 'COHORT_ERR_AUTH_UNKNOWN_SITE' } });
    expect(closed.coordinator.store.listSites()).toHaveLength(0);
    s.close();
    await closed.coordinator.close();
  });

  it('should never write key material or signatures to the logs', () => {
    const text = log.text();
    expect(text).not.toMatch(/secretKey"\s*:\s*"[A-Za-z0-9+/]{20,}/);
    expect(text).not.toMatch(/"signature"\s*:\s*"[A-Za-z0-9+/]{20,}/);
  });
});
