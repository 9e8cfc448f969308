/**
 * What the agent does with a data source for each task kind, kept out of agent.ts: the source options a study's
 * manifest implies, the schema report that leaves the site, the stats reply, and train/hold-out data scaled the
 * way the study says.
 */
import { CohortError } from '../../protocol/errors.ts';
import type { SchemaReport, StatsResult, StudyManifest, Task } from '../../protocol/messages.ts';
import type { DataSource, DatasetSchema, LoadedSplit, SourceOptions, Split } from './data-source.ts';
import { featureSums, localStandardization, standardize } from './standardize.ts';

/** The split and the study's declarations (feature order, types, levels, classes) a source must honour. */
export function sourceOptionsFor(task: Task, manifest: StudyManifest | undefined): SourceOptions {
  const t = manifest?.task;
  return {
    holdoutFraction: task.holdoutFraction, seed: task.seed,
    ...(t?.features ? { features: t.features } : {}),
    ...(t?.featureTypes ? { featureTypes: t.featureTypes } : {}),
    ...(t?.levels ? { levels: t.levels } : {}),
    ...(t?.classes ? { classes: t.classes } : {}),
  };
}

/** Everything that leaves the site about its data: names, types, levels, classes, shape, rounded counts. */
export function schemaReport(s: DatasetSchema): SchemaReport {
  return {
    kind: s.kind, label: s.label, classes: s.classes, inputShape: s.inputShape, examplesRounded: s.examplesRounded,
    ...(s.features ? { features: s.features.map((f) => (f.levels ? { name: f.name, type: f.type, levels: f.levels } : { name: f.name, type: f.type })) } : {}),
    ...(s.skipped ? { skipped: s.skipped } : {}),
    ...(s.missing ? { missing: s.missing } : {}),
    ...(s.unseenLevels ? { unseenLevels: s.unseenLevels } : {}),
    ...(s.droppedRows ? { droppedRows: s.droppedRows } : {}),
  };
}

/** The stats task: sums over the training split, slots below the site's minimum cell count sent as zeros. */
export async function statsReply(src: DataSource, minCellCount: number): Promise<StatsResult> {
  return { stats: featureSums(await src.load('train'), minCellCount) };
}

/**
 * A split scaled as the study says: with the pooled statistics the task carries (`federated`), this site's own
 * training statistics (`local`), or as the source gives it (`none`).
 */
export async function taskData(src: DataSource, split: Split, task: Task, manifest: StudyManifest): Promise<LoadedSplit> {
  const data = await src.load(split);
  const mode = manifest.task.standardize;
  if (mode === 'none') return data;
  if (mode === 'local') return standardize(data, localStandardization(split === 'train' ? data : await src.load('train')));
  const s = 'standardization' in task ? task.standardization : undefined;
  if (!s) throw new CohortError('COHORT_ERR_SITE_TASK_MISMATCH', 'the study standardizes federatedly but the task carries no pooled statistics');
  return standardize(data, s);
}
