import { chmodSync, statSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { CsvSource } from '../../site-agent/data/csv-source.ts';
import { CsvDatasetSchema } from '../../site-agent/config.ts';
import { splitIndices } from '../../site-agent/data/split.ts';
import { localStandardization, standardize } from '../../site-agent/data/standardize.ts';
import { createIdentity, loadIdentity } from '../../site-agent/keys.ts';
import { WDBC } from '../../cli/demo.ts';
import { tempDir } from '../helpers/cluster.ts';

const cfg = (over: object = {}) => CsvDatasetSchema.parse({ id: 'wdbc', kind: 'csv', path: WDBC, label: 'malignant', ...over });

describe('CSV data source', () => {
  it('should describe WDBC: 30 numeric features, two classes, rounded count', async () => {
    const s = await new CsvSource(WDBC, cfg(), { holdoutFraction: 0.2, seed: 1 }).describe();
    expect(s.inputShape).toEqual([30]);
    expect(s.classes).toEqual(['0', '1']);
    expect(s.features).toHaveLength(30);
    expect(s.examplesRounded).toBe(570);
  });

  it('should split into a fixed, stratified, disjoint hold-out', async () => {
    const src = new CsvSource(WDBC, cfg(), { holdoutFraction: 0.2, seed: 1 });
    const train = await src.load('train');
    const hold = await src.load('holdout');
    expect(train.n + hold.n).toBe(569);
    expect(hold.n).toBe(Math.round(357 * 0.2) + Math.round(212 * 0.2));
    const again = await new CsvSource(WDBC, cfg(), { holdoutFraction: 0.2, seed: 1 }).load('holdout');
    expect([...again.x]).toEqual([...hold.x]);
    const other = await new CsvSource(WDBC, cfg(), { holdoutFraction: 0.2, seed: 2 }).load('holdout');
    expect([...other.x]).not.toEqual([...hold.x]);
    const { train: t, holdout: h } = splitIndices(569, 0.2, 1);
    expect(t.filter((i) => h.includes(i))).toEqual([]);
  });

  it('should standardize with training-split statistics only', async () => {
    // Sources give raw features; the agent scales them (here with this site's own training statistics).
    const raw = await new CsvSource(WDBC, cfg(), { holdoutFraction: 0.2, seed: 1 }).load('train');
    const train = standardize(raw, localStandardization(raw));
    for (const j of [0, 7, 29]) {
      let m = 0;
      for (let i = 0; i < train.n; i++) m += train.x[i * 30 + j]!;
      m /= train.n;
      let v = 0;
      for (let i = 0; i < train.n; i++) v += (train.x[i * 30 + j]! - m) ** 2;
      expect(Math.abs(m)).toBeLessThan(1e-5);
      expect(v / train.n).toBeCloseTo(1, 4);
    }
  });

  it('should impute missing values, one-hot categories, and refuse non-numbers with a coded error', async () => {
    const dir = tempDir();
    const f = join(dir, 'mixed.csv');
    writeFileSync(f, 'age,sex,lab,y\n50,f,1.5,0\n60,m,,1\n70,f,2.5,1\n40,m,3.5,0\n');
    const src = new CsvSource(f, cfg({ path: f, label: 'y', categorical: ['sex'] }), { holdoutFraction: 0.5, seed: 3 });
    const d = await src.describe();
    expect(d.inputShape).toEqual([4]);
    expect(d.features![1]).toEqual({ name: 'sex', type: 'category', levels: ['f', 'm'] });
    const all = [...(await src.load('train')).x, ...(await src.load('holdout')).x];
    expect(all.every(Number.isFinite)).toBe(true);
    writeFileSync(f, 'age,y\n50,0\nfifty,1\n');
    await expect(new CsvSource(f, cfg({ path: f, label: 'y' }), { holdoutFraction: 0.5, seed: 3 }).describe()).rejects.toMatchObject({ code: 'COHORT_ERR_DATA_PARSE' });
    writeFileSync(f, 'age,y\n50,0,3\n');
    await expect(new CsvSource(f, cfg({ path: f, label: 'y' }), { holdoutFraction: 0.5, seed: 3 }).describe()).rejects.toMatchObject({ code: 'COHORT_ERR_DATA_PARSE' });
    await expect(new CsvSource(join(dir, 'nope.csv'), cfg({ label: 'y' }), { holdoutFraction: 0.5, seed: 3 }).describe()).rejects.toMatchObject({ code: 'COHORT_ERR_DATA_PARSE' });
  });
});

describe('site identity keys', () => {
  it('should write the key file with mode 0600 and refuse to overwrite it', () => {
    const f = join(tempDir(), 'keys', 'identity.json');
    const id = createIdentity(f);
    expect(statSync(f).mode & 0o777).toBe(0o600);
    expect(loadIdentity(f).publicKey).toEqual(id.publicKey);
    expect(() => createIdentity(f)).toThrow(/refusing to overwrite/);
  });

  it('should refuse a key file that others can read', () => {
    const f = join(tempDir(), 'identity.json');
    createIdentity(f);
    chmodSync(f, 0o644);
    expect(() => loadIdentity(f)).toThrow(/readable by others/);
  });
});
