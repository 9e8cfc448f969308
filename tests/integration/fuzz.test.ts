/**
 * Fuzzing from real clients: thousands of random and mutated socket messages and REST bodies. The coordinator must
 * neither crash nor change state, and must answer every acknowledged event with a coded error.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { io, type Socket } from 'socket.io-client';
import nacl from 'tweetnacl';
import { json, startCoordinator, wdbcManifest } from '../helpers/cluster.ts';
import { seededRandom } from '../../site-agent/data/split.ts';
import { SITE_NAMESPACE } from '../../protocol/events.ts';
import { PROTOCOL_VERSION } from '../../protocol/version.ts';
import { encodeTensors } from '../../protocol/codec.ts';
import { isErrorCode } from '../../protocol/errors.ts';
import { StudyManifestSchema } from '../../protocol/messages.ts';
import type { Coordinator } from '../../coordinator/app.ts';

const rand = seededRandom(20261124);
const pick = <T>(xs: readonly T[]): T => xs[Math.floor(rand() * xs.length)]!;

function randomValue(depth = 0): unknown {
  const r = rand();
  if (depth > 3 || r < 0.15) return pick([null, undefined, true, false, 0, -1, 1e308, NaN, Infinity, '', 'x'.repeat(Math.floor(rand() * 3000)), '\u0000', '__proto__', '../../etc/passwd', 'COHORT_ERR_X']);
  if (r < 0.3) return rand() * 1e6 - 5e5;
  if (r < 0.45) return Math.random().toString(36);
  if (r < 0.55) return new Uint8Array(Math.floor(rand() * 512)).map(() => Math.floor(rand() * 256));
  if (r < 0.7) return Array.from({ length: Math.floor(rand() * 6) }, () => randomValue(depth + 1));
  const o: Record<string, unknown> = {};
  for (let i = 0; i < Math.floor(rand() * 6); i++) o[pick(['protocolVersion', 'siteName', 'publicKey', 'nonce', 'signature', 'constructor', '__proto__', 'a', 'kind', 'ok', 'data'])] = randomValue(depth + 1);
  return o;
}

/** A valid message with one field replaced, removed or retyped. */
function mutate(valid: Record<string, unknown>): unknown {
  const m: Record<string, unknown> = { ...valid };
  const key = pick(Object.keys(m));
  const r = rand();
  if (r < 0.3) delete m[key];
  else if (r < 0.8) m[key] = randomValue();
  else m[pick(['extra', '__proto__', 'constructor'])] = randomValue();
  return m;
}

describe('fuzzing the coordinator from real clients', () => {
  let coordinator: Coordinator;
  let url: string;
  beforeAll(async () => {
    ({ coordinator, url } = await startCoordinator({ authFailuresPerMinute: 100_000 }));
  });
  afterAll(async () => coordinator.close());

  const snapshot = () => JSON.stringify({ sites: coordinator.store.listSites(), studies: coordinator.store.listStudies(), tokens: coordinator.store.listTokens().length });

  it('should survive thousands of random and mutated socket messages with coded answers and no state change', async () => {
    const before = snapshot();
    const sockets: Socket[] = [];
    for (let c = 0; c < 4; c++) {
      const s = io(new URL(SITE_NAMESPACE, url).toString(), { transports: ['websocket'], reconnection: false });
      await new Promise<void>((r) => s.once('connect', () => r()));
      sockets.push(s);
    }
    const kp = nacl.sign.keyPair();
    const validHello = { protocolVersion: PROTOCOL_VERSION, siteName: 'Fuzz', publicKey: Buffer.from(kp.publicKey).toString('base64'), clientNonce: Buffer.from(nacl.randomBytes(32)).toString('base64') };
    const validAuth = { nonce: Buffer.from(nacl.randomBytes(32)).toString('base64'), signature: Buffer.from(nacl.randomBytes(64)).toString('base64') };
    let answered = 0;
    const codes = new Set<string>();
    const N = 2500;
    for (let i = 0; i < N; i++) {
      const s = sockets[i % sockets.length]!;
      if (!s.connected) {
        const fresh = io(new URL(SITE_NAMESPACE, url).toString(), { transports: ['websocket'], reconnection: false });
        await new Promise<void>((r) => fresh.once('connect', () => r()));
        sockets[i % sockets.length] = fresh;
        continue;
      }
      const kind = rand();
      if (kind < 0.1) {
        s.emit(pick(['task', 'result', 'admin', 'constructor', 'x'.repeat(100)]), randomValue(), encodeTensors([{ shape: [2], data: new Float32Array([NaN, 1]) }]));
        continue;
      }
      const event = kind < 0.55 ? 'hello' : 'auth';
      const payload = rand() < 0.5 ? randomValue() : mutate(event === 'hello' ? validHello : validAuth);
      try {
        const reply = (await s.timeout(2000).emitWithAck(event, payload)) as { ok: boolean; error?: { code: string } };
        answered++;
        if (!reply.ok) {
          expect(isErrorCode(reply.error?.code)).toBe(true);
          codes.add(reply.error!.code);
        }
      } catch {
        // The coordinator hangs up on failed authentications; the loop reconnects.
      }
    }
    for (const s of sockets) s.close();
    expect(answered).toBeGreaterThan(N / 3);
    expect(codes.has('COHORT_ERR_PROTOCOL_MALFORMED')).toBe(true);
    const health = await json<{ ok: boolean }>(url, '/healthz');
    expect(health.body.ok).toBe(true);
    expect(snapshot()).toBe(before);
  }, 120_000);

  it('should answer random and mutated REST bodies with 4xx codes, never 5xx, and store nothing', async () => {
    const before = snapshot();
    const valid = wdbcManifest() as unknown as Record<string, unknown>;
    const statuses = new Map<number, number>();
    for (let i = 0; i < 600; i++) {
      const body = rand() < 0.5 ? randomValue() : mutate(valid);
      const path = pick(['/api/studies', '/api/enroll', '/api/admin/site-invites', '/api/admin/tokens', '/api/studies/x/start']);
      let text: string;
      try {
        text = JSON.stringify(body) ?? 'null';
      } catch {
        text = '{';
      }
      if (rand() < 0.1) text = text.slice(0, Math.floor(rand() * text.length));
      const res = await fetch(new URL(path, url), { method: 'POST', headers: { 'content-type': 'application/json', authorization: `Bearer ${(await import('../helpers/cluster.ts')).adminTokenFor(url)}` }, body: text });
      statuses.set(res.status, (statuses.get(res.status) ?? 0) + 1);
      expect(res.status, `${path} ${text.slice(0, 200)}`).toBeLessThan(500);
      if (res.status >= 400) {
        const j = (await res.json()) as { error?: { code?: string } };
        expect(isErrorCode(j.error?.code)).toBe(true);
      } else {
        await res.arrayBuffer();
      }
    }
    // Some mutations are still valid (an extra key, a missing optional field), so a study may be created; but
    // every stored study must be a valid manifest, no site may appear, and nothing may have started.
    const b = JSON.parse(before) as { sites: unknown[] };
    expect(coordinator.store.listSites()).toEqual(b.sites);
    for (const st of coordinator.store.listStudies()) {
      expect(StudyManifestSchema.safeParse(st.manifestRaw).success).toBe(true);
      expect(st.status).toBe('created');
    }
    expect(statuses.get(201) ?? 0).toBeLessThan(600);
  }, 120_000);
});
