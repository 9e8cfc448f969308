/**
 * `npm run bench:secagg`: what secure aggregation (SecAgg+) costs against plain aggregation, measured in the same
 * run. The parties run in this process with the real crypto and the real stage code: site-agent/mods/secagg.ts for
 * every site, coordinator/secure-aggregation/secure-sum.ts for the coordinator, through the in-memory transport.
 * Training is left out on both sides (it is the same work either way); each site's update is a fixed vector.
 *
 *   plain    site: encode its float32 frame; coordinator: decode each frame (shape and finiteness checks) and add
 *            it, weighted, into a float64 sum as it arrives (the cheapest honest plain aggregation)
 *   secagg   site: the four stages (keys, shares, quantize + mask, unmask); coordinator: the four stages, the
 *            streaming sum of masked vectors, and the unmasking
 *
 * Bytes are counted from the messages themselves (binary fields at their length, everything else as JSON), in
 * both directions. Dropouts happen at the masked-input stage, after sharing: the costliest place, since the
 * coordinator must then rebuild the dropped sites' mask keys and remove their pairwise masks.
 *
 * Times are given twice: wall clock, and CPU time of this process. The code measured is single-threaded, so on a
 * machine where other processes compete for the cores the CPU time is what the same work takes on a quiet one;
 * the floors are checked on both and both are printed.
 *
 * Every configuration runs after a warm-up (so the JIT has compiled both paths) and, for vectors up to 100K
 * lanes, three times with the median kept.
 *
 * Flags: --n 5,10,20,100  --d 100000,1000000  --dropout 0,0.1  --reps 3
 */
import { loadavg, cpus } from 'node:os';
import { parseArgs } from 'node:util';
import nacl from 'tweetnacl';
import { decodeTensors, encodeTensors } from '../protocol/codec.ts';
import { toWireError } from '../protocol/errors.ts';
import { MaskedTrainResultSchema, TaskSchema, parseMessage, type Reply, type Task, type TrainTask } from '../protocol/messages.ts';
import { SecureAggregationSettingsSchema } from '../protocol/secagg-messages.ts';
import { manifestHash } from '../protocol/signing.ts';
import { decodeTrainingLanes } from '../protocol/crypto/quantize.ts';
import { SecAggClient, type SecAggIdentity } from '../site-agent/mods/secagg.ts';
import { runSecureSum } from '../coordinator/secure-aggregation/secure-sum.ts';
import { MemoryTransport } from '../coordinator/transport/memory-transport.ts';

const { values: flags } = parseArgs({
  options: {
    n: { type: 'string', default: '5,10,20,100' }, d: { type: 'string', default: '100000,1000000' }, dropout: { type: 'string', default: '0,0.1' },
    reps: { type: 'string', default: '3' },
  },
});
const list = (s: string) => s.split(',').map(Number).filter((x) => Number.isFinite(x));

/** Size on the wire: binary fields at their length, the rest as JSON (what socket.io sends besides framing). */
function wireBytes(value: unknown): number {
  let binary = 0;
  const json = JSON.stringify(value, (_k, v: unknown) => {
    if (v instanceof Uint8Array) {
      binary += v.byteLength;
      return null;
    }
    return v;
  });
  return binary + (json ? Buffer.byteLength(json) : 0);
}

const settings = SecureAggregationSettingsSchema.parse({ stageDeadlineMs: 600_000 });
const raw = { name: 'bench', task: { dataset: 'd', label: 'y' }, model: { template: 'logreg' }, training: { rounds: 1 } };
const manifest = { raw, hash: manifestHash(raw) };

interface Row {
  n: number; d: number; dropped: number; degree: number; threshold: number;
  siteMs: number; sitePlainMs: number; coordMs: number; unmaskMs: number; addMs: number; coordPlainMs: number;
  siteCpu: number; sitePlainCpu: number; coordCpu: number; unmaskCpu: number; coordPlainCpu: number;
  siteBytes: number; sitePlainBytes: number; maskedRatio: number; maxError: number;
}

async function measure(n: number, d: number, dropFraction: number): Promise<Row> {
  const drops = dropFraction > 0 ? Math.max(1, Math.round(n * dropFraction)) : 0;
  const dropSet = new Set(Array.from({ length: drops }, (_, k) => Math.floor((k * n) / drops)));
  const bases = [0, 1, 2].map((k) => Float32Array.from({ length: d }, (_, i) => Math.sin(i * 0.001 * (k + 1)) * 0.05));
  const global = [{ shape: [d], data: new Float32Array(d) }];
  const globalFrame = encodeTensors(global);
  const sites = Array.from({ length: n }, (_, i) => {
    const kp = nacl.sign.keyPair();
    const publicKeyB64 = Buffer.from(kp.publicKey).toString('base64');
    const identity: SecAggIdentity = { siteId: `site-${i}`, secretKey: kp.secretKey, publicKeyB64 };
    return { i, identity, client: new SecAggClient(), delta: bases[i % 3]!, count: 100 + ((i * 37) % 200), ms: 0, cpu: 0, overhead: 0, overheadCpu: 0, down: 0, up: 0 };
  });
  const terms = { settings, manifestHash: manifest.hash, minSitesPerAggregate: 2 };

  // ---- secure aggregation
  const handler = (s: (typeof sites)[number]) => (task: Task): Reply<unknown> => {
    if (dropSet.has(s.i) && task.kind === 'train') return { ok: false, error: { code: 'COHORT_ERR_PROTOCOL_DISCONNECTED', message: 'dropped' } };
    const t0 = performance.now();
    const c0 = process.cpuUsage();
    s.down += wireBytes(task);
    const t1 = performance.now();
    const c1 = process.cpuUsage();
    let reply: Reply<unknown>;
    try {
      const t = parseMessage(TaskSchema, task, 'task');
      if (t.kind === 'secagg-advertise') reply = { ok: true, data: s.client.advertise(t, s.identity, terms) };
      else if (t.kind === 'secagg-share') reply = { ok: true, data: s.client.share(t, s.identity) };
      else if (t.kind === 'train' && t.secagg) {
        const lanes = s.client.trainingLanes(t.secagg.sessionId, s.delta, 0.5, s.count);
        reply = { ok: true, data: { masked: s.client.mask(t.studyId, t.round, t.secagg, lanes), backend: 'bench', durationMs: 0 } };
      } else if (t.kind === 'secagg-unmask') reply = { ok: true, data: s.client.unmask(t, terms) };
      else reply = { ok: false, error: { code: 'COHORT_ERR_PROTOCOL_UNKNOWN_EVENT', message: t.kind } };
    } catch (err) {
      reply = { ok: false, error: toWireError(err) };
    }
    const t2 = performance.now();
    const c2 = process.cpuUsage();
    s.up += wireBytes(reply);
    s.ms += t2 - t1;
    s.cpu += cpuMs(c1, c2);
    s.overhead += t1 - t0 + (performance.now() - t2);
    s.overheadCpu += cpuMs(c0, c1) + cpuMs(c2, process.cpuUsage());
    return reply;
  };
  const transport = new MemoryTransport(sites.map((s) => ({ id: s.identity.siteId, name: `Site ${s.i}`, handler: handler(s) })), { copy: false });
  const maxWeight = 300;
  let taskN = 0;
  const wall0 = performance.now();
  const cpu0 = process.cpuUsage();
  const res = await runSecureSum({
    transport, sites: sites.map((s) => ({ id: s.identity.siteId, name: `Site ${s.i}`, identityKey: s.identity.publicKeyB64 })),
    settings, vectorLength: d + 2, maxWeight, minSurvivors: 2, inputSchema: MaskedTrainResultSchema, inputDeadlineMs: 600_000,
    base: () => ({ taskId: `b${++taskN}`, manifest, studyId: 'bench', round: 1, dataset: 'd', holdoutFraction: 0.2, seed: 1 }),
    inputTask: (_s, base, secagg): TrainTask => ({
      kind: 'train', ...base, model: { spec: { template: 'logreg', l2: 0 }, inputShape: [d - 1], numClasses: 2 }, weights: globalFrame,
      localEpochs: 1, batchSize: 32, optimizer: 'adam', learningRate: 0.01, participants: n, secagg,
    }),
  });
  const wall = performance.now() - wall0;
  const cpuAll = cpuMs(cpu0, process.cpuUsage());
  const siteTotal = sites.reduce((a, s) => a + s.ms + s.overhead, 0);
  const coordMs = wall - siteTotal;
  const coordCpu = cpuAll - sites.reduce((a, s) => a + s.cpu + s.overheadCpu, 0);
  const decoded = decodeTrainingLanes(res.sum, { clip: settings.clip, bits: settings.quantizationBits, maxWeight });
  // Sanity: the unmasked mean equals the plaintext weighted mean.
  const live = sites.filter((s) => !dropSet.has(s.i));
  const W = live.reduce((a, s) => a + s.count, 0);
  let maxError = 0;
  for (let j = 0; j < d; j += Math.max(1, Math.floor(d / 5000))) {
    let m = 0;
    for (const s of live) m += (s.count / W) * s.delta[j]!;
    maxError = Math.max(maxError, Math.abs(m - decoded.meanDelta[j]!));
  }
  const survivorsOnly = live;
  const siteMs = survivorsOnly.reduce((a, s) => a + s.ms, 0) / survivorsOnly.length;
  const siteCpu = survivorsOnly.reduce((a, s) => a + s.cpu, 0) / survivorsOnly.length;
  const siteBytes = survivorsOnly.reduce((a, s) => a + s.down + s.up, 0) / survivorsOnly.length;

  // ---- plain aggregation of the same updates, same survivors
  let sitePlain = 0;
  let sitePlainCpu = 0;
  let plainBytes = 0;
  const frames: { frame: Uint8Array; count: number }[] = [];
  for (const s of live) {
    const task = { kind: 'train', taskId: 'p', manifest, studyId: 'bench', round: 1, dataset: 'd', holdoutFraction: 0.2, seed: 1, model: { spec: { template: 'logreg', l2: 0 }, inputShape: [d - 1], numClasses: 2 }, weights: globalFrame, localEpochs: 1, batchSize: 32, optimizer: 'adam', learningRate: 0.01, participants: n };
    const t0 = performance.now();
    const k0 = process.cpuUsage();
    const frame = encodeTensors([{ shape: [d], data: s.delta }]);
    sitePlain += performance.now() - t0;
    sitePlainCpu += cpuMs(k0, process.cpuUsage());
    plainBytes += wireBytes(task) + wireBytes({ ok: true, data: { weights: frame, numExamples: s.count, trainLoss: 0.5, backend: 'bench', durationMs: 0 } });
    frames.push({ frame, count: s.count });
  }
  const c0 = performance.now();
  const k1 = process.cpuUsage();
  const acc = new Float64Array(d);
  for (const { frame, count } of frames) {
    const [t] = decodeTensors(frame, { expectShapes: [[d]], requireFinite: true });
    const w = count / W;
    const x = t!.data;
    for (let j = 0; j < d; j++) acc[j]! += w * x[j]!;
  }
  Float32Array.from(acc);
  const coordPlainMs = performance.now() - c0;
  const coordPlainCpu = cpuMs(k1, process.cpuUsage());
  return {
    n, d, dropped: drops, degree: res.session.degree, threshold: res.session.threshold,
    siteMs, sitePlainMs: sitePlain / live.length, coordMs, unmaskMs: res.timing.unmaskMs, addMs: res.timing.addMs, coordPlainMs,
    siteCpu, sitePlainCpu: sitePlainCpu / live.length, coordCpu, unmaskCpu: res.timing.unmaskCpuMs, coordPlainCpu,
    siteBytes, sitePlainBytes: plainBytes / live.length, maskedRatio: ((d + 2) * 4) / (d * 4), maxError,
  };
}

function cpuMs(a: NodeJS.CpuUsage, b: NodeJS.CpuUsage): number {
  return (b.user - a.user + b.system - a.system) / 1000;
}

const fmt = (x: number, digits = 1) => x.toFixed(digits);
const kb = (b: number) => `${(b / 1024).toFixed(0)} KiB`;

console.log(`secure aggregation bench: ${cpus().length} cores, load average ${loadavg().map((l) => l.toFixed(1)).join(' ')} (timings under load are upper bounds)`);
console.log(`settings: threshold ${settings.threshold}, clip ${settings.clip}, ${settings.quantizationBits}-bit quantization, neighbours ${settings.neighbours}; dropouts at the masked-input stage\n`);
/** The median of `reps` runs of one configuration (each measure's median taken separately). */
async function median(n: number, d: number, f: number): Promise<Row> {
  const reps = d <= 100_000 ? Math.max(1, Number(flags.reps)) : 1;
  const runs: Row[] = [];
  for (let k = 0; k < reps; k++) runs.push(await measure(n, d, f));
  const mid = <K extends keyof Row>(key: K) => [...runs].sort((a, b) => (a[key] as number) - (b[key] as number))[Math.floor(runs.length / 2)]![key];
  return {
    ...runs[0]!, siteMs: mid('siteMs'), sitePlainMs: mid('sitePlainMs'), coordMs: mid('coordMs'), unmaskMs: mid('unmaskMs'), addMs: mid('addMs'), coordPlainMs: mid('coordPlainMs'),
    siteCpu: mid('siteCpu'), sitePlainCpu: mid('sitePlainCpu'), coordCpu: mid('coordCpu'), unmaskCpu: mid('unmaskCpu'), coordPlainCpu: mid('coordPlainCpu'),
    maxError: Math.max(...runs.map((r) => r.maxError)),
  };
}

// Warm-up: compile both paths before anything is timed.
await measure(5, 100_000, 0);
await measure(6, 20_000, 0.2);

const header = [
  'sites', 'params', 'drop', 'k', 't', 'site ms (cpu)', 'plain site ms', 'added site ms (cpu)', 'site x', 'coord ms (cpu)', 'unmask ms (cpu)',
  'plain coord ms (cpu)', 'coord x', 'site bytes', 'plain site bytes', 'bytes x', 'max |err|',
];
const both = (wall: number, cpu: number, digits = 1) => `${fmt(wall, digits)} (${fmt(cpu, digits)})`;
console.log(`| ${header.join(' | ')} |`);
console.log(`|${header.map(() => '---').join('|')}|`);
const rows: Row[] = [];
for (const d of list(flags.d)) {
  for (const n of list(flags.n)) {
    for (const f of list(flags.dropout)) {
      const r = await median(n, d, f);
      rows.push(r);
      console.log(`| ${[
        r.n, r.d.toLocaleString('en'), r.dropped, r.degree, r.threshold, both(r.siteMs, r.siteCpu), both(r.sitePlainMs, r.sitePlainCpu, 2),
        both(r.siteMs - r.sitePlainMs, r.siteCpu - r.sitePlainCpu), `${fmt(r.siteCpu / Math.max(r.sitePlainCpu, 0.01), 0)}x`,
        both(r.coordMs, r.coordCpu), both(r.unmaskMs, r.unmaskCpu), both(r.coordPlainMs, r.coordPlainCpu), `${fmt(r.coordCpu / Math.max(r.coordPlainCpu, 0.01), 1)}x`,
        kb(r.siteBytes), kb(r.sitePlainBytes), `${fmt(r.siteBytes / r.sitePlainBytes, 3)}x`, r.maxError.toExponential(1),
      ].join(' | ')} |`);
    }
  }
}

console.log(`\nmasked upload / float32 model: ${fmt(rows[0]!.maskedRatio, 5)}x (floor 1.05x)`);
const floor = (ok: boolean) => (ok ? 'PASS' : 'MISS');
const small = rows.find((r) => r.n === 5 && r.d === 100_000 && r.dropped === 0);
if (small) {
  const added = small.siteCpu - small.sitePlainCpu;
  console.log(`floor: 5 sites x 100K: added work per site ${fmt(added)} ms cpu, ${fmt(small.siteMs - small.sitePlainMs)} ms wall (< 20): ${floor(added < 20)}; unmasking at the coordinator ${fmt(small.unmaskCpu)} ms cpu, ${fmt(small.unmaskMs)} ms wall (< 20): ${floor(small.unmaskCpu < 20)}`);
}
const big = rows.find((r) => r.n === 100 && r.d === 1_000_000 && r.dropped > 0);
if (big) {
  console.log(`floor: 100 sites x 1M, ${big.dropped} dropped: unmasked in ${fmt(big.unmaskCpu)} ms cpu, ${fmt(big.unmaskMs)} ms wall (< 2000): ${floor(big.unmaskCpu < 2000)}; all coordinator work ${fmt(big.coordCpu)} ms cpu, ${fmt(big.coordMs)} ms wall`);
}
console.log(`max |unmasked mean - plaintext mean| over all rows: ${Math.max(...rows.map((r) => r.maxError)).toExponential(2)} (bound 3e-5)`);
