import { describe, expect, it } from 'vitest';
import { decodeTensors, encodeTensors } from '../../protocol/codec.ts';
import { CohortError } from '../../protocol/errors.ts';

const sample = () => [
  { shape: [3, 2], data: Float32Array.from([1, -2, 3.5, 4, 5, 6e-8]) },
  { shape: [2], data: Float32Array.from([0.25, -0.125]) },
  { shape: [], data: Float32Array.from([7]) },
];

function codeOf(fn: () => unknown): string | undefined {
  try {
    fn();
  } catch (e) {
    return e instanceof CohortError ? e.code : 'not-coded';
  }
  return undefined;
}

describe('tensor codec', () => {
  it('should round-trip shapes and float32 values bit for bit', () => {
    const bytes = encodeTensors(sample());
    const back = decodeTensors(bytes);
    expect(back.map((t) => t.shape)).toEqual([[3, 2], [2], []]);
    back.forEach((t, i) => expect([...t.data]).toEqual([...sample()[i]!.data]));
  });

  it('should cost 4 bytes a value plus a small header', () => {
    const n = 10_000;
    const bytes = encodeTensors([{ shape: [n], data: new Float32Array(n) }]);
    expect(bytes.byteLength).toBeLessThanOrEqual(4 * n + 16);
  });

  it('should decode from an unaligned view of a larger buffer', () => {
    const bytes = encodeTensors(sample());
    const big = new Uint8Array(bytes.length + 3);
    big.set(bytes, 3);
    expect(decodeTensors(big.subarray(3))[0]!.data[2]).toBe(3.5);
  });

  it('should refuse every truncation with COHORT_ERR_TENSOR_MALFORMED', () => {
    const bytes = encodeTensors(sample());
    for (let cut = 0; cut < bytes.length; cut += 3) {
      expect(codeOf(() => decodeTensors(bytes.subarray(0, cut)))).toBe('COHORT_ERR_TENSOR_MALFORMED');
    }
  });

  it('should refuse trailing bytes and a bad magic', () => {
    const bytes = encodeTensors(sample());
    const longer = new Uint8Array(bytes.length + 4);
    longer.set(bytes);
    expect(codeOf(() => decodeTensors(longer))).toBe('COHORT_ERR_TENSOR_MALFORMED');
    const bad = bytes.slice();
    bad[0] = 0x58;
    expect(codeOf(() => decodeTensors(bad))).toBe('COHORT_ERR_TENSOR_MALFORMED');
  });

  it('should refuse a frame over the byte limit before allocating, including a lying header', () => {
    const bytes = encodeTensors(sample());
    expect(codeOf(() => decodeTensors(bytes, { maxBytes: 16 }))).toBe('COHORT_ERR_TENSOR_TOO_LARGE');
    // A 20-byte frame that claims a 4-billion-value tensor.
    const liar = new Uint8Array(20);
    const v = new DataView(liar.buffer);
    v.setUint32(0, 0x31544843, true);
    v.setUint32(4, 1, true);
    v.setUint8(8, 1);
    v.setUint8(9, 1);
    v.setUint32(10, 0xffffffff, true);
    expect(codeOf(() => decodeTensors(liar, { maxBytes: 1 << 20 }))).toBe('COHORT_ERR_TENSOR_TOO_LARGE');
  });

  it('should refuse NaN and infinities with COHORT_ERR_TENSOR_NONFINITE', () => {
    for (const bad of [NaN, Infinity, -Infinity]) {
      const t = sample();
      t[1]!.data[1] = bad;
      expect(codeOf(() => decodeTensors(encodeTensors(t)))).toBe('COHORT_ERR_TENSOR_NONFINITE');
    }
  });

  it('should refuse shapes other than the expected ones with COHORT_ERR_TENSOR_SHAPE', () => {
    const bytes = encodeTensors(sample());
    expect(codeOf(() => decodeTensors(bytes, { expectShapes: [[3, 2], [2], []] }))).toBeUndefined();
    expect(codeOf(() => decodeTensors(bytes, { expectShapes: [[2, 3], [2], []] }))).toBe('COHORT_ERR_TENSOR_SHAPE');
    expect(codeOf(() => decodeTensors(bytes, { expectShapes: [[3, 2], [2]] }))).toBe('COHORT_ERR_TENSOR_SHAPE');
  });

  it('should refuse to encode data that does not match its shape', () => {
    expect(codeOf(() => encodeTensors([{ shape: [2, 2], data: new Float32Array(3) }]))).toBe('COHORT_ERR_TENSOR_SHAPE');
  });
});
