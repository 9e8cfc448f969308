/**
 * What the coordinator refuses when a study with secure aggregation is created, before any site is asked (and
 * again before each round): a configuration whose lanes could wrap past 2^32, a neighbourhood too large for the
 * Shamir field, differential privacy that needs each site's update at the coordinator, and distributed DP without
 * secure aggregation or with noise whose tail could wrap a lane. (A strategy that needs individual updates is
 * refused by `checkStudyStrategy`, coordinator/strategies/registry.ts.)
 */
import { CohortError } from '../../protocol/errors.ts';
import type { StudyManifest } from '../../protocol/messages.ts';
import { secureAggregationSettings } from '../../protocol/secagg-messages.ts';
import { checkHeadroom } from '../../protocol/crypto/quantize.ts';
import { sessionShape } from '../../protocol/crypto/session.ts';
import { distributedRoundPlan } from '../../protocol/privacy/plan.ts';

/**
 * The model's size is not known before the sites describe their data; the creation check assumes a model this
 * large (the headroom grows with the logarithm of the lanes). Every round checks again with the real size.
 */
const ASSUMED_LANES = 2 ** 28;

/** Throws a coded error when the manifest's secure aggregation cannot work as the study asks. */
export function checkSecureAggregationStudy(manifest: StudyManifest): void {
  const settings = secureAggregationSettings(manifest.privacy.secureAggregation);
  const dp = manifest.privacy.dp;
  if (!settings) {
    if (dp?.mode === 'client-distributed' || dp?.mode === 'record-distributed') {
      throw new CohortError('COHORT_ERR_DP_INVALID', `${dp.mode} differential privacy adds its noise at the sites under secure aggregation; turn privacy.secureAggregation on, or use ${dp.mode === 'client-distributed' ? 'client-central' : 'record (DP-SGD at each site)'}`);
    }
    return;
  }
  if (dp?.mode === 'client-central') {
    throw new CohortError('COHORT_ERR_DP_INVALID', 'client-central differential privacy clips and noises each site\'s update at the coordinator, which secure aggregation never reveals; use record-level DP (it combines with secure aggregation) or set privacy.secureAggregation to false');
  }
  const named = manifest.participation.sites?.length;
  if (named !== undefined && named >= 2) {
    sessionShape(settings, named);
    checkHeadroom(named, { bits: settings.quantizationBits, maxWeight: settings.maxWeight ?? 1 });
  }
  if (dp?.mode === 'client-distributed' || dp?.mode === 'record-distributed') {
    // Each site's noise may push a lane past 2^(bits-1) by up to its headroom; n such lanes must still sum below
    // 2^31. Checked for the named sites, or else for the study's minimum (more sites only need more room). Record
    // level: one record per site gives the largest noise (the scale shrinks as maxWeight grows), so it bounds all.
    const n = Math.max(2, named ?? manifest.participation.minSites);
    const plan = distributedRoundPlan(dp, manifest.training.rounds, { dim: 1, tailDim: ASSUMED_LANES, sites: n, threshold: sessionShape(settings, n).threshold, bits: settings.quantizationBits, maxWeight: 1 });
    try {
      checkHeadroom(n, { bits: settings.quantizationBits, maxWeight: settings.maxWeight ?? 1 }, plan.headroom);
    } catch (err) {
      if (!(err instanceof CohortError)) throw err;
      throw new CohortError('COHORT_ERR_SECAGG_OVERFLOW', `${dp.mode} DP: ${n} sites each adding noise up to ${plan.headroom} on top of 2^${settings.quantizationBits - 1} could wrap a 32-bit lane; lower privacy.secureAggregation.quantizationBits (each bit less halves both) or the noise`, { ...err.details, headroom: plan.headroom, noiseMultiplier: plan.noiseMultiplier });
    }
  }
}
