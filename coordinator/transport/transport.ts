import type { Reply, Task } from '../../protocol/messages.ts';

export interface OnlineSite {
  id: string;
  name: string;
  connectedAt: string;
}

/**
 * How the study runner reaches sites. `send` never throws for a site's fault: a timeout, a disconnect or a refusal
 * comes back as `{ok: false, error}`. The runner validates `data` against the schema of the task's reply.
 */
export interface Transport {
  onlineSites(): OnlineSite[];
  send(siteId: string, task: Task, timeoutMs: number): Promise<Reply<unknown>>;
  /** Called whenever the set of online sites changes. */
  onChange(listener: () => void): () => void;
}
