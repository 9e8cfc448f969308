/**
 * Secure aggregation end to end: the real coordinator on port 0, real agents over real sockets, real training.
 * Sites disconnect when a given stage reaches them; a recorder at the coordinator's transport keeps every reply
 * it receives, to show that none of it (nor anything stored) is an individual site's update.
 */
import { readdirSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import {
  createStudy, json, RESEARCHER, runStudy, startCoordinator, startSites, tempDir, waitForEnd, wdbcManifest,
} from '../helpers/cluster.ts';
import type { TrainTask } from '../../protocol/messages.ts';
import type { StudyManifestInput } from '../../protocol/messages.ts';
import { encodeTensors } from '../../protocol/codec.ts';
import { weightShapes } from '../../protocol/models.ts';
import { manifestHash } from '../../protocol/signing.ts';
import { signedStudyRequest } from '../../cli/researcher.ts';
import { readLedger } from '../../site-agent/ledger.ts';
import { HISTOGRAM_BINS } from '../../protocol/metrics.ts';
import { encodeTrainingLanes, flatDelta } from '../../protocol/crypto/quantize.ts';
import { dropWhen, record, replay } from '../helpers/transport-spy.ts';
import { perTestCluster } from '../helpers/per-test-cluster.ts';

interface RoundBody {
  round: number;
  participants: string[];
  failures: { site: string; code: string; stage: string }[];
  pooled: { auc?: number };
  numExamples: number;
  secureAggregation?: { sites: number; threshold: number; survivors: number; dropped: number; maxWeight: number };
}

const quick = (over: Partial<StudyManifestInput> = {}): StudyManifestInput => wdbcManifest({
  training: { rounds: 2, localEpochs: 1, batchSize: 32, optimizer: 'adam', learningRate: 0.05 },
  participation: { minSites: 2, roundDeadlineMs: 20_000, waitForSitesMs: 10_000, maxRoundAttempts: 1 },
  ...over,
});

/** Every binary buffer anywhere inside a value. */
function binaries(v: unknown, out: Uint8Array[] = []): Uint8Array[] {
  if (v instanceof Uint8Array) out.push(v);
  else if (Array.isArray(v)) for (const x of v) binaries(x, out);
  else if (v && typeof v === 'object') for (const x of Object.values(v)) binaries(x, out);
  return out;
}

/** Every numeric array anywhere inside a JSON value. */
function numberArrays(v: unknown, out: number[][] = []): number[][] {
  if (Array.isArray(v)) {
    if (v.length > 0 && v.every((x) => typeof x === 'number')) out.push(v as number[]);
    else for (const x of v) numberArrays(x, out);
  } else if (v && typeof v === 'object') for (const x of Object.values(v)) numberArrays(x, out);
  return out;
}

function correlation(a: ArrayLike<number>, b: ArrayLike<number>): number {
  const n = Math.min(a.length, b.length);
  let ma = 0;
  let mb = 0;
  for (let i = 0; i < n; i++) { ma += a[i]!; mb += b[i]!; }
  ma /= n;
  mb /= n;
  let sab = 0;
  let saa = 0;
  let sbb = 0;
  for (let i = 0; i < n; i++) {
    const x = a[i]! - ma;
    const y = b[i]! - mb;
    sab += x * y;
    saa += x * x;
    sbb += y * y;
  }
  return sab / Math.sqrt(saa * sbb);
}

describe('secure aggregation over real sockets', () => {
  const run = perTestCluster();

  it('should complete a study while real agents disconnect at the share, masked-input and unmask stages', async () => {
    const c = await startCoordinator();
    run.coordinator = c.coordinator;
    run.sites = await startSites(c.url, 5);
    dropWhen(c.coordinator, [
      { site: run.sites[0]!, round: 1, kind: 'secagg-share' },
      { site: run.sites[1]!, round: 2, kind: 'train' },
      { site: run.sites[2]!, round: 3, kind: 'secagg-unmask' },
    ]);
    const res = await runStudy(c.url, quick({
      training: { rounds: 3, localEpochs: 1, batchSize: 32, optimizer: 'adam', learningRate: 0.05 },
      participation: { minSites: 3, roundDeadlineMs: 20_000, waitForSitesMs: 10_000, maxRoundAttempts: 1 },
      privacy: { secureAggregation: { stageDeadlineMs: 10_000 } },
    }), 90_000);
    expect(res.study.error).toBeUndefined();
    expect(res.study.status).toBe('completed');
    const rounds = res.rounds as unknown as RoundBody[];
    expect(rounds.map((r) => r.participants.length)).toEqual([4, 3, 3]);
    expect(rounds[0]!.failures).toContainEqual(expect.objectContaining({ site: 'Site 1', stage: 'secagg-share', code: 'COHORT_ERR_PROTOCOL_DISCONNECTED' }));
    expect(rounds[1]!.failures).toContainEqual(expect.objectContaining({ site: 'Site 2', stage: 'train', code: 'COHORT_ERR_PROTOCOL_DISCONNECTED' }));
    // Lost at unmasking, after its masked input arrived: its update is in the sum, its self mask rebuilt by others.
    expect(rounds[2]!.participants).toContain('Site 3');
    expect(rounds[2]!.failures).toContainEqual(expect.objectContaining({ site: 'Site 3', stage: 'secagg-unmask', code: 'COHORT_ERR_PROTOCOL_DISCONNECTED' }));
    expect(rounds.map((r) => r.secureAggregation?.sites)).toEqual([5, 4, 3]);
    expect(rounds.at(-1)!.pooled.auc).toBeGreaterThan(0.95);
  });

  it('should never receive nor store an individual update: only masked vectors arrive and the checkpoint is their mean', async () => {
    const dataDir = tempDir('cohort-secagg-coord-');
    const c = await startCoordinator({ dataDir });
    run.coordinator = c.coordinator;
    run.sites = await startSites(c.url, 3);
    const seen = record(c.coordinator);
    const res = await runStudy(c.url, quick({ model: { template: 'mlp', hidden: [32, 16] } }), 90_000);
    expect(res.study.status).toBe('completed');
    const id = res.study.id;
    const d = 30 * 32 + 32 + 32 * 16 + 16 + 16 + 1;
    const trainTasks = seen.sent.filter((s): s is { siteId: string; task: TrainTask } => s.task.kind === 'train');
    expect(trainTasks).toHaveLength(6);
    expect(trainTasks.every((t) => t.task.secagg)).toBe(true);

    // Everything the coordinator received: only the masked vectors are as long as an update, one per site and round.
    const big = seen.received.flatMap((r) => binaries(r.reply)).filter((b) => b.byteLength >= d * 4);
    expect(big).toHaveLength(6);
    expect(big.every((b) => b.byteLength === (d + 2) * 4)).toBe(true);
    expect(big[0]!.byteLength / (d * 4)).toBeLessThanOrEqual(1.05);

    const ckpt = (r: number) => c.coordinator.checkpoints.load(id, r);
    for (const round of [1, 2]) {
      const tasks = trainTasks.filter((t) => t.task.round === round);
      const updates = await Promise.all(tasks.map((t) => replay(run.sites.find((s) => s.agent.siteId === t.siteId)!, t.task)));
      const before = await ckpt(round - 1);
      const after = await ckpt(round);
      const stored = flatDelta(after, before);
      const total = updates.reduce((n, u) => n + u.numExamples, 0);
      const mean = new Float64Array(d);
      for (const u of updates) for (let i = 0; i < d; i++) mean[i]! += (u.numExamples / total) * u.delta[i]!;
      // The stored model moved by exactly the weighted mean of the sites' updates (quantization error only).
      let err = 0;
      for (let i = 0; i < d; i++) err = Math.max(err, Math.abs(stored[i]! - mean[i]!));
      expect(err).toBeLessThan(1e-4);
      // Positive control: a site's update sent unmasked (its quantized lanes) would be caught by the detector below.
      for (const u of updates) {
        const plain = encodeTrainingLanes(u.delta, 0.5, u.numExamples, { clip: 8, bits: 22, maxWeight: u.numExamples });
        expect(correlation(plain.subarray(0, d), u.delta)).toBeGreaterThan(0.99);
      }
      // No received vector of this round resembles any site's update (read as signed lanes or as floats).
      const received = big.slice((round - 1) * 3, round * 3);
      for (const b of received) {
        const lanes = new Int32Array(b.buffer.slice(b.byteOffset, b.byteOffset + b.byteLength));
        const floats = new Float32Array(lanes.buffer).subarray(0, d).map((x) => (Number.isFinite(x) ? x : 0));
        for (const u of updates) {
          expect(Math.abs(correlation(lanes.subarray(0, d), u.delta))).toBeLessThan(0.15);
          expect(Math.abs(correlation(floats, u.delta))).toBeLessThan(0.15);
        }
      }
    }

    // Everything the coordinator stored: the store holds no vector, and checkpoints hold only the round models.
    await c.coordinator.store.flush();
    const store = JSON.parse(readFileSync(join(dataDir, 'store.json'), 'utf8')) as unknown;
    // (The only long number arrays are the pooled score histograms: counts, HISTOGRAM_BINS long.)
    const long = numberArrays(store).filter((a) => a.length >= 100);
    expect(long.every((a) => a.length === HISTOGRAM_BINS && a.every((x) => Number.isInteger(x) && x >= 0))).toBe(true);
    const files = readdirSync(join(dataDir, 'checkpoints', id)).sort();
    expect(files).toEqual(['round-00000.cht', 'round-00001.cht', 'round-00002.cht']);
  });

  it('should abort the round below the threshold, store nothing and ask no site to unmask', async () => {
    const c = await startCoordinator();
    run.coordinator = c.coordinator;
    run.sites = await startSites(c.url, 3);
    const seen = record(c.coordinator);
    dropWhen(c.coordinator, [{ site: run.sites[2]!, round: 1, kind: 'train' }]);
    const res = await runStudy(c.url, quick({ privacy: { secureAggregation: { threshold: 1 } } }), 60_000);
    expect(res.study.status).toBe('failed');
    expect(res.study.error?.code).toBe('COHORT_ERR_SECAGG_BELOW_THRESHOLD');
    expect(res.study.completedRounds).toBe(0);
    expect(res.rounds).toHaveLength(0);
    await expect(c.coordinator.checkpoints.load(res.study.id, 1)).rejects.toThrow();
    expect(seen.sent.filter((s) => s.task.kind === 'secagg-unmask')).toHaveLength(0);
    expect(seen.received.filter((r) => r.kind === 'secagg-unmask')).toHaveLength(0);
  });

  it('should let a site refuse a round whose threshold is below its minimum, and join once it is not', async () => {
    const c = await startCoordinator();
    run.coordinator = c.coordinator;
    run.sites = await startSites(c.url, 3, { minSitesPerAggregate: 3 });
    const three = { minSites: 3, roundDeadlineMs: 20_000, waitForSitesMs: 10_000, maxRoundAttempts: 1 };
    // Threshold 0.6 of 3 sites is 2: an aggregate of 2 could be unmasked, fewer than these sites allow.
    const refused = await runStudy(c.url, quick({ participation: three }), 60_000);
    expect(refused.study.status).toBe('failed');
    expect(Object.values(refused.study.refusals ?? {}).map((r) => r.code)).toContain('COHORT_ERR_POLICY_TOO_FEW_SITES');
    expect(refused.rounds).toHaveLength(0);
    const ok = await runStudy(c.url, quick({ participation: three, privacy: { secureAggregation: { threshold: 1 } } }), 60_000);
    expect(ok.study.status).toBe('completed');
  });

  it('should never send a plaintext update for a study whose manifest has secure aggregation, whatever the task asks', async () => {
    const c = await startCoordinator();
    run.coordinator = c.coordinator;
    run.sites = await startSites(c.url, 2);
    const raw = quick();
    const req = signedStudyRequest(raw, RESEARCHER);
    const model = { spec: { template: 'logreg' as const, l2: 0 }, inputShape: [30], numClasses: 2 };
    const task: TrainTask = {
      kind: 'train', taskId: 'rogue-1', studyId: 'study-rogue', round: 1, dataset: 'wdbc', holdoutFraction: 0.25, seed: 42,
      manifest: { raw, hash: manifestHash(raw), signature: req.signature, researcherPublicKey: req.researcherPublicKey },
      model, weights: encodeTensors(weightShapes(model).map((shape) => ({ shape, data: new Float32Array(shape.reduce((a, b) => a * b, 1)) }))),
      localEpochs: 1, batchSize: 32, optimizer: 'adam', learningRate: 0.05, participants: 2,
    };
    const reply = await run.sites[0]!.agent.handle(task);
    expect(reply).toMatchObject({ ok: false, error: { code: 'COHORT_ERR_SITE_TASK_MISMATCH' } });
    expect(readLedger(join(run.sites[0]!.dir, 'ledger.jsonl')).at(-1)).toMatchObject({ kind: 'train', outcome: 'refused', code: 'COHORT_ERR_SITE_TASK_MISMATCH' });
  });

  it('should refuse at creation a study whose lanes could overflow, with a coded error and nothing stored', async () => {
    const c = await startCoordinator();
    run.coordinator = c.coordinator;
    const before = c.coordinator.store.listStudies().length;
    const names = Array.from({ length: 2000 }, (_, i) => `Site ${i}`);
    const r = await json<{ error: { code: string } }>(c.url, '/api/studies', { method: 'POST', body: quick({ participation: { minSites: 2, sites: names, roundDeadlineMs: 1000, waitForSitesMs: 1000, maxRoundAttempts: 1 } }) });
    expect(r.status).toBe(400);
    expect(r.body.error.code).toBe('COHORT_ERR_SECAGG_OVERFLOW');
    expect(c.coordinator.store.listStudies()).toHaveLength(before);
  });

  it('should combine record-level DP with secure aggregation: each masked reply carries the site\'s privacy report', async () => {
    const c = await startCoordinator();
    run.coordinator = c.coordinator;
    run.sites = await startSites(c.url, 3);
    const { WDBC_DP } = await import('../../cli/demo.ts');
    const res = await runStudy(c.url, quick({ training: { rounds: 2, ...WDBC_DP.training }, privacy: { dp: { ...WDBC_DP.dp, targetEpsilon: 1 } } }), 90_000);
    expect(res.study.status).toBe('completed');
    type DpRound = RoundBody & { privacy?: { mode: string; perSite: Record<string, { record?: number }> } };
    for (const r of res.rounds as unknown as DpRound[]) {
      expect(r.secureAggregation?.survivors).toBe(3);
      expect(r.privacy?.mode).toBe('record');
      expect(Object.keys(r.privacy!.perSite).sort()).toEqual(['Site 1', 'Site 2', 'Site 3']);
      expect(Object.values(r.privacy!.perSite).every((e) => (e.record ?? 0) > 0)).toBe(true);
      // Under record-level DP the counts go out rounded to tens, folded into the weight lane.
      expect(r.numExamples % 10).toBe(0);
    }
  });

  it('should reach the same AUC with secure aggregation as without it on the demo study', async () => {
    const c = await startCoordinator();
    run.coordinator = c.coordinator;
    run.sites = await startSites(c.url, 3);
    const { demoManifest } = await import('../../cli/demo.ts');
    const m = (secureAggregation: boolean) => demoManifest(6, 3, false, false, secureAggregation);
    const on = await createStudy(c.url, m(true));
    await json(c.url, `/api/studies/${on}/start`, { method: 'POST' });
    const withSecagg = await waitForEnd(c.url, on, 90_000);
    const without = await runStudy(c.url, m(false), 90_000);
    const aucOn = withSecagg.rounds.at(-1)!.pooled.auc!;
    const aucOff = without.rounds.at(-1)!.pooled.auc!;
    expect(withSecagg.rounds.every((r) => (r as unknown as RoundBody).secureAggregation)).toBe(true);
    expect(without.rounds.some((r) => (r as unknown as RoundBody).secureAggregation)).toBe(false);
    expect(Math.abs(aucOn - aucOff)).toBeLessThanOrEqual(0.002);
    expect(aucOn).toBeGreaterThanOrEqual(0.99);
  });
});
