/**
 * A training round under secure aggregation: the generic secure sum (secure-sum.ts) over `train` tasks, decoded
 * into the example-weighted mean model. Sites send the clipped update (local minus global weights) quantized and
 * weighted (protocol/crypto/quantize.ts); the coordinator adds the mean update to the global model. Deltas are
 * aggregated rather than weights because they are small and centred on zero, so the clipping bound and the
 * quantization step are spent on the part that changes.
 */
import type { Logger } from 'pino';
import type { Tensor } from '../../protocol/codec.ts';
import { CohortError } from '../../protocol/errors.ts';
import { MaskedTrainResultSchema, type TrainPrivacy, type TrainTask } from '../../protocol/messages.ts';
import type { SecureAggregationSettings } from '../../protocol/secagg-messages.ts';
import { applyDelta, decodeTrainingLanes } from '../../protocol/crypto/quantize.ts';
import { decodeDistributedLanes, decodeRecordLanes } from '../../protocol/privacy/distributed.ts';
import type { DistributedRoundPlan } from '../../protocol/privacy/plan.ts';
import type { Transport } from '../transport/transport.ts';
import { runSecureSum, type SecureSumDrop, type SecureSumRequest, type SecureSumSite, type TaskBase } from './secure-sum.ts';

/** The fields of a `train` task other than the base and the secure-aggregation input. */
export type TrainFields = Omit<TrainTask, keyof TaskBase | 'kind' | 'secagg'>;

export interface SecureTrainRequest {
  transport: Transport;
  log?: Logger | undefined;
  sites: readonly SecureSumSite[];
  settings: SecureAggregationSettings;
  global: readonly Tensor[];
  maxWeight: number;
  minSurvivors: number;
  base: () => TaskBase;
  train: TrainFields;
  deadlineMs: number;
  /**
   * Distributed DP: the round's plan (coordinator/privacy/study-privacy.ts, `distributedPlanFor`). Client level:
   * sites send clipped, scaled, rounded and noised updates with weight 1; the sum decodes to the plain mean of the
   * survivors' updates plus the sites' noise. Record level: sites send the rounded sum of their records' clipped
   * gradients plus noise, and their record count; the sum decodes to one gradient step of `train.learningRate`
   * over the total count.
   */
  distributed?: DistributedRoundPlan;
  /** See `SecureSumRequest.entropy` (simulations only). */
  entropy?: SecureSumRequest<typeof MaskedTrainResultSchema>['entropy'];
}

export interface SecureTrainResult {
  /** The example-weighted mean of the survivors' models (global + mean clipped delta); unweighted and noisy under client-distributed DP. */
  mean: Tensor[];
  totalWeight: number;
  meanLoss: number;
  survivors: string[];
  dropped: SecureSumDrop[];
  backends: Record<string, string>;
  /** Each survivor's differential-privacy report (metadata on its spend, never data), when the study uses DP. */
  reports: Map<string, TrainPrivacy | undefined>;
  session: { sessionId: string; sites: number; threshold: number; degree: number };
  taskIds: Record<string, Partial<Record<string, string>>>;
}

/**
 * The weight cap when the manifest sets none: the largest data size a site reported (rounded counts, plus the
 * rounding margin). Counts are folded in as w / maxWeight, so a cap close to the real counts keeps precision.
 */
export function defaultMaxWeight(examplesRounded: readonly number[]): number {
  return Math.max(1, ...examplesRounded) + 10;
}

/** A secure-aggregation drop as a round failure (the masked-input stage is the site's `train` task). */
export function dropAsFailure(d: SecureSumDrop): { site: string; code: string; message: string; stage: 'train' | Exclude<SecureSumDrop['stage'], 'masked-input'> } {
  return { site: d.site, code: d.code, message: d.message, stage: d.stage === 'masked-input' ? 'train' : d.stage };
}

export async function secureTrain(req: SecureTrainRequest): Promise<SecureTrainResult> {
  const d = req.global.reduce((n, t) => n + t.data.length, 0);
  const plan = req.distributed;
  if (plan && (plan.dim !== d || plan.bits !== req.settings.quantizationBits || (plan.level === 'record' && plan.contributions !== req.maxWeight))) throw new CohortError('COHORT_ERR_DP_INVALID', 'the distributed-DP plan was made for another model, quantization or bound on records per site');
  const res = await runSecureSum({
    transport: req.transport, log: req.log, sites: req.sites, settings: req.settings, vectorLength: d + 2, maxWeight: req.maxWeight,
    minSurvivors: req.minSurvivors, base: req.base, inputSchema: MaskedTrainResultSchema, inputDeadlineMs: req.deadlineMs,
    ...(plan ? { headroom: plan.headroom } : {}),
    inputTask: (_site, base, secagg): TrainTask => ({ kind: 'train', ...base, ...req.train, secagg }),
    ...(req.entropy ? { entropy: req.entropy } : {}),
  });
  // A sum that did not unmask cleanly shows in the weight lane: it must lie between one and maxWeight per survivor
  // (exactly one per survivor under client-distributed DP).
  const decoded = plan?.level === 'record'
    ? { ...decodeRecordLanes(res.sum, plan, res.survivors.length, req.train.learningRate), meanLoss: 0 }
    : plan
    ? { ...decodeDistributedLanes(res.sum, plan, res.survivors.length), meanLoss: 0 }
    : decodeTrainingLanes(res.sum, { clip: req.settings.clip, bits: req.settings.quantizationBits, maxWeight: req.maxWeight });
  if (decoded.totalWeight < res.survivors.length || decoded.totalWeight > res.survivors.length * req.maxWeight) {
    throw new CohortError('COHORT_ERR_SECAGG_BAD_SHARE', `unmasked weight ${decoded.totalWeight} is impossible for ${res.survivors.length} sites`);
  }
  const backends: Record<string, string> = {};
  const reports = new Map<string, TrainPrivacy | undefined>();
  for (const [site, r] of res.extras) {
    backends[site] = r.backend;
    reports.set(site, r.privacy);
  }
  return {
    mean: applyDelta(req.global, decoded.meanDelta), totalWeight: decoded.totalWeight, meanLoss: decoded.meanLoss,
    survivors: res.survivors, dropped: res.dropped, backends, reports, session: res.session, taskIds: res.taskIds,
  };
}
