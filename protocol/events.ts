/**
 * Typed socket.io event maps (namespace `/site`). The server is `Server<ClientToServerEvents,
 * ServerToClientEvents>`; the site's client takes the maps reversed. Every ack carries a `Reply`.
 */
import type { Auth, Challenge, Hello, Reply, Task } from './messages.ts';
import type { DownloadChunk, DownloadChunkAck, TaskResult, UploadAck, UploadChunk, UploadOpen } from './transfer.ts';

export const SITE_NAMESPACE = '/site';
export const EVENTS_NAMESPACE = '/events';

export interface HelloAck {
  challenge: Challenge;
}
export interface AuthAck {
  siteId: string;
  siteName: string;
}

export interface ClientToServerEvents {
  hello: (msg: Hello, ack: (reply: Reply<HelloAck>) => void) => void;
  auth: (msg: Auth, ack: (reply: Reply<AuthAck>) => void) => void;
  // Chunked transfers (protocol 2.1, protocol/transfer.ts); only on an authenticated connection.
  'upload-open': (msg: UploadOpen, ack: (reply: Reply<UploadAck>) => void) => void;
  'upload-chunk': (msg: UploadChunk, ack: (reply: Reply<UploadAck>) => void) => void;
  'download-chunk': (msg: DownloadChunk, ack: (reply: Reply<DownloadChunkAck>) => void) => void;
  /** A task's reply sent on a later connection than the one that delivered the task (after a reconnect). */
  'task-result': (msg: TaskResult, ack: (reply: Reply<{ accepted: true }>) => void) => void;
}

export interface ServerToClientEvents {
  /** A unit of work; the site answers through the ack. */
  task: (task: Task, ack: (reply: Reply<unknown>) => void) => void;
}

/** Live updates for dashboards and `cohort study status --watch` (namespace `/events`). */
export interface StudyEvent {
  type: 'study' | 'round' | 'site';
  studyId?: string;
  round?: number;
  status?: string;
  message?: string;
  at: string;
}
export interface EventsServerToClient {
  event: (e: StudyEvent) => void;
}
