/**
 * The model card of a study's global model: what was trained, on whose data, how, with what result and at what
 * privacy cost, in one JSON document (served at `/api/studies/:id/model/card`; `cohort study model` also writes
 * it as MODEL_CARD.md). Every number comes from the study record through `studyMetrics`, the same report the API
 * and the dashboard show, so the card cannot disagree with them.
 */
import { readFileSync } from 'node:fs';
import { countParameters, weightShapes } from '../protocol/models.ts';
import type { ClinicalMetrics } from '../protocol/metrics.ts';
import { keyFingerprint } from '../protocol/signing.ts';
import { PROTOCOL_VERSION } from '../protocol/version.ts';
import { CohortError } from '../protocol/errors.ts';
import type { RoundRecord, StudyRecord } from './store/store.ts';
import { jsonSafe, studyMetrics, type LosoMetrics, type SiteMetrics, type StudyMetricsReport } from './study-metrics.ts';

export const MODEL_CARD_FORMAT = 'cohort-model-card/1';

/** Cohort's own version (package.json), recorded on every card. */
export const COHORT_VERSION: string = (JSON.parse(readFileSync(new URL('../package.json', import.meta.url), 'utf8')) as { version: string }).version;

export interface ModelCard {
  format: typeof MODEL_CARD_FORMAT;
  generatedAt: string;
  cohortVersion: string;
  protocolVersion: string;
  study: { id: string; name: string; description?: string; status: string };
  /** SHA-256 of the manifest exactly as the researcher submitted it; sites approved this hash. */
  manifestHash: string | undefined;
  researcher: { name?: string; signed: boolean; keyFingerprint?: string };
  model: {
    spec: StudyRecord['manifest']['model'];
    inputShape: number[];
    numClasses: number;
    parameters: number;
    /** The round whose aggregate these weights are. */
    round: number;
    format: 'tfjs-layers';
    files: string[];
  };
  data: {
    dataset: string; label: string; features?: string[]; holdoutFraction: number; seed: number;
    /** How inputs were scaled in training; apply the same `(x - mean) / std` per feature before predicting. */
    standardize: StudyRecord['manifest']['task']['standardize'];
    standardization?: { mean: number[]; std: number[] };
  };
  training: {
    roundsPlanned: number;
    roundsCompleted: number;
    localEpochs: number;
    batchSize: number;
    optimizer: string;
    learningRate: number;
    strategy: string;
    minSites: number;
  };
  /** Every site that took part, with the rounds it contributed an update to and its latest hold-out size. */
  sites: { name: string; rounds: number[]; holdoutN?: number }[];
  evaluation: {
    minCellCount: number;
    methods: StudyMetricsReport['methods'];
    /** The final global model: pooled over every site's hold-out, and on each site's own hold-out (cross-site). */
    final: { round: number; pooled: ClinicalMetrics; perSite: Record<string, SiteMetrics> } | null;
    /** Pooled hold-out AUC and loss after every round (the learning curve). */
    perRound: { round: number; auc: number | null; aucLower: number | null; aucUpper: number | null; loss: number | null; sites: number; failures: number }[];
    leaveOneSiteOut?: LosoMetrics;
  };
  privacy: {
    secureAggregation: boolean;
    /** Any further privacy settings of the manifest (differential privacy), as written there. */
    settings: Record<string, unknown>;
    /** Privacy loss spent per site by the end of the study, when differential privacy was used. */
    epsilonSpent?: Record<string, number>;
  };
  dates: { created: string; firstRoundStarted?: string; lastRoundCompleted?: string; completed?: string };
}

/** Builds the card of a study that has at least one completed round. */
export function buildModelCard(study: StudyRecord, rounds: readonly RoundRecord[], opts: { minCellCount?: number } = {}): ModelCard {
  if (!study.model || study.completedRounds < 1) throw new CohortError('COHORT_ERR_STUDY_NO_MODEL', `study ${study.id} has no completed round`);
  const m = study.manifest;
  const report = studyMetrics(study, rounds, opts);
  const last = report.rounds.at(-1);
  const sites = new Map<string, number[]>();
  for (const r of rounds) for (const p of r.participants) sites.set(p, [...(sites.get(p) ?? []), r.round]);
  const lastRecord = rounds.at(-1);
  const epsilon: Record<string, number> = {};
  for (const r of report.rounds) for (const [site, e] of Object.entries(r.epsilon ?? {})) epsilon[site] = Math.max(epsilon[site] ?? 0, e);
  const { secureAggregation, ...otherPrivacy } = m.privacy as { secureAggregation: boolean } & Record<string, unknown>;
  const card: ModelCard = {
    format: MODEL_CARD_FORMAT,
    generatedAt: new Date().toISOString(),
    cohortVersion: COHORT_VERSION,
    protocolVersion: PROTOCOL_VERSION,
    study: { id: study.id, name: m.name, ...(m.description ? { description: m.description } : {}), status: study.status },
    manifestHash: study.manifestHash,
    researcher: {
      ...(study.createdBy ? { name: study.createdBy } : {}),
      signed: Boolean(study.signature),
      ...(study.researcherPublicKey ? { keyFingerprint: keyFingerprint(study.researcherPublicKey) } : {}),
    },
    model: {
      spec: m.model, inputShape: study.model.inputShape, numClasses: study.model.numClasses,
      parameters: countParameters(weightShapes(study.model)), round: study.completedRounds, format: 'tfjs-layers', files: ['model.json', 'weights.bin'],
    },
    data: {
      dataset: m.task.dataset, label: m.task.label, ...(m.task.features ? { features: m.task.features } : {}),
      holdoutFraction: m.evaluation.holdoutFraction, seed: m.seed,
      standardize: m.task.standardize, ...(study.standardization ? { standardization: study.standardization } : {}),
    },
    training: {
      roundsPlanned: m.training.rounds, roundsCompleted: study.completedRounds, localEpochs: m.training.localEpochs, batchSize: m.training.batchSize,
      optimizer: m.training.optimizer, learningRate: m.training.learningRate, strategy: m.strategy.name, minSites: m.participation.minSites,
    },
    sites: [...sites.entries()].sort(([a], [b]) => a.localeCompare(b)).map(([name, rs]) => {
      const n = lastRecord?.perSiteCounts?.[name]?.n;
      const floor = Math.max(report.minCellCount, lastRecord?.perSiteCounts?.[name]?.minCellCount ?? 0);
      // A hold-out smaller than the minimum cell count is not stated exactly.
      return { name, rounds: rs, ...(n !== undefined && n >= floor ? { holdoutN: n } : {}) };
    }),
    evaluation: {
      minCellCount: report.minCellCount,
      methods: report.methods,
      final: last ? { round: last.round, pooled: last.pooled, perSite: last.perSite } : null,
      perRound: report.rounds.map((r) => ({
        round: r.round, auc: r.pooled.auc?.value ?? null, aucLower: r.pooled.auc?.lower ?? null, aucUpper: r.pooled.auc?.upper ?? null,
        loss: r.pooled.loss ?? null, sites: r.participants.length, failures: r.failures.length,
      })),
      ...(report.loso ? { leaveOneSiteOut: report.loso } : {}),
    },
    privacy: { secureAggregation, settings: otherPrivacy, ...(Object.keys(epsilon).length ? { epsilonSpent: epsilon } : {}) },
    dates: {
      created: study.createdAt,
      ...(rounds[0] ? { firstRoundStarted: rounds[0].startedAt } : {}),
      ...(lastRecord ? { lastRoundCompleted: lastRecord.completedAt } : {}),
      ...(study.status === 'completed' ? { completed: study.updatedAt } : {}),
    },
  };
  return jsonSafe(card);
}
