import type { Tensor } from '../../protocol/codec.ts';
import { CohortError } from '../../protocol/errors.ts';
import { bySite, type AggregateInput, type FitResult, type Strategy } from './strategy.ts';
import { individualResults } from './fedmedian.ts';

/** Blanchard et al.'s condition: Krum's guarantee needs n > 2f + 2 updates. */
export function krumMinUpdates(byzantine: number): number {
  return 2 * byzantine + 3;
}

/**
 * Krum scores: for each update, the sum of squared Euclidean distances to its `n - f - 2` nearest other updates.
 * Returned in the order of `results`.
 */
export function krumScores(results: readonly FitResult[], byzantine: number): number[] {
  const n = results.length;
  const flat = results.map((r) => {
    const size = r.weights.reduce((s, t) => s + t.data.length, 0);
    const out = new Float64Array(size);
    let o = 0;
    for (const t of r.weights) {
      out.set(t.data, o);
      o += t.data.length;
    }
    return out;
  });
  const d2 = Array.from({ length: n }, () => new Float64Array(n));
  for (let i = 0; i < n; i++) {
    for (let j = i + 1; j < n; j++) {
      const a = flat[i]!;
      const b = flat[j]!;
      let s = 0;
      for (let k = 0; k < a.length; k++) {
        const d = a[k]! - b[k]!;
        s += d * d;
      }
      d2[i]![j] = s;
      d2[j]![i] = s;
    }
  }
  const neighbours = n - byzantine - 2;
  return d2.map((row, i) => {
    const others = Array.from(row).filter((_, j) => j !== i).sort((x, y) => x - y);
    return others.slice(0, neighbours).reduce((s, x) => s + x, 0);
  });
}

/**
 * Krum and Multi-Krum: Blanchard, El Mhamdi, Guerraoui & Stainer, "Machine Learning with Adversaries: Byzantine
 * Tolerant Gradient Descent", NeurIPS 2017. Each update is scored by the summed squared distance to its
 * `n - f - 2` nearest neighbours; Krum keeps the single best-scored update, Multi-Krum averages the `m` best
 * (unweighted, as in the paper; default `m = n - f`). `f` (`byzantine`, default 1) is how many malicious sites to
 * tolerate; the guarantee needs `n > 2f + 2`, and a round with fewer updates fails with
 * COHORT_ERR_ROUND_TOO_FEW_RESULTS. Needs each site's update: cannot run under secure aggregation.
 */
export class Krum implements Strategy {
  readonly requires = 'individual' as const;

  constructor(readonly name: 'krum' | 'multi-krum', private readonly byzantine: number, private readonly select?: number) {}

  /** Sites chosen in the last round (for reports and tests). */
  lastSelected: string[] = [];

  aggregate(_global: readonly Tensor[], input: AggregateInput, _round?: number): Tensor[] {
    const results = bySite(individualResults(input, this.name));
    const n = results.length;
    const f = this.byzantine;
    if (n < krumMinUpdates(f)) {
      throw new CohortError('COHORT_ERR_ROUND_TOO_FEW_RESULTS', `${this.name} with byzantine=${f} needs at least ${krumMinUpdates(f)} updates (n > 2f + 2); got ${n}`);
    }
    const scores = krumScores(results, f);
    const m = this.name === 'krum' ? 1 : Math.min(n, this.select ?? n - f);
    // Stable sort: ties go to the site that sorts first by name, so the choice is reproducible.
    const chosen = scores.map((s, i) => ({ s, i })).sort((a, b) => a.s - b.s).slice(0, m).map((x) => results[x.i]!);
    this.lastSelected = chosen.map((r) => r.site);
    return chosen[0]!.weights.map((t, i) => {
      const acc = new Float64Array(t.data.length);
      for (const r of chosen) {
        const d = r.weights[i]!.data;
        for (let j = 0; j < acc.length; j++) acc[j]! += d[j]!;
      }
      return { shape: [...t.shape], data: Float32Array.from(acc, (x) => x / chosen.length) };
    });
  }
}
