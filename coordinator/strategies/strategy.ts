import type { Tensor } from '../../protocol/codec.ts';

export interface FitResult {
  site: string;
  weights: Tensor[];
  numExamples: number;
}

/**
 * What a strategy is handed after a round's training. Strategies that need only the example-weighted mean of the
 * site models (`requires: 'sum'`) get exactly that, which is all secure aggregation can reveal; strategies that
 * need each site's model (`requires: 'individual'`: median, trimmed mean, Krum) get the list and so cannot run
 * under secure aggregation.
 */
export type AggregateInput =
  | { kind: 'mean'; mean: Tensor[]; totalWeight: number; sites: string[] }
  | { kind: 'individual'; results: FitResult[] };

/** A strategy sees weights and counts, never sockets. */
export interface Strategy {
  readonly name: string;
  readonly requires: 'sum' | 'individual';
  /** Returns the next global model. May keep server-side state (momentum); see `state`/`restore`. */
  aggregate(global: readonly Tensor[], input: AggregateInput, round: number): Tensor[];
  /** Server-side optimizer state to checkpoint with the model (absent for stateless strategies). */
  state?(): Tensor[];
  restore?(state: Tensor[]): void;
}

/** Example-weighted mean of site models, accumulated in float64. */
export function weightedMean(results: readonly FitResult[]): { mean: Tensor[]; totalWeight: number } {
  const total = results.reduce((n, r) => n + r.numExamples, 0);
  const first = results[0];
  if (!first || total <= 0) throw new Error('weightedMean needs at least one result with examples');
  const mean = first.weights.map((t, i) => {
    const acc = new Float64Array(t.data.length);
    for (const r of results) {
      const w = r.numExamples / total;
      const d = r.weights[i]!.data;
      for (let j = 0; j < acc.length; j++) acc[j]! += w * d[j]!;
    }
    return { shape: [...t.shape], data: Float32Array.from(acc) };
  });
  return { mean, totalWeight: total };
}
