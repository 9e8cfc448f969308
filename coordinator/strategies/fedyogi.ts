import { FedOpt } from './fedopt.ts';

/**
 * FedYogi (Reddi et al., "Adaptive Federated Optimization", ICLR 2021; Yogi: Zaheer et al., NeurIPS 2018): the
 * second moment moves towards delta^2 additively, `v <- v - (1 - beta2) * delta^2 * sign(v - delta^2)`, so it
 * cannot collapse as fast as Adam's when updates shrink. Defaults: eta 0.1, beta1 0.9, beta2 0.99, tau 1e-3.
 */
export class FedYogi extends FedOpt {
  readonly name = 'fedyogi';

  protected secondMoment(v: number, delta2: number): number {
    return v - (1 - this.opts.beta2) * delta2 * Math.sign(v - delta2);
  }
}
