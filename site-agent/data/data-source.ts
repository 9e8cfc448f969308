/**
 * What every local data source (CSV, image folders, DICOM) offers the agent. Data never leaves the site: only
 * `describe()`'s schema (with counts rounded) is ever sent to the coordinator.
 */
export type Split = 'train' | 'holdout';

export interface FeatureSchema {
  name: string;
  type: 'number' | 'category';
  /** For categories: the levels, in the order used for one-hot encoding. */
  levels?: string[];
}

export interface DatasetSchema {
  kind: 'csv' | 'images' | 'dicom';
  /** Tabular features in model input order (after one-hot expansion of categories they become `inputShape`). */
  features?: FeatureSchema[];
  label: string;
  /** Class names in index order (a binary task has two, negative first). */
  classes: string[];
  /** Shape of one example as the model sees it, e.g. [30] or [8, 8, 1]. */
  inputShape: number[];
  /** Row/image count rounded (to protect small cohorts); see `roundCount`. */
  examplesRounded: number;
  /** Examples skipped as unreadable, with reasons counted (images/DICOM). */
  skipped?: { count: number; reasons: Record<string, number> };
}

export interface LoadedSplit {
  /** Row-major examples, `n * prod(inputShape)` values. */
  x: Float32Array;
  /** Class index per example. */
  y: Int32Array;
  n: number;
  inputShape: number[];
  classes: string[];
}

export interface DataSource {
  describe(): Promise<DatasetSchema>;
  /** Fixed, seeded split: the same data and seed always give the same rows. */
  load(split: Split): Promise<LoadedSplit>;
}

/** Rounds a count to protect small cohorts: to the nearest 10 (and never below 10 when non-zero). */
export function roundCount(n: number): number {
  if (n <= 0) return 0;
  return Math.max(10, Math.round(n / 10) * 10);
}
