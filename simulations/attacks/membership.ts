/**
 * Membership inference by loss threshold (Yeom, Giacomelli, Fredrikson & Jha, "Privacy Risk in Machine Learning:
 * Analyzing the Connection to Overfitting", IEEE CSF 2018). An attacker holding the final global model guesses that
 * a record was in some site's training data when the model's loss on it is low. We report:
 *
 * - the attack AUC: the probability that a random member has a lower loss than a random non-member (ties half),
 *   i.e. the attack's ROC AUC over every threshold. 0.5: the model leaks nothing this attack can see; 1: it gives
 *   every member away.
 * - Yeom's threshold attack at the mean training loss (a threshold the paper's adversary knows): its true and false
 *   positive rates and the membership advantage TPR - FPR.
 *
 * Members are the sites' training rows; non-members their hold-out rows, which no site trained on.
 */
import * as tf from '@tensorflow/tfjs';
import type { Tensor } from '../../protocol/codec.ts';
import type { ResolvedModel } from '../../protocol/messages.ts';
import { buildModel, outputUnits, setWeights } from '../../protocol/models.ts';
import type { LoadedSplit } from '../../site-agent/data/data-source.ts';

const EPS = 1e-7;

/** A model with the given weights, to score many splits; dispose it after. */
export function modelWith(resolved: ResolvedModel, weights: readonly Tensor[]): tf.LayersModel {
  const model = buildModel(resolved);
  setWeights(model, weights);
  return model;
}

/** Cross-entropy of each example under `model` (clipped as the site's evaluation clips it). */
export function exampleLosses(model: tf.LayersModel, numClasses: number, data: LoadedSplit): Float64Array {
  const out = new Float64Array(data.n);
  if (data.n === 0) return out;
  const scores = tf.tidy(() => (model.predict(tf.tensor(data.x, [data.n, ...data.inputShape])) as tf.Tensor).dataSync() as Float32Array);
  const k = outputUnits(numClasses);
  for (let i = 0; i < data.n; i++) {
    if (k === 1) {
      const s = Math.min(1 - EPS, Math.max(EPS, scores[i]!));
      out[i] = data.y[i] === 1 ? -Math.log(s) : -Math.log(1 - s);
    } else {
      out[i] = -Math.log(Math.max(EPS, scores[i * k + data.y[i]!]!));
    }
  }
  return out;
}

/**
 * AUC of the attack score `-loss` for members against non-members (Mann-Whitney, ties counted half). Undefined when
 * either group is empty.
 */
export function attackAuc(memberLosses: ArrayLike<number>, nonMemberLosses: ArrayLike<number>): number | undefined {
  const m = memberLosses.length;
  const k = nonMemberLosses.length;
  if (m === 0 || k === 0) return undefined;
  const all = [
    ...Array.from(memberLosses, (v) => ({ v, member: true })),
    ...Array.from(nonMemberLosses, (v) => ({ v, member: false })),
  ].sort((a, b) => a.v - b.v);
  // Count pairs (member, non-member) with the member's loss lower, ties half, walking groups of equal loss.
  let nonMembersAbove = k;
  let wins = 0;
  for (let i = 0; i < all.length;) {
    let j = i;
    let mem = 0;
    let non = 0;
    while (j < all.length && all[j]!.v === all[i]!.v) {
      if (all[j]!.member) mem++;
      else non++;
      j++;
    }
    nonMembersAbove -= non;
    wins += mem * nonMembersAbove + 0.5 * mem * non;
    i = j;
  }
  return wins / (m * k);
}

export interface ThresholdAttack {
  threshold: number;
  truePositiveRate: number;
  falsePositiveRate: number;
  /** Yeom et al.'s membership advantage, TPR - FPR. */
  advantage: number;
}

/** Yeom et al.'s attack: "member" when the loss is at most `threshold` (default: the mean member loss). */
export function thresholdAttack(memberLosses: ArrayLike<number>, nonMemberLosses: ArrayLike<number>, threshold?: number): ThresholdAttack | undefined {
  if (memberLosses.length === 0 || nonMemberLosses.length === 0) return undefined;
  const t = threshold ?? Array.from(memberLosses).reduce((a, b) => a + b, 0) / memberLosses.length;
  const tpr = Array.from(memberLosses).filter((l) => l <= t).length / memberLosses.length;
  const fpr = Array.from(nonMemberLosses).filter((l) => l <= t).length / nonMemberLosses.length;
  return { threshold: t, truePositiveRate: tpr, falsePositiveRate: fpr, advantage: tpr - fpr };
}

export interface MembershipResult {
  auc: number | undefined;
  threshold: ThresholdAttack | undefined;
  members: number;
  nonMembers: number;
}

/**
 * Pools per-site losses into one attack. A table row counts once: as a member if any site trained on it (its first
 * training occurrence in site order), otherwise as a non-member.
 */
export function membershipAudit(perSite: readonly { memberIds: ArrayLike<number>; memberLosses: ArrayLike<number>; nonMemberIds: ArrayLike<number>; nonMemberLosses: ArrayLike<number> }[]): MembershipResult {
  const member = new Map<number, number>();
  const nonMember = new Map<number, number>();
  for (const s of perSite) {
    for (let i = 0; i < s.memberIds.length; i++) if (!member.has(s.memberIds[i]!)) member.set(s.memberIds[i]!, s.memberLosses[i]!);
  }
  for (const s of perSite) {
    for (let i = 0; i < s.nonMemberIds.length; i++) {
      const id = s.nonMemberIds[i]!;
      if (!member.has(id) && !nonMember.has(id)) nonMember.set(id, s.nonMemberLosses[i]!);
    }
  }
  const m = [...member.values()];
  const n = [...nonMember.values()];
  return { auc: attackAuc(m, n), threshold: thresholdAttack(m, n), members: m.length, nonMembers: n.length };
}
