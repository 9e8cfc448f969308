/**
 * CSV records with declared column types. Numbers are parsed strictly (a non-numeric value in a numeric column is a
 * coded error naming the row and column); an empty field is a missing value, filled per column from the
 * training split (mean, median or most frequent value) or its row dropped; categories are one-hot encoded with
 * levels that are the same at every site (declared in the study manifest or site.json; otherwise the levels seen,
 * sorted). A value outside the declared levels is counted and encoded as all zeros.
 *
 * Imputation values come from this site's training split only, so the hold-out never leaks into them; they never
 * leave the site. Scaling is not done here: the agent standardizes with statistics pooled across sites.
 */
import { readFile } from 'node:fs/promises';
import { CohortError } from '../../protocol/errors.ts';
import type { CsvDatasetConfig, MissingStrategy } from '../config.ts';
import {
  roundCount, roundCounts, sortClasses,
  type DataSource, type DatasetSchema, type FeatureSchema, type LoadedSplit, type SourceOptions, type Split,
} from './data-source.ts';
import { splitIndices } from './split.ts';

/** Category cell codes besides a level index. */
const UNSEEN = -1;
const MISSING = -2;

interface Column {
  feature: FeatureSchema;
  index: number;
  strategy: MissingStrategy;
  /** Numbers: the values (NaN = missing). Categories: level index, UNSEEN or MISSING. */
  values: Float64Array;
}

interface Parsed {
  columns: Column[];
  y: Int32Array;
  classes: string[];
  n: number;
  width: number;
  missing: Map<string, number>;
  unseen: Map<string, number>;
  dropped: number;
}

export function parseCsvText(text: string): { header: string[]; rows: string[][] } {
  const lines = text.split(/\r?\n/).filter((l) => l.trim().length > 0);
  if (lines.length < 2) throw new CohortError('COHORT_ERR_DATA_PARSE', 'CSV needs a header and at least one row');
  const header = lines[0]!.split(',').map((h) => h.trim());
  const rows = lines.slice(1).map((l, i) => {
    const cells = l.split(',');
    if (cells.length !== header.length) {
      throw new CohortError('COHORT_ERR_DATA_PARSE', `row ${i + 2} has ${cells.length} fields, header has ${header.length}`);
    }
    return cells.map((c) => c.trim());
  });
  return { header, rows };
}

/** Reads only the header line of a CSV (for validating a dataset before it is registered). */
export async function readCsvHeader(file: string): Promise<string[]> {
  const text = await readFile(file, 'utf8').catch((err: NodeJS.ErrnoException) => {
    throw new CohortError('COHORT_ERR_DATA_PARSE', `cannot read ${file}: ${err.code ?? 'error'}`);
  });
  const first = text.split(/\r?\n/, 1)[0] ?? '';
  return first.split(',').map((h) => h.trim()).filter((h) => h.length > 0);
}

function median(sorted: readonly number[]): number {
  if (sorted.length === 0) return 0;
  const m = sorted.length >> 1;
  return sorted.length % 2 ? sorted[m]! : (sorted[m - 1]! + sorted[m]!) / 2;
}

/** Most frequent value; ties go to the smallest, so every run picks the same. */
function mode(values: Iterable<number>): number | undefined {
  const counts = new Map<number, number>();
  for (const v of values) counts.set(v, (counts.get(v) ?? 0) + 1);
  let best: number | undefined;
  let bestCount = 0;
  for (const [v, c] of counts) if (c > bestCount || (c === bestCount && best !== undefined && v < best)) [best, bestCount] = [v, c];
  return best;
}

export class CsvSource implements DataSource {
  private parsed: Promise<Parsed> | undefined;

  constructor(private readonly file: string, private readonly cfg: CsvDatasetConfig, private readonly opts: SourceOptions) {}

  private typeOf(name: string): 'number' | 'category' | 'ignore' {
    return this.cfg.types[name] ?? (this.cfg.categorical.includes(name) ? 'category' : undefined) ?? this.opts.featureTypes?.[name] ?? 'number';
  }

  private parse(): Promise<Parsed> {
    this.parsed ??= (async () => {
      let text: string;
      try {
        text = await readFile(this.file, 'utf8');
      } catch (err) {
        throw new CohortError('COHORT_ERR_DATA_PARSE', `cannot read ${this.file}: ${(err as NodeJS.ErrnoException).code ?? 'error'}`);
      }
      const { header, rows } = parseCsvText(text);
      const col = (name: string) => {
        const i = header.indexOf(name);
        if (i < 0) throw new CohortError('COHORT_ERR_DATA_SCHEMA', `column ${name} not in ${this.file}`);
        return i;
      };
      const labelIdx = col(this.cfg.label);
      const names = this.opts.features ?? this.cfg.features
        ?? header.filter((h) => h !== this.cfg.label && !this.cfg.exclude.includes(h) && this.typeOf(h) !== 'ignore');
      const missing = new Map<string, number>();
      const unseen = new Map<string, number>();
      const bump = (m: Map<string, number>, k: string) => m.set(k, (m.get(k) ?? 0) + 1);

      // Rows without a label, or with a missing value in a `drop` column, are left out (and counted).
      const declaredClasses = this.opts.classes;
      const columns: Column[] = names.map((name) => {
        const index = col(name);
        const type = this.typeOf(name);
        if (type === 'ignore') throw new CohortError('COHORT_ERR_DATA_SCHEMA', `column ${name} is declared 'ignore' but the study needs it`);
        const strategy = this.cfg.missing[name] ?? this.cfg.missingDefault[type];
        if (type === 'category' && (strategy === 'mean' || strategy === 'median')) {
          throw new CohortError('COHORT_ERR_DATA_SCHEMA', `column ${name} is a category: missing values can be filled with 'mode' or dropped, not '${strategy}'`);
        }
        const levels = type === 'category'
          ? [...(this.opts.levels?.[name] ?? this.cfg.levels[name] ?? [...new Set(rows.map((r) => r[index]!).filter((v) => v !== ''))].sort())]
          : undefined;
        return { feature: levels ? { name, type, levels } : { name, type }, index, strategy, values: new Float64Array(0) };
      });
      const keep: number[] = [];
      rows.forEach((r, ri) => {
        const label = r[labelIdx]!;
        let drop = false;
        if (label === '') {
          bump(missing, this.cfg.label);
          drop = true;
        } else if (declaredClasses && !declaredClasses.includes(label)) {
          bump(unseen, this.cfg.label);
          drop = true;
        }
        for (const c of columns) {
          const v = r[c.index]!;
          if (v === '') {
            bump(missing, c.feature.name);
            if (c.strategy === 'drop') drop = true;
          } else if (c.feature.type === 'number' && !Number.isFinite(Number(v))) {
            throw new CohortError('COHORT_ERR_DATA_PARSE', `row ${ri + 2}, column ${c.feature.name}: "${v.slice(0, 32)}" is not a number`);
          }
        }
        if (!drop) keep.push(ri);
      });
      if (keep.length === 0) throw new CohortError('COHORT_ERR_DATA_EMPTY', `${this.file}: no rows left after dropping rows with missing values`);
      for (const c of columns) {
        c.values = Float64Array.from(keep, (ri) => {
          const v = rows[ri]![c.index]!;
          if (c.feature.type === 'number') return v === '' ? NaN : Number(v);
          if (v === '') return MISSING;
          const k = c.feature.levels!.indexOf(v);
          if (k < 0) bump(unseen, c.feature.name);
          return k < 0 ? UNSEEN : k;
        });
      }
      const labels = keep.map((ri) => rows[ri]![labelIdx]!);
      const classes = declaredClasses ? [...declaredClasses] : sortClasses(labels);
      const y = Int32Array.from(labels, (l) => classes.indexOf(l));
      const width = columns.reduce((w, c) => w + (c.feature.levels?.length ?? 1), 0);
      return { columns, y, classes, n: keep.length, width, missing, unseen, dropped: rows.length - keep.length };
    })();
    return this.parsed;
  }

  async describe(): Promise<DatasetSchema> {
    const p = await this.parse();
    return {
      kind: 'csv', label: this.cfg.label, classes: p.classes, inputShape: [p.width], examplesRounded: roundCount(p.n),
      features: p.columns.map((c) => ({ ...c.feature, ...(c.feature.levels ? { levels: [...c.feature.levels] } : {}) })),
      ...(p.missing.size ? { missing: roundCounts(p.missing) } : {}),
      ...(p.unseen.size ? { unseenLevels: roundCounts(p.unseen) } : {}),
      ...(p.dropped ? { droppedRows: roundCount(p.dropped) } : {}),
    };
  }

  async load(split: Split): Promise<LoadedSplit> {
    const p = await this.parse();
    const { train, holdout } = splitIndices(p.n, this.opts.holdoutFraction, this.opts.seed, p.y);
    const idx = split === 'train' ? train : holdout;
    const x = new Float32Array(idx.length * p.width);
    const slotOf = new Int32Array(p.width).fill(-1);
    let offset = 0;
    let slot = 0;
    for (const c of p.columns) {
      // The fill value comes from the training split, whichever split is loaded.
      const observed = train.map((i) => c.values[i]!).filter((v) => (c.feature.type === 'number' ? !Number.isNaN(v) : v >= 0));
      let fill: number;
      if (c.feature.type === 'category') fill = mode(observed) ?? UNSEEN;
      else if (c.strategy === 'mean') fill = observed.reduce((a, b) => a + b, 0) / Math.max(1, observed.length);
      else if (c.strategy === 'mode') fill = mode(observed) ?? 0;
      else fill = median(observed.sort((a, b) => a - b));
      if (c.feature.type === 'category') {
        const k = c.feature.levels!.length;
        idx.forEach((row, r) => {
          const v = c.values[row]!;
          const level = v === MISSING ? fill : v;
          if (level >= 0) x[r * p.width + offset + level] = 1;
        });
        offset += k;
      } else {
        idx.forEach((row, r) => {
          const v = c.values[row]!;
          x[r * p.width + offset] = Number.isNaN(v) ? fill : v;
        });
        slotOf[offset] = slot++;
        offset += 1;
      }
    }
    const y = Int32Array.from(idx, (i) => p.y[i]!);
    return { x, y, n: idx.length, inputShape: [p.width], classes: p.classes, slots: { of: slotOf, count: slot } };
  }
}
