/**
 * The site agent: dials out to the coordinator (no inbound ports), proves its identity with a signed challenge,
 * and answers tasks one at a time. Every refusal is a coded reply, never a stack trace.
 */
import { io, type Socket } from 'socket.io-client';
import nacl from 'tweetnacl';
import { randomBytes } from 'node:crypto';
import { join } from 'node:path';
import { HttpsProxyAgent } from 'https-proxy-agent';
import { coordinatorProofMessage, fromB64, manifestHash as hashOf, verifyManifest } from '../protocol/signing.ts';
import { StudyManifestSchema } from '../protocol/messages.ts';
import { checkManifest, checkTask } from './policy.ts';
import { Approvals } from './approvals.ts';
import { Ledger } from './ledger.ts';
import type { Logger } from 'pino';
import { CohortError, toWireError, type ErrorCode, type WireError } from '../protocol/errors.ts';
import { SITE_NAMESPACE, type AuthAck, type ClientToServerEvents, type HelloAck, type ServerToClientEvents } from '../protocol/events.ts';
import {
  TaskSchema, challengeMessage, parseMessage, type DescribeResult, type EvaluateResult, type Reply,
  type MaskedTrainResult, type StatsResult, type StudyManifest, type Task, type TrainResult, type TrainTask,
} from '../protocol/messages.ts';
import { decodeTensors, encodeTensors, frameBytes } from '../protocol/codec.ts';
import { weightShapes } from '../protocol/models.ts';
import { PROTOCOL_VERSION } from '../protocol/version.ts';
import { resolveIn, type SiteConfig } from './config.ts';
import { publicKeyB64, type Identity } from './keys.ts';
import type { DataSource, SourceOptions } from './data/data-source.ts';
import { openDataSource } from './data/open-source.ts';
import { schemaReport, sourceOptionsFor, statsReply, taskData } from './data/task-data.ts';
import { evaluate, train } from './training/trainer.ts';
import { selectBackend } from './training/backends.ts';
import { SiteDp } from './mods/dp.ts';
import { distributedLevel, distributedRoundPlan } from '../protocol/privacy/plan.ts';
import { clippedRecordGradients, trainDpSgd } from './training/dp-sgd.ts';
import { roundCount } from './data/data-source.ts';
import { SecAggClient, type QuantizedTransform, type SecAggIdentity } from './mods/secagg.ts';
import {
  secureAggregationSettings, type SecAggAdvertiseResult, type SecAggShareResult, type SecAggUnmaskResult,
} from '../protocol/secagg-messages.ts';
import { flatDelta } from '../protocol/crypto/quantize.ts';
import type { Entropy } from '../protocol/crypto/entropy.ts';
import { keyedUniform, type Uniform } from '../protocol/privacy/noise.ts';
import { checkCoordinatorCertificate, readCa, tlsRefusal } from './tls-trust.ts';
import { UploadGrantSchema, type DownloadRef } from '../protocol/transfer.ts';
import { download, upload, type TransferLink } from './transfer.ts';

type ClientSocket = Socket<ServerToClientEvents, ClientToServerEvents>;

/** Refusals after which retrying cannot help: the agent stops instead of hammering the coordinator. */
const PERMANENT: ReadonlySet<ErrorCode> = new Set([
  'COHORT_ERR_AUTH_BAD_SIGNATURE', 'COHORT_ERR_AUTH_KEY_MISMATCH', 'COHORT_ERR_AUTH_UNKNOWN_SITE', 'COHORT_ERR_AUTH_SITE_REVOKED',
  'COHORT_ERR_AUTH_COORDINATOR_MISMATCH', 'COHORT_ERR_PROTOCOL_VERSION', 'COHORT_ERR_TLS_UNTRUSTED',
]);

export interface AgentOptions {
  dir: string;
  config: SiteConfig;
  identity: Identity;
  log: Logger;
  /**
   * Where a dataset id leads. Default: the datasets registered in site.json. Simulations pass in-memory
   * partitions here so that virtual sites run this same agent code.
   */
  sourceFor?: (dataset: string, split: SourceOptions) => DataSource;
  /** false: keep no ledger (virtual sites in simulations only). */
  ledger?: boolean;
  /**
   * Transform of the quantized update before it is masked (secure aggregation only): the hook for distributed
   * differential privacy, which adds integer noise here. See site-agent/mods/secagg.ts and docs/privacy.md.
   */
  quantizedTransform?: QuantizedTransform;
  /**
   * Simulations only: a seeded source for stochastic rounding and DP-SGD's sampling and noise, so runs reproduce
   * (protocol/crypto/entropy.ts). Absent (always, for a real site): the OS CSPRNG.
   */
  entropy?: Entropy;
}

/** Approximate size on the wire: binary fields at their length, the rest as JSON. */
export function wireBytes(value: unknown): number {
  let binary = 0;
  const json = JSON.stringify(value, (_k, v: unknown) => {
    if (v instanceof Uint8Array) {
      binary += v.byteLength;
      return null;
    }
    return v;
  });
  return binary + (json ? Buffer.byteLength(json) : 0);
}

export class SiteAgent {
  private socket: ClientSocket | undefined;
  private readonly sources = new Map<string, DataSource>();
  private queue: Promise<unknown> = Promise.resolve();
  private authenticated = false;
  private ready: Promise<AuthAck> = Promise.reject(new Error('not connected'));
  siteId: string | undefined;
  readonly stats = { tasks: 0, refused: 0, connects: 0, uploadResumes: [] as number[], downloadResumes: [] as number[] };
  /** The transfer code's way to the coordinator: this agent's connection once authenticated, through reconnects. */
  private readonly link: TransferLink;

  private readonly approvals: Approvals;
  private readonly ledger: Ledger | undefined;
  /** The site's own privacy accountant and budget (site-agent/mods/dp.ts). */
  readonly dp: SiteDp;
  /** Per-round secure-aggregation state between the stages (keys, shares), held only in memory. */
  private readonly secagg: SecAggClient;

  constructor(private readonly opts: AgentOptions) {
    this.ready.catch(() => undefined);
    this.secagg = new SecAggClient({ ...(opts.quantizedTransform ? { transform: opts.quantizedTransform } : {}), ...(opts.entropy ? { entropy: opts.entropy } : {}), warn: (msg, details) => opts.log.warn(details, msg) });
    this.approvals = new Approvals(opts.dir);
    this.ledger = opts.ledger === false ? undefined : new Ledger(join(opts.dir, 'ledger.jsonl'), opts.identity.secretKey);
    this.dp = new SiteDp(opts.ledger === false ? undefined : opts.dir, opts.config.policy);
    this.link = { ready: (deadline) => this.connectedSocket(deadline), log: opts.log };
  }

  /** The socket once connected and authenticated; waits through reconnects until `deadline`. */
  private async connectedSocket(deadline: number): Promise<ClientSocket> {
    for (;;) {
      const socket = this.socket;
      if (socket && this.authenticated && socket.connected) return socket;
      if (Date.now() > deadline || !socket?.io.reconnection()) throw new CohortError('COHORT_ERR_PROTOCOL_DISCONNECTED', 'not connected to the coordinator');
      await new Promise((r) => setTimeout(r, 50));
    }
  }

  get connected(): boolean {
    return this.authenticated;
  }

  /** Connects and authenticates; resolves on the first successful handshake, rejects on a permanent refusal. */
  async start(): Promise<AuthAck> {
    const { log } = this.opts;
    // Pick the training backend before anything touches tfjs, and say which one this site trains on.
    log.info({ backend: await selectBackend() }, 'training backend');
    const ca = readCa(this.opts.config.caFile ? resolveIn(this.opts.dir, this.opts.config.caFile) : undefined);
    if (!this.proxyUrl()) {
      // Check the coordinator's certificate first, so an untrusted one is a clear coded refusal, not a retry loop.
      await checkCoordinatorCertificate(new URL(this.opts.config.coordinator), ca).catch((err: unknown) => {
        const e = toWireError(err);
        log.error({ code: e.code, reason: e.message }, 'coordinator certificate refused');
        throw err;
      });
    }
    return this.connect(ca);
  }

  private proxyUrl(): string | undefined {
    return this.opts.config.proxy ?? process.env.HTTPS_PROXY ?? process.env.https_proxy ?? process.env.HTTP_PROXY ?? process.env.http_proxy;
  }

  private connect(ca: string | undefined): Promise<AuthAck> {
    const { config, log } = this.opts;
    const url = new URL(SITE_NAMESPACE, config.coordinator).toString();
    const proxy = this.proxyUrl();
    const socket: ClientSocket = io(url, {
      reconnection: true,
      reconnectionDelay: config.reconnect.initialDelayMs,
      reconnectionDelayMax: config.reconnect.maxDelayMs,
      randomizationFactor: 0.5,
      // Polling first, then upgrade: works where a proxy or firewall blocks WebSocket.
      transports: config.transports,
      ...(proxy ? { agent: new HttpsProxyAgent(proxy) as unknown as string } : {}),
      ...(ca ? { ca } : {}),
    });
    if (proxy) log.info({ proxy: new URL(proxy).origin }, 'connecting through proxy');
    this.socket = socket;
    socket.on('task', (task, ack) => {
      const reply = (r: Reply<unknown>) => { if (typeof ack === 'function') ack(r); };
      const connection = this.stats.connects;
      const receivedAt = Date.now();
      // A task can arrive in the same network read as the auth ack, before our handshake promise has resumed:
      // wait for this connection's handshake rather than refusing.
      const ready = this.ready;
      this.queue = this.queue.then(async () => {
        const ok = await ready.then(() => true, () => false);
        if (!ok) return reply({ ok: false, error: { code: 'COHORT_ERR_AUTH_CHALLENGE_EXPIRED', message: 'not authenticated' } });
        const r = await this.uploadLarge(task, await this.handle(task, { receivedAt }), receivedAt);
        // The ack only reaches the coordinator on the connection that brought the task; after a reconnect the
        // reply goes as `task-result` on the new one (the coordinator kept the task while its transfer ran).
        if (this.stats.connects === connection && this.authenticated) reply(r);
        else await this.replyLate(task, r, receivedAt);
      });
    });
    return new Promise<AuthAck>((resolve, reject) => {
      let settled = false;
      socket.on('connect', async () => {
        this.stats.connects++;
        try {
          this.ready = this.handshake(socket);
          const ack = await this.ready;
          this.authenticated = true;
          this.siteId = ack.siteId;
          log.info({ siteId: ack.siteId, coordinator: config.coordinator }, 'connected and authenticated');
          if (!settled) { settled = true; resolve(ack); }
        } catch (err) {
          const e = toWireError(err);
          log.error({ code: e.code, reason: e.message }, 'handshake refused');
          if (PERMANENT.has(e.code)) {
            socket.io.reconnection(false);
            socket.disconnect();
            if (!settled) { settled = true; reject(err instanceof CohortError ? err : new CohortError(e.code, e.message)); }
          }
        }
      });
      socket.on('disconnect', (reason) => {
        this.authenticated = false;
        log.warn({ reason }, 'disconnected; will reconnect with backoff');
      });
      socket.io.on('reconnect_attempt', (n) => log.info({ attempt: n }, 'reconnecting'));
      socket.on('connect_error', (err) => {
        // A certificate that stops verifying (rotated to an untrusted one, say) is logged with its code; the
        // agent keeps retrying, since a fixed certificate on the coordinator side heals it without a restart.
        const d = err as Error & { description?: unknown; context?: unknown };
        const tls = tlsRefusal(d.description ?? d.context ?? err, new URL(config.coordinator).host)
          ?? tlsRefusal((d.description as { error?: unknown } | undefined)?.error, new URL(config.coordinator).host);
        if (tls) log.error({ code: tls.code, reason: tls.message }, 'coordinator certificate refused; retrying');
        else log.warn({ reason: err.message }, 'cannot reach coordinator; retrying');
      });
    });
  }

  /**
   * A reply whose binary field is larger than one chunk goes up as a chunked upload under the task's grant; the
   * reply then names the transfer instead of carrying the bytes (protocol/transfer.ts).
   */
  private async uploadLarge(raw: unknown, r: Reply<unknown>, receivedAt: number): Promise<Reply<unknown>> {
    const grant = UploadGrantSchema.safeParse((raw as { upload?: unknown } | null)?.upload);
    if (!r.ok || !grant.success) return r;
    const data = r.data as Record<string, unknown>;
    const field = data.masked instanceof Uint8Array ? 'masked' : 'weights';
    const payload = data[field];
    if (!(payload instanceof Uint8Array) || payload.byteLength <= grant.data.chunkBytes) return r;
    try {
      const started = Date.now();
      const report = await upload(this.link, grant.data, payload, receivedAt);
      this.stats.uploadResumes.push(...report.resumedAt);
      this.opts.log.info({ bytes: report.bytes, chunks: report.chunks, resumedAt: report.resumedAt, ms: Date.now() - started }, 'upload done');
      const { [field]: _sent, ...rest } = data;
      return { ok: true, data: { ...rest, upload: grant.data.transferId } };
    } catch (err) {
      const error = toWireError(err);
      this.opts.log.warn({ code: error.code, reason: error.message }, 'upload failed');
      return { ok: false, error };
    }
  }

  /** Answers a task whose connection is gone, on the next one, while the coordinator may still wait for it. */
  private async replyLate(raw: unknown, r: Reply<unknown>, receivedAt: number): Promise<void> {
    const t = raw as { taskId?: unknown; upload?: unknown; weightsRef?: { timeoutMs?: unknown } } | null;
    const grant = UploadGrantSchema.safeParse(t?.upload);
    const timeoutMs = grant.success ? grant.data.timeoutMs : typeof t?.weightsRef?.timeoutMs === 'number' ? t.weightsRef.timeoutMs : 0;
    // Without a transfer the coordinator failed the task when the connection went: nobody waits for this reply.
    if (typeof t?.taskId !== 'string' || timeoutMs <= 0) return;
    const deadline = receivedAt + timeoutMs;
    while (Date.now() < deadline) {
      const socket = await this.connectedSocket(deadline).catch(() => undefined);
      if (!socket) break;
      const ack = await socket.timeout(30_000).emitWithAck('task-result', { taskId: t.taskId, reply: r }).catch(() => undefined) as Reply<unknown> | undefined;
      if (ack?.ok) {
        this.opts.log.info({ taskId: t.taskId }, 'task reply sent after reconnecting');
        return;
      }
      if (ack && ack.error.code !== 'COHORT_ERR_AUTH_CHALLENGE_EXPIRED') {
        this.opts.log.warn({ taskId: t.taskId, code: ack.error.code, reason: ack.error.message }, 'task reply refused after reconnecting');
        return;
      }
      await new Promise((res) => setTimeout(res, 100));
    }
    this.opts.log.warn({ taskId: t.taskId }, 'task reply not delivered: the coordinator was not back before the deadline');
  }

  /**
   * The global model a train or evaluate task carries, pulled in chunks when it is too large for one message. Its
   * size must be exactly the frame of the model the approved manifest describes, so nothing larger is allocated.
   */
  private async globalWeights(task: Extract<Task, { kind: 'train' | 'evaluate' }>, shapes: number[][], receivedAt: number): Promise<Uint8Array> {
    const ref: DownloadRef | undefined = task.weightsRef;
    if (!ref) return task.weights;
    if (task.weights.byteLength !== 0) throw new CohortError('COHORT_ERR_TRANSFER_MALFORMED', 'a task carries its weights both inline and as a download');
    const expected = frameBytes(shapes);
    if (ref.bytes !== expected) throw new CohortError('COHORT_ERR_TRANSFER_TOO_LARGE', `the model download declares ${ref.bytes} bytes; this model's frame has ${expected}`);
    const started = Date.now();
    const { bytes, report } = await download(this.link, ref, receivedAt);
    this.stats.downloadResumes.push(...report.resumedAt);
    this.opts.log.info({ bytes: report.bytes, chunks: report.chunks, resumedAt: report.resumedAt, ms: Date.now() - started }, 'download done');
    return bytes;
  }

  private async handshake(socket: ClientSocket): Promise<AuthAck> {
    const { config, identity } = this.opts;
    const clientNonce = randomBytes(32).toString('base64');
    const hello = await socket.timeout(15_000).emitWithAck('hello', {
      protocolVersion: PROTOCOL_VERSION, siteName: config.name, publicKey: publicKeyB64(identity), agentVersion: '0.1.0', clientNonce,
    }) as Reply<HelloAck>;
    if (!hello.ok) throw new CohortError(hello.error.code, hello.error.message);
    const { nonce, coordinatorId, coordinatorPublicKey, coordinatorSignature } = hello.data.challenge;
    if (config.coordinatorPublicKey) {
      // Pinned at enrollment: the coordinator must prove it holds that key by signing our fresh nonce.
      const proof = coordinatorProofMessage(coordinatorId, config.name, clientNonce, nonce);
      const ok = coordinatorPublicKey === config.coordinatorPublicKey && coordinatorSignature !== undefined
        && nacl.sign.detached.verify(proof, fromB64(coordinatorSignature), fromB64(config.coordinatorPublicKey));
      if (!ok) throw new CohortError('COHORT_ERR_AUTH_COORDINATOR_MISMATCH', 'the coordinator could not prove the identity pinned at enrollment');
    }
    const signature = nacl.sign.detached(challengeMessage(nonce, config.name, coordinatorId), identity.secretKey);
    const auth = await socket.timeout(15_000).emitWithAck('auth', { nonce, signature: Buffer.from(signature).toString('base64') }) as Reply<AuthAck>;
    if (!auth.ok) throw new CohortError(auth.error.code, auth.error.message);
    return auth.data;
  }

  async stop(): Promise<void> {
    this.socket?.io.reconnection(false);
    this.socket?.disconnect();
    await this.queue.catch(() => undefined);
  }

  /** The source for a task's dataset, honouring the study's declarations (cached per dataset and options). */
  private source(dataset: string, opts: SourceOptions): DataSource {
    const key = `${dataset}|${JSON.stringify(opts)}`;
    let s = this.sources.get(key);
    if (!s && this.opts.sourceFor) {
      s = this.opts.sourceFor(dataset, opts);
      this.sources.set(key, s);
    }
    if (!s) {
      const cfg = this.opts.config.datasets.find((d) => d.id === dataset);
      if (!cfg) throw new CohortError('COHORT_ERR_SITE_DATASET_UNKNOWN', `this site has no dataset "${dataset}"`);
      s = openDataSource(this.opts.dir, cfg, opts);
      this.sources.set(key, s);
    }
    return s;
  }

  /**
   * Runs one task; any failure becomes a coded reply. Whatever the reply, it is written to the ledger before it
   * leaves the site.
   */
  async handle(raw: unknown, ctx: { receivedAt?: number } = {}): Promise<Reply<unknown>> {
    const { log } = this.opts;
    this.stats.tasks++;
    let task: Task | undefined;
    let manifest: StudyManifest | undefined;
    try {
      task = parseMessage(TaskSchema, raw, 'task');
      manifest = this.authorize(task);
      const started = Date.now();
      const data = await this.run(task, manifest, ctx.receivedAt ?? started);
      this.record(task, manifest, 'sent', data);
      log.info({ task: task.kind, studyId: task.studyId, round: task.round, ms: Date.now() - started }, 'task done');
      return { ok: true, data };
    } catch (err) {
      this.stats.refused++;
      const error: WireError = err instanceof CohortError ? err.toWire() : { code: 'COHORT_ERR_SITE_TRAINING_FAILED', message: 'local task failed' };
      log.warn({ code: error.code, reason: error.message, ...(task ? { studyId: task.studyId, round: task.round, task: task.kind } : {}), ...(err instanceof CohortError ? {} : { err: String(err) }) }, 'task refused');
      if (task) this.record(task, manifest, 'refused', error, error.code);
      return { ok: false, error };
    }
  }

  private record(task: Task, manifest: StudyManifest | undefined, outcome: 'sent' | 'refused', payload: unknown, code?: string): void {
    const epsilonSpent = this.dp.spent(task.studyId, task.dataset, manifest);
    this.ledger?.append({
      studyId: task.studyId, round: task.round, taskId: task.taskId, kind: task.kind, outcome, bytes: wireBytes(payload),
      manifestHash: task.manifest.hash, ...(code ? { code } : {}),
      ...(manifest ? { privacy: { ...privacyOf(task, manifest), dp: manifest.privacy.dp?.mode ?? 'none', delta: this.opts.config.policy.delta } } : {}),
      ...(epsilonSpent !== undefined ? { epsilonSpent } : {}),
    });
  }

  /**
   * The hospital's gate: the manifest must hash to what the task claims, carry a valid researcher signature (or
   * the policy must accept unsigned ones), pass the policy, and be approved for exactly this hash (or come from a
   * researcher the policy auto-approves). The task must match the approved manifest.
   */
  private authorize(task: Task): StudyManifest {
    const policy = this.opts.config.policy;
    const m = task.manifest;
    if (hashOf(m.raw) !== m.hash) throw new CohortError('COHORT_ERR_SITE_MANIFEST_SIGNATURE', 'manifest does not match its hash');
    if (m.signature !== undefined || m.researcherPublicKey !== undefined) {
      if (!m.signature || !m.researcherPublicKey || !verifyManifest(m.raw, m.signature, m.researcherPublicKey)) {
        throw new CohortError('COHORT_ERR_SITE_MANIFEST_SIGNATURE', 'the researcher signature on this manifest does not verify');
      }
    } else if (policy.requireSignedManifests) {
      throw new CohortError('COHORT_ERR_POLICY_UNSIGNED_MANIFEST', 'this site only accepts studies signed by a researcher key');
    }
    const manifest = parseMessage(StudyManifestSchema, m.raw, 'study manifest');
    const offer = { studyId: task.studyId, name: manifest.name, manifestHash: m.hash, manifest: m.raw, ...(m.researcherPublicKey ? { researcherPublicKey: m.researcherPublicKey } : {}) };
    try {
      checkManifest(policy, manifest);
      this.dp.checkManifest(manifest);
      checkTask(policy, manifest, task);
      const decision = this.approvals.decisionFor(task.studyId, m.hash);
      if (decision?.decision === 'rejected') throw new CohortError('COHORT_ERR_SITE_STUDY_REJECTED', decision.reason ?? 'rejected by the site');
      const auto = m.signature !== undefined && policy.autoApprove.some((r) => r.publicKey === m.researcherPublicKey);
      if (decision?.decision !== 'approved' && !auto) {
        throw new CohortError('COHORT_ERR_SITE_STUDY_NOT_APPROVED', `study ${task.studyId} awaits approval at this site (cohort site approve ${task.studyId})`);
      }
      if (task.kind === 'describe') this.approvals.see(offer);
      return manifest;
    } catch (err) {
      if (task.kind === 'describe') this.approvals.see(offer, err instanceof CohortError ? err.code : 'COHORT_ERR_SERVER_INTERNAL');
      throw err;
    }
  }

  private async run(task: Task, manifest: StudyManifest, receivedAt: number): Promise<DescribeResult | StatsResult | TrainResult | EvaluateResult | MaskedTrainResult | SecAggAdvertiseResult | SecAggShareResult | SecAggUnmaskResult> {
    if (task.kind === 'secagg-advertise' || task.kind === 'secagg-share' || task.kind === 'secagg-unmask') return this.secureAggregationStage(task, manifest);
    const src = this.source(task.dataset, sourceOptionsFor(task, manifest));
    if (task.kind === 'describe') return { schema: schemaReport(await src.describe()) };
    if (task.kind === 'stats') return statsReply(src, this.opts.config.policy.minCellCount);
    const shapes = weightShapes(task.model);
    const global = decodeTensors(await this.globalWeights(task, shapes, receivedAt), { expectShapes: shapes });
    if (task.kind === 'train') {
      // The approved manifest decides whether an update may leave in the clear; the coordinator cannot change that.
      const secure = secureAggregationSettings(manifest.privacy.secureAggregation) !== null;
      if (secure && !task.secagg) throw new CohortError('COHORT_ERR_SITE_TASK_MISMATCH', 'the approved manifest requires secure aggregation; this task asks for a plaintext update');
      if (!secure && task.secagg) throw new CohortError('COHORT_ERR_SITE_TASK_MISMATCH', 'the approved manifest does not use secure aggregation');
      const started = Date.now();
      const data = await taskData(src, 'train', task, manifest);
      // Differential privacy: the site's budget is checked and charged before any training (refusal: nothing else leaves).
      const dp = this.dp.beforeTrain(task, manifest, data.n, task.secagg ? this.secagg.distributedPlan(task.secagg.sessionId) : undefined);
      if (dp?.distributed === 'record' && task.secagg) {
        // Record-distributed DP: no local training. Every record's clipped gradient at the global model is rounded,
        // summed and noised by the encoder; the coordinator takes the step. Neither loss nor update leaves in the clear.
        const enc = this.secagg.recordEncoder(task.secagg.sessionId);
        const out = await clippedRecordGradients(task.model, global, data, dp.settings.clip, (g) => enc.add(g));
        return {
          masked: this.secagg.mask(task.studyId, task.round, task.secagg, enc.finish()), backend: out.backend, durationMs: Date.now() - started,
          privacy: dp.report,
        };
      }
      const fit = { epochs: task.localEpochs, batchSize: task.batchSize, optimizer: task.optimizer, learningRate: task.learningRate };
      const out = dp?.record
        // Under record-level DP neither the training loss nor the exact count may leave: both are functions of the
        // data that no noise protects. The count goes out rounded, as in the schema report.
        ? { ...(await trainDpSgd(task.model, global, data, { ...fit, clip: dp.settings.clip, noiseMultiplier: dp.record.noiseMultiplier, microbatch: dp.settings.microbatch, averageIterates: dp.settings.averageIterates, ...this.dpUniform(task) })), trainLoss: 0 }
        : await train(task.model, global, data, { ...fit, seed: task.seed + task.round, ...(task.proximalMu ? { proximalMu: task.proximalMu } : {}) });
      if (!Number.isFinite(out.trainLoss)) throw new CohortError('COHORT_ERR_SITE_TRAINING_FAILED', 'training diverged (loss is not finite)');
      const released = dp ? this.dp.release(dp, global, out.weights) : undefined;
      const numExamples = dp?.record ? roundCount(out.numExamples) : out.numExamples;
      if (task.secagg) {
        // Only the masked vector leaves: clipped, weighted, quantized delta plus masks (site-agent/mods/secagg.ts).
        const lanes = this.secagg.trainingLanes(task.secagg.sessionId, flatDelta(released?.weights ?? out.weights, global), out.trainLoss, numExamples);
        return {
          masked: this.secagg.mask(task.studyId, task.round, task.secagg, lanes), backend: out.backend, durationMs: Date.now() - started,
          ...(released ? { privacy: released.privacy } : {}),
        };
      }
      return {
        weights: encodeTensors(released?.weights ?? out.weights), numExamples,
        trainLoss: out.trainLoss, backend: out.backend, durationMs: Date.now() - started, ...(released ? { privacy: released.privacy } : {}),
      };
    }
    const holdout = await taskData(src, 'holdout', task, manifest);
    // The site's own minimum cell count, declared with the counts so the coordinator honours it for any
    // per-site value it reports.
    const minCellCount = this.opts.config.policy.minCellCount;
    return { counts: { ...await evaluate(task.model, global, holdout, { minCellCount }), minCellCount } };
  }

  /** DP-SGD's uniform source: the CSPRNG unless a simulation injected seeded entropy. */
  private dpUniform(task: TrainTask): { uniform?: Uniform } {
    const e = this.opts.entropy;
    return e ? { uniform: keyedUniform(e(`dp-sgd|${task.studyId}|${task.round}|${this.opts.config.name}|${task.secagg?.sessionId ?? ''}`)) } : {};
  }

  /** Stages 1, 2 and 4 of secure aggregation; the site policy's minimum travels with them. */
  private secureAggregationStage(task: Extract<Task, { kind: 'secagg-advertise' | 'secagg-share' | 'secagg-unmask' }>, manifest: StudyManifest): SecAggAdvertiseResult | SecAggShareResult | SecAggUnmaskResult {
    const settings = secureAggregationSettings(manifest.privacy.secureAggregation);
    if (!settings) throw new CohortError('COHORT_ERR_SITE_TASK_MISMATCH', 'the approved manifest does not use secure aggregation');
    if (!this.siteId) throw new CohortError('COHORT_ERR_SECAGG_CONFIG', 'the site has no id before it authenticates');
    const id: SecAggIdentity = { siteId: this.siteId, secretKey: this.opts.identity.secretKey, publicKeyB64: publicKeyB64(this.opts.identity) };
    const terms = { settings, manifestHash: task.manifest.hash, minSitesPerAggregate: this.opts.config.policy.minSitesPerAggregate };
    switch (task.kind) {
      case 'secagg-advertise': {
        const dp = manifest.privacy.dp;
        const level = distributedLevel(dp);
        if (!dp || !level) return this.secagg.advertise(task, id, terms);
        // Distributed DP: the site plans the round's noise itself from what it approved and this session's shape
        // (advertise checks the shape against the manifest), and refuses here, before any key leaves, when the
        // round would take it past its budget (its cost does not depend on the data: every record, every round).
        const s = task.session;
        const plan = distributedRoundPlan(dp, manifest.training.rounds, { dim: s.vectorLength - 2, sites: s.roster.length, threshold: s.threshold, bits: s.quantizationBits, maxWeight: s.maxWeight });
        this.dp.checkBudget(task.studyId, task.dataset, task.round, level, plan.event);
        return this.secagg.advertise(task, id, { ...terms, distributed: plan });
      }
      case 'secagg-share':
        return this.secagg.share(task, id);
      case 'secagg-unmask':
        return this.secagg.unmask(task, terms);
    }
  }
}

/** The privacy settings a ledger entry records: secure aggregation's parameters and session, and whether masked. */
function privacyOf(task: Task, manifest: StudyManifest): Record<string, unknown> {
  const s = secureAggregationSettings(manifest.privacy.secureAggregation);
  const sessionId = task.kind === 'secagg-advertise' ? task.session.sessionId
    : task.kind === 'secagg-share' || task.kind === 'secagg-unmask' ? task.sessionId
      : task.kind === 'train' ? task.secagg?.sessionId : undefined;
  return {
    secureAggregation: s ? { threshold: s.threshold, clip: s.clip, quantizationBits: s.quantizationBits, neighbours: s.neighbours, ...(sessionId ? { sessionId } : {}) } : false,
    ...(task.kind === 'train' ? { masked: Boolean(task.secagg) } : {}),
  };
}
