/**
 * From a study's `privacy.dp` settings to the noise each round applies and the privacy event it costs. Sites and
 * the coordinator call the same functions, so they agree on every noise multiplier and every epsilon.
 */
import type { DpSettings } from '../messages.ts';
import { noiseMultiplierFor, type PrivacyEvent } from './accountant.ts';

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
