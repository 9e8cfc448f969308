/**
 * CSV records with a declared schema. Numbers are parsed strictly (a non-numeric value in a numeric column is a
 * coded error naming the row and column); empty fields are missing values, imputed with the training split's
 * median; categorical columns are one-hot encoded with levels sorted. Standardization uses training-split
 * statistics only, so the hold-out split never leaks into the model.
 */
import { readFile } from 'node:fs/promises';
import { CohortError } from '../../protocol/errors.ts';
import type { CsvDatasetConfig } from '../config.ts';
import { roundCount, type DataSource, type DatasetSchema, type FeatureSchema, type LoadedSplit, type Split } from './data-source.ts';
import { splitIndices } from './split.ts';

export interface CsvSourceOptions {
  holdoutFraction: number;
  seed: number;
}

interface Parsed {
  features: FeatureSchema[];
  /** Expanded numeric matrix (row-major), NaN where missing. */
  x: Float64Array;
  width: number;
  y: Int32Array;
  classes: string[];
  n: number;
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

export class CsvSource implements DataSource {
  private parsed: Promise<Parsed> | undefined;

  constructor(private readonly file: string, private readonly cfg: CsvDatasetConfig, private readonly opts: CsvSourceOptions) {}

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
      const names = this.cfg.features ?? header.filter((h) => h !== this.cfg.label && !this.cfg.exclude.includes(h));
      const categorical = new Set(this.cfg.categorical);
      const features: FeatureSchema[] = names.map((name) => {
        const i = col(name);
        if (!categorical.has(name)) return { name, type: 'number' };
        const levels = [...new Set(rows.map((r) => r[i]!).filter((v) => v !== ''))].sort();
        return { name, type: 'category', levels };
      });
      const width = features.reduce((w, f) => w + (f.type === 'category' ? f.levels!.length : 1), 0);
      const labels = rows.map((r) => r[labelIdx]!);
      if (labels.some((l) => l === '')) throw new CohortError('COHORT_ERR_DATA_SCHEMA', `label ${this.cfg.label} is missing in some rows`);
      const classes = [...new Set(labels)].sort((a, b) => (Number.isFinite(+a) && Number.isFinite(+b) ? +a - +b : a.localeCompare(b)));
      const y = Int32Array.from(labels, (l) => classes.indexOf(l));
      const x = new Float64Array(rows.length * width);
      rows.forEach((r, ri) => {
        let o = ri * width;
        for (const f of features) {
          const v = r[col(f.name)]!;
          if (f.type === 'category') {
            const k = f.levels!.indexOf(v);
            for (let j = 0; j < f.levels!.length; j++) x[o + j] = v === '' ? NaN : j === k ? 1 : 0;
            o += f.levels!.length;
          } else {
            const num = v === '' ? NaN : Number(v);
            if (v !== '' && !Number.isFinite(num)) {
              throw new CohortError('COHORT_ERR_DATA_PARSE', `row ${ri + 2}, column ${f.name}: "${v.slice(0, 32)}" is not a number`);
            }
            x[o++] = num;
          }
        }
      });
      return { features, x, width, y, classes, n: rows.length };
    })();
    return this.parsed;
  }

  async describe(): Promise<DatasetSchema> {
    const p = await this.parse();
    return {
      kind: 'csv', label: this.cfg.label, classes: p.classes, inputShape: [p.width], examplesRounded: roundCount(p.n),
      features: p.features.map((f) => (f.levels ? { name: f.name, type: f.type, levels: f.levels } : { name: f.name, type: f.type })),
    };
  }

  async load(split: Split): Promise<LoadedSplit> {
    const p = await this.parse();
    const { train, holdout } = splitIndices(p.n, this.opts.holdoutFraction, this.opts.seed, p.y);
    // Training-split statistics: median for imputation, mean and standard deviation for scaling.
    const w = p.width;
    const median = new Float64Array(w);
    const mean = new Float64Array(w);
    const std = new Float64Array(w);
    for (let j = 0; j < w; j++) {
      const vals = train.map((i) => p.x[i * w + j]!).filter((v) => !Number.isNaN(v)).sort((a, b) => a - b);
      median[j] = vals.length ? vals[Math.floor(vals.length / 2)]! : 0;
      const m = vals.reduce((a, b) => a + b, 0) / Math.max(1, vals.length);
      const v = vals.reduce((a, b) => a + (b - m) ** 2, 0) / Math.max(1, vals.length);
      mean[j] = m;
      std[j] = Math.sqrt(v) || 1;
    }
    const idx = split === 'train' ? train : holdout;
    const x = new Float32Array(idx.length * w);
    const y = new Int32Array(idx.length);
    idx.forEach((row, k) => {
      for (let j = 0; j < w; j++) {
        const raw = p.x[row * w + j]!;
        x[k * w + j] = ((Number.isNaN(raw) ? median[j]! : raw) - mean[j]!) / std[j]!;
      }
      y[k] = p.y[row]!;
    });
    return { x, y, n: idx.length, inputShape: [w], classes: p.classes };
  }
}
