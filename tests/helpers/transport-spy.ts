/**
 * Spies on the coordinator's transport in integration tests: disconnect a real agent when a given task reaches it,
 * keep every task sent and reply received, and replay a site's local training for a recorded task (its plaintext
 * update, as the agent made it, for comparison with what the coordinator stored).
 */
import type { Coordinator } from '../../coordinator/app.ts';
import { decodeTensors } from '../../protocol/codec.ts';
import { StudyManifestSchema, type Reply, type Task, type TrainTask } from '../../protocol/messages.ts';
import { flatDelta } from '../../protocol/crypto/quantize.ts';
import { loadSiteConfig } from '../../site-agent/config.ts';
import { openDataSource } from '../../site-agent/data/open-source.ts';
import { sourceOptionsFor, taskData } from '../../site-agent/data/task-data.ts';
import { train } from '../../site-agent/training/trainer.ts';
import { clippedRecordGradients } from '../../site-agent/training/dp-sgd.ts';
import type { TestSite } from './cluster.ts';

/** Stops `victim`'s agent (a real disconnect) when a task of `kind` for `round` is about to reach it. */
export function dropWhen(c: Coordinator, plan: { site: TestSite; round: number; kind: Task['kind'] }[]): void {
  const send = c.transport.send.bind(c.transport);
  c.transport.send = async (siteId, task, timeoutMs) => {
    const hit = plan.find((p) => p.round === task.round && p.kind === task.kind && p.site.agent.siteId === siteId);
    if (hit) {
      plan.splice(plan.indexOf(hit), 1);
      await hit.site.agent.stop();
    }
    return send(siteId, task, timeoutMs);
  };
}

/** Keeps every task the coordinator sends and every reply it receives, as received. */
export function record(c: Coordinator): { sent: { siteId: string; task: Task }[]; received: { siteId: string; kind: string; round: number; reply: Reply<unknown> }[] } {
  const log = { sent: [] as { siteId: string; task: Task }[], received: [] as { siteId: string; kind: string; round: number; reply: Reply<unknown> }[] };
  const send = c.transport.send.bind(c.transport);
  c.transport.send = async (siteId, task, timeoutMs) => {
    log.sent.push({ siteId, task });
    const reply = await send(siteId, task, timeoutMs);
    log.received.push({ siteId, kind: task.kind, round: task.round, reply });
    return reply;
  };
  return log;
}

/** Re-runs a site's local training for a recorded task, on its own data: its plaintext update, as the agent made it. */
export async function replay(site: TestSite, task: TrainTask): Promise<{ delta: Float64Array; numExamples: number }> {
  // The agent's own data path: the same source options, the same (federated) standardization.
  const cfg = loadSiteConfig(site.dir);
  const ds = cfg.datasets.find((d) => d.id === task.dataset)!;
  const manifest = StudyManifestSchema.parse(task.manifest.raw);
  const src = openDataSource(site.dir, ds, sourceOptionsFor(task, manifest));
  const global = decodeTensors(task.weights);
  const out = await train(task.model, global, await taskData(src, 'train', task, manifest), {
    epochs: task.localEpochs, batchSize: task.batchSize, optimizer: task.optimizer, learningRate: task.learningRate, seed: task.seed + task.round,
  });
  return { delta: flatDelta(out.weights, global), numExamples: out.numExamples };
}

/**
 * Re-computes, for a recorded record-distributed train task, a site's noise-free sum of per-record clipped gradients
 * at the task's global model, on its own data, and its record count: what its lanes hold before rounding and noise.
 */
export async function replayGradientSum(site: TestSite, task: TrainTask, clip: number): Promise<{ sum: Float64Array; n: number }> {
  const cfg = loadSiteConfig(site.dir);
  const ds = cfg.datasets.find((d) => d.id === task.dataset)!;
  const manifest = StudyManifestSchema.parse(task.manifest.raw);
  const src = openDataSource(site.dir, ds, sourceOptionsFor(task, manifest));
  const global = decodeTensors(task.weights);
  let sum: Float64Array | undefined;
  const out = await clippedRecordGradients(task.model, global, await taskData(src, 'train', task, manifest), clip, (g) => {
    sum ??= new Float64Array(g.length);
    for (let i = 0; i < g.length; i++) sum[i]! += g[i]!;
  });
  return { sum: sum!, n: out.numExamples };
}
