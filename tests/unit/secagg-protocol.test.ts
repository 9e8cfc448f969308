/**
 * The real site-side and coordinator-side stage code of secure aggregation against each other, in one process:
 * dropouts at every stage, sparse SecAgg+ graphs, tampering in transit, and every refusal a site must make.
 */
import { describe, expect, it } from 'vitest';
import nacl from 'tweetnacl';
import type { SecAggStage } from '../../coordinator/secure-aggregation/secure-sum.ts';
import type { SecAggAdvertiseTask, SecAggShareTask, SecAggUnmaskTask } from '../../protocol/messages.ts';
import { SecureAggregationSettingsSchema } from '../../protocol/secagg-messages.ts';
import { sessionShape } from '../../protocol/crypto/session.ts';
import { neighbourGraph } from '../../protocol/crypto/graph.ts';
import { makeSimSites, manifestFor, maxAbsDiff, plaintextMean, secureRound } from '../helpers/secagg-harness.ts';
import { SecAggClient } from '../../site-agent/mods/secagg.ts';
import type { Entropy } from '../../protocol/crypto/entropy.ts';
import { seededEntropy } from '../../simulations/rng.ts';

const STAGES: SecAggStage[] = ['secagg-advertise', 'secagg-share', 'masked-input', 'secagg-unmask'];
const TOLERANCE = 3e-5;

describe('secure aggregation, in process', () => {
  it('should unmask the exact weighted mean when no site drops (5 sites, clip 8, 2^22 levels)', async () => {
    const sites = makeSimSites(5, 2000, { seed: 11 });
    const { result, decoded } = await secureRound(sites);
    expect(result.survivors).toHaveLength(5);
    expect(result.dropped).toEqual([]);
    expect(result.session).toMatchObject({ sites: 5, threshold: 3, degree: 4 });
    const plain = plaintextMean(sites, result.survivors);
    expect(maxAbsDiff(decoded.meanDelta, plain.mean)).toBeLessThanOrEqual(TOLERANCE);
    expect(decoded.totalWeight).toBe(plain.weight);
    expect(decoded.meanLoss).toBeCloseTo(plain.loss, 4);
  });

  for (const stage of STAGES) {
    for (const drops of [1, 2]) {
      it(`should recover the weighted mean within 3e-5 when ${drops} of 5 sites drop at ${stage}`, async () => {
        const sites = makeSimSites(5, 2000, { seed: 100 + drops });
        const dropAt = new Map<number, SecAggStage>(Array.from({ length: drops }, (_, k) => [k * 2, stage]));
        const { result, decoded } = await secureRound(sites, { dropAt });
        // A site lost at unmasking had already sent its masked input: it is in the sum, its self mask rebuilt.
        const expected = stage === 'secagg-unmask' ? 5 : 5 - drops;
        expect(result.survivors).toHaveLength(expected);
        expect(result.dropped.filter((d) => d.stage === stage)).toHaveLength(drops);
        const plain = plaintextMean(sites, result.survivors);
        expect(maxAbsDiff(decoded.meanDelta, plain.mean)).toBeLessThanOrEqual(TOLERANCE);
        expect(decoded.totalWeight).toBe(plain.weight);
      });
    }
  }

  it('should round from the CSPRNG by default, and reproducibly only when handed seeded entropy (simulations)', async () => {
    const sites = makeSimSites(4, 2000, { seed: 21 });
    const fresh = (entropy?: Entropy) => sites.map((s) => ({ ...s, client: new SecAggClient(entropy ? { entropy } : {}) }));
    const seeded = seededEntropy(5);
    const [a, b] = [await secureRound(fresh(seeded), { entropy: seeded }), await secureRound(fresh(seeded), { entropy: seeded })];
    expect(a.result.session.sessionId).toBe(b.result.session.sessionId);
    expect(Array.from(a.result.sum)).toEqual(Array.from(b.result.sum));
    // Production: fresh rounding draws every time (the masks are fresh either way; they cancel).
    const [c, d] = [await secureRound(fresh()), await secureRound(fresh())];
    expect(c.result.session.sessionId).not.toBe(d.result.session.sessionId);
    expect(Array.from(c.result.sum)).not.toEqual(Array.from(d.result.sum));
    for (const r of [a, c]) expect(maxAbsDiff(r.decoded.meanDelta, plaintextMean(sites, r.result.survivors).mean)).toBeLessThanOrEqual(TOLERANCE);
  });

  it('should recover when one site drops at each of the four stages in turn', async () => {
    const sites = makeSimSites(9, 1000, { seed: 7 });
    const dropAt = new Map<number, SecAggStage>([[1, 'secagg-advertise'], [3, 'secagg-share'], [5, 'masked-input'], [7, 'secagg-unmask']]);
    const { result, decoded } = await secureRound(sites, { dropAt, settings: { threshold: 0.51 } });
    expect(result.survivors).toHaveLength(6);
    expect(maxAbsDiff(decoded.meanDelta, plaintextMean(sites, result.survivors).mean)).toBeLessThanOrEqual(TOLERANCE);
  });

  it('should mask against neighbours only on a sparse SecAgg+ graph and still recover 2 drops per stage', async () => {
    const sites = makeSimSites(40, 300, { seed: 5 });
    for (const stage of STAGES) {
      const dropAt = new Map<number, SecAggStage>([[3, stage], [21, stage]]);
      const { result, decoded, run } = await secureRound(sites.map((s) => ({ ...s, client: new (s.client.constructor as typeof import('../../site-agent/mods/secagg.ts').SecAggClient)() })), { dropAt, settings: { neighbours: 8 } });
      expect(result.session.degree).toBe(8);
      expect(maxAbsDiff(decoded.meanDelta, plaintextMean(sites, result.survivors).mean)).toBeLessThanOrEqual(TOLERANCE);
      // Each site was shown its 8 neighbours, not the whole roster.
      const shareTask = run.sent.find((s) => s.task.kind === 'secagg-share')!.task as SecAggShareTask;
      expect(shareTask.peers.length).toBeLessThanOrEqual(8);
    }
  });

  it('should abort below the threshold with COHORT_ERR_SECAGG_BELOW_THRESHOLD and ask no site for shares', async () => {
    const sites = makeSimSites(5, 100, { seed: 3 });
    let sent: { task: { kind: string } }[] = [];
    await expect(secureRound(sites, { dropAt: new Map([[0, 'masked-input'], [1, 'masked-input'], [2, 'masked-input']]), run: (r) => { sent = r.sent; } }))
      .rejects.toMatchObject({ code: 'COHORT_ERR_SECAGG_BELOW_THRESHOLD' });
    expect(sent.filter((s) => s.task.kind === 'secagg-unmask')).toHaveLength(0);
  });

  it('should abort, publishing nothing, when too few sites answer the unmask stage', async () => {
    const sites = makeSimSites(5, 100, { seed: 4 });
    await expect(secureRound(sites, { dropAt: new Map([[0, 'secagg-unmask'], [1, 'secagg-unmask'], [2, 'secagg-unmask']]) }))
      .rejects.toMatchObject({ code: 'COHORT_ERR_SECAGG_BELOW_THRESHOLD' });
  });

  it('should keep the sum exact when a peer advertisement is tampered with in transit: the site excludes that peer', async () => {
    const sites = makeSimSites(5, 500, { seed: 9 });
    let rejected: unknown[] = [];
    const { result, decoded } = await secureRound(sites, {
      run: (r) => {
        const send = r.transport.send.bind(r.transport);
        r.transport.send = async (siteId, task, t) => {
          if (task.kind === 'secagg-share' && siteId === 'site-0') {
            const peers = task.peers.map((p) => (p.siteId === 'site-1' ? { ...p, signature: Buffer.from(nacl.randomBytes(64)).toString('base64') } : p));
            const reply = await send(siteId, { ...task, peers }, t);
            if (reply.ok) rejected = (reply.data as { rejected: unknown[] }).rejected;
            return reply;
          }
          return send(siteId, task, t);
        };
      },
    });
    expect(rejected).toEqual([{ siteId: 'site-1', code: 'COHORT_ERR_SECAGG_BAD_SIGNATURE' }]);
    expect(result.survivors).toHaveLength(5);
    expect(maxAbsDiff(decoded.meanDelta, plaintextMean(sites, result.survivors).mean)).toBeLessThanOrEqual(TOLERANCE);
  });

  it('should drop a site whose advertisement does not verify at the coordinator with COHORT_ERR_SECAGG_BAD_SIGNATURE', async () => {
    const sites = makeSimSites(5, 100, { seed: 10 });
    // A coordinator showing one site a different weight cap: that site signs other parameters, so it is excluded.
    const { result, decoded } = await secureRound(sites, {
      run: (r) => {
        const send = r.transport.send.bind(r.transport);
        r.transport.send = (siteId, task, t) => send(siteId, task.kind === 'secagg-advertise' && siteId === 'site-4' ? { ...task, session: { ...task.session, graphSeed: 'ee'.repeat(32) } } : task, t);
      },
    });
    expect(result.dropped).toEqual([expect.objectContaining({ site: 'Site 4', stage: 'secagg-advertise', code: 'COHORT_ERR_SECAGG_BAD_SIGNATURE' })]);
    expect(maxAbsDiff(decoded.meanDelta, plaintextMean(sites, result.survivors).mean)).toBeLessThanOrEqual(TOLERANCE);
  });

  it('should still unmask when a share box is corrupted in transit, the other shares sufficing', async () => {
    const sites = makeSimSites(5, 200, { seed: 12 });
    const { result, decoded } = await secureRound(sites, {
      run: (r) => {
        const send = r.transport.send.bind(r.transport);
        r.transport.send = (siteId, task, t) => {
          if (task.kind === 'train' && siteId === 'site-2' && task.secagg) {
            const shares = task.secagg.shares.map((s, k) => (k === 0 ? { ...s, box: Buffer.from(Buffer.from(s.box, 'base64').map((b) => b ^ 0xff)).toString('base64') } : s));
            return send(siteId, { ...task, secagg: { ...task.secagg, shares } }, t);
          }
          return send(siteId, task, t);
        };
      },
    });
    expect(result.survivors).toHaveLength(5);
    expect(maxAbsDiff(decoded.meanDelta, plaintextMean(sites, result.survivors).mean)).toBeLessThanOrEqual(TOLERANCE);
  });
});

describe('what a site refuses', () => {
  const settings = SecureAggregationSettingsSchema.parse({});
  const manifest = manifestFor({});
  const base = (kind: string) => ({ kind, taskId: 't', manifest, studyId: 'study-h', round: 1, dataset: 'd', holdoutFraction: 0.2, seed: 1 });
  const terms = { settings, manifestHash: manifest.hash, minSitesPerAggregate: 2 };

  /** Runs stages 1-3 for `n` sites by hand and returns them at the unmask stage. */
  async function atUnmask(n = 5, set = settings) {
    const sites = makeSimSites(n, 10, { seed: 2 });
    const shape = sessionShape(set, n);
    const session = {
      sessionId: 'ab'.repeat(16), roster: sites.map((s) => ({ siteId: s.site.id, identityKey: s.site.identityKey })), ...shape,
      graphSeed: '01'.repeat(32), vectorLength: 12, clip: 8, quantizationBits: 22, maxWeight: 300,
    };
    const graph = neighbourGraph(n, shape.degree, Buffer.from(session.graphSeed, 'hex'));
    const t = { ...terms, settings: set };
    const ads = sites.map((s) => s.client.advertise({ ...base('secagg-advertise'), session } as SecAggAdvertiseTask, s.identity, t));
    const shares = sites.map((s, i) => s.client.share({
      ...base('secagg-share'), sessionId: session.sessionId, peers: graph[i]!.map((j) => ({ siteId: sites[j]!.site.id, ...ads[j]! })),
    } as SecAggShareTask, s.identity));
    const masked = sites.map((s, i) => s.client.mask('study-h', 1, {
      sessionId: session.sessionId,
      shares: shares.flatMap((r, j) => r.shares.filter((b) => b.to === s.site.id).map((b) => ({ from: sites[j]!.site.id, box: b.box }))).filter(() => i >= 0),
    }, s.client.trainingLanes(session.sessionId, s.delta, s.loss, s.numExamples)));
    const unmask = (survivors: string[], dropped: string[] = []) => ({ ...base('secagg-unmask'), sessionId: session.sessionId, survivors, dropped } as SecAggUnmaskTask);
    return { sites, session, masked, unmask, graph, ids: sites.map((s) => s.site.id) };
  }

  it('should refuse to unmask below the threshold, and reveal nothing', async () => {
    const { sites, unmask, ids } = await atUnmask();
    expect(() => sites[0]!.client.unmask(unmask(ids.slice(0, 2), ids.slice(2)), terms)).toThrow(expect.objectContaining({ code: 'COHORT_ERR_SECAGG_BELOW_THRESHOLD' }));
  });

  it('should refuse to unmask below its policy minimum even when the threshold is met', async () => {
    const { sites, unmask, ids } = await atUnmask();
    expect(() => sites[0]!.client.unmask(unmask(ids.slice(0, 3), ids.slice(3)), { minSitesPerAggregate: 4 })).toThrow(expect.objectContaining({ code: 'COHORT_ERR_POLICY_TOO_FEW_SITES' }));
  });

  it('should never reveal both shares of one site, and answer the unmask stage only once', async () => {
    const { sites, unmask, ids } = await atUnmask();
    expect(() => sites[0]!.client.unmask(unmask(ids, [ids[1]!]), terms)).toThrow(expect.objectContaining({ code: 'COHORT_ERR_SECAGG_INCONSISTENT' }));
    const r = sites[0]!.client.unmask(unmask(ids.slice(0, 4), [ids[4]!]), terms);
    expect(r.selfShares.map((s) => s.of).sort()).toEqual(ids.slice(0, 4));
    expect(r.keyShares.map((s) => s.of)).toEqual([ids[4]]);
    expect(() => sites[0]!.client.unmask(unmask(ids.slice(0, 3), ids.slice(3)), terms)).toThrow(expect.objectContaining({ code: 'COHORT_ERR_SECAGG_STAGE_ORDER' }));
  });

  it('should refuse to unmask survivors that do not form a connected neighbour graph', async () => {
    // A ring (degree 2) of 8 sites, threshold 2 of each 3-site neighbourhood.
    const { sites, unmask, ids, graph } = await atUnmask(8, SecureAggregationSettingsSchema.parse({ neighbours: 2 }));
    const [a, b] = graph[0]!;
    // Site 0 with a non-neighbour only: site 0 would be unmasked alone.
    const far = ids.findIndex((_, j) => j !== 0 && !graph[0]!.includes(j));
    expect(() => sites[0]!.client.unmask(unmask([ids[0]!, ids[far]!]), terms)).toThrow(expect.objectContaining({ code: 'COHORT_ERR_SECAGG_DISCONNECTED' }));
    // Two separate pieces of the ring: each piece's sum could be unmasked on its own.
    const other = ids.findIndex((_, j) => ![0, a, b].includes(j) && !graph[a!]!.includes(j) && !graph[b!]!.includes(j) && graph[j]!.some((x) => ![0, a, b].includes(x)));
    const piece = [other, graph[other]!.find((x) => ![0, a, b].includes(x))!];
    expect(() => sites[0]!.client.unmask(unmask([ids[0]!, ids[a!]!, ...piece.map((j) => ids[j]!)]), terms)).toThrow(expect.objectContaining({ code: 'COHORT_ERR_SECAGG_DISCONNECTED' }));
    expect(sites[0]!.client.unmask(unmask([ids[0]!, ids[a!]!, ids[b!]!]), terms).selfShares.length).toBe(3);
  });

  it('should send one masked input per session only', async () => {
    const { sites, session } = await atUnmask();
    const s = sites[1]!;
    expect(() => s.client.mask('study-h', 1, { sessionId: session.sessionId, shares: [] }, new Int32Array(12))).toThrow(expect.objectContaining({ code: 'COHORT_ERR_SECAGG_STAGE_ORDER' }));
  });

  it('should refuse a session whose parameters differ from the manifest, or that lacks its identity', () => {
    const [s, ...others] = makeSimSites(3, 10);
    const roster = [s!, ...others].map((x) => ({ siteId: x.site.id, identityKey: x.site.identityKey }));
    const session = { sessionId: 'cd'.repeat(16), roster, ...sessionShape(settings, 3), graphSeed: '02'.repeat(32), vectorLength: 12, clip: 8, quantizationBits: 22, maxWeight: 300 };
    const advertise = (sess: object) => s!.client.advertise({ ...base('secagg-advertise'), session: sess } as SecAggAdvertiseTask, s!.identity, terms);
    expect(() => advertise({ ...session, threshold: 2, sessionId: '01'.repeat(16) })).not.toThrow();
    expect(() => advertise({ ...session, sessionId: '03'.repeat(16), clip: 100 })).toThrow(expect.objectContaining({ code: 'COHORT_ERR_SECAGG_CONFIG' }));
    expect(() => advertise({ ...session, sessionId: '04'.repeat(16), quantizationBits: 30 })).toThrow(expect.objectContaining({ code: 'COHORT_ERR_SECAGG_CONFIG' }));
    expect(() => advertise({ ...session, sessionId: '05'.repeat(16), roster: roster.slice(1).concat([{ siteId: 'x', identityKey: 'AAAA' }]) })).toThrow(expect.objectContaining({ code: 'COHORT_ERR_SECAGG_CONFIG' }));
    expect(() => s!.client.advertise({ ...base('secagg-advertise'), session: { ...session, sessionId: '06'.repeat(16) } } as SecAggAdvertiseTask, s!.identity, { ...terms, minSitesPerAggregate: 3 }))
      .toThrow(expect.objectContaining({ code: 'COHORT_ERR_POLICY_TOO_FEW_SITES' }));
  });
});
