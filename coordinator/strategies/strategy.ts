import type { Tensor } from '../../protocol/codec.ts';

export interface FitResult {
  site: string;
  weights: Tensor[];
  numExamples: number;
}

/**
 * A strategy sees weights and counts, never sockets. `requires: 'sum'` means it only needs the weighted sum of
 * updates and so can run under secure aggregation; `'individual'` strategies (median, Krum) cannot.
 */
export interface Strategy {
  readonly name: string;
  readonly requires: 'sum' | 'individual';
  aggregate(global: readonly Tensor[], results: readonly FitResult[]): Tensor[];
}
