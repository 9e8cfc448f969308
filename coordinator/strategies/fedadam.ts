import { FedOpt } from './fedopt.ts';

/**
 * FedAdam (Reddi et al., "Adaptive Federated Optimization", ICLR 2021): Adam at the server,
 * `v <- beta2 * v + (1 - beta2) * delta^2`. Defaults: eta 0.1, beta1 0.9, beta2 0.99, tau 1e-3.
 */
export class FedAdam extends FedOpt {
  readonly name = 'fedadam';

  protected secondMoment(v: number, delta2: number): number {
    return this.opts.beta2 * v + (1 - this.opts.beta2) * delta2;
  }
}
