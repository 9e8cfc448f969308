/**
 * Fuzzing from real clients: thousands of random and mutated socket.io events, raw (truncated, lying, oversized)
 * WebSocket frames and REST requests over every route fastify serves; replayed, reordered and forged handshakes;
 * unknown and revoked sites; expired and revoked tokens. The coordinator must answer with registered codes, never
 * crash, never answer 5xx, and leave its durable state (store file and checkpoint files) exactly as it was, save
 * what an accepted request was entitled to create.
 *
 * A second part fuzzes the replies to real tasks: an enrolled site answers a real study's tasks with random and
 * mutated replies; every bad one is refused with a code and the study completes on the honest sites.
 *
 * A third part drives chunked transfers (protocol/transfer.ts) by hand from two enrolled sites: replayed,
 * reordered, oversized, truncated and empty chunks, chunks for another site's transfer, declarations over the grant
 * or contradicting an earlier one, a wrong digest, a reply before the upload is complete, a replayed task result,
 * then random and mutated transfer events aimed at a live transfer; each refusal is coded and changes nothing.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { io, type Socket } from 'socket.io-client';
import nacl from 'tweetnacl';
import { agentFor, json, makeSite, runStudy, startCoordinator, startSites, tempDir, wdbcManifest, waitFor, type TestSite } from '../helpers/cluster.ts';
import { connectRogue, type RogueSite } from '../helpers/rogue-site.ts';
import { diskState, discoverRoutes, fuzzer, fuzzRawFrames, fuzzRest, fuzzSocket } from '../helpers/fuzz.ts';
import { EVENTS_NAMESPACE, SITE_NAMESPACE } from '../../protocol/events.ts';
import { PROTOCOL_VERSION } from '../../protocol/version.ts';
import { challengeMessage, StudyManifestSchema, type Reply, type Task } from '../../protocol/messages.ts';
import { sha256Hex } from '../../protocol/transfer.ts';
import { enrollmentMessage } from '../../protocol/signing.ts';
import { isErrorCode } from '../../protocol/errors.ts';
import { encodeTensors } from '../../protocol/codec.ts';
import { splitCsvForSites, WDBC } from '../../cli/demo.ts';
import type { Coordinator } from '../../coordinator/app.ts';
import type { StoreData } from '../../coordinator/store/store.ts';

const b64 = (u: Uint8Array) => Buffer.from(u).toString('base64');
const SOCKET_MESSAGES = Number(process.env.COHORT_FUZZ_SOCKET ?? 2000);
const REST_REQUESTS = Number(process.env.COHORT_FUZZ_REST ?? 1000);
const RAW_CONNECTIONS = Number(process.env.COHORT_FUZZ_RAW ?? 120);

/** Enrolls a hand-driven site through the REST API (a real signed enrollment) and returns its keys. */
async function enrollKeys(url: string, name: string): Promise<nacl.SignKeyPair> {
  const keys = nacl.sign.keyPair();
  const token = (await json<{ token: string }>(url, '/api/admin/site-invites', { method: 'POST', body: { name } })).body.token;
  const publicKey = b64(keys.publicKey);
  const r = await json(url, '/api/enroll', { method: 'POST', token: null, body: { token, name, publicKey, signature: b64(nacl.sign.detached(enrollmentMessage(token, name, publicKey), keys.secretKey)) } });
  expect(r.status).toBe(201);
  return keys;
}

const emit = async (s: Socket, event: string, payload: unknown): Promise<Reply<{ challenge?: { nonce: string; coordinatorId: string } }>> =>
  (await s.timeout(3000).emitWithAck(event, payload)) as Reply<{ challenge?: { nonce: string; coordinatorId: string } }>;
const connect = (url: string): Promise<Socket> => new Promise((resolve, reject) => {
  const s = io(new URL(SITE_NAMESPACE, url).toString(), { transports: ['websocket'], reconnection: false, forceNew: true });
  s.once('connect', () => resolve(s));
  s.once('connect_error', reject);
});

describe('fuzzing the coordinator from real clients', () => {
  let c: { coordinator: Coordinator; url: string; adminToken: string };
  let dataDir: string;
  let sites: TestSite[] = [];
  let before: ReturnType<typeof diskState>;
  let legit: RogueSite;
  let legitKeys: nacl.SignKeyPair;
  let captured: { nonce: string; signature: string };
  const tokens: Record<'viewer' | 'researcher' | 'expired' | 'revoked', string> = { viewer: '', researcher: '', expired: '', revoked: '' };
  let expiredInvite: string;
  let revokedKeys: nacl.SignKeyPair;
  let studyId: string;

  beforeAll(async () => {
    dataDir = tempDir('cohort-fuzz-');
    c = await startCoordinator({ dataDir, authFailuresPerMinute: 1_000_000, maxMessageBytes: 1024 * 1024 });
    // Real history first: a completed study (checkpoints on disk) with two real agents.
    sites = await startSites(c.url, 2);
    const done = await runStudy(c.url, wdbcManifest({ training: { rounds: 1, localEpochs: 1, batchSize: 32, optimizer: 'adam', learningRate: 0.05 } }));
    expect(done.study.status).toBe('completed');
    studyId = done.study.id;
    await Promise.all(sites.map((s) => s.agent.stop()));
    // A site that authenticates for real (its challenge answer is kept to replay later), and a revoked site.
    legitKeys = await enrollKeys(c.url, 'Fuzz Site');
    legit = await connectRogue(c.url, 'Fuzz Site', () => ({ ok: false, error: { code: 'COHORT_ERR_SITE_TRAINING_FAILED', message: 'no' } }), legitKeys);
    const hello = await emit(legit.socket, 'hello', { protocolVersion: PROTOCOL_VERSION, siteName: 'Fuzz Site', publicKey: b64(legitKeys.publicKey) });
    if (!hello.ok) throw new Error('hello refused');
    const { nonce, coordinatorId } = hello.data.challenge!;
    captured = { nonce, signature: b64(nacl.sign.detached(challengeMessage(nonce, 'Fuzz Site', coordinatorId), legitKeys.secretKey)) };
    expect((await emit(legit.socket, 'auth', captured)).ok).toBe(true);
    revokedKeys = await enrollKeys(c.url, 'Revoked Site');
    const sitesNow = await json<{ sites: { id: string; name: string }[] }>(c.url, '/api/sites');
    await json(c.url, `/api/admin/sites/${sitesNow.body.sites.find((s) => s.name === 'Revoked Site')!.id}/revoke`, { method: 'POST' });
    // Tokens of every kind: roles, one that expires in under a second, one revoked, an invite that expires.
    tokens.viewer = (await json<{ token: string }>(c.url, '/api/admin/tokens', { method: 'POST', body: { name: 'v', role: 'viewer' } })).body.token;
    tokens.researcher = (await json<{ token: string }>(c.url, '/api/admin/tokens', { method: 'POST', body: { name: 'r', role: 'researcher' } })).body.token;
    tokens.expired = (await json<{ token: string }>(c.url, '/api/admin/tokens', { method: 'POST', body: { name: 'e', role: 'admin', expiresInDays: 0.00001 } })).body.token;
    const rev = (await json<{ token: string; tokenId: string }>(c.url, '/api/admin/tokens', { method: 'POST', body: { name: 'x', role: 'admin' } })).body;
    tokens.revoked = rev.token;
    await json(c.url, `/api/admin/tokens/${rev.tokenId}/revoke`, { method: 'POST' });
    expiredInvite = (await json<{ token: string }>(c.url, '/api/admin/site-invites', { method: 'POST', body: { name: 'Late', expiresInHours: 0.0002 } })).body.token;
    await new Promise((r) => setTimeout(r, 1000));
    await c.coordinator.store.flush();
    before = diskState(dataDir);
  }, 120_000);
  afterAll(async () => {
    legit?.close();
    await Promise.all(sites.map((s) => s.agent.stop()));
    await c?.coordinator.close();
  });

  it('should refuse replayed, reordered and forged handshakes, unknown and revoked sites with their codes', async () => {
    // Reordered: an answer before any challenge.
    let s = await connect(c.url);
    expect(await emit(s, 'auth', captured)).toMatchObject({ ok: false, error: { code: 'COHORT_ERR_AUTH_CHALLENGE_EXPIRED' } });
    s.close();
    // Replayed: a fresh challenge, answered with the recorded answer to an old one.
    s = await connect(c.url);
    expect((await emit(s, 'hello', { protocolVersion: PROTOCOL_VERSION, siteName: 'Fuzz Site', publicKey: b64(legitKeys.publicKey) })).ok).toBe(true);
    expect(await emit(s, 'auth', captured)).toMatchObject({ ok: false, error: { code: 'COHORT_ERR_AUTH_CHALLENGE_EXPIRED' } });
    s.close();
    // Replayed hello on an authenticated connection.
    expect(await emit(legit.socket, 'hello', { protocolVersion: PROTOCOL_VERSION, siteName: 'Fuzz Site', publicKey: b64(legitKeys.publicKey) })).toMatchObject({ ok: false, error: { code: 'COHORT_ERR_PROTOCOL_REPLAY' } });
    // An unknown event with an ack gets a coded answer.
    expect(await emit(legit.socket, 'result', { weights: new Uint8Array(4) })).toMatchObject({ ok: false, error: { code: 'COHORT_ERR_PROTOCOL_UNKNOWN_EVENT' } });
    // Forged: the right protocol, an unregistered site; a registered name with another key; a revoked site.
    for (const [name, keys, code] of [
      ['Nobody', nacl.sign.keyPair(), 'COHORT_ERR_AUTH_UNKNOWN_SITE'], ['Fuzz Site', nacl.sign.keyPair(), 'COHORT_ERR_AUTH_KEY_MISMATCH'], ['Revoked Site', revokedKeys, 'COHORT_ERR_AUTH_SITE_REVOKED'],
    ] as const) {
      const r = await connectRogue(c.url, name, () => undefined, keys);
      expect(await r.authenticate(), name).toMatchObject({ ok: false, error: { code } });
      r.close();
    }
    // A signature by the right key over another coordinator's challenge.
    s = await connect(c.url);
    const h = await emit(s, 'hello', { protocolVersion: PROTOCOL_VERSION, siteName: 'Fuzz Site', publicKey: b64(legitKeys.publicKey) });
    const forged = b64(nacl.sign.detached(challengeMessage(h.ok ? h.data.challenge!.nonce : '', 'Fuzz Site', 'coord-other'), legitKeys.secretKey));
    expect(await emit(s, 'auth', { nonce: h.ok ? h.data.challenge!.nonce : '', signature: forged })).toMatchObject({ ok: false, error: { code: 'COHORT_ERR_AUTH_BAD_SIGNATURE' } });
    s.close();
  });

  it('should refuse expired and revoked tokens and an expired invite with their codes', async () => {
    for (const t of [tokens.expired, tokens.revoked]) {
      const r = await json<{ error: { code: string } }>(c.url, '/api/studies', { token: t });
      expect(r.status).toBe(401);
      expect(r.body.error.code).toBe('COHORT_ERR_AUTH_TOKEN_INVALID');
      const ev = io(new URL(EVENTS_NAMESPACE, c.url).toString(), { transports: ['websocket'], reconnection: false, auth: { token: t } });
      expect((await new Promise<Error>((resolve) => ev.once('connect_error', resolve))).message).toBe('COHORT_ERR_AUTH_TOKEN_INVALID');
      ev.close();
    }
    const keys = nacl.sign.keyPair();
    const publicKey = b64(keys.publicKey);
    const r = await json<{ error: { code: string } }>(c.url, '/api/enroll', { method: 'POST', token: null, body: { token: expiredInvite, name: 'Late', publicKey, signature: b64(nacl.sign.detached(enrollmentMessage(expiredInvite, 'Late', publicKey), keys.secretKey)) } });
    expect(r.status).toBe(401);
    expect(r.body.error.code).toBe('COHORT_ERR_AUTH_ENROLLMENT_TOKEN');
    const unknown = await json<{ error: { code: string } }>(c.url, '/api/admin/tokens/tok-nope/revoke', { method: 'POST' });
    expect(unknown.status).toBe(404);
    expect(unknown.body.error.code).toBe('COHORT_ERR_AUTH_TOKEN_UNKNOWN');
  });

  it(`should answer ${SOCKET_MESSAGES} random and mutated socket events with registered codes only`, async () => {
    const stats = await fuzzSocket(c.url, SOCKET_MESSAGES, fuzzer(20261124), { clients: 4, extra: [legit.socket] });
    expect(stats.answered).toBeGreaterThan(SOCKET_MESSAGES / 3);
    expect(stats.uncoded).toBe(0);
    for (const code of ['COHORT_ERR_PROTOCOL_MALFORMED', 'COHORT_ERR_AUTH_CHALLENGE_EXPIRED', 'COHORT_ERR_PROTOCOL_UNKNOWN_EVENT', 'COHORT_ERR_PROTOCOL_REPLAY', 'COHORT_ERR_TRANSFER_UNKNOWN']) {
      expect(stats.codes.get(code) ?? 0, code).toBeGreaterThan(0);
    }
  }, 120_000);

  it('should drop truncated, lying and oversized raw frames without crashing', async () => {
    const r = await fuzzRawFrames(c.url, RAW_CONNECTIONS, fuzzer(7), { oversizeBytes: 2 * 1024 * 1024 });
    expect(r.sent).toBeGreaterThan(RAW_CONNECTIONS);
    // socket.io closes a connection on a frame it cannot parse, and on one over maxMessageBytes.
    expect(r.closedByServer).toBeGreaterThan(RAW_CONNECTIONS / 4);
    expect((await json<{ ok: boolean }>(c.url, '/healthz')).body.ok).toBe(true);
  }, 120_000);

  it(`should answer ${REST_REQUESTS} fuzzed requests over every route without a 5xx, with codes, changing nothing when unauthorized`, async () => {
    const routes = discoverRoutes(c.coordinator.app);
    expect(routes.length).toBeGreaterThan(15);
    const valid = [
      wdbcManifest() as unknown as Record<string, unknown>, { name: 'x', role: 'viewer' }, { name: 'Site X', expiresInHours: 1 },
      { token: expiredInvite, name: 'Late', publicKey: b64(nacl.sign.keyPair().publicKey), signature: b64(new Uint8Array(64)) },
    ];
    const ids = [studyId, 'study-nope', 'tok-nope', 'site-nope'];
    // Unauthorized traffic (no token, junk, expired, revoked, viewer): nothing may change at all.
    const weak = await fuzzRest(c.url, routes, Math.floor(REST_REQUESTS / 2), fuzzer(99), { tokens: [tokens.expired, tokens.revoked, tokens.viewer, 'cht_junk'], valid, ids });
    expect(weak.serverErrors).toEqual([]);
    expect(weak.uncoded).toEqual([]);
    expect(weak.created).toEqual([]);
    await c.coordinator.store.flush();
    expect(diskState(dataDir)).toEqual(before);
    // Admin traffic: accepted requests may create studies, tokens and invites, and nothing else.
    const strong = await fuzzRest(c.url, routes.filter((r) => !/\/(start|stop|revoke)$/.test(r.path)), Math.ceil(REST_REQUESTS / 2), fuzzer(100), { tokens: [c.adminToken], valid, ids: ['study-nope', 'x'] });
    expect(strong.serverErrors).toEqual([]);
    expect(strong.uncoded).toEqual([]);
    expect(strong.byStatus.get(413) ?? 0).toBeGreaterThan(0);
    await c.coordinator.store.flush();
    const after = diskState(dataDir);
    expect(after.checkpoints).toEqual(before.checkpoints);
    const b = before.store as unknown as StoreData;
    const a = after.store as unknown as StoreData;
    const createdIds = new Set(strong.created.flatMap((x) => {
      const o = x as { study?: { id?: string }; tokenId?: string };
      return [o.study?.id, o.tokenId].filter((v): v is string => typeof v === 'string');
    }));
    expect(a.sites).toEqual(b.sites);
    expect(a.rounds).toEqual(b.rounds);
    expect(a.studies.slice(0, b.studies.length)).toEqual(b.studies);
    expect(a.tokens.slice(0, b.tokens.length)).toEqual(b.tokens);
    expect(a.audit.slice(0, b.audit.length)).toEqual(b.audit);
    for (const s of a.studies.slice(b.studies.length)) {
      expect(createdIds.has(s.id)).toBe(true);
      expect(s.status).toBe('created');
      expect(StudyManifestSchema.safeParse(s.manifestRaw).success).toBe(true);
    }
    for (const t of a.tokens.slice(b.tokens.length)) expect(createdIds.has(t.id), t.id).toBe(true);
    expect(a.audit.slice(b.audit.length).every((x) => ['study.created', 'token.created', 'site.invited'].includes(x.action))).toBe(true);
    expect(a.audit.length - b.audit.length).toBe(createdIds.size);
  }, 180_000);
});

describe('fuzzing the replies to real tasks', () => {
  it('should refuse every malformed reply of an authenticated site with a code and complete the study on the honest sites', async () => {
    const { coordinator, url } = await startCoordinator();
    const parts = splitCsvForSites(WDBC, 3);
    const honest = await startSites(url, 2);
    // The fuzzing site is enrolled and holds data: a real agent computes each answer, then it is mangled.
    const real = await makeSite(url, 'Mangler', parts[2]!);
    const inner = agentFor(real.dir).agent;
    const f = fuzzer(4242);
    const mangled: string[] = [];
    const rogue = await connectRogue(url, 'Mangler', () => undefined, (await import('../../site-agent/keys.ts')).loadIdentity(`${real.dir}/keys/identity.json`) as nacl.SignKeyPair);
    rogue.socket.off('task');
    rogue.socket.on('task', (task: { kind: string }, ack: (r: unknown) => void) => {
      void inner.handle(task).then((r) => {
        if (task.kind === 'describe' || !r.ok) return ack(r);
        const d = r.data as Record<string, unknown>;
        const choice = f.int(8);
        mangled.push(`${task.kind}:${choice}`);
        const w = d.weights as Uint8Array | undefined;
        ack([
          () => ({ ok: true, data: f.mutate(d) }),
          () => f.randomValue(),
          () => ({ ok: true, data: { ...d, weights: w ? w.subarray(0, Math.floor(w.length / 2)) : f.randomValue() } }),
          () => ({ ok: true, data: { ...d, weights: encodeTensors([{ shape: [3], data: new Float32Array([NaN, Infinity, 1]) }]) } }),
          () => ({ ok: true, data: { ...d, numExamples: f.pick([-1, 0, 1.5, 'many', null]) } }),
          () => ({ ok: false, error: { code: f.pick(['COHORT_ERR_NOPE', 'x', 42]), message: 'y'.repeat(5000) } }),
          () => ({ ok: 'yes', data: d, __proto__: { ok: true } }),
          () => ({ ok: true, data: { ...d, counts: { ...(d.counts as object), n: -5, histPos: [NaN] } } }),
        ][choice]!());
      });
    });
    const auth = await rogue.authenticate();
    if (!auth.ok) throw new Error(`the rogue site could not authenticate: ${auth.error.code}`);
    // The inner agent never dials itself: it learns its id from the rogue's handshake, as a connected agent does,
    // so that it can sign its secure-aggregation keys and every stage's reply gets mangled.
    inner.siteId = auth.data.siteId;
    try {
      const res = await runStudy(url, wdbcManifest({ training: { rounds: 5, localEpochs: 1, batchSize: 32, optimizer: 'adam', learningRate: 0.05 }, participation: { minSites: 2, roundDeadlineMs: 20_000, waitForSitesMs: 20_000, maxRoundAttempts: 2 } }));
      expect(res.study.status).toBe('completed');
      expect(mangled.length).toBeGreaterThanOrEqual(5);
      for (const r of res.rounds) {
        expect(r.participants).toEqual(expect.arrayContaining(['Site 1', 'Site 2']));
        const mine = r.failures.filter((x) => x.site === 'Mangler');
        // A mangled reply that happened to stay valid may be accepted; every refused one carries a registered code.
        if (!r.participants.includes('Mangler')) expect(mine.length).toBeGreaterThan(0);
        for (const x of mine) expect(isErrorCode(x.code), x.code).toBe(true);
      }
      expect(res.rounds.flatMap((r) => r.failures).filter((x) => x.site === 'Mangler').length).toBeGreaterThanOrEqual(3);
      await waitFor(() => (coordinator.transport.onlineSites().length >= 2 ? true : undefined), 5000);
    } finally {
      rogue.close();
      await Promise.all(honest.map((s) => s.agent.stop()));
      await coordinator.close();
    }
  }, 120_000);
});

describe('fuzzing chunked transfers', () => {
  it('should refuse replayed, reordered, oversized, truncated and foreign chunks with their codes, changing nothing', async () => {
    const CHUNK = 16 * 1024;
    const dataDir = tempDir('cohort-fuzz-transfer-');
    const c = await startCoordinator({ dataDir, authFailuresPerMinute: 1_000_000, transferChunkBytes: CHUNK });
    const { transport } = c.coordinator;
    const { transfers } = transport;
    // Two hand-driven sites, enrolled and authenticated for real, that keep the tasks they get and answer later.
    const held = new Map<string, { task: Record<string, unknown>; ack: (r: unknown) => void }>();
    const site = async (name: string) => {
      const keys = await enrollKeys(c.url, name);
      const r = await connectRogue(c.url, name, () => undefined, keys);
      r.socket.off('task');
      r.socket.on('task', (task: Record<string, unknown>, ack: (x: unknown) => void) => void held.set(String(task.taskId), { task, ack }));
      const auth = await r.authenticate();
      if (!auth.ok) throw new Error(`${name} could not authenticate`);
      return { rogue: r, id: auth.data.siteId };
    };
    const A = await site('Site A');
    const B = await site('Site B');
    const stranger = await connect(c.url);
    try {
      // A model frame of 5 chunks and a bit; the transport moves bytes, it does not decode them.
      const weights = new Uint8Array(5 * CHUNK + 100).map((_, i) => (i * 7) & 255);
      let n = 0;
      const give = async (to: { id: string }) => {
        const taskId = `fuzz-task-${++n}`;
        const reply = transport.send(to.id, { kind: 'train', taskId, round: 1, weights } as unknown as Task, 60_000);
        const h = await waitFor(() => held.get(taskId), 5000, 10);
        return { taskId, reply, ref: h.task.weightsRef as { transferId: string; bytes: number }, grant: h.task.upload as { transferId: string; maxBytes: number; chunkBytes: number }, ack: h.ack };
      };
      const tA = await give(A);
      const tB = await give(B);
      expect(tA.ref.bytes).toBe(weights.length);
      expect(tA.grant.chunkBytes).toBe(CHUNK);
      const ask = async (s: Socket, event: string, msg: unknown) => (await s.timeout(5000).emitWithAck(event, msg)) as Reply<{ received?: number; data?: Uint8Array; accepted?: boolean }>;
      const refused = async (s: Socket, event: string, msg: unknown, code: string) => {
        const state = () => JSON.stringify({
          a: transfers.uploadOf(tA.taskId), b: transfers.uploadOf(tB.taskId),
          s: [transfers.stats.bytesIn, transfers.stats.chunksIn, transfers.stats.uploadsOpened, transfers.stats.uploadsCompleted, transfers.stats.bufferedBytes],
        });
        const before = state();
        const r = await ask(s, event, msg);
        expect(r, `${event} ${JSON.stringify({ ...(msg as object), data: undefined })}`).toMatchObject({ ok: false, error: { code } });
        expect(state(), `${event} changed transfer state`).toBe(before);
        return r;
      };
      const chunk = (t: { grant: { transferId: string } }, offset: number, data: Uint8Array) => ({ transferId: t.grant.transferId, offset, data });

      // Downloads: another site's transfer, offsets that are no chunk's, an unauthenticated connection, junk.
      const first = await ask(A.rogue.socket, 'download-chunk', { transferId: tA.ref.transferId, offset: 0 });
      expect(first.ok && Buffer.from(first.data.data!).equals(Buffer.from(weights.subarray(0, CHUNK)))).toBe(true);
      await refused(A.rogue.socket, 'download-chunk', { transferId: tB.ref.transferId, offset: 0 }, 'COHORT_ERR_TRANSFER_UNKNOWN');
      await refused(A.rogue.socket, 'download-chunk', { transferId: tA.ref.transferId, offset: 5 }, 'COHORT_ERR_TRANSFER_OFFSET');
      await refused(A.rogue.socket, 'download-chunk', { transferId: tA.ref.transferId, offset: weights.length }, 'COHORT_ERR_TRANSFER_OFFSET');
      await refused(stranger, 'download-chunk', { transferId: tA.ref.transferId, offset: 0 }, 'COHORT_ERR_AUTH_CHALLENGE_EXPIRED');
      await refused(A.rogue.socket, 'download-chunk', { transferId: 'zz', offset: -1 }, 'COHORT_ERR_PROTOCOL_MALFORMED');

      // Uploads: size declared up front and bounded by the grant; chunks only in order, at the chunk size.
      const payload = new Uint8Array(3 * CHUNK + 10).map((_, i) => (i * 13) & 255);
      const open = { transferId: tA.grant.transferId, bytes: payload.length, digest: sha256Hex(payload) };
      await refused(A.rogue.socket, 'upload-chunk', chunk(tA, 0, payload.subarray(0, CHUNK)), 'COHORT_ERR_TRANSFER_MALFORMED'); // before declaring
      await refused(A.rogue.socket, 'upload-open', { ...open, bytes: tA.grant.maxBytes + 1 }, 'COHORT_ERR_TRANSFER_TOO_LARGE');
      await refused(A.rogue.socket, 'upload-open', { ...open, transferId: tB.grant.transferId }, 'COHORT_ERR_TRANSFER_UNKNOWN'); // another site's
      await refused(stranger, 'upload-open', open, 'COHORT_ERR_AUTH_CHALLENGE_EXPIRED');
      expect(await ask(A.rogue.socket, 'upload-open', open)).toEqual({ ok: true, data: { received: 0 } });
      await refused(A.rogue.socket, 'upload-open', { ...open, digest: sha256Hex(new Uint8Array(1)) }, 'COHORT_ERR_TRANSFER_MALFORMED');
      await refused(A.rogue.socket, 'upload-chunk', chunk(tA, CHUNK, payload.subarray(CHUNK, 2 * CHUNK)), 'COHORT_ERR_TRANSFER_OFFSET'); // reordered
      await refused(A.rogue.socket, 'upload-chunk', chunk(tA, 0, payload.subarray(0, CHUNK + 4)), 'COHORT_ERR_TRANSFER_TOO_LARGE'); // oversized
      await refused(A.rogue.socket, 'upload-chunk', chunk(tA, 0, payload.subarray(0, CHUNK - 4)), 'COHORT_ERR_TRANSFER_MALFORMED'); // truncated
      await refused(A.rogue.socket, 'upload-chunk', chunk(tA, 0, new Uint8Array(0)), 'COHORT_ERR_TRANSFER_MALFORMED');
      await refused(A.rogue.socket, 'upload-chunk', chunk(tB, 0, payload.subarray(0, CHUNK)), 'COHORT_ERR_TRANSFER_UNKNOWN'); // into B's
      await refused(B.rogue.socket, 'upload-chunk', chunk(tA, 0, payload.subarray(0, CHUNK)), 'COHORT_ERR_TRANSFER_UNKNOWN'); // B into A's
      expect(await ask(A.rogue.socket, 'upload-chunk', chunk(tA, 0, payload.subarray(0, CHUNK)))).toEqual({ ok: true, data: { received: CHUNK } });
      const replayed = await refused(A.rogue.socket, 'upload-chunk', chunk(tA, 0, payload.subarray(0, CHUNK)), 'COHORT_ERR_TRANSFER_OFFSET');
      expect(replayed.ok ? undefined : replayed.error.details).toEqual({ expected: CHUNK });
      expect((await ask(A.rogue.socket, 'upload-chunk', chunk(tA, CHUNK, payload.subarray(CHUNK, 2 * CHUNK)))).ok).toBe(true);
      expect((await ask(A.rogue.socket, 'upload-chunk', chunk(tA, 2 * CHUNK, payload.subarray(2 * CHUNK, 3 * CHUNK)))).ok).toBe(true);
      const tail = new Uint8Array(14);
      tail.set(payload.subarray(3 * CHUNK));
      await refused(A.rogue.socket, 'upload-chunk', chunk(tA, 3 * CHUNK, tail), 'COHORT_ERR_TRANSFER_TOO_LARGE'); // past the declared end
      expect(await ask(A.rogue.socket, 'upload-chunk', chunk(tA, 3 * CHUNK, payload.subarray(3 * CHUNK)))).toEqual({ ok: true, data: { received: payload.length } });
      // The reply names the upload: the coordinator hands over exactly the bytes declared, once.
      tA.ack({ ok: true, data: { upload: tA.grant.transferId, numExamples: 10, trainLoss: 0.5, backend: 'cpu', durationMs: 1 } });
      const got = await tA.reply;
      expect(got.ok && Buffer.from((got.data as { weights: Uint8Array }).weights).equals(Buffer.from(payload))).toBe(true);
      await refused(A.rogue.socket, 'task-result', { taskId: tA.taskId, reply: { ok: true, data: { upload: tA.grant.transferId } } }, 'COHORT_ERR_PROTOCOL_REPLAY');
      await refused(A.rogue.socket, 'upload-chunk', chunk(tA, 0, payload.subarray(0, CHUNK)), 'COHORT_ERR_TRANSFER_UNKNOWN'); // task over

      // A digest that does not match fails the upload, and the task with it.
      const openB = { transferId: tB.grant.transferId, bytes: payload.length, digest: sha256Hex(weights) };
      expect((await ask(B.rogue.socket, 'upload-open', openB)).ok).toBe(true);
      for (let off = 0; off < 3 * CHUNK; off += CHUNK) expect((await ask(B.rogue.socket, 'upload-chunk', chunk(tB, off, payload.subarray(off, off + CHUNK)))).ok).toBe(true);
      expect(await ask(B.rogue.socket, 'upload-chunk', chunk(tB, 3 * CHUNK, payload.subarray(3 * CHUNK)))).toMatchObject({ ok: false, error: { code: 'COHORT_ERR_TRANSFER_DIGEST' } });
      tB.ack({ ok: true, data: { upload: tB.grant.transferId, numExamples: 10, trainLoss: 0.5, backend: 'cpu', durationMs: 1 } });
      expect(await tB.reply).toMatchObject({ ok: false, error: { code: 'COHORT_ERR_TRANSFER_DIGEST' } });

      // A reply naming an upload that has not arrived in full is refused too.
      const tC = await give(A);
      expect((await ask(A.rogue.socket, 'upload-open', { ...open, transferId: tC.grant.transferId })).ok).toBe(true);
      expect((await ask(A.rogue.socket, 'upload-chunk', chunk(tC, 0, payload.subarray(0, CHUNK)))).ok).toBe(true);
      tC.ack({ ok: true, data: { upload: tC.grant.transferId, numExamples: 10, trainLoss: 0.5, backend: 'cpu', durationMs: 1 } });
      expect(await tC.reply).toMatchObject({ ok: false, error: { code: 'COHORT_ERR_TRANSFER_INCOMPLETE' } });

      // Random and mutated transfer events from strangers and from B, aimed at A's live transfers: all refused.
      const tD = await give(A);
      await c.coordinator.store.flush();
      const disk = diskState(dataDir);
      const stats = await fuzzSocket(c.url, 600, fuzzer(31337), { clients: 2, extra: [B.rogue.socket], transferIds: [tD.ref.transferId, tD.grant.transferId] });
      expect(stats.uncoded).toBe(0);
      expect(stats.codes.get('COHORT_ERR_TRANSFER_UNKNOWN') ?? 0).toBeGreaterThan(0);
      expect(transfers.uploadOf(tD.taskId)).toBeUndefined();
      await c.coordinator.store.flush();
      expect(diskState(dataDir)).toEqual(disk);
      // A's own transfer still works after all that.
      expect((await ask(A.rogue.socket, 'download-chunk', { transferId: tD.ref.transferId, offset: 5 * CHUNK })).ok).toBe(true);
      tD.ack({ ok: false, error: { code: 'COHORT_ERR_SITE_TRAINING_FAILED', message: 'done' } });
      await tD.reply;
    } finally {
      stranger.close();
      A.rogue.close();
      B.rogue.close();
      await c.coordinator.close();
    }
  }, 120_000);
});
