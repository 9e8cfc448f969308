/**
 * Client-level differential privacy with distributed integer noise under secure aggregation (`client-distributed`):
 * the Skellam mechanism of Agarwal, Kairouz and Liu 2021 ("The Skellam Mechanism for Differentially Private
 * Federated Learning"). Each site clips its update to L2 norm `clip`, scales it by `scale`, rounds it to integers by
 * conditional randomized rounding, and adds its share of Skellam noise before masking; secure aggregation sums the
 * lanes modulo 2^32, and the sum carries Skellam noise of the total variance. The coordinator divides the noisy sum
 * by `scale` and the number of survivors. plan.ts chooses the parameters; this file encodes, decodes and bounds.
 * Record level (`record-distributed`, RecordLaneEncoder below) rounds each record's clipped gradient the same way
 * and sums them, so the sensitivity is one record's; the coordinator takes a gradient step from the noisy sum.
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
 * Conditional randomized rounding of `y` into `out[0..y.length)`: stochastic rounding (each coordinate up with
 * probability its fractional part), repeated until the rounded vector's L2 norm is within `l2`. Each attempt meets
 * the bound with probability >= 1 - beta (about 0.39); 200 failures in a row is below 2^-140.
 */
export function conditionalRound(y: ArrayLike<number>, l2: number, uniform: Uniform, out: Int32Array): void {
  const d = y.length;
  const bound = l2 * l2;
  for (let attempt = 0; attempt < 200; attempt++) {
    let norm = 0;
    for (let i = 0; i < d; i++) {
      const fl = Math.floor(y[i]!);
      const q = uniform() < y[i]! - fl ? fl + 1 : fl;
      out[i] = q;
      norm += q * q;
    }
    if (norm <= bound) return;
  }
  throw new CohortError('COHORT_ERR_DP_INVALID', 'conditional rounding did not meet its norm bound in 200 attempts');
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
  conditionalRound(y, p.l2, uniform, out);
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

// ---------------------------------------------------------------- record level (`record-distributed`)

/**
 * A site's lanes for a `record-distributed` round: one full-batch DP gradient step over every site's records, the
 * noise split among the sites. Each record's gradient (at the global model) is clipped to L2 `clip` in float64,
 * scaled, and rounded by conditional randomized rounding on its own, so every record's integer vector has L2 norm
 * at most `l2` (and L1 at most `l1`); the site sums them, adds its share of Skellam noise, and puts 0 in the loss
 * lane and its record count in the weight lane. Adding or removing one record changes the site's integer sum, and
 * so the unmasked sum of all sites, by exactly one such vector: the sensitivity the accountant charges. At most
 * `contributions` (the session's maxWeight) records fit: the scale keeps `contributions * l2` within the lane.
 *
 * Lane layout (`d` model parameters, `d + 2` lanes):
 *   lanes 0..d-1  sum over the site's records of round(scale * clip_L2(gradient)) + Skellam noise of variance siteVariance
 *   lane d        0 (the training loss does not leave)
 *   lane d+1      the site's record count n (treated as public, as Opacus and TF Privacy treat the batch size)
 */
export class RecordLaneEncoder {
  private readonly sum: Float64Array;
  private readonly y: Float64Array;
  private readonly q: Int32Array;
  private n = 0;
  private done = false;

  constructor(private readonly p: DistributedEncoding & { contributions: number }, private readonly uniform: Uniform = secureUniform()) {
    this.sum = new Float64Array(p.dim);
    this.y = new Float64Array(p.dim);
    this.q = new Int32Array(p.dim);
  }

  /** Adds one record's gradient (clipped again here, in float64, whatever clipping came before). */
  add(gradient: ArrayLike<number>): void {
    const { dim: d } = this.p;
    if (this.done) throw new CohortError('COHORT_ERR_DP_INVALID', 'record lanes were already finished');
    if (gradient.length !== d) throw new CohortError('COHORT_ERR_TENSOR_SHAPE', `gradient has ${gradient.length} values; the round expects ${d}`);
    if (this.n >= this.p.contributions) {
      throw new CohortError('COHORT_ERR_SECAGG_OVERFLOW', `this site holds more than the session's ${this.p.contributions} records per site (privacy.secureAggregation.maxWeight); its sum could wrap a lane, so it sits the round out`);
    }
    let sq = 0;
    for (let i = 0; i < d; i++) {
      const v = gradient[i]!;
      if (!Number.isFinite(v)) throw new CohortError('COHORT_ERR_TENSOR_NONFINITE', `a record's gradient has a non-finite value at ${i}`);
      sq += v * v;
    }
    const f = Math.min(1, this.p.clip / Math.max(Math.sqrt(sq), 1e-300)) * this.p.scale;
    for (let i = 0; i < d; i++) this.y[i] = gradient[i]! * f;
    conditionalRound(this.y, this.p.l2, this.uniform, this.q);
    for (let i = 0; i < d; i++) this.sum[i]! += this.q[i]!;
    this.n++;
  }

  /** Records added so far. */
  get count(): number {
    return this.n;
  }

  /** The site's lanes: the rounded sum plus this site's share of the noise, loss lane 0, weight lane n. Once. */
  finish(): Int32Array {
    if (this.done) throw new CohortError('COHORT_ERR_DP_INVALID', 'record lanes were already finished');
    this.done = true;
    const d = this.p.dim;
    const out = new Int32Array(d + 2);
    const noise = this.p.siteVariance > 0 ? skellamNoise(d, this.p.siteVariance, this.uniform) : undefined;
    for (let i = 0; i < d; i++) out[i] = this.sum[i]! + (noise ? noise[i]! : 0);
    out[d] = 0;
    out[d + 1] = this.n;
    this.sum.fill(0);
    return out;
  }
}

/** One site's record-level lanes within their bounds: values within 2^(bits-1) + headroom, loss 0, count within 0..contributions. */
export function checkRecordLanes(lanes: Int32Array, p: DistributedEncoding & { contributions: number }, laneBound: number): void {
  const d = p.dim;
  const bound = laneBound + p.headroom;
  for (let i = 0; i < d; i++) {
    const v = lanes[i]!;
    if (v > bound || v < -bound) throw new CohortError('COHORT_ERR_SECAGG_OVERFLOW', `lane ${i} holds ${v}, beyond the bound ${bound} (noise beyond its headroom: probability below 2^-${TAIL_BITS}); this site sits the round out`);
  }
  if (lanes[d] !== 0 || !(lanes[d + 1]! >= 0 && lanes[d + 1]! <= p.contributions)) {
    throw new CohortError('COHORT_ERR_SECAGG_OVERFLOW', `under record-distributed DP the loss lane must hold 0 and the count lane 0..${p.contributions}`);
  }
}

/**
 * One server step from the unmasked sum of `survivors` sites' record lanes: the noisy sum of clipped gradients
 * over scale, divided by the total record count N (the weight lane: public, as the batch size is in DP-SGD), times
 * minus the learning rate. Returns it as the mean update FedAvg adds to the global model.
 */
export function decodeRecordLanes(sum: Int32Array, p: Pick<DistributedEncoding, 'dim' | 'scale'> & { contributions: number }, survivors: number, learningRate: number): { meanDelta: Float64Array; totalWeight: number } {
  const d = p.dim;
  if (sum.length !== d + 2) throw new CohortError('COHORT_ERR_TENSOR_SHAPE', `sum has ${sum.length} lanes; ${d + 2} expected`);
  const n = sum[d + 1]!;
  if (sum[d] !== 0 || !(n >= survivors && n <= survivors * p.contributions)) {
    throw new CohortError('COHORT_ERR_SECAGG_BAD_SHARE', `unmasked count lane ${n} and loss lane ${sum[d]} are impossible for ${survivors} sites of at most ${p.contributions} records under record-distributed DP`);
  }
  const k = -learningRate / (p.scale * n);
  const meanDelta = new Float64Array(d);
  for (let i = 0; i < d; i++) meanDelta[i] = sum[i]! * k;
  return { meanDelta, totalWeight: n };
}
