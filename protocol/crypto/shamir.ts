/**
 * Shamir t-of-n secret sharing of byte strings, byte-wise over GF(2^8) (the AES field, x^8 + x^4 + x^3 + x + 1).
 * Each byte of the secret is the constant term of its own random polynomial of degree t - 1; a share is
 * `[x, y_0 .. y_{L-1}]` with x in 1..255. Any t shares give the secret by Lagrange interpolation at 0; any t - 1
 * shares are uniformly distributed whatever the secret (perfect secrecy), which tests/unit/secagg-crypto.test.ts
 * checks by enumeration. Byte-wise sharing of a 256-bit key keeps all 256 bits secret, unlike sharing a seed
 * squeezed into a small field.
 */
import { randomBytes } from 'node:crypto';

const EXP = new Uint8Array(510);
const LOG = new Uint8Array(256);
{
  let x = 1;
  for (let i = 0; i < 255; i++) {
    EXP[i] = x;
    LOG[x] = i;
    // multiply by the generator 3: x * 2 (with reduction) xor x
    let x2 = x << 1;
    if (x2 & 0x100) x2 ^= 0x11b;
    x = x2 ^ x;
  }
  for (let i = 255; i < 510; i++) EXP[i] = EXP[i - 255]!;
}

export function gfMul(a: number, b: number): number {
  if (a === 0 || b === 0) return 0;
  return EXP[LOG[a]! + LOG[b]!]!;
}

export function gfDiv(a: number, b: number): number {
  if (b === 0) throw new RangeError('division by zero in GF(256)');
  if (a === 0) return 0;
  return EXP[LOG[a]! + 255 - LOG[b]!]!;
}

/** Most shares one secret can have (distinct non-zero x in GF(256)). */
export const MAX_SHARES = 255;

export interface Share {
  x: number;
  y: Uint8Array;
}

/**
 * Splits `secret` into shares at the given x coordinates (distinct, 1..255), any `threshold` of which recover it.
 * `random(n)` supplies the polynomial coefficients (crypto-random by default; tests inject their own).
 */
export function split(secret: Uint8Array, threshold: number, xs: readonly number[], random: (n: number) => Uint8Array = (n) => new Uint8Array(randomBytes(n))): Share[] {
  if (!Number.isInteger(threshold) || threshold < 1) throw new RangeError('threshold must be a positive integer');
  if (xs.length < threshold) throw new RangeError(`need at least ${threshold} share holders, got ${xs.length}`);
  if (new Set(xs).size !== xs.length || xs.some((x) => !Number.isInteger(x) || x < 1 || x > MAX_SHARES)) {
    throw new RangeError('share x coordinates must be distinct integers in 1..255');
  }
  const L = secret.length;
  const coeffs = random(L * (threshold - 1));
  if (coeffs.length !== L * (threshold - 1)) throw new RangeError('random source returned the wrong length');
  return xs.map((x) => {
    const y = new Uint8Array(L);
    for (let b = 0; b < L; b++) {
      // Horner from the highest coefficient down to the secret byte.
      let acc = 0;
      for (let k = threshold - 2; k >= 0; k--) acc = gfMul(acc, x) ^ coeffs[b * (threshold - 1) + k]!;
      y[b] = gfMul(acc, x) ^ secret[b]!;
    }
    return { x, y };
  });
}

/** Recovers the secret from at least `threshold` shares with distinct x (uses the first `threshold`). */
export function combine(shares: readonly Share[], threshold: number): Uint8Array {
  if (shares.length < threshold) throw new RangeError(`need ${threshold} shares, got ${shares.length}`);
  const use = shares.slice(0, threshold);
  const xs = use.map((s) => s.x);
  if (new Set(xs).size !== xs.length || xs.some((x) => x < 1 || x > MAX_SHARES)) throw new RangeError('shares must have distinct x in 1..255');
  const L = use[0]!.y.length;
  if (use.some((s) => s.y.length !== L)) throw new RangeError('shares differ in length');
  // Lagrange basis at 0: l_i = prod_{j != i} x_j / (x_j - x_i), and subtraction is xor in GF(2^8).
  const basis = use.map((si, i) => {
    let num = 1;
    let den = 1;
    use.forEach((sj, j) => {
      if (i === j) return;
      num = gfMul(num, sj.x);
      den = gfMul(den, sj.x ^ si.x);
    });
    return gfDiv(num, den);
  });
  const out = new Uint8Array(L);
  for (let b = 0; b < L; b++) {
    let acc = 0;
    for (let i = 0; i < use.length; i++) acc ^= gfMul(basis[i]!, use[i]!.y[b]!);
    out[b] = acc;
  }
  return out;
}

/** Wire form of a share: x then y. */
export function encodeShare(s: Share): Uint8Array {
  const out = new Uint8Array(1 + s.y.length);
  out[0] = s.x;
  out.set(s.y, 1);
  return out;
}

export function decodeShare(bytes: Uint8Array): Share {
  if (bytes.length < 2 || bytes[0] === 0) throw new RangeError('malformed share');
  return { x: bytes[0]!, y: bytes.slice(1) };
}
