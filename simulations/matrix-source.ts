/**
 * A virtual site's data: its rows of the simulation's table, in memory. Behaves as the site's CSV source would on
 * the same rows: the same seeded, stratified hold-out split (`splitIndices`), missing values imputed with the
 * training split's median, features standardized with the training split's mean and standard deviation
 * (tests/unit/matrix-source.test.ts checks it against CsvSource value for value).
 *
 * Differences, on purpose: every site reports the table's full class list, as if the study shipped a data
 * dictionary, so a site whose partition lacks a class (label skew) still matches the others; and a scenario may
 * give every site the same scaling statistics (`data.standardize: 'global'`), see docs/simulations.md.
 */
import { roundCount, type DataSource, type DatasetSchema, type FeatureSchema, type LoadedSplit, type Split } from '../site-agent/data/data-source.ts';
import { splitIndices } from '../site-agent/data/split.ts';

export interface SiteRows {
  label: string;
  features: FeatureSchema[];
  classes: string[];
  width: number;
  /** Raw row-major values of this site's rows (NaN where missing). */
  x: Float64Array;
  y: Int32Array;
  /** Each row's index in the whole table (for membership inference). */
  rowIds: Int32Array;
  /**
   * Shared scaling statistics (a study-wide data dictionary) to use instead of the site's own training split's;
   * absent: the site standardizes on its own, as the CSV source does.
   */
  stats?: ScalingStats | undefined;
}

export interface ScalingStats {
  median: Float64Array;
  mean: Float64Array;
  std: Float64Array;
}

/** Median (for imputation), mean and standard deviation of each column over `rows` (all rows when absent). */
export function scalingStats(x: Float64Array, width: number, rows?: readonly number[]): ScalingStats {
  const n = x.length / width;
  const idx = rows ?? Array.from({ length: n }, (_, i) => i);
  const median = new Float64Array(width);
  const mean = new Float64Array(width);
  const std = new Float64Array(width);
  for (let j = 0; j < width; j++) {
    const vals = idx.map((i) => x[i * width + j]!).filter((v) => !Number.isNaN(v)).sort((a, b) => a - b);
    median[j] = vals.length ? vals[Math.floor(vals.length / 2)]! : 0;
    const m = vals.reduce((a, b) => a + b, 0) / Math.max(1, vals.length);
    const v = vals.reduce((a, b) => a + (b - m) ** 2, 0) / Math.max(1, vals.length);
    mean[j] = m;
    std[j] = Math.sqrt(v) || 1;
  }
  return { median, mean, std };
}

export class MatrixSource implements DataSource {
  private readonly split: { train: number[]; holdout: number[] };
  private readonly stats: ScalingStats;

  constructor(private readonly rows: SiteRows, opts: { holdoutFraction: number; seed: number }) {
    const n = rows.y.length;
    this.split = splitIndices(n, opts.holdoutFraction, opts.seed, rows.y);
    this.stats = rows.stats ?? scalingStats(rows.x, rows.width, this.split.train);
  }

  async describe(): Promise<DatasetSchema> {
    const r = this.rows;
    return {
      kind: 'csv', label: r.label, classes: r.classes, inputShape: [r.width], examplesRounded: roundCount(r.y.length),
      features: r.features.map((f) => (f.levels ? { name: f.name, type: f.type, levels: f.levels } : { name: f.name, type: f.type })),
    };
  }

  async load(split: Split): Promise<LoadedSplit> {
    return this.loadSync(split);
  }

  loadSync(split: Split): LoadedSplit {
    const { x: raw, y: labels, width: w, classes } = this.rows;
    const { median, mean, std } = this.stats;
    const idx = split === 'train' ? this.split.train : this.split.holdout;
    const x = new Float32Array(idx.length * w);
    const y = new Int32Array(idx.length);
    idx.forEach((row, k) => {
      for (let j = 0; j < w; j++) {
        const v = raw[row * w + j]!;
        x[k * w + j] = ((Number.isNaN(v) ? median[j]! : v) - mean[j]!) / std[j]!;
      }
      y[k] = labels[row]!;
    });
    return { x, y, n: idx.length, inputShape: [w], classes };
  }

  /** Table row ids of a split, in the order `load` returns its rows. */
  rowIds(split: Split): Int32Array {
    const idx = split === 'train' ? this.split.train : this.split.holdout;
    return Int32Array.from(idx, (i) => this.rows.rowIds[i]!);
  }
}
