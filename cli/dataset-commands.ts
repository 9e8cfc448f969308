/**
 * `cohort site dataset add|list`: register local data in site.json. Everything is checked before anything is
 * written (paths, the columns named, the shape), and `add` then reads the data once and prints the schema: exactly
 * what the coordinator will see of it (names, types, classes, shape, rounded counts), never a row or a pixel.
 */
import { existsSync, readFileSync, statSync } from 'node:fs';
import { isAbsolute, join, relative, resolve } from 'node:path';
import { CohortError } from '../protocol/errors.ts';
import { DatasetConfigSchema, SITE_CONFIG_FILE, SiteConfigSchema, writeSiteConfig, type DatasetConfig } from '../site-agent/config.ts';
import { readCsvHeader } from '../site-agent/data/csv-source.ts';
import type { DatasetSchema } from '../site-agent/data/data-source.ts';
import { classFolders } from '../site-agent/data/image-source.ts';
import { openDataSource } from '../site-agent/data/open-source.ts';

export interface DatasetAddOptions {
  dir: string;
  id: string;
  kind: string;
  path: string;
  label?: string;
  /** DICOM: the labels CSV. */
  labels?: string;
  /** "8,8,1" */
  shape?: string;
  /** "a,b" */
  categorical?: string;
  exclude?: string;
  features?: string;
  /** "col=number,col2=category,col3=ignore" */
  types?: string;
  /** "col=drop,col2=mean" */
  missing?: string;
  /** "sex=f|m;stage=1|2|3|4" */
  levels?: string;
  classes?: string;
  /** images: "scale" or "MEAN/STD" per channel, e.g. "0.5/0.25" */
  normalize?: string;
  /** dicom: "file", "minmax", "none" or "center,width" */
  window?: string;
  frames?: string;
  replace?: boolean;
  /** Read the data now and return its schema (default true). */
  check?: boolean;
}

const list = (s: string | undefined) => (s === undefined ? undefined : s.split(',').map((x) => x.trim()).filter(Boolean));
const invalid = (why: string) => new CohortError('COHORT_ERR_SITE_CONFIG_INVALID', why);

function pairs(s: string | undefined, sep = ','): Record<string, string> {
  const out: Record<string, string> = {};
  for (const part of s?.split(sep).map((x) => x.trim()).filter(Boolean) ?? []) {
    const i = part.indexOf('=');
    if (i <= 0) throw invalid(`"${part}" should be name=value`);
    out[part.slice(0, i).trim()] = part.slice(i + 1).trim();
  }
  return out;
}

function shapeOf(s: string | undefined): number[] {
  if (!s) throw invalid('--shape is required for images and dicom, e.g. --shape 8,8,1 (height, width, channels 1 or 3)');
  const dims = s.split(',').map((x) => Number(x.trim()));
  if (dims.length !== 3 || dims.some((d) => !Number.isInteger(d) || d < 1)) throw invalid(`--shape "${s}": expected height,width,channels`);
  return dims;
}

/** Stores a path relative to the site directory when it lies inside it, so the site folder can move. */
function sitePath(dir: string, p: string): string {
  const abs = resolve(p);
  const rel = relative(dir, abs);
  return rel.startsWith('..') || isAbsolute(rel) ? abs : rel;
}

function mustExist(p: string, want: 'file' | 'folder', what: string): void {
  if (!existsSync(p)) throw new CohortError('COHORT_ERR_SITE_DATASET_PATH', `${what} ${p} does not exist`);
  const isDir = statSync(p).isDirectory();
  if (want === 'folder' && !isDir) throw new CohortError('COHORT_ERR_SITE_DATASET_PATH', `${what} ${p} is a file; a folder is needed`);
  if (want === 'file' && isDir) throw new CohortError('COHORT_ERR_SITE_DATASET_PATH', `${what} ${p} is a folder; a file is needed`);
}

/** Builds and checks the dataset entry; throws a coded error and writes nothing when anything is wrong. */
export async function buildDatasetConfig(dir: string, o: DatasetAddOptions): Promise<DatasetConfig> {
  let raw: Record<string, unknown>;
  switch (o.kind) {
    case 'csv': {
      mustExist(resolve(o.path), 'file', 'CSV');
      if (!o.label) throw invalid('--label <column> is required for csv');
      const header = await readCsvHeader(resolve(o.path));
      const types = pairs(o.types);
      const missing = pairs(o.missing);
      const levels = Object.fromEntries(Object.entries(pairs(o.levels, ';')).map(([k, v]) => [k, v.split('|').map((x) => x.trim())]));
      const named = [o.label, ...(list(o.categorical) ?? []), ...(list(o.exclude) ?? []), ...(list(o.features) ?? []), ...Object.keys(types), ...Object.keys(missing), ...Object.keys(levels)];
      const unknown = [...new Set(named.filter((c) => !header.includes(c)))];
      if (unknown.length) throw new CohortError('COHORT_ERR_DATA_SCHEMA', `${o.path} has no column ${unknown.join(', ')} (columns: ${header.join(', ')})`);
      raw = {
        id: o.id, kind: 'csv', path: sitePath(dir, o.path), label: o.label,
        ...(o.features ? { features: list(o.features) } : {}),
        ...(o.exclude ? { exclude: list(o.exclude) } : {}),
        ...(o.categorical ? { categorical: list(o.categorical) } : {}),
        ...(o.types ? { types } : {}), ...(o.missing ? { missing } : {}), ...(o.levels ? { levels } : {}),
      };
      break;
    }
    case 'images': {
      mustExist(resolve(o.path), 'folder', 'image folder');
      const folders = await classFolders(resolve(o.path));
      if (folders.length < 2) throw new CohortError('COHORT_ERR_SITE_DATASET_PATH', `${o.path} needs one sub-folder per class (at least two); found ${folders.length}`);
      let normalize: unknown = 'scale';
      if (o.normalize && o.normalize !== 'scale') {
        const [mean, std] = o.normalize.split('/');
        if (!mean || !std) throw invalid(`--normalize "${o.normalize}": expected scale or MEAN/STD, e.g. 0.5/0.25 or 0.48,0.46,0.41/0.23,0.22,0.23`);
        normalize = { mean: list(mean)!.map(Number), std: list(std)!.map(Number) };
      }
      raw = {
        id: o.id, kind: 'images', path: sitePath(dir, o.path), shape: shapeOf(o.shape), normalize,
        ...(o.label ? { label: o.label } : {}), ...(o.classes ? { classes: list(o.classes) } : {}),
      };
      break;
    }
    case 'dicom': {
      mustExist(resolve(o.path), 'folder', 'DICOM folder');
      if (!o.labels) throw invalid('--labels <csv> is required for dicom (columns: file,label)');
      mustExist(resolve(o.labels), 'file', 'labels CSV');
      const header = await readCsvHeader(resolve(o.labels));
      const label = o.label ?? 'label';
      for (const c of ['file', label]) if (!header.includes(c)) throw new CohortError('COHORT_ERR_DATA_SCHEMA', `${o.labels} has no column ${c} (columns: ${header.join(', ')})`);
      let window: unknown = o.window ?? 'file';
      if (typeof window === 'string' && window.includes(',')) {
        const [center, width] = window.split(',').map(Number);
        window = { center, width };
      }
      raw = {
        id: o.id, kind: 'dicom', path: sitePath(dir, o.path), labels: sitePath(dir, o.labels), label, shape: shapeOf(o.shape), window,
        ...(o.frames ? { frames: o.frames } : {}), ...(o.classes ? { classes: list(o.classes) } : {}),
      };
      break;
    }
    default:
      throw invalid(`--kind must be csv, images or dicom, not "${o.kind}"`);
  }
  const res = DatasetConfigSchema.safeParse(raw);
  if (!res.success) {
    const i = res.error.issues[0];
    throw invalid(`dataset ${o.id}: ${i?.path.join('.')}: ${i?.message}`);
  }
  return res.data;
}

function readRawConfig(dir: string): Record<string, unknown> {
  const file = join(dir, SITE_CONFIG_FILE);
  if (!existsSync(file)) throw invalid(`${file} not found; run 'cohort site init' first`);
  try {
    return JSON.parse(readFileSync(file, 'utf8')) as Record<string, unknown>;
  } catch (err) {
    throw invalid(`${file} is not valid JSON: ${(err as Error).message}`);
  }
}

/**
 * Adds (or with `replace`, replaces) a dataset in site.json, keeping the rest of the file as it is (the policy
 * notes included). With `check` (the default) the data is read first and its schema returned; a dataset that
 * cannot be read is not registered.
 */
export async function datasetAdd(o: DatasetAddOptions): Promise<{ dataset: DatasetConfig; schema?: DatasetSchema }> {
  const dir = resolve(o.dir);
  const raw = readRawConfig(dir);
  const existing = Array.isArray(raw.datasets) ? (raw.datasets as { id?: unknown }[]) : [];
  if (existing.some((d) => d.id === o.id) && !o.replace) {
    throw new CohortError('COHORT_ERR_SITE_DATASET_EXISTS', `dataset ${o.id} is already registered; pass --replace to overwrite it`);
  }
  const dataset = await buildDatasetConfig(dir, o);
  const schema = o.check === false ? undefined : await openDataSource(dir, dataset, { holdoutFraction: 0.2, seed: 42 }).describe();
  const next = { ...raw, datasets: [...existing.filter((d) => d.id !== o.id), dataset] };
  const res = SiteConfigSchema.safeParse(next);
  if (!res.success) throw invalid(`site.json would be invalid: ${res.error.issues[0]?.path.join('.')}: ${res.error.issues[0]?.message}`);
  writeSiteConfig(dir, next as Parameters<typeof writeSiteConfig>[1]);
  return { dataset, ...(schema ? { schema } : {}) };
}

/** The datasets in site.json, with their schema when `describe` is set. */
export async function datasetList(dirArg: string, describe = false): Promise<{ dataset: DatasetConfig; schema?: DatasetSchema; error?: string }[]> {
  const dir = resolve(dirArg);
  const res = SiteConfigSchema.safeParse(readRawConfig(dir));
  if (!res.success) throw invalid(`${join(dir, SITE_CONFIG_FILE)}: ${res.error.issues[0]?.path.join('.')}: ${res.error.issues[0]?.message}`);
  return Promise.all(res.data.datasets.map(async (dataset) => {
    if (!describe) return { dataset };
    try {
      return { dataset, schema: await openDataSource(dir, dataset, { holdoutFraction: 0.2, seed: 42 }).describe() };
    } catch (err) {
      return { dataset, error: err instanceof CohortError ? `${err.code}: ${err.message}` : String(err) };
    }
  }));
}

/** The lines `add` and `list --describe` print: what leaves the site about this dataset. */
export function formatSchema(s: DatasetSchema): string[] {
  const lines = [`  kind ${s.kind}, label "${s.label}", classes [${s.classes.join(', ')}], input shape [${s.inputShape.join(', ')}], examples ~${s.examplesRounded}`];
  if (s.features) lines.push(`  features: ${s.features.map((f) => (f.levels ? `${f.name} (category: ${f.levels.join('|')})` : f.name)).join(', ')}`);
  if (s.missing) lines.push(`  missing values (rounded): ${Object.entries(s.missing).map(([k, v]) => `${k} ~${v}`).join(', ')}`);
  if (s.unseenLevels) lines.push(`  values outside the declared levels (rounded): ${Object.entries(s.unseenLevels).map(([k, v]) => `${k} ~${v}`).join(', ')}`);
  if (s.droppedRows) lines.push(`  rows dropped (rounded): ~${s.droppedRows}`);
  if (s.skipped) lines.push(`  files skipped (rounded): ~${s.skipped.count}: ${Object.entries(s.skipped.reasons).map(([k, v]) => `${k} ~${v}`).join(', ')}`);
  return lines;
}
