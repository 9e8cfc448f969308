/**
 * A federated image study over real sockets: five hospitals each hold a fifth of the digits PNGs in class
 * folders, registered with `cohort site dataset add`; a sixth registered its images at another size and is left
 * out by the schema contract, with the reason visible over the API.
 */
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Coordinator } from '../../coordinator/app.ts';
import { openDataSource } from '../../site-agent/data/open-source.ts';
import { featureSums } from '../../site-agent/data/standardize.ts';
import { loadSiteConfig } from '../../site-agent/config.ts';
import { standardizationFromSums, sumVectors } from '../../protocol/standardization.ts';
import type { StudyManifestInput } from '../../protocol/messages.ts';
import { json, runStudy, startCoordinator, type StudyStatusBody, type TestSite } from '../helpers/cluster.ts';
import { makeDataSite, partitionDigits } from '../helpers/data-sites.ts';

const CLASSES = ['0', '1', '2', '3', '4', '5', '6', '7', '8', '9'];

/** examples/digits-study.json (what the README reports), with deadlines for a test. */
export const digitsManifest = (): StudyManifestInput => {
  const m = JSON.parse(readFileSync(join(import.meta.dirname, '..', '..', 'examples', 'digits-study.json'), 'utf8')) as StudyManifestInput;
  return { ...m, participation: { minSites: 5, roundDeadlineMs: 60_000, waitForSitesMs: 30_000, maxRoundAttempts: 2 } };
};

describe('a federated digits study across 5 sites', () => {
  let coordinator: Coordinator;
  let url: string;
  let sites: TestSite[];
  let result: StudyStatusBody;

  beforeAll(async () => {
    ({ coordinator, url } = await startCoordinator());
    const dirs = partitionDigits(5);
    sites = await Promise.all([
      ...dirs.map((path, i) => makeDataSite(url, `Hospital ${i + 1}`, { id: 'digits', kind: 'images', path, shape: '8,8,1' })),
      // Same images, registered at 16x16: its schema breaks the manifest's input shape.
      makeDataSite(url, 'Hospital 6', { id: 'digits', kind: 'images', path: dirs[0]!, shape: '16,16,1' }),
    ]);
    await Promise.all(sites.map((s) => s.agent.start()));
    result = await runStudy(url, digitsManifest(), 240_000);
  }, 300_000);

  afterAll(async () => {
    await Promise.all(sites.map((s) => s.agent.stop()));
    await coordinator.close();
  });

  it('should reach pooled hold-out accuracy >= 0.97 when training a CNN with FedAvg', () => {
    expect(result.study, JSON.stringify(result.study.error)).toMatchObject({ status: "completed" });
    const last = result.rounds.at(-1)!;
    expect(last.participants.sort()).toEqual(['Hospital 1', 'Hospital 2', 'Hospital 3', 'Hospital 4', 'Hospital 5']);
    // Every site's hold-out together: a fifth of each site's images (stratified), about 360.
    expect(last.pooled.n).toBeGreaterThan(340);
    console.log(`digits: pooled hold-out accuracy per round ${result.rounds.map((r) => r.pooled.accuracy.toFixed(4)).join(' ')} (n = ${last.pooled.n})`);
    expect(last.pooled.accuracy).toBeGreaterThanOrEqual(0.97);
  });

  it('should leave out the site whose schema breaks the contract and say which field, over the API', async () => {
    const s = await json<{ study: { refusals: Record<string, { code: string; details?: { mismatches: unknown[] } }>; schemas: Record<string, { inputShape: number[]; examplesRounded: number }> } }>(url, `/api/studies/${result.study.id}`);
    const refusal = s.body.study.refusals['Hospital 6']!;
    expect(refusal.code).toBe('COHORT_ERR_SITE_SCHEMA_MISMATCH');
    expect(refusal.details!.mismatches).toEqual([{ field: 'inputShape', expected: [8, 8, 1], found: [16, 16, 1], against: 'manifest' }]);
    expect(Object.keys(s.body.study.schemas).sort()).toEqual(['Hospital 1', 'Hospital 2', 'Hospital 3', 'Hospital 4', 'Hospital 5']);
    // Counts leave the site rounded: 1797 / 5 sites = 359 or 360 images each.
    for (const schema of Object.values(s.body.study.schemas)) expect(schema.examplesRounded).toBe(360);
    expect(result.rounds.every((r) => !r.participants.includes('Hospital 6'))).toBe(true);
  });

  it('should standardize with statistics pooled from every site, equal to those of their combined training images', async () => {
    const study = coordinator.store.mustGetStudy(result.study.id);
    const vectors = await Promise.all(sites.slice(0, 5).map(async (s) => {
      const cfg = loadSiteConfig(s.dir).datasets[0]!;
      const data = await openDataSource(s.dir, cfg, { holdoutFraction: 0.2, seed: 7, classes: CLASSES }).load('train');
      return featureSums(data, 10).vector;
    }));
    const expected = standardizationFromSums(sumVectors(vectors));
    expect(study.standardization!.mean).toHaveLength(1);
    expect(study.standardization!.mean[0]).toBeCloseTo(expected.mean[0]!, 9);
    expect(study.standardization!.std[0]).toBeCloseTo(expected.std[0]!, 9);
    // Each site's own mean differs from the pooled one: the sites did not each scale by their own.
    const own = vectors.map((v) => v[1]! / v[0]!);
    expect(own.some((m) => Math.abs(m - expected.mean[0]!) > 1e-4)).toBe(true);
  });
});
