/**
 * Site-to-site boxes for Shamir shares. The coordinator relays them but cannot open them: the key comes from
 * X25519 between the two sites' per-round keys, through HKDF bound to the session and to the direction
 * (sender -> recipient), and the box is tweetnacl's secretbox (XSalsa20-Poly1305) with a random nonce.
 * `openBox` returns null when authentication fails, as tweetnacl does; callers turn that into a coded error.
 */
import nacl from 'tweetnacl';
import { hkdf } from './hkdf.ts';

const NONCE = nacl.secretbox.nonceLength;

/** The key for boxes from `from` to `to` in this session. */
export function boxKey(shared: Uint8Array, sessionHash: Uint8Array, from: string, to: string): Uint8Array {
  return hkdf(shared, sessionHash, `cohort-secagg-share-box-v1|${from}|${to}`);
}

/** nonce || secretbox(plaintext). */
export function sealBox(key: Uint8Array, plaintext: Uint8Array): Uint8Array {
  const nonce = nacl.randomBytes(NONCE);
  const ct = nacl.secretbox(plaintext, nonce, key);
  const out = new Uint8Array(NONCE + ct.length);
  out.set(nonce);
  out.set(ct, NONCE);
  return out;
}

export function openBox(key: Uint8Array, box: Uint8Array): Uint8Array | null {
  if (!(box instanceof Uint8Array) || box.length < NONCE + nacl.secretbox.overheadLength) return null;
  return nacl.secretbox.open(box.subarray(NONCE), box.subarray(0, NONCE), key);
}

/** What a share box holds: who made the shares, who holds them, and the two shares (wire form, x then y). */
export interface SharePayload {
  owner: number;
  holder: number;
  keyShare: Uint8Array;
  selfShare: Uint8Array;
}

const SHARE_BYTES = 33;

export function encodeSharePayload(p: SharePayload): Uint8Array {
  if (p.keyShare.length !== SHARE_BYTES || p.selfShare.length !== SHARE_BYTES) throw new RangeError('shares must be 33 bytes');
  const out = new Uint8Array(8 + 2 * SHARE_BYTES);
  const view = new DataView(out.buffer);
  view.setUint32(0, p.owner, true);
  view.setUint32(4, p.holder, true);
  out.set(p.keyShare, 8);
  out.set(p.selfShare, 8 + SHARE_BYTES);
  return out;
}

export function decodeSharePayload(bytes: Uint8Array): SharePayload | null {
  if (bytes.length !== 8 + 2 * SHARE_BYTES) return null;
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  return {
    owner: view.getUint32(0, true), holder: view.getUint32(4, true),
    keyShare: bytes.slice(8, 8 + SHARE_BYTES), selfShare: bytes.slice(8 + SHARE_BYTES),
  };
}
