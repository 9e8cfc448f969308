import type { Tensor } from '../../protocol/codec.ts';
import { coordinateWise, type AggregateInput, type Strategy } from './strategy.ts';
import { individualResults } from './fedmedian.ts';

/**
 * Coordinate-wise trimmed mean of Yin, Chen, Ramchandran & Bartlett, "Byzantine-Robust Distributed Learning:
 * Towards Optimal Statistical Rates", ICML 2018. For each weight, the `floor(beta * n)` largest and smallest values
 * across the n site models are dropped and the rest averaged (unweighted). `beta` in [0, 0.5) (default 0.1) should
 * exceed the fraction of malicious sites. Needs each site's update: cannot run under secure aggregation.
 */
export class TrimmedMean implements Strategy {
  readonly name = 'trimmed-mean';
  readonly requires = 'individual' as const;

  constructor(private readonly beta: number) {}

  aggregate(_global: readonly Tensor[], input: AggregateInput): Tensor[] {
    const results = individualResults(input, this.name);
    const k = Math.floor(this.beta * results.length);
    return coordinateWise(results, (values) => {
      values.sort();
      let sum = 0;
      for (let i = k; i < values.length - k; i++) sum += values[i]!;
      return sum / (values.length - 2 * k);
    });
  }
}
