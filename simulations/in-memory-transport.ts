/**
 * The coordinator's `Transport` for simulations: virtual sites in this process (on worker threads) instead of
 * sockets, so the simulator drives the production StudyRunner unchanged. Faults (dropout, stragglers) are injected
 * here, where the network would cause them, and come back as the same coded failures the socket transport gives.
 *
 * Replies are delivered in the order the tasks were sent: the runner then meets the same sequence of events on
 * every run, whatever order the worker threads finished in, so a scenario and seed reproduce bit for bit.
 */
import type { Reply, Task } from '../protocol/messages.ts';
import type { OnlineSite, Transport } from '../coordinator/transport/transport.ts';
import type { FaultPlan, Stage } from './faults.ts';

/** Runs a task at a virtual site and resolves to its reply (never rejects for the site's own failures). */
export type Deliver = (site: OnlineSite, task: Task) => Promise<Reply<unknown>>;

export class InMemoryTransport implements Transport {
  private readonly byId: Map<string, OnlineSite>;
  private tail: Promise<unknown> = Promise.resolve();
  /** Tasks sent and failures injected, for reports. */
  readonly counts = { sent: 0, dropout: 0, straggler: 0 };

  constructor(sites: readonly OnlineSite[], private readonly deliver: Deliver, private readonly faults?: FaultPlan) {
    this.byId = new Map(sites.map((s) => [s.id, s]));
  }

  onlineSites(): OnlineSite[] {
    return [...this.byId.values()].map((s) => ({ ...s }));
  }

  /** The set of virtual sites never changes during a run. */
  onChange(_listener: () => void): () => void {
    return () => undefined;
  }

  send(siteId: string, task: Task, timeoutMs: number): Promise<Reply<unknown>> {
    this.counts.sent++;
    const reply = this.run(siteId, task, timeoutMs);
    const ordered = this.tail.then(() => reply);
    this.tail = ordered.catch(() => undefined);
    return ordered;
  }

  private async run(siteId: string, task: Task, timeoutMs: number): Promise<Reply<unknown>> {
    const site = this.byId.get(siteId);
    if (!site) return { ok: false, error: { code: 'COHORT_ERR_PROTOCOL_DISCONNECTED', message: 'site is not connected' } };
    const fate = this.faults?.decide(site.name, task.kind as Stage, task.round) ?? 'ok';
    if (fate === 'dropout') {
      this.counts.dropout++;
      return { ok: false, error: { code: 'COHORT_ERR_PROTOCOL_DISCONNECTED', message: 'site disconnected during the task (simulated dropout)' } };
    }
    let reply: Reply<unknown>;
    try {
      reply = await this.deliver(site, task);
    } catch (err) {
      // Not the site's fault: the simulator itself broke (a worker thread died). The runner sees a coded failure;
      // the simulation checks its pool and stops.
      return { ok: false, error: { code: 'COHORT_ERR_SIM_WORKER_FAILED', message: String(err instanceof Error ? err.message : err).slice(0, 500) } };
    }
    if (fate === 'straggler') {
      this.counts.straggler++;
      return { ok: false, error: { code: 'COHORT_ERR_PROTOCOL_TIMEOUT', message: `no reply within ${timeoutMs} ms (simulated straggler)` } };
    }
    return reply;
  }
}
