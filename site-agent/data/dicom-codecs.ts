/**
 * Decoders for the compressed DICOM transfer syntaxes, from well-kept npm packages: JPEG 2000 through
 * `@cornerstonejs/codec-openjpeg` and JPEG-LS through `@cornerstonejs/codec-charls` (both Emscripten builds whose
 * wasm ships inside the npm package, loaded once per process), baseline JPEG through the pure-JS `jpeg-js`.
 * Each returns little-endian, sample-interleaved bytes, like native pixel data.
 */
import { createRequire } from 'node:module';
import jpeg from 'jpeg-js';
import { CohortError } from '../../protocol/errors.ts';

const require = createRequire(import.meta.url);

/** What we use of the Emscripten decoder classes (both codecs expose the same shape). */
interface WasmDecoder {
  getEncodedBuffer(length: number): Uint8Array;
  getDecodedBuffer(): Uint8Array;
  decode(): void;
  getFrameInfo(): { width: number; height: number; bitsPerSample: number; componentCount: number; isSigned?: boolean };
  delete(): void;
}
type Factory<K extends string> = (opts: { print: (s: string) => void; printErr: (s: string) => void }) => Promise<Record<K, new () => WasmDecoder>>;

const quiet = { print: () => undefined, printErr: () => undefined };
let openjpeg: Promise<Record<'J2KDecoder', new () => WasmDecoder>> | undefined;
let charls: Promise<Record<'JpegLSDecoder', new () => WasmDecoder>> | undefined;

function runWasm(decoder: WasmDecoder, frame: Uint8Array, what: string): { bytes: Uint8Array; width: number; height: number; components: number; bits: number } {
  try {
    decoder.getEncodedBuffer(frame.byteLength).set(frame);
    decoder.decode();
    const info = decoder.getFrameInfo();
    // Copy out of wasm memory before the decoder is deleted.
    return { bytes: decoder.getDecodedBuffer().slice(), width: info.width, height: info.height, components: info.componentCount, bits: info.bitsPerSample };
  } catch (err) {
    throw new CohortError('COHORT_ERR_DATA_CORRUPT', `${what} frame could not be decoded: ${err instanceof Error ? err.message : String(err)}`.slice(0, 300));
  } finally {
    decoder.delete();
  }
}

export async function decodeJpeg2000(frame: Uint8Array): Promise<ReturnType<typeof runWasm>> {
  openjpeg ??= (require('@cornerstonejs/codec-openjpeg/decodewasmjs') as Factory<'J2KDecoder'>)(quiet);
  const lib = await openjpeg;
  return runWasm(new lib.J2KDecoder(), frame, 'JPEG 2000');
}

export async function decodeJpegLs(frame: Uint8Array): Promise<ReturnType<typeof runWasm>> {
  charls ??= (require('@cornerstonejs/codec-charls/decodewasmjs') as Factory<'JpegLSDecoder'>)(quiet);
  const lib = await charls;
  return runWasm(new lib.JpegLSDecoder(), frame, 'JPEG-LS');
}

/** Baseline (8-bit, Huffman) JPEG. jpeg-js always yields RGB; a one-sample image keeps the first channel. */
export function decodeJpegBaseline(frame: Uint8Array, samples: number): { bytes: Uint8Array; width: number; height: number } {
  let img: { width: number; height: number; data: Uint8Array };
  try {
    img = jpeg.decode(frame, { useTArray: true, formatAsRGBA: false, maxMemoryUsageInMB: 512 });
  } catch (err) {
    throw new CohortError('COHORT_ERR_DATA_CORRUPT', `JPEG frame could not be decoded: ${err instanceof Error ? err.message : String(err)}`.slice(0, 300));
  }
  if (samples === 3) return { bytes: img.data, width: img.width, height: img.height };
  const grey = new Uint8Array(img.width * img.height);
  for (let i = 0; i < grey.length; i++) grey[i] = img.data[i * 3]!;
  return { bytes: grey, width: img.width, height: img.height };
}
