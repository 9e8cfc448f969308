import { execFile } from 'node:child_process';
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { describe, expect, it } from 'vitest';
import { datasetAdd, datasetList } from '../../cli/dataset-commands.ts';
import { siteInit } from '../../cli/site-commands.ts';
import { loadSiteConfig } from '../../site-agent/config.ts';
import { tempDir } from '../helpers/cluster.ts';
import { DATA, DICOM, DIGITS } from '../helpers/data-sites.ts';

const run = promisify(execFile);
const root = join(import.meta.dirname, '..', '..');
const cohort = (args: string[]) => run(process.execPath, [join(root, 'bin', 'cohort.js'), ...args], { cwd: root, timeout: 60_000 });

async function newSite(): Promise<string> {
  const dir = join(tempDir(), 'site');
  await siteInit({ dir, coordinator: 'http://127.0.0.1:1', name: 'St Mary' });
  return dir;
}

describe('cohort site dataset', () => {
  it('should add each kind from the command line and print only the schema that leaves the site', async () => {
    const dir = await newSite();
    const csv = await cohort(['site', 'dataset', 'add', '--dir', dir, '--id', 'pbc', '--kind', 'csv', '--path', join(DATA, 'tabular', 'pbc.csv'),
      '--label', 'status', '--exclude', 'id,time', '--categorical', 'sex,edema', '--types', 'trt=category,stage=category', '--missing', 'trt=drop', '--levels', 'sex=f|m']);
    expect(csv.stdout).toContain('classes [0, 1, 2]');
    expect(csv.stdout).toContain('sex (category: f|m)');
    expect(csv.stdout).toMatch(/missing values \(rounded\): .*chol ~130/);
    expect(csv.stdout).toContain('rows dropped (rounded): ~110');
    const img = await cohort(['site', 'dataset', 'add', '--dir', dir, '--id', 'digits', '--kind', 'images', '--path', join(DIGITS, 'png'), '--shape', '8,8,1']);
    expect(img.stdout).toContain('input shape [8, 8, 1], examples ~1800');
    const labels = join(tempDir(), 'labels.csv');
    writeFileSync(labels, 'file,label\nsingle/CT_small.dcm,CT\nsingle/MR_small.dcm,MR\ninvalid/MR_truncated.dcm,MR\n');
    const dcm = await cohort(['site', 'dataset', 'add', '--dir', dir, '--id', 'scans', '--kind', 'dicom', '--path', DICOM, '--labels', labels, '--shape', '32,32,1', '--window', '40,400']);
    expect(dcm.stdout).toContain('files skipped (rounded): ~10: COHORT_ERR_DATA_CORRUPT ~10');
    const config = loadSiteConfig(dir);
    expect(config.datasets.map((d) => d.id)).toEqual(['pbc', 'digits', 'scans']);
    expect(config.datasets[2]).toMatchObject({ kind: 'dicom', window: { center: 40, width: 400 }, shape: [32, 32, 1] });
    expect(config.datasets[0]).toMatchObject({ types: { trt: 'category', stage: 'category' }, missing: { trt: 'drop' }, levels: { sex: ['f', 'm'] } });
    // The policy notes written by site init survive the edit.
    expect(JSON.parse(readFileSync(join(dir, 'site.json'), 'utf8')).policy['//']).toContain('Site policy');
    const list = await cohort(['site', 'dataset', 'list', '--dir', dir]);
    expect(list.stdout).toMatch(/pbc\s+csv/);
    expect(list.stdout).toMatch(/scans\s+dicom/);
  }, 120_000);

  it('should refuse bad paths, unknown columns and duplicates with coded errors and write nothing', async () => {
    const dir = await newSite();
    const before = readFileSync(join(dir, 'site.json'), 'utf8');
    const refuse = (o: Parameters<typeof datasetAdd>[0]) => expect(datasetAdd(o)).rejects;
    await refuse({ dir, id: 'x', kind: 'images', path: join(DATA, 'nope'), shape: '8,8,1' }).toMatchObject({ code: 'COHORT_ERR_SITE_DATASET_PATH' });
    await refuse({ dir, id: 'x', kind: 'images', path: join(DATA, 'tabular', 'pbc.csv'), shape: '8,8,1' }).toMatchObject({ code: 'COHORT_ERR_SITE_DATASET_PATH' });
    await refuse({ dir, id: 'x', kind: 'images', path: join(DATA, 'tabular'), shape: '8,8,1' }).toMatchObject({ code: 'COHORT_ERR_SITE_DATASET_PATH' });
    await refuse({ dir, id: 'x', kind: 'csv', path: DICOM, label: 'y' }).toMatchObject({ code: 'COHORT_ERR_SITE_DATASET_PATH' });
    await refuse({ dir, id: 'x', kind: 'csv', path: join(DATA, 'tabular', 'pbc.csv'), label: 'nope' }).toMatchObject({ code: 'COHORT_ERR_DATA_SCHEMA' });
    await refuse({ dir, id: 'x', kind: 'dicom', path: DICOM, shape: '8,8,1' }).toMatchObject({ code: 'COHORT_ERR_SITE_CONFIG_INVALID' });
    await refuse({ dir, id: 'x', kind: 'dicom', path: DICOM, labels: join(DATA, 'missing.csv'), shape: '8,8,1' }).toMatchObject({ code: 'COHORT_ERR_SITE_DATASET_PATH' });
    await refuse({ dir, id: 'x', kind: 'images', path: join(DIGITS, 'png'), shape: '8,8,2' }).toMatchObject({ code: 'COHORT_ERR_SITE_CONFIG_INVALID' });
    await refuse({ dir, id: 'x', kind: 'images', path: join(DIGITS, 'png') }).toMatchObject({ code: 'COHORT_ERR_SITE_CONFIG_INVALID' });
    await refuse({ dir, id: 'x', kind: 'video', path: join(DIGITS, 'png') }).toMatchObject({ code: 'COHORT_ERR_SITE_CONFIG_INVALID' });
    await refuse({ dir, id: 'bad id!', kind: 'csv', path: join(DATA, 'tabular', 'pbc.csv'), label: 'status' }).toMatchObject({ code: 'COHORT_ERR_SITE_CONFIG_INVALID' });
    // A CSV that cannot be read as declared is not registered.
    await refuse({ dir, id: 'x', kind: 'csv', path: join(DATA, 'tabular', 'pbc.csv'), label: 'status' }).toMatchObject({ code: 'COHORT_ERR_DATA_PARSE' });
    expect(readFileSync(join(dir, 'site.json'), 'utf8')).toBe(before);
    await datasetAdd({ dir, id: 'w', kind: 'csv', path: join(DATA, 'tabular', 'wdbc.csv'), label: 'malignant' });
    await refuse({ dir, id: 'w', kind: 'csv', path: join(DATA, 'tabular', 'wdbc.csv'), label: 'malignant' }).toMatchObject({ code: 'COHORT_ERR_SITE_DATASET_EXISTS' });
    await datasetAdd({ dir, id: 'w', kind: 'csv', path: join(DATA, 'tabular', 'breast_cancer_wisconsin_original.csv'), label: 'malignant', exclude: 'sample_id', replace: true });
    const all = await datasetList(dir, true);
    expect(all).toHaveLength(1);
    expect(all[0]!.schema!.missing).toEqual({ bare_nuclei: 20 });
    const { stderr } = await cohort(['site', 'dataset', 'add', '--dir', dir, '--id', 'y', '--kind', 'images', '--path', '/nope', '--shape', '8,8,1']).catch((e: { stderr: string; code: number }) => e);
    expect(stderr).toContain('error COHORT_ERR_SITE_DATASET_PATH');
  }, 60_000);
});
