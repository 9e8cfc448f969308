/**
 * PNG and JPEG files to float pixels in [0, 1], with pure-JS decoders (`pngjs`, `jpeg-js`): no native code to
 * build at a hospital. Any decoder failure is COHORT_ERR_DATA_CORRUPT; an extension we do not read is
 * COHORT_ERR_DATA_UNSUPPORTED.
 */
import { extname } from 'node:path';
import jpeg from 'jpeg-js';
import { PNG } from 'pngjs';
import { CohortError } from '../../protocol/errors.ts';

export const IMAGE_EXTENSIONS: ReadonlySet<string> = new Set(['.png', '.jpg', '.jpeg']);

export interface DecodedImage {
  width: number;
  height: number;
  /** RGB, interleaved, in [0, 1]. */
  rgb: Float32Array;
}

function toRgb(rgba: Uint8Array, width: number, height: number, stride: number): Float32Array {
  const out = new Float32Array(width * height * 3);
  for (let p = 0; p < width * height; p++) {
    out[p * 3] = rgba[p * stride]! / 255;
    out[p * 3 + 1] = rgba[p * stride + 1]! / 255;
    out[p * 3 + 2] = rgba[p * stride + 2]! / 255;
  }
  return out;
}

/** Decodes a PNG (any bit depth, palette, interlace; alpha ignored) or a baseline/progressive JPEG. */
export function decodeImage(bytes: Uint8Array, name: string): DecodedImage {
  const ext = extname(name).toLowerCase();
  if (!IMAGE_EXTENSIONS.has(ext)) throw new CohortError('COHORT_ERR_DATA_UNSUPPORTED', `${ext || 'no extension'}: only PNG and JPEG are read`);
  try {
    if (ext === '.png') {
      const png = PNG.sync.read(Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength));
      return { width: png.width, height: png.height, rgb: toRgb(png.data, png.width, png.height, 4) };
    }
    const img = jpeg.decode(bytes, { useTArray: true, formatAsRGBA: false, maxMemoryUsageInMB: 512 });
    return { width: img.width, height: img.height, rgb: toRgb(img.data, img.width, img.height, 3) };
  } catch (err) {
    throw new CohortError('COHORT_ERR_DATA_CORRUPT', `${name}: ${err instanceof Error ? err.message : String(err)}`.slice(0, 300));
  }
}
