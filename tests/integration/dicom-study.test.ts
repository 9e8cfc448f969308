/**
 * A DICOM study end to end over real sockets: two hospitals each list half of the bundled DICOM files (every
 * transfer syntax, palette colour, multi-frame, MONOCHROME1) in a labels CSV with synthetic labels (MR or not);
 * one of them also lists the truncated file, which is skipped and counted, never fatal.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Coordinator } from '../../coordinator/app.ts';
import { json, runStudy, startCoordinator, type StudyStatusBody, type TestSite } from '../helpers/cluster.ts';
import { DICOM, dicomFiles, makeDataSite, writeLabels } from '../helpers/data-sites.ts';

describe('a federated DICOM study', () => {
  let coordinator: Coordinator;
  let url: string;
  let sites: TestSite[];
  let result: StudyStatusBody;

  beforeAll(async () => {
    ({ coordinator, url } = await startCoordinator());
    const files = dicomFiles();
    const good = files.filter((f) => f.decodable);
    const halves = [good.filter((_, i) => i % 2 === 0), good.filter((_, i) => i % 2 === 1)];
    halves[0]!.push(files.find((f) => !f.decodable)!);
    sites = await Promise.all(halves.map((half, i) => makeDataSite(url, `Radiology ${i + 1}`, {
      id: 'scans', kind: 'dicom', path: DICOM, shape: '16,16,1',
      labels: writeLabels(half.map((f) => ({ file: f.file, label: f.modality === 'MR' ? 'MR' : 'other' }))),
    })));
    await Promise.all(sites.map((s) => s.agent.start()));
    result = await runStudy(url, {
      name: 'MR or not',
      task: { dataset: 'scans', label: 'label', kind: 'dicom', inputShape: [16, 16, 1], classes: ['MR', 'other'] },
      model: { template: 'mlp', hidden: [16] },
      training: { rounds: 2, localEpochs: 3, batchSize: 8, optimizer: 'adam', learningRate: 0.01 },
      participation: { minSites: 2, roundDeadlineMs: 60_000, waitForSitesMs: 30_000, maxRoundAttempts: 2 },
      evaluation: { holdoutFraction: 0.25 },
      seed: 3,
    }, 120_000);
  }, 180_000);

  afterAll(async () => {
    await Promise.all(sites.map((s) => s.agent.stop()));
    await coordinator.close();
  });

  it('should train and evaluate across both sites when files of every encoding are listed', () => {
    expect(result.study, JSON.stringify(result.study.error)).toMatchObject({ status: 'completed', completedRounds: 2 });
    for (const r of result.rounds) expect(r.participants.sort()).toEqual(['Radiology 1', 'Radiology 2']);
    const last = result.rounds.at(-1)!;
    expect(last.pooled.n).toBeGreaterThan(5);
    expect(last.pooled.accuracy).toBeGreaterThan(0);
    expect(last.pooled.auc).toBeDefined();
  });

  it('should report the truncated file as skipped with its reason, rounded, in the site schema', async () => {
    const s = await json<{ study: { schemas: Record<string, { kind: string; examplesRounded: number; skipped?: { count: number; reasons: Record<string, number> } }> } }>(url, `/api/studies/${result.study.id}`);
    expect(s.body.study.schemas['Radiology 1']).toMatchObject({ kind: 'dicom', skipped: { count: 10, reasons: { COHORT_ERR_DATA_CORRUPT: 10 } } });
    expect(s.body.study.schemas['Radiology 2']!.skipped).toBeUndefined();
    // The echo's ten frames are ten examples: the two sites hold 42 files and 51 examples between them.
    expect(s.body.study.schemas['Radiology 1']!.examplesRounded + s.body.study.schemas['Radiology 2']!.examplesRounded).toBe(50);
    expect(coordinator.store.mustGetStudy(result.study.id).standardization!.mean).toHaveLength(1);
  });
});
