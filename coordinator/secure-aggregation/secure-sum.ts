/**
 * Secure sum of integer vectors (SecAgg+, Bonawitz et al. CCS 2017; Bell et al. CCS 2020), coordinator side.
 * Runs the four stages over any `Transport` (sockets in production, in-memory in simulations and the bench) and
 * returns only the sum of the surviving sites' vectors, modulo 2^32, read as signed lanes.
 *
 * The coordinator relays what it cannot read: signed public keys (stage 1), sealed share boxes (stage 2), and
 * masked vectors (stage 3), which it adds into one accumulator as they arrive and then drops. At stage 4 it gets
 * exactly the shares that remove the masks from the total: the self-mask seeds of survivors and the mask keys of
 * sites that dropped after sharing. No individual vector is ever unmasked, kept, or stored.
 *
 * Generic on purpose: the vector may be a training update (see secure-train.ts), evaluation counts or feature
 * statistics; the caller builds the stage-3 task and says how to read its reply.
 */
import { randomBytes } from 'node:crypto';
import type { Logger } from 'pino';
import type { z } from 'zod';
import { CohortError, type ErrorCode } from '../../protocol/errors.ts';
import {
  parseReply, type SecAggAdvertiseTask, type SecAggShareTask, type SecAggUnmaskTask, type Task,
} from '../../protocol/messages.ts';
import {
  SecAggAdvertiseResultSchema, SecAggShareResultSchema, SecAggUnmaskResultSchema,
  type SecAggInput, type SecAggSession, type SecureAggregationSettings,
} from '../../protocol/secagg-messages.ts';
import { agree, agreementPublicKey } from '../../protocol/crypto/agreement.ts';
import type { Entropy } from '../../protocol/crypto/entropy.ts';
import { isConnected, neighbourGraph, neighbourhood } from '../../protocol/crypto/graph.ts';
import { addLanes, addMask } from '../../protocol/crypto/prg.ts';
import { checkHeadroom } from '../../protocol/crypto/quantize.ts';
import { commitment, maskSign, pairSeed, selfSeed, sessionHash, sessionShape, verifyAdvertisement } from '../../protocol/crypto/session.ts';
import { combine, decodeShare, type Share } from '../../protocol/crypto/shamir.ts';
import { b64, fromB64 } from '../../protocol/signing.ts';
import type { SendOptions, Transport } from '../transport/transport.ts';

/** A site asked to take part: its id at the transport, its name, and its enrolled Ed25519 identity key. */
export interface SecureSumSite {
  id: string;
  name: string;
  identityKey: string;
}

export type SecAggStage = 'secagg-advertise' | 'secagg-share' | 'masked-input' | 'secagg-unmask';

/** A site that dropped out (or was excluded) at a stage, with the coded reason. */
export interface SecureSumDrop {
  site: string;
  stage: SecAggStage;
  code: string;
  message: string;
}

/** The task fields every stage carries so the site can authorize it (manifest, study, round, ...). */
export type TaskBase = Omit<Extract<Task, { kind: 'describe' }>, 'kind'>;

export interface SecureSumRequest<S extends z.ZodType<{ masked: Uint8Array }>> {
  transport: Transport;
  log?: Logger | undefined;
  sites: readonly SecureSumSite[];
  settings: SecureAggregationSettings;
  /** Lanes of each site's vector. */
  vectorLength: number;
  /** The session's weight cap (see protocol/crypto/quantize.ts). */
  maxWeight: number;
  /** Extra per-lane bound a site-side transform may add (DP noise). */
  headroom?: number;
  /** The caller's own minimum of survivors (the study's minSites); the threshold applies as well. */
  minSurvivors: number;
  /** Fresh task fields (new task id each call). */
  base: () => TaskBase;
  /** The stage-3 task for a site, carrying `secagg`. */
  inputTask: (site: SecureSumSite, base: TaskBase, secagg: SecAggInput) => Task;
  /** Schema of the stage-3 reply; `masked` holds the lanes, little-endian. */
  inputSchema: S;
  inputDeadlineMs: number;
  /**
   * Source of the session id and neighbour-graph seed, asked under `label` (unique per session: study, round,
   * attempt). Default the OS CSPRNG; simulations pass a seeded one so a run's graph, and so its recoveries,
   * reproduce (protocol/crypto/entropy.ts).
   */
  entropy?: { source: Entropy; label: string };
}

export interface SecureSumResult<S extends z.ZodType<{ masked: Uint8Array }>> {
  /** Sum of the survivors' vectors, lane by lane, modulo 2^32, read as signed 32-bit integers. */
  sum: Int32Array;
  /** Names of the sites whose vectors are in the sum. */
  survivors: string[];
  /** Sites that dropped out or were excluded, per stage. */
  dropped: SecureSumDrop[];
  /** Each survivor's stage-3 reply without its masked vector (e.g. backend, duration). */
  extras: Map<string, Omit<z.output<S>, 'masked'>>;
  session: { sessionId: string; sites: number; threshold: number; degree: number };
  /** Task ids per site and stage, matching the sites' ledgers. */
  taskIds: Record<string, Partial<Record<SecAggStage, string>>>;
  /**
   * Coordinator compute: adding masked vectors as they arrived, and rebuilding secrets and removing masks (wall
   * time, and process CPU time, which is what the work costs when other processes compete for the cores).
   */
  timing: { addMs: number; unmaskMs: number; unmaskCpuMs: number };
}

function abort(code: ErrorCode, message: string, details?: Record<string, unknown>): CohortError {
  return new CohortError(code, message, details);
}

/** The Int32 lanes of a masked vector (an aligned view, or a copy when the socket buffer is unaligned). */
function lanesOf(bytes: Uint8Array, lanes: number): Int32Array {
  if (bytes.byteLength !== lanes * 4) throw abort('COHORT_ERR_TENSOR_SHAPE', `masked vector has ${bytes.byteLength} bytes; ${lanes * 4} expected`);
  if (bytes.byteOffset % 4 === 0) return new Int32Array(bytes.buffer, bytes.byteOffset, lanes);
  const copy = new Int32Array(lanes);
  new Uint8Array(copy.buffer).set(bytes);
  return copy;
}

export async function runSecureSum<S extends z.ZodType<{ masked: Uint8Array }>>(req: SecureSumRequest<S>): Promise<SecureSumResult<S>> {
  const { transport, log, settings } = req;
  const n = req.sites.length;
  const dropped: SecureSumDrop[] = [];
  const taskIds: SecureSumResult<S>['taskIds'] = {};
  const shape = sessionShape(settings, n);
  checkHeadroom(n, { bits: settings.quantizationBits, maxWeight: req.maxWeight }, req.headroom ?? 0);
  const need = Math.max(shape.threshold, req.minSurvivors);
  const draw = (purpose: string): Buffer => Buffer.from(req.entropy ? req.entropy.source(`${purpose}|${req.entropy.label}`) : randomBytes(32));
  const session: SecAggSession = {
    sessionId: draw('secagg-session').subarray(0, 16).toString('hex'),
    roster: req.sites.map((s) => ({ siteId: s.id, identityKey: s.identityKey })),
    threshold: shape.threshold, degree: shape.degree, graphSeed: draw('secagg-graph').toString('hex'),
    vectorLength: req.vectorLength, clip: settings.clip, quantizationBits: settings.quantizationBits, maxWeight: req.maxWeight,
  };
  const first = req.base();
  const hash = sessionHash({ studyId: first.studyId, round: first.round, manifestHash: first.manifest.hash, session });
  const graph = neighbourGraph(n, session.degree, Buffer.from(session.graphSeed, 'hex'));
  const info = { sessionId: session.sessionId, sites: n, threshold: session.threshold, degree: session.degree };
  log?.info({ ...info, studyId: first.studyId, round: first.round }, 'secure aggregation: session opened');
  const drop = (i: number, stage: SecAggStage, code: string, message: string) => {
    dropped.push({ site: req.sites[i]!.name, stage, code, message });
    log?.warn({ sessionId: session.sessionId, site: req.sites[i]!.name, stage, code, reason: message }, 'secure aggregation: site dropped');
  };
  const enough = (alive: number, stage: SecAggStage) => {
    if (alive < session.threshold) {
      throw abort('COHORT_ERR_SECAGG_BELOW_THRESHOLD', `${alive} sites left after ${stage}; the threshold is ${session.threshold} of ${n}`, { stage, alive, threshold: session.threshold, dropped });
    }
    if (alive < req.minSurvivors) {
      throw abort('COHORT_ERR_ROUND_TOO_FEW_RESULTS', `${alive} sites left after ${stage}; the study needs ${req.minSurvivors}`, { stage, alive, dropped });
    }
  };
  /** Sends one stage to `idx`; each reply is validated by `schema` and handed to `accept` as it arrives. */
  const stage = async <T extends z.ZodType>(idx: readonly number[], name: SecAggStage, make: (i: number, base: TaskBase) => Task, schema: T, deadline: number, accept: (i: number, data: z.output<T>) => void, sendOpts?: (i: number) => SendOptions): Promise<number[]> => {
    const ok: number[] = [];
    await Promise.all(idx.map(async (i) => {
      const site = req.sites[i]!;
      const base = req.base();
      (taskIds[site.name] ??= {})[name] = base.taskId;
      const raw = await transport.send(site.id, make(i, base), deadline, sendOpts?.(i));
      try {
        const reply = parseReply(schema, raw, `${name} reply`);
        if (!reply.ok) return drop(i, name, reply.error.code, reply.error.message);
        accept(i, reply.data);
        ok.push(i);
      } catch (err) {
        const e = err instanceof CohortError ? err : abort('COHORT_ERR_SERVER_INTERNAL', 'reply could not be handled');
        drop(i, name, e.code, e.message);
      }
    }));
    return ok.sort((a, b) => a - b);
  };

  // Stage 1: advertise keys. The coordinator checks signatures too, so a bad one costs no further round trip.
  // Advertisements as relayed (base64) and decoded once; decoded arrays keep their identity for key caching.
  const ads = new Map<number, { wire: { cPk: string; sPk: string; signature: string }; sPk: Uint8Array }>();
  const seenKeys = new Set<string>();
  const u1 = await stage([...req.sites.keys()], 'secagg-advertise', (_i, base): SecAggAdvertiseTask => ({ kind: 'secagg-advertise', ...base, session }),
    SecAggAdvertiseResultSchema, settings.stageDeadlineMs, (i, a) => {
      const site = req.sites[i]!;
      const sPk = fromB64(a.sPk);
      if (!verifyAdvertisement(site.identityKey, hash, site.id, fromB64(a.cPk), sPk, fromB64(a.signature))) {
        throw abort('COHORT_ERR_SECAGG_BAD_SIGNATURE', 'key advertisement does not verify with the site identity key');
      }
      if (a.cPk === a.sPk || seenKeys.has(a.cPk) || seenKeys.has(a.sPk)) throw abort('COHORT_ERR_SECAGG_BAD_KEY', 'key advertisement repeats a key');
      seenKeys.add(a.cPk);
      seenKeys.add(a.sPk);
      ads.set(i, { wire: a, sPk });
    });
  enough(u1.length, 'secagg-advertise');

  // Stage 2: share keys. Each site gets its live neighbours' advertisements and seals shares for them.
  const inU1 = new Set(u1);
  const sent = new Map<number, Map<number, string>>();
  const commitments = new Map<number, string>();
  const index = new Map(req.sites.map((s, i) => [s.id, i]));
  const u2 = await stage(u1, 'secagg-share', (i, base): SecAggShareTask => ({
    kind: 'secagg-share', ...base, sessionId: session.sessionId,
    peers: graph[i]!.filter((j) => inU1.has(j)).map((j) => ({ siteId: req.sites[j]!.id, ...ads.get(j)!.wire })),
  }), SecAggShareResultSchema, settings.stageDeadlineMs, (i, r) => {
    const boxes = new Map<number, string>();
    const mine = new Set(graph[i]);
    for (const { to, box } of r.shares) {
      const j = index.get(to);
      if (j === undefined || !mine.has(j) || !inU1.has(j) || boxes.has(j)) throw abort('COHORT_ERR_PROTOCOL_MALFORMED', `share box addressed to ${to}, not a live neighbour`);
      boxes.set(j, box);
    }
    for (const x of r.rejected) log?.warn({ sessionId: session.sessionId, site: req.sites[i]!.name, peer: x.siteId, code: x.code }, 'secure aggregation: a site refused a neighbour');
    sent.set(i, boxes);
    commitments.set(i, r.commitment);
  });
  enough(u2.length, 'secagg-share');

  // Stage 3: masked input. Boxes go to their recipients; masked vectors are added up as they arrive: a vector
  // sent in chunks (protocol/transfer.ts) is added chunk by chunk, so no site's vector is ever held whole here.
  const inU2 = new Set(u2);
  const linked = (a: number, b: number) => Boolean(sent.get(a)?.has(b) && sent.get(b)?.has(a));
  const acc = new Int32Array(req.vectorLength);
  const extras = new Map<string, Omit<z.output<S>, 'masked'>>();
  let addMs = 0;
  const vectorBytes = req.vectorLength * 4;
  /** Bytes of each site's vector already added through chunks. */
  const streamed = new Map<number, number>();
  const sink = (i: number): SendOptions => ({
    upload: {
      maxBytes: vectorBytes,
      sink: {
        open: (total) => {
          if (total !== vectorBytes) throw abort('COHORT_ERR_TENSOR_SHAPE', `masked vector of ${total} bytes declared; ${vectorBytes} expected`);
        },
        chunk: (offset, data) => {
          const t0 = performance.now();
          const lanes = data.byteLength / 4;
          addLanes(acc.subarray(offset / 4, offset / 4 + lanes), lanesOf(data, lanes));
          streamed.set(i, (streamed.get(i) ?? 0) + data.byteLength);
          addMs += performance.now() - t0;
        },
      },
    },
  });
  const u3 = await stage(u2, 'masked-input', (i, base) => req.inputTask(req.sites[i]!, base, {
    sessionId: session.sessionId,
    // Only neighbours seal boxes for i (graph lists are sorted, as u2 is): O(k) per site, not O(n).
    shares: graph[i]!.filter((j) => inU2.has(j) && sent.get(j)!.has(i)).map((j) => ({ from: req.sites[j]!.id, box: sent.get(j)!.get(i)! })),
  }), req.inputSchema, req.inputDeadlineMs, (i, r) => {
    if (streamed.has(i)) {
      // Sent in chunks: already in the sum, the reply's field is empty.
      if (streamed.get(i) !== vectorBytes || r.masked.byteLength !== 0) throw abort('COHORT_ERR_TRANSFER_INCOMPLETE', `masked vector ended after ${streamed.get(i)} of ${vectorBytes} bytes`);
    } else {
      const t0 = performance.now();
      addLanes(acc, lanesOf(r.masked, req.vectorLength));
      addMs += performance.now() - t0;
    }
    const { masked: _m, ...rest } = r as z.output<S> & { masked: Uint8Array };
    extras.set(req.sites[i]!.name, rest as Omit<z.output<S>, 'masked'>);
  }, sink);
  // A site whose chunks are partly in the sum and that then failed leaves lanes that no shares can clean without
  // unmasking it: the attempt is void (nothing is revealed) and the runner retries the round.
  const torn = [...streamed.keys()].filter((i) => !u3.includes(i));
  if (torn.length > 0) {
    throw abort('COHORT_ERR_TRANSFER_INCOMPLETE', `${torn.map((i) => req.sites[i]!.name).join(', ')} stopped part-way through sending a masked vector; the sum cannot be unmasked`, { dropped });
  }
  enough(u3.length, 'masked-input');
  const inU3 = new Set(u3);
  if (!isConnected(graph, u3)) throw abort('COHORT_ERR_SECAGG_DISCONNECTED', 'the surviving sites do not form a connected neighbour graph', { survivors: u3.length });
  for (const i of u3) {
    if (!graph[i]!.some((j) => inU3.has(j) && linked(i, j))) {
      throw abort('COHORT_ERR_SECAGG_DISCONNECTED', `site ${req.sites[i]!.name} has no surviving linked neighbour`);
    }
  }
  const lost = u2.filter((i) => !inU3.has(i));

  // Stage 4: unmask. Survivors reveal self-mask shares of survivors and key shares of those lost after sharing.
  const selfShares = new Map<number, Share[]>();
  const keyShares = new Map<number, Share[]>();
  const hoods = new Map<number, number[]>();
  const hoodOf = (i: number) => {
    let h = hoods.get(i);
    if (!h) hoods.set(i, (h = neighbourhood(graph, i)));
    return h;
  };
  const survivorIds = u3.map((i) => req.sites[i]!.id);
  const lostIds = lost.map((i) => req.sites[i]!.id);
  const inLost = new Set(lost);
  await stage(u3, 'secagg-unmask', (_i, base): SecAggUnmaskTask => ({
    kind: 'secagg-unmask', ...base, sessionId: session.sessionId, survivors: survivorIds, dropped: lostIds,
  }), SecAggUnmaskResultSchema, settings.stageDeadlineMs, (holder, r) => {
    const take = (list: { of: string; share: string }[], allowed: Set<number>, into: Map<number, Share[]>) => {
      const seen = new Set<number>();
      const batch: [number, Share][] = [];
      for (const { of, share } of list) {
        const owner = index.get(of);
        // A holder may only reveal shares the owner sealed for it (or its own), at the holder's x.
        if (owner === undefined || !allowed.has(owner) || seen.has(owner) || !(owner === holder || sent.get(owner)?.has(holder))) {
          throw abort('COHORT_ERR_SECAGG_BAD_SHARE', `unexpected share of ${of}`);
        }
        const s = decodeShare(fromB64(share));
        if (s.x !== hoodOf(owner).indexOf(holder) + 1 || s.y.length !== 32) throw abort('COHORT_ERR_SECAGG_BAD_SHARE', `share of ${of} has the wrong coordinate`);
        seen.add(owner);
        batch.push([owner, s]);
      }
      for (const [owner, s] of batch) {
        let l = into.get(owner);
        if (!l) into.set(owner, (l = []));
        l.push(s);
      }
    };
    take(r.selfShares, inU3, selfShares);
    take(r.keyShares, inLost, keyShares);
  });

  // Rebuild each secret from `threshold` shares and check it against what its owner committed to.
  const unmaskStart = performance.now();
  const unmaskCpu = process.cpuUsage();
  const t = session.threshold;
  for (const i of u3) {
    const shares = selfShares.get(i) ?? [];
    if (shares.length < t) {
      throw abort('COHORT_ERR_SECAGG_BELOW_THRESHOLD', `${shares.length} shares of ${req.sites[i]!.name}'s self mask arrived; ${t} needed`, { dropped });
    }
    const b = combine(shares, t);
    if (b64(commitment(b, hash, req.sites[i]!.id)) !== commitments.get(i)) {
      throw abort('COHORT_ERR_SECAGG_BAD_SHARE', `revealed shares do not rebuild ${req.sites[i]!.name}'s committed self-mask seed`);
    }
    addMask(acc, selfSeed(b, hash), -1);
  }
  for (const v of lost) {
    const partners = graph[v]!.filter((u) => inU3.has(u) && linked(u, v));
    if (partners.length === 0) continue;
    const shares = keyShares.get(v) ?? [];
    if (shares.length < t) {
      throw abort('COHORT_ERR_SECAGG_BELOW_THRESHOLD', `${shares.length} shares of dropped site ${req.sites[v]!.name}'s mask key arrived; ${t} needed`, { dropped });
    }
    const sk = combine(shares, t);
    if (b64(agreementPublicKey(sk)) !== ads.get(v)!.wire.sPk) {
      throw abort('COHORT_ERR_SECAGG_BAD_SHARE', `revealed shares do not rebuild ${req.sites[v]!.name}'s advertised mask key`);
    }
    for (const u of partners) {
      // Survivor u added maskSign(u, v) * PRG(seed_uv); take it back out.
      addMask(acc, pairSeed(agree(sk, ads.get(u)!.sPk), hash, req.sites[u]!.id, req.sites[v]!.id), maskSign(u, v) === 1 ? -1 : 1);
    }
  }
  const survivors = u3.map((i) => req.sites[i]!.name);
  const cpu = process.cpuUsage(unmaskCpu);
  const timing = { addMs, unmaskMs: performance.now() - unmaskStart, unmaskCpuMs: (cpu.user + cpu.system) / 1000 };
  log?.info({ ...info, survivors: survivors.length, dropped: dropped.length, addMs: Math.round(timing.addMs), unmaskMs: Math.round(timing.unmaskMs) }, 'secure aggregation: sum unmasked');
  return { sum: acc, survivors, dropped, extras, session: info, taskIds, timing };
}
