/**
 * Seeded randomness for simulations. Every random choice (partitions, faults, attacks) is drawn from a generator
 * seeded by the scenario seed and the names of what is being decided (site, round, stage), never from a shared
 * stream: a draw does not depend on the order in which other draws happened, so runs reproduce exactly.
 */
import { createHash } from 'node:crypto';
import type { Entropy } from '../protocol/crypto/entropy.ts';
import { ed25519KeyPairFromSeed } from '../protocol/crypto/identity.ts';
import { seededRandom } from '../site-agent/data/split.ts';

export type Rand = () => number;

/** FNV-1a (32 bit) over the parts joined with '|': a seed for one named decision. */
export function seedOf(...parts: (string | number)[]): number {
  let h = 0x811c9dc5;
  const s = parts.join('|');
  for (let i = 0; i < s.length; i++) {
    h ^= s.charCodeAt(i);
    h = Math.imul(h, 0x01000193) >>> 0;
  }
  return h >>> 0;
}

/** A uniform [0, 1) generator for one named decision. */
export function randFor(...parts: (string | number)[]): Rand {
  const r = seededRandom(seedOf(...parts));
  r(); // the first output of mulberry32 correlates with nearby seeds; skip it
  return r;
}

/** One uniform draw in [0, 1) for a named decision. */
export function uniform(...parts: (string | number)[]): number {
  return randFor(...parts)();
}

/** Standard normal (Box-Muller). */
export function normal(rand: Rand): number {
  const u = 1 - rand();
  const v = rand();
  return Math.sqrt(-2 * Math.log(u)) * Math.cos(2 * Math.PI * v);
}

/** Gamma(alpha, 1): Marsaglia & Tsang (2000), with the alpha < 1 boost `Gamma(alpha + 1) * U^(1 / alpha)`. */
export function gamma(rand: Rand, alpha: number): number {
  if (alpha < 1) return gamma(rand, alpha + 1) * Math.pow(1 - rand(), 1 / alpha);
  const d = alpha - 1 / 3;
  const c = 1 / Math.sqrt(9 * d);
  for (;;) {
    let x: number;
    let v: number;
    do {
      x = normal(rand);
      v = 1 + c * x;
    } while (v <= 0);
    v = v * v * v;
    const u = 1 - rand();
    if (Math.log(u) < 0.5 * x * x + d - d * v + d * Math.log(v)) return d * v;
  }
}

/** A draw from the symmetric Dirichlet(alpha, ..., alpha) over `k` outcomes. */
export function dirichlet(rand: Rand, alpha: number, k: number): number[] {
  const g = Array.from({ length: k }, () => gamma(rand, alpha));
  const sum = g.reduce((a, b) => a + b, 0);
  // alpha tiny: every gamma may underflow to 0; put everything on one outcome then.
  if (!(sum > 0)) return g.map((_, i) => (i === Math.floor(rand() * k) ? 1 : 0));
  return g.map((x) => x / sum);
}

/** Fisher-Yates shuffle of 0..n-1. */
export function permutation(n: number, rand: Rand): Int32Array {
  const p = Int32Array.from({ length: n }, (_, i) => i);
  for (let i = n - 1; i > 0; i--) {
    const j = Math.floor(rand() * (i + 1));
    const t = p[i]!;
    p[i] = p[j]!;
    p[j] = t;
  }
  return p;
}

/**
 * The seeded stand-in for the OS CSPRNG that the production coordinator and site agents accept for simulations
 * only (protocol/crypto/entropy.ts): stochastic rounding, DP noise and sampling, secure-aggregation session ids and
 * graphs. Each purpose gets its own key, SHA-256 of the seed and the purpose, so no draw depends on another's order.
 */
export function seededEntropy(seed: number): Entropy {
  return (purpose) => new Uint8Array(createHash('sha256').update(`cohort-sim-entropy-v1\n${seed}\n${purpose}`).digest());
}

/** A virtual site's Ed25519 identity, from the seed and its name (the same on every run). */
export function virtualIdentity(seed: number, site: string): { publicKey: Uint8Array; secretKey: Uint8Array } {
  return ed25519KeyPairFromSeed(new Uint8Array(createHash('sha256').update(`cohort-sim-identity-v1\n${seed}\n${site}`).digest()));
}
