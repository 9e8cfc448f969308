/**
 * Re-runs a site's local training for a recorded `train` task on the site's own data, exactly as its agent did:
 * the plaintext update the coordinator must never see under secure aggregation, which tests use to check that the
 * stored model moved by the sites' weighted mean.
 */
import { decodeTensors } from '../../protocol/codec.ts';
import { StudyManifestSchema, type TrainTask } from '../../protocol/messages.ts';
import { flatDelta } from '../../protocol/crypto/quantize.ts';
import { loadSiteConfig } from '../../site-agent/config.ts';
import { openDataSource } from '../../site-agent/data/open-source.ts';
import { sourceOptionsFor, taskData } from '../../site-agent/data/task-data.ts';
import { train } from '../../site-agent/training/trainer.ts';

export async function replayTraining(siteDir: string, task: TrainTask): Promise<{ delta: Float64Array; numExamples: number }> {
  const cfg = loadSiteConfig(siteDir);
  const ds = cfg.datasets.find((d) => d.id === task.dataset)!;
  const manifest = StudyManifestSchema.parse(task.manifest.raw);
  const src = openDataSource(siteDir, ds, sourceOptionsFor(task, manifest));
  const global = decodeTensors(task.weights);
  const out = await train(task.model, global, await taskData(src, 'train', task, manifest), {
    epochs: task.localEpochs, batchSize: task.batchSize, optimizer: task.optimizer, learningRate: task.learningRate, seed: task.seed + task.round,
    ...(task.proximalMu ? { proximalMu: task.proximalMu } : {}),
  });
  return { delta: flatDelta(out.weights, global), numExamples: out.numExamples };
}

/** Largest |stored delta - example-weighted mean of the updates| over all coordinates. */
export function meanError(stored: ArrayLike<number>, updates: readonly { delta: Float64Array; numExamples: number }[]): number {
  const total = updates.reduce((n, u) => n + u.numExamples, 0);
  let err = 0;
  for (let i = 0; i < stored.length; i++) {
    let m = 0;
    for (const u of updates) m += (u.numExamples / total) * u.delta[i]!;
    err = Math.max(err, Math.abs(stored[i]! - m));
  }
  return err;
}
