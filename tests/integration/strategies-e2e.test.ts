import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { signedStudyRequest } from '../../cli/researcher.ts';
import type { Coordinator } from '../../coordinator/app.ts';
import { RESEARCHER, json, runStudy, startCoordinator, startSites, wdbcManifest, type TestSite } from '../helpers/cluster.ts';

describe('aggregation strategies over real sockets', () => {
  let coordinator: Coordinator;
  let url: string;
  let sites: TestSite[];

  beforeAll(async () => {
    ({ coordinator, url } = await startCoordinator());
    sites = await startSites(url, 3);
  });
  afterAll(async () => {
    await Promise.all(sites.map((s) => s.agent.stop()));
    await coordinator.close();
  });

  const training = { rounds: 3, localEpochs: 2, batchSize: 16, optimizer: 'adam' as const, learningRate: 0.05 };
  const participation = { minSites: 3, roundDeadlineMs: 20_000, waitForSitesMs: 10_000, maxRoundAttempts: 2 };

  it('should refuse a robust strategy under secure aggregation at creation, with a coded error, and store nothing', async () => {
    const before = (await json<{ studies: unknown[] }>(url, '/api/studies')).body.studies.length;
    const res = await json<{ error: { code: string; message: string } }>(url, '/api/studies', {
      method: 'POST', body: signedStudyRequest(wdbcManifest({ strategy: { name: 'fedmedian' }, privacy: { secureAggregation: true } }), RESEARCHER),
    });
    expect(res.status).toBe(400);
    expect(res.body.error.code).toBe('COHORT_ERR_STUDY_STRATEGY_NEEDS_INDIVIDUAL');
    expect(res.body.error.message).toContain('secure aggregation');
    const krum = await json<{ error: { code: string } }>(url, '/api/studies', {
      method: 'POST', body: signedStudyRequest(wdbcManifest({ strategy: { name: 'krum', byzantine: 1 }, participation }), RESEARCHER),
    });
    expect(krum.status).toBe(400);
    expect(krum.body.error.code).toBe('COHORT_ERR_STUDY_STRATEGY_INVALID');
    expect((await json<{ studies: unknown[] }>(url, '/api/studies')).body.studies).toHaveLength(before);
  });

  it('should train WDBC across 3 sites with the coordinate-wise median when secure aggregation is off', async () => {
    const res = await runStudy(url, wdbcManifest({ strategy: { name: 'fedmedian' }, training, participation }));
    expect(res.study.status).toBe('completed');
    expect(res.rounds.map((r) => r.participants.length)).toEqual([3, 3, 3]);
    expect(res.rounds.at(-1)!.pooled.auc).toBeGreaterThanOrEqual(0.97);
  });

  it('should train with FedProx: sites add the proximal term the approved manifest names', async () => {
    const res = await runStudy(url, wdbcManifest({ strategy: { name: 'fedprox', mu: 0.1 }, training, participation }));
    expect(res.study.status).toBe('completed');
    expect(res.rounds.every((r) => r.failures.length === 0)).toBe(true);
    expect(res.rounds.at(-1)!.pooled.auc).toBeGreaterThanOrEqual(0.97);
  });
});
