import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { Store, type RoundRecord, type StudyRecord } from '../../coordinator/store/store.ts';
import { StudyManifestSchema } from '../../protocol/messages.ts';
import { tempDir } from '../helpers/cluster.ts';
import { Checkpoints } from '../../coordinator/checkpoints.ts';

const manifest = StudyManifestSchema.parse({ name: 's', task: { dataset: 'd', label: 'y' }, model: { template: 'logreg' }, training: { rounds: 3 } });
const study = (id: string): StudyRecord => ({ id, manifest, status: 'running', createdAt: 'now', updatedAt: 'now', completedRounds: 0 });
const round = (studyId: string, r: number): RoundRecord => ({
  studyId, round: r, participants: ['a'], failures: [], numExamples: 1, trainLoss: 0, pooled: { n: 1, loss: 0, accuracy: 1 },
  pooledCounts: { n: 1, lossSum: 0, correct: 1 }, perSite: {}, attempts: 1, startedAt: 'x', completedAt: 'y', durationMs: 1,
});

describe('store', () => {
  it('should record each round once and only in order', async () => {
    const s = await Store.open(null, 'c');
    await s.addStudy(study('s1'));
    await s.completeRound(round('s1', 1));
    await expect(s.completeRound(round('s1', 1))).rejects.toMatchObject({ code: 'COHORT_ERR_ROUND_STALE' });
    await expect(s.completeRound(round('s1', 3))).rejects.toMatchObject({ code: 'COHORT_ERR_ROUND_STALE' });
    await s.completeRound(round('s1', 2));
    expect(s.listRounds('s1').map((r) => r.round)).toEqual([1, 2]);
    expect(s.getStudy('s1')!.completedRounds).toBe(2);
  });

  it('should serialize concurrent writers and persist them all to disk', async () => {
    const dir = tempDir();
    const file = join(dir, 'store.json');
    const s = await Store.open(file, 'c');
    await Promise.all(Array.from({ length: 50 }, (_, i) => s.addStudy(study(`s${i}`))));
    await Promise.all(Array.from({ length: 50 }, (_, i) => s.updateStudy(`s${i}`, { status: 'completed' })));
    const onDisk = JSON.parse(readFileSync(file, 'utf8')) as { studies: StudyRecord[] };
    expect(onDisk.studies).toHaveLength(50);
    expect(onDisk.studies.every((x) => x.status === 'completed')).toBe(true);
    const reopened = await Store.open(file, 'other');
    expect(reopened.coordinatorId).toBe('c');
    expect(reopened.listStudies()).toHaveLength(50);
  });

  it('should leave data untouched when a mutation fails', async () => {
    const s = await Store.open(null, 'c');
    await expect(s.updateStudy('missing', { status: 'failed' })).rejects.toMatchObject({ code: 'COHORT_ERR_STUDY_NOT_FOUND' });
    await s.addStudy(study('s1'));
    await expect(s.addSite({ id: 'a', name: 'A', publicKey: 'k', registeredAt: '', lastSeenAt: '' })).resolves.toBeUndefined();
    await expect(s.addSite({ id: 'b', name: 'A', publicKey: 'k2', registeredAt: '', lastSeenAt: '' })).rejects.toMatchObject({ code: 'COHORT_ERR_AUTH_KEY_MISMATCH' });
    expect(s.listSites()).toHaveLength(1);
  });

  it('should write checkpoints atomically and read them back', async () => {
    const dir = tempDir();
    const c = new Checkpoints(dir);
    await c.save('s', 1, [{ shape: [2], data: Float32Array.from([1, 2]) }]);
    await c.save('s', 1, [{ shape: [2], data: Float32Array.from([3, 4]) }]);
    expect([...(await c.load('s', 1))[0]!.data]).toEqual([3, 4]);
  });
});
