import { createHash } from 'node:crypto';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import jpeg from 'jpeg-js';
import { describe, expect, it } from 'vitest';
import { decodeDicom, TRANSFER_SYNTAX, type DicomImage } from '../../site-agent/data/dicom-decode.ts';
import { decodeRleFrame } from '../../site-agent/data/dicom-rle.ts';
import { framePixels } from '../../site-agent/data/dicom-pixels.ts';
import { writeDicom } from '../helpers/dicom-writer.ts';

const ROOT = join(import.meta.dirname, '..', '..', 'data', 'dicom');
const read = (f: string) => new Uint8Array(readFileSync(join(ROOT, f)));

/** manifest.csv rows (no field holds a comma). */
function manifest(): Record<string, string>[] {
  const [head, ...lines] = readFileSync(join(ROOT, 'manifest.csv'), 'utf8').trim().split('\n');
  const cols = head!.split(',');
  return lines.map((l) => Object.fromEntries(l.split(',').map((v, i) => [cols[i]!, v])));
}

function summary(img: DicomImage) {
  let min = Infinity, max = -Infinity, sum = 0;
  for (const v of img.values) {
    if (v < min) min = v;
    if (v > max) max = v;
    sum += v;
  }
  const sha = createHash('sha256').update(new Uint8Array(img.values.buffer, img.values.byteOffset, img.values.byteLength)).digest('hex');
  return { dtype: img.dtype, min, max, mean: (sum / img.values.length).toFixed(4), sha };
}

describe('DICOM decoding', () => {
  const rows = manifest();
  const decodable = rows.filter((r) => r.pixel_sha256);

  it('should list every bundled DICOM image in the manifest when the data folder is complete', () => {
    expect(rows).toHaveLength(43);
    expect(decodable).toHaveLength(42);
    expect(new Set(decodable.map((r) => r.transfer_syntax_uid))).toEqual(new Set([
      TRANSFER_SYNTAX.explicitLittle, TRANSFER_SYNTAX.implicitLittle, TRANSFER_SYNTAX.explicitBig,
      TRANSFER_SYNTAX.rle, TRANSFER_SYNTAX.jpeg2000Lossless, TRANSFER_SYNTAX.jpegLsLossless,
    ]));
  });

  it.each(decodable.map((r) => [r.file!, r] as const))('should decode %s to the stored values the manifest gives when decoded', async (file, r) => {
    const img = await decodeDicom(read(file));
    expect({ rows: img.rows, columns: img.columns, frames: img.frames, samples: img.samplesPerPixel, photometric: img.photometric })
      .toEqual({ rows: +r.rows!, columns: +r.columns!, frames: +r.frames!, samples: +r.samples_per_pixel!, photometric: r.photometric });
    expect(summary(img)).toEqual({ dtype: r.pixel_dtype, min: +r.pixel_min!, max: +r.pixel_max!, mean: r.pixel_mean, sha: r.pixel_sha256 });
    expect(img.rescaleSlope).toBe(r.rescale_slope ? +r.rescale_slope : 1);
    expect(img.rescaleIntercept).toBe(r.rescale_intercept ? +r.rescale_intercept : 0);
  });

  it('should fail with COHORT_ERR_DATA_CORRUPT when the pixel data is truncated', async () => {
    await expect(decodeDicom(read('invalid/MR_truncated.dcm'))).rejects.toMatchObject({ code: 'COHORT_ERR_DATA_CORRUPT' });
    const whole = read('single/MR_small.dcm');
    // Cut inside the pixel data of an otherwise valid file, and cut the header short.
    await expect(decodeDicom(whole.subarray(0, whole.length - 100))).rejects.toMatchObject({ code: 'COHORT_ERR_DATA_CORRUPT' });
    await expect(decodeDicom(whole.subarray(0, 200))).rejects.toMatchObject({ code: 'COHORT_ERR_DATA_CORRUPT' });
    await expect(decodeDicom(new Uint8Array(64))).rejects.toMatchObject({ code: 'COHORT_ERR_DATA_CORRUPT' });
  });

  it('should refuse a file without pixel data with COHORT_ERR_DATA_UNSUPPORTED when given a DICOMDIR', async () => {
    await expect(decodeDicom(read('series/DICOMDIR'))).rejects.toMatchObject({ code: 'COHORT_ERR_DATA_UNSUPPORTED' });
  });

  it('should fail cleanly when an RLE or JPEG 2000 frame is damaged', async () => {
    const rle = read('compressed/MR_small_RLE.dcm');
    await expect(decodeDicom(rle.subarray(0, rle.length - 1500))).rejects.toMatchObject({ code: 'COHORT_ERR_DATA_CORRUPT' });
    // An RLE frame whose header is short, whose segment count is wrong, or whose segment ends early.
    expect(() => decodeRleFrame(new Uint8Array(10), 4, 1, 1)).toThrow(expect.objectContaining({ code: 'COHORT_ERR_DATA_CORRUPT' }));
    const frame = new Uint8Array(64 + 3);
    new DataView(frame.buffer).setUint32(0, 1, true);
    new DataView(frame.buffer).setUint32(4, 64, true);
    frame.set([1, 7, 8], 64); // a literal run of two bytes, where four pixels are needed
    expect(() => decodeRleFrame(frame, 4, 1, 1)).toThrow(/2 of 4 pixels/);
    expect(() => decodeRleFrame(frame, 4, 1, 2)).toThrow(/1 segments, expected 2/);
    frame.set([0xfd, 9], 64); // a repeat run: 9 four times
    expect([...decodeRleFrame(frame, 4, 1, 1)]).toEqual([9, 9, 9, 9]);
    const j2k = read('compressed/MR_small_jp2klossless.dcm');
    await expect(decodeDicom(j2k.slice(0, j2k.length - 2000))).rejects.toMatchObject({ code: expect.stringMatching(/COHORT_ERR_DATA_/) });
  });

  it('should decode baseline JPEG and deflated files when given synthetic ones', async () => {
    const w = 16, h = 8;
    const rgba = Buffer.alloc(w * h * 4);
    for (let i = 0; i < w * h; i++) rgba.set([i * 2, 255 - i, 100, 255], i * 4);
    const encoded = jpeg.encode({ data: rgba, width: w, height: h }, 95).data;
    const img = await decodeDicom(writeDicom({ transferSyntax: TRANSFER_SYNTAX.jpegBaseline, rows: h, columns: w, samples: 3, photometric: 'YBR_FULL_422', bitsAllocated: 8, pixels: [new Uint8Array(encoded)] }));
    expect(img.values).toHaveLength(w * h * 3);
    // Lossy, so close to the source, not equal.
    let err = 0;
    for (let i = 0; i < w * h; i++) for (let c = 0; c < 3; c++) err = Math.max(err, Math.abs(img.values[i * 3 + c]! - rgba[i * 4 + c]!));
    expect(err).toBeLessThan(12);
    const native = new Uint8Array(new Int16Array([-5, 0, 7, 1000]).buffer);
    const deflated = await decodeDicom(writeDicom({ transferSyntax: TRANSFER_SYNTAX.deflated, rows: 2, columns: 2, samples: 1, photometric: 'MONOCHROME2', bitsAllocated: 16, pixelRepresentation: 1, pixels: native }));
    expect([...deflated.values]).toEqual([-5, 0, 7, 1000]);
    await expect(decodeDicom(writeDicom({ transferSyntax: '1.2.840.10008.1.2.4.70', rows: 2, columns: 2, samples: 1, photometric: 'MONOCHROME2', bitsAllocated: 8, pixels: [new Uint8Array(8)] })))
      .rejects.toMatchObject({ code: 'COHORT_ERR_DATA_UNSUPPORTED' });
  });
});

describe('DICOM pixel pipeline', () => {
  it('should apply rescale slope and intercept when the window is none', async () => {
    const img = await decodeDicom(read('single/CT_small.dcm'));
    const hu = framePixels(img, 0, { shape: [128, 128, 1], window: 'none' });
    expect(Math.min(...hu)).toBe(128 - 1024);
    expect(Math.max(...hu)).toBe(2191 - 1024);
  });

  it('should map a fixed window to [0, 1] by the DICOM linear VOI function when given center and width', async () => {
    const img = await decodeDicom(read('single/CT_small.dcm'));
    const out = framePixels(img, 0, { shape: [128, 128, 1], window: { center: 40, width: 400 } });
    for (const p of [0, 500, 8000, 16383]) {
      const v = img.values[p]! - 1024;
      const expected = v <= 40 - 0.5 - 199.5 ? 0 : v > 40 - 0.5 + 199.5 ? 1 : (v - 39.5) / 399 + 0.5;
      expect(out[p]).toBeCloseTo(expected, 5);
    }
  });

  it('should invert MONOCHROME1 so that bright means dense when windowing', async () => {
    const img = await decodeDicom(read('series/77654033/CR1/6154'));
    expect(img.photometric).toBe('MONOCHROME1');
    const out = framePixels(img, 0, { shape: [16, 16, 1], window: 'minmax' });
    const raw = [...img.values];
    const lo = Math.min(...raw), hi = Math.max(...raw);
    for (const p of [0, 37, 255]) expect(out[p]).toBeCloseTo(1 - (raw[p]! - lo) / (hi - lo), 5);
  });

  it('should map palette colour through its lookup tables when a frame is taken', async () => {
    const img = await decodeDicom(read('compressed/US-PAL-8-10x-echo.dcm'));
    expect(img.palette).toBeDefined();
    const rgb = framePixels(img, 3, { shape: [430, 600, 3], window: 'file' });
    const p = 430 * 300 + 250;
    const index = img.values[3 * 430 * 600 + p]! - img.palette!.first;
    expect([rgb[p * 3], rgb[p * 3 + 1], rgb[p * 3 + 2]]).toEqual([img.palette!.red[index], img.palette!.green[index], img.palette!.blue[index]]);
    const grey = framePixels(img, 3, { shape: [32, 32, 1], window: 'file' });
    expect(grey).toHaveLength(32 * 32);
    expect(grey.every((v) => v >= 0 && v <= 1)).toBe(true);
  });
});
