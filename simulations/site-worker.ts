/**
 * A simulation worker thread: hosts many virtual sites, each a production `SiteAgent` whose data source is its
 * in-memory partition and that keeps no ledger. Tasks run one at a time per worker, through `SiteAgent.handle()`:
 * the same validation, policy, approval check, secure aggregation, differential privacy and training code a hospital
 * runs, with the simulation's seeded entropy (protocol/crypto/entropy.ts). Malicious sites tamper with the update
 * after the agent produced it, or under secure aggregation with its quantized lanes before the agent masks them.
 */
import { mkdirSync } from 'node:fs';
import { join } from 'node:path';
import { parentPort } from 'node:worker_threads';
import * as tf from '@tensorflow/tfjs';
import pino from 'pino';
import { decodeTensors, encodeTensors } from '../protocol/codec.ts';
import { CohortError } from '../protocol/errors.ts';
import type { MaskedTrainResult, Reply, Task, TrainResult } from '../protocol/messages.ts';
import { SiteAgent } from '../site-agent/agent.ts';
import { Approvals } from '../site-agent/approvals.ts';
import { SiteConfigSchema } from '../site-agent/config.ts';
import { selectBackend } from '../site-agent/training/backends.ts';
import { exampleLosses, modelWith } from './attacks/membership.ts';
import type { QuantizedTransform } from '../site-agent/mods/secagg.ts';
import { attackLanes, attackUpdate, type AttackPlan } from './faults.ts';
import { seededEntropy } from './rng.ts';
import { MatrixSource } from './matrix-source.ts';
import type { FromWorker, InitMessage, LossesMessage, SiteLosses, TaskMessage, ToWorker, WorkerSite } from './worker-protocol.ts';

const port = parentPort;
if (!port) throw new Error('site-worker.ts runs only as a worker thread');
// Pick the training backend first, as an agent does on start, so every tfjs call here uses it; PROD drops tfjs's
// debug checks and its per-thread console banner.
tf.env().set('PROD', true);
await selectBackend();

interface VirtualSite {
  init: WorkerSite;
  agent: SiteAgent;
  sources: Map<string, MatrixSource>;
}

let sites = new Map<string, VirtualSite>();
let current: InitMessage | undefined;
/** The round of the task being handled (tasks run one at a time per worker), for seeded attacks on lanes. */
let taskRound = 0;

function sourceOf(site: VirtualSite, dataset: string, split: { holdoutFraction: number; seed: number }): MatrixSource {
  if (dataset !== current?.dataset) throw new CohortError('COHORT_ERR_SITE_DATASET_UNKNOWN', `this site has no dataset "${dataset}"`);
  const key = `${split.holdoutFraction}|${split.seed}`;
  let s = site.sources.get(key);
  if (!s) {
    s = new MatrixSource({ ...current.table, x: site.init.x, y: site.init.y, rowIds: site.init.rowIds }, split);
    site.sources.set(key, s);
  }
  return s;
}

function init(msg: InitMessage): number {
  current = msg;
  sites = new Map();
  const log = pino({ level: msg.logLevel, base: { worker: true } }, pino.destination(2));
  const entropy = seededEntropy(msg.seed);
  const plan = msg.attack;
  for (const s of msg.sites) {
    const dir = join(msg.runDir, s.name);
    mkdirSync(dir, { recursive: true, mode: 0o700 });
    new Approvals(dir).decide(msg.approval.studyId, 'approved', 'simulation', undefined, msg.approval.manifestHash);
    const config = SiteConfigSchema.parse({ name: s.name, coordinator: 'http://simulation.invalid/', policy: msg.policy });
    const site: VirtualSite = { init: s, agent: undefined as unknown as SiteAgent, sources: new Map() };
    // Under secure aggregation a malicious site attacks its quantized update before the agent masks it.
    const attack: QuantizedTransform | undefined = s.malicious && plan
      ? { headroom: 0, apply: (lanes, info) => attackLanes(plan, lanes, info, msg.seed, s.name, taskRound) } : undefined;
    site.agent = new SiteAgent({
      dir, config, identity: { secretKey: s.secretKey, publicKey: s.secretKey.slice(32) }, log: log.child({ site: s.name }), ledger: false,
      sourceFor: (dataset, split) => sourceOf(site, dataset, split), entropy, ...(attack ? { quantizedTransform: attack } : {}),
    });
    // What a real agent learns from the coordinator when it authenticates.
    site.agent.siteId = s.id;
    sites.set(s.name, site);
  }
  return sites.size;
}

async function runTask(msg: TaskMessage): Promise<{ value: Reply<unknown>; transfer: ArrayBuffer[] }> {
  const site = sites.get(msg.site);
  if (!site) throw new Error(`no virtual site ${msg.site} on this worker`);
  const task = (msg.weights ? { ...msg.task, weights: new Uint8Array(msg.weights) } : msg.task) as Task;
  taskRound = task.round;
  const reply = await site.agent.handle(task);
  const plan: AttackPlan | null = current?.attack ?? null;
  if (reply.ok && task.kind === 'train') {
    const data = reply.data as TrainResult | MaskedTrainResult;
    if ('masked' in data) {
      const m = data.masked;
      return { value: reply, transfer: m.byteOffset === 0 && m.byteLength === m.buffer.byteLength && m.buffer instanceof ArrayBuffer ? [m.buffer] : [] };
    }
    if (site.init.malicious && plan) {
      const global = decodeTensors(task.weights);
      data.weights = encodeTensors(attackUpdate(plan, global, decodeTensors(data.weights), current!.seed, site.init.name, task.round));
    }
    const w = data.weights;
    // Hand the frame's memory to the main thread instead of copying it (a fresh buffer, so nothing else uses it).
    if (w.byteOffset === 0 && w.byteLength === w.buffer.byteLength && w.buffer instanceof ArrayBuffer) return { value: reply, transfer: [w.buffer] };
  }
  return { value: reply, transfer: [] };
}

async function losses(msg: LossesMessage): Promise<{ value: SiteLosses[]; transfer: ArrayBuffer[] }> {
  const model = modelWith(msg.model, decodeTensors(new Uint8Array(msg.weights)));
  try {
    const out: SiteLosses[] = [];
    for (const site of [...sites.values()].sort((a, b) => (a.init.name < b.init.name ? -1 : 1))) {
      const src = sourceOf(site, msg.dataset, { holdoutFraction: msg.holdoutFraction, seed: msg.seed });
      out.push({
        site: site.init.name,
        memberIds: src.rowIds('train'), memberLosses: exampleLosses(model, msg.model.numClasses, src.loadSync('train')),
        nonMemberIds: src.rowIds('holdout'), nonMemberLosses: exampleLosses(model, msg.model.numClasses, src.loadSync('holdout')),
      });
    }
    return { value: out, transfer: out.flatMap((s) => [s.memberIds.buffer, s.memberLosses.buffer, s.nonMemberIds.buffer, s.nonMemberLosses.buffer] as ArrayBuffer[]) };
  } finally {
    model.dispose();
  }
}

let queue: Promise<void> = Promise.resolve();
port.on('message', (msg: ToWorker) => {
  queue = queue.then(async () => {
    try {
      let out: { value: unknown; transfer: ArrayBuffer[] };
      if (msg.type === 'init') out = { value: init(msg), transfer: [] };
      else if (msg.type === 'task') out = await runTask(msg);
      else out = await losses(msg);
      port.postMessage({ type: 'done', id: msg.id, value: out.value } satisfies FromWorker, out.transfer);
    } catch (err) {
      port.postMessage({ type: 'failed', id: msg.id, message: err instanceof Error ? err.message : String(err) } satisfies FromWorker);
    }
  });
});
