/**
 * Worker threads that host the virtual sites (main-thread side). Sites are pinned to workers, balanced by row
 * count, because a site keeps state between tasks (its data split, approvals, secure-aggregation sessions and
 * privacy accountant). Model frames go to the workers as one SharedArrayBuffer per distinct frame (read by every
 * worker, copied by none), updates come back as transferred buffers.
 */
import { availableParallelism } from 'node:os';
import { Worker } from 'node:worker_threads';
import { CohortError } from '../protocol/errors.ts';
import type { Reply, ResolvedModel, Task } from '../protocol/messages.ts';
import type { OnlineSite } from '../coordinator/transport/transport.ts';
import type { FromWorker, InitMessage, SiteLosses, ToWorker, WorkerSite } from './worker-protocol.ts';

interface Pending {
  resolve: (v: unknown) => void;
  reject: (e: Error) => void;
}

interface Handle {
  worker: Worker;
  pending: Map<number, Pending>;
}

export type PoolInit = Omit<InitMessage, 'type' | 'id' | 'sites'> & { sites: WorkerSite[] };

/** Workers to use by default: one per core (the coordinator's share of the work is small). */
export function defaultWorkers(): number {
  return Math.max(1, availableParallelism());
}

export class SitePool {
  private readonly handles: Handle[];
  private readonly siteWorker = new Map<string, number>();
  private readonly shared = new WeakMap<Uint8Array, SharedArrayBuffer>();
  private nextId = 1;
  private closing = false;
  /** Set when a worker died: the simulation must stop. */
  fatal: CohortError | undefined;

  private constructor(count: number) {
    this.handles = Array.from({ length: count }, () => {
      const worker = new Worker(new URL('./worker-bootstrap.js', import.meta.url));
      const h: Handle = { worker, pending: new Map() };
      worker.on('message', (m: FromWorker) => {
        const p = h.pending.get(m.id);
        if (!p) return;
        h.pending.delete(m.id);
        if (m.type === 'done') p.resolve(m.value);
        else p.reject(new Error(m.message));
      });
      const die = (why: string) => {
        if (this.closing) return;
        this.fatal ??= new CohortError('COHORT_ERR_SIM_WORKER_FAILED', why);
        for (const p of h.pending.values()) p.reject(this.fatal);
        h.pending.clear();
      };
      worker.on('error', (err) => die(`worker thread failed: ${err.message}`));
      worker.on('exit', (code) => die(`worker thread exited (code ${code})`));
      return h;
    });
  }

  /** Starts `count` worker threads. */
  static start(count = defaultWorkers()): SitePool {
    return new SitePool(Math.max(1, count));
  }

  get size(): number {
    return this.handles.length;
  }

  private call<T>(index: number, msg: ToWorker, transfer: ArrayBuffer[] = []): Promise<T> {
    if (this.fatal) return Promise.reject(this.fatal);
    const h = this.handles[index]!;
    return new Promise<T>((resolve, reject) => {
      h.pending.set(msg.id, { resolve: resolve as (v: unknown) => void, reject });
      h.worker.postMessage(msg, transfer);
    });
  }

  /**
   * (Re)loads the workers with a run's virtual sites, replacing any previous ones. Sites go to workers largest
   * first, each to the least loaded worker, so quantity-skewed partitions still keep every core busy.
   */
  async init(setup: PoolInit): Promise<void> {
    this.siteWorker.clear();
    const load = new Array<number>(this.handles.length).fill(0);
    const perWorker = this.handles.map(() => [] as WorkerSite[]);
    const order = [...setup.sites].sort((a, b) => b.y.length - a.y.length || (a.name < b.name ? -1 : 1));
    for (const s of order) {
      const w = load.indexOf(Math.min(...load));
      load[w]! += s.y.length + 20; // a site costs a little even with few rows
      perWorker[w]!.push(s);
      this.siteWorker.set(s.name, w);
    }
    await Promise.all(perWorker.map((sites, w) => this.call(w, { ...setup, type: 'init', id: this.nextId++, sites },
      sites.flatMap((s) => [s.x.buffer, s.y.buffer, s.rowIds.buffer] as ArrayBuffer[]))));
  }

  private sharedCopy(bytes: Uint8Array): SharedArrayBuffer {
    let sab = this.shared.get(bytes);
    if (!sab) {
      sab = new SharedArrayBuffer(bytes.byteLength);
      new Uint8Array(sab).set(bytes);
      this.shared.set(bytes, sab);
    }
    return sab;
  }

  /** Runs `task` at the virtual site; rejects only when the simulator itself failed. */
  run(site: OnlineSite, task: Task): Promise<Reply<unknown>> {
    const w = this.siteWorker.get(site.name);
    if (w === undefined) return Promise.resolve({ ok: false, error: { code: 'COHORT_ERR_PROTOCOL_DISCONNECTED', message: `no virtual site ${site.name}` } });
    if ('weights' in task) {
      const { weights, ...rest } = task;
      return this.call(w, { type: 'task', id: this.nextId++, site: site.name, task: rest as Omit<Task, 'weights'>, weights: this.sharedCopy(weights) });
    }
    return this.call(w, { type: 'task', id: this.nextId++, site: site.name, task });
  }

  /** Per-example losses of `weights` at every site (for membership inference), in site-name order. */
  async losses(req: { dataset: string; model: ResolvedModel; weights: Uint8Array; holdoutFraction: number; seed: number }): Promise<SiteLosses[]> {
    const weights = this.sharedCopy(req.weights);
    const parts = await Promise.all(this.handles.map((_, w) => this.call<SiteLosses[]>(w, { type: 'losses', id: this.nextId++, ...req, weights })));
    return parts.flat().sort((a, b) => (a.site < b.site ? -1 : a.site > b.site ? 1 : 0));
  }

  async close(): Promise<void> {
    this.closing = true;
    await Promise.all(this.handles.map((h) => h.worker.terminate()));
  }
}
