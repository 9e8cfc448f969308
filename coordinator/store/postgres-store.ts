/**
 * The shared store for several coordinator replicas: PostgreSQL behind the same `Store` interface.
 *
 * Design (docs/deployment.md has the operator's view):
 * - Every record (study, round, site, token, audit line) is one row `(kind, key, rev, doc json)`. `rev` comes from
 *   one sequence, and every write transaction first takes one cluster-wide advisory transaction lock, so writes
 *   are serialized across replicas exactly as lowdb serializes them in one process, and `rev` order is commit
 *   order. That keeps the shared operations (`operations.ts`) race-free: each runs against a view that is caught
 *   up inside the lock.
 * - Each replica keeps the whole state in memory (reads stay synchronous, as the interface promises) and catches
 *   up with `SELECT ... WHERE rev > $seen`: on every NOTIFY a writer sends, before each REST request and site
 *   handshake (`sync()`), inside every write, and every few seconds as a safety net.
 * - A replica runs a study only while it holds a session advisory lock for it (`leaseStudy`); if the replica dies
 *   its connection drops, the lock is freed, and another replica resumes the study from the last recorded round.
 *   The lock saves duplicated work; correctness does not depend on it, because `completeRound` refuses any round
 *   that is not the next one inside the serialized write.
 */
import pg from 'pg';
import type { Logger } from 'pino';
import { CohortError } from '../../protocol/errors.ts';
import { collectionOf, findRecord, putRecord, type Operation, type RecordKind } from './operations.ts';
import { StateView } from './state-view.ts';
import type { AuditRecord, Store, StoreData, StudyLease } from './store.ts';

/** Advisory lock keys: (namespace, id). The namespace spells "coh". */
const LOCK_NS = 0x636f68;
const WRITE_LOCK = 1;
const MIGRATE_LOCK = 2;
const STUDY_LOCK_NS = 0x636f69;
const CHANNEL = 'cohort_store';
const SAFETY_SYNC_MS = 5_000;

export interface PostgresStoreOptions {
  /** postgres://user:password@host:port/database */
  url: string;
  /** Used only if the database holds no coordinator yet (the first replica names it). */
  coordinatorId: string;
  /** This replica's coordinator public key: every replica must share one identity. */
  coordinatorPublicKey?: string;
  log?: Logger;
  /** Connections for reads and writes (default 4); each running study holds one more for its lease. */
  poolSize?: number;
}

const SCHEMA = `
CREATE TABLE IF NOT EXISTS cohort_meta (key text PRIMARY KEY, value text NOT NULL);
CREATE SEQUENCE IF NOT EXISTS cohort_rev;
CREATE TABLE IF NOT EXISTS cohort_records (
  kind text NOT NULL, key text NOT NULL, rev bigint NOT NULL, doc json NOT NULL, PRIMARY KEY (kind, key));
CREATE INDEX IF NOT EXISTS cohort_records_rev ON cohort_records (rev);
CREATE TABLE IF NOT EXISTS cohort_checkpoints (
  study_id text NOT NULL, round integer NOT NULL, chunk integer NOT NULL, bytes bytea NOT NULL,
  PRIMARY KEY (study_id, round, chunk));
`;

interface Row {
  kind: RecordKind;
  key: string;
  rev: string;
  doc: unknown;
}

/** Opens a pool and creates the tables once, under a lock, so replicas starting together do not race. */
export async function openPool(url: string, max: number): Promise<pg.Pool> {
  const pool = new pg.Pool({ connectionString: url, max, keepAlive: true });
  // An idle client that loses its server must not crash the process; the next query reports it instead.
  pool.on('error', () => undefined);
  try {
    const c = await pool.connect();
    try {
      await c.query('SELECT pg_advisory_lock($1, $2)', [LOCK_NS, MIGRATE_LOCK]);
      await c.query(SCHEMA);
      await c.query('SELECT pg_advisory_unlock($1, $2)', [LOCK_NS, MIGRATE_LOCK]);
    } finally {
      c.release();
    }
  } catch (err) {
    await pool.end().catch(() => undefined);
    throw new CohortError('COHORT_ERR_STORE_UNAVAILABLE', `cannot open the PostgreSQL store: ${(err as Error).message}`);
  }
  return pool;
}

export class PostgresStore extends StateView implements Store {
  readonly backend = 'postgres' as const;
  private state: StoreData;
  /** Highest rev applied; every rev at or below it is committed and applied. */
  private seen = 0;
  /** rev of each record in the view, so an older read never overwrites a newer write. */
  private readonly revs = new Map<string, number>();
  private queue: Promise<unknown> = Promise.resolve();
  private syncChain: Promise<void> = Promise.resolve();
  private pendingSync: Promise<void> | undefined;
  private listener: pg.Client | undefined;
  private timer: NodeJS.Timeout | undefined;
  private closed = false;
  private readonly afterSync = new Set<() => void>();

  /** The connection pool, shared with `PostgresCheckpoints`. */
  private constructor(readonly pool: pg.Pool, private readonly opts: PostgresStoreOptions, coordinatorId: string) {
    super();
    this.state = emptyData(coordinatorId);
  }

  static async open(opts: PostgresStoreOptions): Promise<PostgresStore> {
    const pool = await openPool(opts.url, opts.poolSize ?? 4);
    try {
      await pool.query(`INSERT INTO cohort_meta (key, value) VALUES ('coordinatorId', $1) ON CONFLICT (key) DO NOTHING`, [opts.coordinatorId]);
      if (opts.coordinatorPublicKey) {
        await pool.query(`INSERT INTO cohort_meta (key, value) VALUES ('coordinatorPublicKey', $1) ON CONFLICT (key) DO NOTHING`, [opts.coordinatorPublicKey]);
      }
      const meta = new Map((await pool.query<{ key: string; value: string }>('SELECT key, value FROM cohort_meta')).rows.map((r) => [r.key, r.value]));
      if (opts.coordinatorPublicKey && meta.get('coordinatorPublicKey') !== opts.coordinatorPublicKey) {
        throw new CohortError('COHORT_ERR_STORE_REPLICA_MISMATCH', 'this replica\'s identity.json differs from the one the other replicas use; copy theirs');
      }
      const store = new PostgresStore(pool, opts, meta.get('coordinatorId') ?? opts.coordinatorId);
      await store.reloadAll();
      await store.listen();
      store.timer = setInterval(() => void store.sync().catch(() => undefined), SAFETY_SYNC_MS);
      store.timer.unref();
      return store;
    } catch (err) {
      await pool.end().catch(() => undefined);
      throw err;
    }
  }

  protected get data(): StoreData {
    return this.state;
  }

  private async listen(): Promise<void> {
    if (this.closed) return;
    const client = new pg.Client({ connectionString: this.opts.url, keepAlive: true });
    const retry = () => {
      if (this.closed || this.listener !== client) return;
      this.listener = undefined;
      setTimeout(() => void this.listen().then(() => this.sync()).catch(() => undefined), 1000).unref();
    };
    client.on('error', retry);
    client.on('end', retry);
    client.on('notification', () => void this.sync().catch(() => undefined));
    this.listener = client;
    try {
      await client.connect();
      await client.query(`LISTEN ${CHANNEL}`);
    } catch (err) {
      this.opts.log?.warn({ code: 'COHORT_ERR_STORE_UNAVAILABLE', reason: (err as Error).message }, 'store listener failed; retrying');
      retry();
    }
  }

  /** Replaces the view with the database's current state. */
  private async reloadAll(): Promise<void> {
    const { rows } = await this.pool.query<Row>('SELECT kind, key, rev::text AS rev, doc FROM cohort_records ORDER BY rev');
    const fresh = emptyData(this.state.coordinatorId);
    this.revs.clear();
    let max = 0;
    for (const r of rows) {
      collectionOf(fresh, r.kind).push(r.doc);
      const rev = Number(r.rev);
      this.revs.set(`${r.kind}\0${r.key}`, rev);
      max = Math.max(max, rev);
    }
    fresh.audit.sort((a: AuditRecord, b: AuditRecord) => a.seq - b.seq);
    this.state = fresh;
    this.seen = Math.max(this.seen, max);
    this.notifyWatchers();
  }

  /** Applies every row written since `seen`; `q` is the pool or the client of a write transaction. */
  private async catchUp(q: pg.Pool | pg.PoolClient): Promise<void> {
    const { rows } = await q.query<Row>('SELECT kind, key, rev::text AS rev, doc FROM cohort_records WHERE rev > $1 ORDER BY rev', [this.seen]);
    for (const r of rows) {
      const rev = Number(r.rev);
      const id = `${r.kind}\0${r.key}`;
      if ((this.revs.get(id) ?? 0) < rev) {
        putRecord(this.state, r.kind, r.doc);
        this.revs.set(id, rev);
      }
      this.seen = Math.max(this.seen, rev);
    }
    if (rows.length) this.notifyWatchers();
  }

  sync(): Promise<void> {
    if (this.closed) return Promise.resolve();
    // Coalesce: callers that arrive while a catch-up is queued share it; one that arrives while a catch-up runs
    // gets the next one, which sees everything committed before the call.
    if (!this.pendingSync) {
      const next = this.syncChain.then(async () => {
        this.pendingSync = undefined;
        try {
          await this.catchUp(this.pool);
        } catch (err) {
          throw new CohortError('COHORT_ERR_STORE_UNAVAILABLE', `cannot read the PostgreSQL store: ${(err as Error).message}`);
        }
      });
      this.pendingSync = next;
      this.syncChain = next.catch(() => undefined);
    }
    return this.pendingSync;
  }

  protected mutate<T>(op: Operation<T>): Promise<T> {
    const run = this.queue.then(async () => {
      if (this.closed) throw new CohortError('COHORT_ERR_STORE_UNAVAILABLE', 'the store is closed');
      let client: pg.PoolClient;
      try {
        client = await this.pool.connect();
      } catch (err) {
        throw new CohortError('COHORT_ERR_STORE_UNAVAILABLE', (err as Error).message);
      }
      let applied = false;
      try {
        await client.query('BEGIN');
        await client.query('SELECT pg_advisory_xact_lock($1, $2)', [LOCK_NS, WRITE_LOCK]);
        await this.catchUp(client);
        const touched = new Map<string, { kind: RecordKind; key: string }>();
        // Operations check before they change anything, so one that throws leaves the view as it was.
        const out = op(this.state, (kind, key) => touched.set(`${kind}\0${key}`, { kind, key }));
        applied = true;
        if (touched.size > 0) {
          const list = [...touched.values()];
          const docs = list.map(({ kind, key }) => JSON.stringify(findRecord(this.state, kind, key)));
          const { rows } = await client.query<{ kind: RecordKind; key: string; rev: string }>(
            `INSERT INTO cohort_records (kind, key, rev, doc)
               SELECT k, y, nextval('cohort_rev'), d::json FROM unnest($1::text[], $2::text[], $3::text[]) AS t(k, y, d)
             ON CONFLICT (kind, key) DO UPDATE SET rev = EXCLUDED.rev, doc = EXCLUDED.doc
             RETURNING kind, key, rev::text AS rev`,
            [list.map((t) => t.kind), list.map((t) => t.key), docs]);
          const max = Math.max(...rows.map((r) => Number(r.rev)));
          await client.query('SELECT pg_notify($1, $2)', [CHANNEL, String(max)]);
          await client.query('COMMIT');
          for (const r of rows) this.revs.set(`${r.kind}\0${r.key}`, Number(r.rev));
          this.seen = Math.max(this.seen, max);
        } else {
          await client.query('COMMIT');
        }
        this.notifyWatchers();
        return out;
      } catch (err) {
        await client.query('ROLLBACK').catch(() => undefined);
        if (applied) {
          // The view holds a change the database did not take: read the truth back.
          await this.reloadAll().catch(() => undefined);
        }
        if (err instanceof CohortError) throw err;
        throw new CohortError('COHORT_ERR_STORE_UNAVAILABLE', (err as Error).message);
      } finally {
        client.release();
      }
    });
    this.queue = run.catch(() => undefined);
    return run;
  }

  private notifyWatchers(): void {
    for (const w of this.afterSync) w();
  }

  async leaseStudy(studyId: string): Promise<StudyLease | undefined> {
    const client = new pg.Client({ connectionString: this.opts.url, keepAlive: true });
    let lost = false;
    const onLost: (() => void)[] = [];
    const lose = () => {
      if (lost) return;
      lost = true;
      this.afterSync.delete(watch);
      for (const fn of onLost) fn();
    };
    // The study stopped (or finished) through another replica: give up the run.
    const watch = () => {
      const s = this.state.studies.find((x) => x.id === studyId);
      if (!s || s.status !== 'running') lose();
    };
    client.on('error', lose);
    try {
      await client.connect();
      const { rows } = await client.query<{ ok: boolean }>('SELECT pg_try_advisory_lock($1, hashtext($2)) AS ok', [STUDY_LOCK_NS, studyId]);
      if (!rows[0]?.ok) {
        await client.end();
        return undefined;
      }
      // The previous leader may have written just before it died: run from the database's latest state.
      await this.sync();
    } catch (err) {
      await client.end().catch(() => undefined);
      throw err instanceof CohortError ? err : new CohortError('COHORT_ERR_STORE_UNAVAILABLE', (err as Error).message);
    }
    client.on('end', lose);
    this.afterSync.add(watch);
    return {
      onLost: (fn) => (lost ? fn() : void onLost.push(fn)),
      release: async () => {
        lost = true;
        this.afterSync.delete(watch);
        await client.query('SELECT pg_advisory_unlock($1, hashtext($2))', [STUDY_LOCK_NS, studyId]).catch(() => undefined);
        await client.end().catch(() => undefined);
      },
    };
  }

  flush(): Promise<void> {
    return this.queue.then(() => undefined);
  }

  async close(): Promise<void> {
    if (this.closed) return;
    await this.flush();
    this.closed = true;
    clearInterval(this.timer);
    const l = this.listener;
    this.listener = undefined;
    await l?.end().catch(() => undefined);
    await this.pool.end().catch(() => undefined);
  }
}

function emptyData(coordinatorId: string): StoreData {
  return { version: 1, coordinatorId, studies: [], rounds: [], sites: [], tokens: [], audit: [] };
}

