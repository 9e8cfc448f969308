import { cpSync, mkdirSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import jpeg from 'jpeg-js';
import { PNG } from 'pngjs';
import { describe, expect, it } from 'vitest';
import { ImagesDatasetSchema } from '../../site-agent/config.ts';
import { ImageFolderSource } from '../../site-agent/data/image-source.ts';
import { decodeImage } from '../../site-agent/data/image-decode.ts';
import { convertChannels, resizeBilinear } from '../../site-agent/data/resize.ts';
import { tempDir } from '../helpers/cluster.ts';

const ROOT = join(import.meta.dirname, '..', '..', 'data', 'images', 'digits');
const cfg = (path: string, over: object = {}) => ImagesDatasetSchema.parse({ id: 'digits', kind: 'images', path, shape: [8, 8, 1], ...over });

/** digits.csv row i: 64 pixels (0..16) and the digit. */
function digitsRow(i: number): { pixels: number[]; digit: string } {
  const line = readFileSync(join(ROOT, 'digits.csv'), 'utf8').split('\n')[i + 1]!.split(',');
  return { pixels: line.slice(0, 64).map(Number), digit: line[64]! };
}

/** A small copy of the digits folder: the first `per` images of classes 0..k-1. */
function digitsSubset(k: number, per: number): string {
  const dir = tempDir('cohort-img-');
  for (let c = 0; c < k; c++) {
    mkdirSync(join(dir, String(c)));
    const files = readFileSync(join(ROOT, 'digits.csv'), 'utf8').trim().split('\n').slice(1)
      .map((l, i) => [i, l.split(',')[64]] as const).filter(([, d]) => d === String(c)).slice(0, per);
    for (const [i] of files) cpSync(join(ROOT, 'png', String(c), `${String(i).padStart(4, '0')}.png`), join(dir, String(c), `${String(i).padStart(4, '0')}.png`));
  }
  return dir;
}

describe('image decoding and resizing', () => {
  it('should decode a digits PNG to the pixel values of digits.csv when read at its own size', () => {
    const { pixels, digit } = digitsRow(0);
    const img = decodeImage(new Uint8Array(readFileSync(join(ROOT, 'png', digit, '0000.png'))), '0000.png');
    expect([img.width, img.height]).toEqual([8, 8]);
    const grey = convertChannels(img.rgb, 64, 3, 1);
    for (let p = 0; p < 64; p++) expect(grey[p]! * 255).toBeCloseTo(Math.round((pixels[p]! * 255) / 16), 3);
  });

  it('should decode a JPEG and refuse other formats with coded errors when given them', () => {
    const data = Buffer.alloc(4 * 4 * 4, 200);
    const img = decodeImage(new Uint8Array(jpeg.encode({ data, width: 4, height: 4 }, 100).data), 'x.JPG');
    expect(img.rgb.every((v) => Math.abs(v - 200 / 255) < 0.02)).toBe(true);
    expect(() => decodeImage(new Uint8Array([1, 2, 3]), 'x.png')).toThrow(expect.objectContaining({ code: 'COHORT_ERR_DATA_CORRUPT' }));
    expect(() => decodeImage(new Uint8Array([1, 2, 3]), 'x.jpg')).toThrow(expect.objectContaining({ code: 'COHORT_ERR_DATA_CORRUPT' }));
    expect(() => decodeImage(new Uint8Array([1, 2, 3]), 'x.gif')).toThrow(expect.objectContaining({ code: 'COHORT_ERR_DATA_UNSUPPORTED' }));
  });

  it('should resize bilinearly with half-pixel centres when shrinking or growing', () => {
    const src = Float32Array.from([0, 1, 2, 3]); // 2x2, one channel
    expect([...resizeBilinear(src, 2, 2, 1, 2, 2)]).toEqual([0, 1, 2, 3]);
    expect([...resizeBilinear(src, 2, 2, 1, 1, 1)]).toEqual([1.5]);
    // Growing 1x2 -> 1x4: centres at -0.25, 0.25, 0.75, 1.25 of the source, clamped at the edges.
    expect([...resizeBilinear(Float32Array.from([0, 4]), 1, 2, 1, 1, 4)]).toEqual([0, 1, 3, 4]);
    const rgb = resizeBilinear(Float32Array.from({ length: 4 * 4 * 3 }, (_, i) => i % 3), 4, 4, 3, 2, 2);
    expect([...rgb]).toEqual([0, 1, 2, 0, 1, 2, 0, 1, 2, 0, 1, 2]);
  });
});

describe('image folder source', () => {
  it('should read one folder per class, resize, scale to [0, 1] and split by a fixed seed', async () => {
    const dir = digitsSubset(3, 20);
    const src = new ImageFolderSource(dir, cfg(dir, { shape: [4, 4, 1] }), { holdoutFraction: 0.25, seed: 7 });
    const d = await src.describe();
    expect(d).toMatchObject({ kind: 'images', label: 'class', classes: ['0', '1', '2'], inputShape: [4, 4, 1], examplesRounded: 60 });
    expect(d.skipped).toBeUndefined();
    const train = await src.load('train');
    const hold = await src.load('holdout');
    expect(train.n + hold.n).toBe(60);
    expect(hold.n).toBe(15);
    expect([...new Set(hold.y)].sort()).toEqual([0, 1, 2]);
    expect(train.x.every((v) => v >= 0 && v <= 1)).toBe(true);
    expect(train.slots).toEqual({ of: new Int32Array(16), count: 1 });
    const again = await new ImageFolderSource(dir, cfg(dir, { shape: [4, 4, 1] }), { holdoutFraction: 0.25, seed: 7 }).load('holdout');
    expect([...again.x]).toEqual([...hold.x]);
  });

  it('should skip and count corrupt and unsupported files instead of failing when a folder holds them', async () => {
    const dir = digitsSubset(2, 12);
    writeFileSync(join(dir, '0', 'broken.png'), Buffer.from('not a png at all'));
    const good = readFileSync(join(dir, '1', readdirSync(join(dir, '1'))[0]!));
    writeFileSync(join(dir, '1', 'cut.png'), good.subarray(0, good.length - 20));
    writeFileSync(join(dir, '1', 'notes.txt'), 'scanned on Tuesday');
    writeFileSync(join(dir, '1', '.DS_Store'), 'ignored');
    const d = await new ImageFolderSource(dir, cfg(dir), { holdoutFraction: 0.25, seed: 1 }).describe();
    expect(d.examplesRounded).toBe(20);
    expect(d.skipped).toEqual({ count: 10, reasons: { COHORT_ERR_DATA_CORRUPT: 10, COHORT_ERR_DATA_UNSUPPORTED: 10 } });
  });

  it('should produce RGB and per-channel normalized pixels when the shape has 3 channels', async () => {
    const dir = tempDir('cohort-rgb-');
    for (const [cls, colour] of [['red', [255, 0, 0]], ['blue', [0, 0, 255]]] as const) {
      mkdirSync(join(dir, cls));
      for (let i = 0; i < 4; i++) {
        const png = new PNG({ width: 6, height: 6 });
        for (let p = 0; p < 36; p++) png.data.set([...colour, 255], p * 4);
        writeFileSync(join(dir, cls, `${i}.png`), PNG.sync.write(png));
      }
    }
    const src = new ImageFolderSource(dir, cfg(dir, { shape: [3, 3, 3], normalize: { mean: [0.5, 0.5, 0.5], std: [0.5, 0.5, 0.5] } }), { holdoutFraction: 0.25, seed: 1 });
    const train = await src.load('train');
    expect(train.classes).toEqual(['blue', 'red']);
    const first = [...train.x.subarray(0, 3)];
    expect(first).toEqual(train.y[0] === 0 ? [-1, -1, 1] : [1, -1, -1]);
    expect(train.slots!.count).toBe(3);
  });

  it('should use the study classes and count images in other folders when classes are declared', async () => {
    const dir = digitsSubset(3, 12);
    const src = new ImageFolderSource(dir, cfg(dir), { holdoutFraction: 0.25, seed: 1, classes: ['0', '1', '9'] });
    const d = await src.describe();
    expect(d.classes).toEqual(['0', '1', '9']);
    expect(d.examplesRounded).toBe(20);
    expect(d.skipped).toEqual({ count: 10, reasons: { COHORT_ERR_DATA_SCHEMA: 10 } });
    expect([...new Set((await src.load('train')).y)].sort()).toEqual([0, 1]);
  });

  it('should fail with a coded error when a folder has fewer than two classes', async () => {
    const dir = tempDir('cohort-one-');
    mkdirSync(join(dir, 'only'));
    await expect(new ImageFolderSource(dir, cfg(dir), { holdoutFraction: 0.2, seed: 1 }).describe()).rejects.toMatchObject({ code: 'COHORT_ERR_DATA_SCHEMA' });
  });
});
