/** A researcher's Ed25519 signing key: study manifests are signed with it, and sites approve by its fingerprint. */
import { chmodSync, existsSync, mkdirSync, readFileSync, statSync, writeFileSync } from 'node:fs';
import { dirname } from 'node:path';
import nacl from 'tweetnacl';
import { b64, fromB64, signManifest } from '../protocol/signing.ts';

export interface ResearcherKey {
  name: string;
  publicKey: string;
  secretKey: Uint8Array;
}

export function createResearcherKey(file: string, name: string): ResearcherKey {
  if (existsSync(file)) throw new Error(`${file} already exists; refusing to overwrite a key`);
  mkdirSync(dirname(file), { recursive: true, mode: 0o700 });
  const kp = nacl.sign.keyPair();
  writeFileSync(file, `${JSON.stringify({ kind: 'cohort-researcher-key', name, publicKey: b64(kp.publicKey), secretKey: b64(kp.secretKey) }, null, 2)}\n`, { mode: 0o600, flag: 'wx' });
  chmodSync(file, 0o600);
  return { name, publicKey: b64(kp.publicKey), secretKey: kp.secretKey };
}

export function loadResearcherKey(file: string): ResearcherKey {
  if (process.platform !== 'win32' && (statSync(file).mode & 0o077) !== 0) throw new Error(`${file} is readable by others; run: chmod 600 ${file}`);
  const j = JSON.parse(readFileSync(file, 'utf8')) as { name: string; secretKey: string };
  const kp = nacl.sign.keyPair.fromSecretKey(fromB64(j.secretKey));
  return { name: j.name, publicKey: b64(kp.publicKey), secretKey: kp.secretKey };
}

/** The body `POST /api/studies` takes for a signed manifest. */
export function signedStudyRequest(manifest: unknown, key: ResearcherKey): { manifest: unknown; signature: string; researcherPublicKey: string } {
  return { manifest, signature: signManifest(manifest, key.secretKey), researcherPublicKey: key.publicKey };
}
