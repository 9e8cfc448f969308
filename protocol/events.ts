/**
 * Typed socket.io event maps (namespace `/site`). The server is `Server<ClientToServerEvents,
 * ServerToClientEvents>`; the site's client takes the maps reversed. Every ack carries a `Reply`.
 */
import type { Auth, Challenge, Hello, Reply, Task } from './messages.ts';

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
