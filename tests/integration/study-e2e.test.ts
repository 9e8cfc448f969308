import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import * as tf from '@tensorflow/tfjs';
import { createStudy, runStudy, startCoordinator, startSites, wdbcManifest, json, type TestSite } from '../helpers/cluster.ts';
import type { Coordinator } from '../../coordinator/app.ts';

describe('a federated study over real sockets', () => {
  let coordinator: Coordinator;
  let url: string;
  let adminToken: string;
  let sites: TestSite[];

  beforeAll(async () => {
    ({ coordinator, url, adminToken } = await startCoordinator());
    sites = await startSites(url, 3);
  });
  afterAll(async () => {
    await Promise.all(sites.map((s) => s.agent.stop()));
    await coordinator.close();
  });

  it('should train WDBC across 3 sites to pooled hold-out AUC >= 0.99 when running FedAvg', async () => {
    const res = await runStudy(url, wdbcManifest({ training: { rounds: 5, localEpochs: 2, batchSize: 16, optimizer: 'adam', learningRate: 0.05 }, participation: { minSites: 3, roundDeadlineMs: 20_000, waitForSitesMs: 10_000, maxRoundAttempts: 2 } }));
    expect(res.study.status).toBe('completed');
    expect(res.rounds.map((r) => r.round)).toEqual([1, 2, 3, 4, 5]);
    const last = res.rounds.at(-1)!;
    expect(last.participants).toHaveLength(3);
    expect(last.pooled.auc).toBeGreaterThanOrEqual(0.99);
    expect(last.pooled.accuracy).toBeGreaterThanOrEqual(0.95);
    // The pooled hold-out is the union of the sites' hold-outs (25% of 569, stratified per site).
    expect(last.pooled.n).toBeGreaterThan(130);
    expect(Object.keys(last.perSite).sort()).toEqual(['Site 1', 'Site 2', 'Site 3']);

    // The model downloads in the tfjs layers format and predicts.
    const model = await tf.loadLayersModel(`${url}/api/studies/${res.study.id}/model/model.json`, { requestInit: { headers: { authorization: `Bearer ${adminToken}` } } });
    const out = model.predict(tf.zeros([2, 30])) as tf.Tensor;
    expect(out.shape).toEqual([2, 1]);
    const v = await out.data();
    expect([...v].every((p) => p > 0 && p < 1)).toBe(true);
  });

  it('should list sites online and studies over REST', async () => {
    const sitesRes = await json<{ sites: { name: string; online: boolean }[] }>(url, '/api/sites');
    expect(sitesRes.body.sites.filter((s) => s.online).map((s) => s.name).sort()).toEqual(['Site 1', 'Site 2', 'Site 3']);
    const list = await json<{ studies: { status: string }[] }>(url, '/api/studies');
    expect(list.body.studies.length).toBeGreaterThanOrEqual(1);
    const health = await json<{ ok: boolean; sitesOnline: number }>(url, '/healthz');
    expect(health.body).toMatchObject({ ok: true, sitesOnline: 3 });
  });

  it('should refuse an invalid manifest with a coded error and store nothing', async () => {
    const before = await json<{ studies: unknown[] }>(url, '/api/studies');
    const bad = await json<{ error: { code: string } }>(url, '/api/studies', { method: 'POST', body: { name: 'x', model: { template: 'transformer' } } });
    expect(bad.status).toBe(400);
    expect(bad.body.error.code).toBe('COHORT_ERR_PROTOCOL_MALFORMED');
    const notJson = await json<{ error: { code: string } }>(url, '/api/studies', { method: 'POST', body: '{"name":' });
    expect(notJson.status).toBe(400);
    expect(notJson.body.error.code).toBe('COHORT_ERR_PROTOCOL_MALFORMED');
    const after = await json<{ studies: unknown[] }>(url, '/api/studies');
    expect(after.body.studies.length).toBe(before.body.studies.length);
    const missing = await json<{ error: { code: string } }>(url, '/api/studies/study-nope');
    expect(missing.status).toBe(404);
    expect(missing.body.error.code).toBe('COHORT_ERR_STUDY_NOT_FOUND');
  });

  it('should finish a round without a site that drops out mid-study', async () => {
    const id = await createStudy(url, wdbcManifest({ training: { rounds: 4, localEpochs: 1, batchSize: 16, optimizer: 'adam', learningRate: 0.05 }, participation: { minSites: 2, roundDeadlineMs: 5_000, waitForSitesMs: 10_000, maxRoundAttempts: 2 } }));
    await json(url, `/api/studies/${id}/start`, { method: 'POST' });
    // Take one site away after the first round completes.
    for (;;) {
      const s = await json<{ study: { completedRounds: number } }>(url, `/api/studies/${id}`);
      if (s.body.study.completedRounds >= 1) break;
      await new Promise((r) => setTimeout(r, 50));
    }
    await sites[2]!.agent.stop();
    let final: { study: { status: string }; rounds: { participants: string[] }[] };
    for (;;) {
      const s = await json<typeof final>(url, `/api/studies/${id}`);
      if (s.body.study.status !== 'running') { final = s.body; break; }
      await new Promise((r) => setTimeout(r, 100));
    }
    expect(final.study.status).toBe('completed');
    expect(final.rounds).toHaveLength(4);
    expect(final.rounds.at(-1)!.participants.sort()).toEqual(['Site 1', 'Site 2']);
  });
});
