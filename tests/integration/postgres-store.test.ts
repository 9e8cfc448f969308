/**
 * The PostgreSQL store behind the same Store interface as lowdb, against a real throwaway PostgreSQL server:
 * the same rules (rounds once and in order, tokens spent once), and two replicas sharing one database.
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { LowdbStore } from '../../coordinator/store/lowdb-store.ts';
import { PostgresStore } from '../../coordinator/store/postgres-store.ts';
import { PostgresCheckpoints } from '../../coordinator/store/postgres-checkpoints.ts';
import type { RoundRecord, SiteRecord, Store, StudyRecord } from '../../coordinator/store/store.ts';
import { StudyManifestSchema } from '../../protocol/messages.ts';
import { servicesMissing, startPostgres, type Service } from '../helpers/services.ts';
import { hashToken } from '../../coordinator/auth.ts';
import { waitFor } from '../helpers/cluster.ts';

const missing = servicesMissing().filter((m) => m.startsWith('PostgreSQL'));
if (missing.length) console.warn(`\n*** SKIPPING the PostgreSQL store tests: ${missing.join(', ')} not installed. .ci/run installs it. ***\n`);

const manifest = StudyManifestSchema.parse({ name: 's', task: { dataset: 'd', label: 'y' }, model: { template: 'logreg' }, training: { rounds: 3 } });
const study = (id: string): StudyRecord => ({ id, manifest, status: 'running', createdAt: 'now', updatedAt: 'now', completedRounds: 0 });
const round = (studyId: string, r: number): RoundRecord => ({
  studyId, round: r, participants: ['a'], failures: [], numExamples: 1, trainLoss: 0, pooled: { n: 1, loss: 0, accuracy: 1 },
  pooledCounts: { n: 1, lossSum: 0, correct: 1 }, perSite: {}, attempts: 1, startedAt: 'x', completedAt: 'y', durationMs: 1,
});
const site = (id: string, name: string): SiteRecord => ({ id, name, publicKey: `k-${id}`, registeredAt: 'now', lastSeenAt: 'now' });

describe.skipIf(missing.length > 0)('the PostgreSQL store', () => {
  let pg: Service;
  let n = 0;
  const opened: Store[] = [];
  /** A fresh database per test, so tests do not see each other's rows. */
  async function freshDb(): Promise<string> {
    const name = `t${++n}_${process.pid}`;
    const admin = await PostgresStore.open({ url: pg.url, coordinatorId: 'admin' });
    await admin.pool.query(`CREATE DATABASE ${name}`);
    await admin.close();
    return pg.url.replace(/\/postgres$/, `/${name}`);
  }
  const open = async (url: string, id = 'coord-a', key?: string) => {
    const s = await PostgresStore.open({ url, coordinatorId: id, ...(key ? { coordinatorPublicKey: key } : {}) });
    opened.push(s);
    return s;
  };
  beforeAll(async () => {
    pg = await startPostgres();
  }, 60_000);
  afterAll(async () => {
    await Promise.all(opened.map((s) => s.close()));
    await pg?.stop();
  });

  it('should enforce the same rules as the lowdb store when given the same operations', async () => {
    const url = await freshDb();
    for (const s of [await LowdbStore.open(null, 'c'), await open(url)]) {
      await s.addStudy(study('s1'));
      await s.completeRound(round('s1', 1));
      await expect(s.completeRound(round('s1', 1))).rejects.toMatchObject({ code: 'COHORT_ERR_ROUND_STALE' });
      await expect(s.completeRound(round('s1', 3))).rejects.toMatchObject({ code: 'COHORT_ERR_ROUND_STALE' });
      await s.completeRound(round('s1', 2));
      await expect(s.updateStudy('missing', { status: 'failed' })).rejects.toMatchObject({ code: 'COHORT_ERR_STUDY_NOT_FOUND' });
      await s.addSite(site('a', 'A'));
      await expect(s.addSite(site('b', 'A'))).rejects.toMatchObject({ code: 'COHORT_ERR_AUTH_KEY_MISMATCH' });
      expect(s.listRounds('s1').map((r) => r.round)).toEqual([1, 2]);
      expect(s.getStudy('s1')!.completedRounds).toBe(2);
      expect(s.listSites()).toHaveLength(1);
      expect(s.listAudit({ studyId: 's1' }).map((a) => [a.action, a.round])).toEqual([['round.completed', 1], ['round.completed', 2]]);
    }
  });

  it('should share one state between two replicas and persist it across a restart', async () => {
    const url = await freshDb();
    const a = await open(url, 'coord-a');
    const b = await open(url, 'coord-b');
    // The first replica names the coordinator; the second adopts its id.
    expect(b.coordinatorId).toBe('coord-a');
    await a.addStudy(study('s1'));
    await waitFor(() => b.getStudy('s1'), 5000, 10); // NOTIFY reaches b without b asking
    await b.updateStudy('s1', { status: 'stopped' });
    await a.sync();
    expect(a.getStudy('s1')!.status).toBe('stopped');
    await Promise.all(Array.from({ length: 20 }, (_, i) => (i % 2 ? a : b).appendAudit({ action: `x${i}` })));
    await a.sync();
    await b.sync();
    const seqs = a.listAudit().map((x) => x.seq);
    expect(seqs).toEqual([...seqs].sort((x, y) => x - y));
    expect(new Set(seqs).size).toBe(20);
    expect(b.listAudit()).toEqual(a.listAudit());
    const c = await open(url, 'coord-c');
    expect(c.listAudit()).toEqual(a.listAudit());
    expect(c.getStudy('s1')!.status).toBe('stopped');
  });

  it('should record a round once when two replicas race to record it', async () => {
    const url = await freshDb();
    const a = await open(url);
    const b = await open(url);
    await a.addStudy(study('s1'));
    const results = await Promise.allSettled([a.completeRound(round('s1', 1)), b.completeRound(round('s1', 1))]);
    expect(results.filter((r) => r.status === 'fulfilled')).toHaveLength(1);
    expect(results.find((r) => r.status === 'rejected')).toMatchObject({ reason: { code: 'COHORT_ERR_ROUND_STALE' } });
    await a.sync();
    await b.sync();
    expect(a.listRounds('s1')).toHaveLength(1);
    expect(b.listRounds('s1')).toHaveLength(1);
  });

  it('should spend an enrollment token once when two replicas race to enroll with it', async () => {
    const url = await freshDb();
    const a = await open(url);
    const b = await open(url);
    const hash = hashToken('enr_test');
    await a.addToken({ id: 'enr-1', kind: 'enrollment', hash, role: 'site', name: '', createdAt: 'now', expiresAt: new Date(Date.now() + 60_000).toISOString() });
    const results = await Promise.allSettled([a.enrollSite(hash, site('x', 'X')), b.enrollSite(hash, site('y', 'Y'))]);
    expect(results.filter((r) => r.status === 'fulfilled')).toHaveLength(1);
    expect(results.find((r) => r.status === 'rejected')).toMatchObject({ reason: { code: 'COHORT_ERR_AUTH_ENROLLMENT_TOKEN' } });
    await b.sync();
    expect(b.listSites()).toHaveLength(1);
  });

  it('should grant a study lease to one replica at a time and hand it over when the holder goes away', async () => {
    const url = await freshDb();
    const a = await open(url);
    const b = await open(url);
    await a.addStudy(study('s1'));
    const la = await a.leaseStudy('s1');
    expect(la).toBeDefined();
    expect(await b.leaseStudy('s1')).toBeUndefined();
    let lost = false;
    la!.onLost(() => { lost = true; });
    // Stopping the study through the other replica takes the lease's meaning away.
    await b.updateStudy('s1', { status: 'stopped' });
    await waitFor(() => lost, 5000, 10);
    await la!.release();
    await b.updateStudy('s1', { status: 'running' });
    const lb = await b.leaseStudy('s1');
    expect(lb).toBeDefined();
    await lb!.release();
  });

  it('should refuse a replica whose coordinator identity differs from the shared one', async () => {
    const url = await freshDb();
    await open(url, 'coord-a', 'KEY-A');
    await expect(open(url, 'coord-b', 'KEY-B')).rejects.toMatchObject({ code: 'COHORT_ERR_STORE_REPLICA_MISMATCH' });
  });

  it('should store checkpoints in chunks and read back exactly what was saved', async () => {
    const url = await freshDb();
    const a = await open(url);
    const ck = new PostgresCheckpoints((a as PostgresStore).pool);
    const big = new Float32Array(3 * 1024 * 1024).map((_, i) => i % 1000); // 12 MiB: two chunks
    await ck.save('s', 1, [{ shape: [big.length], data: big }]);
    await ck.save('s', 1, [{ shape: [big.length], data: big.map((x) => x + 1) }]);
    const back = await ck.load('s', 1);
    expect(back[0]!.data[5]).toBe(6);
    expect(back[0]!.data.length).toBe(big.length);
    expect(await ck.rounds('s')).toEqual([1]);
    await expect(ck.load('s', 2)).rejects.toThrow(/no checkpoint/);
  });
});
