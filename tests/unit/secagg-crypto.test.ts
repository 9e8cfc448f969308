/**
 * The mathematics both sides of secure aggregation must agree on: HKDF, the ChaCha20 masking generator, X25519,
 * Shamir sharing over GF(2^8) (threshold property both ways), sealed share boxes, quantization and the graph.
 */
import { describe, expect, it } from 'vitest';
import nacl from 'tweetnacl';
import { hkdf } from '../../protocol/crypto/hkdf.ts';
import { addLanes, addMask, prgLanes } from '../../protocol/crypto/prg.ts';
import { agree, agreementPublicKey, generateAgreementKeyPair } from '../../protocol/crypto/agreement.ts';
import { combine, decodeShare, encodeShare, gfDiv, gfMul, split } from '../../protocol/crypto/shamir.ts';
import { boxKey, openBox, sealBox } from '../../protocol/crypto/seal.ts';
import {
  checkHeadroom, decodeTrainingLanes, encodeTrainingLanes, laneBound, maxSites, stochasticRound,
} from '../../protocol/crypto/quantize.ts';
import { autoDegree, isConnected, neighbourGraph, neighbourhood, sessionDegree, thresholdCount } from '../../protocol/crypto/graph.ts';
import { sessionHash, signAdvertisement, verifyAdvertisement } from '../../protocol/crypto/session.ts';
import type { SecAggSession } from '../../protocol/secagg-messages.ts';

const hex = (s: string) => new Uint8Array(Buffer.from(s, 'hex'));
const toHex = (b: Uint8Array) => Buffer.from(b).toString('hex');

describe('HKDF-SHA256', () => {
  it('should match RFC 5869 test case 1', () => {
    const okm = hkdf(hex('0b'.repeat(22)), hex('000102030405060708090a0b0c'), hex('f0f1f2f3f4f5f6f7f8f9'), 42);
    expect(toHex(okm)).toBe('3cb25f25faacd57a90434f64d0362f2a2d2d0a90cf1a5a4c5db02d56ecc4c5bf34007208d5b887185865');
  });
});

describe('masking generator (ChaCha20)', () => {
  it('should produce the RFC 8439 keystream for the all-zero key', () => {
    const lanes = prgLanes(new Uint8Array(32), 16);
    expect(toHex(new Uint8Array(lanes.buffer))).toBe('76b8e0ada0f13d90405d6ae55386bd28bdd219b8a08ded1aa836efcc8b770dc7da41597c5157488d7724e03fb8d84a376a43b8f41518a11cc387b669b2ee6586');
  });

  it('should use all 256 bits of the seed when the last byte changes', () => {
    const a = new Uint8Array(32).fill(7);
    const b = a.slice();
    b[31] = 8;
    expect(toHex(new Uint8Array(prgLanes(a, 8).buffer))).not.toBe(toHex(new Uint8Array(prgLanes(b, 8).buffer)));
  });

  it('should cancel exactly when a mask is added and subtracted modulo 2^32 over many chunks', () => {
    const seed = nacl.randomBytes(32);
    const x = Int32Array.from({ length: 40_000 }, (_, i) => (i * 2654435761) | 0);
    const y = x.slice();
    addMask(y, seed, 1);
    expect(y.some((v, i) => v !== x[i])).toBe(true);
    addMask(y, seed, -1);
    expect(y).toEqual(x);
    const z = x.slice();
    addLanes(z, prgLanes(seed, x.length));
    const w = x.slice();
    addMask(w, seed, 1);
    expect(z).toEqual(w);
  });
});

describe('X25519 key agreement', () => {
  it('should match the RFC 7748 section 6.1 example', () => {
    const alice = hex('77076d0a7318a57d3c16c17251b26645df4c2f87ebc0992ab177fba51db92c2a');
    const bob = hex('5dab087e624a8a4b79e17f8b83800ee66f3bb1292618b6fd1c2f8b27ff88e0eb');
    expect(toHex(agreementPublicKey(alice))).toBe('8520f0098930a754748b7ddcb43ef75a0dbf3a0d26381af4eba4a98eaa9b4e6a');
    expect(toHex(agree(alice, agreementPublicKey(bob)))).toBe('4a5d9d5ba4ce2de1728e3bf480350f25e07e21c947d19e3376f09b3c1e161742');
  });

  it('should give both sides the same secret and refuse low-order or malformed keys with COHORT_ERR_SECAGG_BAD_KEY', () => {
    const a = generateAgreementKeyPair();
    const b = generateAgreementKeyPair();
    expect(toHex(agree(a.privateKey, b.publicKey))).toBe(toHex(agree(b.privateKey, a.publicKey)));
    const one = new Uint8Array(32);
    one[0] = 1;
    for (const bad of [new Uint8Array(32), one, new Uint8Array(31)]) {
      expect(() => agree(a.privateKey, bad)).toThrow(expect.objectContaining({ code: 'COHORT_ERR_SECAGG_BAD_KEY' }));
    }
  });
});

describe('Shamir sharing over GF(2^8)', () => {
  it('should have a field where every non-zero element has an inverse', () => {
    for (let a = 1; a < 256; a++) expect(gfMul(a, gfDiv(1, a))).toBe(1);
  });

  it('should rebuild a 32-byte secret from any t of n shares', () => {
    const secret = nacl.randomBytes(32);
    const xs = [1, 2, 3, 4, 5, 6, 7];
    const shares = split(secret, 4, xs);
    for (let trial = 0; trial < 20; trial++) {
      const pick = [...shares].sort(() => Math.random() - 0.5).slice(0, 4);
      expect(toHex(combine(pick.map((s) => decodeShare(encodeShare(s))), 4))).toBe(toHex(secret));
    }
  });

  it('should reveal nothing from t - 1 shares when enumerating every polynomial', () => {
    // t = 3, one byte: for a fixed secret, the 65,536 choices of the two random coefficients must give every pair of
    // share values (at x = 1, 2) exactly once. So two shares are uniform whatever the secret.
    for (const secret of [0, 1, 200]) {
      const seen = new Uint8Array(65_536);
      for (let c = 0; c < 65_536; c++) {
        const coeffs = new Uint8Array([c & 0xff, c >> 8]);
        const [s1, s2] = split(new Uint8Array([secret]), 3, [1, 2, 3], () => coeffs);
        seen[(s1!.y[0]! << 8) | s2!.y[0]!]!++;
      }
      expect(seen.every((v) => v === 1)).toBe(true);
    }
  });

  it('should refuse fewer than t shares and rebuild a different secret from a forged share', () => {
    const secret = nacl.randomBytes(32);
    const shares = split(secret, 3, [1, 2, 3, 4]);
    expect(() => combine(shares.slice(0, 2), 3)).toThrow();
    const forged = { x: shares[0]!.x, y: nacl.randomBytes(32) };
    expect(toHex(combine([forged, shares[1]!, shares[2]!], 3))).not.toBe(toHex(secret));
  });
});

describe('share boxes', () => {
  it('should open only with the key for that direction and refuse tampering', () => {
    const a = generateAgreementKeyPair();
    const b = generateAgreementKeyPair();
    const h = nacl.randomBytes(32);
    const box = sealBox(boxKey(agree(a.privateKey, b.publicKey), h, 'A', 'B'), new Uint8Array([1, 2, 3]));
    expect([...openBox(boxKey(agree(b.privateKey, a.publicKey), h, 'A', 'B'), box)!]).toEqual([1, 2, 3]);
    expect(openBox(boxKey(agree(b.privateKey, a.publicKey), h, 'B', 'A'), box)).toBeNull();
    const bad = box.slice();
    bad[bad.length - 1]! ^= 1;
    expect(openBox(boxKey(agree(b.privateKey, a.publicKey), h, 'A', 'B'), bad)).toBeNull();
  });
});

describe('signed key advertisements', () => {
  const id = nacl.sign.keyPair();
  const idB64 = Buffer.from(id.publicKey).toString('base64');
  const session: SecAggSession = {
    sessionId: 'ab'.repeat(16), roster: [{ siteId: 'a', identityKey: idB64 }, { siteId: 'b', identityKey: 'AAAA' }], threshold: 2, degree: 1,
    graphSeed: 'cd'.repeat(32), vectorLength: 10, clip: 8, quantizationBits: 22, maxWeight: 100,
  };
  it('should verify only for the same session parameters, site and keys', () => {
    const h = sessionHash({ studyId: 's', round: 1, manifestHash: 'f'.repeat(64), session });
    const c = nacl.randomBytes(32);
    const s = nacl.randomBytes(32);
    const sig = signAdvertisement(id.secretKey, h, 'a', c, s);
    expect(verifyAdvertisement(idB64, h, 'a', c, s, sig)).toBe(true);
    const other = sessionHash({ studyId: 's', round: 1, manifestHash: 'f'.repeat(64), session: { ...session, maxWeight: 1 } });
    expect(verifyAdvertisement(idB64, other, 'a', c, s, sig)).toBe(false);
    expect(verifyAdvertisement(idB64, h, 'b', c, s, sig)).toBe(false);
    expect(verifyAdvertisement(idB64, h, 'a', s, c, sig)).toBe(false);
    expect(verifyAdvertisement(Buffer.from(nacl.sign.keyPair().publicKey).toString('base64'), h, 'a', c, s, sig)).toBe(false);
    expect(verifyAdvertisement('not-a-key', h, 'a', c, s, sig)).toBe(false);
  });
});

describe('quantization', () => {
  it('should round stochastically without bias', () => {
    let sum = 0;
    const n = 200_000;
    for (let i = 0; i < n; i++) sum += stochasticRound(0.3, Math.floor(Math.random() * 2 ** 32));
    expect(sum / n).toBeCloseTo(0.3, 2);
    expect(stochasticRound(-1.5, 0)).toBe(-1);
    expect(stochasticRound(2, 2 ** 32 - 1)).toBe(2);
  });

  it('should encode one site and decode it back within one quantization step, clipping beyond the bound', () => {
    const p = { clip: 8, bits: 22, maxWeight: 500 };
    const delta = Float32Array.from({ length: 1000 }, (_, i) => Math.sin(i) * 9);
    const lanes = encodeTrainingLanes(delta, 0.42, 500, p);
    expect(lanes.every((v, i) => i >= 1001 || Math.abs(v) <= laneBound(22))).toBe(true);
    const d = decodeTrainingLanes(lanes, p);
    const step = 8 / laneBound(22);
    for (let i = 0; i < delta.length; i++) expect(Math.abs(d.meanDelta[i]! - Math.max(-8, Math.min(8, delta[i]!)))).toBeLessThanOrEqual(step * 1.0001);
    expect(d.totalWeight).toBe(500);
    expect(d.meanLoss).toBeCloseTo(0.42, 4);
  });

  it('should refuse a configuration that could wrap a lane with COHORT_ERR_SECAGG_OVERFLOW', () => {
    expect(maxSites({ bits: 22, maxWeight: 1000 })).toBe(1023);
    expect(() => checkHeadroom(1023, { bits: 22, maxWeight: 1000 })).not.toThrow();
    expect(() => checkHeadroom(1024, { bits: 22, maxWeight: 1000 })).toThrow(expect.objectContaining({ code: 'COHORT_ERR_SECAGG_OVERFLOW' }));
    expect(() => checkHeadroom(10, { bits: 22, maxWeight: 2 ** 30 })).toThrow(expect.objectContaining({ code: 'COHORT_ERR_SECAGG_OVERFLOW' }));
  });
});

describe('neighbour graph', () => {
  it('should give every party the same k-regular, symmetric graph from the same public seed', () => {
    const seed = nacl.randomBytes(32);
    const g = neighbourGraph(100, 30, seed);
    expect(neighbourGraph(100, 30, Uint8Array.from(seed))).toEqual(g);
    expect(neighbourGraph(100, 30, nacl.randomBytes(32))).not.toEqual(g);
    g.forEach((nb, i) => {
      expect(nb).toHaveLength(30);
      expect(nb.includes(i)).toBe(false);
      for (const j of nb) expect(g[j]).toContain(i);
    });
    expect(isConnected(g, g.keys())).toBe(true);
    expect(neighbourhood(g, 5)).toContain(5);
  });

  it('should use the complete graph for small studies and a sparse one when sites are many', () => {
    expect(sessionDegree('auto', 5, 0.6)).toBe(4);
    expect(sessionDegree('auto', 20, 0.6)).toBe(19);
    const k = autoDegree(100, 0.6);
    expect(k).toBeLessThan(99);
    expect(k % 2).toBe(0);
    expect(sessionDegree('complete', 100, 0.6)).toBe(99);
    expect(sessionDegree(7, 100, 0.6)).toBe(8);
    expect(neighbourGraph(4, 3, seedOf(1))).toEqual([[1, 2, 3], [0, 2, 3], [0, 1, 3], [0, 1, 2]]);
  });

  it('should always need more than half of a neighbourhood, and at least 2', () => {
    for (let m = 2; m < 100; m++) {
      for (const f of [0.51, 0.6, 0.75, 1]) {
        const t = thresholdCount(f, m);
        expect(t).toBeGreaterThan(m / 2);
        expect(t).toBeGreaterThanOrEqual(2);
        expect(t).toBeLessThanOrEqual(m);
      }
    }
  });

  it('should see a graph split in two as disconnected', () => {
    const g = [[1], [0], [3], [2]];
    expect(isConnected(g, [0, 1])).toBe(true);
    expect(isConnected(g, [0, 1, 2])).toBe(false);
  });
});

function seedOf(v: number): Uint8Array {
  return new Uint8Array(32).fill(v);
}
