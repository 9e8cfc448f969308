/**
 * DICOM Part 10 files to stored pixel values. Parsing is `dicom-parser`'s (implicit and explicit VR, little and big
 * endian, deflate through node:zlib); pixel data is decoded here for native data and RLE, and through
 * `dicom-codecs.ts` for JPEG 2000, JPEG-LS and baseline JPEG.
 *
 * "Stored values" are what the file holds before any rescale, VOI window, palette or MONOCHROME1 inversion: the
 * same numbers pydicom's `pixel_array` gives, frames × rows × columns × samples, samples interleaved. The
 * display pipeline (rescale, window, palette, inversion) is `dicom-pixels.ts`.
 *
 * A file that cannot be decoded throws COHORT_ERR_DATA_CORRUPT (damaged or truncated) or COHORT_ERR_DATA_UNSUPPORTED
 * (a valid file we do not decode, e.g. lossless-JPEG process 14); never a crash.
 */
import { createRequire } from 'node:module';
import { inflateRawSync } from 'node:zlib';
import type * as DicomParser from 'dicom-parser';
import { CohortError } from '../../protocol/errors.ts';
import { decodeRleFrame } from './dicom-rle.ts';
import { decodeJpeg2000, decodeJpegBaseline, decodeJpegLs } from './dicom-codecs.ts';

// dicom-parser ships a UMD bundle; require() gets its namespace reliably from ESM.
const dicomParser = createRequire(import.meta.url)('dicom-parser') as typeof DicomParser;

export const TRANSFER_SYNTAX = {
  implicitLittle: '1.2.840.10008.1.2',
  explicitLittle: '1.2.840.10008.1.2.1',
  deflated: '1.2.840.10008.1.2.1.99',
  explicitBig: '1.2.840.10008.1.2.2',
  jpegBaseline: '1.2.840.10008.1.2.4.50',
  jpegLsLossless: '1.2.840.10008.1.2.4.80',
  jpegLsNearLossless: '1.2.840.10008.1.2.4.81',
  jpeg2000Lossless: '1.2.840.10008.1.2.4.90',
  jpeg2000: '1.2.840.10008.1.2.4.91',
  rle: '1.2.840.10008.1.2.5',
} as const;

const NATIVE: ReadonlySet<string> = new Set([TRANSFER_SYNTAX.implicitLittle, TRANSFER_SYNTAX.explicitLittle, TRANSFER_SYNTAX.deflated, TRANSFER_SYNTAX.explicitBig]);

export type StoredDtype = 'uint8' | 'int8' | 'uint16' | 'int16' | 'uint32' | 'int32';
export type StoredValues = Uint8Array | Int8Array | Uint16Array | Int16Array | Uint32Array | Int32Array;

export interface DicomPalette {
  /** First stored value the table maps. */
  first: number;
  /** Entries per channel, each scaled to [0, 1]. */
  red: Float32Array;
  green: Float32Array;
  blue: Float32Array;
}

export interface DicomImage {
  transferSyntax: string;
  modality: string | undefined;
  rows: number;
  columns: number;
  frames: number;
  samplesPerPixel: number;
  photometric: string;
  bitsAllocated: number;
  bitsStored: number;
  pixelRepresentation: number;
  dtype: StoredDtype;
  /** Stored values, frames × rows × columns × samples (interleaved). */
  values: StoredValues;
  rescaleSlope: number;
  rescaleIntercept: number;
  /** First VOI window in the file, if any. */
  window: { center: number; width: number } | undefined;
  palette: DicomPalette | undefined;
}

const corrupt = (why: string) => new CohortError('COHORT_ERR_DATA_CORRUPT', why);
const unsupported = (why: string) => new CohortError('COHORT_ERR_DATA_UNSUPPORTED', why);

function parse(bytes: Uint8Array): DicomParser.DataSet {
  try {
    return dicomParser.parseDicom(bytes, {
      // Deflated Explicit VR Little Endian: the data set after the meta header is raw deflate.
      inflater: (arr: Uint8Array, position: number) => {
        const inflated = inflateRawSync(arr.subarray(position));
        const out = new Uint8Array(position + inflated.byteLength);
        out.set(arr.subarray(0, position));
        out.set(inflated, position);
        return out;
      },
    } as DicomParser.ParseDicomOptions);
  } catch (err) {
    // dicom-parser throws strings or `{exception, dataSet}` objects, not Errors.
    const why = typeof err === 'string' ? err : (err as { exception?: string; message?: string })?.exception ?? (err as Error)?.message ?? 'unreadable';
    throw corrupt(`not a readable DICOM file: ${String(why).slice(0, 200)}`);
  }
}

function dtypeOf(bitsAllocated: number, signed: boolean): StoredDtype {
  switch (bitsAllocated) {
    case 8: return signed ? 'int8' : 'uint8';
    case 16: return signed ? 'int16' : 'uint16';
    case 32: return signed ? 'int32' : 'uint32';
    default: throw unsupported(`bits allocated ${bitsAllocated} is not supported (8, 16 or 32)`);
  }
}

/** Little-endian bytes viewed as `dtype` (copied, so the view is aligned and owns its memory). */
function view(bytes: Uint8Array, dtype: StoredDtype): StoredValues {
  const buf = bytes.slice().buffer;
  switch (dtype) {
    case 'uint8': return new Uint8Array(buf);
    case 'int8': return new Int8Array(buf);
    case 'uint16': return new Uint16Array(buf);
    case 'int16': return new Int16Array(buf);
    case 'uint32': return new Uint32Array(buf);
    case 'int32': return new Int32Array(buf);
  }
}

/** Palette colour lookup tables (PS3.3 C.7.6.3.1.5), entries scaled to [0, 1]. */
function readPalette(ds: DicomParser.DataSet): DicomPalette {
  const channel = (desc: string, data: string): { first: number; table: Float32Array } => {
    const d = ds.elements[desc];
    const el = ds.elements[data];
    if (!d || !el) throw corrupt('PALETTE COLOR image without its lookup tables');
    const count = ds.uint16(desc, 0) || 65536; // 0 means 2^16 entries
    const first = ds.uint16(desc, 1) ?? 0;
    const bits = ds.uint16(desc, 2) ?? 16;
    const table = new Float32Array(count);
    const bytesPer = el.length >= count * 2 ? 2 : 1;
    if (el.length < count * bytesPer) throw corrupt('palette lookup table shorter than its descriptor');
    const max = bytesPer === 2 ? (bits === 8 ? 255 : 65535) : 255;
    for (let i = 0; i < count; i++) table[i] = (bytesPer === 2 ? ds.uint16(data, i)! : ds.byteArray[el.dataOffset + i]!) / max;
    return { first, table };
  };
  const r = channel('x00281101', 'x00281201');
  const g = channel('x00281102', 'x00281202');
  const b = channel('x00281103', 'x00281203');
  return { first: r.first, red: r.table, green: g.table, blue: b.table };
}

/** Frame `i` of encapsulated pixel data: one fragment per frame, or the offset table, or (single frame) them all. */
function encapsulatedFrame(ds: DicomParser.DataSet, el: DicomParser.Element, i: number, frames: number): Uint8Array {
  const fragments = el.fragments ?? [];
  if (fragments.length === 0) throw corrupt('encapsulated pixel data has no fragments');
  if (frames === 1) return new Uint8Array(dicomParser.readEncapsulatedPixelDataFromFragments(ds, el, 0, fragments.length));
  if (el.basicOffsetTable && el.basicOffsetTable.length === frames) {
    return new Uint8Array(dicomParser.readEncapsulatedImageFrame(ds, el, i));
  }
  if (fragments.length === frames) return new Uint8Array(dicomParser.readEncapsulatedPixelDataFromFragments(ds, el, i, 1));
  throw unsupported(`${frames} frames in ${fragments.length} fragments without an offset table`);
}

function toPlanarInterleaved(bytes: Uint8Array, pixels: number, samples: number, bytesPer: number, frames: number): Uint8Array {
  const out = new Uint8Array(bytes.byteLength);
  const frameBytes = pixels * samples * bytesPer;
  for (let f = 0; f < frames; f++) {
    const base = f * frameBytes;
    for (let s = 0; s < samples; s++) {
      for (let p = 0; p < pixels; p++) {
        for (let b = 0; b < bytesPer; b++) out[base + (p * samples + s) * bytesPer + b] = bytes[base + (s * pixels + p) * bytesPer + b]!;
      }
    }
  }
  return out;
}

/** Parses a DICOM file and decodes its stored pixel values (all frames). */
export async function decodeDicom(bytes: Uint8Array): Promise<DicomImage> {
  const ds = parse(bytes);
  const ts = ds.string('x00020010')?.replace(/\0/g, '').trim() ?? TRANSFER_SYNTAX.implicitLittle;
  const pixel = ds.elements.x7fe00010;
  if (!pixel) throw unsupported('no pixel data (e.g. a DICOMDIR or a structured report)');
  const rows = ds.uint16('x00280010') ?? 0;
  const columns = ds.uint16('x00280011') ?? 0;
  const samples = ds.uint16('x00280002') ?? 1;
  const bitsAllocated = ds.uint16('x00280100') ?? 0;
  const bitsStored = ds.uint16('x00280101') ?? bitsAllocated;
  const pixelRepresentation = ds.uint16('x00280103') ?? 0;
  const planar = ds.uint16('x00280006') ?? 0;
  const frames = Math.max(1, ds.intString('x00280008') ?? 1);
  const photometric = (ds.string('x00280004') ?? 'MONOCHROME2').trim().toUpperCase();
  if (rows < 1 || columns < 1) throw corrupt(`image size ${rows}×${columns}`);
  if (samples !== 1 && samples !== 3) throw unsupported(`${samples} samples per pixel`);
  const dtype = dtypeOf(bitsAllocated, pixelRepresentation === 1);
  const bytesPer = bitsAllocated / 8;
  const pixels = rows * columns;
  const frameBytes = pixels * samples * bytesPer;

  let raw: Uint8Array;
  if (NATIVE.has(ts)) {
    if (pixel.encapsulatedPixelData) throw corrupt('native transfer syntax with encapsulated pixel data');
    const need = frameBytes * frames;
    if (pixel.dataOffset + Math.min(pixel.length, need) > ds.byteArray.length || pixel.length < need) {
      throw corrupt(`pixel data holds ${Math.min(pixel.length, ds.byteArray.length - pixel.dataOffset)} bytes, ${need} expected`);
    }
    raw = ds.byteArray.slice(pixel.dataOffset, pixel.dataOffset + need);
    if (ts === TRANSFER_SYNTAX.explicitBig && bytesPer > 1) {
      for (let i = 0; i < raw.length; i += bytesPer) raw.subarray(i, i + bytesPer).reverse();
    }
    if (samples > 1 && planar === 1) raw = toPlanarInterleaved(raw, pixels, samples, bytesPer, frames);
  } else {
    if (!pixel.encapsulatedPixelData) throw corrupt(`transfer syntax ${ts} needs encapsulated pixel data`);
    raw = new Uint8Array(frameBytes * frames);
    for (let f = 0; f < frames; f++) {
      let frame: Uint8Array;
      try {
        frame = encapsulatedFrame(ds, pixel, f, frames);
      } catch (err) {
        if (err instanceof CohortError) throw err;
        throw corrupt(`frame ${f} could not be read: ${String((err as Error)?.message ?? err).slice(0, 200)}`);
      }
      let out: Uint8Array;
      switch (ts) {
        case TRANSFER_SYNTAX.rle:
          out = decodeRleFrame(frame, pixels, samples, bytesPer);
          break;
        case TRANSFER_SYNTAX.jpeg2000Lossless:
        case TRANSFER_SYNTAX.jpeg2000:
          out = checkSize((await decodeJpeg2000(frame)), rows, columns, frameBytes);
          break;
        case TRANSFER_SYNTAX.jpegLsLossless:
        case TRANSFER_SYNTAX.jpegLsNearLossless:
          out = checkSize((await decodeJpegLs(frame)), rows, columns, frameBytes);
          break;
        case TRANSFER_SYNTAX.jpegBaseline:
          if (bitsAllocated !== 8) throw unsupported(`baseline JPEG with ${bitsAllocated} bits allocated`);
          out = checkSize(decodeJpegBaseline(frame, samples), rows, columns, frameBytes);
          break;
        default:
          throw unsupported(`transfer syntax ${ts} is not supported`);
      }
      raw.set(out, f * frameBytes);
    }
  }

  const window = (() => {
    const c = ds.floatString('x00281050', 0);
    const w = ds.floatString('x00281051', 0);
    return c !== undefined && w !== undefined && Number.isFinite(c) && Number.isFinite(w) && w > 0 ? { center: c, width: w } : undefined;
  })();
  const slope = ds.floatString('x00281053');
  const intercept = ds.floatString('x00281052');
  return {
    transferSyntax: ts,
    modality: ds.string('x00080060')?.trim(),
    rows, columns, frames, samplesPerPixel: samples, photometric, bitsAllocated, bitsStored, pixelRepresentation, dtype,
    values: view(raw, dtype),
    rescaleSlope: slope !== undefined && Number.isFinite(slope) && slope !== 0 ? slope : 1,
    rescaleIntercept: intercept !== undefined && Number.isFinite(intercept) ? intercept : 0,
    window,
    palette: photometric === 'PALETTE COLOR' ? readPalette(ds) : undefined,
  };
}

function checkSize(d: { bytes: Uint8Array; width: number; height: number }, rows: number, columns: number, frameBytes: number): Uint8Array {
  if (d.width !== columns || d.height !== rows || d.bytes.byteLength < frameBytes) {
    throw corrupt(`decoded frame is ${d.width}×${d.height} (${d.bytes.byteLength} bytes), header says ${columns}×${rows}`);
  }
  return d.bytes.subarray(0, frameBytes);
}
