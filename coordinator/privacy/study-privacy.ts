/**
 * Differential privacy at the coordinator, called from the study runner at four points of a round:
 * `gate` before it (stop a study whose next round would pass its target epsilon), `trainFields` in the train task
 * (this round's clip), `aggregate` instead of the plain mean (client-level DP: clip, sum, Gaussian noise, adaptive
 * clip), and `record` after it (epsilon per site, record-level and client-level apart, on the round and the study).
 *
 * Client-level DP with central noise trusts the coordinator with individual updates (it sees them, then adds
 * noise); it protects each site's contribution from everyone who gets the model. Client-level DP with distributed
 * noise (`client-distributed`) does not: the sites add integer noise under secure aggregation, the coordinator
 * decodes the noisy sum (coordinator/secure-aggregation/secure-train.ts) and accounts for the noise the threshold
 * guarantees. Record-level DP needs no trust in the coordinator either: the sites add their own noise, and the
 * coordinator only shows what they report (`record`), or (`record-distributed`: one full-batch gradient step per
 * round whose noise the sites split under secure aggregation) decodes the noisy gradient sum, takes the step and
 * accounts for the noise the threshold guarantees, as in client-distributed.
 */
import type { Tensor } from '../../protocol/codec.ts';
import { CohortError, type WireError } from '../../protocol/errors.ts';
import type { DpSettings, TrainPrivacy } from '../../protocol/messages.ts';
import { epsilonOf, type PrivacyEvent } from '../../protocol/privacy/accountant.ts';
import { gaussianNoise, keyedUniform, type Uniform } from '../../protocol/privacy/noise.ts';
import type { Entropy } from '../../protocol/crypto/entropy.ts';
import { clientRoundPlan, distributedLevel, distributedRoundPlan, type DistributedRoundPlan } from '../../protocol/privacy/plan.ts';
import { secureAggregationSettings } from '../../protocol/secagg-messages.ts';
import { sessionShape } from '../../protocol/crypto/session.ts';
import type { AggregateInput, FitResult, Strategy } from '../strategies/strategy.ts';
import type { RoundRecord, StudyRecord } from '../store/store.ts';

/** Epsilon spent by one site, as shown to researchers. */
export interface SiteEpsilon {
  /** Record-level epsilon from the site's own accountant (record mode). */
  record?: number;
  /** Client-level epsilon (client modes): the site's own count of the rounds it contributed to. */
  client?: number;
  /** The site's epsilon (of the level its policy caps) after one more round like the last one. */
  nextRound?: number;
  /** Round of the site's latest report. */
  round: number;
}

/**
 * The coordinator's own accounting for one round: client level (client modes, `round.privacy.client`), or record
 * level under record-distributed DP (`round.privacy.record`; `clip` is then per record, the noise on the gradient sum).
 */
export interface ClientRoundPrivacy {
  /** Epsilon (client or record level) of the model released after this round, by the coordinator's accountant. */
  epsilon: number;
  noiseMultiplier: number;
  /** Standard deviation of the noise added to the sum of updates (updateNoiseMultiplier * clip). */
  noiseStd: number;
  clip: number;
  /** The clip for the next round (changes only with adaptive clipping). */
  nextClip: number;
  /** Noisy fraction of sites whose update was within the clip (adaptive clipping only). */
  withinClipFraction?: number;
  /** Distributed modes: the Skellam mechanism of the round (integer units unless said otherwise). */
  distributed?: {
    /** Integer units per unit of weight. */
    scale: number;
    /** Sensitivities the accountant charged (L2, L1 of one site's rounded update). */
    l2: number;
    l1: number;
    /** Variance every released sum is guaranteed to carry (what the accountant charges). */
    variance: number;
    /** Sites the noise is split over (the threshold), and each one's share. */
    noiseSites: number;
    siteVariance: number;
    /** Sites whose noise is in this round's sum, and the variance it therefore carries (>= `variance`). */
    survivors: number;
    actualVariance: number;
  };
}

/** `round.privacy`: what this round spent. */
export interface RoundPrivacy {
  mode: DpSettings['mode'];
  delta: number;
  perSite: Record<string, SiteEpsilon>;
  client?: ClientRoundPrivacy;
  /** Record-distributed: the coordinator's record-level accounting of the noise the sites put in the sum. */
  record?: ClientRoundPrivacy;
}

/**
 * `study.privacy`: epsilon spent so far, per site and for the study. `perSite[name].record` and `.client` are the
 * two levels, kept apart; `client` (top level) is the coordinator's own accountant in client modes.
 */
export interface StudyPrivacy {
  mode: DpSettings['mode'];
  delta: number;
  targetEpsilon?: number;
  perSite: Record<string, SiteEpsilon>;
  client?: { epsilon: number; rounds: number; noiseMultiplier: number; clip: number };
  /** Record-distributed: record-level epsilon of the study by the coordinator's accountant (each site charges the same). */
  record?: { epsilon: number; rounds: number; noiseMultiplier: number; clip: number };
  /** Sites that refused a round because their budget was spent (COHORT_ERR_POLICY_EPSILON_EXCEEDED). */
  exhausted?: Record<string, { round: number; message: string; at: string }>;
}

const settingsOf = (study: StudyRecord): DpSettings | undefined => {
  const dp = study.manifest.privacy.dp;
  return dp && dp.mode !== 'none' ? dp : undefined;
};

/** The clip for `round`: the manifest's, or the last completed round's adapted one. */
function clipFor(dp: DpSettings, rounds: readonly RoundRecord[], round: number): number {
  const prev = rounds.filter((r) => r.round < round).at(-1);
  return prev?.privacy?.client?.nextClip ?? dp.clip;
}

/**
 * The distributed-DP plan of a round (client- or record-distributed) over `sites` sites of a `dim`-parameter model,
 * exactly as each site computes it from the manifest and the session (same function, same inputs; `maxWeight`, the
 * session's bound on records per site, matters at record level); undefined for other modes.
 */
export function distributedPlanFor(manifest: StudyRecord['manifest'], sites: number, dim: number, maxWeight: number): DistributedRoundPlan | undefined {
  const dp = manifest.privacy.dp;
  if (!dp || !distributedLevel(dp)) return undefined;
  const settings = secureAggregationSettings(manifest.privacy.secureAggregation);
  if (!settings) throw new CohortError('COHORT_ERR_DP_INVALID', `${dp.mode} DP adds its noise under secure aggregation; turn privacy.secureAggregation on`);
  return distributedRoundPlan(dp, manifest.training.rounds, { dim, sites, threshold: sessionShape(settings, sites).threshold, bits: settings.quantizationBits, maxWeight });
}

/** The Skellam events of the completed rounds before `round` of a record-distributed study, as stored with them. */
function recordEvents(rounds: readonly RoundRecord[], round: number): PrivacyEvent[] {
  return rounds.filter((r) => r.round < round).flatMap((r) => {
    const d = r.privacy?.record?.distributed;
    return d ? [{ kind: 'skellam' as const, l1: d.l1, l2: d.l2, variance: d.variance, steps: 1 }] : [];
  });
}

export class CoordinatorDp {
  /** `entropy`: simulations only, a seeded noise source per study and round; default the OS CSPRNG. */
  constructor(private readonly entropy?: Entropy) {}

  private noise(studyId: string, round: number): [Uniform] | [] {
    return this.entropy ? [keyedUniform(this.entropy(`dp-central|${studyId}|${round}`))] : [];
  }

  /**
   * Before a round: a coded error when the study must not run it: a mode this version cannot run, a strategy
   * that needs individual updates with client-level DP, or a next round that would take the study past its
   * target epsilon (COHORT_ERR_STUDY_EPSILON_TARGET, the study then stops with that reason).
   */
  gate(study: StudyRecord, round: number, rounds: readonly RoundRecord[], strategy: Strategy, expectedSites: number, dim: number, maxWeight?: number): WireError | undefined {
    const dp = settingsOf(study);
    if (!dp) return undefined;
    const level = distributedLevel(dp);
    if (level) {
      // Client level: the mechanism is the same every round (the threshold only splits its noise), so epsilon after
      // `round` rounds is `round` times one round's RDP. Record level: the scale follows the session's bound on
      // records per site, so the completed rounds' events are composed as stored, with this round's.
      const settings = secureAggregationSettings(study.manifest.privacy.secureAggregation);
      if (!settings) return { code: 'COHORT_ERR_DP_INVALID', message: `${dp.mode} DP adds its noise under secure aggregation; this study turns it off` };
      let plan;
      try {
        plan = distributedPlanFor(study.manifest, Math.max(2, expectedSites), dim, maxWeight ?? 1)!;
      } catch (err) {
        return err instanceof CohortError ? err.toWire() : { code: 'COHORT_ERR_DP_INVALID', message: String(err) };
      }
      if (dp.targetEpsilon !== undefined) {
        const events = level === 'client' ? [{ ...plan.event, steps: round }] : [...recordEvents(rounds, round), plan.event];
        const next = epsilonOf(events, dp.delta).epsilon;
        if (next > dp.targetEpsilon * (1 + 1e-9)) return targetReached(round, next, dp.targetEpsilon, level);
      }
      return undefined;
    }
    if (dp.mode === 'client-central' && strategy.requires !== 'sum') {
      return { code: 'COHORT_ERR_DP_INVALID', message: `strategy ${strategy.name} needs individual updates; client-level DP releases only a noisy sum` };
    }
    if (dp.mode === 'client-central') {
      let plan;
      try {
        plan = clientRoundPlan(dp, study.manifest.training.rounds, expectedSites);
      } catch (err) {
        return { code: 'COHORT_ERR_DP_INVALID', message: err instanceof Error ? err.message : String(err) };
      }
      if (dp.targetEpsilon !== undefined) {
        const next = epsilonOf([{ ...plan.event, steps: round }], dp.delta).epsilon;
        if (next > dp.targetEpsilon * (1 + 1e-9)) return targetReached(round, next, dp.targetEpsilon, 'client');
      }
      return undefined;
    }
    // Record level: the sites know their own spend; the coordinator projects from their latest reports.
    if (dp.targetEpsilon !== undefined) {
      const last = rounds.filter((r) => r.round < round).at(-1)?.privacy?.perSite ?? {};
      const next = Math.max(0, ...Object.values(last).map((s) => s.nextRound ?? 0));
      if (next > dp.targetEpsilon * (1 + 1e-9)) return targetReached(round, next, dp.targetEpsilon, 'record');
    }
    return undefined;
  }

  /** Fields of this round's train task: the clip, in client modes; the decoding parameters, in the distributed modes. */
  trainFields(study: StudyRecord, round: number, rounds: readonly RoundRecord[], plan?: DistributedRoundPlan): { dp?: { clip: number; distributed?: { scale: number; siteVariance: number; headroom: number } } } {
    const dp = settingsOf(study);
    if (!dp || dp.mode === 'record') return {};
    if (plan) return { dp: { clip: plan.clip, distributed: { scale: plan.scale, siteVariance: plan.siteVariance, headroom: plan.headroom } } };
    return { dp: { clip: clipFor(dp, rounds, round) } };
  }

  /**
   * Distributed modes: the round's accounting, for the noise the threshold guarantees and the noise actually in.
   * Client level: `round` rounds of the same mechanism; record level: the completed rounds' events and this one.
   */
  distributedRound(study: StudyRecord, round: number, plan: DistributedRoundPlan, survivors: number, rounds: readonly RoundRecord[]): ClientRoundPrivacy {
    const dp = settingsOf(study)!;
    const events = plan.level === 'client' ? [{ ...plan.event, steps: round }] : [...recordEvents(rounds, round), plan.event];
    return {
      epsilon: epsilonOf(events, dp.delta).epsilon,
      noiseMultiplier: plan.noiseMultiplier, noiseStd: plan.noiseStd, clip: plan.clip, nextClip: plan.clip,
      distributed: {
        scale: plan.scale, l2: plan.l2, l1: plan.l1, variance: plan.variance, noiseSites: plan.noiseSites, siteVariance: plan.siteVariance,
        survivors, actualVariance: survivors * plan.siteVariance,
      },
    };
  }

  /**
   * Client-level DP with central noise: each update (site model minus global model) is clipped again here (a site
   * that did not clip cannot weaken the guarantee), the clipped updates are summed, Gaussian noise of standard
   * deviation updateNoiseMultiplier * clip is added, and the sum is divided by the number of sites (uniform weights:
   * weighting by example counts would let one site's weight exceed the clip). The strategy gets the noisy mean.
   * Undefined when the study does not use client-level DP.
   */
  aggregate(study: StudyRecord, round: number, rounds: readonly RoundRecord[], global: readonly Tensor[], results: readonly FitResult[], reports: ReadonlyMap<string, TrainPrivacy | undefined>): { input: AggregateInput; client: ClientRoundPrivacy } | undefined {
    const dp = settingsOf(study);
    if (!dp || dp.mode !== 'client-central') return undefined;
    const clip = clipFor(dp, rounds, round);
    const plan = clientRoundPlan(dp, study.manifest.training.rounds, results.length);
    const sum = global.map((t) => new Float64Array(t.data.length));
    for (const r of results) {
      let sq = 0;
      r.weights.forEach((w, k) => { const g = global[k]!.data; for (let i = 0; i < w.data.length; i++) sq += (w.data[i]! - g[i]!) ** 2; });
      const f = Math.min(1, clip / Math.max(Math.sqrt(sq), 1e-30));
      r.weights.forEach((w, k) => { const g = global[k]!.data; const s = sum[k]!; for (let i = 0; i < s.length; i++) s[i]! += f * (w.data[i]! - g[i]!); });
    }
    const noiseStd = plan.updateNoiseMultiplier * clip;
    const n = results.length;
    const source = this.noise(study.id, round);
    const mean: Tensor[] = global.map((t, k) => {
      const noise = gaussianNoise(t.data.length, noiseStd, ...source);
      const s = sum[k]!;
      return { shape: [...t.shape], data: Float32Array.from(t.data, (g, i) => g + (s[i]! + noise[i]!) / n) };
    });
    let nextClip = clip;
    let withinClipFraction: number | undefined;
    if (dp.adaptiveClipping) {
      // Andrew et al. 2021: the count of sites within the clip, centred (sensitivity 1/2) and noised, moves the clip
      // geometrically toward the target quantile of update norms.
      const centred = results.reduce((acc, r) => acc + ((reports.get(r.site)?.withinClip ?? false) ? 0.5 : -0.5), 0);
      const noisy = centred + (gaussianNoise(1, plan.bitNoiseStd, ...source)[0] ?? 0);
      withinClipFraction = Math.min(1, Math.max(0, noisy / n + 0.5));
      nextClip = clip * Math.exp(-dp.adaptiveClipping.learningRate * (withinClipFraction - dp.adaptiveClipping.targetQuantile));
    }
    const epsilon = epsilonOf([{ ...plan.event, steps: round }], dp.delta).epsilon;
    return {
      input: { kind: 'mean', mean, totalWeight: n, sites: results.map((r) => r.site) },
      client: { epsilon, noiseMultiplier: plan.noiseMultiplier, noiseStd, clip, nextClip, ...(withinClipFraction !== undefined ? { withinClipFraction } : {}) },
    };
  }

  /** The round's privacy record from the sites' reports (and the coordinator's client accounting). */
  roundPrivacy(study: StudyRecord, round: number, reports: ReadonlyMap<string, TrainPrivacy | undefined>, client: ClientRoundPrivacy | undefined): RoundPrivacy | undefined {
    const dp = settingsOf(study);
    if (!dp) return undefined;
    const perSite: Record<string, SiteEpsilon> = {};
    for (const [site, p] of reports) {
      if (!p) continue;
      perSite[site] = {
        round, ...(p.recordEpsilon !== undefined ? { record: p.recordEpsilon } : {}), ...(p.clientEpsilon !== undefined ? { client: p.clientEpsilon } : {}),
        ...(p.nextRoundEpsilon !== undefined ? { nextRound: p.nextRoundEpsilon } : {}),
      };
    }
    return { mode: dp.mode, delta: dp.delta, perSite, ...(client ? (dp.mode === 'record-distributed' ? { record: client } : { client }) : {}) };
  }

  /** `study.privacy` after a round (or a refusal): the latest report of every site, the study's client epsilon. */
  studyPrivacy(study: StudyRecord, rounds: readonly RoundRecord[], refusals: readonly { site: string; code: string; message: string }[] = []): StudyPrivacy | undefined {
    const dp = settingsOf(study);
    if (!dp) return undefined;
    const perSite: Record<string, SiteEpsilon> = { ...study.privacy?.perSite };
    for (const r of rounds) for (const [site, e] of Object.entries(r.privacy?.perSite ?? {})) perSite[site] = e;
    const exhausted = { ...study.privacy?.exhausted };
    const now = new Date().toISOString();
    const round = (rounds.at(-1)?.round ?? 0) + 1;
    for (const f of refusals) if (f.code === 'COHORT_ERR_POLICY_EPSILON_EXCEEDED') exhausted[f.site] = { round, message: f.message, at: now };
    const last = rounds.at(-1)?.privacy?.client;
    const lastRecord = rounds.at(-1)?.privacy?.record;
    return {
      mode: dp.mode, delta: dp.delta, ...(dp.targetEpsilon !== undefined ? { targetEpsilon: dp.targetEpsilon } : {}), perSite,
      ...(last ? { client: { epsilon: last.epsilon, rounds: rounds.length, noiseMultiplier: last.noiseMultiplier, clip: last.nextClip } } : {}),
      ...(lastRecord ? { record: { epsilon: lastRecord.epsilon, rounds: rounds.length, noiseMultiplier: lastRecord.noiseMultiplier, clip: lastRecord.clip } } : {}),
      ...(Object.keys(exhausted).length ? { exhausted } : {}),
    };
  }
}

function targetReached(round: number, projected: number, target: number, level: 'record' | 'client'): WireError {
  return new CohortError('COHORT_ERR_STUDY_EPSILON_TARGET',
    `round ${round} would bring the study's ${level}-level epsilon to ${projected.toFixed(4)}, past its target ${target}; stopped after round ${round - 1}`,
    { projectedEpsilon: projected, targetEpsilon: target, level, lastRound: round - 1 }).toWire();
}
