/**
 * From a study's `privacy.dp` settings to the noise each round applies and the privacy event it costs. Sites and
 * the coordinator call the same functions, so they agree on every noise multiplier and every epsilon.
 */
import { CohortError } from '../errors.ts';
import type { DpSettings } from '../messages.ts';
import {
  CONDITIONAL_ROUNDING_BETA, conditionalRoundedSensitivity, noiseMultiplierFor, skellamNoiseMultiplierFor, type PrivacyEvent,
} from './accountant.ts';
import { skellamHeadroom, type DistributedEncoding } from './distributed.ts';

/** Steps per epoch and sampling rate of DP-SGD with Poisson sampling (site-agent/training/dp-sgd.ts does this). */
export function dpSgdSchedule(n: number, batchSize: number, epochs: number): { sampleRate: number; steps: number } {
  if (n <= 0) return { sampleRate: 0, steps: 0 };
  return { sampleRate: Math.min(1, batchSize / n), steps: epochs * Math.ceil(n / batchSize) };
}

export interface RecordRoundPlan {
  /** Noise multiplier DP-SGD applies (to the clip). */
  noiseMultiplier: number;
  /** Noise multiplier the accountant charges: half the applied one with microbatches (2x sensitivity). */
  accountedNoiseMultiplier: number;
  sampleRate: number;
  steps: number;
  event: PrivacyEvent;
}

const cache = new Map<string, number>();
function cachedNoise(key: string, f: () => number): number {
  let v = cache.get(key);
  if (v === undefined) {
    v = f();
    if (cache.size > 1000) cache.clear();
    cache.set(key, v);
  }
  return v;
}

/**
 * One round of record-level DP-SGD at a site with `n` training examples. With `targetEpsilon` and no noise
 * multiplier, the site calibrates the noise so that all the study's rounds together spend exactly the target.
 */
export function recordRoundPlan(dp: DpSettings, t: { batchSize: number; localEpochs: number; rounds: number }, n: number): RecordRoundPlan {
  const { sampleRate, steps } = dpSgdSchedule(n, t.batchSize, t.localEpochs);
  const factor = dp.microbatch > 1 ? 2 : 1;
  let accounted: number;
  if (dp.noiseMultiplier !== undefined) accounted = dp.noiseMultiplier / factor;
  else {
    const target = dp.targetEpsilon!;
    accounted = cachedNoise(`r|${target}|${dp.delta}|${sampleRate}|${steps * t.rounds}`, () =>
      noiseMultiplierFor({ targetEpsilon: target, delta: dp.delta, q: sampleRate, steps: steps * t.rounds }));
  }
  return {
    noiseMultiplier: accounted * factor, accountedNoiseMultiplier: accounted, sampleRate, steps,
    event: { kind: 'sampled-gaussian', q: sampleRate, noiseMultiplier: accounted, steps },
  };
}

export interface ClientRoundPlan {
  /** The total noise multiplier z the accountant charges per round. */
  noiseMultiplier: number;
  /** Noise multiplier on the sum of updates: z itself, or larger when adaptive clipping spends part of z. */
  updateNoiseMultiplier: number;
  /** Noise (in counts) on the number of sites within the clip; 0 without adaptive clipping. */
  bitNoiseStd: number;
  event: PrivacyEvent;
}

/**
 * One round of client-level DP with every site taking part (sampling rate 1: a cross-silo study has no crowd of
 * clients to hide in, so no amplification is claimed). With adaptive clipping the clipped-count query takes part of
 * the budget: z^-2 = sigmaUpdate^-2 + (2 sigmaBit)^-2 (Andrew et al. 2021, Sec. 3.1), the bit sum having
 * sensitivity 1/2 once centred.
 */
export function clientRoundPlan(dp: DpSettings, rounds: number, expectedSites: number): ClientRoundPlan {
  let z: number;
  if (dp.noiseMultiplier !== undefined) z = dp.noiseMultiplier;
  else {
    const target = dp.targetEpsilon!;
    z = cachedNoise(`c|${target}|${dp.delta}|${rounds}`, () => noiseMultiplierFor({ targetEpsilon: target, delta: dp.delta, q: 1, steps: rounds }));
  }
  let update = z;
  let bit = 0;
  if (dp.adaptiveClipping && z > 0) {
    // The paper's default (expected clients / 20) would eat the whole budget with a handful of hospitals; never
    // let the bit query take more than a quarter of the precision.
    bit = dp.adaptiveClipping.bitNoiseMultiplier ?? Math.max(expectedSites / 20, z);
    const rest = z ** -2 - (2 * bit) ** -2;
    if (!(rest > 0)) throw new RangeError(`bit noise ${bit} is too small for noise multiplier ${z}: need 2 * bitNoise > noiseMultiplier`);
    update = rest ** -0.5;
  }
  return { noiseMultiplier: z, updateNoiseMultiplier: update, bitNoiseStd: bit, event: { kind: 'sampled-gaussian', q: 1, noiseMultiplier: z, steps: 1 } };
}

// ---------------------------------------------------------------- distributed (Skellam): client and record level

/** Largest total noise standard deviation, in integer units: keeps each Poisson mean far below 2^40. */
const MAX_NOISE_STD = 2 ** 20;

/**
 * The Skellam mechanism of a `client-distributed` or `record-distributed` study: the same every round, whoever
 * takes part. At client level the unit the sensitivity bounds is one site's update; at record level it is one
 * record's clipped gradient, and a site's lanes hold the sum of up to `contributions` such units.
 */
export interface DistributedMechanism {
  level: 'client' | 'record';
  /** Units one site's lanes may sum: 1 at client level, the session's maxWeight (records per site) at record level. */
  contributions: number;
  /** L2 clip of each unit (a site's update, or one record's gradient). */
  clip: number;
  /** Model parameters (value lanes). */
  dim: number;
  /** Secure aggregation's quantizationBits: one site's rounded lanes stay within 2^(bits-1) each. */
  bits: number;
  /** Integer units per unit of the model's weights (client level) or of the gradient (record level). */
  scale: number;
  /** Sensitivities of one scaled, conditionally rounded unit (the accountant's D2 and D1). */
  l2: number;
  l1: number;
  /** Total noise standard deviation over l2. */
  noiseMultiplier: number;
  /** Total Skellam variance the released sum is guaranteed to carry, in integer units. */
  variance: number;
  /** Standard deviation of that noise on the released sum, in the model's units (sqrt(variance) / scale). */
  noiseStd: number;
  /** One round's privacy event. */
  event: PrivacyEvent;
}

/** A round of a distributed-noise study: the mechanism and how its noise is split among the sites. */
export interface DistributedRoundPlan extends DistributedMechanism, DistributedEncoding {
  /** Sites the noise is split over: the secure-aggregation threshold, the fewest whose sum can be unmasked. */
  noiseSites: number;
}

/**
 * The scale that makes the rounded sensitivity `target`: conditionalRoundedSensitivity is min(b1, b2) of two
 * increasing functions of c = clip * scale, so it reaches `target` at the larger of their two roots.
 */
function scaledClipFor(target: number, dim: number): number {
  const sd = Math.sqrt(dim);
  const k = Math.sqrt(2 * Math.log(1 / CONDITIONAL_ROUNDING_BETA));
  const c1 = target - sd;
  const c2 = (-k + Math.sqrt(k * k - 4 * (dim / 4 + (k * sd) / 2 - target * target))) / 2;
  return Math.max(c1, c2);
}

/** `client` for client-distributed, `record` for record-distributed; anything else has no distributed mechanism. */
export function distributedLevel(dp: Pick<DpSettings, 'mode'> | undefined): 'client' | 'record' | undefined {
  return dp?.mode === 'client-distributed' ? 'client' : dp?.mode === 'record-distributed' ? 'record' : undefined;
}

/**
 * The mechanism for `dim` parameters and `bits` of lane: total noise standard deviation S = min(2^(bits-4), 2^20)
 * integer units, and the scale chosen so that the rounded sensitivity is S / z, capped at 2^(bits-1) / contributions
 * so that no site's rounded lanes (a sum of at most `contributions` rounded units) can exceed the lane bound.
 * Rounding then adds at most 1/4 of variance per lane and unit against S^2 of noise. With `targetEpsilon` and no
 * noise multiplier, z is the smallest that spends the target over all rounds by the Skellam accountant. Record
 * level: every record of every site is in every round's sum (full batch, no sampling), so the rounds compose
 * without amplification, exactly as at client level.
 */
export function distributedMechanism(dp: DpSettings, rounds: number, dim: number, bits: number, contributions = 1): DistributedMechanism {
  const level = distributedLevel(dp);
  if (!level) throw new CohortError('COHORT_ERR_DP_INVALID', `mode ${dp.mode} adds no distributed noise`);
  if (!(Number.isInteger(contributions) && contributions >= 1)) throw new CohortError('COHORT_ERR_DP_INVALID', `records per site must be a positive integer, got ${contributions}`);
  if (level === 'client' && contributions !== 1) throw new CohortError('COHORT_ERR_DP_INVALID', 'client-distributed DP counts every site once');
  const lane = 2 ** (bits - 1);
  const S = Math.min(2 ** (bits - 4), MAX_NOISE_STD);
  const sensitivity = (z: number) => Math.min(S / z, lane / contributions);
  const mechanism = (z: number) => {
    const l2 = sensitivity(z);
    return { l2, l1: l2 * Math.min(Math.sqrt(dim), l2), variance: (z * l2) ** 2 };
  };
  let z: number;
  if (dp.noiseMultiplier !== undefined) z = dp.noiseMultiplier;
  else {
    const target = dp.targetEpsilon!;
    try {
      z = cachedNoise(`d|${target}|${dp.delta}|${rounds}|${dim}|${bits}|${contributions}`, () => skellamNoiseMultiplierFor({ targetEpsilon: target, delta: dp.delta, steps: rounds, mechanism }));
    } catch (err) {
      throw new CohortError('COHORT_ERR_DP_INVALID', err instanceof Error ? err.message : String(err));
    }
  }
  if (!(z > 0)) throw new CohortError('COHORT_ERR_DP_INVALID', `${dp.mode} DP needs noise: give a noise multiplier above 0 or a target epsilon`);
  const c = scaledClipFor(sensitivity(z), dim);
  // Rounding must not swamp the update: its error (norm up to sqrt(dim)) stays below the scaled clip.
  if (!(c >= Math.sqrt(dim))) {
    const fix = level === 'record' && lane / contributions < S / z
      ? `lower privacy.secureAggregation.maxWeight (records per site, now ${contributions}) or raise privacy.secureAggregation.quantizationBits`
      : 'raise privacy.secureAggregation.quantizationBits';
    throw new CohortError('COHORT_ERR_DP_INVALID', `${dim} parameters are too many for ${dp.mode} DP at ${bits} quantization bits and noise multiplier ${z}${level === 'record' ? ` with up to ${contributions} records per site` : ''}: rounding would outweigh the ${level === 'record' ? 'gradient' : 'update'}; ${fix}`, { dim, bits, noiseMultiplier: z, contributions });
  }
  const scale = c / dp.clip;
  const { l1, l2 } = conditionalRoundedSensitivity(dp.clip, scale, dim);
  const variance = (z * l2) ** 2;
  return {
    level, contributions, clip: dp.clip, dim, bits, scale, l1, l2, noiseMultiplier: z, variance, noiseStd: Math.sqrt(variance) / scale,
    event: { kind: 'skellam', l1, l2, variance, steps: 1 },
  };
}

/**
 * One round of a distributed-noise study over a session of `sites` sites with secure-aggregation threshold
 * `threshold`. Each site adds variance `variance / threshold`: no sum of fewer than `threshold` sites can be
 * unmasked, so every released sum carries at least the planned variance, however many sites drop out; when more
 * survive, the sum is noisier than planned and the accountant, charging only the guaranteed variance, overstates
 * the spend. `tailDim` (default `dim`) sets the lanes the headroom's union bound covers. Record level needs
 * `maxWeight`, the session's bound on any site's records.
 */
export function distributedRoundPlan(dp: DpSettings, rounds: number, s: { dim: number; sites: number; threshold: number; bits: number; tailDim?: number; maxWeight?: number }): DistributedRoundPlan {
  if (dp.adaptiveClipping) throw new CohortError('COHORT_ERR_DP_UNSUPPORTED', `adaptive clipping is not available with ${dp.mode} DP (its clipped-count query would need its own noisy lane); set a fixed clip`);
  if (!(s.threshold >= 1 && s.threshold <= s.sites)) throw new CohortError('COHORT_ERR_DP_INVALID', `threshold ${s.threshold} is not within 1..${s.sites}`);
  const record = distributedLevel(dp) === 'record';
  if (record && s.maxWeight === undefined) throw new CohortError('COHORT_ERR_DP_INVALID', 'record-distributed DP needs the session\'s bound on records per site (maxWeight)');
  const m = distributedMechanism(dp, rounds, s.dim, s.bits, record ? s.maxWeight : 1);
  const siteVariance = m.variance / s.threshold;
  return { ...m, noiseSites: s.threshold, siteVariance, headroom: skellamHeadroom(siteVariance, s.tailDim ?? s.dim) };
}
