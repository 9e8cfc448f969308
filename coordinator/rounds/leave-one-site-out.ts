/**
 * Leave-one-site-out (LOSO) evaluation: after a study's rounds, for each site s, train a fresh model from the
 * study's initial weights on every other site for the same number of rounds, then score it on s's hold-out. The
 * result answers "how well would this model do at a hospital that did not help train it?", which the cross-site
 * evaluation of the global model (every site scored by a model it helped train) cannot.
 *
 * It runs inside the study runner (one call, after the last round) and reuses its parts: the transport, the
 * tasks the sites already approved (same manifest, same round numbers, same training parameters), edge
 * validation of every update, and the study's strategy (a fresh instance per fold, from the runner's factory).
 * Each fold is saved on the study as it finishes, so a coordinator restarted mid-way resumes at the next fold.
 *
 * Under secure aggregation each fold's rounds run through the same secure sum as the study's own rounds
 * (coordinator/secure-aggregation/secure-train.ts), so the coordinator never sees a single update here either.
 */
import { randomUUID } from 'node:crypto';
import { decodeTensors, encodeTensors, type Tensor } from '../../protocol/codec.ts';
import { CohortError, type WireError } from '../../protocol/errors.ts';
import { EvaluateResultSchema, TrainResultSchema, parseReply, type EvalCounts, type StudyManifest, type Task } from '../../protocol/messages.ts';
import { manifestHash } from '../../protocol/signing.ts';
import type { SiteFailure, StudyRecord } from '../store/store.ts';
import { weightedMean, type FitResult, type Strategy } from '../strategies/strategy.ts';
import type { OnlineSite } from '../transport/transport.ts';
import type { RunnerDeps } from './study-runner.ts';
import { secureAggregationSettings } from '../../protocol/secagg-messages.ts';
import { defaultMaxWeight, dropAsFailure, secureTrain } from '../secure-aggregation/secure-train.ts';
import { distributedPlanFor } from '../privacy/study-privacy.ts';
import type { SecureSumDrop } from '../secure-aggregation/secure-sum.ts';

/** Codes that fail one secure round attempt of a fold (retried) rather than the run. */
const SECURE_ATTEMPT_FAILURES: ReadonlySet<string> = new Set([
  'COHORT_ERR_SECAGG_BELOW_THRESHOLD', 'COHORT_ERR_SECAGG_DISCONNECTED', 'COHORT_ERR_SECAGG_BAD_SHARE', 'COHORT_ERR_ROUND_TOO_FEW_RESULTS',
  'COHORT_ERR_TRANSFER_INCOMPLETE',
]);

export interface LosoFold {
  /** The site left out of training and scored. */
  heldOut: string;
  /** Sites whose updates went into the fold's model in at least one round. */
  trainedOn: string[];
  /** Rounds the fold's model was trained for. */
  rounds: number;
  status: 'completed' | 'failed';
  /** The held-out site's evaluation counts of the fold's model (as the site sent them). */
  counts?: EvalCounts;
  /** Sites that failed a task of this fold, with their codes. */
  failures: SiteFailure[];
  error?: WireError;
  startedAt: string;
  completedAt: string;
}

export interface LosoResult {
  status: 'running' | 'completed';
  folds: LosoFold[];
  startedAt: string;
  completedAt?: string;
}

/** Why a manifest cannot use leave-one-site-out, or undefined when it can (every combination runs today). */
export function losoUnsupportedReason(_manifest: StudyManifest): string | undefined {
  return undefined;
}

class FoldFailed extends Error {
  constructor(readonly error: WireError) {
    super(error.message);
  }
}

/**
 * Runs (or resumes) the leave-one-site-out folds of a study whose rounds are done, saving each fold on the study.
 * A fold that cannot run (too few other sites, too few valid updates, the held-out site unreachable) is recorded
 * as failed with its code; it does not fail the study. `check` throws when the runner is asked to stop.
 */
export async function runLeaveOneSiteOut(deps: RunnerDeps, study: StudyRecord, check: () => void, makeStrategy: () => Strategy): Promise<LosoResult> {
  const { store, log } = deps;
  if (study.loso?.status === 'completed') return study.loso;
  const sites = Object.keys(study.schemas ?? {}).sort();
  let result: LosoResult = study.loso ?? { status: 'running', folds: [], startedAt: new Date().toISOString() };
  if (!study.loso) await store.updateStudy(study.id, { loso: result });
  for (const [i, heldOut] of sites.entries()) {
    if (result.folds.some((f) => f.heldOut === heldOut)) continue;
    check();
    const fold = await runFold(deps, study, heldOut, sites.filter((s) => s !== heldOut), check, `${i + 1}/${sites.length}`, makeStrategy);
    result = { ...result, folds: [...result.folds, fold] };
    await store.updateStudy(study.id, { loso: result });
    await store.appendAudit({ action: 'study.loso.fold', studyId: study.id, site: heldOut, details: { status: fold.status, trainedOn: fold.trainedOn, ...(fold.error ? { code: fold.error.code } : {}) } });
    log.info({ studyId: study.id, heldOut, status: fold.status, code: fold.error?.code }, 'leave-one-site-out fold done');
  }
  result = { ...result, status: 'completed', completedAt: new Date().toISOString() };
  await store.updateStudy(study.id, { loso: result });
  return result;
}

/**
 * The study's pooled standardization statistics (federated standardization). A fold reuses them rather than
 * re-pooling without the held-out site: its feature sums shaped the scaling, never its labels (docs/data.md).
 */
function scaling(study: StudyRecord): { standardization?: NonNullable<StudyRecord['standardization']> } {
  return study.standardization ? { standardization: study.standardization } : {};
}

function baseTask(study: StudyRecord, round: number) {
  const raw = study.manifestRaw ?? study.manifest;
  return {
    taskId: randomUUID(),
    manifest: {
      raw, hash: study.manifestHash ?? manifestHash(raw),
      ...(study.signature && study.researcherPublicKey ? { signature: study.signature, researcherPublicKey: study.researcherPublicKey } : {}),
    },
    studyId: study.id,
    round,
    dataset: study.manifest.task.dataset,
    holdoutFraction: study.manifest.evaluation.holdoutFraction,
    seed: study.manifest.seed,
  };
}

/** Waits until at least `min` of `names` are online, until the study's wait limit. */
async function onlineAmong(deps: RunnerDeps, study: StudyRecord, names: readonly string[], min: number, check: () => void): Promise<OnlineSite[]> {
  const limit = Date.now() + study.manifest.participation.waitForSitesMs;
  for (;;) {
    check();
    const online = deps.transport.onlineSites().filter((s) => names.includes(s.name));
    if (online.length >= min || Date.now() > limit) return online;
    await new Promise<void>((resolve) => {
      const off = deps.transport.onChange(() => { off(); clearTimeout(t); resolve(); });
      const t = setTimeout(() => { off(); resolve(); }, 500);
    });
  }
}

async function runFold(deps: RunnerDeps, study: StudyRecord, heldOut: string, others: string[], check: () => void, label: string, makeStrategy: () => Strategy): Promise<LosoFold> {
  const { checkpoints, transport, log } = deps;
  const startedAt = new Date().toISOString();
  const p = study.manifest.participation;
  const t = study.manifest.training;
  const model = study.model!;
  const failures: SiteFailure[] = [];
  const trainedOn = new Set<string>();
  const emit = (message: string) => deps.emit({ type: 'study', studyId: study.id, status: 'running', message: `leave-one-site-out ${label} (without ${heldOut}): ${message}`, at: new Date().toISOString() });
  const done = (status: LosoFold['status'], rounds: number, extra: Partial<LosoFold> = {}): LosoFold => ({
    heldOut, trainedOn: [...trainedOn].sort(), rounds, status, failures, startedAt, completedAt: new Date().toISOString(), ...extra,
  });
  const send = async (site: OnlineSite, task: Task): Promise<unknown> => {
    const raw = await transport.send(site.id, task, p.roundDeadlineMs);
    const reply = parseReply(task.kind === 'train' ? TrainResultSchema : EvaluateResultSchema, raw, `${task.kind} reply`);
    if (!reply.ok) throw new CohortError(reply.error.code, reply.error.message);
    return reply.data;
  };

  let trained = 0;
  try {
    if (others.length < p.minSites) {
      throw new FoldFailed({ code: 'COHORT_ERR_STUDY_NOT_ENOUGH_SITES', message: `leaving out ${heldOut} leaves ${others.length} sites; the study needs ${p.minSites}` });
    }
    const strategy = makeStrategy(); // fresh per fold: a stateful strategy starts over with its model
    const secagg = secureAggregationSettings(study.manifest.privacy.secureAggregation);
    const keys = new Map(deps.store.listSites().map((x) => [x.id, x.publicKey]));
    let global: Tensor[] = await checkpoints.load(study.id, 0);
    const shapes = global.map((x) => x.shape);
    for (let round = 1; round <= t.rounds; round++) {
      for (let attempt = 1; ; attempt++) {
        check();
        const sites = await onlineAmong(deps, study, others, p.minSites, check);
        emit(`round ${round}/${t.rounds}, training on ${sites.length} sites`);
        const globalBytes = encodeTensors(global);
        if (secagg) {
          // The fold's round under secure aggregation: only the weighted mean of its sites' updates is ever seen.
          try {
            const members = sites.flatMap((x) => (keys.has(x.id) ? [{ id: x.id, name: x.name, identityKey: keys.get(x.id)! }] : []));
            // Distributed DP: a fold's rounds are noised by its sites like the study's own (and charged by them).
            const maxWeight = secagg.maxWeight ?? defaultMaxWeight(Object.values(study.schemas ?? {}).map((x) => x.examplesRounded));
            const plan = members.length >= 2 ? distributedPlanFor(study.manifest, members.length, global.reduce((n, x) => n + x.data.length, 0), maxWeight) : undefined;
            const res = await secureTrain({
              transport, log, sites: members,
              settings: secagg, global, maxWeight,
              minSurvivors: p.minSites, base: () => baseTask(study, round), deadlineMs: p.roundDeadlineMs, ...(plan ? { distributed: plan } : {}),
              train: {
                model, weights: globalBytes, localEpochs: t.localEpochs, batchSize: t.batchSize, optimizer: t.optimizer, learningRate: t.learningRate,
                participants: sites.length, ...scaling(study), ...strategy.trainConfig?.(),
                ...(plan ? { dp: { clip: plan.clip, distributed: { scale: plan.scale, siteVariance: plan.siteVariance, headroom: plan.headroom } } } : {}),
              },
            });
            failures.push(...res.dropped.map(dropAsFailure));
            check();
            global = strategy.aggregate(global, { kind: 'mean', mean: res.mean, totalWeight: res.totalWeight, sites: res.survivors }, round);
            for (const x of res.survivors) trainedOn.add(x);
            trained = round;
            break;
          } catch (err) {
            if (!(err instanceof CohortError) || !SECURE_ATTEMPT_FAILURES.has(err.code)) throw err;
            failures.push(...((err.details?.dropped ?? []) as SecureSumDrop[]).map(dropAsFailure));
            log.warn({ studyId: study.id, heldOut, round, attempt, code: err.code }, 'leave-one-site-out secure round attempt failed');
            if (attempt >= p.maxRoundAttempts) throw new FoldFailed(err.toWire());
            continue;
          }
        }
        const results: FitResult[] = [];
        await Promise.all(sites.map(async (site) => {
          try {
            const r = await send(site, {
              kind: 'train', ...baseTask(study, round), model, weights: globalBytes,
              localEpochs: t.localEpochs, batchSize: t.batchSize, optimizer: t.optimizer, learningRate: t.learningRate, participants: sites.length,
              ...scaling(study),
              ...strategy.trainConfig?.(), // FedProx's proximal term: sites refuse a task without the approved mu
            }) as { weights: Uint8Array; numExamples: number; trainLoss: number };
            // The same edge checks as the study's own rounds: shapes, size, finiteness.
            const weights = decodeTensors(r.weights, { expectShapes: shapes, maxBytes: globalBytes.byteLength + 64, requireFinite: true });
            if (!Number.isFinite(r.trainLoss)) throw new CohortError('COHORT_ERR_TENSOR_NONFINITE', 'training loss is not finite');
            results.push({ site: site.name, weights, numExamples: r.numExamples });
          } catch (err) {
            const e = err instanceof CohortError ? err : new CohortError('COHORT_ERR_SERVER_INTERNAL');
            failures.push({ site: site.name, code: e.code, message: e.message, stage: 'train' });
          }
        }));
        check();
        if (results.length >= p.minSites) {
          results.sort((a, b) => a.site.localeCompare(b.site)); // aggregation order independent of reply order
          global = strategy.aggregate(global, strategy.requires === 'sum'
            ? { kind: 'mean', ...weightedMean(results), sites: results.map((r) => r.site) }
            : { kind: 'individual', results }, round);
          for (const r of results) trainedOn.add(r.site);
          trained = round;
          break;
        }
        log.warn({ studyId: study.id, heldOut, round, attempt, results: results.length }, 'leave-one-site-out round attempt failed');
        if (attempt >= p.maxRoundAttempts) {
          throw new FoldFailed({ code: 'COHORT_ERR_ROUND_TOO_FEW_RESULTS', message: `round ${round}: ${results.length} valid updates, ${p.minSites} needed` });
        }
      }
    }
    emit('scoring the held-out site');
    const [target] = await onlineAmong(deps, study, [heldOut], 1, check);
    if (!target) throw new FoldFailed({ code: 'COHORT_ERR_PROTOCOL_DISCONNECTED', message: `${heldOut} is not online to score its hold-out` });
    try {
      const r = await send(target, { kind: 'evaluate', ...baseTask(study, t.rounds), model, weights: encodeTensors(global), ...scaling(study) }) as { counts: EvalCounts };
      return done('completed', trained, { counts: r.counts });
    } catch (err) {
      const e = err instanceof CohortError ? err : new CohortError('COHORT_ERR_SERVER_INTERNAL');
      failures.push({ site: heldOut, code: e.code, message: e.message, stage: 'evaluate' });
      throw new FoldFailed(e.toWire());
    }
  } catch (err) {
    if (err instanceof FoldFailed) return done('failed', trained, { error: err.error });
    throw err; // a stop request, or a broken run
  }
}
