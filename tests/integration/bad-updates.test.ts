import { afterEach, describe, expect, it } from 'vitest';
import { runStudy, startCoordinator, startSites, wdbcManifest, type TestSite } from '../helpers/cluster.ts';
import { connectRogue, type RogueSite } from '../helpers/rogue-site.ts';
import { decodeTensors, encodeTensors } from '../../protocol/codec.ts';
import { FedAvg } from '../../coordinator/strategies/fedavg.ts';
import type { Coordinator } from '../../coordinator/app.ts';
import type { Task } from '../../protocol/messages.ts';

const schema = { kind: 'csv', label: 'malignant', classes: ['0', '1'], inputShape: [30], examplesRounded: 200 };

/** Replies like a real site to describe, stats and evaluate, but sends `bad` as its trained weights. */
function rogueHandler(bad: (t: Extract<Task, { kind: 'train' }>) => unknown) {
  return (t: Task) => {
    if (t.kind === 'describe') return { ok: true, data: { schema } };
    // Federated standardization: per-feature count, sum and sum of squares of 200 standardized rows.
    if (t.kind === 'stats') return { ok: true, data: { stats: { slots: 30, vector: [...Array(30).fill(200), ...Array(30).fill(0), ...Array(30).fill(200)] } } };
    if (t.kind === 'train') return bad(t);
    return { ok: true, data: { counts: { n: 10, lossSum: 5, correct: 5 } } };
  };
}

const cases: [string, string, (t: Extract<Task, { kind: 'train' }>) => unknown][] = [
  ['NaN weights', 'COHORT_ERR_TENSOR_NONFINITE', (t) => {
    const w = decodeTensors(t.weights);
    w[0]!.data[3] = NaN;
    return { ok: true, data: { weights: encodeTensors(w), numExamples: 200, trainLoss: 0.1, backend: 'cpu', durationMs: 1 } };
  }],
  ['a tensor of the wrong shape', 'COHORT_ERR_TENSOR_SHAPE', () => ({
    ok: true, data: { weights: encodeTensors([{ shape: [29, 1], data: new Float32Array(29) }, { shape: [1], data: new Float32Array(1) }]), numExamples: 200, trainLoss: 0.1, backend: 'cpu', durationMs: 1 },
  })],
  ['a truncated frame', 'COHORT_ERR_TENSOR_MALFORMED', (t) => ({
    ok: true, data: { weights: t.weights.subarray(0, t.weights.length - 7), numExamples: 200, trainLoss: 0.1, backend: 'cpu', durationMs: 1 },
  })],
  ['a malformed reply', 'COHORT_ERR_PROTOCOL_MALFORMED', () => ({ ok: true, data: { weights: [1, 2, 3], numExamples: -4 } })],
  ['an unregistered error code', 'COHORT_ERR_PROTOCOL_MALFORMED', () => ({ ok: false, error: { code: 'EVIL', message: 'x' } })],
];

describe('bad updates from a site', () => {
  let coordinator: Coordinator | undefined;
  let sites: TestSite[] = [];
  let rogue: RogueSite | undefined;
  afterEach(async () => {
    rogue?.close();
    await Promise.all(sites.map((s) => s.agent.stop()));
    await coordinator?.close();
  });

  for (const [what, code, bad] of cases) {
    it(`should refuse ${what} with ${code}, log it, and aggregate only the honest sites`, async () => {
      const c = await startCoordinator({ enrollment: 'open' });
      coordinator = c.coordinator;
      sites = await startSites(c.url, 2);
      rogue = await connectRogue(c.url, 'Rogue', rogueHandler(bad));
      expect((await rogue.authenticate()).ok).toBe(true);
      const res = await runStudy(c.url, wdbcManifest({ training: { rounds: 1, localEpochs: 1, batchSize: 32, optimizer: 'adam', learningRate: 0.05 } }));
      expect(res.study.status).toBe('completed');
      const round = res.rounds[0]!;
      expect(round.participants.sort()).toEqual(['Site 1', 'Site 2']);
      expect(round.failures).toContainEqual(expect.objectContaining({ site: 'Rogue', code, stage: 'train' }));
      expect(c.log.lines.some((l) => l.code === code && l.site === 'Rogue')).toBe(true);
      // The stored model is finite and has the model's shapes: the bad update touched nothing.
      const ckpt = await c.coordinator.checkpoints.load(res.study.id, 1);
      expect(ckpt.map((t) => t.shape)).toEqual([[30, 1], [1]]);
      expect(ckpt.every((t) => t.data.every(Number.isFinite))).toBe(true);
    });
  }

  it('should leave the round and store unchanged when bad updates leave too few sites', async () => {
    const c = await startCoordinator({ enrollment: 'open' });
    coordinator = c.coordinator;
    sites = await startSites(c.url, 1);
    rogue = await connectRogue(c.url, 'Rogue', rogueHandler(cases[0]![2]));
    expect((await rogue.authenticate()).ok).toBe(true);
    const res = await runStudy(c.url, wdbcManifest({ participation: { minSites: 2, roundDeadlineMs: 10_000, waitForSitesMs: 5_000, maxRoundAttempts: 2 } }));
    expect(res.study.status).toBe('failed');
    expect(res.study.error?.code, JSON.stringify(res.study)).toBe('COHORT_ERR_ROUND_TOO_FEW_RESULTS');
    expect(res.study.error?.code).toBe('COHORT_ERR_ROUND_TOO_FEW_RESULTS');
    expect(res.study.completedRounds).toBe(0);
    expect(res.rounds).toHaveLength(0);
    // The rogue was asked twice (two attempts) and refused both times.
    expect(rogue.tasks.filter((t) => t.kind === 'train')).toHaveLength(2);
  });
});

describe('FedAvg', () => {
  it('should weight site models by their example counts', () => {
    const g = [{ shape: [2], data: new Float32Array([0, 0]) }];
    const out = new FedAvg().aggregate(g, { kind: 'individual', results: [
      { site: 'a', numExamples: 100, weights: [{ shape: [2], data: new Float32Array([1, 2]) }] },
      { site: 'b', numExamples: 300, weights: [{ shape: [2], data: new Float32Array([5, 6]) }] },
    ] }, 1);
    expect([...out[0]!.data]).toEqual([4, 5]);
  });
});
