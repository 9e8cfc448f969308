/**
 * Runs studies: schema check, then rounds of train -> validate -> aggregate -> evaluate -> checkpoint -> record.
 *
 * Crash safety: a round's aggregate is checkpointed (atomically) before the round is recorded, and the record
 * advances `completedRounds` in the same write. A coordinator killed anywhere in a round restarts at
 * `completedRounds + 1` from checkpoint `completedRounds`; the store refuses to record a round twice.
 */
import { randomUUID } from 'node:crypto';
import type { Logger } from 'pino';
import { decodeTensors, encodeTensors, type Tensor } from '../../protocol/codec.ts';
import { CohortError, type WireError } from '../../protocol/errors.ts';
import {
  DescribeResultSchema, EvaluateResultSchema, StatsResultSchema, TrainResultSchema, parseReply,
  type EvalCounts, type ResolvedModel, type SchemaReport, type Standardization, type Task, type TrainPrivacy,
} from '../../protocol/messages.ts';
import { standardizationFromSums, sumVectors } from '../../protocol/standardization.ts';
import { checkSchema, describeMismatches } from './schema-contract.ts';
import { metricsFromCounts, poolCounts, type Metrics } from '../../protocol/metrics.ts';
import { buildModel, getWeights } from '../../protocol/models.ts';
import type { StudyEvent } from '../../protocol/events.ts';
import type { Checkpoints } from '../checkpoints.ts';
import type { RoundRecord, SiteFailure, Store, StudyLease, StudyRecord } from '../store/store.ts';
import { strategyFor } from '../strategies/registry.ts';
import { RunningMean, weightedMean, type AggregateInput, type FitResult, type Strategy } from '../strategies/strategy.ts';
import { defaultMaxWeight, dropAsFailure, secureTrain } from '../secure-aggregation/secure-train.ts';
import type { SecureSumDrop } from '../secure-aggregation/secure-sum.ts';
import { checkSecureAggregationStudy } from '../secure-aggregation/study-check.ts';
import { secureAggregationSettings, type SecureAggregationSettings } from '../../protocol/secagg-messages.ts';
import type { OnlineSite, Transport } from '../transport/transport.ts';
import type { z } from 'zod';
import { manifestHash } from '../../protocol/signing.ts';
import { CoordinatorDp, distributedPlanFor, type ClientRoundPrivacy } from '../privacy/study-privacy.ts';
import { runLeaveOneSiteOut } from './leave-one-site-out.ts';
import type { Entropy } from '../../protocol/crypto/entropy.ts';

export interface RunnerDeps {
  store: Store;
  transport: Transport;
  checkpoints: Checkpoints;
  log: Logger;
  emit: (e: StudyEvent) => void;
  /**
   * Claims the right to run a study (see `Store.leaseStudy`); undefined: another coordinator replica runs it.
   * Absent: this runner alone runs every study.
   */
  lease?: (studyId: string) => Promise<StudyLease | undefined>;
  /**
   * Simulations only: a seeded source for secure-aggregation session ids and graphs and for central DP noise, so a
   * run reproduces (protocol/crypto/entropy.ts). Absent (always, for a real coordinator): the OS CSPRNG.
   */
  entropy?: Entropy;
}

class Stopped extends Error {}

/** What a round's training stage hands on, whether it ran in the clear or under secure aggregation. */
interface Trained {
  input: AggregateInput;
  participants: string[];
  failures: SiteFailure[];
  numExamples: number;
  trainLoss: number;
  backends: Record<string, string>;
  /** Task id of each participant's training task (its ledger has the same id). */
  taskIds: Record<string, string>;
  /** Each participant's differential-privacy report (its spend), when the study uses DP. */
  reports: Map<string, TrainPrivacy | undefined>;
  /** The individual updates: plain training only (client-level DP and robust strategies need them). */
  results?: FitResult[];
  /** Client-distributed DP: the round's accounting (the noise came from the sites, under secure aggregation). */
  client?: ClientRoundPrivacy;
  secureAggregation?: NonNullable<RoundRecord['secureAggregation']>;
}

/** Codes that fail one round attempt (retried up to `maxRoundAttempts`) rather than the whole study. */
const ATTEMPT_FAILURES: ReadonlySet<string> = new Set([
  'COHORT_ERR_SECAGG_BELOW_THRESHOLD', 'COHORT_ERR_SECAGG_DISCONNECTED', 'COHORT_ERR_SECAGG_BAD_SHARE', 'COHORT_ERR_ROUND_TOO_FEW_RESULTS',
  'COHORT_ERR_TRANSFER_INCOMPLETE',
]);

export class StudyRunner {
  private readonly active = new Map<string, { stop: boolean; done: Promise<void> }>();
  /** Differential privacy: gate, clip, noisy aggregate and epsilon records (coordinator/privacy). */
  private readonly dp: CoordinatorDp;

  constructor(private readonly deps: RunnerDeps) {
    this.dp = new CoordinatorDp(deps.entropy);
  }

  isRunning(studyId: string): boolean {
    return this.active.has(studyId);
  }

  /** Starts (or resumes) a study in the background. */
  start(studyId: string): void {
    if (this.active.has(studyId)) return;
    const entry = { stop: false, done: Promise.resolve() };
    this.active.set(studyId, entry);
    entry.done = this.runLeased(studyId, entry)
      .catch((err: unknown) => this.deps.log.error({ studyId, err: String(err) }, 'study runner crashed'))
      .finally(() => this.active.delete(studyId));
  }

  async stop(studyId: string): Promise<void> {
    const entry = this.active.get(studyId);
    if (!entry) return;
    entry.stop = true;
    await entry.done;
  }

  async stopAll(): Promise<void> {
    await Promise.all([...this.active.keys()].map((id) => this.stop(id)));
  }

  /** Resumes every study that was running when the coordinator stopped. */
  resumeAll(): string[] {
    const ids = this.deps.store.listStudies().filter((s) => s.status === 'running').map((s) => s.id);
    for (const id of ids) {
      this.deps.log.info({ studyId: id }, 'resuming study after restart');
      this.start(id);
    }
    return ids;
  }

  /** Runs the study while holding its lease; losing the lease stops the run as a shutdown would (resumable). */
  private async runLeased(studyId: string, ctl: { stop: boolean }): Promise<void> {
    if (!this.deps.lease) return this.run(studyId, ctl);
    const lease = await this.deps.lease(studyId);
    if (!lease) {
      this.deps.log.debug({ studyId }, 'another coordinator replica runs this study');
      return;
    }
    this.deps.log.info({ studyId }, 'study lease acquired');
    lease.onLost(() => {
      this.deps.log.warn({ studyId }, 'study lease lost; leaving the study to another replica');
      ctl.stop = true;
    });
    try {
      await this.run(studyId, ctl);
    } finally {
      await lease.release();
    }
  }

  private emit(e: Omit<StudyEvent, 'at'>): void {
    this.deps.emit({ ...e, at: new Date().toISOString() });
  }

  private async run(studyId: string, ctl: { stop: boolean }): Promise<void> {
    const { store, log } = this.deps;
    const check = () => {
      if (ctl.stop) throw new Stopped();
    };
    try {
      let study = store.mustGetStudy(studyId);
      if (!study.model) study = await this.prepare(study, check);
      while (study.completedRounds < study.manifest.training.rounds) {
        check();
        await this.runRound(study, study.completedRounds + 1, check);
        study = store.mustGetStudy(studyId);
      }
      if (study.manifest.evaluation.leaveOneSiteOut) await runLeaveOneSiteOut(this.deps, study, check, () => strategyFor(study.manifest.strategy));
      await store.updateStudy(studyId, { status: 'completed' });
      this.emit({ type: 'study', studyId, status: 'completed' });
      log.info({ studyId, rounds: study.completedRounds }, 'study completed');
    } catch (err) {
      if (err instanceof Stopped) {
        // A stop during shutdown leaves the study 'running' so a restart resumes it; an explicit stop is
        // recorded by the route that asked for it.
        log.info({ studyId }, 'study runner stopped');
        return;
      }
      const error: WireError = err instanceof CohortError ? err.toWire() : { code: 'COHORT_ERR_SERVER_INTERNAL', message: String(err) };
      log.error({ studyId, code: error.code, reason: error.message }, 'study failed');
      await store.updateStudy(studyId, { status: 'failed', error });
      this.emit({ type: 'study', studyId, status: 'failed', message: `${error.code}: ${error.message}` });
    }
  }

  /** Waits until at least `min` eligible sites are online, or fails after the study's wait limit. */
  private async waitForSites(study: StudyRecord, min: number, check: () => void): Promise<OnlineSite[]> {
    const { transport } = this.deps;
    const limit = Date.now() + study.manifest.participation.waitForSitesMs;
    const wanted = study.manifest.participation.sites;
    for (;;) {
      check();
      const online = transport.onlineSites().filter((s) => !wanted || wanted.includes(s.name));
      if (online.length >= min) return online;
      if (Date.now() > limit) {
        throw new CohortError('COHORT_ERR_STUDY_NOT_ENOUGH_SITES', `${online.length} of ${min} sites online after waiting ${study.manifest.participation.waitForSitesMs} ms`);
      }
      await new Promise<void>((resolve) => {
        const off = transport.onChange(() => { off(); clearTimeout(t); resolve(); });
        const t = setTimeout(() => { off(); resolve(); }, 500);
      });
    }
  }

  private baseTask(study: StudyRecord, round: number) {
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

  /**
   * Sends a task to many sites at once; replies are validated against `schema`. Failures are data. With `each`,
   * every valid reply is handed over as it arrives (a throw refuses it with its code) and what `each` returns is
   * kept instead of the reply, so a large payload need not outlive its own arrival.
   */
  private async fanOut<S extends z.ZodType, K = z.output<S>>(
    sites: readonly OnlineSite[], makeTask: (s: OnlineSite) => Task, schema: S, timeoutMs: number, stage: SiteFailure['stage'],
    each?: (site: string, data: z.output<S>) => K,
  ): Promise<{ ok: Map<string, K>; failures: SiteFailure[]; taskIds: Record<string, string> }> {
    const ok = new Map<string, K>();
    const failures: SiteFailure[] = [];
    const taskIds: Record<string, string> = {};
    await Promise.all(sites.map(async (site) => {
      const task = makeTask(site);
      taskIds[site.name] = task.taskId;
      const raw = await this.deps.transport.send(site.id, task, timeoutMs);
      try {
        const reply = parseReply(schema, raw, `${stage} reply`);
        if (reply.ok) ok.set(site.name, each ? each(site.name, reply.data) : reply.data as K);
        else failures.push({ site: site.name, code: reply.error.code, message: reply.error.message, stage });
      } catch (err) {
        const e = err instanceof CohortError ? err : new CohortError('COHORT_ERR_SERVER_INTERNAL');
        failures.push({ site: site.name, code: e.code, message: e.message, stage });
      }
    }));
    for (const f of failures) this.deps.log.warn({ site: f.site, code: f.code, stage, reason: f.message }, 'site task failed');
    return { ok, failures, taskIds };
  }

  /**
   * Before round 1: participating sites describe their data; label, features and classes must match the manifest
   * and each other. Sites that have not approved the study yet (or refuse it by policy) are asked again until
   * enough accept or the study's wait limit passes; each site's latest refusal is shown to the researcher.
   */
  private async prepare(study: StudyRecord, check: () => void): Promise<StudyRecord> {
    const { store, checkpoints, log } = this.deps;
    const p = study.manifest.participation;
    const t = study.manifest.task;
    const deadline = Date.now() + p.waitForSitesMs;
    const schemas: Record<string, SchemaReport> = {};
    for (;;) {
      check();
      const online = await this.waitForSites(study, 1, check);
      const ask = online.filter((s) => !schemas[s.name]);
      const { ok, failures, taskIds } = await this.fanOut(ask, () => ({ kind: 'describe', ...this.baseTask(study, 0) }), DescribeResultSchema, p.roundDeadlineMs, 'describe');
      for (const [name, { schema }] of ok) {
        // The schema contract: every field that differs from the manifest (or the sites already accepted) is
        // listed in the refusal, and the site is left out of the study rather than trained on mismatching data.
        const mismatches = checkSchema(t, schema, Object.values(schemas)[0]);
        if (mismatches.length) {
          failures.push({ site: name, code: 'COHORT_ERR_SITE_SCHEMA_MISMATCH', message: describeMismatches(mismatches), stage: 'describe', details: { mismatches } });
        } else {
          schemas[name] = schema;
          // The site's acceptance of this manifest hash (its approval), with the task id its ledger records.
          await store.appendAudit({ action: 'study.accepted', studyId: study.id, site: name, details: { taskId: taskIds[name], manifestHash: study.manifestHash } });
        }
      }
      study = await this.recordRefusals(study, failures);
      const accepted = Object.keys(schemas);
      if (accepted.length >= p.minSites) break;
      if (Date.now() > deadline) {
        throw new CohortError('COHORT_ERR_STUDY_NOT_ENOUGH_SITES', `${accepted.length} sites accepted the study with matching data, ${p.minSites} needed`, { refusals: study.refusals ?? {} });
      }
      await new Promise((r) => setTimeout(r, 1000));
    }
    const standardization = t.standardize === 'federated' ? await this.poolStatistics(study, schemas, check) : undefined;
    study = store.mustGetStudy(study.id);
    const first = Object.values(schemas)[0]!;
    const model: ResolvedModel = { spec: study.manifest.model, inputShape: first.inputShape, numClasses: first.classes.length };
    const tfModel = buildModel(model, study.manifest.seed);
    const initial = getWeights(tfModel);
    tfModel.dispose();
    await checkpoints.save(study.id, 0, initial);
    log.info({ studyId: study.id, sites: Object.keys(schemas), inputShape: model.inputShape }, 'schemas checked; model initialised');
    this.emit({ type: 'study', studyId: study.id, status: 'running', message: `schemas checked for ${Object.keys(schemas).length} sites` });
    return store.updateStudy(study.id, { model, schemas, ...(standardization ? { standardization } : {}) });
  }

  /**
   * Federated standardization, before round 1: each accepted site sends one vector of per-feature count, sum and
   * sum of squares over its training split; the coordinator adds them and derives the global mean and standard
   * deviation every site then scales with. A site whose vector has another length is dropped from the study.
   *
   * Secure aggregation plugs in at `sumVectors`: the stats reply is already one numeric vector per site, so a
   * generic secure sum of vectors can replace the plain sum and the coordinator learns only the total.
   */
  private async poolStatistics(study: StudyRecord, schemas: Record<string, SchemaReport>, check: () => void): Promise<Standardization> {
    const p = study.manifest.participation;
    const sites = this.deps.transport.onlineSites().filter((s) => schemas[s.name]);
    const { ok, failures } = await this.fanOut(sites, () => ({ kind: 'stats', ...this.baseTask(study, 0) }), StatsResultSchema, p.roundDeadlineMs, 'stats');
    check();
    const lengths = [...ok.values()].map((r) => r.stats.slots);
    const common = lengths.sort((a, b) => lengths.filter((x) => x === b).length - lengths.filter((x) => x === a).length)[0];
    const vectors: number[][] = [];
    for (const [site, r] of ok) {
      if (r.stats.slots === common) vectors.push(r.stats.vector);
      else failures.push({ site, code: 'COHORT_ERR_SITE_SCHEMA_MISMATCH', message: `${r.stats.slots} standardization features, the other sites have ${common}`, stage: 'stats' });
    }
    for (const f of failures) delete schemas[f.site];
    await this.recordRefusals(study, failures);
    if (vectors.length < p.minSites) {
      throw new CohortError('COHORT_ERR_STUDY_NOT_ENOUGH_SITES', `${vectors.length} sites returned standardization statistics, ${p.minSites} needed`);
    }
    const standardization = standardizationFromSums(sumVectors(vectors));
    this.deps.log.info({ studyId: study.id, sites: vectors.length, features: standardization.mean.length }, 'federated standardization statistics pooled');
    this.emit({ type: 'study', studyId: study.id, status: 'running', message: `feature statistics pooled from ${vectors.length} sites` });
    return standardization;
  }

  /** The pooled statistics train and evaluate tasks carry (none unless the study standardizes federatedly). */
  private scaling(study: StudyRecord): { standardization?: Standardization } {
    return study.standardization ? { standardization: study.standardization } : {};
  }

  /** Keeps each site's latest refusal (not approved, policy, schema) on the study, for the researcher to see. */
  private async recordRefusals(study: StudyRecord, failures: readonly SiteFailure[]): Promise<StudyRecord> {
    if (failures.length === 0) return study;
    const refusals = { ...study.refusals };
    for (const f of failures) {
      if (refusals[f.site]?.code !== f.code) {
        await this.deps.store.appendAudit({ action: 'study.refused', studyId: study.id, site: f.site, details: { code: f.code, stage: f.stage } });
      }
      refusals[f.site] = { code: f.code, message: f.message, at: new Date().toISOString(), ...(f.details ? { details: f.details } : {}) };
    }
    return this.deps.store.updateStudy(study.id, { refusals });
  }

  private async runRound(study: StudyRecord, round: number, check: () => void): Promise<void> {
    const { checkpoints, store, log } = this.deps;
    const p = study.manifest.participation;
    const model = study.model!;
    const strategy = strategyFor(study.manifest.strategy);
    const secagg = secureAggregationSettings(study.manifest.privacy.secureAggregation);
    const global = await checkpoints.load(study.id, round - 1);
    // Server state (momentum, Adam moments) resumes from the checkpoint of the previous round.
    strategy.restore?.(await checkpoints.loadState(study.id, round - 1));
    const globalBytes = encodeTensors(global);
    const shapes = global.map((t) => t.shape);
    const maxBytes = globalBytes.byteLength + 64;
    const startedAt = new Date();
    for (let attempt = 1; ; attempt++) {
      check();
      const online = await this.waitForSites(study, p.minSites, check);
      const sites = online.filter((s) => study.schemas?.[s.name]);
      if (sites.length < p.minSites) {
        await this.describeLateSites(study, online, check);
        study = store.mustGetStudy(study.id);
        if (attempt < p.maxRoundAttempts) continue;
        throw new CohortError('COHORT_ERR_STUDY_NOT_ENOUGH_SITES', `only ${sites.length} checked sites online`);
      }
      // Differential privacy: stop here, with the reason on the study, if this round would pass the target epsilon.
      const priorRounds = store.listRounds(study.id);
      const dpStop = this.dp.gate(study, round, priorRounds, strategy, sites.length, global.reduce((n, t) => n + t.data.length, 0), secagg ? secagg.maxWeight ?? defaultMaxWeight(Object.values(study.schemas ?? {}).map((s) => s.examplesRounded)) : undefined);
      if (dpStop) {
        await store.updateStudy(study.id, { status: dpStop.code === 'COHORT_ERR_STUDY_EPSILON_TARGET' ? 'stopped' : 'failed', error: dpStop });
        log.warn({ studyId: study.id, round, code: dpStop.code, reason: dpStop.message }, 'study stopped by differential privacy');
        this.emit({ type: 'study', studyId: study.id, status: dpStop.code === 'COHORT_ERR_STUDY_EPSILON_TARGET' ? 'stopped' : 'failed', message: `${dpStop.code}: ${dpStop.message}` });
        throw new Stopped();
      }
      this.emit({ type: 'round', studyId: study.id, round, status: 'training', message: `${sites.length} sites${secagg ? ', secure aggregation' : ''}` });
      let trained: Trained;
      try {
        trained = secagg
          ? await this.trainSecure(study, round, attempt, sites, global, globalBytes, secagg, strategy, priorRounds)
          : await this.trainPlain(study, round, sites, globalBytes, shapes, maxBytes, strategy, priorRounds);
      } catch (err) {
        // A secure-aggregation attempt that cannot finish reveals nothing and stores nothing; the round is retried.
        if (!(err instanceof CohortError) || !ATTEMPT_FAILURES.has(err.code)) throw err;
        check();
        study = await this.recordRefusals(study, ((err.details?.dropped ?? []) as SecureSumDrop[]).map(dropAsFailure));
        log.warn({ studyId: study.id, round, attempt, code: err.code, reason: err.message }, 'round attempt aborted');
        this.emit({ type: 'round', studyId: study.id, round, status: 'retry', message: `${err.code}: ${err.message}` });
        if (attempt >= p.maxRoundAttempts) throw err;
        continue;
      }
      check();
      study = await this.recordRefusals(study, trained.failures);
      const dpStudy = this.dp.studyPrivacy(study, priorRounds, trained.failures);
      if (dpStudy) study = await store.updateStudy(study.id, { privacy: dpStudy });
      const failures = trained.failures;
      if (trained.participants.length < p.minSites) {
        log.warn({ studyId: study.id, round, attempt, results: trained.participants.length, code: 'COHORT_ERR_ROUND_TOO_FEW_RESULTS' }, 'round attempt failed');
        this.emit({ type: 'round', studyId: study.id, round, status: 'retry', message: `only ${trained.participants.length} valid updates` });
        if (attempt >= p.maxRoundAttempts) {
          throw new CohortError('COHORT_ERR_ROUND_TOO_FEW_RESULTS', `round ${round}: ${trained.participants.length} valid updates, ${p.minSites} needed`, { failures });
        }
        continue;
      }
      // Client-level DP needs each update (it clips and noises them here); it only runs without secure aggregation.
      const dpAggregate = trained.results ? this.dp.aggregate(study, round, priorRounds, global, trained.results, trained.reports) : undefined;
      const next: Tensor[] = strategy.aggregate(global, dpAggregate?.input ?? trained.input, round);
      const dpRound = this.dp.roundPrivacy(study, round, trained.reports, dpAggregate?.client ?? trained.client);
      const numExamples = trained.numExamples;
      this.emit({ type: 'round', studyId: study.id, round, status: 'evaluating' });
      const nextBytes = encodeTensors(next);
      const evalSites = sites.filter((s) => trained.participants.includes(s.name));
      const ev = await this.fanOut(evalSites, () => ({ kind: 'evaluate', ...this.baseTask(study, round), model, weights: nextBytes, ...this.scaling(study) }), EvaluateResultSchema, p.roundDeadlineMs, 'evaluate');
      check();
      const perSite: Record<string, Metrics> = {};
      const perSiteCounts: Record<string, EvalCounts> = {};
      const counts: EvalCounts[] = [];
      for (const [site, r] of ev.ok) {
        perSite[site] = metricsFromCounts(r.counts);
        perSiteCounts[site] = r.counts;
        counts.push(r.counts);
      }
      const pooledCounts = poolCounts(counts);
      const completedAt = new Date();
      const record: RoundRecord = {
        studyId: study.id, round, participants: trained.participants, failures: [...failures, ...ev.failures],
        numExamples, trainLoss: trained.trainLoss, pooled: metricsFromCounts(pooledCounts), pooledCounts, perSite, perSiteCounts,
        backends: trained.backends, ...(dpRound ? { privacy: dpRound } : {}),
        tasks: Object.fromEntries(trained.participants.map((site) => [site, { train: trained.taskIds[site]!, ...(ev.taskIds[site] ? { evaluate: ev.taskIds[site]! } : {}) }])),
        ...(trained.secureAggregation ? { secureAggregation: trained.secureAggregation } : {}),
        attempts: attempt, startedAt: startedAt.toISOString(), completedAt: completedAt.toISOString(),
        durationMs: completedAt.getTime() - startedAt.getTime(),
      };
      // Written before the model: a crash between the two leaves round - 1 as the last complete checkpoint.
      if (strategy.state) await checkpoints.saveState(study.id, round, strategy.state());
      await checkpoints.save(study.id, round, next);
      await store.completeRound(record);
      // (Only with DP: listing the rounds copies every round's per-site records.)
      const dpAfter = study.manifest.privacy.dp ? this.dp.studyPrivacy(study, store.listRounds(study.id)) : undefined;
      if (dpAfter) await store.updateStudy(study.id, { privacy: dpAfter });
      log.info({ studyId: study.id, round, sites: record.participants.length, auc: record.pooled.auc, accuracy: record.pooled.accuracy }, 'round completed');
      this.emit({ type: 'round', studyId: study.id, round, status: 'completed' });
      return;
    }
  }

  /**
   * Plain training: every site's model comes back in the clear and is validated at the edge. When the strategy needs
   * only the weighted mean (and no client-level DP needs each update), each model is folded into a running sum the
   * moment it is validated and then dropped, so the coordinator never holds every site's model at once.
   */
  private async trainPlain(study: StudyRecord, round: number, sites: readonly OnlineSite[], globalBytes: Uint8Array, shapes: number[][], maxBytes: number, strategy: Strategy, priorRounds: readonly RoundRecord[]): Promise<Trained> {
    const { log } = this.deps;
    const p = study.manifest.participation;
    const t = study.manifest.training;
    const model = study.model!;
    const running = strategy.requires === 'sum' && study.manifest.privacy.dp?.mode !== 'client-central' ? new RunningMean() : undefined;
    const results: FitResult[] = [];
    const train = await this.fanOut(sites, () => ({
      kind: 'train', ...this.baseTask(study, round), model, weights: globalBytes,
      localEpochs: t.localEpochs, batchSize: t.batchSize, optimizer: t.optimizer, learningRate: t.learningRate, participants: sites.length,
      ...this.scaling(study),
      ...strategy.trainConfig?.(),
      ...this.dp.trainFields(study, round, priorRounds),
    }), TrainResultSchema, p.roundDeadlineMs, 'train', (site, r) => {
      // Validate every update at the edge: a frame of the wrong shape, oversized, or with NaN is refused alone.
      const weights = decodeTensors(r.weights, { expectShapes: shapes, maxBytes, requireFinite: true });
      if (!Number.isFinite(r.trainLoss)) throw new CohortError('COHORT_ERR_TENSOR_NONFINITE', 'training loss is not finite');
      if (running) running.add(site, weights, r.numExamples);
      else results.push({ site, weights, numExamples: r.numExamples });
      const { weights: _bytes, ...meta } = r;
      return meta;
    });
    const failures = [...train.failures];
    for (const f of failures) {
      if (f.code.startsWith('COHORT_ERR_TENSOR_')) log.warn({ studyId: study.id, round, site: f.site, code: f.code, reason: f.message }, 'site update refused');
    }
    const backends: Record<string, string> = {};
    let lossSum = 0;
    let numExamples = 0;
    for (const [site, r] of train.ok) {
      backends[site] = r.backend;
      lossSum += r.trainLoss * r.numExamples;
      numExamples += r.numExamples;
    }
    const participants = [...train.ok.keys()];
    return {
      input: participants.length === 0 ? { kind: 'individual', results } : running
        ? { kind: 'mean', ...running.result(), sites: participants }
        : strategy.requires === 'sum'
          ? { kind: 'mean', ...weightedMean(results), sites: participants }
          : { kind: 'individual', results },
      participants, failures, numExamples, trainLoss: numExamples > 0 ? lossSum / numExamples : NaN, backends,
      taskIds: train.taskIds, reports: new Map(participants.map((site) => [site, train.ok.get(site)?.privacy])), ...(running ? {} : { results }),
    };
  }

  /**
   * Training under secure aggregation (SecAgg+): the coordinator only ever holds masked vectors and their sum,
   * and hands the strategy the example-weighted mean (coordinator/secure-aggregation/).
   */
  private async trainSecure(study: StudyRecord, round: number, attempt: number, sites: readonly OnlineSite[], global: Tensor[], globalBytes: Uint8Array, settings: SecureAggregationSettings, strategy: Strategy, priorRounds: readonly RoundRecord[]): Promise<Trained> {
    // Refused at study creation already (coordinator/secure-aggregation/study-check.ts); checked again here.
    checkSecureAggregationStudy(study.manifest);
    if (strategy.requires !== 'sum') {
      throw new CohortError('COHORT_ERR_STUDY_STRATEGY_NEEDS_INDIVIDUAL', `strategy ${strategy.name} needs individual updates; secure aggregation reveals only their sum`);
    }
    const p = study.manifest.participation;
    const t = study.manifest.training;
    const keys = new Map(this.deps.store.listSites().map((s) => [s.id, s.publicKey]));
    const members = sites.flatMap((s) => (keys.has(s.id) ? [{ id: s.id, name: s.name, identityKey: keys.get(s.id)! }] : []));
    const maxWeight = settings.maxWeight ?? defaultMaxWeight(Object.values(study.schemas ?? {}).map((s) => s.examplesRounded));
    // Distributed DP: the sites noise their own updates (or record gradient sums); the plan fixes the encoding both sides use.
    const plan = members.length >= 2 ? distributedPlanFor(study.manifest, members.length, global.reduce((n, x) => n + x.data.length, 0), maxWeight) : undefined;
    const res = await secureTrain({
      transport: this.deps.transport, log: this.deps.log, sites: members, settings, global, maxWeight, minSurvivors: p.minSites,
      base: () => this.baseTask(study, round), deadlineMs: p.roundDeadlineMs, ...(plan ? { distributed: plan } : {}),
      ...(this.deps.entropy ? { entropy: { source: this.deps.entropy, label: `${study.id}|${round}|${attempt}` } } : {}),
      train: {
        model: study.model!, weights: globalBytes, localEpochs: t.localEpochs, batchSize: t.batchSize, optimizer: t.optimizer,
        learningRate: t.learningRate, participants: members.length, ...this.scaling(study), ...strategy.trainConfig?.(), ...this.dp.trainFields(study, round, priorRounds, plan),
      },
    });
    return {
      input: { kind: 'mean', mean: res.mean, totalWeight: res.totalWeight, sites: res.survivors },
      participants: res.survivors,
      failures: res.dropped.map(dropAsFailure),
      // Under client-distributed DP no example count leaves a site (each counts once): the total is not known here.
      // Under record-distributed DP the weight lane holds the total record count (public, the step's divisor).
      numExamples: plan?.level === 'client' ? 0 : res.totalWeight, trainLoss: res.meanLoss, backends: res.backends,
      ...(plan ? { client: this.dp.distributedRound(study, round, plan, res.survivors.length, priorRounds) } : {}),
      taskIds: Object.fromEntries(res.survivors.map((site) => [site, res.taskIds[site]?.['masked-input'] ?? ''])),
      reports: res.reports,
      secureAggregation: { ...res.session, survivors: res.survivors.length, dropped: res.dropped.length, maxWeight },
    };
  }

  /** A site that came online after the schema check is described before it may join a round. */
  private async describeLateSites(study: StudyRecord, online: readonly OnlineSite[], check: () => void): Promise<void> {
    const late = online.filter((s) => !study.schemas?.[s.name]);
    if (late.length === 0) return;
    check();
    const { ok } = await this.fanOut(late, () => ({ kind: 'describe', ...this.baseTask(study, 0) }), DescribeResultSchema, study.manifest.participation.roundDeadlineMs, 'describe');
    const schemas = { ...study.schemas };
    for (const [name, { schema }] of ok) {
      if (checkSchema(study.manifest.task, schema, Object.values(study.schemas ?? {})[0]).length === 0
        && JSON.stringify(schema.inputShape) === JSON.stringify(study.model?.inputShape) && schema.classes.length === study.model?.numClasses) {
        schemas[name] = schema;
      }
    }
    await this.deps.store.updateStudy(study.id, { schemas });
  }
}
