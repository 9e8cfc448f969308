import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { DicomDatasetSchema } from '../../site-agent/config.ts';
import { DicomFolderSource } from '../../site-agent/data/dicom-source.ts';
import { tempDir } from '../helpers/cluster.ts';

const ROOT = join(import.meta.dirname, '..', '..', 'data', 'dicom');

function labels(rows: [string, string][]): string {
  const f = join(tempDir('cohort-dcm-'), 'labels.csv');
  writeFileSync(f, ['file,label', ...rows.map((r) => r.join(','))].join('\n'));
  return f;
}
const cfg = (over: object = {}) => DicomDatasetSchema.parse({ id: 'dcm', kind: 'dicom', path: ROOT, labels: 'labels.csv', shape: [16, 16, 1], ...over });

const MR = ['single/MR_small.dcm', 'single/MR_small_implicit.dcm', 'single/MR_small_bigendian.dcm', 'compressed/MR_small_RLE.dcm', 'compressed/MR_small_jp2klossless.dcm', 'compressed/MR_small_jpeg_ls_lossless.dcm'];

describe('DICOM folder source', () => {
  it('should load a folder holding a truncated file with that file skipped and counted by reason', async () => {
    const f = labels([...MR.map((m) => [m, 'MR'] as [string, string]), ['invalid/MR_truncated.dcm', 'MR'], ['single/CT_small.dcm', 'CT'], ['single/CT-MONO2-16-ankle.dcm', 'CT'], ['series/DICOMDIR', 'CT'], ['nowhere.dcm', 'CT']]);
    const src = new DicomFolderSource(ROOT, f, cfg(), { holdoutFraction: 0.25, seed: 1 });
    const d = await src.describe();
    expect(d).toMatchObject({ kind: 'dicom', label: 'label', classes: ['CT', 'MR'], inputShape: [16, 16, 1], examplesRounded: 10 });
    expect(d.skipped).toEqual({ count: 10, reasons: { COHORT_ERR_DATA_CORRUPT: 10, COHORT_ERR_DATA_UNSUPPORTED: 10, COHORT_ERR_SITE_DATASET_PATH: 10 } });
    const train = await src.load('train');
    const hold = await src.load('holdout');
    expect(train.n + hold.n).toBe(8);
    // The six MR files hold the same pixels in six encodings: after decoding they are the same example.
    const all = [...train.x, ...hold.x];
    expect(all.every((v) => v >= 0 && v <= 1)).toBe(true);
  });

  it('should give the same pixels for every encoding of the same image when windowed the same', async () => {
    const f = labels([...MR.map((m) => [m, 'MR'] as [string, string]), ['single/CT_small.dcm', 'CT'], ['series/98892001/CT2N/6293', 'CT']]);
    const src = new DicomFolderSource(ROOT, f, cfg({ window: 'minmax' }), { holdoutFraction: 0.05, seed: 2 });
    const train = await src.load('train');
    const mr = [...Array(train.n).keys()].filter((i) => train.y[i] === 1).map((i) => [...train.x.subarray(i * 256, (i + 1) * 256)]);
    expect(mr.length).toBeGreaterThanOrEqual(5);
    for (const m of mr) expect(m).toEqual(mr[0]);
  });

  it('should make every frame of a multi-frame file an example, in one split, when frames is all', async () => {
    const f = labels([['compressed/US-PAL-8-10x-echo.dcm', 'ECHO'], ['single/ExplVR_BigEnd.dcm', 'US'], ['single/MR_small.dcm', 'MR'], ['single/CT_small.dcm', 'MR']]);
    const all = new DicomFolderSource(ROOT, f, cfg({ shape: [8, 8, 3] }), { holdoutFraction: 0.25, seed: 1 });
    const train = await all.load('train');
    const hold = await all.load('holdout');
    expect(train.classes).toEqual(['ECHO', 'MR', 'US']);
    expect(train.n + hold.n).toBe(10 + 1 + 1 + 1);
    // The split is by file: the ten echo frames are all on one side.
    const echo = (d: typeof train) => [...d.y].filter((y) => y === 0).length;
    expect([echo(train), echo(hold)].sort()).toEqual([0, 10]);
    const middle = new DicomFolderSource(ROOT, f, cfg({ shape: [8, 8, 3], frames: 'middle' }), { holdoutFraction: 0.25, seed: 1 });
    expect((await middle.load('train')).n + (await middle.load('holdout')).n).toBe(4);
  });

  it('should refuse a labels file that points outside the folder, counting it', async () => {
    const f = labels([['../dicom/single/MR_small.dcm', 'MR'], ['single/MR_small.dcm', 'MR'], ['single/CT_small.dcm', 'CT']]);
    const d = await new DicomFolderSource(ROOT, f, cfg(), { holdoutFraction: 0.25, seed: 1 }).describe();
    expect(d.skipped?.reasons).toEqual({ COHORT_ERR_DATA_SCHEMA: 10 });
  });
});
