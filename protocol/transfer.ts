/**
 * Chunked, resumable transfers of large binary payloads over the `/site` namespace (protocol 2.1; docs/protocol.md,
 * "Chunked transfers"). A payload larger than one chunk never travels as one socket.io message:
 *
 *   down (global model to a site): the task carries `weightsRef` {transferId, bytes, digest, chunkBytes, timeoutMs}; its
 *        `weights` is empty; the site pulls chunks with `download-chunk` {transferId, offset} and checks the SHA-256
 *        digest of the whole at the end.
 *   up   (a site's update or masked vector): a `train` task carries an `upload` grant {transferId, maxBytes,
 *        chunkBytes, timeoutMs}; the site declares size and digest with `upload-open`, pushes chunks in order with
 *        `upload-chunk` {transferId, offset, data}, each acknowledged with the bytes received so far, then replies to
 *        the task with `upload: transferId` in place of the binary field. The coordinator checks every offset, the
 *        declared size and, at the last chunk, the digest.
 *
 * A transfer id is drawn by the coordinator for one task and one authenticated site; a chunk for an unknown id or
 * another site's id is refused without saying which. After a lost connection the site reconnects, re-opens the
 * upload (the answer says how much arrived) or keeps pulling, and continues from the last acknowledged chunk.
 */
import { createHash } from 'node:crypto';
import { z } from 'zod';

/** Default chunk: 4 MiB, so a message stays far below the coordinator's message limit (16 MiB by default). */
export const DEFAULT_CHUNK_BYTES = 4 * 1024 * 1024;
/** Smallest chunk a coordinator may ask for (tests use small chunks to get many of them). */
export const MIN_CHUNK_BYTES = 1024;
/** Largest chunk either side accepts, whatever a peer declares. */
export const MAX_CHUNK_BYTES = 64 * 1024 * 1024;
/** Largest payload one transfer may declare (a 1G-parameter float32 model). */
export const MAX_TRANSFER_BYTES = 4 * 1024 * 1024 * 1024;

export const TRANSFER_EVENTS = ['upload-open', 'upload-chunk', 'download-chunk', 'task-result'] as const;
export type TransferEvent = (typeof TRANSFER_EVENTS)[number];

const transferId = z.string().regex(/^[0-9a-f]{32}$/, '32 hex digits');
const bytes = z.custom<Uint8Array>((v) => v instanceof Uint8Array, 'expected binary data');
const digest = z.string().regex(/^[0-9a-f]{64}$/, 'SHA-256, 64 hex digits');
const size = z.number().int().min(1).max(MAX_TRANSFER_BYTES);
const chunkBytes = z.number().int().min(MIN_CHUNK_BYTES).max(MAX_CHUNK_BYTES).refine((n) => n % 4 === 0, 'a multiple of 4');
const offset = z.number().int().min(0).max(MAX_TRANSFER_BYTES);
/** How long the coordinator waits for the task from when it sent it: the site's patience for resuming. */
const timeoutMs = z.number().int().min(1).max(24 * 3600_000);

/** In a task, in place of inline `weights`: where to pull them from. */
export const DownloadRefSchema = z.object({ transferId, bytes: size, digest, chunkBytes, timeoutMs });
export type DownloadRef = z.infer<typeof DownloadRefSchema>;

/** In a `train` task: the site may send its binary reply in chunks under this id, up to `maxBytes`. */
export const UploadGrantSchema = z.object({ transferId, maxBytes: size, chunkBytes, timeoutMs });
export type UploadGrant = z.infer<typeof UploadGrantSchema>;

/** site -> coordinator: declares (or, after a reconnect, re-declares) an upload; ack `{received}`. */
export const UploadOpenSchema = z.object({ transferId, bytes: size, digest });
export type UploadOpen = z.infer<typeof UploadOpenSchema>;

/** site -> coordinator: the bytes at `offset`; ack `{received}` (bytes accepted so far, in order). */
export const UploadChunkSchema = z.object({ transferId, offset, data: bytes });
export type UploadChunk = z.infer<typeof UploadChunkSchema>;

/** site -> coordinator: the chunk of a download at `offset`; ack `{data}`. */
export const DownloadChunkSchema = z.object({ transferId, offset });
export type DownloadChunk = z.infer<typeof DownloadChunkSchema>;

/** site -> coordinator: a task's reply when the connection that delivered the task is gone. */
export const TaskResultSchema = z.object({ taskId: z.string().min(1).max(128).regex(/^[A-Za-z0-9._:-]+$/), reply: z.unknown() });
export type TaskResult = z.infer<typeof TaskResultSchema>;

export interface UploadAck {
  received: number;
}
export interface DownloadChunkAck {
  data: Uint8Array;
}

export function sha256Hex(data: Uint8Array): string {
  return createHash('sha256').update(data).digest('hex');
}

/** The byte range of chunk `offset` of a `total`-byte payload cut in `chunk`-byte pieces. */
export function chunkEnd(offset: number, total: number, chunk: number): number {
  return Math.min(offset + chunk, total);
}
