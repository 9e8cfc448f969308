/**
 * An in-process transport: tasks go to handler functions instead of sockets, with the same contract as the
 * socket transport (a site's fault is a coded reply, never a throw). Secure-aggregation tests, the bench and
 * simulations run the production stage code through it. Messages are deep-copied by default so that neither
 * side can touch the other's buffers, as over a real wire.
 */
import type { Reply, Task } from '../../protocol/messages.ts';
import type { OnlineSite, Transport } from './transport.ts';

export type SiteHandler = (task: Task) => Promise<Reply<unknown>> | Reply<unknown>;

export interface MemorySite {
  id: string;
  name: string;
  handler: SiteHandler;
}

export class MemoryTransport implements Transport {
  private readonly sites = new Map<string, { site: MemorySite; online: boolean; connectedAt: string }>();
  private readonly listeners = new Set<() => void>();

  /** `copy: false` skips the deep copies (benchmarks that time each side themselves). */
  constructor(sites: readonly MemorySite[], private readonly opts: { copy?: boolean } = {}) {
    const now = new Date().toISOString();
    for (const s of sites) this.sites.set(s.id, { site: s, online: true, connectedAt: now });
  }

  onlineSites(): OnlineSite[] {
    return [...this.sites.values()].filter((s) => s.online).map((s) => ({ id: s.site.id, name: s.site.name, connectedAt: s.connectedAt }));
  }

  onChange(listener: () => void): () => void {
    this.listeners.add(listener);
    return () => this.listeners.delete(listener);
  }

  /** Takes a site off line (or back): later sends to it answer COHORT_ERR_PROTOCOL_DISCONNECTED. */
  setOnline(siteId: string, online: boolean): void {
    const s = this.sites.get(siteId);
    if (!s || s.online === online) return;
    s.online = online;
    for (const l of this.listeners) l();
  }

  async send(siteId: string, task: Task, timeoutMs: number): Promise<Reply<unknown>> {
    const s = this.sites.get(siteId);
    if (!s?.online) return { ok: false, error: { code: 'COHORT_ERR_PROTOCOL_DISCONNECTED', message: 'site is not connected' } };
    const copy = this.opts.copy ?? true;
    let timer: NodeJS.Timeout | undefined;
    const timeout = new Promise<Reply<unknown>>((resolve) => {
      timer = setTimeout(() => resolve({ ok: false, error: { code: 'COHORT_ERR_PROTOCOL_TIMEOUT', message: `no reply within ${timeoutMs} ms` } }), timeoutMs);
    });
    const work = (async (): Promise<Reply<unknown>> => {
      try {
        const reply = await s.site.handler(copy ? structuredClone(task) : task);
        if (!this.sites.get(siteId)?.online) return { ok: false, error: { code: 'COHORT_ERR_PROTOCOL_DISCONNECTED', message: 'site disconnected during the task' } };
        return copy ? structuredClone(reply) : reply;
      } catch {
        return { ok: false, error: { code: 'COHORT_ERR_SERVER_INTERNAL', message: 'site handler failed' } };
      }
    })();
    try {
      return await Promise.race([work, timeout]);
    } finally {
      clearTimeout(timer);
    }
  }
}
