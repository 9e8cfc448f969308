/**
 * Canonical JSON, hashes and Ed25519 signatures that both sides must compute identically: study manifests signed
 * by researchers, the coordinator's identity proof, ledger entries.
 */
import { createHash } from 'node:crypto';
import nacl from 'tweetnacl';

/** JSON with object keys sorted at every depth and no whitespace: one byte string per value. */
export function canonicalJson(value: unknown): string {
  if (value === null || typeof value !== 'object') return JSON.stringify(value) ?? 'null';
  // Plain loops: a secure-aggregation session (a roster of every site) is hashed by every site each round.
  if (Array.isArray(value)) {
    let out = '[';
    for (let i = 0; i < value.length; i++) out += (i ? ',' : '') + canonicalJson(value[i] === undefined ? null : value[i]);
    return `${out}]`;
  }
  const obj = value as Record<string, unknown>;
  // The default sort compares UTF-16 code units, as `<` on strings does.
  const keys = Object.keys(obj).sort();
  let out = '{';
  for (const k of keys) {
    const v = obj[k];
    if (v === undefined) continue;
    out += `${out.length > 1 ? ',' : ''}${JSON.stringify(k)}:${canonicalJson(v)}`;
  }
  return `${out}}`;
}

export function sha256Hex(data: string | Uint8Array): string {
  return createHash('sha256').update(data).digest('hex');
}

export const b64 = (bytes: Uint8Array): string => Buffer.from(bytes).toString('base64');
export const fromB64 = (s: string): Uint8Array => new Uint8Array(Buffer.from(s, 'base64'));

/** First 16 hex digits of the key's SHA-256: what a person compares when approving. */
export function keyFingerprint(publicKeyB64: string): string {
  return sha256Hex(fromB64(publicKeyB64)).slice(0, 16).replace(/(.{4})(?!$)/g, '$1:');
}

/** Hash of a study manifest as the researcher wrote it (canonical JSON); approvals bind to it. */
export function manifestHash(manifest: unknown): string {
  return sha256Hex(canonicalJson(manifest));
}

const MANIFEST_CONTEXT = 'cohort-manifest-v1\n';

export function signManifest(manifest: unknown, secretKey: Uint8Array): string {
  return b64(nacl.sign.detached(new TextEncoder().encode(MANIFEST_CONTEXT + manifestHash(manifest)), secretKey));
}

export function verifyManifest(manifest: unknown, signatureB64: string, publicKeyB64: string): boolean {
  try {
    const pub = fromB64(publicKeyB64);
    const sig = fromB64(signatureB64);
    if (pub.length !== nacl.sign.publicKeyLength || sig.length !== nacl.sign.signatureLength) return false;
    return nacl.sign.detached.verify(new TextEncoder().encode(MANIFEST_CONTEXT + manifestHash(manifest)), sig, pub);
  } catch {
    return false;
  }
}

/** What the coordinator signs to prove its identity to a site that pinned its key at enrollment. */
export function coordinatorProofMessage(coordinatorId: string, siteName: string, clientNonce: string, serverNonce: string): Uint8Array {
  return new TextEncoder().encode(`cohort-coordinator-v1\n${coordinatorId}\n${siteName}\n${clientNonce}\n${serverNonce}`);
}

/** What a site signs when it enrolls with a one-time token: binds token, name and key. */
export function enrollmentMessage(token: string, siteName: string, publicKeyB64: string): Uint8Array {
  return new TextEncoder().encode(`cohort-enroll-v1\n${sha256Hex(token)}\n${siteName}\n${publicKeyB64}`);
}
