/**
 * Study creation under secure aggregation: a strategy that needs individual updates is refused before any site is
 * asked, generically from `Strategy.requires`. (The end-to-end test with a real robust strategy comes with the
 * strategies that need it.)
 */
import { describe, expect, it } from 'vitest';
import { checkSecureAggregationStudy } from '../../coordinator/secure-aggregation/study-check.ts';
import { FedAvg, strategyFor } from '../../coordinator/strategies/fedavg.ts';
import type { Strategy } from '../../coordinator/strategies/strategy.ts';
import { StudyManifestSchema, type StudyManifestInput } from '../../protocol/messages.ts';

const manifest = (over: Partial<StudyManifestInput> = {}) => StudyManifestSchema.parse({
  name: 'x', task: { dataset: 'd', label: 'y' }, model: { template: 'logreg' }, training: { rounds: 1 }, ...over,
});

/** A median-like strategy: it must see each site's update. */
const median: Strategy = { name: 'median', requires: 'individual', aggregate: (g) => [...g] };
const registry = (name: string): Strategy => (name === 'fedavg' ? median : strategyFor(name));

describe('secure aggregation at study creation', () => {
  it('should turn secure aggregation on by default and accept true, false or parameters', () => {
    expect(manifest().privacy.secureAggregation).toBe(true);
    expect(manifest({ privacy: { secureAggregation: false } }).privacy.secureAggregation).toBe(false);
    expect(manifest({ privacy: { secureAggregation: { threshold: 0.8 } } }).privacy.secureAggregation).toMatchObject({ threshold: 0.8, clip: 8, quantizationBits: 22, neighbours: 'auto' });
    expect(StudyManifestSchema.safeParse({ ...manifest(), privacy: { secureAggregation: { threshold: 0.5 } } }).success).toBe(false);
  });

  it('should accept a linear strategy under secure aggregation', () => {
    expect(new FedAvg().requires).toBe('sum');
    expect(() => checkSecureAggregationStudy(manifest())).not.toThrow();
  });

  it('should refuse a strategy that needs individual updates with COHORT_ERR_STUDY_SECAGG_STRATEGY when secure aggregation is on', () => {
    expect(() => checkSecureAggregationStudy(manifest(), registry)).toThrow(expect.objectContaining({ code: 'COHORT_ERR_STUDY_SECAGG_STRATEGY' }));
    expect(() => checkSecureAggregationStudy(manifest({ privacy: { secureAggregation: false } }), registry)).not.toThrow();
  });

  it('should refuse a complete graph too large for byte-wise Shamir shares with COHORT_ERR_SECAGG_CONFIG', () => {
    const sites = Array.from({ length: 300 }, (_, i) => `s${i}`);
    const m = manifest({ participation: { minSites: 2, sites }, privacy: { secureAggregation: { neighbours: 'complete', quantizationBits: 16 } } });
    expect(() => checkSecureAggregationStudy(m)).toThrow(expect.objectContaining({ code: 'COHORT_ERR_SECAGG_CONFIG' }));
    expect(() => checkSecureAggregationStudy(manifest({ participation: { minSites: 2, sites }, privacy: { secureAggregation: { quantizationBits: 16 } } }))).not.toThrow();
  });
});
