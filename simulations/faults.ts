/**
 * Faults a simulation injects, all drawn from the scenario seed and the names of what is decided, so a scenario
 * reproduces exactly:
 *
 * - dropout (per stage): the site is gone when the task arrives; the coordinator sees it disconnect.
 * - straggler (per stage): the site does the work but answers after the round deadline; the coordinator sees a
 *   timeout. Time is simulated: nobody waits the real deadline.
 * - malicious sites: a fixed share of the sites tamper with the update they send back (sign flip, scaling,
 *   Gaussian noise). Applied to the update the virtual site returns, after the site agent produced it; under
 *   secure aggregation to its quantized lanes, before they are masked.
 */
import { z } from 'zod';
import type { Tensor } from '../protocol/codec.ts';
import { normal, permutation, randFor, uniform } from './rng.ts';

/**
 * The stages a task can be in: its kind. Under secure aggregation a round adds `secagg-advertise` (keys),
 * `secagg-share` (shares) and `secagg-unmask` around `train` (the masked input).
 */
export const STAGES = ['describe', 'train', 'evaluate', 'secagg-advertise', 'secagg-share', 'secagg-unmask'] as const;
export type Stage = (typeof STAGES)[number];

const rate = z.number().min(0).max(1);
const StageRatesSchema = z.strictObject(Object.fromEntries(STAGES.map((s) => [s, rate.optional()])) as Record<Stage, z.ZodOptional<typeof rate>>);

export const FaultsSchema = z.strictObject({
  /** Probability, per stage, that a site has dropped out when a task arrives. */
  dropout: StageRatesSchema.default({}),
  /** Probability, per stage, that a site answers after the deadline. */
  straggler: StageRatesSchema.default({}),
  /**
   * Rounds after which the coordinator is restarted: its study runner stops and a fresh one (fresh strategy
   * objects) resumes from the store and checkpoints, as after a crash.
   */
  restartCoordinatorAfter: z.array(z.number().int().min(1)).max(1000).default([]),
});
export type Faults = z.output<typeof FaultsSchema>;

export const AttackSchema = z.enum(['sign-flip', 'scale', 'noise']);
export type Attack = z.infer<typeof AttackSchema>;

export const MaliciousSchema = z.strictObject({
  /** Share of the sites that are malicious (rounded to the nearest whole site). */
  fraction: rate.default(0),
  /**
   * `sign-flip`: sends `global - scale * (local - global)` (default scale 1: the honest step reversed);
   * `scale`: sends `global + scale * (local - global)` (default scale 10: a boosted update);
   * `noise`: sends `global + N(0, sigma^2)` per weight (default sigma 1).
   */
  attack: AttackSchema.default('sign-flip'),
  scale: z.number().positive().max(1e6).optional(),
  sigma: z.number().positive().max(1e6).default(1),
});
export type Malicious = z.output<typeof MaliciousSchema>;

export interface AttackPlan {
  attack: Attack;
  scale: number;
  sigma: number;
}

export function attackPlan(m: Malicious): AttackPlan {
  return { attack: m.attack, scale: m.scale ?? (m.attack === 'scale' ? 10 : 1), sigma: m.sigma };
}

/** Which sites are malicious: `round(fraction * sites)` of them, chosen by a seeded shuffle. */
export function maliciousSites(names: readonly string[], fraction: number, seed: number): Set<string> {
  const count = Math.round(fraction * names.length);
  const order = permutation(names.length, randFor(seed, 'malicious'));
  return new Set(Array.from(order.subarray(0, count), (i) => names[i]!));
}

/** The update a malicious site sends instead of its honest `local` model. */
export function attackUpdate(plan: AttackPlan, global: readonly Tensor[], local: readonly Tensor[], seed: number, site: string, round: number): Tensor[] {
  const rand = randFor(seed, 'attack', site, round);
  return local.map((t, i) => {
    const g = global[i]!.data;
    const out = new Float32Array(t.data.length);
    for (let j = 0; j < out.length; j++) {
      const delta = t.data[j]! - g[j]!;
      out[j] = plan.attack === 'sign-flip' ? g[j]! - plan.scale * delta
        : plan.attack === 'scale' ? g[j]! + plan.scale * delta
          : g[j]! + plan.sigma * normal(rand);
    }
    return { shape: [...t.shape], data: out };
  });
}

/**
 * The same attacks under secure aggregation, where a site's update leaves only as quantized lanes (masked after
 * this): the site decodes its own lanes back to the clipped delta, attacks that, and re-encodes within the lane
 * bound (what a site can send without wrapping the sum). Lane layout: protocol/crypto/quantize.ts.
 */
export function attackLanes(plan: AttackPlan, lanes: Int32Array, info: { values: number; params: { clip: number; bits: number; maxWeight: number } }, seed: number, site: string, round: number): void {
  const rand = randFor(seed, 'attack', site, round);
  const { clip, bits, maxWeight } = info.params;
  const bound = 2 ** (bits - 1);
  const k = (bound / clip) * (lanes[info.values + 1]! / maxWeight);
  for (let j = 0; j < info.values; j++) {
    const delta = lanes[j]! / k;
    const sent = plan.attack === 'sign-flip' ? -plan.scale * delta : plan.attack === 'scale' ? plan.scale * delta : plan.sigma * normal(rand);
    lanes[j] = Math.round(Math.max(-clip, Math.min(clip, sent)) * k);
  }
}

export type FaultOutcome = 'ok' | 'dropout' | 'straggler';

/**
 * Decides each task's fate from (seed, site, stage, round, attempt): the n-th time the same site gets a task of the
 * same stage and round (a retried round) is a fresh draw, and nothing depends on the order tasks were sent in.
 */
export class FaultPlan {
  private readonly attempts = new Map<string, number>();

  constructor(private readonly faults: Faults, private readonly seed: number) {}

  decide(site: string, stage: Stage, round: number): FaultOutcome {
    const key = `${site}|${stage}|${round}`;
    const attempt = (this.attempts.get(key) ?? 0) + 1;
    this.attempts.set(key, attempt);
    const drop = this.faults.dropout[stage] ?? 0;
    const slow = this.faults.straggler[stage] ?? 0;
    if (drop > 0 && uniform(this.seed, 'dropout', key, attempt) < drop) return 'dropout';
    if (slow > 0 && uniform(this.seed, 'straggler', key, attempt) < slow) return 'straggler';
    return 'ok';
  }
}
