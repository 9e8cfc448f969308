/**
 * Messages between the simulation's main thread (coordinator, SitePool) and its worker threads (virtual sites).
 * Typed arrays travel as transfers, model weights for a fan-out as one SharedArrayBuffer that every worker reads.
 */
import type { FeatureSchema } from '../site-agent/data/data-source.ts';
import type { ResolvedModel, Task } from '../protocol/messages.ts';
import type { AttackPlan } from './faults.ts';
import type { ScalingStats } from './matrix-source.ts';

export interface WorkerSite {
  name: string;
  /** The site's id at the coordinator (`virtual:<name>`), as a real agent learns it when it authenticates. */
  id: string;
  /** Its Ed25519 identity (tweetnacl form), seeded; the coordinator's store holds the public half. */
  secretKey: Uint8Array;
  /** Raw row-major values (NaN where missing), the site's labels and table row ids. */
  x: Float64Array;
  y: Int32Array;
  rowIds: Int32Array;
  malicious: boolean;
}

export interface InitMessage {
  type: 'init';
  id: number;
  /** Folder for this run's site directories (approvals). */
  runDir: string;
  dataset: string;
  table: { label: string; features: FeatureSchema[]; classes: string[]; width: number; stats?: ScalingStats | undefined };
  sites: WorkerSite[];
  /** Site policy (validated by the worker with the agent's own PolicySchema). */
  policy: Record<string, unknown>;
  /** The simulated hospitals approve this study (as `cohort site approve` would). */
  approval: { studyId: string; manifestHash: string };
  attack: AttackPlan | null;
  seed: number;
  logLevel: string;
}

/** A task for one site; `weights`, when the task has them, is the frame in shared memory. */
export interface TaskMessage {
  type: 'task';
  id: number;
  site: string;
  task: Omit<Task, 'weights'>;
  weights?: SharedArrayBuffer;
}

export interface LossesMessage {
  type: 'losses';
  id: number;
  dataset: string;
  model: ResolvedModel;
  weights: SharedArrayBuffer;
  holdoutFraction: number;
  seed: number;
}

export type ToWorker = InitMessage | TaskMessage | LossesMessage;

export type FromWorker =
  | { type: 'done'; id: number; value: unknown }
  | { type: 'failed'; id: number; message: string };

/** Per-example losses of the final model on one site's training rows (members) and hold-out rows (non-members). */
export interface SiteLosses {
  site: string;
  memberIds: Int32Array;
  memberLosses: Float64Array;
  nonMemberIds: Int32Array;
  nonMemberLosses: Float64Array;
}
