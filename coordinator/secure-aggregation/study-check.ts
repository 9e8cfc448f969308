/**
 * What the coordinator refuses when a study is created, before any site is asked: a strategy that needs each
 * site's update (median, Krum) cannot run on the sum that secure aggregation reveals, and a configuration whose
 * lanes could wrap past 2^32 cannot give a correct sum.
 */
import { CohortError } from '../../protocol/errors.ts';
import type { StudyManifest } from '../../protocol/messages.ts';
import { secureAggregationSettings } from '../../protocol/secagg-messages.ts';
import { checkHeadroom } from '../../protocol/crypto/quantize.ts';
import { sessionShape } from '../../protocol/crypto/session.ts';
import { strategyFor } from '../strategies/fedavg.ts';
import type { Strategy } from '../strategies/strategy.ts';

/** Throws a coded error when the manifest's secure aggregation cannot work with its strategy or its sites. */
export function checkSecureAggregationStudy(manifest: StudyManifest, strategyOf: (name: string) => Strategy = strategyFor): void {
  const settings = secureAggregationSettings(manifest.privacy.secureAggregation);
  if (!settings) return;
  const strategy = strategyOf(manifest.strategy.name);
  if (strategy.requires !== 'sum') {
    throw new CohortError('COHORT_ERR_STUDY_SECAGG_STRATEGY', `strategy "${strategy.name}" needs each site's update, but secure aggregation reveals only their sum; use a linear strategy such as fedavg, or set privacy.secureAggregation to false`, { strategy: strategy.name });
  }
  const named = manifest.participation.sites?.length;
  if (named !== undefined && named >= 2) {
    sessionShape(settings, named);
    checkHeadroom(named, { bits: settings.quantizationBits, maxWeight: settings.maxWeight ?? 1 });
  }
}
