/**
 * The coordinator's own Ed25519 identity. Sites pin its public key when they enroll and check, at every
 * handshake, that the coordinator can sign their fresh nonce with it.
 */
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import nacl from 'tweetnacl';
import { b64, fromB64 } from '../protocol/signing.ts';

export interface CoordinatorIdentity {
  publicKey: Uint8Array;
  secretKey: Uint8Array;
  publicKeyB64: string;
}

export function loadOrCreateCoordinatorIdentity(dataDir: string | null): CoordinatorIdentity {
  if (dataDir) {
    const file = join(dataDir, 'identity.json');
    if (existsSync(file)) {
      const parsed = JSON.parse(readFileSync(file, 'utf8')) as { secretKey: string };
      const kp = nacl.sign.keyPair.fromSecretKey(fromB64(parsed.secretKey));
      return { ...kp, publicKeyB64: b64(kp.publicKey) };
    }
    const kp = nacl.sign.keyPair();
    writeFileSync(file, JSON.stringify({ kind: 'cohort-coordinator-identity', publicKey: b64(kp.publicKey), secretKey: b64(kp.secretKey) }, null, 2), { mode: 0o600, flag: 'wx' });
    return { ...kp, publicKeyB64: b64(kp.publicKey) };
  }
  const kp = nacl.sign.keyPair();
  return { ...kp, publicKeyB64: b64(kp.publicKey) };
}
