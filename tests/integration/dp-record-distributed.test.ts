/**
 * Record-level DP with distributed Skellam noise (`record-distributed`), end to end: the real coordinator on port 0,
 * real agents over real sockets, real per-record gradients on WDBC, the real SecAgg+ stages and crypto. The study
 * completes; every site's record-level epsilon and the coordinator's are the accountant's; the coordinator receives
 * only masked vectors, and the step it stored carries the noise the plan puts in; a site past its budget refuses
 * before its keys leave.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { makeSite, runStudy, startCoordinator, wdbcManifest } from '../helpers/cluster.ts';
import { record, replayGradientSum } from '../helpers/transport-spy.ts';
import { splitCsvForSites, WDBC } from '../../cli/demo.ts';
import { flatDelta } from '../../protocol/crypto/quantize.ts';
import { epsilonOf, type PrivacyEvent } from '../../protocol/privacy/accountant.ts';
import { distributedMechanism } from '../../protocol/privacy/plan.ts';
import { DpSettingsSchema, type TrainTask } from '../../protocol/messages.ts';
import type { RoundPrivacy, StudyPrivacy } from '../../coordinator/privacy/study-privacy.ts';
import { perTestCluster } from '../helpers/per-test-cluster.ts';

interface Status {
  study: { id: string; status: string; error?: { code: string }; privacy?: StudyPrivacy };
  rounds: { round: number; participants: string[]; failures: { site: string; code: string; stage: string }[]; pooled: { accuracy: number; auc?: number }; numExamples: number; trainLoss: number; privacy?: RoundPrivacy; secureAggregation?: { sites: number; threshold: number; survivors: number; maxWeight: number } }[];
}

const D = 31; // logistic regression on WDBC's 30 features

describe('record-distributed differential privacy over real sockets', () => {
  const run = perTestCluster();

  it('should take noisy full-batch steps with the planned noise, charge every site the accountant\'s epsilon, send only masked vectors, and stop a site past its budget', async () => {
    const c = await startCoordinator();
    run.coordinator = c.coordinator;
    const parts = splitCsvForSites(WDBC, 3);
    const dp = { mode: 'record-distributed' as const, clip: 0.5, noiseMultiplier: 3, delta: 1e-5 };
    const rounds = 3;
    const lr = 4;
    // The mechanism depends on the session's bound on records per site: the default cap from the sites' schemas.
    const eventFor = (maxWeight: number): PrivacyEvent => distributedMechanism(DpSettingsSchema.parse(dp), rounds, D, 22, maxWeight).event;
    const capEvent = eventFor(Math.max(...parts.map((p) => Math.round((p.trim().split('\n').length - 1) / 10) * 10)) + 10);
    const cap = (epsilonOf([capEvent], 1e-5).epsilon + epsilonOf([{ ...capEvent, steps: 2 }], 1e-5).epsilon) / 2;
    const capped = await makeSite(c.url, 'Site 3', parts[2]!, { policy: { maxEpsilonPerStudy: cap, delta: 1e-5 } });
    run.sites = [await makeSite(c.url, 'Site 1', parts[0]!), await makeSite(c.url, 'Site 2', parts[1]!), capped];
    await Promise.all(run.sites.map((s) => s.agent.start()));
    const seen = record(c.coordinator);
    const end = await runStudy(c.url, wdbcManifest({
      training: { rounds, localEpochs: 1, batchSize: 65_536, optimizer: 'sgd', learningRate: lr },
      participation: { minSites: 2, roundDeadlineMs: 20_000, waitForSitesMs: 10_000, maxRoundAttempts: 1 },
      privacy: { secureAggregation: { stageDeadlineMs: 10_000 }, dp },
    }), 90_000) as unknown as Status;
    expect(end.study.error).toBeUndefined();
    expect(end.study.status).toBe('completed');
    expect(end.rounds.map((r) => r.participants.length)).toEqual([3, 2, 2]);

    // The capped site spent round 1, then refused at the first stage: no keys, no vector.
    for (const r of end.rounds.slice(1)) {
      expect(r.failures).toContainEqual(expect.objectContaining({ site: 'Site 3', stage: 'secagg-advertise', code: 'COHORT_ERR_POLICY_EPSILON_EXCEEDED' }));
    }
    expect(end.study.privacy!.exhausted?.['Site 3']?.message).toMatch(/record-level epsilon/);
    expect(readFileSync(join(capped.dir, 'privacy-budget.jsonl'), 'utf8').trim().split('\n')).toHaveLength(1);
    const fromCapped = seen.received.filter((r) => r.siteId === capped.agent.siteId && r.round >= 2);
    expect(fromCapped.length).toBeGreaterThanOrEqual(2);
    expect(fromCapped.every((r) => !r.reply.ok)).toBe(true);

    // Accounting: each round's event from its session's maxWeight; sites and coordinator compose the same events.
    const events: PrivacyEvent[] = [];
    for (const r of end.rounds) {
      events.push(eventFor(r.secureAggregation!.maxWeight));
      const expected = epsilonOf(events, 1e-5).epsilon;
      expect(r.privacy!.mode).toBe('record-distributed');
      expect(r.privacy!.record!.epsilon).toBeCloseTo(expected, 10);
      for (const site of r.participants) expect(r.privacy!.perSite[site]!.record).toBeCloseTo(expected, 10);
      expect(r.trainLoss).toBe(0);
    }
    expect(end.study.privacy!.record!.epsilon).toBeCloseTo(epsilonOf(events, 1e-5).epsilon, 10);
    expect(end.study.privacy!.perSite['Site 1']!.record).toBeCloseTo(epsilonOf(events, 1e-5).epsilon, 10);
    expect(end.study.privacy!.perSite['Site 3']!.record).toBeCloseTo(epsilonOf([events[0]!], 1e-5).epsilon, 10);

    // Only masked vectors reached the coordinator: no model, no gradient, no loss; the count lane is masked too.
    const trainReplies = seen.received.filter((r) => r.kind === 'train' && r.reply.ok);
    expect(trainReplies).toHaveLength(7);
    const ratios: number[] = [];
    for (const r of end.rounds) {
      const tasks = seen.sent.filter((s): s is { siteId: string; task: TrainTask } => s.task.kind === 'train' && s.task.round === r.round);
      const replays = await Promise.all(tasks.map(async (t) => ({ siteId: t.siteId, ...(await replayGradientSum(run.sites.find((s) => s.agent.siteId === t.siteId)!, t.task, dp.clip)) })));
      for (const rep of replays) {
        const reply = trainReplies.find((x) => x.siteId === rep.siteId && x.round === r.round)!.reply as { ok: true; data: Record<string, unknown> };
        expect(Object.keys(reply.data).sort()).toEqual(['backend', 'durationMs', 'masked', 'privacy']);
        const masked = reply.data.masked as Uint8Array;
        const lanes = new Int32Array(masked.buffer.slice(masked.byteOffset, masked.byteOffset + masked.byteLength));
        expect(lanes).toHaveLength(D + 2);
        expect(lanes[D + 1]).not.toBe(rep.n);
      }
      // The stored step minus the noise-free step (-lr * sum of clipped gradients / N) carries the plan's variance.
      const n = replays.reduce((a, x) => a + x.n, 0);
      expect(r.numExamples).toBe(n);
      const clean = new Float64Array(D);
      for (const rep of replays) for (let i = 0; i < D; i++) clean[i]! += (-lr * rep.sum[i]!) / n;
      const stored = flatDelta(await c.coordinator.checkpoints.load(end.study.id, r.round), await c.coordinator.checkpoints.load(end.study.id, r.round - 1));
      const dist = r.privacy!.record!.distributed!;
      const sigma2 = dist.actualVariance * (lr / (dist.scale * n)) ** 2;
      let sq = 0;
      for (let i = 0; i < D; i++) sq += (stored[i]! - clean[i]!) ** 2;
      ratios.push(sq / D / sigma2);
    }
    // 3 rounds x 31 coordinates: chi-square(93) / 93 lies outside [0.5, 1.6] with chance below 1e-4; without the
    // sites' noise the ratio would be about 1e-9 (rounding only), with twice the noise about 2.
    const pooled = ratios.reduce((a, b) => a + b, 0) / ratios.length;
    expect(pooled).toBeGreaterThan(0.5);
    expect(pooled).toBeLessThan(1.6);
  }, 60_000);
});
