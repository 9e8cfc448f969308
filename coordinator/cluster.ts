/**
 * Where the coordinator keeps its state, and how replicas reach each other's sites.
 * - Embedded (default): lowdb file + checkpoint files under `--data-dir`; one process.
 * - Replicas: a PostgreSQL store and checkpoints (`--store postgres://...`), and socket.io's Redis adapter
 *   (`--redis redis://...`) so a task reaches a site on whichever replica it connected to.
 * The drivers are loaded only when asked for, so the embedded default never loads them.
 */
import { join } from 'node:path';
import type { Logger } from 'pino';
import { CohortError } from '../protocol/errors.ts';
import { Checkpoints } from './checkpoints.ts';
import { Store } from './store/store.ts';

export interface Storage {
  store: Store;
  checkpoints: Checkpoints;
}

export async function openStorage(o: { dataDir: string | null; storeUrl?: string | undefined; coordinatorId: string; coordinatorPublicKey: string; log: Logger }): Promise<Storage> {
  if (o.storeUrl) {
    if (!/^postgres(ql)?:\/\//.test(o.storeUrl)) throw new CohortError('COHORT_ERR_STORE_UNAVAILABLE', 'the store URL must start with postgres:// (or leave it out for the embedded store)');
    const { PostgresStore } = await import('./store/postgres-store.ts');
    const { PostgresCheckpoints } = await import('./store/postgres-checkpoints.ts');
    const store = await PostgresStore.open({ url: o.storeUrl, coordinatorId: o.coordinatorId, coordinatorPublicKey: o.coordinatorPublicKey, log: o.log });
    return { store, checkpoints: new PostgresCheckpoints(store.pool) };
  }
  const store = await Store.open(o.dataDir ? join(o.dataDir, 'store.json') : null, o.coordinatorId);
  return { store, checkpoints: new Checkpoints(o.dataDir ? join(o.dataDir, 'checkpoints') : null) };
}

/** The URL with any password replaced, for logs. */
export function redactUrl(url: string): string {
  try {
    const u = new URL(url);
    if (u.password) u.password = '***';
    return u.toString();
  } catch {
    return '[unparseable url]';
  }
}

export interface RedisLink {
  /** Pass as socket.io's `adapter` option. */
  adapter: unknown;
  close(): Promise<void>;
}

/** Connects the two Redis clients (publish, subscribe) socket.io's Redis adapter needs. */
export async function connectRedisAdapter(url: string, log: Logger): Promise<RedisLink> {
  const { createClient } = await import('redis');
  const { createAdapter } = await import('@socket.io/redis-adapter');
  const pub = createClient({ url });
  const sub = pub.duplicate();
  // Without an error listener a lost Redis connection would crash the process; the client reconnects by itself.
  for (const c of [pub, sub]) c.on('error', (err: Error) => log.warn({ reason: err.message, redis: redactUrl(url) }, 'redis connection error'));
  try {
    await Promise.all([pub.connect(), sub.connect()]);
  } catch (err) {
    await Promise.allSettled([pub.disconnect(), sub.disconnect()]);
    throw new CohortError('COHORT_ERR_STORE_UNAVAILABLE', `cannot reach Redis at ${redactUrl(url)}: ${(err as Error).message}`);
  }
  return {
    adapter: createAdapter(pub, sub, { requestsTimeout: 3000 }),
    async close() {
      await Promise.allSettled([pub.quit(), sub.quit()]);
    },
  };
}
