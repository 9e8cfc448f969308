import { spawn, type ChildProcess } from 'node:child_process';
import { readFileSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { createStudy, json, rememberAdminToken, startSites, tempDir, waitFor, wdbcManifest, type StudyStatusBody, type TestSite } from '../helpers/cluster.ts';
import { newToken } from '../../coordinator/auth.ts';

const ADMIN = newToken('cht');
import type { StoreData } from '../../coordinator/store/store.ts';

const BIN = join(import.meta.dirname, '..', '..', 'bin', 'cohort.js');

function startCoordinatorProcess(dataDir: string, port: number): Promise<{ child: ChildProcess; url: string }> {
  const child = spawn(process.execPath, [BIN, 'coordinator', '--data-dir', dataDir, '--port', String(port)], { stdio: ['ignore', 'pipe', 'pipe'], env: { ...process.env, COHORT_ADMIN_TOKEN: ADMIN } });
  child.stderr!.resume();
  return new Promise((resolve, reject) => {
    let out = '';
    child.stdout!.on('data', (d: Buffer) => {
      out += d.toString();
      const m = /listening on (http:\/\/\S+)/.exec(out);
      if (m) {
        rememberAdminToken(m[1]!, ADMIN);
        resolve({ child, url: m[1]! });
      }
    });
    child.once('exit', (code) => reject(new Error(`coordinator exited early (${code})`)));
  });
}

describe('a coordinator killed mid-study', () => {
  const children: ChildProcess[] = [];
  let sites: TestSite[] = [];
  afterAll(async () => {
    await Promise.all(sites.map((s) => s.agent.stop()));
    for (const c of children) if (c.exitCode === null) c.kill('SIGKILL');
  });

  it('should resume after SIGKILL and complete with every round recorded exactly once', async () => {
    const dataDir = tempDir('cohort-crash-');
    const first = await startCoordinatorProcess(dataDir, 0);
    children.push(first.child);
    const port = Number(new URL(first.url).port);
    sites = await startSites(first.url, 3);
    const rounds = 8;
    const id = await createStudy(first.url, wdbcManifest({
      model: { template: 'mlp', hidden: [32, 16] },
      training: { rounds, localEpochs: 4, batchSize: 16, optimizer: 'adam', learningRate: 0.01 },
      participation: { minSites: 3, roundDeadlineMs: 30_000, waitForSitesMs: 30_000, maxRoundAttempts: 3 },
    }));
    await json(first.url, `/api/studies/${id}/start`, { method: 'POST' });

    // Kill while a round is in flight: after round 2 is recorded and before the study ends.
    const killedAt = await waitFor(async () => {
      const s = await json<StudyStatusBody>(first.url, `/api/studies/${id}`);
      return s.body.study.completedRounds >= 2 ? s.body.study.completedRounds : undefined;
    }, 60_000, 20);
    first.child.kill('SIGKILL');
    await new Promise((r) => first.child.once('exit', r));
    expect(killedAt).toBeLessThan(rounds);

    const second = await startCoordinatorProcess(dataDir, port);
    children.push(second.child);
    const final = await waitFor(async () => {
      const s = await json<StudyStatusBody>(second.url, `/api/studies/${id}`).catch(() => undefined);
      return s && s.body.study.status !== 'running' ? s.body : undefined;
    }, 120_000, 200);

    expect(final.study.status).toBe('completed');
    expect(final.rounds.map((r) => r.round)).toEqual(Array.from({ length: rounds }, (_, i) => i + 1));
    // The store on disk agrees: each round once, and a checkpoint per round plus the initial model.
    const store = JSON.parse(readFileSync(join(dataDir, 'store.json'), 'utf8')) as StoreData;
    const recorded = store.rounds.filter((r) => r.studyId === id).map((r) => r.round).sort((a, b) => a - b);
    expect(recorded).toEqual(Array.from({ length: rounds }, (_, i) => i + 1));
    const ckpts = readdirSync(join(dataDir, 'checkpoints', id)).filter((f) => f.endsWith('.cht'));
    expect(ckpts).toHaveLength(rounds + 1);
    expect(readdirSync(join(dataDir, 'checkpoints', id)).some((f) => f.endsWith('.tmp'))).toBe(false);
    expect(final.rounds.at(-1)!.pooled.auc).toBeGreaterThan(0.97);
  }, 180_000);
});
