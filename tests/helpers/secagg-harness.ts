/**
 * Secure aggregation in one process: real site-side stage code (site-agent/mods/secagg.ts) and the real
 * coordinator-side stage code (coordinator/secure-aggregation/secure-sum.ts) talking through the in-memory
 * transport. Sites can drop out when a given stage reaches them; tests compare the unmasked mean with the
 * plaintext mean of the very same updates.
 */
import nacl from 'tweetnacl';
import { toWireError } from '../../protocol/errors.ts';
import { MaskedTrainResultSchema, TaskSchema, parseMessage, type DpSettings, type Reply, type SignedManifest, type Task, type TrainTask } from '../../protocol/messages.ts';
import { distributedRoundPlan } from '../../protocol/privacy/plan.ts';
import { decodeDistributedLanes } from '../../protocol/privacy/distributed.ts';
import { SecureAggregationSettingsSchema, type SecureAggregationSettings } from '../../protocol/secagg-messages.ts';
import { manifestHash } from '../../protocol/signing.ts';
import { decodeTrainingLanes } from '../../protocol/crypto/quantize.ts';
import type { Entropy } from '../../protocol/crypto/entropy.ts';
import { SecAggClient, type SecAggIdentity } from '../../site-agent/mods/secagg.ts';
import { runSecureSum, type SecAggStage, type SecureSumSite } from '../../coordinator/secure-aggregation/secure-sum.ts';
import { MemoryTransport } from '../../coordinator/transport/memory-transport.ts';
import { sessionShape } from '../../protocol/crypto/session.ts';

export interface SimSite {
  site: SecureSumSite;
  identity: SecAggIdentity;
  client: SecAggClient;
  delta: Float32Array;
  numExamples: number;
  loss: number;
  minSitesPerAggregate: number;
}

const STAGE_OF: Record<string, SecAggStage> = { 'secagg-advertise': 'secagg-advertise', 'secagg-share': 'secagg-share', train: 'masked-input', 'secagg-unmask': 'secagg-unmask' };

/** A deterministic pseudo-random generator for test data (never for anything secret). */
export function testRandom(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = Math.imul(a ^ (a >>> 15), a | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

export function makeSimSites(n: number, d: number, opts: { seed?: number; clip?: number; minSitesPerAggregate?: number; counts?: number[] } = {}): SimSite[] {
  const rand = testRandom(opts.seed ?? 1);
  const clip = opts.clip ?? 8;
  return Array.from({ length: n }, (_, i) => {
    const kp = nacl.sign.keyPair();
    const publicKeyB64 = Buffer.from(kp.publicKey).toString('base64');
    return {
      site: { id: `site-${i}`, name: `Site ${i}`, identityKey: publicKeyB64 },
      identity: { siteId: `site-${i}`, secretKey: kp.secretKey, publicKeyB64 },
      client: new SecAggClient(),
      delta: Float32Array.from({ length: d }, () => (rand() * 2 - 1) * clip),
      numExamples: opts.counts?.[i] ?? 50 + Math.floor(rand() * 250),
      loss: 0.2 + rand(),
      minSitesPerAggregate: opts.minSitesPerAggregate ?? 2,
    };
  });
}

export function manifestFor(settings: Partial<SecureAggregationSettings>): SignedManifest {
  const raw = { name: 'secagg harness', task: { dataset: 'd', label: 'y' }, model: { template: 'logreg' }, training: { rounds: 1 }, privacy: { secureAggregation: settings } };
  return { raw, hash: manifestHash(raw) };
}

export interface HarnessRun {
  transport: MemoryTransport;
  /** Every task the coordinator sent, and every reply it received, in order. */
  sent: { site: string; task: Task }[];
  received: { site: string; kind: string; reply: Reply<unknown> }[];
}

/**
 * Wires the sites to a memory transport; `dropAt` takes a site off line when that stage reaches it. With `dp`
 * (client-distributed), each site plans the round from the advertised session as the agent does.
 */
export function wire(sites: readonly SimSite[], settings: SecureAggregationSettings, manifest: SignedManifest, dropAt: ReadonlyMap<number, SecAggStage> = new Map(), dp?: DpSettings): HarnessRun {
  const run: HarnessRun = { transport: undefined as unknown as MemoryTransport, sent: [], received: [] };
  const terms = (s: SimSite) => ({ settings, manifestHash: manifest.hash, minSitesPerAggregate: s.minSitesPerAggregate });
  const advertiseTerms = (s: SimSite, task: Extract<Task, { kind: 'secagg-advertise' }>) => (dp ? {
    ...terms(s),
    distributed: distributedRoundPlan(dp, 1, { dim: task.session.vectorLength - 2, sites: task.session.roster.length, threshold: task.session.threshold, bits: task.session.quantizationBits }),
  } : terms(s));
  const handler = (s: SimSite, i: number) => (raw: Task): Reply<unknown> => {
    if (dropAt.get(i) === STAGE_OF[raw.kind]) {
      run.transport.setOnline(s.site.id, false);
      return { ok: false, error: { code: 'COHORT_ERR_PROTOCOL_DISCONNECTED', message: 'dropped' } };
    }
    try {
      // Parsed exactly as the agent parses what arrives from the socket.
      const task = parseMessage(TaskSchema, raw, 'task');
      switch (task.kind) {
        case 'secagg-advertise': return { ok: true, data: s.client.advertise(task, s.identity, advertiseTerms(s, task)) };
        case 'secagg-share': return { ok: true, data: s.client.share(task, s.identity) };
        case 'train': {
          const lanes = s.client.trainingLanes(task.secagg!.sessionId, s.delta, s.loss, s.numExamples);
          return { ok: true, data: { masked: s.client.mask(task.studyId, task.round, task.secagg!, lanes), backend: 'test', durationMs: 0 } };
        }
        case 'secagg-unmask': return { ok: true, data: s.client.unmask(task, terms(s)) };
        default: return { ok: false, error: { code: 'COHORT_ERR_PROTOCOL_UNKNOWN_EVENT', message: task.kind } };
      }
    } catch (err) {
      return { ok: false, error: toWireError(err) };
    }
  };
  const transport = new MemoryTransport(sites.map((s, i) => ({ id: s.site.id, name: s.site.name, handler: handler(s, i) })));
  run.transport = transport;
  const send = transport.send.bind(transport);
  transport.send = async (siteId, task, timeoutMs) => {
    run.sent.push({ site: siteId, task });
    const reply = await send(siteId, task, timeoutMs);
    run.received.push({ site: siteId, kind: task.kind, reply });
    return reply;
  };
  return run;
}

let taskCounter = 0;

/** Runs one secure training round over `sites`; returns the decoded mean and the raw result. */
export async function secureRound(sites: readonly SimSite[], opts: { settings?: Partial<SecureAggregationSettings>; dropAt?: ReadonlyMap<number, SecAggStage>; maxWeight?: number; minSurvivors?: number; run?: (r: HarnessRun) => void; dp?: DpSettings; entropy?: Entropy } = {}) {
  const settings = SecureAggregationSettingsSchema.parse({ stageDeadlineMs: 5000, ...opts.settings });
  const manifest = manifestFor(opts.settings ?? {});
  const run = wire(sites, settings, manifest, opts.dropAt, opts.dp);
  opts.run?.(run);
  const maxWeight = opts.maxWeight ?? Math.max(...sites.map((s) => s.numExamples));
  const d = sites[0]!.delta.length;
  // The coordinator's plan: the same function over the same session shape the sites see.
  const plan = opts.dp ? distributedRoundPlan(opts.dp, 1, { dim: d, sites: sites.length, threshold: sessionShape(settings, sites.length).threshold, bits: settings.quantizationBits }) : undefined;
  const result = await runSecureSum({
    transport: run.transport, sites: sites.map((s) => s.site), settings, vectorLength: d + 2, maxWeight, minSurvivors: opts.minSurvivors ?? 2,
    ...(plan ? { headroom: plan.headroom } : {}),
    base: () => ({ taskId: `t${++taskCounter}`, manifest, studyId: 'study-h', round: 1, dataset: 'd', holdoutFraction: 0.2, seed: 1 }),
    inputTask: (_site, base, secagg): TrainTask => ({
      kind: 'train', ...base, model: { spec: { template: 'logreg', l2: 0 }, inputShape: [d - 1], numClasses: 2 }, weights: new Uint8Array(0),
      localEpochs: 1, batchSize: 1, optimizer: 'adam', learningRate: 0.1, participants: sites.length, secagg,
    }),
    inputSchema: MaskedTrainResultSchema, inputDeadlineMs: 5000,
    ...(opts.entropy ? { entropy: { source: opts.entropy, label: 'harness' } } : {}),
  });
  const decoded = plan
    ? { ...decodeDistributedLanes(result.sum, plan, result.survivors.length), meanLoss: 0 }
    : decodeTrainingLanes(result.sum, { clip: settings.clip, bits: settings.quantizationBits, maxWeight });
  return { result, decoded, run, settings, maxWeight, plan };
}

/** The plaintext example-weighted mean of the named sites' clipped deltas (float64). */
export function plaintextMean(sites: readonly SimSite[], names: readonly string[], clip = 8, maxWeight = Infinity): { mean: Float64Array; weight: number; loss: number } {
  const use = sites.filter((s) => names.includes(s.site.name));
  const d = use[0]!.delta.length;
  const mean = new Float64Array(d);
  let weight = 0;
  let loss = 0;
  for (const s of use) {
    const w = Math.min(s.numExamples, maxWeight);
    weight += w;
    loss += w * s.loss;
    for (let i = 0; i < d; i++) mean[i]! += w * Math.max(-clip, Math.min(clip, s.delta[i]!));
  }
  for (let i = 0; i < d; i++) mean[i]! /= weight;
  return { mean, weight, loss: loss / weight };
}

export function maxAbsDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i]! - b[i]!));
  return m;
}
