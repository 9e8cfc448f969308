/**
 * The embedded store: lowdb over one JSON file. One serialized writer: every operation runs alone in a queue
 * and ends with an atomic write of the whole file (lowdb's JSONFile writes a temp file and renames it).
 */
import { Low, Memory } from 'lowdb';
import { JSONFile } from 'lowdb/node';
import type { Operation } from './operations.ts';
import { StateView } from './state-view.ts';
import type { Store, StoreData, StudyLease } from './store.ts';

export class LowdbStore extends StateView implements Store {
  readonly backend = 'lowdb' as const;
  private queue: Promise<unknown> = Promise.resolve();

  private constructor(private readonly db: Low<StoreData>) {
    super();
  }

  static async open(file: string | null, coordinatorId: string): Promise<LowdbStore> {
    const initial: StoreData = { version: 1, coordinatorId, studies: [], rounds: [], sites: [], tokens: [], audit: [] };
    const db = new Low<StoreData>(file ? new JSONFile<StoreData>(file) : new Memory<StoreData>(), initial);
    await db.read();
    db.data ??= initial;
    db.data.tokens ??= [];
    db.data.audit ??= [];
    return new LowdbStore(db);
  }

  protected get data(): StoreData {
    return this.db.data;
  }

  /** Runs `op` against the data, alone, then persists. If `op` or the write fails, the data is as before. */
  protected mutate<T>(op: Operation<T>): Promise<T> {
    const run = this.queue.then(async () => {
      const snapshot = structuredClone(this.db.data);
      try {
        const out = op(this.db.data, () => undefined);
        await this.db.write();
        return out;
      } catch (err) {
        this.db.data = snapshot;
        throw err;
      }
    });
    this.queue = run.catch(() => undefined);
    return run;
  }

  sync(): Promise<void> {
    return Promise.resolve();
  }

  /** One process owns a lowdb file, so the lease is always granted and never lost. */
  leaseStudy(): Promise<StudyLease> {
    return Promise.resolve({ onLost: () => undefined, release: () => Promise.resolve() });
  }

  flush(): Promise<void> {
    return this.queue.then(() => undefined);
  }

  close(): Promise<void> {
    return this.flush();
  }
}
