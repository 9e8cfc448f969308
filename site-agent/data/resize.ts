/**
 * Bilinear resizing of interleaved float images (height × width × channels), with half-pixel centres (the
 * convention of OpenCV's INTER_LINEAR and tf.image.resizeBilinear(halfPixelCenters)), so a same-size resize is the
 * identity and downsizing does not shift the image.
 */
export function resizeBilinear(src: Float32Array, height: number, width: number, channels: number, outHeight: number, outWidth: number): Float32Array {
  if (height === outHeight && width === outWidth) return src.slice();
  const out = new Float32Array(outHeight * outWidth * channels);
  const sy = height / outHeight;
  const sx = width / outWidth;
  for (let y = 0; y < outHeight; y++) {
    const fy = Math.min(height - 1, Math.max(0, (y + 0.5) * sy - 0.5));
    const y0 = Math.floor(fy);
    const y1 = Math.min(height - 1, y0 + 1);
    const wy = fy - y0;
    for (let x = 0; x < outWidth; x++) {
      const fx = Math.min(width - 1, Math.max(0, (x + 0.5) * sx - 0.5));
      const x0 = Math.floor(fx);
      const x1 = Math.min(width - 1, x0 + 1);
      const wx = fx - x0;
      const o = (y * outWidth + x) * channels;
      const a = (y0 * width + x0) * channels;
      const b = (y0 * width + x1) * channels;
      const c = (y1 * width + x0) * channels;
      const d = (y1 * width + x1) * channels;
      for (let k = 0; k < channels; k++) {
        const top = src[a + k]! + (src[b + k]! - src[a + k]!) * wx;
        const bottom = src[c + k]! + (src[d + k]! - src[c + k]!) * wx;
        out[o + k] = top + (bottom - top) * wy;
      }
    }
  }
  return out;
}

/** Converts between grayscale (1 channel, ITU-R BT.601 luma) and RGB (3 channels, grey replicated). */
export function convertChannels(src: Float32Array, pixels: number, from: number, to: number): Float32Array {
  if (from === to) return src;
  const out = new Float32Array(pixels * to);
  for (let p = 0; p < pixels; p++) {
    if (to === 1) out[p] = 0.299 * src[p * from]! + 0.587 * src[p * from + 1]! + 0.114 * src[p * from + 2]!;
    else for (let k = 0; k < to; k++) out[p * to + k] = src[p * from]!;
  }
  return out;
}
