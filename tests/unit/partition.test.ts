import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { beforeAll, describe, expect, it } from 'vitest';
import { CohortError } from '../../protocol/errors.ts';
import { CsvSource } from '../../site-agent/data/csv-source.ts';
import { CsvDatasetSchema } from '../../site-agent/config.ts';
import { localStandardization, standardize } from '../../site-agent/data/standardize.ts';
import { WDBC } from '../../cli/demo.ts';
import { loadTable, type Table } from '../../simulations/dataset.ts';
import { MatrixSource, scalingStats } from '../../simulations/matrix-source.ts';
import { PartitionSchema, partitionRows, type SitePart } from '../../simulations/partition.ts';
import { tempDir } from '../helpers/cluster.ts';

let table: Table;
beforeAll(async () => {
  table = await loadTable({ csv: WDBC, label: 'malignant', exclude: [], categorical: [] });
});

const part = (spec: unknown, sites: number, seed = 1, column?: () => string[]) =>
  partitionRows(PartitionSchema.parse(spec), { n: table.n, labels: table.y, numClasses: 2, sites, seed, ...(column ? { column } : {}) });

function everyRowOnce(parts: SitePart[], n: number): void {
  const seen = new Int32Array(n);
  for (const p of parts) for (const r of p.rows) seen[r]!++;
  expect(Array.from(seen).every((c) => c === 1)).toBe(true);
}

/** Mean over sites of the share of the site's most common label. */
function meanMajorityShare(parts: SitePart[]): number {
  return parts.reduce((s, p) => {
    const pos = Array.from(p.rows).filter((r) => table.y[r] === 1).length;
    return s + Math.max(pos, p.rows.length - pos) / p.rows.length;
  }, 0) / parts.length;
}

function codeOf(fn: () => unknown): string | undefined {
  try {
    fn();
  } catch (err) {
    return err instanceof CohortError ? err.code : String(err);
  }
  return undefined;
}

describe('partitioners on WDBC (569 rows)', () => {
  it('should assign every row exactly once when partitioning iid, by label skew, by quantity or by column', () => {
    everyRowOnce(part({ kind: 'iid' }, 7), table.n);
    everyRowOnce(part({ kind: 'dirichlet', alpha: 0.1 }, 10), table.n);
    everyRowOnce(part({ kind: 'quantity', alpha: 0.3 }, 10), table.n);
    everyRowOnce(part({ kind: 'quantity', distribution: 'power-law', exponent: 1.5 }, 10), table.n);
    everyRowOnce(part({ kind: 'column', column: 'malignant', minRows: 1 }, 0, 1, () => table.column('malignant')), table.n);
  });

  it('should give the same partition for the same seed and another for another seed', () => {
    const a = part({ kind: 'dirichlet', alpha: 0.5 }, 8, 11);
    expect(part({ kind: 'dirichlet', alpha: 0.5 }, 8, 11)).toEqual(a);
    expect(part({ kind: 'dirichlet', alpha: 0.5 }, 8, 12)).not.toEqual(a);
  });

  it('should deal near-equal shares with the global label mix when iid', () => {
    const parts = part({ kind: 'iid' }, 10);
    expect(parts.map((p) => p.rows.length).sort()).toEqual([56, 57, 57, 57, 57, 57, 57, 57, 57, 57]); // 569 = 10 * 56 + 9
    expect(meanMajorityShare(parts)).toBeLessThan(0.72); // global majority share is 0.627
  });

  it('should skew labels strongly when alpha is small and hardly when alpha is large', () => {
    const skewed = meanMajorityShare(part({ kind: 'dirichlet', alpha: 0.1 }, 10));
    const mild = meanMajorityShare(part({ kind: 'dirichlet', alpha: 100 }, 10));
    expect(skewed).toBeGreaterThan(0.85);
    expect(mild).toBeLessThan(0.72);
    expect(part({ kind: 'dirichlet', alpha: 0.1 }, 10).every((p) => p.rows.length >= 4)).toBe(true);
  });

  it('should vary site sizes under quantity skew while keeping labels mixed and minRows respected', () => {
    const sizes = part({ kind: 'quantity', alpha: 0.3, minRows: 5 }, 10).map((p) => p.rows.length);
    expect(Math.min(...sizes)).toBeGreaterThanOrEqual(5);
    expect(Math.max(...sizes) / Math.min(...sizes)).toBeGreaterThan(5);
    const power = part({ kind: 'quantity', distribution: 'power-law', exponent: 1, minRows: 1 }, 10).map((p) => p.rows.length).sort((a, b) => b - a);
    // sizes proportional to 1, 1/2, ..., 1/10: the largest about 10 times the smallest
    expect(power[0]! / power[9]!).toBeGreaterThan(7);
    expect(power[0]! / power[1]!).toBeCloseTo(2, 0);
  });

  it('should make one site per distinct value when partitioning by a column', () => {
    const parts = part({ kind: 'column', column: 'malignant' }, 0, 1, () => table.column('malignant'));
    expect(parts.map((p) => [p.name, p.rows.length])).toEqual([['malignant-0', 357], ['malignant-1', 212]]);
  });

  it('should draw rowsPerSite rows with replacement when sampling for scale tests', () => {
    const parts = part({ kind: 'sample', rowsPerSite: 20 }, 1000);
    expect(parts).toHaveLength(1000);
    expect(parts.every((p) => p.rows.length === 20 && p.rows.every((r) => r >= 0 && r < table.n))).toBe(true);
    expect(parts[999]!.name).toBe('site-1000');
  });

  it('should refuse with a coded error when the rows cannot be spread as asked', () => {
    expect(codeOf(() => part({ kind: 'iid' }, 200))).toBe('COHORT_ERR_SIM_PARTITION_INVALID');
    expect(codeOf(() => part({ kind: 'column', column: 'malignant', minRows: 300 }, 0, 1, () => table.column('malignant')))).toBe('COHORT_ERR_SIM_PARTITION_INVALID');
  });
});

describe('a virtual site\'s in-memory data source', () => {
  it('should load exactly what a CSV source loads from the same rows', async () => {
    const rows = part({ kind: 'iid' }, 5)[2]!.rows;
    const lines = (await import('node:fs')).readFileSync(WDBC, 'utf8').trim().split('\n');
    const file = join(tempDir(), 'site.csv');
    writeFileSync(file, [lines[0], ...Array.from(rows, (r) => lines[r + 1])].join('\n') + '\n');
    const opts = { holdoutFraction: 0.25, seed: 42 };
    const csv = new CsvSource(file, CsvDatasetSchema.parse({ id: 'wdbc', kind: 'csv', path: file, label: 'malignant' }), opts);
    const x = new Float64Array(rows.length * table.width);
    rows.forEach((r, k) => x.set(table.x.subarray(r * table.width, (r + 1) * table.width), k * table.width));
    const mem = new MatrixSource({ label: 'malignant', features: table.features, classes: table.classes, width: table.width, x, y: Int32Array.from(rows, (r) => table.y[r]!), rowIds: rows }, opts);
    // The CSV source gives raw features and the agent scales them; the matrix source scales itself with the
    // training split's statistics, which is what `task.standardize: 'local'` does at a real site.
    const local = localStandardization(await csv.load('train'));
    for (const split of ['train', 'holdout'] as const) {
      const a = standardize(await csv.load(split), local);
      const b = await mem.load(split);
      expect(b.n).toBe(a.n);
      expect(Array.from(b.y)).toEqual(Array.from(a.y));
      expect(b.x.length).toBe(a.x.length);
      // Float32 rounding of (x - mean) / std in a different order: equal to a few ulps.
      expect(Array.from(b.x).every((v, i) => Math.abs(v - a.x[i]!) <= 1e-5 * Math.max(1, Math.abs(v)))).toBe(true);
    }
    expect(await mem.describe()).toEqual(await csv.describe());
  });
});

describe('shared scaling for virtual sites', () => {
  it('should scale with the given study-wide statistics instead of the site\'s own when a scenario asks for global standardization', async () => {
    const rows = part({ kind: 'dirichlet', alpha: 0.1 }, 5)[0]!.rows;
    const w = table.width;
    const x = new Float64Array(rows.length * w);
    rows.forEach((r, k) => x.set(table.x.subarray(r * w, (r + 1) * w), k * w));
    const stats = scalingStats(table.x, w);
    const base = { label: 'malignant', features: table.features, classes: table.classes, width: w, x, y: Int32Array.from(rows, (r) => table.y[r]!), rowIds: rows };
    const shared = new MatrixSource({ ...base, stats }, { holdoutFraction: 0.25, seed: 1 }).loadSync('train');
    const own = new MatrixSource(base, { holdoutFraction: 0.25, seed: 1 }).loadSync('train');
    const ids = new MatrixSource(base, { holdoutFraction: 0.25, seed: 1 }).rowIds('train');
    expect(shared.x[0]).toBeCloseTo((table.x[ids[0]! * w]! - stats.mean[0]!) / stats.std[0]!, 5);
    // the site's own scaling centres its rows; the shared one keeps the site's shift from the whole table
    const meanOf = (a: Float32Array) => Array.from({ length: a.length / w }, (_, i) => a[i * w]!).reduce((s, v) => s + v, 0) / (a.length / w);
    expect(Math.abs(meanOf(own.x))).toBeLessThan(1e-5);
    expect(Math.abs(meanOf(shared.x))).toBeGreaterThan(0.1);
  });
});
