import { describe, expect, it } from 'vitest';
import nacl from 'tweetnacl';
import type { Tensor } from '../../protocol/codec.ts';
import { FaultPlan, FaultsSchema, attackLanes, attackPlan, attackUpdate, maliciousSites, MaliciousSchema } from '../../simulations/faults.ts';
import { encodeTrainingLanes, decodeTrainingLanes } from '../../protocol/crypto/quantize.ts';
import { keyedUniform } from '../../protocol/privacy/noise.ts';
import { seededEntropy, virtualIdentity } from '../../simulations/rng.ts';
import { ed25519Sign, ed25519Verify } from '../../protocol/crypto/identity.ts';
import { siteNames } from '../../simulations/partition.ts';

const t = (...v: number[]): Tensor[] => [{ shape: [v.length], data: Float32Array.from(v) }];

describe('injected faults', () => {
  it('should drop and delay tasks at about the configured rate per stage and nowhere else', () => {
    const plan = new FaultPlan(FaultsSchema.parse({ dropout: { train: 0.2 }, straggler: { evaluate: 0.3 } }), 7);
    const count = (stage: 'train' | 'evaluate' | 'describe', fate: string) => {
      let n = 0;
      for (const site of siteNames(50)) for (let round = 1; round <= 40; round++) if (plan.decide(site, stage, round) === fate) n++;
      return n / 2000;
    };
    expect(count('train', 'dropout')).toBeCloseTo(0.2, 1);
    expect(count('evaluate', 'straggler')).toBeCloseTo(0.3, 1);
    expect(count('describe', 'ok')).toBe(1);
  });

  it('should decide the same fates for the same seed whatever the order of the tasks, and others for a retry or another seed', () => {
    const faults = FaultsSchema.parse({ dropout: { train: 0.5 } });
    const a = new FaultPlan(faults, 3);
    const b = new FaultPlan(faults, 3);
    const sites = siteNames(20);
    const fa = sites.map((s) => a.decide(s, 'train', 1));
    const fb = [...sites].reverse().map((s) => b.decide(s, 'train', 1)).reverse();
    expect(fb).toEqual(fa);
    // the second attempt of the same round is another draw: over 20 sites at 50% some fates change
    const retry = sites.map((s) => a.decide(s, 'train', 1));
    expect(retry).not.toEqual(fa);
    const other = new FaultPlan(faults, 4);
    expect(sites.map((s) => other.decide(s, 'train', 1))).not.toEqual(fa);
  });

  it('should choose round(fraction * sites) malicious sites, reproducibly', () => {
    const names = siteNames(10);
    const bad = maliciousSites(names, 0.2, 1);
    expect(bad.size).toBe(2);
    expect(maliciousSites(names, 0.2, 1)).toEqual(bad);
    expect(maliciousSites(names, 0, 1).size).toBe(0);
  });

  it('should reverse, boost or replace the update as each attack says', () => {
    const global = t(1, 2);
    const local = t(1.5, 1); // honest step (+0.5, -1)
    const flip = attackUpdate(attackPlan(MaliciousSchema.parse({ attack: 'sign-flip', scale: 4 })), global, local, 1, 's', 1);
    expect(Array.from(flip[0]!.data)).toEqual([1 - 4 * 0.5, 2 + 4 * 1]);
    expect(Array.from(attackUpdate(attackPlan(MaliciousSchema.parse({ attack: 'sign-flip' })), global, local, 1, 's', 1)[0]!.data)).toEqual([0.5, 3]);
    const boost = attackUpdate(attackPlan(MaliciousSchema.parse({ attack: 'scale' })), global, local, 1, 's', 1);
    expect(Array.from(boost[0]!.data)).toEqual([6, -8]); // default scale 10
    const big = t(...new Array<number>(4000).fill(0));
    const noise = attackUpdate(attackPlan(MaliciousSchema.parse({ attack: 'noise', sigma: 2 })), big, big, 1, 's', 1)[0]!.data;
    const mean = noise.reduce((a, b) => a + b, 0) / noise.length;
    const sd = Math.sqrt(noise.reduce((a, b) => a + (b - mean) ** 2, 0) / noise.length);
    expect(Math.abs(mean)).toBeLessThan(0.15);
    expect(sd).toBeGreaterThan(1.85);
    expect(sd).toBeLessThan(2.15);
  });

  it('should attack the quantized lanes under secure aggregation as it attacks plain updates, within the clip', () => {
    const p = { clip: 8, bits: 22, maxWeight: 100 };
    const delta = [0.5, -1, 3, 0];
    const lanes = encodeTrainingLanes(delta, 0.3, 40, p, new Uint8Array(32).fill(1));
    const loss = lanes[4];
    const info = { values: 4, params: p };
    const flip = Int32Array.from(lanes);
    attackLanes(attackPlan(MaliciousSchema.parse({ fraction: 0.1, attack: 'sign-flip', scale: 2 })), flip, info, 1, 's', 1);
    // One site's decoded lanes are its delta: reversed and doubled, the 3 clipped at 8; loss and weight lanes untouched.
    const back = (l: Int32Array) => Array.from(decodeTrainingLanes(l, p).meanDelta);
    back(flip).forEach((v, i) => expect(v).toBeCloseTo([-1, 2, -6, 0][i]!, 4));
    expect([flip[4], flip[5]]).toEqual([loss, 40]);
    const boost = Int32Array.from(lanes);
    attackLanes(attackPlan(MaliciousSchema.parse({ fraction: 0.1, attack: 'scale' })), boost, info, 1, 's', 1);
    back(boost).forEach((v, i) => expect(v).toBeCloseTo([5, -8, 8, 0][i]!, 4));
    const noise = Int32Array.from(lanes);
    attackLanes(attackPlan(MaliciousSchema.parse({ fraction: 0.1, attack: 'noise', sigma: 0.5 })), noise, info, 1, 's', 1);
    const again = Int32Array.from(lanes);
    attackLanes(attackPlan(MaliciousSchema.parse({ fraction: 0.1, attack: 'noise', sigma: 0.5 })), again, info, 1, 's', 1);
    expect(again).toEqual(noise); // seeded by (seed, site, round)
    expect(back(noise)).not.toEqual(back(lanes));
  });
});

describe('seeded randomness for the production code in simulations', () => {
  it('should give each purpose its own 32-byte key, the same for the same seed and purpose only', () => {
    const e = seededEntropy(7);
    expect(e('a')).toHaveLength(32);
    expect(Buffer.from(e('a')).equals(Buffer.from(seededEntropy(7)('a')))).toBe(true);
    expect(Buffer.from(e('a')).equals(Buffer.from(e('b')))).toBe(false);
    expect(Buffer.from(e('a')).equals(Buffer.from(seededEntropy(8)('a')))).toBe(false);
  });

  it('should draw uniforms from a key reproducibly and evenly (ChaCha20 keystream)', () => {
    const draw = (key: Uint8Array, n: number) => { const u = keyedUniform(key); return Array.from({ length: n }, () => u()); };
    const k = seededEntropy(1)('u');
    const a = draw(k, 20_000);
    expect(draw(k, 20_000)).toEqual(a);
    expect(draw(seededEntropy(2)('u'), 5)).not.toEqual(a.slice(0, 5));
    expect(Math.min(...a)).toBeGreaterThanOrEqual(0);
    expect(Math.max(...a)).toBeLessThan(1);
    const mean = a.reduce((x, y) => x + y, 0) / a.length;
    expect(Math.abs(mean - 0.5)).toBeLessThan(0.01);
    const below = a.filter((v) => v < 0.1).length / a.length;
    expect(Math.abs(below - 0.1)).toBeLessThan(0.01);
  });

  it('should give each virtual site a stable Ed25519 identity that signs and verifies', () => {
    const id = virtualIdentity(3, 'site-01');
    expect(Buffer.from(virtualIdentity(3, 'site-01').secretKey).equals(Buffer.from(id.secretKey))).toBe(true);
    expect(Buffer.from(virtualIdentity(3, 'site-02').publicKey).equals(Buffer.from(id.publicKey))).toBe(false);
    const msg = new TextEncoder().encode('hello');
    expect(ed25519Verify(id.publicKey, msg, ed25519Sign(id.secretKey, msg))).toBe(true);
    // The same key pair tweetnacl derives from the seed (the agent's identity format).
    expect(Buffer.from(nacl.sign.keyPair.fromSeed(id.secretKey.slice(0, 32)).secretKey).equals(Buffer.from(id.secretKey))).toBe(true);
  });
});
