import { describe, expect, it } from 'vitest';
import { WDBC } from '../../cli/demo.ts';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { CsvDatasetSchema } from '../../site-agent/config.ts';
import { CsvSource } from '../../site-agent/data/csv-source.ts';
import type { LoadedSplit } from '../../site-agent/data/data-source.ts';
import { featureSums, localStandardization, standardize } from '../../site-agent/data/standardize.ts';
import { standardizationFromSums, sumVectors } from '../../protocol/standardization.ts';
import { tempDir } from '../helpers/cluster.ts';
import { taskData } from '../../site-agent/data/task-data.ts';
import { StudyManifestSchema, type Task } from '../../protocol/messages.ts';

const opts = { holdoutFraction: 0.2, seed: 3 };

/** WDBC split into `n` sites by tumour radius (not IID: each site's own mean differs from the global one). */
function bySize(n: number): string[] {
  const [head, ...lines] = readFileSync(WDBC, 'utf8').trim().split('\n');
  lines.sort((a, b) => Number(a.split(',')[0]) - Number(b.split(',')[0]));
  const per = Math.ceil(lines.length / n);
  return [...Array(n).keys()].map((i) => [head, ...lines.slice(i * per, (i + 1) * per)].join('\n'));
}

async function siteTrainSplits(n: number): Promise<LoadedSplit[]> {
  const dir = tempDir();
  return Promise.all(bySize(n).map((csv, i) => {
    const f = join(dir, `site${i}.csv`);
    writeFileSync(f, csv);
    return new CsvSource(f, CsvDatasetSchema.parse({ id: 'w', kind: 'csv', path: f, label: 'malignant' }), opts).load('train');
  }));
}

function concat(parts: LoadedSplit[]): LoadedSplit {
  const width = parts[0]!.inputShape[0]!;
  const n = parts.reduce((a, p) => a + p.n, 0);
  const x = new Float32Array(n * width);
  let o = 0;
  for (const p of parts) {
    x.set(p.x, o);
    o += p.x.length;
  }
  return { ...parts[0]!, x, n, y: new Int32Array(n) };
}

describe('federated standardization', () => {
  it('should pool site sums into exactly the statistics of the concatenated data when given 3 sites', async () => {
    const parts = await siteTrainSplits(3);
    const pooled = standardizationFromSums(sumVectors(parts.map((p) => featureSums(p).vector)));
    const all = concat(parts);
    // Reference: two-pass mean and population variance over the concatenated training rows.
    for (let j = 0; j < 30; j++) {
      let m = 0;
      for (let i = 0; i < all.n; i++) m += all.x[i * 30 + j]!;
      m /= all.n;
      let v = 0;
      for (let i = 0; i < all.n; i++) v += (all.x[i * 30 + j]! - m) ** 2;
      expect(pooled.mean[j]).toBeCloseTo(m, 6);
      expect(pooled.std[j]! / Math.sqrt(v / all.n)).toBeCloseTo(1, 6);
    }
    // Scaled with the pooled statistics, the union is centred and has unit variance, while no single site is.
    const scaled = parts.map((p) => standardize(p, pooled));
    const union = concat(scaled);
    let m0 = 0;
    for (let i = 0; i < union.n; i++) m0 += union.x[i * 30]!;
    expect(Math.abs(m0 / union.n)).toBeLessThan(1e-5);
    const own = scaled.map((s) => [...Array(s.n).keys()].reduce((a, i) => a + s.x[i * 30]!, 0) / s.n);
    expect(own[0]).toBeLessThan(-0.5);
    expect(own[2]).toBeGreaterThan(0.5);
    expect(standardize(parts[0]!, localStandardization(parts[0]!)).x).not.toEqual(scaled[0]!.x);
  });

  it('should send one vector of count, sum and sum of squares per slot, skipping unslotted columns', () => {
    const data: LoadedSplit = {
      x: Float32Array.from([1, 10, 0, 3, 20, 1]), y: new Int32Array(2), n: 2, inputShape: [3], classes: ['0', '1'],
      slots: { of: Int32Array.from([0, 1, -1]), count: 2 },
    };
    expect(featureSums(data)).toEqual({ slots: 2, vector: [2, 2, 4, 30, 10, 500] });
    // A slot below the site's minimum cell count leaves as zeros.
    expect(featureSums(data, 3).vector).toEqual([0, 0, 0, 0, 0, 0]);
    const s = standardizationFromSums([2, 2, 4, 30, 10, 500]);
    expect(s).toEqual({ mean: [2, 15], std: [1, 5] });
    expect([...standardize(data, s).x]).toEqual([-1, -1, 0, 1, 1, 1]);
  });

  it('should keep std 1 for a constant or empty slot and refuse vectors of other lengths', () => {
    expect(standardizationFromSums([4, 0, 8, 0, 16, 0])).toEqual({ mean: [2, 0], std: [1, 1] });
    expect(() => sumVectors([[1, 2, 3], [1, 2, 3, 4, 5, 6]])).toThrow(expect.objectContaining({ code: 'COHORT_ERR_SITE_SCHEMA_MISMATCH' }));
    const data: LoadedSplit = { x: new Float32Array(4), y: new Int32Array(2), n: 2, inputShape: [2], classes: ['0', '1'] };
    expect(() => standardize(data, { mean: [0], std: [1] })).toThrow(expect.objectContaining({ code: 'COHORT_ERR_SITE_SCHEMA_MISMATCH' }));
  });
});

describe('task data at the site', () => {
  const manifest = (standardize: 'federated' | 'local' | 'none') => StudyManifestSchema.parse({
    name: 'm', task: { dataset: 'w', label: 'malignant', standardize }, model: { template: 'logreg' }, training: { rounds: 1 },
  });
  const src = new CsvSource(WDBC, CsvDatasetSchema.parse({ id: 'w', kind: 'csv', path: WDBC, label: 'malignant' }), opts);
  const task = (standardization?: { mean: number[]; std: number[] }) => ({ kind: 'evaluate', holdoutFraction: 0.2, seed: 3, ...(standardization ? { standardization } : {}) }) as unknown as Task;

  it('should scale with the statistics the task carries, not its own, when the study standardizes federatedly', async () => {
    const raw = await src.load('train');
    const global = { mean: Array.from({ length: 30 }, (_, j) => raw.x[j]!), std: Array.from({ length: 30 }, () => 2) };
    const got = await taskData(src, 'train', task(global), manifest('federated'));
    expect(got.x[0]).toBe(0);
    expect(got.x[30]).toBeCloseTo((raw.x[30]! - raw.x[0]!) / 2, 5);
    await expect(taskData(src, 'train', task(), manifest('federated'))).rejects.toMatchObject({ code: 'COHORT_ERR_SITE_TASK_MISMATCH' });
  });

  it('should scale hold-out data with the training split statistics when the study standardizes locally', async () => {
    const raw = await src.load('train');
    const local = localStandardization(raw);
    const hold = await taskData(src, 'holdout', task(), manifest('local'));
    const rawHold = await src.load('holdout');
    expect(hold.x[5]).toBeCloseTo((rawHold.x[5]! - local.mean[5]!) / local.std[5]!, 5);
    expect((await taskData(src, 'holdout', task(), manifest('none'))).x).toEqual(rawHold.x);
  });
});
