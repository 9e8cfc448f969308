/**
 * What a researcher takes away from a study, over real sockets with real agents training WDBC: cross-site
 * evaluation per site, leave-one-site-out, and the downloaded model with its model card. The model is checked
 * against the sites' real hold-out rows: scored here, the pooled and per-site AUCs computed on the raw scores
 * agree with the ones the coordinator computed from counts alone.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import * as tf from '@tensorflow/tfjs';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Coordinator } from '../../coordinator/app.ts';
import type { ModelCard } from '../../coordinator/model-card.ts';
import type { StudyMetricsReport } from '../../coordinator/study-metrics.ts';
import { downloadModel } from '../../cli/study-model.ts';
import { clinicalMetrics, exactAuc } from '../../protocol/metrics.ts';
import { manifestHash } from '../../protocol/signing.ts';
import { loadSiteConfig, resolveIn } from '../../site-agent/config.ts';
import { CsvSource } from '../../site-agent/data/csv-source.ts';
import { standardize } from '../../site-agent/data/standardize.ts';
import { adminTokenFor, createStudy, json, runStudy, startCoordinator, startSites, tempDir, waitFor, waitForEnd, wdbcManifest, type TestSite } from '../helpers/cluster.ts';

describe('researcher results', () => {
  let coordinator: Coordinator;
  let url: string;
  let sites: TestSite[];
  let studyId: string;
  const rounds = 2;

  beforeAll(async () => {
    ({ coordinator, url } = await startCoordinator());
    sites = await startSites(url, 3);
    const manifest = wdbcManifest({ name: 'loso test', evaluation: { holdoutFraction: 0.25, leaveOneSiteOut: true } });
    manifest.training = { ...manifest.training, rounds };
    const end = await runStudy(url, manifest);
    expect(end.study.status).toBe('completed');
    studyId = end.study.id;
  }, 120_000);
  afterAll(async () => {
    await Promise.all(sites.map((s) => s.agent.stop()));
    await coordinator.close();
  });

  it('should report every site\'s hold-out scored by the global model, with intervals, each round', async () => {
    const r = await json<StudyMetricsReport>(url, `/api/studies/${studyId}/metrics`);
    expect(r.status).toBe(200);
    expect(r.body.rounds.map((x) => x.round)).toEqual([1, 2]);
    for (const round of r.body.rounds) {
      expect(Object.keys(round.perSite).sort()).toEqual(['Site 1', 'Site 2', 'Site 3']);
      for (const m of Object.values(round.perSite)) {
        expect(m.unverifiable).toBeUndefined(); // the round kept each site's counts
        expect(m.n).toBeGreaterThanOrEqual(20);
        expect(m.auc!.lower).toBeLessThanOrEqual(m.auc!.value);
        expect(m.auc!.upper).toBeGreaterThanOrEqual(m.auc!.value);
        expect(m.minCellCount).toBe(10);
      }
      expect(round.pooled.n).toBe(Object.values(round.perSite).reduce((a, m) => a + m.n, 0));
    }
  });

  it('should train one model per left-out site on the others and score it on that site', async () => {
    const { body } = await json<StudyMetricsReport>(url, `/api/studies/${studyId}/metrics`);
    const loso = body.loso!;
    expect(loso.status).toBe('completed');
    expect(loso.folds.map((f) => f.heldOut)).toEqual(['Site 1', 'Site 2', 'Site 3']);
    for (const f of loso.folds) {
      expect(f.status).toBe('completed');
      expect(f.rounds).toBe(rounds);
      expect(f.trainedOn).toEqual(['Site 1', 'Site 2', 'Site 3'].filter((s) => s !== f.heldOut));
      expect(f.metrics!.n).toBe(body.rounds.at(-1)!.perSite[f.heldOut]!.n); // the same fixed hold-out
      expect(f.metrics!.auc!.value).toBeGreaterThan(0.9); // WDBC carries over between these sites
      expect(f.global!.auc!.value).toBeCloseTo(body.rounds.at(-1)!.perSite[f.heldOut]!.auc!.value, 12);
    }
    expect(loso.pooled!.n).toBe(body.rounds.at(-1)!.pooled.n);
    // Each fold's tasks went only to the sites it trained on, and the held-out site only evaluated.
    const audit = coordinator.store.listAudit({ studyId }).filter((a) => a.action === 'study.loso.fold');
    expect(audit.map((a) => a.site)).toEqual(['Site 1', 'Site 2', 'Site 3']);
  });

  it('should refuse leave-one-site-out with secure aggregation at creation', async () => {
    const r = await json<{ error: { code: string } }>(url, '/api/studies', { method: 'POST', body: wdbcManifest({ privacy: { secureAggregation: true }, evaluation: { holdoutFraction: 0.25, leaveOneSiteOut: true } }) });
    expect([r.status, r.body.error.code]).toEqual([400, 'COHORT_ERR_STUDY_INVALID_MANIFEST']);
  });

  it('should download a model that loads and predicts, with a card whose numbers are the study record\'s', async () => {
    const out = join(tempDir('cohort-model-'), 'model');
    const { card } = await downloadModel(url, studyId, out, adminTokenFor(url));
    const study = coordinator.store.mustGetStudy(studyId);
    const records = coordinator.store.listRounds(studyId);
    const last = records.at(-1)!;

    // The card against the study record.
    const written = JSON.parse(readFileSync(join(out, 'model-card.json'), 'utf8')) as ModelCard;
    expect(written).toEqual(card);
    expect(card.manifestHash).toBe(study.manifestHash);
    expect(card.manifestHash).toBe(manifestHash(study.manifestRaw));
    expect(card.researcher).toMatchObject({ name: 'admin (seeded)', signed: true });
    expect(card.sites.map((s) => s.name)).toEqual(['Site 1', 'Site 2', 'Site 3']);
    for (const s of card.sites) expect(s.rounds).toEqual([1, 2]);
    expect(card.training).toMatchObject({ roundsPlanned: rounds, roundsCompleted: rounds, strategy: 'fedavg' });
    expect(card.model).toMatchObject({ round: rounds, parameters: 31, inputShape: [30], numClasses: 2 });
    expect(card.evaluation.final!.round).toBe(rounds);
    expect(card.evaluation.final!.pooled.auc!.value).toBeCloseTo(last.pooled.auc!, 12);
    expect(card.evaluation.final!.pooled.auc).toEqual(clinicalMetrics(last.pooledCounts).auc);
    expect(card.evaluation.final!.pooled.accuracy!.value).toBeCloseTo(last.pooled.accuracy, 12);
    for (const [site, m] of Object.entries(last.perSite)) expect(card.evaluation.final!.perSite[site]!.auc!.value).toBeCloseTo(m.auc!, 12);
    card.evaluation.perRound.forEach((r, i) => expect(r.auc).toBeCloseTo(records[i]!.pooled.auc!, 12));
    expect(card.evaluation.leaveOneSiteOut!.folds).toHaveLength(3);
    expect(card.privacy).toEqual({ secureAggregation: false, settings: {} });
    expect(card.dates.firstRoundStarted).toBe(records[0]!.startedAt);
    expect(card.cohortVersion).toMatch(/^\d+\.\d+\.\d+/);
    const md = readFileSync(join(out, 'MODEL_CARD.md'), 'utf8');
    expect(md).toContain(`# Model card: loso test`);
    expect(md).toContain(card.manifestHash!);
    expect(md).toContain(card.evaluation.final!.pooled.auc!.value.toFixed(3));
    expect(md).toContain('## Leave-one-site-out');

    // The files load as a tfjs layers model, and predict.
    const modelJson = JSON.parse(readFileSync(join(out, 'model.json'), 'utf8')) as { modelTopology: object; weightsManifest: { paths: string[]; weights: tf.io.WeightsManifestEntry[] }[] };
    expect(modelJson.weightsManifest[0]!.paths).toEqual(['weights.bin']);
    const bin = readFileSync(join(out, 'weights.bin'));
    const model = await tf.loadLayersModel(tf.io.fromMemory({
      modelTopology: modelJson.modelTopology, weightSpecs: modelJson.weightsManifest[0]!.weights,
      weightData: bin.buffer.slice(bin.byteOffset, bin.byteOffset + bin.byteLength),
    }));
    // Score every site's real hold-out rows here, and compare with what the coordinator computed from counts.
    const scores: number[] = [];
    const labels: number[] = [];
    for (const s of sites) {
      const cfg = loadSiteConfig(s.dir);
      const ds = cfg.datasets[0]!;
      if (ds.kind !== 'csv') throw new Error('the test sites hold CSV data');
      // Sources give raw features; sites scale them with the statistics pooled across sites before round 1.
      const raw = await new CsvSource(resolveIn(s.dir, ds.path), ds, { holdoutFraction: 0.25, seed: 42 }).load('holdout');
      // The model card carries them, so whoever uses the model can scale inputs the same way.
      expect(card.data.standardization).toEqual(study.standardization);
      const holdout = standardize(raw, card.data.standardization!);
      const p = model.predict(tf.tensor(holdout.x, [holdout.n, ...holdout.inputShape])) as tf.Tensor;
      const siteScores = Array.from(await p.data());
      p.dispose();
      expect(siteScores.every((v) => v >= 0 && v <= 1)).toBe(true);
      expect(holdout.n).toBe(last.perSiteCounts![s.name]!.n);
      expect(Math.abs(exactAuc(siteScores, holdout.y)! - card.evaluation.final!.perSite[s.name]!.auc!.value)).toBeLessThan(0.002);
      scores.push(...siteScores);
      labels.push(...holdout.y);
    }
    model.dispose();
    // Acceptance: pooled AUC from summed counts equals the AUC on the pooled scores to within 0.002.
    expect(Math.abs(exactAuc(scores, labels)! - card.evaluation.final!.pooled.auc!.value)).toBeLessThan(0.002);
    expect(card.evaluation.final!.pooled.auc!.value).toBeGreaterThan(0.95);
  });

  it('should record a fold that cannot run with its code, without failing the study', async () => {
    // Two sites: leaving one out leaves one, below the study's minimum of two.
    const m = wdbcManifest({ name: 'loso two sites', evaluation: { holdoutFraction: 0.25, leaveOneSiteOut: true } });
    m.training = { ...m.training, rounds: 1 };
    m.participation = { ...m.participation, sites: ['Site 1', 'Site 2'] };
    const end = await runStudy(url, m);
    expect(end.study.status).toBe('completed');
    const { body } = await json<StudyMetricsReport>(url, `/api/studies/${end.study.id}/metrics`);
    expect(body.loso!.folds.map((f) => [f.heldOut, f.status, f.error?.code])).toEqual([
      ['Site 1', 'failed', 'COHORT_ERR_STUDY_NOT_ENOUGH_SITES'], ['Site 2', 'failed', 'COHORT_ERR_STUDY_NOT_ENOUGH_SITES'],
    ]);
  });
});

describe('leave-one-site-out across a coordinator restart', () => {
  let sites: TestSite[] = [];
  const coordinators: Coordinator[] = [];
  afterAll(async () => {
    await Promise.all(sites.map((s) => s.agent.stop()));
    for (const c of coordinators) await c.close();
  });

  it('should resume at the next fold after a restart, running every fold exactly once', async () => {
    const dataDir = tempDir('cohort-loso-resume-');
    const first = await startCoordinator({ dataDir });
    coordinators.push(first.coordinator);
    sites = await startSites(first.url, 3);
    const m = wdbcManifest({ name: 'loso resume', evaluation: { holdoutFraction: 0.25, leaveOneSiteOut: true } });
    m.training = { ...m.training, rounds: 2 };
    const id = await createStudy(first.url, m);
    await json(first.url, `/api/studies/${id}/start`, { method: 'POST' });
    // Stop the coordinator as soon as the first fold is saved.
    await waitFor(() => (first.coordinator.store.getStudy(id)?.loso?.folds.length ?? 0) >= 1 || undefined, 60_000, 10);
    await first.coordinator.close();
    const foldsAtStop = first.coordinator.store.getStudy(id)!.loso!.folds.length;
    expect(foldsAtStop).toBeLessThan(3);
    expect(first.coordinator.store.getStudy(id)!.status).toBe('running');

    // Same data directory, same port: the agents reconnect by themselves and the study resumes.
    const second = await startCoordinator({ dataDir, port: Number(new URL(first.url).port), adminToken: first.adminToken });
    coordinators.push(second.coordinator);
    const end = await waitForEnd(second.url, id);
    expect(end.study.status).toBe('completed');
    const loso = second.coordinator.store.getStudy(id)!.loso!;
    expect(loso.status).toBe('completed');
    expect(loso.folds.map((f) => [f.heldOut, f.status])).toEqual([['Site 1', 'completed'], ['Site 2', 'completed'], ['Site 3', 'completed']]);
    expect(second.coordinator.store.listAudit({ studyId: id }).filter((a) => a.action === 'study.loso.fold')).toHaveLength(3);
  }, 120_000);
});
