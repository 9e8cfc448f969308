import { describe, expect, it } from 'vitest';
import type { Tensor } from '../../protocol/codec.ts';
import { FaultPlan, FaultsSchema, attackPlan, attackUpdate, maliciousSites, MaliciousSchema } from '../../simulations/faults.ts';
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
});
