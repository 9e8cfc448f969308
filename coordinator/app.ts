/**
 * The coordinator: fastify (REST) and socket.io (sites, live events) on one port. `createCoordinator` builds
 * everything without listening (tests use port 0); `start()` listens and resumes interrupted studies.
 */
import { mkdirSync, existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { randomBytes } from 'node:crypto';
import Fastify, { type FastifyBaseLogger, type FastifyInstance } from 'fastify';
import { Server } from 'socket.io';
import type { Logger } from 'pino';
import { makeLogger } from '../protocol/logging.ts';
import { CohortError, ERRORS, toWireError } from '../protocol/errors.ts';
import { EVENTS_NAMESPACE, type StudyEvent } from '../protocol/events.ts';
import { PROTOCOL_VERSION } from '../protocol/version.ts';
import { Checkpoints } from './checkpoints.ts';
import { StudyRunner } from './rounds/study-runner.ts';
import { Store } from './store/store.ts';
import { SocketTransport } from './transport/socket-transport.ts';
import { registerStudyRoutes } from './routes/studies.ts';

export { makeLogger };

export interface CoordinatorOptions {
  /** Where the store and checkpoints live; null keeps everything in memory. */
  dataDir: string | null;
  host?: string;
  port?: number;
  enrollment?: 'open' | 'closed';
  logger?: Logger;
  /** Largest socket.io message (weights frames included). */
  maxMessageBytes?: number;
}

export interface Coordinator {
  app: FastifyInstance;
  io: Server;
  store: Store;
  checkpoints: Checkpoints;
  runner: StudyRunner;
  transport: SocketTransport;
  log: Logger;
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
  const store = await Store.open(opts.dataDir ? join(opts.dataDir, 'store.json') : null, coordinatorId);
  const checkpoints = new Checkpoints(opts.dataDir ? join(opts.dataDir, 'checkpoints') : null);
  const app: FastifyInstance = Fastify({ loggerInstance: log.child({ component: 'http' }, { level: 'warn' }) as FastifyBaseLogger, bodyLimit: 1024 * 1024 }) as unknown as FastifyInstance;
  const io = new Server(app.server, { maxHttpBufferSize: opts.maxMessageBytes ?? 256 * 1024 * 1024, serveClient: false });
  const transport = new SocketTransport(io, store, log.child({ component: 'sites' }), { enrollment: opts.enrollment ?? 'open' });
  const events = io.of(EVENTS_NAMESPACE);
  const emit = (e: StudyEvent) => events.emit('event', e);
  transport.onChange(() => emit({ type: 'site', at: new Date().toISOString(), message: `${transport.onlineSites().length} sites online` }));
  const runner = new StudyRunner({ store, transport, checkpoints, log: log.child({ component: 'runner' }), emit });

  app.setErrorHandler((err, _req, reply) => {
    if (err instanceof CohortError) {
      void reply.status(ERRORS[err.code].http).send({ error: err.toWire() });
      return;
    }
    const e = err as { statusCode?: number; code?: string; message?: string };
    if (e.statusCode && e.statusCode < 500) {
      // fastify's own refusals (bad JSON, body too large): keep them coded.
      const code = e.statusCode === 413 ? 'COHORT_ERR_TENSOR_TOO_LARGE' : 'COHORT_ERR_PROTOCOL_MALFORMED';
      void reply.status(e.statusCode).send({ error: { code, message: e.message ?? ERRORS[code].message } });
      return;
    }
    log.error({ err: String(err) }, 'unhandled request error');
    void reply.status(500).send({ error: toWireError(err) });
  });
  app.setNotFoundHandler((_req, reply) => {
    void reply.status(404).send({ error: { code: 'COHORT_ERR_PROTOCOL_UNKNOWN_EVENT', message: 'no such endpoint' } });
  });

  app.get('/healthz', async () => ({ ok: true, protocolVersion: PROTOCOL_VERSION, coordinatorId, sitesOnline: transport.onlineSites().length }));
  app.get('/api/sites', async () => {
    const online = new Set(transport.onlineSites().map((s) => s.id));
    return { sites: store.listSites().map((s) => ({ id: s.id, name: s.name, registeredAt: s.registeredAt, lastSeenAt: s.lastSeenAt, online: online.has(s.id) })) };
  });
  registerStudyRoutes(app, { store, runner, checkpoints, emit });

  let closed = false;
  return {
    app, io, store, checkpoints, runner, transport, log,
    async start() {
      await app.listen({ host: opts.host ?? '127.0.0.1', port: opts.port ?? 0 });
      const addr = app.server.address();
      const port = typeof addr === 'object' && addr ? addr.port : opts.port;
      const url = `http://${opts.host && opts.host !== '0.0.0.0' ? opts.host : '127.0.0.1'}:${port}`;
      runner.resumeAll();
      log.info({ url, coordinatorId }, 'coordinator listening');
      return url;
    },
    async close() {
      if (closed) return;
      closed = true;
      await runner.stopAll();
      io.close();
      await app.close();
      await store.flush();
    },
  };
}
