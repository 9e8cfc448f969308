/**
 * The privacy accountant: Rényi differential privacy (RDP, Mironov 2017) of the mechanisms Cohort runs, composed
 * over rounds and converted to (epsilon, delta). Sites and the coordinator both use this file, so their numbers
 * agree to the last bit.
 *
 * - Poisson-subsampled Gaussian mechanism (DP-SGD steps, client-level rounds): the exact RDP of Mironov, Talwar
 *   and Zhang 2019 ("Rényi Differential Privacy of the Sampled Gaussian Mechanism", arXiv:1908.10530, Sec. 3.3),
 *   for integer orders (a finite binomial sum) and fractional orders (two convergent series split at z0), summed
 *   in log space.
 * - Skellam mechanism (distributed integer noise under secure aggregation): Agarwal, Kairouz and Liu 2021 ("The
 *   Skellam Mechanism for Differentially Private Federated Learning", Theorem 3.5 and Corollary 3.6).
 * - RDP to (epsilon, delta): the conversion of Balle et al. 2020 (Theorem 21) / Canonne, Kamath and Steinke 2020
 *   (Proposition 12): eps = rdp + log1p(-1/a) - log(delta * a) / (a - 1), minimised over the orders. It is the one
 *   dp_accounting (TensorFlow Privacy) and Opacus use; with their default orders this file reproduces their
 *   published test values (tests/unit/privacy-accountant.test.ts).
 *
 * Adjacency is add-or-remove-one (one record for record-level DP, one site's whole update for client-level DP).
 */
import { logAdd, logErfc, logSub } from './special.ts';

/** TensorFlow Privacy's orders (tensorflow_privacy/privacy/analysis/compute_dp_sgd_privacy_lib.py). */
export const TF_PRIVACY_ORDERS: readonly number[] = Object.freeze([
  1.25, 1.5, 1.75, 2, 2.25, 2.5, 3, 3.5, 4, 4.5, ...range(5, 64), 128, 256, 512,
]);

/** Opacus's RDPAccountant.DEFAULT_ALPHAS (opacus/accountants/rdp.py): 1.1 to 10.9 by 0.1, then 12 to 63. */
export const OPACUS_ORDERS: readonly number[] = Object.freeze([
  ...Array.from({ length: 99 }, (_, x) => 1 + (x + 1) / 10), ...range(12, 64),
]);

/**
 * Cohort's orders: the union of both libraries' (so Cohort's epsilon is never above either's for the same
 * mechanism) plus 1024 for very small epsilons.
 */
export const DEFAULT_ORDERS: readonly number[] = Object.freeze(
  [...new Set([...TF_PRIVACY_ORDERS, ...OPACUS_ORDERS, 1024])].sort((a, b) => a - b),
);

function range(from: number, to: number): number[] {
  return Array.from({ length: to - from }, (_, i) => from + i);
}

// ---------------------------------------------------------------- sampled Gaussian mechanism

/** log A_alpha for an integer order: A = sum_i C(a, i) (1-q)^(a-i) q^i exp((i^2 - i) / (2 sigma^2)). */
function logAInt(q: number, sigma: number, alpha: number): number {
  const logq = Math.log(q);
  const log1mq = Math.log1p(-q);
  let logBinom = 0; // log C(alpha, 0)
  let logA = -Infinity;
  for (let i = 0; i <= alpha; i++) {
    if (i > 0) logBinom += Math.log((alpha - i + 1) / i);
    logA = logAdd(logA, logBinom + i * logq + (alpha - i) * log1mq + (i * i - i) / (2 * sigma * sigma));
  }
  return logA;
}

/**
 * log A_alpha for a fractional order (Mironov et al. 2019, Sec. 3.3): the integral splits at
 * z0 = sigma^2 log(1/q - 1) + 1/2, and each side is a convergent generalised binomial series whose coefficients
 * C(alpha, i) change sign past i = alpha + 1; terms are added or subtracted in log space by that sign.
 */
function logAFrac(q: number, sigma: number, alpha: number, series: FractionalSeries): number {
  const logq = Math.log(q);
  const log1mq = Math.log1p(-q);
  const z0 = sigma * sigma * Math.log(1 / q - 1) + 0.5;
  const s2 = Math.SQRT2 * sigma;
  let pos0 = -Infinity, neg0 = -Infinity, pos1 = -Infinity, neg1 = -Infinity;
  let logBinom = 0;
  let sign = 1;
  let last0 = Infinity, last1 = Infinity;
  for (let i = 0; i < 10_000; i++) {
    if (i > 0) {
      const f = (alpha - i + 1) / i;
      if (f < 0 && series === 'exact') sign = -sign;
      logBinom += Math.log(Math.abs(f));
    }
    const j = alpha - i;
    const s0 = logBinom + i * logq + j * log1mq + (i * i - i) / (2 * sigma * sigma) + Math.log(0.5) + logErfc((i - z0) / s2);
    const s1 = logBinom + j * logq + i * log1mq + (j * j - j) / (2 * sigma * sigma) + Math.log(0.5) + logErfc((z0 - j) / s2);
    if (sign > 0) {
      pos0 = logAdd(pos0, s0);
      pos1 = logAdd(pos1, s1);
    } else {
      neg0 = logAdd(neg0, s0);
      neg1 = logAdd(neg1, s1);
    }
    const total = logAdd(pos0, pos1);
    // Both series decrease geometrically once past their peak; stop when the new terms no longer matter.
    if (i > alpha + 1 && s0 < last0 && s1 < last1 && Math.max(s0, s1) < total - 40) break;
    last0 = s0;
    last1 = s1;
  }
  return logAdd(logSub(pos0, Math.min(pos0, neg0)), logSub(pos1, Math.min(pos1, neg1)));
}

/**
 * How a fractional order's series is summed. 'exact' keeps each term's sign (the series of Mironov et al. 2019, as
 * Opacus sums it). 'absolute' adds the terms' absolute values, as dp_accounting (TensorFlow Privacy) does through
 * log|Gamma|: an upper bound on the exact value, a little looser at small orders; offered to reproduce its numbers.
 */
export type FractionalSeries = 'exact' | 'absolute';

/**
 * RDP at `order` of one step of the Poisson-subsampled Gaussian mechanism: each record (or site) is included with
 * probability `q`, the sum of clipped contributions gets N(0, (noiseMultiplier * clip)^2) noise.
 */
export function rdpSampledGaussian(q: number, noiseMultiplier: number, order: number, series: FractionalSeries = 'exact'): number {
  if (!(q >= 0 && q <= 1)) throw new RangeError(`sampling rate must be in [0, 1], got ${q}`);
  if (!(noiseMultiplier >= 0)) throw new RangeError(`noise multiplier must be >= 0, got ${noiseMultiplier}`);
  if (!(order > 1)) throw new RangeError(`RDP order must be > 1, got ${order}`);
  if (q === 0) return 0;
  if (noiseMultiplier === 0 || order === Infinity) return Infinity;
  if (q === 1) return order / (2 * noiseMultiplier * noiseMultiplier);
  const logA = Number.isInteger(order) ? logAInt(q, noiseMultiplier, order) : logAFrac(q, noiseMultiplier, order, series);
  return logA / (order - 1);
}

// ---------------------------------------------------------------- Skellam mechanism

/**
 * RDP at `order` of one release of a sum with Skellam noise of total variance `variance` (the sum over sites of
 * their local Skellam noise), for a contribution whose integer (scaled, rounded) vector has L1 norm at most `l1`
 * and L2 norm at most `l2` (Agarwal et al. 2021, Theorem 3.5 with Sk(mu, mu), variance 2 mu):
 * eps(a) = a l2^2 / (2 v) + min(((2a - 1) l2^2 + 6 l1) / (4 v^2), 3 l1 / (2 v)).
 * The first term is the Gaussian's; the second is the price of integer noise, small once v >> l2^2.
 */
export function rdpSkellam(order: number, s: { l1: number; l2: number; variance: number }): number {
  if (!(order > 1)) throw new RangeError(`RDP order must be > 1, got ${order}`);
  if (!(s.variance > 0)) return Infinity;
  const { l1, l2, variance: v } = s;
  // The theorem is stated for integer orders; RDP never decreases with the order, so a fractional order takes the
  // bound of the next integer (valid, and what the reference implementations do by evaluating integers only).
  const a = Math.ceil(order);
  return (a * l2 * l2) / (2 * v) + Math.min(((2 * a - 1) * l2 * l2 + 6 * l1) / (4 * v * v), (3 * l1) / (2 * v));
}

/**
 * Sensitivities of a vector that was clipped to L2 norm `clip`, multiplied by `scale` and rounded to integers
 * coordinate-wise in `dim` dimensions. Rounding moves each coordinate by less than 1, so the L2 norm grows by at
 * most sqrt(dim); an integer vector has |x_i| <= x_i^2, so L1 <= L2^2, and L1 <= sqrt(dim) L2 always. (Kairouz et
 * al. 2021 give a tighter probabilistic bound for conditional randomized rounding; this one holds always.)
 */
export function roundedSensitivity(clip: number, scale: number, dim: number): { l1: number; l2: number } {
  const l2 = clip * scale + Math.sqrt(dim);
  return { l2, l1: Math.min(l2 * l2, Math.sqrt(dim) * l2) };
}

/** Kairouz, Liu and Steinke 2021's default: conditional rounding is accepted with probability at least 1 - beta. */
export const CONDITIONAL_ROUNDING_BETA = Math.exp(-0.5);

/**
 * Sensitivities of a vector clipped to L2 norm `clip`, scaled by `scale` and rounded by *conditional* randomized
 * rounding: stochastic rounding repeated until the rounded vector's L2 norm is within
 * min(c + sqrt(d), sqrt(c^2 + d/4 + sqrt(2 log(1/beta)) (c + sqrt(d)/2))), c = clip * scale (Kairouz, Liu and
 * Steinke 2021, "The Distributed Discrete Gaussian Mechanism", Sec. 4.1, also used by Agarwal et al. 2021). Each
 * attempt succeeds with probability at least 1 - beta, and the bound then holds always (the encoder rejects until
 * it does), so it is the L2 sensitivity the accountant charges.
 */
export function conditionalRoundedSensitivity(clip: number, scale: number, dim: number, beta = CONDITIONAL_ROUNDING_BETA): { l1: number; l2: number } {
  if (!(dim >= 1) || !Number.isInteger(dim)) throw new RangeError(`dimension must be a positive integer, got ${dim}`);
  if (!(beta > 0 && beta < 1)) throw new RangeError(`beta must be in (0, 1), got ${beta}`);
  const c = clip * scale;
  const sd = Math.sqrt(dim);
  const l2 = Math.min(c + sd, Math.sqrt(c * c + dim / 4 + Math.sqrt(2 * Math.log(1 / beta)) * (c + sd / 2)));
  return { l2, l1: l2 * Math.min(sd, l2) };
}

// ---------------------------------------------------------------- conversion

export interface EpsilonResult {
  epsilon: number;
  /** The order at which the bound is tightest (worth widening the orders if it is the first or the last). */
  order: number;
}

/**
 * Smallest epsilon over the orders such that RDP (order, rdp) implies (epsilon, delta)-DP, by the conversion of
 * Balle et al. 2020 (Thm 21) / Canonne et al. 2020 (Prop 12), with the KL bound delta <= sqrt(1 - exp(-rdp))
 * giving epsilon 0 when the RDP is that small (as dp_accounting does).
 */
export function epsilonFromRdp(orders: readonly number[], rdp: readonly number[], delta: number): EpsilonResult {
  if (orders.length !== rdp.length) throw new RangeError('orders and rdp differ in length');
  if (!(delta > 0 && delta < 1)) {
    if (delta === 0) return { epsilon: rdp.every((r) => r === 0) ? 0 : Infinity, order: 0 };
    throw new RangeError(`delta must be in (0, 1), got ${delta}`);
  }
  let best: EpsilonResult = { epsilon: Infinity, order: orders[0] ?? 0 };
  orders.forEach((a, k) => {
    const r = rdp[k]!;
    let eps: number;
    if (r < 0 || delta * delta + Math.expm1(-r) > 0) eps = 0;
    else if (a > 1.01) eps = r + Math.log1p(-1 / a) - Math.log(delta * a) / (a - 1);
    else eps = Infinity; // the bound is unstable as a -> 1, and useless there
    if (eps < best.epsilon) best = { epsilon: eps, order: a };
  });
  return { epsilon: Math.max(0, best.epsilon), order: best.order };
}

/** Smallest delta over the orders for a given epsilon (the same conversion, solved for delta). */
export function deltaFromRdp(orders: readonly number[], rdp: readonly number[], epsilon: number): { delta: number; order: number } {
  if (orders.length !== rdp.length) throw new RangeError('orders and rdp differ in length');
  if (!(epsilon >= 0)) throw new RangeError(`epsilon must be >= 0, got ${epsilon}`);
  let best = { logDelta: Infinity, order: orders[0] ?? 0 };
  orders.forEach((a, k) => {
    const r = rdp[k]!;
    let logDelta = r <= 0 ? -Infinity : 0.5 * Math.log1p(-Math.exp(-r));
    if (a > 1.01) logDelta = Math.min(logDelta, (a - 1) * (r - epsilon + Math.log1p(-1 / a)) - Math.log(a));
    if (logDelta < best.logDelta) best = { logDelta, order: a };
  });
  return { delta: Math.min(1, Math.exp(best.logDelta)), order: best.order };
}

// ---------------------------------------------------------------- events and composition

/** One kind of release, repeated `steps` times. */
export type PrivacyEvent =
  | { kind: 'sampled-gaussian'; q: number; noiseMultiplier: number; steps: number }
  | { kind: 'skellam'; l1: number; l2: number; variance: number; steps: number };

/** RDP of an event (all its steps) at every order. */
export function rdpOf(event: PrivacyEvent, orders: readonly number[] = DEFAULT_ORDERS, series: FractionalSeries = 'exact'): number[] {
  if (!(event.steps >= 0)) throw new RangeError(`steps must be >= 0, got ${event.steps}`);
  if (event.steps === 0) return orders.map(() => 0);
  return perStep(event, orders, series).map((r) => event.steps * r);
}

// A site replays its whole budget file before each round: remember each mechanism's per-step RDP.
const memo = new Map<string, number[]>();
function perStep(event: PrivacyEvent, orders: readonly number[], series: FractionalSeries): number[] {
  const key = event.kind === 'sampled-gaussian'
    ? `g|${event.q}|${event.noiseMultiplier}|${series}|${orders.join(',')}`
    : `s|${event.l1}|${event.l2}|${event.variance}|${orders.join(',')}`;
  let r = memo.get(key);
  if (!r) {
    r = orders.map((a) => (event.kind === 'sampled-gaussian' ? rdpSampledGaussian(event.q, event.noiseMultiplier, a, series) : rdpSkellam(a, event)));
    if (memo.size > 256) memo.clear();
    memo.set(key, r);
  }
  return r;
}

/**
 * Composes privacy events: RDP adds up order by order, so rounds with different noise, sampling rates or step
 * counts compose exactly. Keep one accountant per (study, dataset) at a site.
 */
export class RdpAccountant {
  private readonly total: number[];
  private readonly log: PrivacyEvent[] = [];

  constructor(readonly orders: readonly number[] = DEFAULT_ORDERS) {
    if (orders.length === 0 || orders.some((a) => !(a > 1))) throw new RangeError('orders must be > 1');
    this.total = orders.map(() => 0);
  }

  compose(event: PrivacyEvent): this {
    const r = rdpOf(event, this.orders);
    r.forEach((v, k) => { this.total[k]! += v; });
    this.log.push({ ...event });
    return this;
  }

  /** The events composed so far, in order. */
  get events(): readonly PrivacyEvent[] {
    return this.log;
  }

  rdp(): number[] {
    return [...this.total];
  }

  epsilon(delta: number): EpsilonResult {
    if (this.log.length === 0) return { epsilon: 0, order: this.orders[0]! };
    return epsilonFromRdp(this.orders, this.total, delta);
  }

  /** Epsilon if `event` were composed too, without composing it (the budget check before a round). */
  epsilonIf(event: PrivacyEvent, delta: number): EpsilonResult {
    const r = rdpOf(event, this.orders);
    return epsilonFromRdp(this.orders, this.total.map((v, k) => v + r[k]!), delta);
  }
}

/** Epsilon of a list of events at `delta`. */
export function epsilonOf(events: readonly PrivacyEvent[], delta: number, orders: readonly number[] = DEFAULT_ORDERS): EpsilonResult {
  const acc = new RdpAccountant(orders);
  for (const e of events) acc.compose(e);
  return acc.epsilon(delta);
}

// ---------------------------------------------------------------- the inverse

export interface NoiseSearch {
  targetEpsilon: number;
  delta: number;
  /** Sampling rate per step. */
  q: number;
  steps: number;
  orders?: readonly number[];
  /**
   * Stop once epsilon is within this much below the target. Default 1e-9 (the exact multiplier); Opacus's
   * get_noise_multiplier uses 0.01 with the bracket [0, 20] halved, which this reproduces.
   */
  tolerance?: number;
  /** Gives up above this noise multiplier (the budget is then too small for this many steps). */
  maxNoiseMultiplier?: number;
}

/**
 * The smallest noise multiplier (to within `tolerance` in epsilon) whose `steps` subsampled Gaussian steps spend
 * at most `targetEpsilon` at `delta`: bisection on a bracket grown by doubling, since epsilon decreases
 * monotonically in the noise multiplier. The result always spends <= targetEpsilon.
 */
export function noiseMultiplierFor(s: NoiseSearch): number {
  const orders = s.orders ?? DEFAULT_ORDERS;
  return searchNoise((sigma) => epsilonOf([{ kind: 'sampled-gaussian', q: s.q, noiseMultiplier: sigma, steps: s.steps }], s.delta, orders).epsilon, s);
}

export interface SkellamNoiseSearch {
  targetEpsilon: number;
  delta: number;
  /** Releases (rounds). */
  steps: number;
  /** The mechanism at noise multiplier z: sensitivities of the scaled, rounded vector and the total variance. */
  mechanism: (z: number) => { l1: number; l2: number; variance: number };
  orders?: readonly number[];
  tolerance?: number;
  maxNoiseMultiplier?: number;
}

/**
 * The smallest noise multiplier z (total Skellam standard deviation over the rounded L2 sensitivity) whose `steps`
 * releases spend at most `targetEpsilon` at `delta`, by the same bisection. `mechanism` must make epsilon fall as
 * z grows (a larger z: a smaller sensitivity against the same noise, or more noise against the same sensitivity).
 */
export function skellamNoiseMultiplierFor(s: SkellamNoiseSearch): number {
  const orders = s.orders ?? DEFAULT_ORDERS;
  return searchNoise((z) => epsilonOf([{ kind: 'skellam', ...s.mechanism(z), steps: s.steps }], s.delta, orders).epsilon, s);
}

function searchNoise(eps: (z: number) => number, s: { targetEpsilon: number; steps: number; tolerance?: number; maxNoiseMultiplier?: number }): number {
  const tol = s.tolerance ?? 1e-9;
  const max = s.maxNoiseMultiplier ?? 1e6;
  if (!(s.targetEpsilon > 0)) throw new RangeError(`target epsilon must be > 0, got ${s.targetEpsilon}`);
  let lo = 0;
  let hi = 10;
  let epsHi = Infinity;
  while (epsHi > s.targetEpsilon) {
    hi *= 2;
    if (hi > max) throw new RangeError(`no noise multiplier up to ${max} reaches epsilon ${s.targetEpsilon} in ${s.steps} steps`);
    epsHi = eps(hi);
  }
  while (s.targetEpsilon - epsHi > tol && hi - lo > 1e-12 * hi) {
    const mid = (lo + hi) / 2;
    const e = eps(mid);
    if (e < s.targetEpsilon) {
      hi = mid;
      epsHi = e;
    } else {
      lo = mid;
    }
  }
  return hi;
}
