import type { Reply, Task } from '../../protocol/messages.ts';
import type { UploadSink } from './transfers.ts';

export interface OnlineSite {
  id: string;
  name: string;
  connectedAt: string;
}

export interface SendOptions {
  /**
   * How a large binary reply (`weights`, or `masked` under secure aggregation) may arrive in chunks. Without a
   * sink the transport reassembles it into the reply's field; with one, each chunk goes to the sink as it arrives
   * and the field comes back empty. Transports without chunked transfers (in-memory) ignore this.
   */
  upload?: { maxBytes?: number; sink?: UploadSink };
}

/**
 * How the study runner reaches sites. `send` never throws for a site's fault: a timeout, a disconnect or a refusal
 * comes back as `{ok: false, error}`. The runner validates `data` against the schema of the task's reply.
 */
export interface Transport {
  onlineSites(): OnlineSite[];
  send(siteId: string, task: Task, timeoutMs: number, opts?: SendOptions): Promise<Reply<unknown>>;
  /** Called whenever the set of online sites changes. */
  onChange(listener: () => void): () => void;
}
