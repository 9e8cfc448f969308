/**
 * The coordinator: fastify (REST) and socket.io (sites, live events) on one port. `createCoordinator` builds
 * everything without listening (tests use port 0); `start()` listens and resumes interrupted studies.
 */
import { mkdirSync, existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import Fastify, { type FastifyBaseLogger, type FastifyInstance, type FastifyReply } from 'fastify';
import { Server } from 'socket.io';
import type { Logger } from 'pino';
import { makeLogger } from '../protocol/logging.ts';
import { CohortError, ERRORS, toWireError } from '../protocol/errors.ts';
import { EVENTS_NAMESPACE, type StudyEvent } from '../protocol/events.ts';
import { PROTOCOL_VERSION } from '../protocol/version.ts';
import { DEFAULT_CHUNK_BYTES, MIN_CHUNK_BYTES } from '../protocol/transfer.ts';
import type { Checkpoints } from './checkpoints.ts';
import { StudyRunner } from './rounds/study-runner.ts';
import type { Store } from './store/store.ts';
import { connectRedisAdapter, openStorage, redactUrl, type RedisLink } from './cluster.ts';
import { checkTls, type TlsFiles } from './tls.ts';
import { registerSecurityHeaders } from './security-headers.ts';
import { SocketTransport } from './transport/socket-transport.ts';
import { registerStudyRoutes } from './routes/studies.ts';
import { registerAdminRoutes } from './routes/admin.ts';
import { registerDashboard } from './routes/dashboard.ts';
import { registerOpenApi, routeOptions, type RouteInfo } from './routes/openapi.ts';
import { AuthRateLimiter, hashToken, lookupApiToken, newToken, requireRole } from './auth.ts';
import { loadOrCreateCoordinatorIdentity } from './identity.ts';

export { makeLogger };

/** Default socket.io message limit: room for a 4 MiB chunk (base64 over long-polling) and the largest JSON messages. */
export const DEFAULT_MAX_MESSAGE_BYTES = 16 * 1024 * 1024;

export interface CoordinatorOptions {
  /** Where the store and checkpoints live; null keeps everything in memory. */
  dataDir: string | null;
  host?: string;
  port?: number;
  enrollment?: 'open' | 'token';
  logger?: Logger;
  /**
   * Largest socket.io message (default 16 MiB). Payloads above one chunk travel in chunks (protocol/transfer.ts),
   * so this bounds what one connection can make the coordinator buffer, whatever the model's size.
   */
  maxMessageBytes?: number;
  /** Chunk size of chunked transfers (default 4 MiB, at most half of `maxMessageBytes`). */
  transferChunkBytes?: number;
  /** Seed the admin token instead of generating one (automation); only its hash is stored. */
  adminToken?: string;
  /** Failed authentications per client address per minute before requests are refused with 429 (default 20). */
  authFailuresPerMinute?: number;
  /** socket.io transports to accept; `['polling']` emulates networks that block WebSocket. */
  transports?: ('polling' | 'websocket')[];
  /** Serve HTTPS (REST, dashboard and socket.io on the same port) with this PEM certificate (chain) and key. */
  tls?: TlsFiles;
  /** postgres://... : keep the store and checkpoints in PostgreSQL, shared by several replicas (docs/deployment.md). */
  storeUrl?: string;
  /** redis://... : socket.io's Redis adapter, so sites connected to any replica receive tasks from any replica. */
  redisUrl?: string;
  /** Behind a reverse proxy or load balancer: take the client address from X-Forwarded-For (for rate limits). */
  trustProxy?: boolean;
}

export interface Coordinator {
  app: FastifyInstance;
  io: Server;
  store: Store;
  checkpoints: Checkpoints;
  runner: StudyRunner;
  transport: SocketTransport;
  log: Logger;
  /** Set only when this start created the first admin token: show it once, it is not stored. */
  initialAdminToken: string | undefined;
  coordinatorPublicKey: string;
  /** Every HTTP route with who may call it (the OpenAPI document at /docs/json lists the same). */
  routes: readonly RouteInfo[];
  start(): Promise<string>;
  close(): Promise<void>;
}

function coordinatorIdFor(dataDir: string | null): string {
  if (!dataDir) return `coord-${randomBytes(6).toString('hex')}`;
  const file = join(dataDir, 'coordinator-id');
  if (existsSync(file)) return readFileSync(file, 'utf8').trim();
  const id = `coord-${randomBytes(6).toString('hex')}`;
  writeFileSync(file, id, { mode: 0o600 });
  return id;
}

export async function createCoordinator(opts: CoordinatorOptions): Promise<Coordinator> {
  const log = opts.logger ?? makeLogger('cohort-coordinator');
  if (opts.dataDir) mkdirSync(opts.dataDir, { recursive: true, mode: 0o700 });
  const coordinatorId = coordinatorIdFor(opts.dataDir);
  const identity = loadOrCreateCoordinatorIdentity(opts.dataDir);
  if (opts.tls) {
    const cert = checkTls(opts.tls);
    if (cert.validTo.getTime() < Date.now() + 14 * 86400_000) log.warn({ validTo: cert.validTo.toISOString(), subject: cert.subject }, 'TLS certificate expires within 14 days (or has expired)');
  }
  const { store, checkpoints } = await openStorage({ dataDir: opts.dataDir, storeUrl: opts.storeUrl, coordinatorId, coordinatorPublicKey: identity.publicKeyB64, log: log.child({ component: 'store' }) });
  if (opts.storeUrl) log.info({ store: redactUrl(opts.storeUrl) }, 'shared PostgreSQL store');

  // The first admin token: generated once (or seeded), only its hash kept.
  let initialAdminToken: string | undefined;
  const hasAdmin = store.listTokens().some((t) => t.kind === 'api' && t.role === 'admin' && !t.revokedAt);
  if (opts.adminToken && !lookupApiToken(store, opts.adminToken)) {
    await store.addToken({ id: `tok-${randomBytes(4).toString('hex')}`, kind: 'api', hash: hashToken(opts.adminToken), role: 'admin', name: 'admin (seeded)', createdAt: new Date().toISOString() });
  } else if (!hasAdmin && !opts.adminToken) {
    initialAdminToken = newToken('cht');
    await store.addToken({ id: `tok-${randomBytes(4).toString('hex')}`, kind: 'api', hash: hashToken(initialAdminToken), role: 'admin', name: 'admin', createdAt: new Date().toISOString() });
  }

  const app: FastifyInstance = Fastify({
    loggerInstance: log.child({ component: 'http' }, { level: 'warn' }) as FastifyBaseLogger, bodyLimit: 1024 * 1024, exposeHeadRoutes: false,
    ...(opts.tls ? { https: { cert: opts.tls.cert, key: opts.tls.key } } : {}),
    ...(opts.trustProxy ? { trustProxy: true } : {}),
    // The router's own refusals (a malformed URL, a path parameter over 100 characters) carry a code too.
    frameworkErrors: (err, _req, reply) => {
      const status = err.statusCode ?? 400;
      void (reply as unknown as FastifyReply).status(status).send({ error: { code: status === 414 ? 'COHORT_ERR_PROTOCOL_TOO_LARGE' : 'COHORT_ERR_PROTOCOL_MALFORMED', message: err.message.slice(0, 200) } });
    },
  }) as unknown as FastifyInstance;
  let redis: RedisLink | undefined;
  if (opts.redisUrl) {
    redis = await connectRedisAdapter(opts.redisUrl, log.child({ component: 'redis' }));
    log.info({ redis: redactUrl(opts.redisUrl) }, 'socket.io Redis adapter: sites are shared with the other replicas');
  }
  const maxMessageBytes = opts.maxMessageBytes ?? DEFAULT_MAX_MESSAGE_BYTES;
  // A chunk and its envelope must fit in one message, with room for base64 over HTTP long-polling.
  const chunkBytes = Math.max(MIN_CHUNK_BYTES, Math.floor(Math.min(opts.transferChunkBytes ?? DEFAULT_CHUNK_BYTES, maxMessageBytes / 2) / 1024) * 1024);
  const io = new Server(app.server, {
    maxHttpBufferSize: maxMessageBytes, serveClient: false,
    ...(opts.transports ? { transports: opts.transports } : {}),
    ...(redis ? { adapter: redis.adapter as never } : {}),
  });
  const limiter = new AuthRateLimiter(opts.authFailuresPerMinute ?? 20);
  const transport = new SocketTransport(io, store, log.child({ component: 'sites' }), { enrollment: opts.enrollment ?? 'token', identity, limiter, cluster: Boolean(redis), chunkBytes });
  const auth = {
    viewer: requireRole(store, limiter, 'viewer'),
    researcher: requireRole(store, limiter, 'researcher'),
    admin: requireRole(store, limiter, 'admin'),
  };

  // Live events for dashboards and watchers: a viewer token is required, as for the REST API.
  const events = io.of(EVENTS_NAMESPACE);
  events.use(async (socket, next) => {
    const token = (socket.handshake.auth as { token?: unknown } | undefined)?.token;
    if (limiter.blocked(socket.handshake.address)) return next(new Error('COHORT_ERR_AUTH_RATE_LIMITED'));
    await store.sync().catch(() => undefined);
    if (typeof token === 'string' && lookupApiToken(store, token)) return next();
    limiter.fail(socket.handshake.address);
    log.warn({ code: token ? 'COHORT_ERR_AUTH_TOKEN_INVALID' : 'COHORT_ERR_AUTH_TOKEN_MISSING', remote: socket.handshake.address }, 'live events authentication failed');
    next(new Error(token ? 'COHORT_ERR_AUTH_TOKEN_INVALID' : 'COHORT_ERR_AUTH_TOKEN_MISSING'));
  });
  const emit = (e: StudyEvent) => events.emit('event', e);
  transport.onChange(() => emit({ type: 'site', at: new Date().toISOString(), message: `${transport.onlineSites().length} sites online` }));
  const runner = new StudyRunner({ store, transport, checkpoints, log: log.child({ component: 'runner' }), emit, lease: (id) => store.leaseStudy(id) });
  if (store.backend === 'postgres') {
    // A client may write through one replica and read through another: catch up before answering.
    app.addHook('onRequest', async () => store.sync());
  }

  app.setErrorHandler((err, _req, reply) => {
    if (err instanceof CohortError) {
      void reply.status(ERRORS[err.code].http).send({ error: err.toWire() });
      return;
    }
    const e = err as { statusCode?: number; code?: string; message?: string };
    if (e.statusCode && e.statusCode < 500) {
      // fastify's own refusals (bad JSON, body too large): keep them coded.
      const code = e.statusCode === 413 ? 'COHORT_ERR_PROTOCOL_TOO_LARGE' : 'COHORT_ERR_PROTOCOL_MALFORMED';
      void reply.status(e.statusCode).send({ error: { code, message: e.message ?? ERRORS[code].message } });
      return;
    }
    log.error({ err: String(err) }, 'unhandled request error');
    void reply.status(500).send({ error: toWireError(err) });
  });
  app.setNotFoundHandler((_req, reply) => {
    void reply.status(404).send({ error: { code: 'COHORT_ERR_PROTOCOL_UNKNOWN_EVENT', message: 'no such endpoint' } });
  });
  registerSecurityHeaders(app, { tls: Boolean(opts.tls) });

  // After the hooks above (so /docs gets them too), before any route: records the route table and serves the
  // OpenAPI document at /docs.
  const routes = await registerOpenApi(app);
  app.get('/healthz', routeOptions(auth, 'public', {
    summary: 'Liveness, protocol version and the number of sites online', tags: ['health'],
    responses: { 200: { description: 'Up', schema: { type: 'object', properties: { ok: { type: 'boolean' }, protocolVersion: { type: 'string' }, coordinatorId: { type: 'string' }, sitesOnline: { type: 'integer' } } } } },
  }), async () => ({ ok: true, protocolVersion: PROTOCOL_VERSION, coordinatorId, sitesOnline: transport.onlineSites().length }));
  app.get('/api/sites', routeOptions(auth, 'viewer', {
    summary: 'Enrolled sites and whether each is online', tags: ['sites'],
    responses: { 200: { description: 'Sites', schema: { type: 'object', properties: { sites: { type: 'array', items: { type: 'object', properties: { id: { type: 'string' }, name: { type: 'string' }, online: { type: 'boolean' }, registeredAt: { type: 'string' }, lastSeenAt: { type: 'string' }, revokedAt: { type: 'string' } } } } } } } },
  }), async () => {
    const online = new Set(transport.onlineSites().map((s) => s.id));
    return { sites: store.listSites().map((s) => ({ id: s.id, name: s.name, registeredAt: s.registeredAt, lastSeenAt: s.lastSeenAt, online: online.has(s.id), ...(s.revokedAt ? { revokedAt: s.revokedAt } : {}) })) };
  });
  registerStudyRoutes(app, { store, runner, checkpoints, emit, auth });
  registerAdminRoutes(app, { store, transport, auth, limiter, identity, log: log.child({ component: 'admin' }) });
  registerDashboard(app);

  let closed = false;
  let takeover: NodeJS.Timeout | undefined;
  return {
    app, io, store, checkpoints, runner, transport, log, initialAdminToken, coordinatorPublicKey: identity.publicKeyB64, routes,
    async start() {
      await app.listen({ host: opts.host ?? '127.0.0.1', port: opts.port ?? 0 });
      const addr = app.server.address();
      const port = typeof addr === 'object' && addr ? addr.port : opts.port;
      const url = `${opts.tls ? 'https' : 'http'}://${opts.host && opts.host !== '0.0.0.0' ? opts.host : '127.0.0.1'}:${port}`;
      runner.resumeAll();
      if (store.backend === 'postgres') {
        // Replicas: whoever holds a running study's lease runs it; if that replica dies, one of the others takes
        // the lease here within a few seconds and resumes from the last recorded round.
        takeover = setInterval(() => {
          for (const s of store.listStudies()) if (s.status === 'running' && !runner.isRunning(s.id)) runner.start(s.id);
        }, 2_000);
        takeover.unref();
      }
      log.info({ url, coordinatorId }, 'coordinator listening');
      return url;
    },
    async close() {
      if (closed) return;
      closed = true;
      clearInterval(takeover);
      await runner.stopAll();
      transport.close();
      io.close();
      await app.close();
      await redis?.close();
      await store.close();
    },
  };
}
