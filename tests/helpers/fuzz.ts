/**
 * Fuzzing drivers shared by tests/integration/fuzz.test.ts and bench/fuzz.ts: seeded random and mutated
 * messages sent from real clients (socket.io-client, raw WebSocket frames, HTTP), the coordinator's REST routes
 * discovered from fastify itself (so a route added later is fuzzed without anyone listing it), and a snapshot of
 * the coordinator's durable state to prove that nothing changed.
 */
import { createHash } from 'node:crypto';
import { createRequire } from 'node:module';
import { existsSync, readdirSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { io, type Socket } from 'socket.io-client';
import nacl from 'tweetnacl';
import type { FastifyInstance } from 'fastify';
import { seededRandom } from '../../site-agent/data/split.ts';
import { SITE_NAMESPACE } from '../../protocol/events.ts';
import { PROTOCOL_VERSION } from '../../protocol/version.ts';
import { encodeTensors } from '../../protocol/codec.ts';
import { isErrorCode } from '../../protocol/errors.ts';
import { TRANSFER_EVENTS } from '../../protocol/transfer.ts';

export interface Fuzzer {
  rand: () => number;
  pick: <T>(xs: readonly T[]) => T;
  int: (n: number) => number;
  randomValue: (depth?: number) => unknown;
  /** A valid message with one field removed, retyped, or an extra (prototype-polluting) key added. */
  mutate: (valid: Record<string, unknown>) => unknown;
}

export function fuzzer(seed: number): Fuzzer {
  const rand = seededRandom(seed);
  const int = (n: number) => Math.floor(rand() * n);
  const pick = <T>(xs: readonly T[]): T => xs[int(xs.length)]!;
  const randomValue = (depth = 0): unknown => {
    const r = rand();
    if (depth > 3 || r < 0.15) {
      return pick([null, undefined, true, false, 0, -1, -0, 1e308, -1e308, NaN, Infinity, -Infinity, 2 ** 53 + 1, '', 'x'.repeat(int(3000)), '\u0000', '\ud800', '__proto__',
        '../../etc/passwd', 'COHORT_ERR_X', '{"$gt":""}', "' OR 1=1 --", '<script>alert(1)</script>', '%00', 'A'.repeat(70_000)]);
    }
    if (r < 0.3) return rand() * 1e6 - 5e5;
    if (r < 0.45) return rand().toString(36).slice(2);
    if (r < 0.55) return new Uint8Array(int(512)).map(() => int(256));
    if (r < 0.7) return Array.from({ length: int(6) }, () => randomValue(depth + 1));
    const o: Record<string, unknown> = {};
    for (let i = 0; i < int(6); i++) {
      o[pick(['protocolVersion', 'siteName', 'publicKey', 'nonce', 'signature', 'clientNonce', 'constructor', '__proto__', 'prototype', 'a', 'kind', 'ok', 'data', 'error', 'token', 'name', 'manifest'])] = randomValue(depth + 1);
    }
    return o;
  };
  const mutate = (valid: Record<string, unknown>): unknown => {
    const m: Record<string, unknown> = { ...valid };
    const key = pick(Object.keys(m));
    const r = rand();
    if (r < 0.3) delete m[key];
    else if (r < 0.8) m[key] = randomValue();
    else Object.defineProperty(m, pick(['extra', '__proto__', 'constructor']), { value: randomValue(), enumerable: true });
    return m;
  };
  return { rand, pick, int, randomValue, mutate };
}

export interface FuzzStats {
  sent: number;
  answered: number;
  /** Answers that were not coded refusals (must stay 0 for unauthenticated traffic, save valid hellos). */
  uncoded: number;
  codes: Map<string, number>;
  ms: number;
}

const connectSite = (url: string): Promise<Socket> => new Promise((resolve, reject) => {
  const s = io(new URL(SITE_NAMESPACE, url).toString(), { transports: ['websocket'], reconnection: false, forceNew: true });
  s.once('connect', () => resolve(s));
  s.once('connect_error', reject);
});

/**
 * Sends `n` random or mutated socket.io events to `/site` from `clients` parallel connections: hellos, auths
 * (random, mutated from valid ones, replayed), chunked-transfer events (made-up or given transfer ids), unknown
 * events with and without acks, binary attachments with NaN.
 * `extra` sockets (e.g. an authenticated site's) receive a share of the events too.
 */
export async function fuzzSocket(url: string, n: number, f: Fuzzer, o: { clients?: number; extra?: Socket[]; transferIds?: string[] } = {}): Promise<FuzzStats> {
  const started = Date.now();
  const stats: FuzzStats = { sent: 0, answered: 0, uncoded: 0, codes: new Map(), ms: 0 };
  const sockets = await Promise.all(Array.from({ length: o.clients ?? 4 }, () => connectSite(url)));
  const kp = nacl.sign.keyPair();
  const validHello = { protocolVersion: PROTOCOL_VERSION, siteName: 'Fuzz', publicKey: Buffer.from(kp.publicKey).toString('base64'), clientNonce: Buffer.from(nacl.randomBytes(32)).toString('base64') };
  const validAuth = { nonce: Buffer.from(nacl.randomBytes(32)).toString('base64'), signature: Buffer.from(nacl.randomBytes(64)).toString('base64') };
  const nanFrame = encodeTensors([{ shape: [2], data: new Float32Array([NaN, 1]) }]);
  let lastNonce: string | undefined;
  const transferIds = [...(o.transferIds ?? []), ...Array.from({ length: 4 }, () => Buffer.from(nacl.randomBytes(16)).toString('hex'))];
  const all = (): Socket[] => [...sockets, ...(o.extra ?? [])];
  for (let i = 0; i < n; i++) {
    const pool = all();
    const slot = i % pool.length;
    let s = pool[slot]!;
    if (!s.connected) {
      if (slot >= sockets.length) continue; // an extra socket that was cut off stays cut off
      s = await connectSite(url);
      sockets[slot] = s;
    }
    const kind = f.rand();
    stats.sent++;
    if (kind < 0.1) {
      // Unknown events, half of them asking for an answer.
      const ev = f.pick(['task', 'result', 'admin', 'constructor', '__proto__', 'x'.repeat(100), 'hello ', 'AUTH']);
      if (f.rand() < 0.5) {
        s.emit(ev, f.randomValue(), nanFrame);
        continue;
      }
    }
    // Chunked-transfer events (protocol 2.1) too: made-up transfer ids, offsets and chunks, random or mutated.
    const event = kind < 0.1 ? f.pick(['task', 'result', 'admin']) : kind < 0.25 ? f.pick(TRANSFER_EVENTS) : kind < 0.55 ? 'hello' : 'auth';
    const validTransfer: Record<string, Record<string, unknown>> = {
      'upload-open': { transferId: f.pick(transferIds), bytes: 1 + f.int(1 << 20), digest: createHash('sha256').update(String(i)).digest('hex') },
      'upload-chunk': { transferId: f.pick(transferIds), offset: f.pick([0, 1024, 4096, -1, 2 ** 40]), data: new Uint8Array(f.int(4096)) },
      'download-chunk': { transferId: f.pick(transferIds), offset: f.pick([0, 1024, 7, 2 ** 33]) },
      'task-result': { taskId: f.pick(['t-1', 'x'.repeat(129), '../task']), reply: { ok: true, data: { upload: f.pick(transferIds) } } },
    };
    let payload: unknown;
    if (event === 'auth' && lastNonce && f.rand() < 0.2) payload = { ...validAuth, nonce: lastNonce }; // a replayed challenge answer
    else if (validTransfer[event] && f.rand() < 0.5) payload = validTransfer[event];
    else if (f.rand() < 0.5) payload = f.randomValue();
    else payload = f.mutate(event === 'hello' ? validHello : validTransfer[event] ?? validAuth);
    try {
      const reply = (await s.timeout(2000).emitWithAck(event, payload)) as { ok?: unknown; error?: { code?: unknown }; data?: { challenge?: { nonce?: string } } };
      stats.answered++;
      if (reply?.ok === true) lastNonce = reply.data?.challenge?.nonce ?? lastNonce;
      else if (isErrorCode(reply?.error?.code)) stats.codes.set(reply.error.code, (stats.codes.get(reply.error.code) ?? 0) + 1);
      else stats.uncoded++;
    } catch {
      // The coordinator hangs up after a failed authentication; the loop reconnects.
    }
  }
  for (const s of sockets) s.close();
  stats.ms = Date.now() - started;
  return stats;
}

interface RawSocket {
  readyState: number;
  send(data: string | Buffer): void;
  close(): void;
  terminate(): void;
  once(ev: string, fn: (...a: unknown[]) => void): void;
  on(ev: string, fn: (...a: unknown[]) => void): void;
}
const WebSocketCtor = createRequire(import.meta.url)('ws') as new (url: string) => RawSocket;

/**
 * Raw engine.io/socket.io frames over a plain WebSocket: truncated JSON, wrong packet types, attachment counts
 * that lie, binary junk, and frames larger than the coordinator accepts. Each connection is expected to be
 * dropped or ignored; returns how many frames went out and how many connections the coordinator closed.
 */
export async function fuzzRawFrames(url: string, n: number, f: Fuzzer, o: { oversizeBytes?: number } = {}): Promise<{ sent: number; closedByServer: number; ms: number }> {
  const started = Date.now();
  const wsUrl = `${url.replace(/^http/, 'ws')}/socket.io/?EIO=4&transport=websocket`;
  let sent = 0;
  let closedByServer = 0;
  const frames = (): (string | Buffer)[] => [
    `40${SITE_NAMESPACE},`, // a proper namespace connect first, sometimes
    f.pick([
      `42${SITE_NAMESPACE},["hello",{"protocolVersion":"1.0.0","siteName":"T`,
      `42${SITE_NAMESPACE},0["auth",`, '4', '42', '4x', '99', '', '42[', '42["hello"', `45${SITE_NAMESPACE},1-["hello",{"_placeholder":true,"num":7}]`,
      `451-${SITE_NAMESPACE},["hello",{"_placeholder":true,"num":0}]`, `42${SITE_NAMESPACE},["__proto__",{"polluted":true}]`,
      `43${SITE_NAMESPACE},999["hello"]`, `41${SITE_NAMESPACE},`, `40/nonexistent,`, `42${SITE_NAMESPACE},["hello",NaN]`,
      `42${SITE_NAMESPACE},${'['.repeat(5000)}`, JSON.stringify(f.randomValue()) ?? 'null',
    ]),
    Buffer.from(new Uint8Array(f.int(256)).map(() => f.int(256))),
  ];
  const one = (payloads: (string | Buffer)[]) => new Promise<void>((resolve) => {
    const ws = new WebSocketCtor(wsUrl);
    let mine = false;
    const t = setTimeout(() => { mine = true; ws.terminate(); }, 1500);
    ws.on('error', () => undefined);
    ws.once('close', () => {
      clearTimeout(t);
      if (!mine) closedByServer++;
      resolve();
    });
    ws.once('message', () => {
      // The engine.io open packet came: now send the junk, then hang up after a moment if the server did not.
      for (const p of payloads) {
        if (ws.readyState === 1) {
          ws.send(p);
          sent++;
        }
      }
      setTimeout(() => { if (ws.readyState === 1) { mine = true; ws.close(); } }, 100);
    });
  });
  const batch = 8;
  for (let i = 0; i < n; i += batch) {
    await Promise.all(Array.from({ length: Math.min(batch, n - i) }, () => one(f.rand() < 0.5 ? frames() : frames().slice(1))));
  }
  if (o.oversizeBytes) {
    // One frame over the limit: socket.io must refuse it without reading it into a handler.
    await one([`40${SITE_NAMESPACE},`, `42${SITE_NAMESPACE},["hello",{"siteName":"${'A'.repeat(o.oversizeBytes)}"}]`]);
  }
  return { sent, closedByServer, ms: Date.now() - started };
}

export interface Route {
  method: string;
  path: string;
}

/** Every route fastify serves, read from its own route tree. */
export function discoverRoutes(app: FastifyInstance): Route[] {
  const out: Route[] = [];
  const stack: { depth: number; path: string }[] = [];
  for (const line of app.printRoutes({ commonPrefix: false }).split('\n')) {
    const m = /^(.*?)[└├]── (\S+) \(([A-Z, ]+)\)/.exec(line);
    if (!m) continue;
    const depth = m[1]!.length / 4;
    while (stack.length && stack.at(-1)!.depth >= depth) stack.pop();
    const parent = stack.at(-1)?.path ?? '';
    const seg = m[2]!;
    const path = parent === '' ? seg : seg.startsWith('/') ? `${parent}${seg}` : `${parent.endsWith('/') ? parent : `${parent}/`}${seg}`;
    stack.push({ depth, path });
    for (const method of m[3]!.split(', ')) if (method !== 'HEAD') out.push({ method, path });
  }
  return out;
}

/** String() of a fuzz value, which may have a hostile prototype. */
function safeString(v: unknown): string {
  try {
    return String(v);
  } catch {
    return '[object]';
  }
}

export interface RestStats {
  sent: number;
  byStatus: Map<number, number>;
  serverErrors: string[];
  uncoded: string[];
  /** Bodies of 2xx answers to POSTs, to know what an accepted request created. */
  created: unknown[];
  ms: number;
}

/**
 * `n` requests over every discovered route: path parameters, query strings, bodies (random, mutated from `valid`,
 * truncated, with NaN literals, over the size limit) and authorization headers (none, junk, a revoked or expired
 * token, a real one of each role).
 */
export async function fuzzRest(url: string, routes: readonly Route[], n: number, f: Fuzzer, o: { tokens: string[]; valid: Record<string, unknown>[]; ids: string[] }): Promise<RestStats> {
  const started = Date.now();
  const stats: RestStats = { sent: 0, byStatus: new Map(), serverErrors: [], uncoded: [], created: [], ms: 0 };
  const paramValues = [...o.ids, 'x', '..', '%2e%2e%2f%2e%2e%2fetc%2fpasswd', '%00', 'a'.repeat(5000), 'study-%F0%9F%92%A9', '__proto__', 'constructor', '1e309', '-1'];
  for (let i = 0; i < n; i++) {
    const route = f.pick(routes);
    const path = route.path.replace(/:[a-zA-Z]+/g, () => f.pick(paramValues));
    const query = f.rand() < 0.3 ? `?${f.pick(['studyId', 'minCellCount', 'token', '__proto__'])}=${encodeURIComponent(safeString(f.randomValue()).slice(0, 200).replace(/[\ud800-\udfff]/g, '?'))}` : '';
    const headers: Record<string, string> = {};
    const auth = f.rand();
    if (auth < 0.75) headers.authorization = `Bearer ${f.pick(o.tokens)}`;
    else if (auth < 0.85) headers.authorization = f.pick(['Bearer', 'Basic YTpi', 'Bearer \u0000', `Bearer ${'x'.repeat(8000)}`, 'bearer cht_', 'Bearer a b']).replace(/[^\t\x20-\x7e]/g, '?');
    let body: string | undefined;
    if (route.method === 'POST') {
      headers['content-type'] = f.rand() < 0.95 ? 'application/json' : f.pick(['text/plain', 'application/x-www-form-urlencoded', 'application/json; charset=utf-16']);
      const r = f.rand();
      if (r < 0.4) body = JSON.stringify(f.mutate(f.pick(o.valid))) ?? 'null';
      else if (r < 0.75) body = JSON.stringify(f.randomValue()) ?? 'null';
      else if (r < 0.85) body = (JSON.stringify(f.pick(o.valid)) ?? '{}').slice(0, f.int(200)); // truncated
      else if (r < 0.93) body = f.pick(['{"training":{"rounds":NaN}}', '{"a":Infinity}', '{"a":1e999}', '[', '{"__proto__":{"admin":true}}', '\u0000', '{}{}']);
      else body = `{"name":"${'A'.repeat(1_200_000)}"}`; // over the 1 MiB body limit
    }
    const res = await fetch(new URL(path + query, url), { method: route.method, headers, redirect: 'manual', ...(body === undefined ? {} : { body }) });
    stats.sent++;
    stats.byStatus.set(res.status, (stats.byStatus.get(res.status) ?? 0) + 1);
    const text = await res.text();
    if (res.status >= 500) stats.serverErrors.push(`${route.method} ${path.slice(0, 80)} -> ${res.status} ${text.slice(0, 200)}`);
    if (res.status >= 400) {
      let code: unknown;
      try {
        code = (JSON.parse(text) as { error?: { code?: unknown } }).error?.code;
      } catch {
        code = undefined;
      }
      if (!isErrorCode(code)) stats.uncoded.push(`${route.method} ${path.slice(0, 80)} -> ${res.status} ${text.slice(0, 120)}`);
    } else if (route.method === 'POST') {
      try {
        stats.created.push(JSON.parse(text));
      } catch {
        stats.created.push(text);
      }
    }
  }
  stats.ms = Date.now() - started;
  return stats;
}

/** The coordinator's durable state on disk: the parsed store file and a hash of every checkpoint file. */
export function diskState(dataDir: string): { store: Record<string, unknown>; checkpoints: Record<string, string> } {
  const store = JSON.parse(readFileSync(join(dataDir, 'store.json'), 'utf8')) as Record<string, unknown>;
  const checkpoints: Record<string, string> = {};
  const root = join(dataDir, 'checkpoints');
  const walk = (dir: string) => {
    if (!existsSync(dir)) return;
    for (const name of readdirSync(dir)) {
      const p = join(dir, name);
      if (statSync(p).isDirectory()) walk(p);
      else checkpoints[p.slice(root.length)] = createHash('sha256').update(readFileSync(p)).digest('hex');
    }
  };
  walk(root);
  return { store, checkpoints };
}
