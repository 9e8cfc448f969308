/**
 * socket.io transport, namespace `/site`. Sites dial out to us; each connection must complete a signed challenge
 * (hello -> challenge -> auth) before it may receive tasks. Tasks go out as `task` events with acks, so a reply is
 * bound to its request by socket.io itself and cannot be replayed into another task.
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
import { PROTOCOL_VERSION, isCompatibleProtocol } from '../../protocol/version.ts';
import { b64, coordinatorProofMessage, fromB64 } from '../../protocol/signing.ts';
import type { CoordinatorIdentity } from '../identity.ts';
import type { Store } from '../store/store.ts';
import type { OnlineSite, Transport } from './transport.ts';

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
}

export class SocketTransport implements Transport {
  private readonly sockets = new Map<string, { socket: SiteSocket; site: OnlineSite }>();
  private readonly listeners = new Set<() => void>();
  private readonly ns: Namespace<ClientToServerEvents, ServerToClientEvents>;

  constructor(io: Server, private readonly store: Store, private readonly log: Logger, private readonly opts: SocketTransportOptions) {
    this.ns = io.of(SITE_NAMESPACE) as unknown as Namespace<ClientToServerEvents, ServerToClientEvents>;
    this.ns.on('connection', (socket) => this.onConnection(socket));
  }

  onlineSites(): OnlineSite[] {
    return [...this.sockets.values()].map((s) => ({ ...s.site }));
  }

  onChange(listener: () => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  private changed(): void {
    for (const l of this.listeners) l();
  }

  async send(siteId: string, task: Task, timeoutMs: number): Promise<Reply<unknown>> {
    const entry = this.sockets.get(siteId);
    if (!entry) return { ok: false, error: { code: 'COHORT_ERR_PROTOCOL_DISCONNECTED', message: 'site is not connected' } };
    const { socket } = entry;
    return new Promise<Reply<unknown>>((resolve) => {
      let done = false;
      const finish = (r: Reply<unknown>) => {
        if (done) return;
        done = true;
        socket.off('disconnect', onDisconnect);
        resolve(r);
      };
      const onDisconnect = () => finish({ ok: false, error: { code: 'COHORT_ERR_PROTOCOL_DISCONNECTED', message: 'site disconnected during the task' } });
      socket.once('disconnect', onDisconnect);
      socket.timeout(timeoutMs).emit('task', task, (err: Error | null, reply: Reply<unknown>) => {
        if (err) finish({ ok: false, error: { code: 'COHORT_ERR_PROTOCOL_TIMEOUT', message: `no reply within ${timeoutMs} ms` } });
        else finish(reply);
      });
    });
  }

  /** Cuts a site off at once (revocation): its socket is closed and it cannot authenticate again. */
  disconnectSite(siteId: string): boolean {
    const entry = this.sockets.get(siteId);
    if (!entry) return false;
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
      this.log.warn({ code: wire.code, remote, reason: wire.message }, 'site handshake refused');
      if (typeof ack === 'function') ack({ ok: false, error: wire });
      if (disconnect) setTimeout(() => socket.disconnect(true), 50);
    };

    socket.onAny((event: string) => {
      if (event !== 'hello' && event !== 'auth') {
        this.log.warn({ code: 'COHORT_ERR_PROTOCOL_UNKNOWN_EVENT', remote, event: event.slice(0, 64) }, 'unknown event from site');
      }
    });

    socket.on('hello', (msg, ack) => {
      try {
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
        this.sockets.set(siteId, { socket, site: { id: siteId, name: record.name, connectedAt: new Date().toISOString() } });
        this.log.info({ site: record.name, siteId, remote }, 'site online');
        const reply: AuthAck = { siteId, siteName: record.name };
        if (typeof ack === 'function') ack({ ok: true, data: reply });
        this.changed();
      } catch (err) {
        refuse(ack, err, true);
      }
    });

    socket.on('disconnect', (reason) => {
      clearTimeout(deadline);
      if (siteId && this.sockets.get(siteId)?.socket.id === socket.id) {
        this.sockets.delete(siteId);
        this.log.info({ siteId, reason }, 'site offline');
        this.changed();
      }
    });
  }
}
