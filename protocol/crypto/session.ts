/**
 * What every party of a secure-aggregation session must compute identically: the session hash that binds all
 * its parameters, the signed key advertisement, the mask seeds and commitments, and the threshold and degree a
 * manifest implies for n sites. Sites recompute all of it from what they approved and refuse what differs.
 */
import { createHash } from 'node:crypto';
import { CohortError } from '../errors.ts';
import type { SecAggSession, SecureAggregationSettings } from '../secagg-messages.ts';
import { canonicalJson, fromB64 } from '../signing.ts';
import { hkdf } from './hkdf.ts';
import { ed25519Sign, ed25519Verify } from './identity.ts';
import { MAX_DEGREE, sessionDegree, thresholdCount } from './graph.ts';
import { MAX_SHARES } from './shamir.ts';

export interface SessionContext {
  studyId: string;
  round: number;
  manifestHash: string;
  session: SecAggSession;
}

/**
 * SHA-256 over the canonical JSON of the study, round, manifest hash and every session parameter (roster and
 * identity keys included). Advertisements are signed over it, so a coordinator that shows different sites
 * different parameters (another threshold, roster or weight cap) makes their signatures fail for each other.
 */
export function sessionHash(ctx: SessionContext): Uint8Array {
  return new Uint8Array(createHash('sha256').update(canonicalJson({ v: 'cohort-secagg-session-v1', ...ctx })).digest());
}

/** The bytes a site signs with its identity key to advertise its two per-round X25519 public keys. */
export function advertiseMessage(hash: Uint8Array, siteId: string, cPk: Uint8Array, sPk: Uint8Array): Uint8Array {
  const head = new TextEncoder().encode(`cohort-secagg-advertise-v1\n${siteId}\n`);
  const out = new Uint8Array(head.length + hash.length + cPk.length + sPk.length);
  out.set(head);
  out.set(hash, head.length);
  out.set(cPk, head.length + hash.length);
  out.set(sPk, head.length + hash.length + cPk.length);
  return out;
}

export function signAdvertisement(identitySecretKey: Uint8Array, hash: Uint8Array, siteId: string, cPk: Uint8Array, sPk: Uint8Array): Uint8Array {
  return ed25519Sign(identitySecretKey, advertiseMessage(hash, siteId, cPk, sPk));
}

/** Fails closed: any malformed key or signature is simply "does not verify". */
export function verifyAdvertisement(identityKeyB64: string, hash: Uint8Array, siteId: string, cPk: Uint8Array, sPk: Uint8Array, signature: Uint8Array): boolean {
  try {
    const pub = fromB64(identityKeyB64);
    if (cPk.length !== 32 || sPk.length !== 32) return false;
    return ed25519Verify(pub, advertiseMessage(hash, siteId, cPk, sPk), signature);
  } catch {
    return false;
  }
}

/** The pairwise mask seed of two sites (same for both: the ids are ordered). */
export function pairSeed(shared: Uint8Array, hash: Uint8Array, a: string, b: string): Uint8Array {
  const [lo, hi] = a < b ? [a, b] : [b, a];
  return hkdf(shared, hash, `cohort-secagg-pair-mask-v1|${lo}|${hi}`);
}

/** The seed of a site's self mask, from its secret b. */
export function selfSeed(b: Uint8Array, hash: Uint8Array): Uint8Array {
  return hkdf(b, hash, 'cohort-secagg-self-mask-v1');
}

/** A binding commitment to the self-mask secret b (32 random bytes, so the hash reveals nothing). */
export function commitment(b: Uint8Array, hash: Uint8Array, siteId: string): Uint8Array {
  return new Uint8Array(createHash('sha256').update('cohort-secagg-commit-v1\n').update(hash).update(siteId).update('\n').update(b).digest());
}

/** The sign with which site i adds its pairwise mask with site j: + towards higher indices, - towards lower. */
export function maskSign(i: number, j: number): 1 | -1 {
  return i < j ? 1 : -1;
}

/** Threshold and degree that a manifest's settings imply for `n` sites. */
export function sessionShape(settings: Pick<SecureAggregationSettings, 'threshold' | 'neighbours'>, n: number): { threshold: number; degree: number } {
  if (n < 2) throw new CohortError('COHORT_ERR_SECAGG_BELOW_THRESHOLD', 'secure aggregation needs at least 2 sites');
  const degree = sessionDegree(settings.neighbours, n, settings.threshold);
  if (degree > MAX_DEGREE || degree + 1 > MAX_SHARES) {
    throw new CohortError('COHORT_ERR_SECAGG_CONFIG', `a neighbourhood of ${degree + 1} sites exceeds ${MAX_SHARES}; use neighbours 'auto' or a degree up to ${MAX_DEGREE}`);
  }
  return { threshold: thresholdCount(settings.threshold, degree + 1), degree };
}
