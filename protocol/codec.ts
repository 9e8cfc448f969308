/**
 * Binary tensor codec. Model weights travel as one binary frame, never as JSON number arrays:
 *
 *   magic "CHT1" | u32 tensorCount | per tensor: u8 dtype (1 = float32) | u8 rank | u32 dims[rank]
 *   | pad to 4 bytes | then the float32 data of every tensor, little-endian, in order.
 *
 * Decoding checks the frame against its declared sizes and a byte limit before it allocates anything, so a
 * truncated or hostile frame yields COHORT_ERR_TENSOR_* rather than a crash or a huge allocation.
 */
import { CohortError } from './errors.ts';

export interface Tensor {
  shape: number[];
  data: Float32Array;
}

const MAGIC = 0x31544843; // "CHT1" read as little-endian u32
const DTYPE_FLOAT32 = 1;
/** Default ceiling for one frame: 512 MiB (a 128M-parameter model). Callers pass a tighter one where they can. */
export const DEFAULT_MAX_FRAME_BYTES = 512 * 1024 * 1024;
const MAX_RANK = 8;
const MAX_TENSORS = 4096;

export function sizeOf(shape: readonly number[]): number {
  let n = 1;
  for (const d of shape) n *= d;
  return n;
}

/** The exact size of the frame of tensors with these shapes (what a model of these shapes travels as). */
export function frameBytes(shapes: readonly (readonly number[])[]): number {
  const header = Math.ceil((8 + shapes.reduce((n, s) => n + 2 + 4 * s.length, 0)) / 4) * 4;
  return header + 4 * shapes.reduce((n, s) => n + sizeOf(s), 0);
}

export function encodeTensors(tensors: readonly Tensor[]): Uint8Array {
  let header = 8;
  let values = 0;
  for (const t of tensors) {
    if (t.data.length !== sizeOf(t.shape)) {
      throw new CohortError('COHORT_ERR_TENSOR_SHAPE', `tensor data length ${t.data.length} does not match shape [${t.shape.join(', ')}]`);
    }
    header += 2 + 4 * t.shape.length;
    values += t.data.length;
  }
  header = Math.ceil(header / 4) * 4;
  const buf = new Uint8Array(header + values * 4);
  const view = new DataView(buf.buffer);
  view.setUint32(0, MAGIC, true);
  view.setUint32(4, tensors.length, true);
  let off = 8;
  for (const t of tensors) {
    view.setUint8(off, DTYPE_FLOAT32);
    view.setUint8(off + 1, t.shape.length);
    off += 2;
    for (const d of t.shape) {
      view.setUint32(off, d, true);
      off += 4;
    }
  }
  off = header;
  for (const t of tensors) {
    // Copy through a byte view: platform endianness is little on every Node target we support.
    buf.set(new Uint8Array(t.data.buffer, t.data.byteOffset, t.data.byteLength), off);
    off += t.data.byteLength;
  }
  return buf;
}

export interface DecodeOptions {
  maxBytes?: number;
  /** When given, the decoded shapes must equal these exactly (COHORT_ERR_TENSOR_SHAPE otherwise). */
  expectShapes?: readonly (readonly number[])[];
  /** Reject NaN and infinities (COHORT_ERR_TENSOR_NONFINITE). Default true. */
  requireFinite?: boolean;
}

function malformed(why: string): CohortError {
  return new CohortError('COHORT_ERR_TENSOR_MALFORMED', `tensor frame malformed: ${why}`);
}

export function decodeTensors(input: Uint8Array | ArrayBuffer, opts: DecodeOptions = {}): Tensor[] {
  const bytes = input instanceof Uint8Array ? input : new Uint8Array(input);
  const maxBytes = opts.maxBytes ?? DEFAULT_MAX_FRAME_BYTES;
  if (bytes.byteLength > maxBytes) {
    throw new CohortError('COHORT_ERR_TENSOR_TOO_LARGE', `tensor frame of ${bytes.byteLength} bytes exceeds the limit of ${maxBytes}`);
  }
  if (bytes.byteLength < 8) throw malformed('shorter than its header');
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  if (view.getUint32(0, true) !== MAGIC) throw malformed('bad magic');
  const count = view.getUint32(4, true);
  if (count > MAX_TENSORS) throw malformed(`too many tensors (${count})`);
  const shapes: number[][] = [];
  let off = 8;
  let values = 0;
  for (let i = 0; i < count; i++) {
    if (off + 2 > bytes.byteLength) throw malformed('truncated header');
    if (view.getUint8(off) !== DTYPE_FLOAT32) throw malformed(`unsupported dtype ${view.getUint8(off)}`);
    const rank = view.getUint8(off + 1);
    if (rank > MAX_RANK) throw malformed(`rank ${rank} too high`);
    off += 2;
    if (off + 4 * rank > bytes.byteLength) throw malformed('truncated shape');
    const shape: number[] = [];
    for (let r = 0; r < rank; r++) {
      shape.push(view.getUint32(off, true));
      off += 4;
    }
    values += sizeOf(shape);
    if (values * 4 > maxBytes) {
      throw new CohortError('COHORT_ERR_TENSOR_TOO_LARGE', `declared tensor sizes exceed the limit of ${maxBytes} bytes`);
    }
    shapes.push(shape);
  }
  const dataStart = Math.ceil(off / 4) * 4;
  if (dataStart + values * 4 !== bytes.byteLength) {
    throw malformed(`expected ${dataStart + values * 4} bytes, got ${bytes.byteLength}`);
  }
  if (opts.expectShapes) {
    const want = opts.expectShapes;
    const same = want.length === shapes.length && want.every((s, i) => {
      const got = shapes[i]!;
      return s.length === got.length && s.every((d, j) => d === got[j]);
    });
    if (!same) {
      throw new CohortError('COHORT_ERR_TENSOR_SHAPE', 'tensor shapes do not match the model', {
        expected: want.map((s) => [...s]),
        received: shapes,
      });
    }
  }
  // One aligned copy so every tensor is a view on memory we own (the input may be a pooled socket buffer).
  const all = new Float32Array(values);
  new Uint8Array(all.buffer).set(bytes.subarray(dataStart));
  const out: Tensor[] = [];
  let v = 0;
  for (const shape of shapes) {
    const n = sizeOf(shape);
    out.push({ shape, data: all.subarray(v, v + n) });
    v += n;
  }
  if (opts.requireFinite ?? true) {
    for (let i = 0; i < all.length; i++) {
      if (!Number.isFinite(all[i]!)) {
        throw new CohortError('COHORT_ERR_TENSOR_NONFINITE', `tensor frame has a non-finite value at index ${i}`);
      }
    }
  }
  return out;
}

export function totalValues(tensors: readonly Tensor[]): number {
  return tensors.reduce((n, t) => n + t.data.length, 0);
}
