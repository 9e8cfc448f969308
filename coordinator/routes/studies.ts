import { randomUUID } from 'node:crypto';
import type { FastifyInstance } from 'fastify';
import * as tf from '@tensorflow/tfjs';
import { CohortError } from '../../protocol/errors.ts';
import { StudyManifestSchema, parseMessage } from '../../protocol/messages.ts';
import { buildModel, setWeights } from '../../protocol/models.ts';
import { decodeTensors } from '../../protocol/codec.ts';
import type { StudyEvent } from '../../protocol/events.ts';
import type { Checkpoints } from '../checkpoints.ts';
import type { StudyRunner } from '../rounds/study-runner.ts';
import type { Store, StudyRecord } from '../store/store.ts';

interface Deps {
  store: Store;
  runner: StudyRunner;
  checkpoints: Checkpoints;
  emit: (e: StudyEvent) => void;
}

function summary(s: StudyRecord) {
  return {
    id: s.id, name: s.manifest.name, status: s.status, completedRounds: s.completedRounds,
    rounds: s.manifest.training.rounds, createdAt: s.createdAt, updatedAt: s.updatedAt, ...(s.error ? { error: s.error } : {}),
  };
}

/** tfjs model artifacts for the latest completed round, in the layers format `tf.loadLayersModel` reads. */
export async function modelArtifacts(study: StudyRecord, checkpoints: Checkpoints): Promise<tf.io.ModelArtifacts> {
  if (!study.model || study.completedRounds < 1) throw new CohortError('COHORT_ERR_STUDY_NO_MODEL', `study ${study.id} has no completed round`);
  const weights = decodeTensors(await checkpoints.loadBytes(study.id, study.completedRounds));
  const model = buildModel(study.model, study.manifest.seed);
  setWeights(model, weights);
  let saved: tf.io.ModelArtifacts | undefined;
  await model.save(tf.io.withSaveHandler(async (a) => {
    saved = a;
    return { modelArtifactsInfo: { dateSaved: new Date(), modelTopologyType: 'JSON' } };
  }));
  model.dispose();
  return saved!;
}

export function registerStudyRoutes(app: FastifyInstance, { store, runner, checkpoints, emit }: Deps): void {
  app.get('/api/studies', async () => ({ studies: store.listStudies().map(summary) }));

  app.post('/api/studies', async (req, reply) => {
    const manifest = parseMessage(StudyManifestSchema, (req.body as { manifest?: unknown } | null)?.manifest ?? req.body, 'study manifest');
    const now = new Date().toISOString();
    const study: StudyRecord = { id: `study-${randomUUID().slice(0, 8)}`, manifest, status: 'created', createdAt: now, updatedAt: now, completedRounds: 0 };
    await store.addStudy(study);
    emit({ type: 'study', studyId: study.id, status: 'created', at: now });
    return reply.status(201).send({ study: summary(study) });
  });

  app.get<{ Params: { id: string } }>('/api/studies/:id', async (req) => {
    const s = store.mustGetStudy(req.params.id);
    return { study: { ...summary(s), manifest: s.manifest, model: s.model, schemas: s.schemas, running: runner.isRunning(s.id) }, rounds: store.listRounds(s.id) };
  });

  app.post<{ Params: { id: string } }>('/api/studies/:id/start', async (req) => {
    const s = store.mustGetStudy(req.params.id);
    if (s.status === 'completed' || s.status === 'failed') throw new CohortError('COHORT_ERR_STUDY_BAD_STATE', `study is ${s.status}`);
    const updated = await store.updateStudy(s.id, { status: 'running' });
    runner.start(s.id);
    emit({ type: 'study', studyId: s.id, status: 'running', at: new Date().toISOString() });
    return { study: summary(updated) };
  });

  app.post<{ Params: { id: string } }>('/api/studies/:id/stop', async (req) => {
    const s = store.mustGetStudy(req.params.id);
    if (s.status !== 'running') throw new CohortError('COHORT_ERR_STUDY_BAD_STATE', `study is ${s.status}`);
    await runner.stop(s.id);
    const updated = await store.updateStudy(s.id, { status: 'stopped' });
    emit({ type: 'study', studyId: s.id, status: 'stopped', at: new Date().toISOString() });
    return { study: summary(updated) };
  });

  // tfjs layers format: `tf.loadLayersModel('<coordinator>/api/studies/<id>/model/model.json')` works directly.
  app.get<{ Params: { id: string } }>('/api/studies/:id/model/model.json', async (req) => {
    const s = store.mustGetStudy(req.params.id);
    const a = await modelArtifacts(s, checkpoints);
    return {
      format: 'layers-model', generatedBy: 'cohort', convertedBy: null, modelTopology: a.modelTopology,
      weightsManifest: [{ paths: ['weights.bin'], weights: a.weightSpecs }],
      userDefinedMetadata: { studyId: s.id, round: s.completedRounds, manifest: s.manifest },
    };
  });
  app.get<{ Params: { id: string } }>('/api/studies/:id/model/weights.bin', async (req, reply) => {
    const s = store.mustGetStudy(req.params.id);
    const a = await modelArtifacts(s, checkpoints);
    const data = a.weightData;
    const buf = data instanceof ArrayBuffer ? Buffer.from(data) : Buffer.concat((data ?? []).map((b) => Buffer.from(b)));
    return reply.type('application/octet-stream').send(buf);
  });
}
