import { FedOpt } from './fedopt.ts';

/**
 * FedAdagrad (Reddi et al., "Adaptive Federated Optimization", ICLR 2021): Adagrad at the server,
 * `v <- v + delta^2`. Defaults: eta 0.1, beta1 0.9, tau 1e-3.
 */
export class FedAdagrad extends FedOpt {
  readonly name = 'fedadagrad';

  protected secondMoment(v: number, delta2: number): number {
    return v + delta2;
  }
}
