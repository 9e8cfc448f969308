/**
 * Strategy registry: builds a strategy from the manifest's `strategy` spec, and checks at study creation that the
 * strategy fits the study (an `individual` strategy cannot run under secure aggregation; Krum needs enough sites).
 */
import { CohortError } from '../../protocol/errors.ts';
import type { StrategySpec, StudyManifest } from '../../protocol/messages.ts';
import { FedAdagrad } from './fedadagrad.ts';
import { FedAdam } from './fedadam.ts';
import { FedAvg } from './fedavg.ts';
import { FedAvgM } from './fedavgm.ts';
import { FedMedian } from './fedmedian.ts';
import { FedProx } from './fedprox.ts';
import { FedYogi } from './fedyogi.ts';
import { Krum, krumMinUpdates } from './krum.ts';
import type { Strategy } from './strategy.ts';
import { TrimmedMean } from './trimmed-mean.ts';

/** A fresh strategy (no server state) for the spec; the runner restores its state from the checkpoint. */
export function strategyFor(s: StrategySpec): Strategy {
  switch (s.name) {
    case 'fedavg':
      return new FedAvg();
    case 'fedavgm':
      return new FedAvgM({ serverLearningRate: s.serverLearningRate, momentum: s.momentum });
    case 'fedprox':
      return new FedProx(s.mu);
    case 'fedadam':
      return new FedAdam({ eta: s.eta, beta1: s.beta1, beta2: s.beta2, tau: s.tau });
    case 'fedyogi':
      return new FedYogi({ eta: s.eta, beta1: s.beta1, beta2: s.beta2, tau: s.tau });
    case 'fedadagrad':
      return new FedAdagrad({ eta: s.eta, beta1: s.beta1, beta2: 0, tau: s.tau });
    case 'fedmedian':
      return new FedMedian();
    case 'trimmed-mean':
      return new TrimmedMean(s.beta);
    case 'krum':
      return new Krum('krum', s.byzantine);
    case 'multi-krum':
      return new Krum('multi-krum', s.byzantine, s.select);
    default:
      throw new CohortError('COHORT_ERR_STUDY_INVALID_MANIFEST', `unknown strategy ${(s as { name: string }).name}`);
  }
}

/**
 * Refuses, at study creation, a strategy that cannot run as the study asks: one that needs individual updates
 * under secure aggregation (the coordinator would only ever see their sum), or Krum with fewer sites than
 * `2f + 3`.
 */
export function checkStudyStrategy(manifest: StudyManifest): void {
  const strategy = strategyFor(manifest.strategy);
  if (strategy.requires === 'individual' && manifest.privacy.secureAggregation) {
    throw new CohortError('COHORT_ERR_STUDY_STRATEGY_NEEDS_INDIVIDUAL',
      `strategy ${strategy.name} needs each site's update and cannot run under secure aggregation, which reveals only their sum; use fedavg, fedavgm, fedprox, fedadam, fedyogi or fedadagrad, or turn secure aggregation off`,
      { strategy: strategy.name });
  }
  const s = manifest.strategy;
  if (s.name === 'fedprox' && s.mu > 0 && manifest.privacy.dp?.mode === 'record') {
    throw new CohortError('COHORT_ERR_STUDY_STRATEGY_INVALID',
      "FedProx's proximal term is not part of DP-SGD (record-level differential privacy) yet; use fedavg or a server optimizer with record-level DP",
      { strategy: s.name });
  }
  if ((s.name === 'krum' || s.name === 'multi-krum') && manifest.participation.minSites < krumMinUpdates(s.byzantine)) {
    throw new CohortError('COHORT_ERR_STUDY_STRATEGY_INVALID',
      `${s.name} with byzantine=${s.byzantine} needs at least ${krumMinUpdates(s.byzantine)} updates per round (n > 2f + 2); set participation.minSites to ${krumMinUpdates(s.byzantine)} or more`,
      { strategy: s.name, minSites: krumMinUpdates(s.byzantine) });
  }
}
