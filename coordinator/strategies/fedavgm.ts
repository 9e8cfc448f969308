import type { Tensor } from '../../protocol/codec.ts';
import { cloneTensors, filledLike, meanOf, type AggregateInput, type Strategy } from './strategy.ts';

export interface FedAvgMOptions {
  /** Server learning rate eta (paper: 1.0). */
  serverLearningRate: number;
  /** Server momentum beta (paper: 0.9). */
  momentum: number;
}

/**
 * FedAvgM: Hsu, Qi & Brown, "Measuring the Effects of Non-Identical Data Distribution for Federated Visual
 * Classification", 2019 (arXiv:1909.06335). FedAvg with momentum at the server: with the pseudo-gradient
 * `delta = w - mean(site models)`, the server keeps `v <- beta * v + delta` and steps `w <- w - eta * v`. With
 * `beta = 0` and `eta = 1` it is FedAvg. The velocity `v` is server state, checkpointed with the model.
 */
export class FedAvgM implements Strategy {
  readonly name = 'fedavgm';
  readonly requires = 'sum' as const;
  private velocity: Tensor[] | undefined;

  constructor(private readonly opts: FedAvgMOptions) {}

  aggregate(global: readonly Tensor[], input: AggregateInput): Tensor[] {
    const mean = meanOf(input);
    const v = this.velocity ?? filledLike(global, 0);
    const { serverLearningRate: eta, momentum: beta } = this.opts;
    const next = global.map((g, i) => {
      const out = new Float32Array(g.data.length);
      const vi = v[i]!.data;
      const m = mean[i]!.data;
      for (let j = 0; j < out.length; j++) {
        const delta = g.data[j]! - m[j]!;
        vi[j] = beta * vi[j]! + delta;
        out[j] = g.data[j]! - eta * vi[j]!;
      }
      return { shape: [...g.shape], data: out };
    });
    this.velocity = v;
    return next;
  }

  state(): Tensor[] {
    return this.velocity ? cloneTensors(this.velocity) : [];
  }

  restore(state: Tensor[]): void {
    this.velocity = state.length ? cloneTensors(state) : undefined;
  }
}
