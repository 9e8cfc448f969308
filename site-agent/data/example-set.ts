/**
 * The shared half of the image and DICOM sources: a list of decoded examples, each tagged with the file it came
 * from, split by file (so the frames of one multi-frame file never straddle train and hold-out), and the files
 * skipped, counted by error code.
 */
import { CohortError } from '../../protocol/errors.ts';
import { roundCount, roundCounts, type DatasetSchema, type LoadedSplit, type Split } from './data-source.ts';
import { splitIndices } from './split.ts';

export interface Example {
  /** Index of the file this example came from (split unit). */
  file: number;
  y: number;
  x: Float32Array;
}

export interface ExampleSet {
  kind: 'images' | 'dicom';
  label: string;
  classes: string[];
  /** [height, width, channels] */
  shape: number[];
  /** Class of each file, by file index (files that were skipped included, as -1). */
  fileClasses: Int32Array;
  examples: Example[];
  skipped: Map<string, number>;
}

export function describeExamples(set: ExampleSet): DatasetSchema {
  const skippedCount = [...set.skipped.values()].reduce((a, b) => a + b, 0);
  return {
    kind: set.kind, label: set.label, classes: set.classes, inputShape: set.shape, examplesRounded: roundCount(set.examples.length),
    ...(skippedCount ? { skipped: { count: roundCount(skippedCount), reasons: roundCounts(set.skipped) } } : {}),
  };
}

/**
 * Train or hold-out examples: files are split (stratified by class, seeded), then expanded into their examples.
 * Each channel is one standardization slot.
 */
export function loadExamples(set: ExampleSet, split: Split, holdoutFraction: number, seed: number): LoadedSplit {
  if (set.examples.length === 0) throw new CohortError('COHORT_ERR_DATA_EMPTY', 'every file was skipped; nothing to train on');
  const usable = [...new Set(set.examples.map((e) => e.file))].sort((a, b) => a - b);
  const labels = usable.map((f) => set.fileClasses[f]!);
  const { train, holdout } = splitIndices(usable.length, holdoutFraction, seed, labels);
  const files = new Set((split === 'train' ? train : holdout).map((i) => usable[i]!));
  const chosen = set.examples.filter((e) => files.has(e.file));
  const width = set.shape.reduce((a, b) => a * b, 1);
  const x = new Float32Array(chosen.length * width);
  chosen.forEach((e, i) => x.set(e.x, i * width));
  const channels = set.shape[2] ?? 1;
  const of = Int32Array.from({ length: width }, (_, i) => i % channels);
  return { x, y: Int32Array.from(chosen, (e) => e.y), n: chosen.length, inputShape: [...set.shape], classes: [...set.classes], slots: { of, count: channels } };
}

/** Lets the event loop run (socket heartbeats) while a large folder decodes. */
export const yieldToLoop = (): Promise<void> => new Promise((r) => setImmediate(r));
