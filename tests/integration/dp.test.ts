/**
 * Differential privacy end to end: real coordinator, real agents over real sockets, real WDBC data, real DP-SGD.
 * A site whose budget is spent refuses, says why, and sends nothing further; a study stops at its target epsilon.
 */
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { makeSite, runStudy, startCoordinator, tempDir, wdbcManifest } from '../helpers/cluster.ts';
import { splitCsvForSites, WDBC } from '../../cli/demo.ts';
import { readLedger } from '../../site-agent/ledger.ts';
import { CsvSource } from '../../site-agent/data/csv-source.ts';
import { CsvDatasetSchema } from '../../site-agent/config.ts';
import { epsilonOf, RdpAccountant } from '../../protocol/privacy/accountant.ts';
import { recordRoundPlan } from '../../protocol/privacy/plan.ts';
import { DpSettingsSchema } from '../../protocol/messages.ts';
import type { StudyPrivacy, RoundPrivacy } from '../../coordinator/privacy/study-privacy.ts';
import { perTestCluster } from '../helpers/per-test-cluster.ts';

interface DpStatus {
  study: { status: string; completedRounds: number; error?: { code: string; message: string; details?: Record<string, unknown> }; refusals?: Record<string, { code: string; message: string }>; privacy?: StudyPrivacy };
  rounds: { round: number; participants: string[]; failures: { site: string; code: string }[]; pooled: { accuracy: number }; privacy?: RoundPrivacy }[];
}

describe('differential privacy over real sockets', () => {
  const run = perTestCluster();

  it('should refuse further rounds at a site whose budget is spent, report why, and send nothing further', async () => {
    const c = await startCoordinator();
    run.coordinator = c.coordinator;
    const parts = splitCsvForSites(WDBC, 3);
    const training = { rounds: 3, localEpochs: 1, batchSize: 32, optimizer: 'sgd' as const, learningRate: 0.5 };
    const dp = { mode: 'record' as const, clip: 1, noiseMultiplier: 1.2, delta: 1e-5 };
    // Site 3's cap lies between one and two rounds of its own spend, computed as the site will compute it.
    const csv = join(tempDir(), 'site3.csv');
    writeFileSync(csv, parts[2]!);
    const n = (await new CsvSource(csv, CsvDatasetSchema.parse({ id: 'wdbc', kind: 'csv', path: csv, label: 'malignant' }), { holdoutFraction: 0.25, seed: 42 }).load('train')).n;
    const plan = recordRoundPlan(DpSettingsSchema.parse(dp), { batchSize: 32, localEpochs: 1, rounds: 3 }, n);
    const one = new RdpAccountant().compose(plan.event).epsilon(1e-5).epsilon;
    const two = new RdpAccountant().compose(plan.event).compose(plan.event).epsilon(1e-5).epsilon;
    const cap = (one + two) / 2;
    const capped = await makeSite(c.url, 'Site 3b', parts[2]!, { policy: { maxEpsilonPerStudy: cap, delta: 1e-5 } });
    run.sites = [await makeSite(c.url, 'Site 1', parts[0]!), await makeSite(c.url, 'Site 2', parts[1]!), capped];
    await Promise.all(run.sites.map((s) => s.agent.start()));

    const end = await runStudy(c.url, wdbcManifest({ training, privacy: { secureAggregation: false, dp } })) as unknown as DpStatus;
    expect(end.study.status).toBe('completed');
    // Round 1 with all three; rounds 2 and 3 without the capped site, whose refusal the researcher sees.
    expect(end.rounds[0]!.participants).toContain('Site 3b');
    for (const r of end.rounds.slice(1)) {
      expect(r.participants).not.toContain('Site 3b');
      expect(r.failures).toContainEqual(expect.objectContaining({ site: 'Site 3b', code: 'COHORT_ERR_POLICY_EPSILON_EXCEEDED' }));
    }
    expect(end.study.refusals?.['Site 3b']?.code).toBe('COHORT_ERR_POLICY_EPSILON_EXCEEDED');
    expect(end.study.privacy?.exhausted?.['Site 3b']?.message).toMatch(/policy allows/);
    // Epsilon per site, record level: the capped site stopped at its one-round spend; the others kept spending.
    const per = end.study.privacy!.perSite;
    expect(per['Site 3b']!.record).toBeCloseTo(one, 10);
    expect(per['Site 1']!.record!).toBeGreaterThan(per['Site 3b']!.record!);
    expect(end.rounds[2]!.privacy!.perSite['Site 1']!.record!).toBeGreaterThan(end.rounds[0]!.privacy!.perSite['Site 1']!.record!);
    expect(end.study.privacy!.mode).toBe('record');

    // The capped site's own records: one charge in its budget file, and after its refusal nothing but refusals left.
    const budget = readFileSync(join(capped.dir, 'privacy-budget.jsonl'), 'utf8').trim().split('\n');
    expect(budget).toHaveLength(1);
    const ledger = readLedger(join(capped.dir, 'ledger.jsonl'));
    const firstRefusal = ledger.findIndex((e) => e.code === 'COHORT_ERR_POLICY_EPSILON_EXCEEDED');
    expect(firstRefusal).toBeGreaterThan(0);
    expect(ledger.slice(firstRefusal).every((e) => e.outcome === 'refused')).toBe(true);
    expect(ledger.filter((e) => e.kind === 'train' && e.outcome === 'sent')).toHaveLength(1);
    expect(ledger[firstRefusal]!.epsilonSpent).toBeCloseTo(one, 10);
    expect(ledger[firstRefusal]!.privacy).toMatchObject({ dp: 'record' });
    // The uncapped sites are unaffected; training stayed useful under record-level DP.
    expect(existsSync(join(run.sites[0]!.dir, 'privacy-budget.jsonl'))).toBe(true);
    expect(end.rounds.at(-1)!.pooled.accuracy).toBeGreaterThan(0.8);
  }, 120_000);

  it('should stop a study whose next round would pass its target epsilon, with adaptive clipping on the way', async () => {
    const c = await startCoordinator();
    run.coordinator = c.coordinator;
    const parts = splitCsvForSites(WDBC, 2);
    run.sites = await Promise.all(parts.map((csv, i) => makeSite(c.url, `Site ${i + 1}`, csv)));
    await Promise.all(run.sites.map((s) => s.agent.start()));
    // Two rounds of client-level noise 3 fit under the target; the third would not.
    const twoRounds = epsilonOf([{ kind: 'sampled-gaussian', q: 1, noiseMultiplier: 3, steps: 2 }], 1e-5).epsilon;
    const dp = { mode: 'client-central' as const, clip: 0.5, noiseMultiplier: 3, targetEpsilon: twoRounds * 1.001, delta: 1e-5, adaptiveClipping: { targetQuantile: 0.5, learningRate: 0.5 } };
    const end = await runStudy(c.url, wdbcManifest({ training: { rounds: 5, localEpochs: 1, batchSize: 32, optimizer: 'adam', learningRate: 0.05 }, privacy: { secureAggregation: false, dp } })) as unknown as DpStatus;
    expect(end.study.status).toBe('stopped');
    expect(end.study.error?.code).toBe('COHORT_ERR_STUDY_EPSILON_TARGET');
    expect(end.study.error?.details).toMatchObject({ level: 'client', lastRound: 2 });
    expect(end.study.completedRounds).toBe(2);
    expect(end.rounds).toHaveLength(2);
    const [r1, r2] = [end.rounds[0]!.privacy!.client!, end.rounds[1]!.privacy!.client!];
    expect(r2.epsilon).toBeCloseTo(twoRounds, 10);
    expect(r2.epsilon).toBeLessThanOrEqual(dp.targetEpsilon);
    expect(end.study.privacy!.client!.epsilon).toBeCloseTo(twoRounds, 10);
    // Adaptive clipping: round 2 used the clip round 1 chose, and the bit query moved it.
    expect(r1.clip).toBe(0.5);
    expect(r2.clip).toBe(r1.nextClip);
    expect(r1.nextClip).not.toBe(0.5);
    // Update noise is larger than z * clip because the clip-count query takes part of the budget.
    expect(r1.noiseStd).toBeGreaterThan(3 * 0.5);
    // Each site keeps its own client-level count, the same as the coordinator's.
    expect(end.rounds[1]!.privacy!.perSite['Site 1']!.client).toBeCloseTo(twoRounds, 10);
  }, 120_000);
});
