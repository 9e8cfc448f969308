/**
 * Fixed-point encoding of a site's update for secure aggregation: clip, scale, stochastic rounding into signed
 * 32-bit lanes that add modulo 2^32. Stochastic rounding is unbiased, so the rounding errors of many sites
 * average out instead of piling up in one direction.
 *
 * Lane layout of a training update (`d` model parameters, `d + 2` lanes):
 *   lanes 0..d-1  clip(delta_i, -clip, clip) * (w / maxWeight) * 2^(bits-1) / clip, stochastically rounded
 *   lane d        clip(trainLoss, 0, LOSS_CLIP) * (w / maxWeight) * 2^(bits-1) / LOSS_CLIP, stochastically rounded
 *   lane d+1      w = min(numExamples, maxWeight), exact
 * Each site's value lanes stay within +-2^(bits-1) and its weight lane within maxWeight, so the sum of n sites
 * stays inside the signed 32-bit range (no wrap) as long as n * max(2^(bits-1), maxWeight) < 2^31;
 * `checkHeadroom` refuses anything else with COHORT_ERR_SECAGG_OVERFLOW. The unmasked sum divided by the summed
 * weight lane is the example-weighted mean, so example counts are folded in and no site's count is revealed.
 */
import { randomBytes } from 'node:crypto';
import { CohortError } from '../errors.ts';
import { uniformLanes } from './prg.ts';

/** Training losses are clipped to this before they are folded into their lane. */
export const LOSS_CLIP = 64;
/** Largest value a lane sum may reach without wrapping in the signed reading. */
const LANE_MAX = 2 ** 31 - 1;

export interface QuantizeParams {
  /** Per-coordinate clipping bound of the update (L-infinity). */
  clip: number;
  /** Each site's value lanes use 2^bits levels over [-clip, clip]. */
  bits: number;
  /** Example counts above this are capped; the weight of site s is min(n_s, maxWeight) / maxWeight. */
  maxWeight: number;
}

/** The largest magnitude one site's value lane can take: 2^(bits-1). */
export function laneBound(bits: number): number {
  return 2 ** (bits - 1);
}

/** Most sites whose lanes can be summed without wrapping, for these parameters plus `headroom` per lane. */
export function maxSites(p: Pick<QuantizeParams, 'bits' | 'maxWeight'>, headroom = 0): number {
  return Math.floor(LANE_MAX / Math.max(laneBound(p.bits) + headroom, p.maxWeight));
}

/**
 * Refuses, with COHORT_ERR_SECAGG_OVERFLOW, a configuration whose lane sum could wrap past 2^32 for `sites`
 * sites. `headroom` is what a transform of the quantized vector (integer DP noise) may add to each lane's bound.
 */
export function checkHeadroom(sites: number, p: Pick<QuantizeParams, 'bits' | 'maxWeight'>, headroom = 0): void {
  const limit = maxSites(p, headroom);
  if (sites > limit) {
    throw new CohortError('COHORT_ERR_SECAGG_OVERFLOW', `${sites} sites could wrap a 32-bit lane with ${p.bits} quantization bits and maxWeight ${p.maxWeight} (at most ${limit} sites); lower quantizationBits or maxWeight`, { sites, limit, bits: p.bits, maxWeight: p.maxWeight });
  }
}

/** Stochastic rounding of `x` with the uniform 32-bit draw `u`: floor(x) + 1 with probability frac(x). */
export function stochasticRound(x: number, u: number): number {
  const f = Math.floor(x);
  return (x - f) * 4294967296 > u ? f + 1 : f;
}

/**
 * Quantizes `values` into `out[offset..]`: clip to [-clip, clip], multiply by `factor` (a weight in [0, 1]),
 * scale so that `clip` maps to 2^(bits-1), round stochastically with the draws in `u`.
 */
export function quantizeInto(out: Int32Array, offset: number, values: ArrayLike<number>, clip: number, factor: number, bits: number, u: Uint32Array): void {
  if (!(factor >= 0 && factor <= 1)) throw new RangeError('factor must be in [0, 1]');
  const scale = (laneBound(bits) / clip) * factor;
  for (let i = 0; i < values.length; i++) {
    const v = values[i]!;
    if (!Number.isFinite(v)) throw new CohortError('COHORT_ERR_TENSOR_NONFINITE', `update has a non-finite value at ${i}`);
    const c = v > clip ? clip : v < -clip ? -clip : v;
    out[offset + i] = stochasticRound(c * scale, u[i]!);
  }
}

/** Encodes a training update (delta against the global model), its loss and its example count into lanes. */
export function encodeTrainingLanes(delta: ArrayLike<number>, trainLoss: number, numExamples: number, p: QuantizeParams, seed: Uint8Array = new Uint8Array(randomBytes(32))): Int32Array {
  if (!Number.isInteger(numExamples) || numExamples < 1) throw new RangeError('numExamples must be a positive integer');
  const d = delta.length;
  const w = Math.min(numExamples, p.maxWeight);
  const factor = w / p.maxWeight;
  const u = uniformLanes(seed, d + 1);
  const out = new Int32Array(d + 2);
  quantizeInto(out, 0, delta, p.clip, factor, p.bits, u);
  const loss = Number.isFinite(trainLoss) ? Math.min(Math.max(trainLoss, 0), LOSS_CLIP) : LOSS_CLIP;
  out[d] = stochasticRound(loss * factor * (laneBound(p.bits) / LOSS_CLIP), u[d]!);
  out[d + 1] = w;
  return out;
}

/** Checks that every lane of one site's vector is within its bound (after any transform). */
export function checkLaneBounds(lanes: Int32Array, p: QuantizeParams, headroom = 0): void {
  const d = lanes.length - 2;
  const bound = laneBound(p.bits) + headroom;
  for (let i = 0; i <= d; i++) {
    const v = lanes[i]!;
    if (v > bound || v < -bound) throw new CohortError('COHORT_ERR_SECAGG_OVERFLOW', `lane ${i} holds ${v}, beyond the bound ${bound}`);
  }
  const w = lanes[d + 1]!;
  if (w < 1 || w > p.maxWeight) throw new CohortError('COHORT_ERR_SECAGG_OVERFLOW', `weight lane holds ${w}, outside 1..${p.maxWeight}`);
}

export interface DecodedTraining {
  /** Example-weighted mean of the sites' clipped deltas. */
  meanDelta: Float32Array;
  /** Example-weighted mean training loss. */
  meanLoss: number;
  /** Sum of the sites' (capped) example counts. */
  totalWeight: number;
}

/** Turns the unmasked lane sum of a training round into the weighted mean (see the layout above). */
export function decodeTrainingLanes(sum: Int32Array, p: QuantizeParams): DecodedTraining {
  const d = sum.length - 2;
  const totalWeight = sum[d + 1]!;
  if (!(totalWeight > 0)) throw new CohortError('COHORT_ERR_SECAGG_BAD_SHARE', 'the unmasked weight lane is not positive; unmasking went wrong');
  const k = (p.clip / laneBound(p.bits)) * (p.maxWeight / totalWeight);
  const meanDelta = new Float32Array(d);
  for (let i = 0; i < d; i++) meanDelta[i] = sum[i]! * k;
  const meanLoss = sum[d]! * (LOSS_CLIP / laneBound(p.bits)) * (p.maxWeight / totalWeight);
  return { meanDelta, meanLoss, totalWeight };
}

/** A site's update as one flat vector: local minus global, tensor by tensor in weight-list order. */
export function flatDelta(local: readonly { data: Float32Array }[], global: readonly { data: Float32Array }[]): Float64Array {
  if (local.length !== global.length) throw new CohortError('COHORT_ERR_TENSOR_SHAPE', 'local and global models differ in tensor count');
  const total = local.reduce((n, t) => n + t.data.length, 0);
  const out = new Float64Array(total);
  let off = 0;
  local.forEach((t, k) => {
    const g = global[k]!.data;
    if (g.length !== t.data.length) throw new CohortError('COHORT_ERR_TENSOR_SHAPE', `tensor ${k} differs in size between local and global models`);
    for (let i = 0; i < g.length; i++) out[off + i] = t.data[i]! - g[i]!;
    off += g.length;
  });
  return out;
}

/** The global model plus a flat mean delta: the next model, with the global model's shapes. */
export function applyDelta<T extends { shape: number[]; data: Float32Array }>(global: readonly T[], delta: ArrayLike<number>): { shape: number[]; data: Float32Array }[] {
  let off = 0;
  const out = global.map((t) => {
    const data = new Float32Array(t.data.length);
    for (let i = 0; i < data.length; i++) data[i] = t.data[i]! + delta[off + i]!;
    off += data.length;
    return { shape: [...t.shape], data };
  });
  if (off !== delta.length) throw new CohortError('COHORT_ERR_TENSOR_SHAPE', `delta has ${delta.length} values; the model has ${off}`);
  return out;
}
