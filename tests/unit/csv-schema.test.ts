import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { CsvDatasetSchema } from '../../site-agent/config.ts';
import { CsvSource, parseCsvText } from '../../site-agent/data/csv-source.ts';
import { splitIndices } from '../../site-agent/data/split.ts';
import { tempDir } from '../helpers/cluster.ts';

const TAB = join(import.meta.dirname, '..', '..', 'data', 'tabular');
const PBC = join(TAB, 'pbc.csv');
const BIOPSY = join(TAB, 'breast_cancer_wisconsin_original.csv');
const pbcCfg = (over: object = {}) => CsvDatasetSchema.parse({
  id: 'pbc', kind: 'csv', path: PBC, label: 'status', exclude: ['id', 'time'],
  types: { sex: 'category', trt: 'category', edema: 'category', stage: 'category' }, ...over,
});
const opts = { holdoutFraction: 0.2, seed: 5 };
const { header, rows } = parseCsvText(readFileSync(PBC, 'utf8'));
const colOf = (name: string) => rows.map((r) => r[header.indexOf(name)]!);

describe('CSV source on real clinical records (pbc.csv)', () => {
  it('should report declared types, category levels, three classes and rounded missing counts', async () => {
    const d = await new CsvSource(PBC, pbcCfg(), opts).describe();
    expect(d.classes).toEqual(['0', '1', '2']);
    expect(d.features!.find((f) => f.name === 'sex')).toEqual({ name: 'sex', type: 'category', levels: ['f', 'm'] });
    expect(d.features!.find((f) => f.name === 'edema')).toEqual({ name: 'edema', type: 'category', levels: ['0', '0.5', '1'] });
    expect(d.features!.find((f) => f.name === 'bili')).toEqual({ name: 'bili', type: 'number' });
    // 17 features: 13 numbers + sex(2) + trt(2) + edema(3) + stage(4) one-hot columns.
    expect(d.features).toHaveLength(17);
    expect(d.inputShape).toEqual([13 + 2 + 2 + 3 + 4]);
    expect(d.examplesRounded).toBe(420);
    expect(d.missing).toMatchObject({ chol: 130, trig: 140, copper: 110, trt: 110, stage: 10 });
    expect(d.droppedRows).toBeUndefined();
  });

  it('should fill numbers with the training split median, mean or mode and categories with the mode', async () => {
    const labels = colOf('status').map(Number);
    const { train, holdout } = splitIndices(rows.length, opts.holdoutFraction, opts.seed, labels);
    const chol = colOf('chol');
    const observed = train.map((i) => chol[i]!).filter((v) => v !== '').map(Number).sort((a, b) => a - b);
    const median = (observed[observed.length / 2 - 1]! + observed[observed.length / 2]!) / 2;
    const mean = observed.reduce((a, b) => a + b, 0) / observed.length;
    const missingRow = holdout.findIndex((i) => chol[i] === '');
    expect(missingRow).toBeGreaterThanOrEqual(0);
    const src = (strategy: string) => new CsvSource(PBC, pbcCfg({ missing: { chol: strategy } }), opts);
    const cholCol = (await src('median').describe()).features!.findIndex((f) => f.name === 'chol');
    // Column offset of chol: features before it, with one-hot widths.
    const feats = (await src('median').describe()).features!;
    const offset = feats.slice(0, cholCol).reduce((w, f) => w + (f.levels?.length ?? 1), 0);
    const width = (await src('median').describe()).inputShape[0]!;
    expect((await src('median').load('holdout')).x[missingRow * width + offset]).toBeCloseTo(median, 3);
    expect((await src('mean').load('holdout')).x[missingRow * width + offset]).toBeCloseTo(mean, 3);
    // Missing trt (a category) takes the training split's most frequent level: exactly one of its two columns is 1.
    const hold = await src('median').load('holdout');
    const trtOffset = feats.slice(0, feats.findIndex((f) => f.name === 'trt')).reduce((w, f) => w + (f.levels?.length ?? 1), 0);
    const trtRow = holdout.findIndex((i) => colOf('trt')[i] === '');
    expect(hold.x[trtRow * width + trtOffset]! + hold.x[trtRow * width + trtOffset + 1]!).toBe(1);
    expect(hold.x.every(Number.isFinite)).toBe(true);
  });

  it('should drop rows with a missing value and count them when the strategy is drop', async () => {
    const src = new CsvSource(PBC, pbcCfg({ missing: { trt: 'drop' } }), opts);
    const d = await src.describe();
    expect(d.droppedRows).toBe(110);
    expect(d.examplesRounded).toBe(310);
    const n = (await src.load('train')).n + (await src.load('holdout')).n;
    expect(n).toBe(418 - 106);
  });

  it('should encode with declared levels everywhere and count a value outside them when given levels', async () => {
    const src = new CsvSource(PBC, pbcCfg(), { ...opts, levels: { edema: ['0', '1'], stage: ['1', '2', '3', '4', '5'] } });
    const d = await src.describe();
    expect(d.features!.find((f) => f.name === 'edema')!.levels).toEqual(['0', '1']);
    expect(d.features!.find((f) => f.name === 'stage')!.levels).toEqual(['1', '2', '3', '4', '5']);
    const half = colOf('edema').filter((v) => v === '0.5').length;
    expect(d.unseenLevels).toEqual({ edema: Math.round(half / 10) * 10 });
    // An unseen level is all zeros in its one-hot columns (the documented fallback).
    const train = await src.load('train');
    const width = d.inputShape[0]!;
    const feats = d.features!;
    const off = feats.slice(0, feats.findIndex((f) => f.name === 'edema')).reduce((w, f) => w + (f.levels?.length ?? 1), 0);
    let zeros = 0;
    for (let i = 0; i < train.n; i++) if (train.x[i * width + off] === 0 && train.x[i * width + off + 1] === 0) zeros++;
    expect(zeros).toBeGreaterThan(0);
  });

  it('should use the manifest feature order and classes and refuse a category imputed by mean when declared', async () => {
    const src = new CsvSource(PBC, pbcCfg(), { ...opts, features: ['bili', 'sex', 'age'], classes: ['0', '2'] });
    const d = await src.describe();
    expect(d.features!.map((f) => f.name)).toEqual(['bili', 'sex', 'age']);
    expect(d.classes).toEqual(['0', '2']);
    expect(d.unseenLevels).toEqual({ status: 30 }); // the 25 transplant rows, left out
    await expect(new CsvSource(PBC, pbcCfg({ missing: { sex: 'mean' } }), opts).describe()).rejects.toMatchObject({ code: 'COHORT_ERR_DATA_SCHEMA' });
    await expect(new CsvSource(PBC, pbcCfg(), { ...opts, features: ['bili', 'nope'] }).describe()).rejects.toMatchObject({ code: 'COHORT_ERR_DATA_SCHEMA' });
  });

  it('should take a column type from the manifest when site.json leaves it undeclared', async () => {
    const cfg = CsvDatasetSchema.parse({ id: 'pbc', kind: 'csv', path: PBC, label: 'status', features: ['sex', 'bili'] });
    await expect(new CsvSource(PBC, cfg, opts).describe()).rejects.toMatchObject({ code: 'COHORT_ERR_DATA_PARSE' });
    const d = await new CsvSource(PBC, cfg, { ...opts, featureTypes: { sex: 'category' } }).describe();
    expect(d.features![0]).toEqual({ name: 'sex', type: 'category', levels: ['f', 'm'] });
  });
});

describe('CSV source on the original Wisconsin data (biopsy)', () => {
  it('should count the 16 missing bare_nuclei values and ignore the sample id when declared ignore', async () => {
    const cfg = CsvDatasetSchema.parse({ id: 'b', kind: 'csv', path: BIOPSY, label: 'malignant', types: { sample_id: 'ignore' } });
    const src = new CsvSource(BIOPSY, cfg, opts);
    const d = await src.describe();
    expect(d.features).toHaveLength(9);
    expect(d.features!.some((f) => f.name === 'sample_id')).toBe(false);
    expect(d.missing).toEqual({ bare_nuclei: 20 });
    expect(d.examplesRounded).toBe(700);
    const train = await src.load('train');
    expect(train.x.every((v) => Number.isInteger(v) && v >= 1 && v <= 10)).toBe(true);
  });

  it('should drop rows whose label is missing and count them', async () => {
    const f = join(tempDir(), 'y.csv');
    writeFileSync(f, 'a,y\n1,0\n2,\n3,1\n4,0\n5,1\n');
    const d = await new CsvSource(f, CsvDatasetSchema.parse({ id: 'y', kind: 'csv', path: f, label: 'y' }), opts).describe();
    expect(d.missing).toEqual({ y: 10 });
    expect(d.droppedRows).toBe(10);
  });
});
