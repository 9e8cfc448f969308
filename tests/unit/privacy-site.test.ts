/**
 * The site's own privacy budget and the noise generators: refusal before any spend past the cap, persistence across
 * restarts, client-level clipping, and integer noise that sums correctly modulo 2^32.
 */
import { describe, expect, it } from 'vitest';
import { SiteDp, clipUpdate } from '../../site-agent/mods/dp.ts';
import { PolicySchema } from '../../site-agent/policy.ts';
import { StudyManifestSchema, type StudyManifestInput, type TrainTask } from '../../protocol/messages.ts';
import { CohortError } from '../../protocol/errors.ts';
import { addSkellamMod32, gaussianNoise, poisson, secureUniform, signedFromMod32, skellamNoise } from '../../protocol/privacy/noise.ts';
import { tempDir, wdbcManifest } from '../helpers/cluster.ts';
import { moments } from '../helpers/moments.ts';

const manifest = (dp?: object) => StudyManifestSchema.parse(wdbcManifest({ privacy: { secureAggregation: false, ...(dp ? { dp } : {}) } as StudyManifestInput['privacy'] }));
const task = (round: number, over: Partial<TrainTask> = {}) => ({ kind: 'train', taskId: `t${round}`, studyId: 'study-1', dataset: 'wdbc', round, participants: 3, ...over }) as TrainTask;

describe('site privacy budget', () => {
  it('should charge each round before training, refuse the round that would pass the cap, and remember across restarts', () => {
    const dir = tempDir();
    const policy = PolicySchema.parse({ maxEpsilonPerStudy: 6, delta: 1e-5 });
    const m = manifest({ mode: 'record', noiseMultiplier: 1.5, clip: 1 });
    const site = new SiteDp(dir, policy);
    const r1 = site.beforeTrain(task(1), m, 100)!;
    expect(r1.record!.sampleRate).toBeCloseTo(16 / 100, 12);
    expect(r1.report.recordEpsilon!).toBeGreaterThan(0);
    let rounds = 1;
    let refusal: CohortError | undefined;
    for (let r = 2; r < 50 && !refusal; r++) {
      try { site.beforeTrain(task(r), m, 100); rounds++; } catch (err) { refusal = err as CohortError; }
    }
    expect(refusal?.code).toBe('COHORT_ERR_POLICY_EPSILON_EXCEEDED');
    expect(refusal!.details).toMatchObject({ level: 'record', maxEpsilonPerStudy: 6 });
    const spent = site.spent('study-1', 'wdbc', m)!;
    expect(spent).toBeLessThanOrEqual(6);
    expect((refusal!.details as { epsilonAfterRound: number }).epsilonAfterRound).toBeGreaterThan(6);
    // A restarted agent reads the same spend from the site directory and refuses too; another study is separate.
    const again = new SiteDp(dir, policy);
    expect(again.spent('study-1', 'wdbc', m)).toBe(spent);
    expect(() => again.beforeTrain(task(rounds + 1), m, 100)).toThrow(/policy allows 6/);
    expect(again.beforeTrain(task(1, { studyId: 'study-2' }), m, 100)).toBeDefined();
    expect(again.budget.entries().filter((e) => e.studyId === 'study-1')).toHaveLength(rounds);
  });

  it('should refuse a study without differential privacy when the site caps epsilon', () => {
    const site = new SiteDp(undefined, PolicySchema.parse({ maxEpsilonPerStudy: 3 }));
    expect(() => site.checkManifest(manifest())).toThrow(CohortError);
    expect(() => new SiteDp(undefined, PolicySchema.parse({})).checkManifest(manifest())).not.toThrow();
    expect(() => site.checkManifest(manifest({ mode: 'client-distributed', noiseMultiplier: 1 }))).toThrow(/secure aggregation/);
  });

  it('should clip a site update to the clip and report whether it was within it', () => {
    const global = [{ shape: [3], data: Float32Array.of(1, 1, 1) }];
    const far = [{ shape: [3], data: Float32Array.of(4, 5, 1) }]; // delta (3, 4, 0), norm 5
    const { clipped, norm } = clipUpdate(global, far, 1);
    expect(norm).toBeCloseTo(5, 6);
    expect(Array.from(clipped[0]!.data)).toEqual([1.6, 1.8, 1].map((v) => Math.fround(v)));
    const site = new SiteDp(undefined, PolicySchema.parse({}));
    const m = manifest({ mode: 'client-central', noiseMultiplier: 1, clip: 1 });
    const round = site.beforeTrain(task(1), m, 100)!;
    expect(site.release(round, global, far).privacy.withinClip).toBe(false);
    expect(site.release(round, global, global).privacy.withinClip).toBe(true);
    expect(() => site.beforeTrain(task(2, { dp: { clip: 9 } }), m, 100)).toThrow(/clip differs/);
  });
});

describe('privacy noise', () => {

  it('should draw Gaussian, Poisson and Skellam noise with the right mean and variance', () => {
    const g = moments(gaussianNoise(200_000, 3));
    expect(Math.abs(g.mean)).toBeLessThan(0.03);
    expect(Math.abs(g.variance / 9 - 1)).toBeLessThan(0.02);
    for (const mu of [2.5, 40, 5000]) {
      const u = secureUniform();
      const p = moments(Array.from({ length: 40_000 }, () => poisson(mu, u)));
      expect(Math.abs(p.mean / mu - 1)).toBeLessThan(0.02);
      expect(Math.abs(p.variance / mu - 1)).toBeLessThan(0.05);
    }
    const sk = skellamNoise(100_000, 800);
    expect(sk.every((v) => Number.isInteger(v))).toBe(true);
    const s = moments(sk);
    expect(Math.abs(s.mean)).toBeLessThan(0.5);
    expect(Math.abs(s.variance / 800 - 1)).toBeLessThan(0.03);
  });

  it('should sum sites\' noised vectors correctly modulo 2^32, negative values included', () => {
    const sites = 5, dim = 1000;
    const truth = new Float64Array(dim);
    const total = new Uint32Array(dim);
    for (let k = 0; k < sites; k++) {
      const v = new Uint32Array(dim);
      for (let i = 0; i < dim; i++) {
        const x = (i % 7) - 3 + k * 1000; // some negative
        v[i] = x >>> 0;
        truth[i]! += x;
      }
      const before = signedFromMod32(v.slice());
      addSkellamMod32(v, 1e6 / sites);
      const after = signedFromMod32(v);
      for (let i = 0; i < dim; i++) truth[i]! += after[i]! - before[i]!; // the noise this site added
      for (let i = 0; i < dim; i++) total[i] = (total[i]! + v[i]!) >>> 0;
    }
    const sum = signedFromMod32(total);
    for (let i = 0; i < dim; i++) expect(sum[i]).toBe(truth[i]);
    // The summed noise has the total variance: sites split it.
    const noise = Array.from(sum, (v, i) => v - (5 * ((i % 7) - 3) + 10_000));
    expect(Math.abs(moments(noise).variance / 1e6 - 1)).toBeLessThan(0.15);
  });
});
