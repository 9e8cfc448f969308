import { randomUUID } from 'node:crypto';
import type { FastifyInstance } from 'fastify';
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
import { checkStudyStrategy } from '../strategies/registry.ts';
import { losoUnsupportedReason } from '../rounds/leave-one-site-out.ts';
import { buildModelCard } from '../model-card.ts';
import { jsonSafe, studyMetrics } from '../study-metrics.ts';
import { jsonSchema, routeOptions, type AuthHooks } from './openapi.ts';

interface Deps {
  store: Store;
  runner: StudyRunner;
  checkpoints: Checkpoints;
  emit: (e: StudyEvent) => void;
  auth: AuthHooks;
}

const b64Doc = { type: 'string', pattern: '^[A-Za-z0-9+/=]+$' };
const StudySummaryDoc = {
  type: 'object',
  properties: {
    id: { type: 'string', example: 'study-1a2b3c4d' }, name: { type: 'string' },
    status: { type: 'string', enum: ['created', 'running', 'stopped', 'completed', 'failed'] },
    completedRounds: { type: 'integer' }, rounds: { type: 'integer' }, createdAt: { type: 'string', format: 'date-time' },
    updatedAt: { type: 'string', format: 'date-time' }, error: { type: 'object', additionalProperties: true },
  },
};
const MinCellQuery = {
  type: 'object',
  properties: { minCellCount: { type: 'integer', minimum: 0, description: 'Raise the minimum cell count for per-site values (never below the coordinator floor of 10 nor a site\'s own)' } },
};

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
  app.addSchema({ $id: 'StudyManifest', title: 'StudyManifest', ...jsonSchema(StudyManifestSchema) });

  app.get('/api/studies', routeOptions(auth, 'viewer', {
    summary: 'List studies', tags: ['studies'],
    responses: { 200: { description: 'Every study, newest last', schema: { type: 'object', properties: { studies: { type: 'array', items: StudySummaryDoc } } } } },
  }), async () => ({ studies: store.listStudies().map(summary) }));

  app.post('/api/studies', routeOptions(auth, 'researcher', {
    summary: 'Create a study from a manifest',
    description: 'The body is a manifest, or `{manifest, signature, researcherPublicKey}` with the manifest signed by the researcher\'s Ed25519 key (`cohort study create` signs it). Sites approve the SHA-256 of the manifest exactly as sent.',
    tags: ['studies'],
    body: { oneOf: [{ $ref: 'StudyManifest#' }, { type: 'object', required: ['manifest', 'signature', 'researcherPublicKey'], properties: { manifest: { $ref: 'StudyManifest#' }, signature: b64Doc, researcherPublicKey: b64Doc } }] },
    responses: { 201: { description: 'Created (not started)', schema: { type: 'object', properties: { study: StudySummaryDoc } } } },
  }), async (req, reply) => {
    const body = req.body as Record<string, unknown> | null;
    const wrapped: { manifest: unknown; signature?: string; researcherPublicKey?: string } =
      body && typeof body === 'object' && 'manifest' in body ? parseMessage(CreateSchema, body, 'study request') : { manifest: body };
    const manifestRaw = wrapped.manifest;
    const manifest = parseMessage(StudyManifestSchema, manifestRaw, 'study manifest');
    checkStudyStrategy(manifest);
    const unsupported = losoUnsupportedReason(manifest);
    if (unsupported) throw new CohortError('COHORT_ERR_STUDY_INVALID_MANIFEST', unsupported);
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

  app.get<{ Params: { id: string } }>('/api/studies/:id', routeOptions(auth, 'viewer', {
    summary: 'A study with its manifest and every round record', tags: ['studies'],
    responses: { 200: { description: 'The study and its rounds (raw records; see /metrics for metrics with intervals)', schema: { type: 'object', properties: { study: { type: 'object', additionalProperties: true }, rounds: { type: 'array', items: { type: 'object', additionalProperties: true } } } } }, 404: { description: 'No such study (COHORT_ERR_STUDY_NOT_FOUND)' } },
  }), async (req) => {
    const s = store.mustGetStudy(req.params.id);
    return {
      study: {
        ...summary(s), manifest: s.manifest, manifestHash: s.manifestHash, signed: Boolean(s.signature), model: s.model, schemas: s.schemas,
        running: runner.isRunning(s.id), ...(s.refusals ? { refusals: s.refusals } : {}), ...(s.privacy ? { privacy: s.privacy } : {}),
      },
      rounds: store.listRounds(s.id),
    };
  });

  app.post<{ Params: { id: string } }>('/api/studies/:id/start', routeOptions(auth, 'researcher', {
    summary: 'Start (or resume) a study', tags: ['studies'],
    responses: { 200: { description: 'Running', schema: { type: 'object', properties: { study: StudySummaryDoc } } }, 409: { description: 'The study has completed or failed (COHORT_ERR_STUDY_BAD_STATE)' } },
  }), async (req) => {
    const s = store.mustGetStudy(req.params.id);
    if (s.status === 'completed' || s.status === 'failed') throw new CohortError('COHORT_ERR_STUDY_BAD_STATE', `study is ${s.status}`);
    const updated = await store.updateStudy(s.id, { status: 'running' });
    await store.appendAudit({ action: 'study.started', actor: principalOf(req)?.name, studyId: s.id });
    runner.start(s.id);
    emit({ type: 'study', studyId: s.id, status: 'running', at: new Date().toISOString() });
    return { study: summary(updated) };
  });

  app.post<{ Params: { id: string } }>('/api/studies/:id/stop', routeOptions(auth, 'researcher', {
    summary: 'Stop a running study after its current task', tags: ['studies'],
    responses: { 200: { description: 'Stopped', schema: { type: 'object', properties: { study: StudySummaryDoc } } }, 409: { description: 'The study is not running (COHORT_ERR_STUDY_BAD_STATE)' } },
  }), async (req) => {
    const s = store.mustGetStudy(req.params.id);
    if (s.status !== 'running') throw new CohortError('COHORT_ERR_STUDY_BAD_STATE', `study is ${s.status}`);
    await runner.stop(s.id);
    const updated = await store.updateStudy(s.id, { status: 'stopped' });
    await store.appendAudit({ action: 'study.stopped', actor: principalOf(req)?.name, studyId: s.id });
    emit({ type: 'study', studyId: s.id, status: 'stopped', at: new Date().toISOString() });
    return { study: summary(updated) };
  });

  // tfjs layers format: `tf.loadLayersModel('<coordinator>/api/studies/<id>/model/model.json')` works directly.
  app.get<{ Params: { id: string } }>('/api/studies/:id/model/model.json', routeOptions(auth, 'researcher', {
    summary: 'The global model\'s topology (tfjs layers format)',
    description: '`tf.loadLayersModel(\'<coordinator>/api/studies/<id>/model/model.json\', {requestInit: {headers: {authorization: \'Bearer …\'}}})` loads it with its weights.',
    tags: ['results'],
    responses: { 200: { description: 'model.json of the latest completed round', schema: { type: 'object', additionalProperties: true } }, 404: { description: 'No completed round yet (COHORT_ERR_STUDY_NO_MODEL)' } },
  }), async (req) => {
    const s = store.mustGetStudy(req.params.id);
    const a = await modelArtifacts(s, checkpoints);
    return {
      format: 'layers-model', generatedBy: 'cohort', convertedBy: null, modelTopology: a.modelTopology,
      weightsManifest: [{ paths: ['weights.bin'], weights: a.weightSpecs }],
      userDefinedMetadata: { studyId: s.id, round: s.completedRounds, manifest: s.manifest },
    };
  });
  app.get<{ Params: { id: string } }>('/api/studies/:id/model/weights.bin', routeOptions(auth, 'researcher', {
    summary: 'The global model\'s weights (tfjs weights file)', tags: ['results'],
    responses: { 200: { description: 'float32 weights, in the order of model.json\'s weightsManifest', contentType: 'application/octet-stream', schema: { type: 'string', format: 'binary' } }, 404: { description: 'No completed round yet (COHORT_ERR_STUDY_NO_MODEL)' } },
  }), async (req, reply) => {
    const s = store.mustGetStudy(req.params.id);
    const a = await modelArtifacts(s, checkpoints);
    const data = a.weightData;
    const buf = data instanceof ArrayBuffer ? Buffer.from(data) : Buffer.concat((data ?? []).map((b) => Buffer.from(b)));
    return reply.type('application/octet-stream').send(buf);
  });

  app.get<{ Params: { id: string }; Querystring: { minCellCount?: string } }>('/api/studies/:id/metrics', routeOptions(auth, 'viewer', {
    summary: 'Clinical metrics per round: pooled, per site (cross-site evaluation) and leave-one-site-out',
    description: 'AUC with a DeLong 95% interval, accuracy, sensitivity and specificity with Wilson intervals, and a reliability curve, all computed from the counts the sites sent. Pooled values sum the sites\' counts; per-site values resting on fewer cases than the minimum cell count are withheld and named in `suppressed`.',
    tags: ['results'], querystring: MinCellQuery,
    responses: { 200: { description: 'The metrics report', schema: { type: 'object', additionalProperties: true } }, 404: { description: 'No such study (COHORT_ERR_STUDY_NOT_FOUND)' } },
  }), async (req) => {
    const study = store.mustGetStudy(req.params.id);
    return jsonSafe(studyMetrics(study, store.listRounds(study.id), minCellOf(req.query)));
  });

  app.get<{ Params: { id: string }; Querystring: { minCellCount?: string } }>('/api/studies/:id/model/card', routeOptions(auth, 'viewer', {
    summary: 'The model card: what was trained, on which sites, how, its metrics and privacy spent',
    description: 'Manifest hash, researcher, sites, rounds, final pooled and per-site metrics with intervals, leave-one-site-out results, privacy settings and epsilon spent (when differential privacy was used), dates and versions. `cohort study model <id> --out dir` writes it as model-card.json and MODEL_CARD.md beside the model.',
    tags: ['results'], querystring: MinCellQuery,
    responses: { 200: { description: 'The model card (format cohort-model-card/1)', schema: { type: 'object', additionalProperties: true } }, 404: { description: 'No such study, or no completed round yet' } },
  }), async (req) => {
    const study = store.mustGetStudy(req.params.id);
    return buildModelCard(study, store.listRounds(study.id), minCellOf(req.query));
  });
}

/** `?minCellCount=` may only raise the floor; anything else is ignored. */
function minCellOf(q: { minCellCount?: string }): { minCellCount?: number } {
  const asked = Number(q.minCellCount);
  return Number.isInteger(asked) && asked > 0 ? { minCellCount: asked } : {};
}
