/**
 * The site's half of federated standardization: sums over its training split for the stats task, and scaling
 * with whatever statistics the study uses (pooled across sites, or this site's own for `standardize: local`).
 */
import { CohortError } from '../../protocol/errors.ts';
import type { Standardization } from '../../protocol/messages.ts';
import { standardizationFromSums } from '../../protocol/standardization.ts';
import type { LoadedSplit } from './data-source.ts';

function slotsOf(data: LoadedSplit): { of: Int32Array; count: number } {
  if (data.slots) return data.slots;
  const width = data.inputShape.reduce((a, b) => a * b, 1);
  return { of: Int32Array.from({ length: width }, (_, i) => i), count: width };
}

/**
 * `[count.., sum.., sumSq..]` per slot. A slot backed by fewer than `minCellCount` values is sent as zeros: like
 * every count that leaves the site, it obeys the site's cell-count rule (the site then contributes nothing to it).
 * Counts are exact otherwise, as FedAvg's example counts already are, because rounding them would bias the mean.
 */
export function featureSums(data: LoadedSplit, minCellCount = 1): { slots: number; vector: number[] } {
  const { of, count: k } = slotsOf(data);
  const width = of.length;
  const v = new Array<number>(3 * k).fill(0);
  for (let i = 0; i < data.n; i++) {
    for (let j = 0; j < width; j++) {
      const s = of[j]!;
      if (s < 0) continue;
      const x = data.x[i * width + j]!;
      v[s]! += 1;
      v[k + s]! += x;
      v[2 * k + s]! += x * x;
    }
  }
  for (let s = 0; s < k; s++) {
    if (v[s]! < minCellCount) v[s] = v[k + s] = v[2 * k + s] = 0;
  }
  return { slots: k, vector: v };
}

/** This site's own statistics (for `standardize: local`). */
export function localStandardization(data: LoadedSplit): Standardization {
  return standardizationFromSums(featureSums(data).vector);
}

/** A copy of `data` with every slotted value scaled as `(x - mean[slot]) / std[slot]`. */
export function standardize(data: LoadedSplit, s: Standardization): LoadedSplit {
  const { of, count } = slotsOf(data);
  if (s.mean.length !== count || s.std.length !== count) {
    throw new CohortError('COHORT_ERR_SITE_SCHEMA_MISMATCH', `the study's statistics cover ${s.mean.length} features; this site's data has ${count}`);
  }
  const width = of.length;
  const x = new Float32Array(data.x.length);
  for (let i = 0; i < data.n; i++) {
    for (let j = 0; j < width; j++) {
      const slot = of[j]!;
      const v = data.x[i * width + j]!;
      x[i * width + j] = slot < 0 ? v : (v - s.mean[slot]!) / s.std[slot]!;
    }
  }
  return { ...data, x };
}
