/**
 * The masking generator: ChaCha20 (RFC 8439) keyed by the full 32-byte seed, zero nonce and counter, read as
 * little-endian 32-bit lanes. Every seed is used for one vector only (each is derived per session and purpose
 * through HKDF), which is what makes a fixed nonce safe. A 32-bit seeded PRNG would let anyone who sees a masked
 * vector brute-force the mask; here the mask is as strong as the 256-bit key.
 *
 * Lanes are added modulo 2^32 (Int32Array arithmetic wraps the same way Uint32Array does), and the keystream is
 * produced and added in chunks that stay in cache, so no mask is ever held whole in memory.
 */
import { createCipheriv } from 'node:crypto';

const CHUNK_LANES = 16_384;
const ZERO = Buffer.alloc(CHUNK_LANES * 4);
const IV = Buffer.alloc(16);

function checkSeed(seed: Uint8Array): void {
  if (!(seed instanceof Uint8Array) || seed.length !== 32) throw new TypeError('prg: seed must be 32 bytes');
}

function addChunk(acc: Int32Array, v: Int32Array): void {
  const n = v.length;
  for (let i = 0; i < n; i++) acc[i] = (acc[i]! + v[i]!) | 0;
}

function subChunk(acc: Int32Array, v: Int32Array): void {
  const n = v.length;
  for (let i = 0; i < n; i++) acc[i] = (acc[i]! - v[i]!) | 0;
}

/** Keystream bytes as an aligned Int32Array view (copies only when the buffer is not 4-byte aligned). */
function lanesOf(buf: Buffer, lanes: number): Int32Array {
  if (buf.byteOffset % 4 === 0) return new Int32Array(buf.buffer, buf.byteOffset, lanes);
  const copy = new Int32Array(lanes);
  new Uint8Array(copy.buffer).set(buf.subarray(0, lanes * 4));
  return copy;
}

/** Adds `sign` times the generator's output for `seed` into `acc`, lane by lane, modulo 2^32. */
export function addMask(acc: Int32Array, seed: Uint8Array, sign: 1 | -1 = 1): void {
  checkSeed(seed);
  const cipher = createCipheriv('chacha20', seed, IV);
  for (let off = 0; off < acc.length; off += CHUNK_LANES) {
    const len = Math.min(CHUNK_LANES, acc.length - off);
    const ks = lanesOf(cipher.update(len === CHUNK_LANES ? ZERO : ZERO.subarray(0, len * 4)), len);
    if (sign === 1) addChunk(acc.subarray(off, off + len), ks);
    else subChunk(acc.subarray(off, off + len), ks);
  }
}

/** The first `lanes` lanes of the generator's output for `seed`. */
export function prgLanes(seed: Uint8Array, lanes: number): Int32Array {
  const out = new Int32Array(lanes);
  addMask(out, seed, 1);
  return out;
}

/** Adds `src` into `acc` modulo 2^32 (the coordinator's streaming sum of masked vectors). */
export function addLanes(acc: Int32Array, src: Int32Array): void {
  if (acc.length !== src.length) throw new RangeError(`lane counts differ: ${acc.length} vs ${src.length}`);
  for (let off = 0; off < acc.length; off += CHUNK_LANES) {
    const end = Math.min(off + CHUNK_LANES, acc.length);
    addChunk(acc.subarray(off, end), src.subarray(off, end));
  }
}

/** Uniform 32-bit values for stochastic rounding, from a fresh random key (not secret, but unbiased). */
export function uniformLanes(seed: Uint8Array, lanes: number): Uint32Array {
  const v = prgLanes(seed, lanes);
  return new Uint32Array(v.buffer, v.byteOffset, v.length);
}
