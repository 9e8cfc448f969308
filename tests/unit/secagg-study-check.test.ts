/**
 * Study creation under secure aggregation: what is refused before any site is asked. A strategy that needs
 * individual updates is refused generically from `Strategy.requires` (coordinator/strategies/registry.ts); lanes
 * that could wrap, neighbourhoods too large for the Shamir field and client-central DP are refused here.
 */
import { describe, expect, it } from 'vitest';
import { checkSecureAggregationStudy } from '../../coordinator/secure-aggregation/study-check.ts';
import { checkStudyStrategy, strategyFor } from '../../coordinator/strategies/registry.ts';
import { StudyManifestSchema, type StudyManifestInput } from '../../protocol/messages.ts';

const manifest = (over: Partial<StudyManifestInput> = {}) => StudyManifestSchema.parse({
  name: 'x', task: { dataset: 'd', label: 'y' }, model: { template: 'logreg' }, training: { rounds: 1 }, ...over,
});

describe('secure aggregation at study creation', () => {
  it('should turn secure aggregation on by default and accept true, false or parameters', () => {
    expect(manifest().privacy.secureAggregation).toBe(true);
    expect(manifest({ privacy: { secureAggregation: false } }).privacy.secureAggregation).toBe(false);
    expect(manifest({ privacy: { secureAggregation: { threshold: 0.8 } } }).privacy.secureAggregation).toMatchObject({ threshold: 0.8, clip: 8, quantizationBits: 22, neighbours: 'auto' });
    expect(StudyManifestSchema.safeParse({ ...manifest(), privacy: { secureAggregation: { threshold: 0.5 } } }).success).toBe(false);
  });

  it('should accept every linear strategy under secure aggregation and refuse those needing individual updates', () => {
    for (const name of ['fedavg', 'fedavgm', 'fedprox', 'fedadam', 'fedyogi', 'fedadagrad'] as const) {
      const m = manifest({ strategy: { name } });
      expect(strategyFor(m.strategy).requires).toBe('sum');
      expect(() => { checkStudyStrategy(m); checkSecureAggregationStudy(m); }).not.toThrow();
    }
    for (const name of ['fedmedian', 'trimmed-mean'] as const) {
      const m = manifest({ strategy: { name } });
      expect(strategyFor(m.strategy).requires).toBe('individual');
      // On by default: refused with no privacy block at all; accepted once secure aggregation is turned off.
      expect(() => checkStudyStrategy(m)).toThrow(expect.objectContaining({ code: 'COHORT_ERR_STUDY_STRATEGY_NEEDS_INDIVIDUAL' }));
      expect(() => checkStudyStrategy(manifest({ strategy: { name }, privacy: { secureAggregation: false } }))).not.toThrow();
    }
  });

  it('should refuse client-central DP under secure aggregation, and accept record-level DP with it', () => {
    const dp = { clip: 1, noiseMultiplier: 1, delta: 1e-5 };
    expect(() => checkSecureAggregationStudy(manifest({ privacy: { dp: { mode: 'client-central', ...dp } } }))).toThrow(expect.objectContaining({ code: 'COHORT_ERR_DP_INVALID' }));
    expect(() => checkSecureAggregationStudy(manifest({ privacy: { secureAggregation: false, dp: { mode: 'client-central', ...dp } } }))).not.toThrow();
    expect(() => checkSecureAggregationStudy(manifest({ privacy: { dp: { mode: 'record', ...dp } } }))).not.toThrow();
  });

  it('should refuse a complete graph too large for byte-wise Shamir shares with COHORT_ERR_SECAGG_CONFIG', () => {
    const sites = Array.from({ length: 300 }, (_, i) => `s${i}`);
    const m = manifest({ participation: { minSites: 2, sites }, privacy: { secureAggregation: { neighbours: 'complete', quantizationBits: 16 } } });
    expect(() => checkSecureAggregationStudy(m)).toThrow(expect.objectContaining({ code: 'COHORT_ERR_SECAGG_CONFIG' }));
    expect(() => checkSecureAggregationStudy(manifest({ participation: { minSites: 2, sites }, privacy: { secureAggregation: { quantizationBits: 16 } } }))).not.toThrow();
  });
});
