import type { Tensor } from '../../protocol/codec.ts';
import type { FitResult, Strategy } from './strategy.ts';

/** FedAvg (McMahan et al. 2017): the mean of site models weighted by their example counts. */
export class FedAvg implements Strategy {
  readonly name = 'fedavg';
  readonly requires = 'sum' as const;

  aggregate(global: readonly Tensor[], results: readonly FitResult[]): Tensor[] {
    const total = results.reduce((n, r) => n + r.numExamples, 0);
    if (results.length === 0 || total <= 0) return global.map((t) => ({ shape: [...t.shape], data: t.data.slice() }));
    // Accumulate in float64: summing many float32 updates in float32 loses digits.
    return global.map((g, i) => {
      const acc = new Float64Array(g.data.length);
      for (const r of results) {
        const w = r.numExamples / total;
        const d = r.weights[i]!.data;
        for (let j = 0; j < acc.length; j++) acc[j]! += w * d[j]!;
      }
      return { shape: [...g.shape], data: Float32Array.from(acc) };
    });
  }
}

export function strategyFor(name: string): Strategy {
  switch (name) {
    case 'fedavg':
      return new FedAvg();
    default:
      throw new Error(`unknown strategy ${name}`);
  }
}
