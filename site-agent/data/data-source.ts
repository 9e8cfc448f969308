/**
 * What every local data source (CSV, image folders, DICOM) offers the agent. Data never leaves the site: only
 * `describe()`'s schema (with counts rounded) is ever sent to the coordinator.
 *
 * Sources return features *before* standardization: the agent standardizes with statistics pooled across sites
 * (`standardize.ts`), so every site scales its data the same way. `LoadedSplit.slots` says which values share a
 * statistic (a tabular column, or an image channel).
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
  /** Files skipped as unreadable (images/DICOM): count and count per error code, all rounded. */
  skipped?: { count: number; reasons: Record<string, number> };
  /** Missing values per column (rounded), for columns that have any. */
  missing?: Record<string, number>;
  /** Values outside a category's declared levels, per column (rounded); encoded as all zeros. */
  unseenLevels?: Record<string, number>;
  /** Rows dropped for a missing value under the `drop` strategy or a missing label (rounded). */
  droppedRows?: number;
}

export interface LoadedSplit {
  /** Row-major examples, `n * prod(inputShape)` values. */
  x: Float32Array;
  /** Class index per example. */
  y: Int32Array;
  n: number;
  inputShape: number[];
  classes: string[];
  /**
   * Standardization slot of each of the `prod(inputShape)` values of an example (-1: leave as is, e.g. one-hot
   * columns), and how many slots there are. Absent: every value is its own slot.
   */
  slots?: { of: Int32Array; count: number };
}

/** What a task tells a source beyond its own config: the split, and the study's declarations. */
export interface SourceOptions {
  holdoutFraction: number;
  seed: number;
  /** From the study manifest's `task`: feature order, declared types and category levels. */
  features?: readonly string[];
  featureTypes?: Readonly<Record<string, 'number' | 'category'>>;
  levels?: Readonly<Record<string, readonly string[]>>;
  /** Class names in index order; examples of other classes are left out and counted. */
  classes?: readonly string[];
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

/** Rounds every count of a record, dropping zeros. */
export function roundCounts(counts: ReadonlyMap<string, number> | Record<string, number>): Record<string, number> {
  const entries = counts instanceof Map ? [...counts] : Object.entries(counts);
  return Object.fromEntries(entries.filter(([, n]) => n > 0).map(([k, n]) => [k, roundCount(n)]));
}

/** Sorts class names numerically when all are numbers, else alphabetically. */
export function sortClasses(names: Iterable<string>): string[] {
  const all = [...new Set(names)];
  const numeric = all.every((c) => c.trim() !== '' && Number.isFinite(Number(c)));
  return all.sort((a, b) => (numeric ? Number(a) - Number(b) : a.localeCompare(b)));
}
