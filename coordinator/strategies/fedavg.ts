import type { Tensor } from '../../protocol/codec.ts';
import { meanOf, type AggregateInput, type Strategy } from './strategy.ts';

/**
 * FedAvg: McMahan, Moore, Ramage, Hampson & Agüera y Arcas, "Communication-Efficient Learning of Deep Networks from
 * Decentralized Data", AISTATS 2017. The next global model is the mean of the site models weighted by their example
 * counts. No parameters.
 */
export class FedAvg implements Strategy {
  readonly name = 'fedavg';
  readonly requires = 'sum' as const;

  aggregate(_global: readonly Tensor[], input: AggregateInput, _round?: number): Tensor[] {
    return meanOf(input);
  }
}
