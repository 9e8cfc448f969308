import { execFile } from 'node:child_process';
import { existsSync, readFileSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { adminTokenFor, RESEARCHER, startCoordinator, startSites, tempDir, waitFor, type TestSite } from '../helpers/cluster.ts';
import type { Coordinator } from '../../coordinator/app.ts';

const run = promisify(execFile);
const root = join(import.meta.dirname, '..', '..');
const BIN = join(root, 'bin', 'cohort.js');
const cohort = (args: string[], env: Record<string, string> = {}) => run(process.execPath, [BIN, ...args], { cwd: root, env: { ...process.env, ...env }, timeout: 120_000 });

describe('the cohort CLI', () => {
  it('should list every command in --help and give each one an example', async () => {
    const { stdout } = await cohort(['--help']);
    for (const c of ['coordinator', 'site', 'study', 'demo']) expect(stdout).toContain(c);
    for (const sub of [['coordinator'], ['site', 'init'], ['site', 'run'], ['site', 'dataset', 'add'], ['site', 'dataset', 'list'], ['study', 'create'], ['study', 'start'], ['study', 'stop'], ['study', 'list'], ['study', 'status'], ['study', 'model'], ['demo']]) {
      const { stdout: help } = await cohort([...sub, '--help']);
      expect(help, sub.join(' ')).toMatch(/Example:\n\s+cohort /);
    }
  }, 120_000);

  it('should run the demo as separate processes and reach pooled AUC >= 0.99 and accuracy >= 0.96', async () => {
    const { stdout } = await cohort(['demo', '--rounds', '10', '--dir', tempDir('cohort-demo-test-')]);
    expect(stdout).toContain('10/10 rounds (100%)  completed');
    const m = /AUC (\d\.\d+)\s+accuracy (\d\.\d+)/.exec(stdout);
    expect(m).not.toBeNull();
    expect(Number(m![1])).toBeGreaterThanOrEqual(0.99);
    expect(Number(m![2])).toBeGreaterThanOrEqual(0.96);
    expect(stdout).toMatch(/API: http:\/\/127\.0\.0\.1:\d+\/api\/studies\//);
    expect(stdout).toContain('under secure aggregation (SecAgg+)');
    expect(stdout).toMatch(/Secure aggregation: on in every round \(SecAgg\+, 3 sites, any 2 of them needed to unmask, complete graph\)/);
  }, 180_000);

  it('should refuse the demo\'s client-distributed DP without secure aggregation before starting anything', async () => {
    const dir = tempDir('cohort-demo-dp-');
    const refused = await cohort(['demo', '--dp-mode', 'client-distributed', '--no-secure-aggregation', '--dir', dir]).catch((e: { code: number; stderr: string }) => e);
    expect(refused).toMatchObject({ code: 3 });
    expect((refused as { stderr: string }).stderr).toContain('COHORT_ERR_DP_INVALID');
    expect(existsSync(join(dir, 'coordinator'))).toBe(false);
  }, 60_000);

  it('should init a site with a 0600 key and refuse to init over it', async () => {
    const dir = tempDir();
    const { stdout } = await cohort(['site', 'init', '--dir', dir, '--name', 'St Mary', '--coordinator', 'http://127.0.0.1:1']);
    expect(stdout).toContain('public key:');
    expect(statSync(join(dir, 'keys', 'identity.json')).mode & 0o777).toBe(0o600);
    expect(JSON.parse(readFileSync(join(dir, 'site.json'), 'utf8'))).toMatchObject({ name: 'St Mary' });
    await expect(cohort(['site', 'init', '--dir', dir, '--name', 'St Mary'])).rejects.toMatchObject({ code: 1 });
  });

  describe('study commands against a live coordinator', () => {
    let coordinator: Coordinator;
    let url: string;
    let sites: TestSite[];
    beforeAll(async () => {
      ({ coordinator, url } = await startCoordinator());
      sites = await startSites(url, 2);
    });
    afterAll(async () => {
      await Promise.all(sites.map((s) => s.agent.stop()));
      await coordinator.close();
    });

    it('should create, start, watch, list and download a study', async () => {
      const manifest = join(tempDir(), 'm.json');
      const m = JSON.parse(readFileSync(join(root, 'examples', 'wdbc-study.json'), 'utf8')) as { training: { rounds: number }; participation: { minSites: number } };
      m.training.rounds = 2;
      m.participation.minSites = 2;
      (await import('node:fs')).writeFileSync(manifest, JSON.stringify(m));
      const env = { COHORT_URL: url, COHORT_TOKEN: adminTokenFor(url) };
      const keyFile = join(tempDir(), 'researcher.json');
      (await import('node:fs')).writeFileSync(keyFile, JSON.stringify({ name: RESEARCHER.name, publicKey: RESEARCHER.publicKey, secretKey: Buffer.from(RESEARCHER.secretKey).toString('base64') }), { mode: 0o600 });
      const id = (await cohort(['study', 'create', manifest, '--key', keyFile], env)).stdout.trim();
      expect(id).toMatch(/^study-/);
      expect((await cohort(['study', 'start', id], env)).stdout).toContain('running');
      const watched = (await cohort(['study', 'status', id, '--watch'], env)).stdout;
      expect(watched).toContain('2/2 rounds (100%)  completed');
      expect(watched.split('\n').filter((l) => /^\s+[12]\s+2\s/.test(l))).toHaveLength(2);
      expect(watched).toContain('per site, round 2');
      expect(watched).toMatch(/^\s+Site 1\s+\d+\s+\d\.\d{3} \(/m);
      expect((await cohort(['study', 'list'], env)).stdout).toContain(id);
      const out = join(tempDir(), 'model');
      await cohort(['study', 'model', id, '--out', out], env);
      expect(existsSync(join(out, 'model.json')) && existsSync(join(out, 'weights.bin'))).toBe(true);
      expect(statSync(join(out, 'weights.bin')).size).toBe(31 * 4);
      const card = JSON.parse(readFileSync(join(out, 'model-card.json'), 'utf8')) as { study: { id: string }; evaluation: { final: { round: number } } };
      expect([card.study.id, card.evaluation.final.round]).toEqual([id, 2]);
      expect(readFileSync(join(out, 'MODEL_CARD.md'), 'utf8')).toContain('## Performance of the final model (round 2)');
      await expect(cohort(['study', 'status', 'study-missing'], env)).rejects.toMatchObject({ code: 2, stderr: expect.stringContaining('COHORT_ERR_STUDY_NOT_FOUND') });
      await waitFor(() => true);
    }, 120_000);
  });
});
