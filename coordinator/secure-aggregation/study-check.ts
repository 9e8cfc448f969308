/**
 * What the coordinator refuses when a study with secure aggregation is created, before any site is asked (and
 * again before each round): a configuration whose lanes could wrap past 2^32, a neighbourhood too large for the
 * Shamir field, and differential privacy that needs each site's update at the coordinator. (A strategy that needs
 * individual updates is refused by `checkStudyStrategy`, coordinator/strategies/registry.ts.)
 */
import { CohortError } from '../../protocol/errors.ts';
import type { StudyManifest } from '../../protocol/messages.ts';
import { secureAggregationSettings } from '../../protocol/secagg-messages.ts';
import { checkHeadroom } from '../../protocol/crypto/quantize.ts';
import { sessionShape } from '../../protocol/crypto/session.ts';

/** Throws a coded error when the manifest's secure aggregation cannot work as the study asks. */
export function checkSecureAggregationStudy(manifest: StudyManifest): void {
  const settings = secureAggregationSettings(manifest.privacy.secureAggregation);
  if (!settings) return;
  if (manifest.privacy.dp?.mode === 'client-central') {
    throw new CohortError('COHORT_ERR_DP_INVALID', 'client-central differential privacy clips and noises each site\'s update at the coordinator, which secure aggregation never reveals; use record-level DP (it combines with secure aggregation) or set privacy.secureAggregation to false');
  }
  const named = manifest.participation.sites?.length;
  if (named !== undefined && named >= 2) {
    sessionShape(settings, named);
    checkHeadroom(named, { bits: settings.quantizationBits, maxWeight: settings.maxWeight ?? 1 });
  }
}
