/**
 * `npm run bench:fuzz`: how fast the coordinator refuses garbage, and whether it holds memory doing so. The
 * coordinator runs as its own process (`cohort coordinator`), so its memory is read from /proc/<pid>/status
 * (VmRSS now, VmHWM peak; Linux). Baseline measured in the same run: well-formed hellos, each answered with a
 * fresh signed challenge. Then random and mutated socket events, raw broken frames and REST requests over every
 * route. The store file and checkpoints must be byte-for-byte what they were.
 *
 * COHORT_FUZZ_SOCKET (10000), COHORT_FUZZ_REST (3000), COHORT_FUZZ_RAW (400).
 */
import { readFileSync } from 'node:fs';
import { io, type Socket } from 'socket.io-client';
import nacl from 'tweetnacl';
import { tempDir, json } from '../tests/helpers/cluster.ts';
import { startCoordinatorProcess } from '../tests/helpers/processes.ts';
import { diskState, fuzzer, fuzzRawFrames, fuzzRest, fuzzSocket, type Route } from '../tests/helpers/fuzz.ts';
import { newToken } from '../coordinator/auth.ts';
import { SITE_NAMESPACE } from '../protocol/events.ts';
import { PROTOCOL_VERSION } from '../protocol/version.ts';
import { wdbcManifest } from '../tests/helpers/cluster.ts';

const N_SOCKET = Number(process.env.COHORT_FUZZ_SOCKET ?? 10_000);
const N_REST = Number(process.env.COHORT_FUZZ_REST ?? 3000);
const N_RAW = Number(process.env.COHORT_FUZZ_RAW ?? 400);

function memMB(pid: number): { rss: number; peak: number } {
  const s = readFileSync(`/proc/${pid}/status`, 'utf8');
  const kb = (k: string) => Number(new RegExp(`${k}:\\s+(\\d+)`).exec(s)?.[1] ?? NaN);
  return { rss: Math.round(kb('VmRSS') / 102.4) / 10, peak: Math.round(kb('VmHWM') / 102.4) / 10 };
}

const dataDir = tempDir('cohort-bench-fuzz-');
const admin = newToken('cht');
const coord = await startCoordinatorProcess(dataDir, { adminToken: admin, args: ['--auth-failures-per-minute', '100000000'], env: { COHORT_LOG_LEVEL: 'error' } });
const pid = coord.child.pid!;
try {
  // Something to protect: a study and tokens in the store.
  await json(coord.url, '/api/studies', { method: 'POST', body: wdbcManifest() });
  const viewer = (await json<{ token: string }>(coord.url, '/api/admin/tokens', { method: 'POST', body: { name: 'v', role: 'viewer' } })).body.token;
  await new Promise((r) => setTimeout(r, 300));
  const before = diskState(dataDir);
  const mem0 = memMB(pid);

  // Baseline: well-formed hellos over 4 connections.
  const sockets: Socket[] = await Promise.all(Array.from({ length: 4 }, () => new Promise<Socket>((resolve) => {
    const s = io(new URL(SITE_NAMESPACE, coord.url).toString(), { transports: ['websocket'], reconnection: false, forceNew: true });
    s.once('connect', () => resolve(s));
  })));
  const kp = nacl.sign.keyPair();
  const HELLOS = 2000;
  const t0 = Date.now();
  for (let i = 0; i < HELLOS; i++) {
    await sockets[i % 4]!.timeout(5000).emitWithAck('hello', { protocolVersion: PROTOCOL_VERSION, siteName: 'Bench', publicKey: Buffer.from(kp.publicKey).toString('base64') });
  }
  const helloRate = HELLOS / ((Date.now() - t0) / 1000);
  for (const s of sockets) s.close();

  const sock = await fuzzSocket(coord.url, N_SOCKET, fuzzer(1), { clients: 4 });
  const mem1 = memMB(pid);
  const raw = await fuzzRawFrames(coord.url, N_RAW, fuzzer(2), { oversizeBytes: 300 * 1024 * 1024 });
  const routes: Route[] = [
    { method: 'GET', path: '/healthz' }, { method: 'GET', path: '/api/sites' }, { method: 'GET', path: '/api/studies' }, { method: 'POST', path: '/api/studies' },
    { method: 'GET', path: '/api/studies/:id' }, { method: 'POST', path: '/api/studies/:id/start' }, { method: 'POST', path: '/api/studies/:id/stop' },
    { method: 'GET', path: '/api/studies/:id/model/model.json' }, { method: 'POST', path: '/api/admin/site-invites' }, { method: 'POST', path: '/api/admin/tokens' },
    { method: 'POST', path: '/api/admin/tokens/:id/revoke' }, { method: 'POST', path: '/api/admin/sites/:id/revoke' }, { method: 'GET', path: '/api/audit' }, { method: 'POST', path: '/api/enroll' },
  ];
  const rest = await fuzzRest(coord.url, routes, N_REST, fuzzer(3), { tokens: [viewer, 'cht_junk', ''], valid: [wdbcManifest() as unknown as Record<string, unknown>, { name: 'x' }], ids: ['x', 'study-nope'] });
  const mem2 = memMB(pid);
  await new Promise((r) => setTimeout(r, 300));
  const after = diskState(dataDir);
  const unchanged = JSON.stringify(after) === JSON.stringify(before);
  const health = await json<{ ok: boolean }>(coord.url, '/healthz');

  const rate = (n: number, ms: number) => Math.round(n / (ms / 1000));
  console.log('# fuzz (coordinator in its own process)');
  console.log(`baseline: ${Math.round(helloRate)} well-formed hellos/s (each a fresh signed challenge)`);
  console.log(`socket fuzz: ${sock.sent} events in ${sock.ms} ms = ${rate(sock.sent, sock.ms)}/s (x${(rate(sock.sent, sock.ms) / helloRate).toFixed(2)} the hello rate); ${sock.answered} answered, ${sock.uncoded} without a registered code`);
  console.log(`  codes: ${[...sock.codes].sort((a, b) => b[1] - a[1]).map(([c, n]) => `${c.replace('COHORT_ERR_', '')} ${n}`).join(', ')}`);
  console.log(`raw frames: ${raw.sent} frames on ${N_RAW + 1} connections (one of 300 MiB) in ${raw.ms} ms; ${raw.closedByServer} connections closed by the coordinator`);
  console.log(`REST fuzz: ${rest.sent} requests in ${rest.ms} ms = ${rate(rest.sent, rest.ms)}/s; statuses ${[...rest.byStatus].sort().map(([s, n]) => `${s}:${n}`).join(' ')}; 5xx ${rest.serverErrors.length}; uncoded ${rest.uncoded.length}`);
  console.log(`coordinator RSS: ${mem0.rss} MB before, ${mem1.rss} MB after socket fuzz, ${mem2.rss} MB at the end; peak ${mem2.peak} MB (x${(mem2.rss / mem0.rss).toFixed(2)} end/start)`);
  console.log(`state on disk unchanged: ${unchanged}; healthy: ${health.body.ok}`);
  console.log(`RESULT fuzz socket_per_s=${rate(sock.sent, sock.ms)} ratio_vs_hello=${(rate(sock.sent, sock.ms) / helloRate).toFixed(2)} rest_per_s=${rate(rest.sent, rest.ms)} rss_before_mb=${mem0.rss} rss_after_mb=${mem2.rss} peak_rss_mb=${mem2.peak} unchanged=${unchanged}`);
  if (!unchanged || sock.uncoded || rest.serverErrors.length || rest.uncoded.length || !health.body.ok) process.exitCode = 1;
} finally {
  await coord.kill();
}
