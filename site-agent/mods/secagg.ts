/**
 * The site's half of secure aggregation (SecAgg+): holds each session's state between the four stages and
 * enforces, at the site, everything a site must not leave to the coordinator.
 *
 *   advertise  check the session against the approved manifest and the site policy; make two fresh X25519 key
 *              pairs (c: boxes for shares, s: masks) and sign them with the site's identity key
 *   share      verify every neighbour's signature and keys; Shamir-share the mask key s_sk and a fresh self-mask
 *              seed b among the neighbourhood (t of it rebuild either); seal one box per neighbour
 *   mask       open the boxes addressed to us; add the self mask and one pairwise mask per linked neighbour to the
 *              quantized update; send that, once
 *   unmask     check the survivor list (threshold, policy minimum, connectivity, consistency); reveal self-mask
 *              shares of survivors and key shares of dropped sites, never both for one site, once
 *
 * Nothing here talks to a socket: the agent (and simulations, and the bench) call these with parsed tasks.
 */
import { randomBytes } from 'node:crypto';
import { CohortError } from '../../protocol/errors.ts';
import type { SecAggAdvertiseTask, SecAggShareTask, SecAggUnmaskTask } from '../../protocol/messages.ts';
import type {
  SecAggAdvertiseResult, SecAggInput, SecAggSession, SecAggShareResult, SecAggUnmaskResult, SecureAggregationSettings,
} from '../../protocol/secagg-messages.ts';
import { agree, generateAgreementKeyPair, type AgreementKeyPair } from '../../protocol/crypto/agreement.ts';
import type { Entropy } from '../../protocol/crypto/entropy.ts';
import { isConnected, neighbourGraph, neighbourhood } from '../../protocol/crypto/graph.ts';
import { addMask } from '../../protocol/crypto/prg.ts';
import { checkHeadroom, checkLaneBounds, encodeTrainingLanes, laneBound, type QuantizeParams } from '../../protocol/crypto/quantize.ts';
import { checkDistributedLanes, checkRecordLanes, encodeDistributedLanes, RecordLaneEncoder } from '../../protocol/privacy/distributed.ts';
import { keyedUniform } from '../../protocol/privacy/noise.ts';
import type { DistributedRoundPlan } from '../../protocol/privacy/plan.ts';
import { boxKey, decodeSharePayload, encodeSharePayload, openBox, sealBox } from '../../protocol/crypto/seal.ts';
import {
  commitment, maskSign, pairSeed, selfSeed, sessionHash, sessionShape, signAdvertisement, verifyAdvertisement,
} from '../../protocol/crypto/session.ts';
import { encodeShare, split } from '../../protocol/crypto/shamir.ts';
import { b64, fromB64 } from '../../protocol/signing.ts';

/** Who this site is, for signing and for finding itself in a session's roster. */
export interface SecAggIdentity {
  siteId: string;
  /** Ed25519 secret key (64 bytes, tweetnacl form). */
  secretKey: Uint8Array;
  /** Ed25519 public key, base64, as enrolled with the coordinator. */
  publicKeyB64: string;
}

/** What the site approved and what its policy demands. */
export interface SecAggTerms {
  settings: SecureAggregationSettings;
  manifestHash: string;
  /** Site policy `minSitesPerAggregate`. */
  minSitesPerAggregate: number;
  /**
   * Distributed DP (client- or record-distributed): the round's plan, computed by the site from its approved
   * manifest and this session's roster size, threshold, quantization, vector length and (record level) maxWeight
   * (protocol/privacy/plan.ts). Its noise headroom enters the overflow check, and the session's training vector is
   * encoded with it.
   */
  distributed?: DistributedRoundPlan;
}

/** Layout of a training vector (see protocol/crypto/quantize.ts), handed to a transform. */
export interface LaneInfo {
  /** Lanes 0..values-1 hold the model delta; then one loss lane and one weight lane. */
  values: number;
  params: QuantizeParams;
  sites: number;
}

/**
 * A transform of the quantized vector before masking: the hook for distributed differential privacy (integer
 * noise such as Skellam or a discrete Gaussian added to the value lanes). It must keep each value lane within
 * 2^(bits-1) + `headroom`; the session's overflow check counts `headroom` for every site.
 */
export interface QuantizedTransform {
  headroom: number;
  apply(lanes: Int32Array, info: LaneInfo): void;
}

interface Peer {
  index: number;
  cPk: Uint8Array;
  sPk: Uint8Array;
  /** X25519 with our c and s keys, computed once when the peer is checked (secrets: wiped at unmask). */
  cShared: Uint8Array;
  sShared: Uint8Array;
}

interface SessionState {
  session: SecAggSession;
  studyId: string;
  round: number;
  hash: Uint8Array;
  me: number;
  graph: number[][];
  c: AgreementKeyPair;
  s: AgreementKeyPair;
  stage: 'advertised' | 'shared' | 'masked' | 'done';
  createdAt: number;
  peers: Map<string, Peer>;
  /** Neighbours we sent a box to (accepted in stage 2). */
  sentTo: Set<string>;
  b?: Uint8Array;
  own?: { keyShare: Uint8Array; selfShare: Uint8Array };
  /** Shares other sites sealed for us, opened in stage 3. */
  held: Map<string, { keyShare: Uint8Array; selfShare: Uint8Array }>;
  /** Neighbours we mask against: we sent them a box and they sent us one. */
  linked: Set<string>;
  /** Client-distributed DP plan of this round (absent otherwise). */
  distributed?: DistributedRoundPlan;
}

const SESSION_TTL_MS = 6 * 3600_000;

// Every site of a session checks the same survivor list against the same graph (neighbourGraph shares one object
// per session); where many sites share a process (simulations) the O(n k) search runs once, not once per site.
const connectivity = new WeakMap<readonly (readonly number[])[], Map<string, boolean>>();
function survivorsConnected(graph: readonly (readonly number[])[], nodes: number[]): boolean {
  let memo = connectivity.get(graph);
  if (!memo) connectivity.set(graph, (memo = new Map()));
  const key = nodes.join(',');
  let ok = memo.get(key);
  if (ok === undefined) {
    ok = isConnected(graph, nodes);
    if (memo.size >= 16) memo.clear();
    memo.set(key, ok);
  }
  return ok;
}
const MAX_SESSIONS = 16;

const fail = (code: ConstructorParameters<typeof CohortError>[0], message: string, details?: Record<string, unknown>) => new CohortError(code, message, details);

export class SecAggClient {
  private readonly sessions = new Map<string, SessionState>();

  /**
   * `entropy`: source of the stochastic-rounding keys; default the OS CSPRNG. Simulations pass a seeded one so runs
   * reproduce (protocol/crypto/entropy.ts); keys, masks and shares always use the CSPRNG.
   */
  constructor(private readonly opts: { transform?: QuantizedTransform; now?: () => number; warn?: (msg: string, details: Record<string, unknown>) => void; entropy?: Entropy } = {}) {}

  private now(): number {
    return this.opts.now?.() ?? Date.now();
  }

  private evict(): void {
    const now = this.now();
    for (const [id, s] of this.sessions) if (now - s.createdAt > SESSION_TTL_MS) this.sessions.delete(id);
    while (this.sessions.size >= MAX_SESSIONS) this.sessions.delete(this.sessions.keys().next().value!);
  }

  private state(sessionId: string, studyId: string, round: number, stage: SessionState['stage']): SessionState {
    const st = this.sessions.get(sessionId);
    if (!st || st.studyId !== studyId || st.round !== round) {
      throw fail('COHORT_ERR_SECAGG_UNKNOWN_SESSION', `no secure-aggregation session ${sessionId} for study ${studyId} round ${round} at this site`);
    }
    if (st.stage !== stage) throw fail('COHORT_ERR_SECAGG_STAGE_ORDER', `session ${sessionId} is at stage ${st.stage}, not ${stage}`);
    return st;
  }

  private params(st: SessionState): QuantizeParams {
    return { clip: st.session.clip, bits: st.session.quantizationBits, maxWeight: st.session.maxWeight };
  }

  /** Stage 1. Checks the proposed session, then answers with fresh signed X25519 public keys. */
  advertise(task: SecAggAdvertiseTask, id: SecAggIdentity, terms: SecAggTerms): SecAggAdvertiseResult {
    const s = task.session;
    if (this.sessions.has(s.sessionId)) throw fail('COHORT_ERR_SECAGG_STAGE_ORDER', `session ${s.sessionId} was already advertised`);
    const n = s.roster.length;
    const ids = new Set(s.roster.map((r) => r.siteId));
    const keys = new Set(s.roster.map((r) => r.identityKey));
    if (ids.size !== n || keys.size !== n) throw fail('COHORT_ERR_SECAGG_CONFIG', 'session roster repeats a site or an identity key');
    const me = s.roster.findIndex((r) => r.siteId === id.siteId);
    if (me < 0 || s.roster[me]!.identityKey !== id.publicKeyB64) {
      throw fail('COHORT_ERR_SECAGG_CONFIG', 'session roster does not hold this site with its identity key');
    }
    if (task.manifest.hash !== terms.manifestHash) throw fail('COHORT_ERR_SECAGG_CONFIG', 'session is for another manifest');
    const set = terms.settings;
    const shape = sessionShape(set, n);
    const mismatches: string[] = [];
    if (s.threshold !== shape.threshold) mismatches.push(`threshold ${s.threshold} (manifest implies ${shape.threshold})`);
    if (s.degree !== shape.degree) mismatches.push(`degree ${s.degree} (manifest implies ${shape.degree})`);
    if (s.clip !== set.clip) mismatches.push(`clip ${s.clip} (manifest: ${set.clip})`);
    if (s.quantizationBits !== set.quantizationBits) mismatches.push(`quantization bits ${s.quantizationBits} (manifest: ${set.quantizationBits})`);
    if (set.maxWeight !== undefined && s.maxWeight !== set.maxWeight) mismatches.push(`maxWeight ${s.maxWeight} (manifest: ${set.maxWeight})`);
    if (mismatches.length) throw fail('COHORT_ERR_SECAGG_CONFIG', `session parameters differ from the approved manifest: ${mismatches.join('; ')}`);
    const dp = terms.distributed;
    if (dp && (dp.dim !== s.vectorLength - 2 || dp.noiseSites !== s.threshold || dp.bits !== s.quantizationBits || (dp.level === 'record' && dp.contributions !== s.maxWeight))) {
      throw fail('COHORT_ERR_SECAGG_CONFIG', 'the distributed-DP plan was made for another session shape');
    }
    checkHeadroom(n, { bits: s.quantizationBits, maxWeight: s.maxWeight }, dp ? dp.headroom : this.opts.transform?.headroom ?? 0);
    // The site's minimum holds cryptographically: no aggregate can be unmasked with fewer than `threshold` sites.
    const min = terms.minSitesPerAggregate;
    if (n < min || s.threshold < min) {
      throw fail('COHORT_ERR_POLICY_TOO_FEW_SITES', `this session could unmask an aggregate of ${Math.min(n, s.threshold)} sites; site policy requires at least ${min} (raise privacy.secureAggregation.threshold or add sites)`);
    }
    this.evict();
    const hash = sessionHash({ studyId: task.studyId, round: task.round, manifestHash: task.manifest.hash, session: s });
    const c = generateAgreementKeyPair();
    const sk = generateAgreementKeyPair();
    const signature = signAdvertisement(id.secretKey, hash, id.siteId, c.publicKey, sk.publicKey);
    this.sessions.set(s.sessionId, {
      session: s, studyId: task.studyId, round: task.round, hash, me, graph: neighbourGraph(n, s.degree, Buffer.from(s.graphSeed, 'hex')),
      c, s: sk, stage: 'advertised', createdAt: this.now(), peers: new Map(), sentTo: new Set(), held: new Map(), linked: new Set(),
      ...(dp ? { distributed: dp } : {}),
    });
    return { cPk: b64(c.publicKey), sPk: b64(sk.publicKey), signature: b64(signature) };
  }

  /** Stage 2. Verifies the neighbours' advertisements and seals shares of s_sk and b for each accepted one. */
  share(task: SecAggShareTask, id: SecAggIdentity): SecAggShareResult {
    const st = this.state(task.sessionId, task.studyId, task.round, 'advertised');
    const { session, me, graph, hash } = st;
    const index = new Map(session.roster.map((r, i) => [r.siteId, i]));
    const mine = new Set(graph[me]!);
    const rejected: { siteId: string; code: string }[] = [];
    const seen = new Set<string>();
    for (const p of task.peers) {
      const j = index.get(p.siteId);
      if (j === undefined || !mine.has(j) || seen.has(p.siteId)) {
        rejected.push({ siteId: p.siteId, code: 'COHORT_ERR_SECAGG_CONFIG' });
        continue;
      }
      seen.add(p.siteId);
      const cPk = fromB64(p.cPk);
      const sPk = fromB64(p.sPk);
      if (!verifyAdvertisement(session.roster[j]!.identityKey, hash, p.siteId, cPk, sPk, fromB64(p.signature))) {
        rejected.push({ siteId: p.siteId, code: 'COHORT_ERR_SECAGG_BAD_SIGNATURE' });
        this.opts.warn?.('neighbour advertisement does not verify; excluded', { sessionId: task.sessionId, peer: p.siteId, code: 'COHORT_ERR_SECAGG_BAD_SIGNATURE' });
        continue;
      }
      let cShared: Uint8Array;
      let sShared: Uint8Array;
      try {
        // Both keys must give a usable shared secret; a low-order or malformed key excludes the peer.
        cShared = agree(st.c.privateKey, cPk);
        sShared = agree(st.s.privateKey, sPk);
      } catch (err) {
        rejected.push({ siteId: p.siteId, code: err instanceof CohortError ? err.code : 'COHORT_ERR_SECAGG_BAD_KEY' });
        continue;
      }
      st.peers.set(p.siteId, { index: j, cPk, sPk, cShared, sShared });
    }
    if (st.peers.size + 1 < session.threshold) {
      this.sessions.delete(task.sessionId);
      throw fail('COHORT_ERR_SECAGG_BELOW_THRESHOLD', `only ${st.peers.size} valid neighbours; ${session.threshold - 1} needed to share keys with threshold ${session.threshold}`, { rejected });
    }
    const hood = neighbourhood(graph, me);
    const xs = hood.map((_, pos) => pos + 1);
    const xOf = (i: number) => hood.indexOf(i) + 1;
    const b = new Uint8Array(randomBytes(32));
    const keyShares = split(st.s.privateKey, session.threshold, xs);
    const selfShares = split(b, session.threshold, xs);
    const shareAt = (i: number) => ({ keyShare: encodeShare(keyShares[xOf(i) - 1]!), selfShare: encodeShare(selfShares[xOf(i) - 1]!) });
    const myId = session.roster[me]!.siteId;
    const shares: SecAggShareResult['shares'] = [];
    for (const [peerId, p] of st.peers) {
      const key = boxKey(p.cShared, hash, myId, peerId);
      shares.push({ to: peerId, box: b64(sealBox(key, encodeSharePayload({ owner: me, holder: p.index, ...shareAt(p.index) }))) });
      st.sentTo.add(peerId);
    }
    st.b = b;
    st.own = shareAt(me);
    st.stage = 'shared';
    return { commitment: b64(commitment(b, hash, myId)), shares, rejected };
  }

  /** The session's quantization parameters, for encoding a vector of another kind than a training update. */
  quantizeParams(sessionId: string): QuantizeParams & { vectorLength: number; sites: number } {
    const st = this.sessions.get(sessionId);
    if (!st) throw fail('COHORT_ERR_SECAGG_UNKNOWN_SESSION', `no secure-aggregation session ${sessionId} at this site`);
    return { ...this.params(st), vectorLength: st.session.vectorLength, sites: st.session.roster.length };
  }

  /** The distributed-DP plan the session was advertised with, if any (the site charges its budget with it). */
  distributedPlan(sessionId: string): DistributedRoundPlan | undefined {
    return this.sessions.get(sessionId)?.distributed;
  }

  /**
   * Encodes a training update for the session: clip, weight, stochastic rounding (protocol/crypto/quantize.ts),
   * then the transform (DP noise) if any, then the bound check that keeps the sum from wrapping. Under
   * client-distributed DP: L2 clip, scale, conditional rounding and this site's share of Skellam noise instead
   * (protocol/privacy/distributed.ts); the loss and the example count do not leave.
   */
  trainingLanes(sessionId: string, delta: ArrayLike<number>, trainLoss: number, numExamples: number): Int32Array {
    const st = this.sessions.get(sessionId);
    if (!st) throw fail('COHORT_ERR_SECAGG_UNKNOWN_SESSION', `no secure-aggregation session ${sessionId} at this site`);
    if (delta.length + 2 !== st.session.vectorLength) {
      throw fail('COHORT_ERR_SECAGG_CONFIG', `session expects ${st.session.vectorLength} lanes; this model gives ${delta.length + 2}`);
    }
    const params = this.params(st);
    const rounding = this.roundingEntropy(st, sessionId);
    if (st.distributed?.level === 'record') throw fail('COHORT_ERR_SITE_TASK_MISMATCH', 'a record-distributed session sums per-record gradients (recordEncoder), not a model update');
    if (st.distributed) {
      // Conditional rounding and the site's Skellam noise: the OS CSPRNG in production, seeded only in simulations.
      const lanes = encodeDistributedLanes(delta, st.distributed, ...(rounding ? [keyedUniform(rounding)] : []));
      checkDistributedLanes(lanes, st.distributed, laneBound(params.bits));
      return lanes;
    }
    const lanes = encodeTrainingLanes(delta, trainLoss, numExamples, params, ...(rounding ? [rounding] : []));
    const t = this.opts.transform;
    if (t) t.apply(lanes, { values: delta.length, params, sites: st.session.roster.length });
    checkLaneBounds(lanes, params, t?.headroom ?? 0);
    return lanes;
  }

  /**
   * Record-distributed DP: an encoder for this session's lanes. Feed it every training record's clipped gradient
   * (`add`), then `finish` returns the lanes (per-record conditional rounding, the summed integer gradient, this
   * site's share of Skellam noise, loss lane 0, record count) after the bound check that keeps the sum from
   * wrapping. Rounding and noise use the OS CSPRNG, or a simulation's injected entropy.
   */
  recordEncoder(sessionId: string): { add: (gradient: ArrayLike<number>) => void; finish: () => Int32Array } {
    const st = this.sessions.get(sessionId);
    if (!st) throw fail('COHORT_ERR_SECAGG_UNKNOWN_SESSION', `no secure-aggregation session ${sessionId} at this site`);
    const plan = st.distributed;
    if (plan?.level !== 'record') throw fail('COHORT_ERR_SITE_TASK_MISMATCH', 'this session was not advertised for record-distributed DP');
    const rounding = this.roundingEntropy(st, sessionId);
    const enc = new RecordLaneEncoder(plan, ...(rounding ? [keyedUniform(rounding)] : []));
    const bits = st.session.quantizationBits;
    return {
      add: (g) => enc.add(g),
      finish: () => {
        const lanes = enc.finish();
        checkRecordLanes(lanes, plan, laneBound(bits));
        return lanes;
      },
    };
  }

  private roundingEntropy(st: { studyId: string; round: number; session: SecAggSession; me: number }, sessionId: string): Uint8Array | undefined {
    return this.opts.entropy?.(`secagg-rounding|${st.studyId}|${st.round}|${st.session.roster[st.me]!.siteId}|${sessionId}`);
  }

  /**
   * Stage 3. Opens the share boxes addressed to this site and masks `lanes`: plus the self mask, plus or minus
   * one pairwise mask per linked neighbour. Runs once per session: two masked vectors under the same masks would
   * reveal their difference.
   */
  mask(studyId: string, round: number, input: SecAggInput, lanes: Int32Array): Uint8Array {
    const st = this.state(input.sessionId, studyId, round, 'shared');
    const { session, me, hash } = st;
    if (lanes.length !== session.vectorLength) throw fail('COHORT_ERR_SECAGG_CONFIG', `session expects ${session.vectorLength} lanes, got ${lanes.length}`);
    const myId = session.roster[me]!.siteId;
    const linked = new Set<string>();
    const held = new Map<string, { keyShare: Uint8Array; selfShare: Uint8Array }>();
    for (const { from: peerId, box } of input.shares) {
      const p = st.peers.get(peerId);
      // A box from a site we did not send one to is not a link: that site does not mask against us either.
      if (!p || !st.sentTo.has(peerId) || linked.has(peerId)) continue;
      linked.add(peerId);
      const opened = openBox(boxKey(p.cShared, hash, peerId, myId), fromB64(box));
      const payload = opened && decodeSharePayload(opened);
      if (!payload || payload.owner !== p.index || payload.holder !== me) {
        // Still linked (the peer masks against us), but we cannot help rebuild its secrets.
        this.opts.warn?.('share box from a neighbour does not open; its shares are lost', { sessionId: input.sessionId, peer: peerId, code: 'COHORT_ERR_SECAGG_BAD_SHARE' });
      } else {
        held.set(peerId, { keyShare: payload.keyShare, selfShare: payload.selfShare });
      }
    }
    if (linked.size + 1 < session.threshold) {
      throw fail('COHORT_ERR_SECAGG_BELOW_THRESHOLD', `only ${linked.size} neighbours exchanged shares with this site; ${session.threshold - 1} needed`);
    }
    const out = Int32Array.from(lanes);
    addMask(out, selfSeed(st.b!, hash), 1);
    for (const peerId of linked) {
      const p = st.peers.get(peerId)!;
      addMask(out, pairSeed(p.sShared, hash, myId, peerId), maskSign(me, p.index));
    }
    st.linked = linked;
    st.held = held;
    st.stage = 'masked';
    return new Uint8Array(out.buffer, out.byteOffset, out.byteLength);
  }

  /**
   * Stage 4. Reveals, for each survivor, its self-mask share and, for each dropped site, its key share, after
   * checking that the aggregate meets the threshold and the site's policy, that the lists are consistent, and
   * that this site keeps a surviving linked neighbour and the survivors stay connected (otherwise a sum of a few
   * sites, or this site's own update, could be unmasked). Runs once per session, then forgets the secrets.
   */
  unmask(task: SecAggUnmaskTask, terms: Pick<SecAggTerms, 'minSitesPerAggregate'>): SecAggUnmaskResult {
    const st = this.state(task.sessionId, task.studyId, task.round, 'masked');
    const { session, me, graph } = st;
    const myId = session.roster[me]!.siteId;
    const index = new Map(session.roster.map((r, i) => [r.siteId, i]));
    const survivors = new Set(task.survivors);
    const dropped = new Set(task.dropped);
    if (survivors.size !== task.survivors.length || dropped.size !== task.dropped.length) throw fail('COHORT_ERR_SECAGG_INCONSISTENT', 'unmask request repeats a site');
    for (const x of survivors) if (dropped.has(x)) throw fail('COHORT_ERR_SECAGG_INCONSISTENT', `site ${x} is listed both as survivor and as dropped`);
    for (const x of [...survivors, ...dropped]) if (!index.has(x)) throw fail('COHORT_ERR_SECAGG_INCONSISTENT', `site ${x} is not in this session`);
    if (!survivors.has(myId)) throw fail('COHORT_ERR_SECAGG_INCONSISTENT', 'this site is not listed among the survivors');
    if (survivors.size < session.threshold) {
      throw fail('COHORT_ERR_SECAGG_BELOW_THRESHOLD', `${survivors.size} survivors; the threshold is ${session.threshold}`);
    }
    if (survivors.size < terms.minSitesPerAggregate) {
      throw fail('COHORT_ERR_POLICY_TOO_FEW_SITES', `the aggregate would combine ${survivors.size} sites; site policy requires at least ${terms.minSitesPerAggregate}`);
    }
    if (![...st.linked].some((x) => survivors.has(x))) {
      throw fail('COHORT_ERR_SECAGG_DISCONNECTED', 'no neighbour this site masked against survived; unmasking would reveal this site alone');
    }
    if (!survivorsConnected(graph, [...survivors].map((x) => index.get(x)!))) {
      throw fail('COHORT_ERR_SECAGG_DISCONNECTED', 'the survivors do not form a connected neighbour graph');
    }
    const selfShares: SecAggUnmaskResult['selfShares'] = [];
    const keyShares: SecAggUnmaskResult['keyShares'] = [];
    for (const x of survivors) {
      if (x === myId) selfShares.push({ of: x, share: b64(st.own!.selfShare) });
      else {
        const h = st.held.get(x);
        if (h) selfShares.push({ of: x, share: b64(h.selfShare) });
      }
    }
    for (const x of dropped) {
      const h = st.held.get(x);
      if (h) keyShares.push({ of: x, share: b64(h.keyShare) });
    }
    // Done: forget every secret of this session; a second unmask request finds stage 'done' and is refused.
    st.stage = 'done';
    st.held.clear();
    for (const p of st.peers.values()) {
      p.cShared.fill(0);
      p.sShared.fill(0);
    }
    // What remains is a tombstone that refuses a replay; the roster and graph (large with many sites) can go.
    st.peers.clear();
    st.graph = [];
    st.session = { ...st.session, roster: [] };
    delete st.b;
    delete st.own;
    st.c = { publicKey: st.c.publicKey, privateKey: new Uint8Array(32) };
    st.s = { publicKey: st.s.publicKey, privateKey: new Uint8Array(32) };
    return { selfShares, keyShares };
  }

  /** Sessions held (for health checks and tests). */
  get sessionCount(): number {
    return this.sessions.size;
  }
}
