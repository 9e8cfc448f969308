/**
 * The randomness that shapes a result but is not a secret's strength: stochastic rounding of secure-aggregation
 * updates, differential-privacy noise and sampling, secure-aggregation session ids and neighbour graphs. Code that
 * draws it asks an `Entropy` for a 32-byte key per named purpose.
 *
 * Production always uses `osEntropy` (the OS CSPRNG; the purpose is ignored). Simulations inject a source derived
 * from the scenario seed (simulations/rng.ts) so that a scenario reproduces bit for bit; a seeded source makes DP
 * noise predictable, so it must never reach a real site or coordinator. Mask keys, self-mask seeds and Shamir
 * polynomials never come from here: they always use the CSPRNG (masks cancel in the sum, so results do not
 * depend on them).
 */
import { randomBytes } from 'node:crypto';

/** A 32-byte key for the named purpose. */
export type Entropy = (purpose: string) => Uint8Array;

export const osEntropy: Entropy = () => new Uint8Array(randomBytes(32));
