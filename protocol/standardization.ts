/**
 * Federated standardization, the part both sides must agree on. Each site sends one vector of sums
 * `[count_0..count_{k-1}, sum_0..sum_{k-1}, sumSq_0..sumSq_{k-1}]` over its training split (k slots: tabular numeric
 * columns, or image channels); the coordinator adds the vectors and turns the total into a global mean and
 * standard deviation per slot, which every site then uses. Because pooling is a plain element-wise sum, it can run
 * through any "secure sum of vectors" (secure aggregation) without change: the coordinator then learns only the
 * pooled sums, never one site's.
 */
import { CohortError } from './errors.ts';
import type { Standardization } from './messages.ts';

/** A slot whose pooled variance is below this keeps std 1 (a constant feature is centred, not blown up). */
const MIN_VARIANCE = 1e-12;

/** Element-wise sum of equal-length vectors: the only operation pooling needs (swap in a secure sum here). */
export function sumVectors(vectors: readonly (readonly number[])[]): number[] {
  const first = vectors[0];
  if (!first) throw new CohortError('COHORT_ERR_STUDY_NOT_ENOUGH_SITES', 'no statistics to pool');
  const out = new Array<number>(first.length).fill(0);
  for (const v of vectors) {
    if (v.length !== first.length) throw new CohortError('COHORT_ERR_SITE_SCHEMA_MISMATCH', `statistics vectors differ in length (${v.length} != ${first.length})`);
    for (let i = 0; i < v.length; i++) out[i]! += v[i]!;
  }
  return out;
}

/** Global mean and (population) standard deviation per slot from a pooled sums vector. */
export function standardizationFromSums(total: readonly number[]): Standardization {
  if (total.length % 3 !== 0) throw new CohortError('COHORT_ERR_SITE_SCHEMA_MISMATCH', 'statistics vector length is not a multiple of 3');
  const k = total.length / 3;
  const mean: number[] = [];
  const std: number[] = [];
  for (let j = 0; j < k; j++) {
    const n = total[j]!;
    const m = n > 0 ? total[k + j]! / n : 0;
    // E[x²] − E[x]², clamped: rounding can make it slightly negative for a constant feature.
    const variance = n > 0 ? Math.max(0, total[2 * k + j]! / n - m * m) : 0;
    mean.push(m);
    std.push(variance > MIN_VARIANCE ? Math.sqrt(variance) : 1);
  }
  return { mean, std };
}
