/**
 * Two coordinator replicas on one PostgreSQL store and one Redis (real servers from the Debian packages, started
 * here as throwaway instances on loopback), sites connected to different replicas. The leader replica is killed
 * with SIGKILL mid-study: the other takes the study's lease and completes it, reaching sites through Redis.
 */
import { copyFileSync, mkdirSync } from 'node:fs';
import { join } from 'node:path';
import pg from 'pg';
import { afterAll, describe, expect, it } from 'vitest';
import { createStudy, json, makeSite, tempDir, waitFor, wdbcManifest, type StudyStatusBody, type TestSite } from '../helpers/cluster.ts';
import { servicesMissing, startPostgres, startRedis, type Service } from '../helpers/services.ts';
import { logMessages, startCoordinatorProcess, type Proc } from '../helpers/processes.ts';
import { newToken } from '../../coordinator/auth.ts';
import { splitCsvForSites, WDBC } from '../../cli/demo.ts';

const missing = servicesMissing();
if (missing.length) console.warn(`\n*** SKIPPING the replica tests: ${missing.join(', ')} not installed. .ci/run installs them. ***\n`);

describe.skipIf(missing.length > 0)('coordinator replicas on PostgreSQL and Redis', () => {
  const services: Service[] = [];
  const procs: Proc[] = [];
  let sites: TestSite[] = [];
  afterAll(async () => {
    await Promise.all(sites.map((s) => s.agent.stop()));
    await Promise.all(procs.map((p) => p.kill()));
    for (const s of services) await s.stop();
  });

  it('should complete a study with sites on different replicas, and after the leader replica is killed', async () => {
    const [db, redis] = await Promise.all([startPostgres(), startRedis()]);
    services.push(db, redis);
    const admin = newToken('cht');
    const args = ['--store', db.url, '--redis', redis.url];
    const dirA = tempDir('cohort-replica-a-');
    const a = await startCoordinatorProcess(dirA, { adminToken: admin, args });
    procs.push(a);
    // Every replica holds the same coordinator identity (sites pin its key): copy it, as an operator would.
    const dirB = tempDir('cohort-replica-b-');
    mkdirSync(dirB, { recursive: true });
    copyFileSync(join(dirA, 'identity.json'), join(dirB, 'identity.json'));
    const b = await startCoordinatorProcess(dirB, { adminToken: admin, args });
    procs.push(b);

    // Sites 1 and 2 enroll with and connect to replica A, site 3 to replica B.
    const parts = splitCsvForSites(WDBC, 3);
    sites = [
      await makeSite(a.url, 'Site 1', parts[0]!), await makeSite(a.url, 'Site 2', parts[1]!), await makeSite(b.url, 'Site 3', parts[2]!),
    ];
    await Promise.all(sites.map((s) => s.agent.start()));
    await waitFor(async () => {
      const r = await json<{ sites: { online: boolean }[] }>(b.url, '/api/sites');
      return r.body.sites.length === 3 ? true : undefined;
    }, 10_000);

    // Created through A, started through B: each replica sees the other's writes.
    const rounds = 6;
    const id = await createStudy(a.url, wdbcManifest({
      training: { rounds, localEpochs: 2, batchSize: 16, optimizer: 'adam', learningRate: 0.05 },
      participation: { minSites: 3, roundDeadlineMs: 20_000, waitForSitesMs: 30_000, maxRoundAttempts: 4 },
    }));
    const started = await json<{ study: { status: string } }>(b.url, `/api/studies/${id}/start`, { method: 'POST' });
    expect(started.status).toBe(200);
    const leaderOf = () => [a, b].find((p) => logMessages(p.lines).some((l) => l.msg === 'round completed' && l.studyId === id));
    await waitFor(async () => {
      const s = await json<StudyStatusBody>(a.url, `/api/studies/${id}`);
      return s.body.study.completedRounds >= 2 ? true : undefined;
    }, 60_000, 20);
    const leader = leaderOf()!;
    const other = leader === a ? b : a;
    // Rounds so far had all three sites, so tasks crossed replicas through Redis.
    const early = await json<StudyStatusBody>(other.url, `/api/studies/${id}`);
    expect(early.body.rounds[0]!.participants.sort()).toEqual(['Site 1', 'Site 2', 'Site 3']);

    await leader.kill();
    // The survivor takes the study's lease (its takeover loop runs every 2 s) before the killed replica is back.
    await waitFor(() => (logMessages(other.lines).some((l) => l.msg === 'study lease acquired' && l.studyId === id) ? true : undefined), 30_000, 50);
    const restarted = await startCoordinatorProcess(leader === a ? dirA : dirB, { adminToken: admin, args, port: Number(new URL(leader.url).port) });
    procs.push(restarted);

    const final = await waitFor(async () => {
      const s = await json<StudyStatusBody>(other.url, `/api/studies/${id}`).catch(() => undefined);
      return s && s.body.study.status !== 'running' ? s.body : undefined;
    }, 90_000, 200);
    expect(final.study.status, JSON.stringify(final.study.error)).toBe('completed');
    expect(final.rounds.map((r) => r.round)).toEqual(Array.from({ length: rounds }, (_, i) => i + 1));
    expect(final.rounds.at(-1)!.participants.sort()).toEqual(['Site 1', 'Site 2', 'Site 3']);
    expect(final.rounds.at(-1)!.pooled.auc).toBeGreaterThan(0.97);
    // The survivor ran the rest of the study, reaching the restarted replica's sites through Redis.
    const doneBy = (p: Proc) => logMessages(p.lines).filter((l) => l.msg === 'round completed' && l.studyId === id).map((l) => l.round as number);
    expect(doneBy(other)).toContain(rounds);
    expect(doneBy(restarted)).toEqual([]);

    // The database agrees: each round once, one audit line per round, a checkpoint per round plus round 0.
    const client = new pg.Client({ connectionString: db.url });
    await client.connect();
    try {
      const r = await client.query<{ key: string }>(`SELECT key FROM cohort_records WHERE kind = 'round' AND doc->>'studyId' = $1`, [id]);
      expect(r.rows.map((x) => Number(x.key.split('#')[1])).sort((x, y) => x - y)).toEqual(Array.from({ length: rounds }, (_, i) => i + 1));
      const audit = await client.query<{ n: string }>(`SELECT count(*) AS n FROM cohort_records WHERE kind = 'audit' AND doc->>'action' = 'round.completed' AND doc->>'studyId' = $1`, [id]);
      expect(Number(audit.rows[0]!.n)).toBe(rounds);
      const ck = await client.query<{ round: number }>('SELECT DISTINCT round FROM cohort_checkpoints WHERE study_id = $1 ORDER BY round', [id]);
      expect(ck.rows.map((x) => x.round)).toEqual(Array.from({ length: rounds + 1 }, (_, i) => i));
    } finally {
      await client.end();
    }
  }, 150_000);
});
