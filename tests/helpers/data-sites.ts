/**
 * Sites holding image or DICOM data, registered the way hospital IT does it (`cohort site init`, then
 * `cohort site dataset add`), for integration tests over real sockets.
 */
import { copyFileSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { datasetAdd, type DatasetAddOptions } from '../../cli/dataset-commands.ts';
import { siteInit } from '../../cli/site-commands.ts';
import type { Policy } from '../../site-agent/policy.ts';
import { agentFor, invite, RESEARCHER, tempDir, type TestSite } from './cluster.ts';

export const DATA = join(import.meta.dirname, '..', '..', 'data');
export const DIGITS = join(DATA, 'images', 'digits');
export const DICOM = join(DATA, 'dicom');

/** An enrolled site (auto-approving the test researcher) with one dataset added through the CLI's code. */
export async function makeDataSite(url: string, name: string, dataset: Omit<DatasetAddOptions, 'dir'>, policy: Partial<Policy> = {}): Promise<TestSite> {
  const dir = tempDir('cohort-site-');
  await siteInit({
    dir, coordinator: url, name, token: await invite(url, name),
    policy: { autoApprove: [{ name: RESEARCHER.name, publicKey: RESEARCHER.publicKey }], ...policy },
  });
  await datasetAdd({ dir, check: false, ...dataset });
  return agentFor(dir);
}

/** digits.csv row order: the digit of each PNG, by row number. */
export function digitLabels(): string[] {
  return readFileSync(join(DIGITS, 'digits.csv'), 'utf8').trim().split('\n').slice(1).map((l) => l.split(',').at(-1)!);
}

/**
 * The 1,797 digit PNGs dealt round-robin to `n` site folders (`<dir>/<digit>/<NNNN>.png`), so every site has
 * every class, the way a hospital's folder would look.
 */
export function partitionDigits(n: number): string[] {
  const labels = digitLabels();
  const dirs = [...Array(n).keys()].map(() => tempDir('cohort-digits-'));
  labels.forEach((d, i) => {
    const name = `${String(i).padStart(4, '0')}.png`;
    const to = join(dirs[i % n]!, d);
    mkdirSync(to, { recursive: true });
    copyFileSync(join(DIGITS, 'png', d, name), join(to, name));
  });
  return dirs;
}

/** manifest.csv rows: file and modality. */
export function dicomFiles(): { file: string; modality: string; decodable: boolean }[] {
  const [head, ...lines] = readFileSync(join(DICOM, 'manifest.csv'), 'utf8').trim().split('\n');
  const cols = head!.split(',');
  return lines.map((l) => {
    const r = Object.fromEntries(l.split(',').map((v, i) => [cols[i]!, v]));
    return { file: r.file!, modality: r.modality!, decodable: Boolean(r.pixel_sha256) };
  });
}

export function writeLabels(rows: { file: string; label: string }[]): string {
  const f = join(tempDir('cohort-labels-'), 'labels.csv');
  writeFileSync(f, ['file,label', ...rows.map((r) => `${r.file},${r.label}`)].join('\n'));
  return f;
}
