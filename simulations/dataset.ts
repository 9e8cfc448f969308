/**
 * A simulation's data, read once in the main thread: a CSV parsed the way a site's CSV source reads it (strict
 * numbers, empty fields missing, categorical columns one-hot with sorted levels, classes sorted), kept raw (not
 * standardized: each virtual site standardizes its own rows, as a hospital would).
 */
import { readFile } from 'node:fs/promises';
import { CohortError } from '../protocol/errors.ts';
import type { FeatureSchema } from '../site-agent/data/data-source.ts';
import { parseCsvText } from '../site-agent/data/csv-source.ts';

export interface DataConfig {
  /** Path to the CSV file. */
  csv: string;
  /** Label column. */
  label: string;
  /** Feature columns in order; default: every column but the label, `exclude` and the partition column. */
  features?: string[] | undefined;
  exclude: string[];
  categorical: string[];
}

export interface Table {
  label: string;
  features: FeatureSchema[];
  /** Model input width (categories expanded). */
  width: number;
  /** Row-major raw values, NaN where missing. */
  x: Float64Array;
  y: Int32Array;
  classes: string[];
  n: number;
  /** Raw text of any column (for partitions by a column such as a hospital id). */
  column(name: string): string[];
}

/** Reads and parses the CSV; `drop` names columns that are never features (the partition column). */
export async function loadTable(cfg: DataConfig, drop: readonly string[] = []): Promise<Table> {
  let text: string;
  try {
    text = await readFile(cfg.csv, 'utf8');
  } catch (err) {
    throw new CohortError('COHORT_ERR_SIM_SCENARIO_INVALID', `cannot read data file ${cfg.csv}: ${(err as NodeJS.ErrnoException).code ?? 'error'}`);
  }
  const { header, rows } = parseCsvText(text);
  const col = (name: string) => {
    const i = header.indexOf(name);
    if (i < 0) throw new CohortError('COHORT_ERR_SIM_SCENARIO_INVALID', `column ${name} is not in ${cfg.csv} (columns: ${header.join(', ')})`);
    return i;
  };
  const labelIdx = col(cfg.label);
  const skip = new Set([cfg.label, ...cfg.exclude, ...drop]);
  const names = cfg.features ?? header.filter((h) => !skip.has(h));
  const categorical = new Set(cfg.categorical);
  const features: FeatureSchema[] = names.map((name) => {
    const i = col(name);
    if (!categorical.has(name)) return { name, type: 'number' };
    return { name, type: 'category', levels: [...new Set(rows.map((r) => r[i]!).filter((v) => v !== ''))].sort() };
  });
  const width = features.reduce((w, f) => w + (f.levels ? f.levels.length : 1), 0);
  const labels = rows.map((r) => r[labelIdx]!);
  if (labels.some((l) => l === '')) throw new CohortError('COHORT_ERR_SIM_SCENARIO_INVALID', `label ${cfg.label} is missing in some rows of ${cfg.csv}`);
  const classes = [...new Set(labels)].sort((a, b) => (Number.isFinite(+a) && Number.isFinite(+b) ? +a - +b : a.localeCompare(b)));
  const y = Int32Array.from(labels, (l) => classes.indexOf(l));
  const x = new Float64Array(rows.length * width);
  const idx = features.map((f) => col(f.name));
  rows.forEach((r, ri) => {
    let o = ri * width;
    features.forEach((f, fi) => {
      const v = r[idx[fi]!]!;
      if (f.levels) {
        const k = f.levels.indexOf(v);
        for (let j = 0; j < f.levels.length; j++) x[o + j] = v === '' ? NaN : j === k ? 1 : 0;
        o += f.levels.length;
      } else {
        const num = v === '' ? NaN : Number(v);
        if (v !== '' && !Number.isFinite(num)) {
          throw new CohortError('COHORT_ERR_SIM_SCENARIO_INVALID', `${cfg.csv} row ${ri + 2}, column ${f.name}: "${v.slice(0, 32)}" is not a number`);
        }
        x[o++] = num;
      }
    });
  });
  return {
    label: cfg.label, features, width, x, y, classes, n: rows.length,
    column: (name) => {
      const i = col(name);
      return rows.map((r) => r[i]!);
    },
  };
}
