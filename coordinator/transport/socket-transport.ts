/**
 * socket.io transport, namespace `/site`. Sites dial out to us; each connection must complete a signed challenge
 * (hello -> challenge -> auth) before it may receive tasks. Tasks go out as `task` events with acks, so a reply is
 * bound to its request by socket.io itself and cannot be replayed into another task.
 *
 * Payloads larger than one chunk travel as chunked transfers (protocol/transfer.ts, transfers.ts) to sites that
 * speak protocol 2.1: the global model is pulled in chunks, a large reply is pushed in chunks, and a task with a
 * transfer under way outlives a dropped connection until its deadline, so the site can reconnect, continue from
 * the last acknowledged chunk and answer on its new connection (`task-result`).
 */
import { randomBytes } from 'node:crypto';
import type { Namespace, Server, Socket } from 'socket.io';
import nacl from 'tweetnacl';
import type { Logger } from 'pino';
import { CohortError, toWireError, type WireError } from '../../protocol/errors.ts';
import {
  AuthSchema, HelloSchema, challengeMessage, parseMessage, type Hello, type Reply, type Task,
} from '../../protocol/messages.ts';
import { SITE_NAMESPACE, type AuthAck, type ClientToServerEvents, type HelloAck, type ServerToClientEvents } from '../../protocol/events.ts';
import { PROTOCOL_VERSION, isCompatibleProtocol, supportsChunkedTransfers } from '../../protocol/version.ts';
import {
  DEFAULT_CHUNK_BYTES, DownloadChunkSchema, TaskResultSchema, TRANSFER_EVENTS, UploadChunkSchema, UploadOpenSchema,
} from '../../protocol/transfer.ts';
import { TransferRegistry } from './transfers.ts';
import { b64, coordinatorProofMessage, fromB64 } from '../../protocol/signing.ts';
import type { CoordinatorIdentity } from '../identity.ts';
import type { Store } from '../store/store.ts';
import type { OnlineSite, SendOptions, Transport } from './transport.ts';
import type { AuthRateLimiter } from '../auth.ts';

const CHALLENGE_TTL_MS = 30_000;
const AUTH_DEADLINE_MS = 15_000;

type SiteSocket = Socket<ClientToServerEvents, ServerToClientEvents>;

interface Pending {
  hello: Hello;
  nonce: string;
  issuedAt: number;
}

export interface SocketTransportOptions {
  /**
   * 'token' (default): only sites enrolled with a one-time token (POST /api/enroll) may connect.
   * 'open': an unknown site name is registered on first contact (trust on first use), for development.
   */
  enrollment: 'open' | 'token';
  identity: CoordinatorIdentity;
  /** Failed handshakes count here per address; past the limit, connections are refused until the window passes. */
  limiter?: AuthRateLimiter;
  /**
   * Several coordinator replicas share sites through socket.io's Redis adapter: a site may be connected to any
   * replica, and a task for it is routed through the adapter (see docs/deployment.md).
   */
  cluster?: boolean;
  /**
   * Chunk size of chunked transfers, and the size above which a payload is chunked rather than sent in one message
   * (default 4 MiB; keep it well below the server's message limit).
   */
  chunkBytes?: number;
}

/** Every authenticated site socket joins its own room, so a task reaches it on whichever replica it is. */
const siteRoom = (siteId: string) => `site:${siteId}`;
/** Replicas tell each other that their sites changed; each then refreshes its view of remote sites. */
const SITES_CHANGED = 'cohort:sites-changed';
const REMOTE_REFRESH_MS = 3_000;

interface SiteSocketData {
  siteId?: string;
  siteName?: string;
  connectedAt?: string;
}

export class SocketTransport implements Transport {
  private readonly sockets = new Map<string, { socket: SiteSocket; site: OnlineSite; chunked: boolean }>();
  /** Tasks awaiting a reply, by site and task id: the ack, or a `task-result` after a reconnect, settles them. */
  private readonly pending = new Map<string, { siteId: string; taskId: string; settle: (raw: unknown) => void }>();
  readonly transfers = new TransferRegistry();
  private readonly chunkBytes: number;
  private readonly listeners = new Set<() => void>();
  private readonly ns: Namespace<ClientToServerEvents, ServerToClientEvents>;
  /** Sites connected to other replicas (cluster mode), by site id. */
  private remote = new Map<string, OnlineSite>();
  /** Tasks in flight to sites on other replicas, failed at once if the site leaves. */
  private readonly remotePending = new Map<string, Set<(r: Reply<unknown>) => void>>();
  private refreshing: Promise<void> | undefined;
  private refreshAgain = false;
  private timer: NodeJS.Timeout | undefined;

  constructor(io: Server, private readonly store: Store, private readonly log: Logger, private readonly opts: SocketTransportOptions) {
    this.ns = io.of(SITE_NAMESPACE) as unknown as Namespace<ClientToServerEvents, ServerToClientEvents>;
    this.chunkBytes = opts.chunkBytes ?? DEFAULT_CHUNK_BYTES;
    const limiter = opts.limiter;
    if (limiter) {
      // Refuse at connection time an address that keeps failing handshakes: no challenge is even issued.
      this.ns.use((socket, next) => (limiter.blocked(socket.handshake.address) ? next(new Error('COHORT_ERR_AUTH_RATE_LIMITED')) : next()));
    }
    this.ns.on('connection', (socket) => this.onConnection(socket));
    if (opts.cluster) {
      (this.ns as unknown as { on(e: string, fn: () => void): void }).on(SITES_CHANGED, () => void this.refreshRemote());
      this.timer = setInterval(() => void this.refreshRemote(), REMOTE_REFRESH_MS);
      this.timer.unref();
      void this.refreshRemote();
    }
  }

  onlineSites(): OnlineSite[] {
    const local = [...this.sockets.values()].map((s) => ({ ...s.site }));
    if (!this.opts.cluster) return local;
    const ids = new Set(local.map((s) => s.id));
    return [...local, ...[...this.remote.values()].filter((s) => !ids.has(s.id)).map((s) => ({ ...s }))];
  }

  /** Stops the cluster refresh timer (shutdown). */
  close(): void {
    clearInterval(this.timer);
  }

  private announce(): void {
    if (this.opts.cluster) (this.ns as unknown as { serverSideEmit(e: string): void }).serverSideEmit(SITES_CHANGED);
  }

  /** Asks every replica which sites it holds (socket.io's fetchSockets through the adapter). */
  private refreshRemote(): Promise<void> {
    if (this.refreshing) {
      this.refreshAgain = true;
      return this.refreshing;
    }
    this.refreshing = (async () => {
      do {
        this.refreshAgain = false;
        try {
          const all = await this.ns.fetchSockets();
          const localIds = new Set([...this.sockets.values()].map((e) => e.socket.id));
          const next = new Map<string, OnlineSite>();
          for (const r of all) {
            const d = r.data as SiteSocketData;
            if (localIds.has(r.id) || !d.siteId || !d.siteName) continue;
            next.set(d.siteId, { id: d.siteId, name: d.siteName, connectedAt: d.connectedAt ?? '' });
          }
          const before = [...this.remote.keys()].sort().join(',');
          this.remote = next;
          for (const [siteId, waiters] of this.remotePending) {
            if (!next.has(siteId) && !this.sockets.has(siteId)) {
              for (const w of waiters) w({ ok: false, error: { code: 'COHORT_ERR_PROTOCOL_DISCONNECTED', message: 'site disconnected during the task' } });
            }
          }
          if ([...next.keys()].sort().join(',') !== before) this.changed();
        } catch (err) {
          this.log.warn({ reason: (err as Error).message }, 'cannot list sites on other replicas');
        }
      } while (this.refreshAgain);
    })().finally(() => {
      this.refreshing = undefined;
    });
    return this.refreshing;
  }

  onChange(listener: () => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  private changed(): void {
    for (const l of this.listeners) l();
  }

  async send(siteId: string, task: Task, timeoutMs: number, opts: SendOptions = {}): Promise<Reply<unknown>> {
    const entry = this.sockets.get(siteId);
    if (!entry && this.opts.cluster && this.remote.has(siteId)) return this.sendRemote(siteId, task, timeoutMs);
    if (!entry) return { ok: false, error: { code: 'COHORT_ERR_PROTOCOL_DISCONNECTED', message: 'site is not connected' } };
    const { socket } = entry;
    let wire: Task = task;
    if (entry.chunked && (task.kind === 'train' || task.kind === 'evaluate')) {
      if (task.weights.byteLength > this.chunkBytes) {
        wire = { ...wire, weights: new Uint8Array(0), weightsRef: this.transfers.offerDownload(siteId, task.taskId, task.weights, this.chunkBytes, timeoutMs) } as Task;
      }
      if (task.kind === 'train') {
        // A reply is at most the model's frame (a masked vector is its values plus two lanes: smaller still).
        const maxBytes = opts.upload?.maxBytes ?? task.weights.byteLength + 64;
        wire = { ...wire, upload: this.transfers.grantUpload(siteId, task.taskId, maxBytes, this.chunkBytes, timeoutMs, opts.upload?.sink) } as Task;
      }
    }
    const key = `${siteId}\n${task.taskId}`;
    return new Promise<Reply<unknown>>((resolve) => {
      let done = false;
      const finish = (r: Reply<unknown>) => {
        if (done) return;
        done = true;
        clearTimeout(timer);
        socket.off('disconnect', onDisconnect);
        if (this.pending.get(key)?.settle === settle) this.pending.delete(key);
        this.transfers.release(task.taskId);
        resolve(r);
      };
      const settle = (raw: unknown) => finish(this.withUpload(task, raw, opts));
      const onDisconnect = () => {
        // A transfer under way is worth waiting for: the site reconnects and continues where it stopped.
        if (this.transfers.resumable(task.taskId)) {
          this.log.info({ siteId, taskId: task.taskId, kind: task.kind }, 'site disconnected mid-transfer; waiting for it to resume');
          return;
        }
        finish({ ok: false, error: { code: 'COHORT_ERR_PROTOCOL_DISCONNECTED', message: 'site disconnected during the task' } });
      };
      const timer = setTimeout(() => finish({ ok: false, error: { code: 'COHORT_ERR_PROTOCOL_TIMEOUT', message: `no reply within ${timeoutMs} ms` } }), timeoutMs);
      this.pending.set(key, { siteId, taskId: task.taskId, settle });
      socket.once('disconnect', onDisconnect);
      socket.emit('task', wire, (reply: Reply<unknown>) => settle(reply));
    });
  }

  /**
   * A reply that names an upload (`upload: transferId`) gets the upload's bytes in its binary field, or an empty
   * field when a sink took them; the upload must be this task's, complete and verified. A reply that sent chunks
   * and then answered otherwise is refused: the sink may already hold part of it.
   */
  private withUpload(task: Task, raw: unknown, opts: SendOptions): Reply<unknown> {
    const reply = raw as { ok?: unknown; data?: unknown };
    const up = this.transfers.uploadOf(task.taskId);
    const field = task.kind === 'train' && task.secagg ? 'masked' : 'weights';
    if (reply && typeof reply === 'object' && reply.ok === true && reply.data && typeof reply.data === 'object' && 'upload' in reply.data) {
      const { upload, ...data } = reply.data as Record<string, unknown>;
      try {
        if (typeof upload !== 'string') throw new CohortError('COHORT_ERR_TRANSFER_MALFORMED', 'upload must name a transfer id');
        if (data[field] !== undefined) throw new CohortError('COHORT_ERR_TRANSFER_MALFORMED', `the reply carries ${field} both inline and as an upload`);
        const bytes = this.transfers.complete(task.taskId, upload);
        return { ok: true, data: { ...data, [field]: bytes ?? new Uint8Array(0) } };
      } catch (err) {
        return { ok: false, error: toWireError(err) };
      }
    }
    if (up && up.received > 0 && opts.upload?.sink) {
      return { ok: false, error: up.failed ?? { code: 'COHORT_ERR_TRANSFER_INCOMPLETE', message: `the site answered after ${up.received} bytes of its upload without completing it` } };
    }
    return raw as Reply<unknown>;
  }

  /** Transfer counters (bytes, chunks, reassembly buffers, resumes), for tests and benchmarks. */
  transferStats() {
    return this.transfers.stats;
  }

  /** A task to a site held by another replica: broadcast to the site's room through the adapter, one ack back. */
  private sendRemote(siteId: string, task: Task, timeoutMs: number): Promise<Reply<unknown>> {
    return new Promise<Reply<unknown>>((resolve) => {
      let done = false;
      const waiters = this.remotePending.get(siteId) ?? new Set();
      this.remotePending.set(siteId, waiters);
      const finish = (r: Reply<unknown>) => {
        if (done) return;
        done = true;
        waiters.delete(finish);
        if (waiters.size === 0) this.remotePending.delete(siteId);
        resolve(r);
      };
      waiters.add(finish);
      const room = this.ns.to(siteRoom(siteId)).timeout(timeoutMs) as unknown as {
        emit(ev: 'task', task: Task, cb: (err: Error | null, replies: Reply<unknown>[]) => void): void;
      };
      room.emit('task', task, (err, replies) => {
        if (replies?.[0]) finish(replies[0]);
        else if (err) finish({ ok: false, error: { code: 'COHORT_ERR_PROTOCOL_TIMEOUT', message: `no reply within ${timeoutMs} ms` } });
        else {
          // No replica holds the site any more (its replica died, say): forget it now rather than at the next
          // refresh, so the runner waits for it to come back instead of sending into the void again.
          if (this.remote.delete(siteId)) this.changed();
          void this.refreshRemote();
          finish({ ok: false, error: { code: 'COHORT_ERR_PROTOCOL_DISCONNECTED', message: 'site is not connected' } });
        }
      });
    });
  }

  /** Cuts a site off at once (revocation): its socket is closed and it cannot authenticate again. */
  disconnectSite(siteId: string): boolean {
    const entry = this.sockets.get(siteId);
    const remote = this.opts.cluster && this.remote.has(siteId);
    // On every replica: the site's room spans the cluster through the adapter.
    if (this.opts.cluster) this.ns.in(siteRoom(siteId)).disconnectSockets(true);
    if (!entry) return Boolean(remote);
    entry.socket.disconnect(true);
    return true;
  }

  private onConnection(socket: SiteSocket): void {
    let pending: Pending | undefined;
    let siteId: string | undefined;
    const remote = socket.handshake.address;
    const deadline = setTimeout(() => {
      if (!siteId) {
        this.log.warn({ code: 'COHORT_ERR_AUTH_CHALLENGE_EXPIRED', remote }, 'site did not authenticate in time');
        socket.disconnect(true);
      }
    }, AUTH_DEADLINE_MS);
    deadline.unref();

    const refuse = (ack: unknown, err: unknown, disconnect: boolean) => {
      const wire: WireError = toWireError(err);
      // Every refused handshake counts towards the address's limit, as failed REST authentications do.
      this.opts.limiter?.fail(remote);
      this.log.warn({ code: wire.code, remote, reason: wire.message }, 'site handshake refused');
      if (typeof ack === 'function') ack({ ok: false, error: wire });
      if (disconnect) setTimeout(() => socket.disconnect(true), 50);
    };

    socket.onAny((event: unknown, ...args: unknown[]) => {
      if (event !== 'hello' && event !== 'auth' && !(TRANSFER_EVENTS as readonly unknown[]).includes(event)) {
        const name = typeof event === 'string' ? event.slice(0, 64) : typeof event;
        this.log.warn({ code: 'COHORT_ERR_PROTOCOL_UNKNOWN_EVENT', remote, event: name }, 'unknown event from site');
        // A sender that asked for an answer gets a coded one, as for every other refusal.
        const ack = args.at(-1);
        if (typeof ack === 'function') ack({ ok: false, error: { code: 'COHORT_ERR_PROTOCOL_UNKNOWN_EVENT', message: `unknown event ${name}` } });
      }
    });

    socket.on('hello', (msg, ack) => {
      try {
        if (this.opts.limiter?.blocked(remote)) {
          setTimeout(() => socket.disconnect(true), 50);
          throw new CohortError('COHORT_ERR_AUTH_RATE_LIMITED', 'too many failed handshakes from this address; try again in a minute');
        }
        if (siteId) throw new CohortError('COHORT_ERR_PROTOCOL_REPLAY', 'already authenticated');
        const hello = parseMessage(HelloSchema, msg, 'hello');
        if (!isCompatibleProtocol(hello.protocolVersion)) {
          throw new CohortError('COHORT_ERR_PROTOCOL_VERSION', `protocol ${hello.protocolVersion} not supported (coordinator speaks ${PROTOCOL_VERSION})`);
        }
        if (fromB64(hello.publicKey).length !== nacl.sign.publicKeyLength) {
          throw new CohortError('COHORT_ERR_PROTOCOL_MALFORMED', 'public key must be 32 bytes');
        }
        pending = { hello, nonce: b64(randomBytes(32)), issuedAt: Date.now() };
        const { identity } = this.opts;
        const coordinatorId = this.store.coordinatorId;
        const reply: HelloAck = {
          challenge: {
            nonce: pending.nonce, coordinatorId, protocolVersion: PROTOCOL_VERSION, coordinatorPublicKey: identity.publicKeyB64,
            ...(hello.clientNonce ? { coordinatorSignature: b64(nacl.sign.detached(coordinatorProofMessage(coordinatorId, hello.siteName, hello.clientNonce, pending.nonce), identity.secretKey)) } : {}),
          },
        };
        if (typeof ack === 'function') ack({ ok: true, data: reply });
      } catch (err) {
        refuse(ack, err, false);
      }
    });

    socket.on('auth', async (msg, ack) => {
      try {
        const auth = parseMessage(AuthSchema, msg, 'auth');
        const p = pending;
        // A nonce answers one challenge once: clear it before any await.
        pending = undefined;
        if (!p || p.nonce !== auth.nonce || Date.now() - p.issuedAt > CHALLENGE_TTL_MS) {
          throw new CohortError('COHORT_ERR_AUTH_CHALLENGE_EXPIRED');
        }
        // Another replica may have enrolled or revoked this site a moment ago.
        await this.store.sync();
        const pub = fromB64(p.hello.publicKey);
        const ok = nacl.sign.detached.verify(challengeMessage(p.nonce, p.hello.siteName, this.store.coordinatorId), fromB64(auth.signature), pub);
        if (!ok) throw new CohortError('COHORT_ERR_AUTH_BAD_SIGNATURE', undefined, { site: p.hello.siteName });
        let record = this.store.getSiteByName(p.hello.siteName);
        if (record?.revokedAt) throw new CohortError('COHORT_ERR_AUTH_SITE_REVOKED', `site ${record.name} was revoked`, { site: record.name });
        if (record && record.publicKey !== p.hello.publicKey) {
          throw new CohortError('COHORT_ERR_AUTH_KEY_MISMATCH', `site ${p.hello.siteName} is registered with another key`, { site: p.hello.siteName });
        }
        if (!record) {
          if (this.opts.enrollment !== 'open') throw new CohortError('COHORT_ERR_AUTH_UNKNOWN_SITE', undefined, { site: p.hello.siteName });
          const now = new Date().toISOString();
          record = { id: `site-${b64(pub.subarray(0, 9)).replace(/[+/=]/g, '').toLowerCase()}`, name: p.hello.siteName, publicKey: p.hello.publicKey, registeredAt: now, lastSeenAt: now };
          await this.store.addSite(record);
          this.log.info({ site: record.name, siteId: record.id }, 'site registered on first contact');
        } else {
          await this.store.touchSite(record.id);
        }
        siteId = record.id;
        clearTimeout(deadline);
        const previous = this.sockets.get(siteId);
        if (previous && previous.socket.id !== socket.id) previous.socket.disconnect(true);
        const site = { id: siteId, name: record.name, connectedAt: new Date().toISOString() };
        if (this.opts.cluster) {
          // One connection per site across the cluster: the newest wins, as it does on one replica.
          const elsewhere = await this.ns.in(siteRoom(siteId)).fetchSockets().catch(() => []);
          for (const o of elsewhere) if (o.id !== socket.id) o.disconnect(true);
        }
        socket.data = { siteId, siteName: record.name, connectedAt: site.connectedAt } satisfies SiteSocketData;
        void socket.join(siteRoom(siteId));
        this.sockets.set(siteId, { socket, site, chunked: supportsChunkedTransfers(p.hello.protocolVersion) });
        this.log.info({ site: record.name, siteId, remote }, 'site online');
        const reply: AuthAck = { siteId, siteName: record.name };
        if (typeof ack === 'function') ack({ ok: true, data: reply });
        this.changed();
        this.announce();
      } catch (err) {
        refuse(ack, err, true);
      }
    });

    // Chunked transfers and late replies: only on an authenticated connection, only for this site's own tasks.
    const transferEvent = <T>(event: (typeof TRANSFER_EVENTS)[number], handle: (site: string, msg: unknown) => T | Promise<T>) => {
      (socket as unknown as { on(e: string, fn: (msg: unknown, ack: unknown) => void): void }).on(event, async (msg, ack) => {
        try {
          if (!siteId) throw new CohortError('COHORT_ERR_AUTH_CHALLENGE_EXPIRED', 'not authenticated');
          const data = await handle(siteId, msg);
          if (typeof ack === 'function') ack({ ok: true, data });
        } catch (err) {
          const wire = toWireError(err);
          this.log.warn({ code: wire.code, siteId, remote, event, reason: wire.message }, 'transfer event refused');
          if (typeof ack === 'function') ack({ ok: false, error: wire });
        }
      });
    };
    transferEvent('download-chunk', (site, msg) => ({ data: this.transfers.readChunk(site, parseMessage(DownloadChunkSchema, msg, 'download-chunk'), socket.id) }));
    transferEvent('upload-open', (site, msg) => this.transfers.openUpload(site, parseMessage(UploadOpenSchema, msg, 'upload-open'), socket.id));
    transferEvent('upload-chunk', (site, msg) => this.transfers.writeChunk(site, parseMessage(UploadChunkSchema, msg, 'upload-chunk'), socket.id));
    transferEvent('task-result', (site, msg) => {
      const m = parseMessage(TaskResultSchema, msg, 'task-result');
      const p = this.pending.get(`${site}\n${m.taskId}`);
      if (!p) throw new CohortError('COHORT_ERR_PROTOCOL_REPLAY', 'no task with that id is waiting for this site');
      this.log.info({ siteId: site, taskId: m.taskId }, 'task reply arrived on a new connection');
      p.settle(m.reply);
      return { accepted: true as const };
    });

    socket.on('disconnect', (reason) => {
      clearTimeout(deadline);
      if (siteId && this.sockets.get(siteId)?.socket.id === socket.id) {
        this.sockets.delete(siteId);
        this.log.info({ siteId, reason }, 'site offline');
        this.changed();
        this.announce();
      }
    });
  }
}
