import type { Tensor } from '../../protocol/codec.ts';
import { meanOf, type AggregateInput, type Strategy, type TrainConfig } from './strategy.ts';

/**
 * FedProx: Li, Sahu, Zaheer, Sanjabi, Talwalkar & Smith, "Federated Optimization in Heterogeneous Networks",
 * MLSys 2020. Each site minimises its loss plus the proximal term `(mu / 2) * ||w - w_global||^2`, which keeps local
 * models near the global one when data differ between sites; the server averages as FedAvg does. `mu`: the paper
 * tunes it over {0.001, 0.01, 0.1, 1}; our default is 0.01. `mu = 0` is FedAvg.
 *
 * The proximal term is applied by the site (site-agent/training/proximal.ts); the train task carries `proximalMu`,
 * which the site checks against the approved manifest.
 */
export class FedProx implements Strategy {
  readonly name = 'fedprox';
  readonly requires = 'sum' as const;

  constructor(private readonly mu: number) {}

  aggregate(_global: readonly Tensor[], input: AggregateInput): Tensor[] {
    return meanOf(input);
  }

  trainConfig(): TrainConfig {
    return { proximalMu: this.mu };
  }
}
