import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { StudyManifestSchema, TaskSchema, parseMessage, parseReply, TrainResultSchema } from '../../protocol/messages.ts';
import { isCompatibleProtocol } from '../../protocol/version.ts';

const root = join(import.meta.dirname, '..', '..');

describe('message schemas', () => {
  it('should accept the example manifest and fill defaults', () => {
    const m = StudyManifestSchema.parse(JSON.parse(readFileSync(join(root, 'examples', 'wdbc-study.json'), 'utf8')));
    expect(m.training.rounds).toBe(10);
    const minimal = StudyManifestSchema.parse({ name: 'x', task: { dataset: 'd', label: 'y' }, model: { template: 'mlp' }, training: { rounds: 2 } });
    expect(minimal.model).toMatchObject({ template: 'mlp', hidden: [32, 16], activation: 'relu' });
    expect(minimal.participation.minSites).toBe(2);
  });

  it('should refuse a manifest carrying code or unknown templates with COHORT_ERR_PROTOCOL_MALFORMED', () => {
    for (const bad of [{}, { name: 'x', task: { dataset: 'd', label: 'y' }, model: { template: 'eval("rm -rf")' }, training: { rounds: 1 } },
      { name: 'x', task: { dataset: '../etc', label: 'y' }, model: { template: 'logreg' }, training: { rounds: 1 } },
      { name: 'x', task: { dataset: 'd', label: 'y' }, model: { template: 'logreg' }, training: { rounds: 0 } }]) {
      expect(() => parseMessage(StudyManifestSchema, bad, 'manifest')).toThrow(expect.objectContaining({ code: 'COHORT_ERR_PROTOCOL_MALFORMED' }));
    }
  });

  it('should refuse a task of unknown kind and a train task without binary weights', () => {
    const base = { taskId: 't', studyId: 's', round: 1, dataset: 'd', holdoutFraction: 0.2, seed: 1 };
    expect(TaskSchema.safeParse({ kind: 'exfiltrate', ...base }).success).toBe(false);
    expect(TaskSchema.safeParse({ kind: 'train', ...base, model: { spec: { template: 'logreg' }, inputShape: [3], numClasses: 2 }, weights: [1, 2], localEpochs: 1, batchSize: 1, optimizer: 'adam', learningRate: 0.1 }).success).toBe(false);
  });

  it('should parse replies: data checked by its schema, errors only with registered codes', () => {
    expect(parseReply(TrainResultSchema, { ok: false, error: { code: 'COHORT_ERR_SITE_DATASET_UNKNOWN', message: 'x' } }, 'r')).toMatchObject({ ok: false });
    expect(() => parseReply(TrainResultSchema, { ok: false, error: { code: 'OOPS', message: 'x' } }, 'r')).toThrow(expect.objectContaining({ code: 'COHORT_ERR_PROTOCOL_MALFORMED' }));
    expect(() => parseReply(TrainResultSchema, 'yes', 'r')).toThrow(expect.objectContaining({ code: 'COHORT_ERR_PROTOCOL_MALFORMED' }));
  });

  it('should accept the same protocol major only', () => {
    expect(isCompatibleProtocol('2.7.3')).toBe(true);
    // 2.0 added secure aggregation on by default: a 1.x agent cannot take part and is refused at the handshake.
    expect(isCompatibleProtocol('1.0.0')).toBe(false);
    expect(isCompatibleProtocol('3.0.0')).toBe(false);
    expect(isCompatibleProtocol('garbage')).toBe(false);
  });
});
