/**
 * From stored DICOM values to the model's input, per frame: palette colour to RGB; or for monochrome, rescale
 * slope/intercept to modality units (e.g. Hounsfield), the VOI window (the dataset's, else the file's, else the
 * frame's own range) mapped to [0, 1], and MONOCHROME1 inverted so that bright means dense everywhere; then
 * channel conversion and bilinear resizing to the declared shape.
 */
import type { DicomImage } from './dicom-decode.ts';
import { convertChannels, resizeBilinear } from './resize.ts';

/**
 * `file`: the file's window, falling back to the frame's range; `minmax`: always the frame's range; `none`: modality
 * values unscaled (federated standardization then sets the scale); or a fixed window, e.g. CT soft tissue
 * `{center: 40, width: 400}`.
 */
export type WindowPolicy = 'file' | 'minmax' | 'none' | { center: number; width: number };

export interface PixelOptions {
  /** [height, width, channels]; channels 1 (grey) or 3 (RGB). */
  shape: readonly [number, number, number];
  window: WindowPolicy;
}

/** DICOM PS3.3 C.11.2.1.2.1: the linear VOI function, to [0, 1]. */
function applyWindow(v: number, center: number, width: number): number {
  const lo = center - 0.5 - (width - 1) / 2;
  const hi = center - 0.5 + (width - 1) / 2;
  if (v <= lo) return 0;
  if (v > hi) return 1;
  return width <= 1 ? 1 : (v - (center - 0.5)) / (width - 1) + 0.5;
}

/** One frame as floats, `shape[0] × shape[1] × shape[2]`. */
export function framePixels(img: DicomImage, frame: number, opts: PixelOptions): Float32Array {
  const pixels = img.rows * img.columns;
  const spp = img.samplesPerPixel;
  const base = frame * pixels * spp;
  let channels: number;
  let out: Float32Array;
  if (img.palette) {
    const { first, red, green, blue } = img.palette;
    const last = red.length - 1;
    channels = 3;
    out = new Float32Array(pixels * 3);
    for (let p = 0; p < pixels; p++) {
      const i = Math.min(last, Math.max(0, img.values[base + p]! - first));
      out[p * 3] = red[i]!;
      out[p * 3 + 1] = green[i]!;
      out[p * 3 + 2] = blue[i]!;
    }
  } else if (spp === 3) {
    channels = 3;
    out = new Float32Array(pixels * 3);
    const max = 2 ** img.bitsStored - 1;
    const ybr = img.photometric.startsWith('YBR_FULL');
    for (let p = 0; p < pixels; p++) {
      const a = img.values[base + p * 3]! / max;
      const b = img.values[base + p * 3 + 1]! / max;
      const c = img.values[base + p * 3 + 2]! / max;
      if (ybr) {
        // YCbCr (full range) to RGB, PS3.3 C.7.6.3.1.2.
        out[p * 3] = Math.min(1, Math.max(0, a + 1.402 * (c - 0.5)));
        out[p * 3 + 1] = Math.min(1, Math.max(0, a - 0.344136 * (b - 0.5) - 0.714136 * (c - 0.5)));
        out[p * 3 + 2] = Math.min(1, Math.max(0, a + 1.772 * (b - 0.5)));
      } else {
        out[p * 3] = a;
        out[p * 3 + 1] = b;
        out[p * 3 + 2] = c;
      }
    }
  } else {
    channels = 1;
    out = new Float32Array(pixels);
    for (let p = 0; p < pixels; p++) out[p] = img.values[base + p]! * img.rescaleSlope + img.rescaleIntercept;
    const policy = opts.window === 'file' ? img.window ?? 'minmax' : opts.window;
    if (policy === 'minmax') {
      let lo = Infinity;
      let hi = -Infinity;
      for (const v of out) {
        if (v < lo) lo = v;
        if (v > hi) hi = v;
      }
      const span = hi - lo;
      for (let p = 0; p < pixels; p++) out[p] = span > 0 ? (out[p]! - lo) / span : 0;
    } else if (policy !== 'none') {
      for (let p = 0; p < pixels; p++) out[p] = applyWindow(out[p]!, policy.center, policy.width);
    }
    if (img.photometric === 'MONOCHROME1') {
      if (policy === 'none') for (let p = 0; p < pixels; p++) out[p] = -out[p]!;
      else for (let p = 0; p < pixels; p++) out[p] = 1 - out[p]!;
    }
  }
  const [h, w, c] = opts.shape;
  return resizeBilinear(convertChannels(out, pixels, channels, c), img.rows, img.columns, c, h, w);
}
