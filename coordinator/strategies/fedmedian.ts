import type { Tensor } from '../../protocol/codec.ts';
import { CohortError } from '../../protocol/errors.ts';
import { coordinateWise, type AggregateInput, type Strategy } from './strategy.ts';

/** Median of the values (sorted in place); the mean of the two middle values for an even count. */
export function median(values: Float64Array): number {
  values.sort();
  const n = values.length;
  const h = n >> 1;
  return n % 2 === 1 ? values[h]! : (values[h - 1]! + values[h]!) / 2;
}

/** Refuses a mean where a strategy needs each site's update (only a misconfigured runner can cause it). */
export function individualResults(input: AggregateInput, name: string) {
  if (input.kind !== 'individual') {
    throw new CohortError('COHORT_ERR_STUDY_STRATEGY_NEEDS_INDIVIDUAL', `${name} needs each site's update, not only their mean`);
  }
  return input.results;
}

/**
 * FedMedian, the coordinate-wise median of Yin, Chen, Ramchandran & Bartlett, "Byzantine-Robust Distributed
 * Learning: Towards Optimal Statistical Rates", ICML 2018. Each weight of the next model is the median of that weight
 * across the site models (unweighted), so fewer than half of the sites cannot drag it arbitrarily far. Needs each
 * site's update: cannot run under secure aggregation. No parameters.
 */
export class FedMedian implements Strategy {
  readonly name = 'fedmedian';
  readonly requires = 'individual' as const;

  aggregate(_global: readonly Tensor[], input: AggregateInput): Tensor[] {
    return coordinateWise(individualResults(input, this.name), median);
  }
}
