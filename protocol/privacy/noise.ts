/**
 * Noise for differential privacy. Every draw comes from the operating system's CSPRNG (node:crypto), never from a
 * seeded PRNG such as tfjs's: noise an observer could predict protects nothing. Tests may pass their own uniform
 * source to check distributions.
 *
 * - Gaussian noise (DP-SGD at a site, central client-level DP at the coordinator): Box-Muller on 53-bit uniforms.
 *   Floating-point Gaussian noise has known, small, side channels in its low bits (Jin et al. 2022); the integer
 *   mechanism below is the remedy where that matters.
 * - Skellam noise (distributed DP under secure aggregation, Agarwal et al. 2021): the difference of two Poisson
 *   draws, integer-valued, added to a site's quantized update modulo 2^32 so that it survives the modular sum.
 */
import { createCipheriv, randomFillSync } from 'node:crypto';
import { logGamma } from './special.ts';

/** A source of uniform doubles in [0, 1). */
export type Uniform = () => number;

/** Uniform doubles in [0, 1) with 53 random bits each, from the OS CSPRNG, drawn in blocks for speed. */
export function secureUniform(): Uniform {
  const words = new Uint32Array(2048);
  let at = words.length;
  return () => {
    if (at >= words.length) {
      randomFillSync(words);
      at = 0;
    }
    const hi = words[at++]! >>> 5; // 27 bits
    const lo = words[at++]! >>> 6; // 26 bits
    return (hi * 67108864 + lo) / 9007199254740992;
  };
}

/**
 * Uniform doubles in [0, 1) from a 32-byte key: the ChaCha20 keystream read as 53-bit values. The same key gives
 * the same stream. Only for callers that were handed an injected `Entropy` (simulations); production noise uses
 * `secureUniform`.
 */
export function keyedUniform(key: Uint8Array): Uniform {
  if (!(key instanceof Uint8Array) || key.length !== 32) throw new TypeError('keyedUniform: key must be 32 bytes');
  const cipher = createCipheriv('chacha20', key, Buffer.alloc(16));
  const zero = Buffer.alloc(8192);
  let words = new Uint32Array(0);
  let at = 0;
  return () => {
    if (at >= words.length) {
      const block = cipher.update(zero);
      words = new Uint32Array(block.buffer.slice(block.byteOffset, block.byteOffset + block.byteLength));
      at = 0;
    }
    const hi = words[at++]! >>> 5;
    const lo = words[at++]! >>> 6;
    return (hi * 67108864 + lo) / 9007199254740992;
  };
}

let shared: Uniform | undefined;
function defaultUniform(): Uniform {
  shared ??= secureUniform();
  return shared;
}

/** `n` independent N(0, std^2) draws. */
export function gaussianNoise(n: number, std: number, uniform: Uniform = defaultUniform()): Float64Array {
  if (!(std >= 0)) throw new RangeError(`noise standard deviation must be >= 0, got ${std}`);
  const out = new Float64Array(n);
  if (std === 0) return out;
  for (let i = 0; i < n; i += 2) {
    let u = uniform();
    while (u === 0) u = uniform();
    const r = Math.sqrt(-2 * Math.log(u)) * std;
    const t = 2 * Math.PI * uniform();
    out[i] = r * Math.cos(t);
    if (i + 1 < n) out[i + 1] = r * Math.sin(t);
  }
  return out;
}

/**
 * One Poisson(mu) draw. Small means multiply uniforms (Knuth); from mu >= 10 the transformed rejection with
 * squeeze of Hörmann 1993 ("The transformed rejection method for generating Poisson random variables"), which is
 * exact and takes O(1) uniforms whatever mu is.
 */
export function poisson(mu: number, uniform: Uniform = defaultUniform()): number {
  if (!(mu >= 0) || !Number.isFinite(mu)) throw new RangeError(`Poisson mean must be finite and >= 0, got ${mu}`);
  if (mu === 0) return 0;
  if (mu < 10) {
    const limit = Math.exp(-mu);
    let k = 0;
    let p = uniform();
    while (p > limit) {
      k++;
      p *= uniform();
    }
    return k;
  }
  const smu = Math.sqrt(mu);
  const b = 0.931 + 2.53 * smu;
  const a = -0.059 + 0.02483 * b;
  const invAlpha = 1.1239 + 1.1328 / (b - 3.4);
  const vr = 0.9277 - 3.6224 / (b - 2);
  const logMu = Math.log(mu);
  for (;;) {
    const u = uniform() - 0.5;
    const v = uniform();
    const us = 0.5 - Math.abs(u);
    const k = Math.floor(((2 * a) / us + b) * u + mu + 0.43);
    if (us >= 0.07 && v <= vr) return k;
    if (k < 0 || (us < 0.013 && v > us)) continue;
    if (Math.log(v) + Math.log(invAlpha) - Math.log(a / (us * us) + b) <= -mu + k * logMu - logGamma(k + 1)) return k;
  }
}

/** `n` draws of symmetric Skellam noise with the given variance: Poisson(v/2) - Poisson(v/2), integers. */
export function skellamNoise(n: number, variance: number, uniform: Uniform = defaultUniform()): Int32Array {
  if (!(variance >= 0)) throw new RangeError(`Skellam variance must be >= 0, got ${variance}`);
  if (variance / 2 > 2 ** 40) throw new RangeError('Skellam variance too large for 32-bit aggregation');
  const out = new Int32Array(n);
  const mu = variance / 2;
  for (let i = 0; i < n; i++) out[i] = poisson(mu, uniform) - poisson(mu, uniform);
  return out;
}

/**
 * Adds Skellam noise of `variance` to a site's quantized update in place, modulo 2^32 (the ring secure aggregation
 * sums in). Each site adds its share of the total variance; the sum over sites then carries Skellam noise of the
 * total variance, because independent Skellam variables add up to a Skellam variable. Returns the same array.
 */
export function addSkellamMod32(values: Uint32Array, variance: number, uniform: Uniform = defaultUniform()): Uint32Array {
  const noise = skellamNoise(values.length, variance, uniform);
  for (let i = 0; i < values.length; i++) values[i] = (values[i]! + noise[i]!) >>> 0;
  return values;
}

/** Reads a sum modulo 2^32 back as signed integers (valid while the true sum lies in [-2^31, 2^31)). */
export function signedFromMod32(values: Uint32Array): Int32Array {
  return new Int32Array(values.buffer.slice(values.byteOffset, values.byteOffset + values.byteLength));
}
