/**
 * Differential privacy at the site: the site's own accountant per (study, dataset), its budget check before any
 * training, and client-level clipping of what leaves. The coordinator is never asked how much privacy is left:
 * the site counts for itself, in an append-only file in its own directory that survives restarts.
 *
 * Before each training round the site plans the round (protocol/privacy/plan.ts), asks its accountant what epsilon
 * the study would reach at the policy's delta, and refuses with COHORT_ERR_POLICY_EPSILON_EXCEEDED if that passes
 * `policy.maxEpsilonPerStudy`. Otherwise it charges the budget *before* touching the data, so a crash mid-round
 * can only over-count, never under-count.
 */
import { appendFileSync, closeSync, existsSync, fsyncSync, openSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import type { Tensor } from '../../protocol/codec.ts';
import { CohortError } from '../../protocol/errors.ts';
import type { DpSettings, StudyManifest, TrainPrivacy, TrainTask } from '../../protocol/messages.ts';
import { RdpAccountant, type PrivacyEvent } from '../../protocol/privacy/accountant.ts';
import { clientRoundPlan, recordRoundPlan, type DistributedRoundPlan, type RecordRoundPlan } from '../../protocol/privacy/plan.ts';
import { secureAggregationSettings } from '../../protocol/secagg-messages.ts';
import type { Policy } from '../policy.ts';

export type PrivacyLevel = 'record' | 'client';

/** The level a DP mode protects: `record` and `record-distributed` each patient, the client modes each site. */
export function levelOf(mode: DpSettings['mode']): PrivacyLevel {
  return mode === 'record' || mode === 'record-distributed' ? 'record' : 'client';
}

/** One line of the site's privacy budget file. */
export interface BudgetEntry {
  at: string;
  studyId: string;
  dataset: string;
  round: number;
  taskId: string;
  level: PrivacyLevel;
  event: PrivacyEvent;
}

/** The site's privacy spend, append-only JSON lines (`privacy-budget.jsonl` in the site directory). */
export class PrivacyBudget {
  private readonly memory: BudgetEntry[] = [];

  /** `file` undefined: kept in memory (virtual sites in simulations). */
  constructor(private readonly file: string | undefined) {}

  entries(): BudgetEntry[] {
    if (!this.file) return [...this.memory];
    if (!existsSync(this.file)) return [];
    const out: BudgetEntry[] = [];
    for (const line of readFileSync(this.file, 'utf8').split('\n')) {
      if (!line.trim()) continue;
      try {
        out.push(JSON.parse(line) as BudgetEntry);
      } catch {
        // A line torn by a crash mid-write: the charge it held is re-made by the retried round.
      }
    }
    return out;
  }

  append(entry: BudgetEntry): void {
    if (!this.file) {
      this.memory.push(entry);
      return;
    }
    appendFileSync(this.file, `${JSON.stringify(entry)}\n`, { mode: 0o600 });
    const fd = openSync(this.file, 'r');
    try { fsyncSync(fd); } finally { closeSync(fd); }
  }

  accountant(studyId: string, dataset: string, level: PrivacyLevel): RdpAccountant {
    const acc = new RdpAccountant();
    for (const e of this.entries()) if (e.studyId === studyId && e.dataset === dataset && e.level === level) acc.compose(e.event);
    return acc;
  }
}

/** A training round's privacy, as planned before training. */
export interface DpRound {
  settings: DpSettings;
  level: PrivacyLevel;
  record?: RecordRoundPlan;
  /** Client modes: the clip to apply to the update. */
  clip?: number;
  /**
   * Distributed noise: the secure-aggregation encoder clips, rounds and noises (protocol/privacy/distributed.ts)
   * the site's update (`client`) or each record's gradient at the global model, summed (`record`: no local training).
   */
  distributed?: 'client' | 'record';
  report: TrainPrivacy;
}

export class SiteDp {
  readonly budget: PrivacyBudget;

  constructor(dir: string | undefined, private readonly policy: Policy) {
    this.budget = new PrivacyBudget(dir ? join(dir, 'privacy-budget.jsonl') : undefined);
  }

  /** A site that caps epsilon cannot join a study without differential privacy: its epsilon has no bound. */
  checkManifest(manifest: StudyManifest): void {
    const mode = manifest.privacy.dp?.mode ?? 'none';
    if (this.policy.maxEpsilonPerStudy !== null && mode === 'none') {
      throw new CohortError('COHORT_ERR_POLICY_EPSILON_EXCEEDED', `this site spends at most epsilon ${this.policy.maxEpsilonPerStudy} per study; a study without differential privacy has no bound`, { maxEpsilonPerStudy: this.policy.maxEpsilonPerStudy });
    }
    if (mode === 'client-distributed' || mode === 'record-distributed') {
      if (secureAggregationSettings(manifest.privacy.secureAggregation) === null) {
        throw new CohortError('COHORT_ERR_DP_INVALID', `${mode} DP adds its noise under secure aggregation; this manifest turns secure aggregation off`);
      }
      if (manifest.privacy.dp?.adaptiveClipping) throw new CohortError('COHORT_ERR_DP_UNSUPPORTED', `adaptive clipping is not available with ${mode} DP`);
    }
  }

  /**
   * Refuses, before anything of a round leaves (client-distributed DP: at the first secure-aggregation stage, so an
   * exhausted site does not even send keys), when `event` would take the site past its cap. Charges nothing.
   */
  checkBudget(studyId: string, dataset: string, round: number, level: PrivacyLevel, event: PrivacyEvent): void {
    this.refuseOverCap(this.budget.accountant(studyId, dataset, level), studyId, round, level, event);
  }

  private refuseOverCap(acc: RdpAccountant, studyId: string, round: number, level: PrivacyLevel, event: PrivacyEvent): void {
    const max = this.policy.maxEpsilonPerStudy;
    if (max === null) return;
    const spent = acc.epsilon(this.policy.delta).epsilon;
    const after = acc.epsilonIf(event, this.policy.delta).epsilon;
    if (after > max) {
      throw new CohortError('COHORT_ERR_POLICY_EPSILON_EXCEEDED',
        `round ${round} would bring this site's ${level}-level epsilon for study ${studyId} to ${after.toFixed(4)} (delta ${this.policy.delta}); its policy allows ${max}, ${spent.toFixed(4)} already spent`,
        { level, epsilonSpent: spent, epsilonAfterRound: after, maxEpsilonPerStudy: max, delta: this.policy.delta });
    }
  }

  /** Epsilon this site has spent on a study, at its policy's delta, for the level its policy caps. */
  spent(studyId: string, dataset: string, manifest: StudyManifest | undefined): number | undefined {
    const mode = manifest?.privacy.dp?.mode;
    if (!mode || mode === 'none') return undefined;
    return this.budget.accountant(studyId, dataset, levelOf(mode)).epsilon(this.policy.delta).epsilon;
  }

  /**
   * Plans a training round and charges the site's budget, or refuses. Call after loading the data (record-level
   * noise depends on the site's own number of examples `n`) and before training. Client-distributed rounds need
   * the plan of the round's secure-aggregation session (`distributed`), which the site made itself at advertise.
   */
  beforeTrain(task: TrainTask, manifest: StudyManifest, n: number, distributed?: DistributedRoundPlan): DpRound | undefined {
    const settings = manifest.privacy.dp;
    if (!settings || settings.mode === 'none') {
      this.checkManifest(manifest);
      return undefined;
    }
    this.checkManifest(manifest);
    const t = manifest.training;
    const level = levelOf(settings.mode);
    let event: PrivacyEvent;
    let record: RecordRoundPlan | undefined;
    let clip: number | undefined;
    try {
      if (settings.mode === 'record') {
        record = recordRoundPlan(settings, { batchSize: t.batchSize, localEpochs: t.localEpochs, rounds: t.rounds }, n);
        event = record.event;
      } else if (settings.mode === 'client-distributed' || settings.mode === 'record-distributed') {
        if (!distributed || distributed.level !== level) throw new CohortError('COHORT_ERR_SITE_TASK_MISMATCH', `${settings.mode} DP needs this round's secure-aggregation session; the task has none the site advertised for it`);
        const d = task.dp?.distributed;
        // The coordinator decodes with the parameters it sends; a site that computed others would be decoded wrong.
        if ((task.dp && task.dp.clip !== distributed.clip) || (d && (d.scale !== distributed.scale || d.siteVariance !== distributed.siteVariance || d.headroom !== distributed.headroom))) {
          throw new CohortError('COHORT_ERR_SITE_TASK_MISMATCH', 'the task\'s distributed-DP parameters differ from what this site computed from the approved manifest');
        }
        event = distributed.event;
        clip = distributed.clip;
      } else {
        event = clientRoundPlan(settings, t.rounds, task.participants).event;
        clip = task.dp?.clip ?? settings.clip;
        if (!settings.adaptiveClipping && clip !== settings.clip) throw new CohortError('COHORT_ERR_SITE_TASK_MISMATCH', 'task clip differs from the approved manifest');
      }
    } catch (err) {
      if (err instanceof CohortError) throw err;
      throw new CohortError('COHORT_ERR_DP_INVALID', err instanceof Error ? err.message : String(err));
    }
    const acc = this.budget.accountant(task.studyId, task.dataset, level);
    this.refuseOverCap(acc, task.studyId, task.round, level, event);
    this.budget.append({ at: new Date().toISOString(), studyId: task.studyId, dataset: task.dataset, round: task.round, taskId: task.taskId, level, event });
    acc.compose(event);
    const other = this.budget.accountant(task.studyId, task.dataset, level === 'record' ? 'client' : 'record');
    const eps = (a: RdpAccountant) => a.epsilon(settings.delta).epsilon;
    // Without noise (noiseMultiplier 0) epsilon has no bound; a wire number cannot be infinite, so the field is left
    // out (the approved manifest's noiseMultiplier 0 says why).
    const finite = <K extends string>(key: K, v: number): Partial<Record<K, number>> => (Number.isFinite(v) ? { [key]: v } as Record<K, number> : {});
    const report: TrainPrivacy = {
      mode: settings.mode as TrainPrivacy['mode'], delta: settings.delta,
      ...(level === 'record' ? finite('recordEpsilon', eps(acc)) : finite('clientEpsilon', eps(acc))),
      ...(other.events.length ? (level === 'record' ? finite('clientEpsilon', eps(other)) : finite('recordEpsilon', eps(other))) : {}),
      ...finite('nextRoundEpsilon', acc.epsilonIf(event, settings.delta).epsilon),
      ...(record ? { noiseMultiplier: record.noiseMultiplier, sampleRate: record.sampleRate, steps: record.steps } : {}),
      // Record-distributed: one full-batch step per round; the noise multiplier is the total the sites add together.
      ...(settings.mode === 'record-distributed' && distributed ? { noiseMultiplier: distributed.noiseMultiplier, sampleRate: 1, steps: 1 } : {}),
    };
    const dist = settings.mode === 'client-distributed' || settings.mode === 'record-distributed' ? distributed?.level : undefined;
    return { settings, level, ...(record ? { record } : {}), ...(clip !== undefined ? { clip } : {}), ...(dist ? { distributed: dist } : {}), report };
  }

  /**
   * What leaves: in client-central mode the update (weights minus the global model) is clipped to the round's
   * clip, and the report says whether it was within the clip (adaptive clipping's bit). Record mode sends DP-SGD's
   * output as it is; client-distributed leaves clipping to the encoder.
   */
  release(round: DpRound, global: readonly Tensor[], weights: Tensor[]): { weights: Tensor[]; privacy: TrainPrivacy } {
    // Client-distributed: the encoder clips (in float64) before it rounds and noises; whether the update was within
    // the clip is a fact about the data no noise covers, so it is not reported.
    if (round.clip === undefined || round.distributed) return { weights, privacy: round.report };
    const { clipped, norm } = clipUpdate(global, weights, round.clip);
    return { weights: clipped, privacy: { ...round.report, withinClip: norm <= round.clip } };
  }
}

/** Clips `weights - global` to L2 norm `clip` (over all tensors together) and returns global + clipped delta. */
export function clipUpdate(global: readonly Tensor[], weights: readonly Tensor[], clip: number): { clipped: Tensor[]; norm: number } {
  let sq = 0;
  weights.forEach((w, k) => {
    const g = global[k]!.data;
    for (let i = 0; i < w.data.length; i++) sq += (w.data[i]! - g[i]!) ** 2;
  });
  const norm = Math.sqrt(sq);
  const f = Math.min(1, clip / Math.max(norm, 1e-30));
  const clipped = weights.map((w, k) => {
    const g = global[k]!.data;
    return { shape: [...w.shape], data: Float32Array.from(w.data, (v, i) => g[i]! + f * (v - g[i]!)) };
  });
  return { clipped, norm };
}
