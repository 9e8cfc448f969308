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

/** Fields a strategy adds to every train task (validated by the site against the approved manifest). */
export interface TrainConfig {
  /** FedProx: weight of the proximal term (mu / 2) * ||w - w_global||^2 in the local loss. */
  proximalMu?: number;
}

/** A strategy sees weights and counts, never sockets. */
export interface Strategy {
  readonly name: string;
  readonly requires: 'sum' | 'individual';
  /** Returns the next global model. May keep server-side state (momentum); see `state`/`restore`. */
  aggregate(global: readonly Tensor[], input: AggregateInput, round: number): Tensor[];
  /**
   * Server-side optimizer state to checkpoint with the model (absent for stateless strategies). The runner saves it
   * beside each round's model and restores it before the next round, so a restarted coordinator resumes exactly.
   */
  state?(): Tensor[];
  restore?(state: Tensor[]): void;
  /** Extra fields for train tasks. */
  trainConfig?(): TrainConfig;
}

/** Results in site-name order: aggregation must not depend on the order replies happened to arrive in. */
export function bySite(results: readonly FitResult[]): FitResult[] {
  return [...results].sort((a, b) => (a.site < b.site ? -1 : a.site > b.site ? 1 : 0));
}

/** Example-weighted mean of site models, accumulated in float64 in site-name order (reproducible bit for bit). */
export function weightedMean(results: readonly FitResult[]): { mean: Tensor[]; totalWeight: number } {
  const ordered = bySite(results);
  const total = ordered.reduce((n, r) => n + r.numExamples, 0);
  const first = ordered[0];
  if (!first || total <= 0) throw new Error('weightedMean needs at least one result with examples');
  const mean = first.weights.map((t, i) => {
    const acc = new Float64Array(t.data.length);
    for (const r of ordered) {
      const w = r.numExamples / total;
      const d = r.weights[i]!.data;
      for (let j = 0; j < acc.length; j++) acc[j]! += w * d[j]!;
    }
    return { shape: [...t.shape], data: Float32Array.from(acc) };
  });
  return { mean, totalWeight: total };
}

/**
 * The example-weighted mean built up one site model at a time: each update is folded into one float64 running sum
 * as it arrives and can then be dropped, so aggregation holds one accumulator however many sites take part.
 * Folding in arrival order instead of site order changes the float64 sum only in its last bits, which rounding the
 * mean to float32 almost always removes; the in-memory transport of simulations delivers in send order, so their
 * runs stay bit-for-bit reproducible.
 */
export class RunningMean {
  private acc: Float64Array[] | undefined;
  private shapes: number[][] = [];
  private total = 0;
  readonly sites: string[] = [];

  add(site: string, weights: readonly Tensor[], numExamples: number): void {
    if (!(numExamples > 0)) throw new Error('RunningMean needs a positive example count');
    if (!this.acc) {
      this.acc = weights.map((t) => new Float64Array(t.data.length));
      this.shapes = weights.map((t) => [...t.shape]);
    }
    if (weights.length !== this.acc.length) throw new Error('RunningMean: models differ in tensor count');
    weights.forEach((t, i) => {
      const a = this.acc![i]!;
      const d = t.data;
      if (d.length !== a.length) throw new Error('RunningMean: models differ in shape');
      for (let j = 0; j < a.length; j++) a[j]! += numExamples * d[j]!;
    });
    this.total += numExamples;
    this.sites.push(site);
  }

  get count(): number {
    return this.sites.length;
  }

  result(): { mean: Tensor[]; totalWeight: number } {
    if (!this.acc || this.total <= 0) throw new Error('RunningMean needs at least one model');
    const total = this.total;
    return { mean: this.acc.map((a, i) => ({ shape: [...this.shapes[i]!], data: Float32Array.from(a, (v) => v / total) })), totalWeight: total };
  }
}

/** The mean the strategy was given, or the weighted mean of the individual results. */
export function meanOf(input: AggregateInput): Tensor[] {
  return input.kind === 'mean' ? input.mean : weightedMean(input.results).mean;
}

/** Tensors of the same shapes as `like`, filled with `value`. */
export function filledLike(like: readonly Tensor[], value: number): Tensor[] {
  return like.map((t) => ({ shape: [...t.shape], data: new Float32Array(t.data.length).fill(value) }));
}

/** Deep copy (state handed out or taken in must not alias the strategy's own buffers). */
export function cloneTensors(ts: readonly Tensor[]): Tensor[] {
  return ts.map((t) => ({ shape: [...t.shape], data: Float32Array.from(t.data) }));
}

/**
 * Applies `fn` to every coordinate: `fn(values, j)` receives the values of coordinate `j` across `results` (in
 * site order, in a reused buffer) and returns the aggregated value. Used by the coordinate-wise robust strategies.
 */
export function coordinateWise(results: readonly FitResult[], fn: (values: Float64Array) => number): Tensor[] {
  const ordered = bySite(results);
  const first = ordered[0];
  if (!first) throw new Error('coordinate-wise aggregation needs at least one result');
  const values = new Float64Array(ordered.length);
  return first.weights.map((t, i) => {
    const out = new Float32Array(t.data.length);
    for (let j = 0; j < out.length; j++) {
      for (let k = 0; k < ordered.length; k++) values[k] = ordered[k]!.weights[i]!.data[j]!;
      out[j] = fn(values);
    }
    return { shape: [...t.shape], data: out };
  });
}
