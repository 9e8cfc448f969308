/**
 * HKDF-SHA256 (RFC 5869) from node:crypto. Every key Cohort's secure aggregation uses is derived here from a
 * key-agreement secret or a random seed, with the session hash as salt and a purpose string as info, so one
 * secret never keys two different things.
 */
import { hkdfSync } from 'node:crypto';

/** Derives `length` bytes (default 32) from `ikm`; `info` names the purpose (domain separation). */
export function hkdf(ikm: Uint8Array, salt: Uint8Array, info: string | Uint8Array, length = 32): Uint8Array {
  if (!(ikm instanceof Uint8Array) || !(salt instanceof Uint8Array)) throw new TypeError('hkdf: ikm and salt must be bytes');
  const infoBytes = typeof info === 'string' ? Buffer.from(info, 'utf8') : info;
  return new Uint8Array(hkdfSync('sha256', ikm, salt, infoBytes, length));
}
