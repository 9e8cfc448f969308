/**
 * Client-level differential privacy with distributed integer noise under secure aggregation (`client-distributed`):
 * the Skellam mechanism of Agarwal, Kairouz and Liu 2021 ("The Skellam Mechanism for Differentially Private
 * Federated Learning"). Each site clips its update to L2 norm `clip`, scales it by `scale`, rounds it to integers by
 * conditional randomized rounding, and adds its share of Skellam noise before masking; secure aggregation sums the
 * lanes modulo 2^32, and the sum carries Skellam noise of the total variance. The coordinator divides the noisy sum
 * by `scale` and the number of survivors. plan.ts chooses the parameters; this file encodes, decodes and bounds.
 *
 * Lane layout (`d` model parameters, `d + 2` lanes, the same length as an ordinary training vector):
 *   lanes 0..d-1  round(scale * clip_L2(delta)) + Skellam noise of variance siteVariance
 *   lane d        0 (the training loss is a function of the data that no noise covers: it does not leave)
 *   lane d+1      1 (every site counts once: see docs/privacy.md, "Weighting")
 *
 * No lane can wrap: the scale maps the clip to at most 2^(bits-1) - sqrt(d), so the rounded vector's L2 norm, and
 * with it every coordinate, stays within 2^(bits-1); the noise stays within `headroom` except with probability
 * below 2^-40 per vector (the site then drops out of the round with COHORT_ERR_SECAGG_OVERFLOW rather than send
 * it); and `n * (2^(bits-1) + headroom) < 2^31` is checked at study creation, by every site and by the
 * coordinator every round.
 */
import { CohortError } from '../errors.ts';
import { secureUniform, skellamNoise, type Uniform } from './noise.ts';

/** Each site's noise exceeds its headroom in some lane with probability at most 2^-TAIL_BITS. */
export const TAIL_BITS = 40;

/** What the encoder and decoder need of a round's plan (plan.ts, `DistributedRoundPlan`). */
export interface DistributedEncoding {
  /** L2 clip of the update. */
  clip: number;
  /** Value lanes. */
  dim: number;
  /** Integer units per unit of the model's weights. */
  scale: number;
  /** L2 bound of the rounded vector (the rounding is repeated until it holds). */
  l2: number;
  /** Variance of the Skellam noise this site adds to each value lane. */
  siteVariance: number;
  /** Bound on one site's noise in any lane (besides the 2^-40 tail). */
  headroom: number;
}

/**
 * The smallest integer h such that one site's noise, Skellam with variance `siteVariance` in each of `dim` lanes,
 * exceeds h in absolute value in some lane with probability at most 2^-TAIL_BITS. Chernoff: for X = P1 - P2 with
 * P1, P2 ~ Poisson(mu), E exp(tX) = exp(2 mu (cosh t - 1)), so P(X >= h) <= exp(-I(h)) with
 * I(h) = h asinh(h / 2mu) - 2mu (sqrt(1 + (h / 2mu)^2) - 1); union bound over both tails and all lanes.
 */
export function skellamHeadroom(siteVariance: number, dim: number, tailBits = TAIL_BITS): number {
  if (!(siteVariance >= 0) || !Number.isFinite(siteVariance)) throw new RangeError(`site variance must be finite and >= 0, got ${siteVariance}`);
  if (siteVariance === 0) return 0;
  const mu = siteVariance / 2;
  const need = Math.log(2 * dim) + tailBits * Math.LN2;
  const rate = (h: number) => {
    const x = h / (2 * mu);
    // sqrt(1 + x^2) - 1 written without cancellation for small x (large variances).
    return 2 * mu * (x * Math.asinh(x) - (x * x) / (Math.sqrt(1 + x * x) + 1));
  };
  let hi = Math.max(1, Math.sqrt(siteVariance));
  while (rate(hi) < need) hi *= 2;
  let lo = 0;
  while (hi - lo > 1) {
    const mid = Math.floor((lo + hi) / 2);
    if (rate(mid) >= need) hi = mid;
    else lo = mid;
  }
  return hi;
}

/**
 * Encodes a site's update for a `client-distributed` round: clip to L2 `clip` (in float64, whatever clipping came
 * before), scale, conditional stochastic rounding, Skellam noise, then the loss lane (0) and the weight lane (1).
 * Randomness for rounding and noise comes from the OS CSPRNG; tests may pass their own uniform source.
 */
export function encodeDistributedLanes(delta: ArrayLike<number>, p: DistributedEncoding, uniform: Uniform = secureUniform()): Int32Array {
  const d = p.dim;
  if (delta.length !== d) throw new CohortError('COHORT_ERR_TENSOR_SHAPE', `update has ${delta.length} values; the round expects ${d}`);
  let sq = 0;
  for (let i = 0; i < d; i++) {
    const v = delta[i]!;
    if (!Number.isFinite(v)) throw new CohortError('COHORT_ERR_TENSOR_NONFINITE', `update has a non-finite value at ${i}`);
    sq += v * v;
  }
  const f = Math.min(1, p.clip / Math.max(Math.sqrt(sq), 1e-300)) * p.scale;
  const y = new Float64Array(d);
  for (let i = 0; i < d; i++) y[i] = delta[i]! * f;
  const out = new Int32Array(d + 2);
  const bound = p.l2 * p.l2;
  // Each attempt meets the bound with probability >= 1 - beta (about 0.39); 200 failures in a row is below 2^-140.
  let accepted = false;
  for (let attempt = 0; attempt < 200 && !accepted; attempt++) {
    let norm = 0;
    for (let i = 0; i < d; i++) {
      const fl = Math.floor(y[i]!);
      const q = uniform() < y[i]! - fl ? fl + 1 : fl;
      out[i] = q;
      norm += q * q;
    }
    accepted = norm <= bound;
  }
  if (!accepted) throw new CohortError('COHORT_ERR_DP_INVALID', 'conditional rounding did not meet its norm bound in 200 attempts');
  if (p.siteVariance > 0) {
    const noise = skellamNoise(d, p.siteVariance, uniform);
    for (let i = 0; i < d; i++) out[i] = out[i]! + noise[i]!;
  }
  out[d] = 0;
  out[d + 1] = 1;
  return out;
}

/** One site's lanes within their bounds: values within 2^(bits-1) + headroom, loss lane 0, weight lane 1. */
export function checkDistributedLanes(lanes: Int32Array, p: DistributedEncoding, laneBound: number): void {
  const d = p.dim;
  const bound = laneBound + p.headroom;
  for (let i = 0; i < d; i++) {
    const v = lanes[i]!;
    if (v > bound || v < -bound) throw new CohortError('COHORT_ERR_SECAGG_OVERFLOW', `lane ${i} holds ${v}, beyond the bound ${bound} (noise beyond its headroom: probability below 2^-${TAIL_BITS}); this site sits the round out`);
  }
  if (lanes[d] !== 0 || lanes[d + 1] !== 1) throw new CohortError('COHORT_ERR_SECAGG_OVERFLOW', 'loss and weight lanes must hold 0 and 1 under client-distributed DP');
}

/**
 * The mean update from the unmasked sum of `survivors` sites' lanes: value lanes over scale * survivors. The
 * weight lane must equal the number of survivors (each site puts 1 there), or unmasking went wrong.
 */
export function decodeDistributedLanes(sum: Int32Array, p: Pick<DistributedEncoding, 'dim' | 'scale'>, survivors: number): { meanDelta: Float64Array; totalWeight: number } {
  const d = p.dim;
  if (sum.length !== d + 2) throw new CohortError('COHORT_ERR_TENSOR_SHAPE', `sum has ${sum.length} lanes; ${d + 2} expected`);
  if (sum[d + 1] !== survivors || sum[d] !== 0) {
    throw new CohortError('COHORT_ERR_SECAGG_BAD_SHARE', `unmasked weight lane ${sum[d + 1]} and loss lane ${sum[d]} do not match ${survivors} sites under client-distributed DP`);
  }
  const k = 1 / (p.scale * survivors);
  const meanDelta = new Float64Array(d);
  for (let i = 0; i < d; i++) meanDelta[i] = sum[i]! * k;
  return { meanDelta, totalWeight: survivors };
}
