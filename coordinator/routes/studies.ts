import { randomUUID } from 'node:crypto';
import type { FastifyInstance, preHandlerAsyncHookHandler } from 'fastify';
import { z } from 'zod';
import { manifestHash, verifyManifest } from '../../protocol/signing.ts';
import { principalOf } from '../auth.ts';
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
  auth: { viewer: preHandlerAsyncHookHandler; researcher: preHandlerAsyncHookHandler; admin: preHandlerAsyncHookHandler };
}

/** A create request: a bare manifest, or a manifest signed by a researcher's Ed25519 key. */
const CreateSchema = z.union([
  z.object({
    manifest: z.unknown(),
    signature: z.string().max(128).regex(/^[A-Za-z0-9+/=]+$/),
    researcherPublicKey: z.string().max(64).regex(/^[A-Za-z0-9+/=]+$/),
  }),
  z.object({ manifest: z.unknown() }).transform((b) => ({ manifest: b.manifest })),
]);

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

export function registerStudyRoutes(app: FastifyInstance, { store, runner, checkpoints, emit, auth }: Deps): void {
  app.get('/api/studies', { preHandler: auth.viewer }, async () => ({ studies: store.listStudies().map(summary) }));

  app.post('/api/studies', { preHandler: auth.researcher }, async (req, reply) => {
    const body = req.body as Record<string, unknown> | null;
    const wrapped: { manifest: unknown; signature?: string; researcherPublicKey?: string } =
      body && typeof body === 'object' && 'manifest' in body ? parseMessage(CreateSchema, body, 'study request') : { manifest: body };
    const manifestRaw = wrapped.manifest;
    const manifest = parseMessage(StudyManifestSchema, manifestRaw, 'study manifest');
    let signed: { signature: string; researcherPublicKey: string } | undefined;
    if (wrapped.signature !== undefined && wrapped.researcherPublicKey !== undefined) {
      // Refuse a bad signature here already; sites verify it again themselves.
      if (!verifyManifest(manifestRaw, wrapped.signature, wrapped.researcherPublicKey)) {
        throw new CohortError('COHORT_ERR_SITE_MANIFEST_SIGNATURE', 'the manifest signature does not verify with the given researcher key');
      }
      signed = { signature: wrapped.signature, researcherPublicKey: wrapped.researcherPublicKey };
    }
    const now = new Date().toISOString();
    const createdBy = principalOf(req)?.name;
    const study: StudyRecord = {
      id: `study-${randomUUID().slice(0, 8)}`, manifest, manifestRaw, manifestHash: manifestHash(manifestRaw),
      status: 'created', createdAt: now, updatedAt: now, completedRounds: 0, ...(signed ?? {}), ...(createdBy ? { createdBy } : {}),
    };
    await store.addStudy(study);
    await store.appendAudit({ action: 'study.created', actor: createdBy, studyId: study.id, details: { manifestHash: study.manifestHash, signed: Boolean(signed) } });
    emit({ type: 'study', studyId: study.id, status: 'created', at: now });
    return reply.status(201).send({ study: { ...summary(study), manifestHash: study.manifestHash } });
  });

  app.get<{ Params: { id: string } }>('/api/studies/:id', { preHandler: auth.viewer }, async (req) => {
    const s = store.mustGetStudy(req.params.id);
    return {
      study: {
        ...summary(s), manifest: s.manifest, manifestHash: s.manifestHash, signed: Boolean(s.signature), model: s.model, schemas: s.schemas,
        running: runner.isRunning(s.id), ...(s.refusals ? { refusals: s.refusals } : {}), ...(s.privacy ? { privacy: s.privacy } : {}),
      },
      rounds: store.listRounds(s.id),
    };
  });

  app.post<{ Params: { id: string } }>('/api/studies/:id/start', { preHandler: auth.researcher }, async (req) => {
    const s = store.mustGetStudy(req.params.id);
    if (s.status === 'completed' || s.status === 'failed') throw new CohortError('COHORT_ERR_STUDY_BAD_STATE', `study is ${s.status}`);
    const updated = await store.updateStudy(s.id, { status: 'running' });
    await store.appendAudit({ action: 'study.started', actor: principalOf(req)?.name, studyId: s.id });
    runner.start(s.id);
    emit({ type: 'study', studyId: s.id, status: 'running', at: new Date().toISOString() });
    return { study: summary(updated) };
  });

  app.post<{ Params: { id: string } }>('/api/studies/:id/stop', { preHandler: auth.researcher }, async (req) => {
    const s = store.mustGetStudy(req.params.id);
    if (s.status !== 'running') throw new CohortError('COHORT_ERR_STUDY_BAD_STATE', `study is ${s.status}`);
    await runner.stop(s.id);
    const updated = await store.updateStudy(s.id, { status: 'stopped' });
    await store.appendAudit({ action: 'study.stopped', actor: principalOf(req)?.name, studyId: s.id });
    emit({ type: 'study', studyId: s.id, status: 'stopped', at: new Date().toISOString() });
    return { study: summary(updated) };
  });

  // tfjs layers format: `tf.loadLayersModel('<coordinator>/api/studies/<id>/model/model.json')` works directly.
  app.get<{ Params: { id: string } }>('/api/studies/:id/model/model.json', { preHandler: auth.researcher }, async (req) => {
    const s = store.mustGetStudy(req.params.id);
    const a = await modelArtifacts(s, checkpoints);
    return {
      format: 'layers-model', generatedBy: 'cohort', convertedBy: null, modelTopology: a.modelTopology,
      weightsManifest: [{ paths: ['weights.bin'], weights: a.weightSpecs }],
      userDefinedMetadata: { studyId: s.id, round: s.completedRounds, manifest: s.manifest },
    };
  });
  app.get<{ Params: { id: string } }>('/api/studies/:id/model/weights.bin', { preHandler: auth.researcher }, async (req, reply) => {
    const s = store.mustGetStudy(req.params.id);
    const a = await modelArtifacts(s, checkpoints);
    const data = a.weightData;
    const buf = data instanceof ArrayBuffer ? Buffer.from(data) : Buffer.concat((data ?? []).map((b) => Buffer.from(b)));
    return reply.type('application/octet-stream').send(buf);
  });
}
