/**
 * DICOM RLE Lossless (PS3.5 Annex G). Small enough to own: a 64-byte header of segment offsets, then one PackBits
 * segment per byte plane (most significant byte of each sample first). Every bound is checked, so a damaged frame
 * becomes COHORT_ERR_DATA_CORRUPT instead of a read past the end.
 */
import { CohortError } from '../../protocol/errors.ts';

/**
 * Decodes one RLE frame into little-endian, sample-interleaved bytes (`rows * columns * samples * bytesPerSample`),
 * the layout of native Explicit VR Little Endian pixel data with planar configuration 0.
 */
export function decodeRleFrame(frame: Uint8Array, pixels: number, samples: number, bytesPerSample: number): Uint8Array {
  const corrupt = (why: string) => new CohortError('COHORT_ERR_DATA_CORRUPT', `RLE frame: ${why}`);
  if (frame.byteLength < 64) throw corrupt('shorter than its 64-byte header');
  const view = new DataView(frame.buffer, frame.byteOffset, frame.byteLength);
  const segments = view.getUint32(0, true);
  const expected = samples * bytesPerSample;
  if (segments !== expected) throw corrupt(`${segments} segments, expected ${expected}`);
  const offsets: number[] = [];
  for (let s = 0; s < segments; s++) offsets.push(view.getUint32(4 + 4 * s, true));
  const out = new Uint8Array(pixels * expected);
  for (let s = 0; s < segments; s++) {
    const start = offsets[s]!;
    const end = s + 1 < segments ? offsets[s + 1]! : frame.byteLength;
    if (start < 64 || end > frame.byteLength || end < start) throw corrupt(`segment ${s} offsets out of range`);
    const sample = Math.floor(s / bytesPerSample);
    // Segment 0 of a sample holds its most significant byte; little-endian output puts that byte last.
    const byte = bytesPerSample - 1 - (s % bytesPerSample);
    const stride = expected;
    let o = sample * bytesPerSample + byte;
    let written = 0;
    let i = start;
    while (written < pixels && i < end) {
      const n = (frame[i++]! << 24) >> 24; // signed header byte
      if (n >= 0) {
        const count = n + 1;
        if (i + count > end) throw corrupt(`segment ${s} literal run past its end`);
        for (let k = 0; k < count && written < pixels; k++, written++, o += stride) out[o] = frame[i + k]!;
        i += count;
      } else if (n !== -128) {
        if (i >= end) throw corrupt(`segment ${s} repeat run past its end`);
        const v = frame[i++]!;
        const count = 1 - n;
        for (let k = 0; k < count && written < pixels; k++, written++, o += stride) out[o] = v;
      }
    }
    if (written < pixels) throw corrupt(`segment ${s} decodes to ${written} of ${pixels} pixels`);
  }
  return out;
}
