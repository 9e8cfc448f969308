import type { Tensor } from '../../protocol/codec.ts';
import { cloneTensors, filledLike, meanOf, type AggregateInput, type Strategy } from './strategy.ts';

export interface FedOptOptions {
  /** Server learning rate eta. The paper tunes it per task; our default is 0.1. */
  eta: number;
  /** First-moment decay (paper: 0.9). */
  beta1: number;
  /** Second-moment decay (paper: 0.99); unused by FedAdagrad. */
  beta2: number;
  /** Adaptivity tau: bounds the step where v is small (paper's usual best: 1e-3). */
  tau: number;
}

/**
 * FedOpt, the server-optimizer framework of Reddi, Charles, Zaheer, Garrett, Rush, Konečný, Kumar & McMahan,
 * "Adaptive Federated Optimization", ICLR 2021 (Algorithm 2). The server treats `delta = mean(site models) - w` as a
 * pseudo-gradient and steps
 *
 *   m <- beta1 * m + (1 - beta1) * delta
 *   v <- secondMoment(v, delta^2)            (Adagrad, Adam or Yogi; see subclasses)
 *   w <- w + eta * m / (sqrt(v) + tau)
 *
 * with `m` starting at 0 and `v` at tau^2 (the paper asks v_-1 >= tau^2), and no bias correction (as in the paper).
 * `m` and `v` are server state, checkpointed with the model. We use the example-weighted mean of the site models
 * (what secure aggregation reveals); the paper's experiments average uniformly.
 */
export abstract class FedOpt implements Strategy {
  abstract readonly name: string;
  readonly requires = 'sum' as const;
  private m: Tensor[] | undefined;
  private v: Tensor[] | undefined;

  constructor(protected readonly opts: FedOptOptions) {}

  /** The second-moment update for one coordinate: previous v and the squared pseudo-gradient. */
  protected abstract secondMoment(v: number, delta2: number): number;

  aggregate(global: readonly Tensor[], input: AggregateInput): Tensor[] {
    const mean = meanOf(input);
    const { eta, beta1, tau } = this.opts;
    const m = this.m ?? filledLike(global, 0);
    const v = this.v ?? filledLike(global, tau * tau);
    const next = global.map((g, i) => {
      const out = new Float32Array(g.data.length);
      const mi = m[i]!.data;
      const vi = v[i]!.data;
      const avg = mean[i]!.data;
      for (let j = 0; j < out.length; j++) {
        const delta = avg[j]! - g.data[j]!;
        mi[j] = beta1 * mi[j]! + (1 - beta1) * delta;
        vi[j] = this.secondMoment(vi[j]!, delta * delta);
        out[j] = g.data[j]! + (eta * mi[j]!) / (Math.sqrt(vi[j]!) + tau);
      }
      return { shape: [...g.shape], data: out };
    });
    this.m = m;
    this.v = v;
    return next;
  }

  /** `[...m, ...v]`, or nothing before the first round. */
  state(): Tensor[] {
    return this.m && this.v ? cloneTensors([...this.m, ...this.v]) : [];
  }

  restore(state: Tensor[]): void {
    if (state.length === 0) {
      this.m = undefined;
      this.v = undefined;
      return;
    }
    if (state.length % 2 !== 0) throw new Error(`${this.name} state must hold m and v (got ${state.length} tensors)`);
    const half = state.length / 2;
    this.m = cloneTensors(state.slice(0, half));
    this.v = cloneTensors(state.slice(half));
  }
}
