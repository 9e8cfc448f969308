import type { Tensor } from '../../protocol/codec.ts';
import { weightedMean, type AggregateInput, type Strategy } from './strategy.ts';

/** FedAvg (McMahan et al. 2017): the mean of site models weighted by their example counts. */
export class FedAvg implements Strategy {
  readonly name = 'fedavg';
  readonly requires = 'sum' as const;

  aggregate(_global: readonly Tensor[], input: AggregateInput, _round?: number): Tensor[] {
    return input.kind === 'mean' ? input.mean : weightedMean(input.results).mean;
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
