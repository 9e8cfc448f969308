/**
 * X25519 key agreement (RFC 7748) through node:crypto, about 20x faster than tweetnacl's scalarmult here. Keys
 * travel as their 32 raw bytes. A public key of the wrong length, one that OpenSSL refuses, or one of low order
 * (its shared secret is all zeros) is a coded error, never a silent weak key.
 */
import { createPrivateKey, createPublicKey, diffieHellman, generateKeyPairSync, type KeyObject } from 'node:crypto';
import { CohortError } from '../errors.ts';

/** DER prefixes that wrap 32 raw bytes as an X25519 SubjectPublicKeyInfo / PKCS#8 private key. */
const SPKI_PREFIX = Buffer.from('302a300506032b656e032100', 'hex');
const PKCS8_PREFIX = Buffer.from('302e020100300506032b656e04220420', 'hex');

export const KEY_BYTES = 32;

export interface AgreementKeyPair {
  publicKey: Uint8Array;
  privateKey: Uint8Array;
}

function badKey(why: string): CohortError {
  return new CohortError('COHORT_ERR_SECAGG_BAD_KEY', `key agreement: ${why}`);
}

// Importing a key into OpenSSL costs more than the agreement itself, and a site uses each of its keys with every
// neighbour: cache the imported private key per byte array (by identity, so no secret becomes a map key, and the
// entry goes when the array does). Callers never mutate key arrays. Public keys are cached by content (they are
// public), so a key that arrives again in another message is not imported again: where many parties share a
// process (simulations, the bench) each advertised key is imported once, not once per neighbour.
const imported = new WeakMap<Uint8Array, KeyObject>();
const publicKeys = new Map<string, KeyObject>();

function publicKeyObject(raw: Uint8Array): KeyObject {
  if (!(raw instanceof Uint8Array) || raw.length !== KEY_BYTES) throw badKey('public key must be 32 bytes');
  let k = imported.get(raw);
  if (k) return k;
  const hex = Buffer.from(raw.buffer, raw.byteOffset, raw.byteLength).toString('hex');
  k = publicKeys.get(hex);
  if (!k) {
    try {
      k = createPublicKey({ key: Buffer.concat([SPKI_PREFIX, raw]), format: 'der', type: 'spki' });
    } catch {
      throw badKey('public key refused');
    }
    if (publicKeys.size >= 50_000) publicKeys.clear();
    publicKeys.set(hex, k);
  }
  imported.set(raw, k);
  return k;
}

function privateKeyObject(raw: Uint8Array): KeyObject {
  if (!(raw instanceof Uint8Array) || raw.length !== KEY_BYTES) throw badKey('private key must be 32 bytes');
  let k = imported.get(raw);
  if (k) return k;
  try {
    k = createPrivateKey({ key: Buffer.concat([PKCS8_PREFIX, raw]), format: 'der', type: 'pkcs8' });
  } catch {
    throw badKey('private key refused');
  }
  imported.set(raw, k);
  return k;
}

export function generateAgreementKeyPair(): AgreementKeyPair {
  const { publicKey, privateKey } = generateKeyPairSync('x25519');
  const pub = publicKey.export({ format: 'der', type: 'spki' });
  const priv = privateKey.export({ format: 'der', type: 'pkcs8' });
  const pair = { publicKey: new Uint8Array(pub.subarray(pub.length - KEY_BYTES)), privateKey: new Uint8Array(priv.subarray(priv.length - KEY_BYTES)) };
  imported.set(pair.privateKey, privateKey);
  imported.set(pair.publicKey, publicKey);
  return pair;
}

/** The public key of a raw private key (the coordinator checks a reconstructed key against the advertised one). */
export function agreementPublicKey(privateKey: Uint8Array): Uint8Array {
  const pub = createPublicKey(privateKeyObject(privateKey)).export({ format: 'der', type: 'spki' });
  return new Uint8Array(pub.subarray(pub.length - KEY_BYTES));
}

/** X25519(privateKey, publicKey); throws COHORT_ERR_SECAGG_BAD_KEY for an invalid or low-order public key. */
export function agree(privateKey: Uint8Array, publicKey: Uint8Array): Uint8Array {
  let out: Buffer;
  try {
    out = diffieHellman({ privateKey: privateKeyObject(privateKey), publicKey: publicKeyObject(publicKey) });
  } catch (err) {
    if (err instanceof CohortError) throw err;
    throw badKey('agreement failed (low-order or invalid public key)');
  }
  let acc = 0;
  for (const b of out) acc |= b;
  if (acc === 0) throw badKey('shared secret is zero (low-order public key)');
  return new Uint8Array(out);
}
