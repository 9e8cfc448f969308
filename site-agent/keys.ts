/**
 * The site's identity: an Ed25519 signing key pair (tweetnacl) in a file only its owner can read (mode 0600).
 * The agent refuses to use a key file that others can read: a copied key is a stolen site.
 */
import { chmodSync, existsSync, mkdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { dirname } from 'node:path';
import nacl from 'tweetnacl';
import { CohortError } from '../protocol/errors.ts';

export interface Identity {
  publicKey: Uint8Array;
  secretKey: Uint8Array;
}

export function publicKeyB64(id: Identity): string {
  return Buffer.from(id.publicKey).toString('base64');
}

export function createIdentity(file: string): Identity {
  if (existsSync(file)) throw new CohortError('COHORT_ERR_SITE_CONFIG_INVALID', `key file ${file} already exists; refusing to overwrite a site identity`);
  mkdirSync(dirname(file), { recursive: true, mode: 0o700 });
  const kp = nacl.sign.keyPair();
  const body = JSON.stringify({
    kind: 'cohort-site-identity', version: 1, algorithm: 'ed25519',
    publicKey: Buffer.from(kp.publicKey).toString('base64'), secretKey: Buffer.from(kp.secretKey).toString('base64'),
  }, null, 2);
  writeFileSync(file, `${body}\n`, { mode: 0o600, flag: 'wx' });
  chmodSync(file, 0o600); // umask cannot widen it, but be explicit
  return { publicKey: kp.publicKey, secretKey: kp.secretKey };
}

export function loadIdentity(file: string): Identity {
  if (!existsSync(file)) throw new CohortError('COHORT_ERR_SITE_CONFIG_INVALID', `key file ${file} not found; run 'cohort site init' first`);
  if (process.platform !== 'win32' && (statSync(file).mode & 0o077) !== 0) {
    throw new CohortError('COHORT_ERR_SITE_CONFIG_INVALID', `key file ${file} is readable by others; run: chmod 600 ${file}`);
  }
  let parsed: { publicKey?: string; secretKey?: string };
  try {
    parsed = JSON.parse(readFileSync(file, 'utf8')) as typeof parsed;
  } catch {
    throw new CohortError('COHORT_ERR_SITE_CONFIG_INVALID', `key file ${file} is not valid JSON`);
  }
  const secretKey = new Uint8Array(Buffer.from(parsed.secretKey ?? '', 'base64'));
  if (secretKey.length !== nacl.sign.secretKeyLength) throw new CohortError('COHORT_ERR_SITE_CONFIG_INVALID', `key file ${file} holds no valid Ed25519 secret key`);
  const kp = nacl.sign.keyPair.fromSecretKey(secretKey);
  if (parsed.publicKey && parsed.publicKey !== Buffer.from(kp.publicKey).toString('base64')) {
    throw new CohortError('COHORT_ERR_SITE_CONFIG_INVALID', `key file ${file}: public key does not match the secret key`);
  }
  return { publicKey: kp.publicKey, secretKey: kp.secretKey };
}
