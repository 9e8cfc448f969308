/**
 * The site's side of chunked transfers (protocol/transfer.ts): pulls a large global model in chunks and pushes a
 * large reply in chunks, each acknowledged. When the connection drops, it waits for the agent to reconnect and
 * authenticate, asks the coordinator how far the upload got (or keeps pulling where it stopped) and continues from
 * there, until the task's deadline.
 */
import type { Socket } from 'socket.io-client';
import type { Logger } from 'pino';
import { CohortError, isErrorCode } from '../protocol/errors.ts';
import type { Reply } from '../protocol/messages.ts';
import { chunkEnd, sha256Hex, type DownloadChunkAck, type DownloadRef, type UploadAck, type UploadGrant } from '../protocol/transfer.ts';

/** How the transfer code reaches the coordinator: the agent's current, authenticated connection. */
export interface TransferLink {
  /** The socket once the agent is connected and authenticated (waiting through reconnects); throws past `deadline`. */
  ready(deadline: number): Promise<Socket>;
  log: Logger;
}

/** One chunk's round trip; past this the chunk is retried (after a reconnect, when the connection went). */
const CHUNK_ACK_MS = 30_000;
/** Refusals that mean "try again once connected", not "give up". */
const RETRY: ReadonlySet<string> = new Set(['COHORT_ERR_AUTH_CHALLENGE_EXPIRED', 'COHORT_ERR_PROTOCOL_TIMEOUT', 'COHORT_ERR_PROTOCOL_DISCONNECTED']);
/** Pause before a retry, so a connection that refuses at once is not hammered. */
const pause = () => new Promise((r) => setTimeout(r, 100));

export interface TransferReport {
  bytes: number;
  chunks: number;
  /** Offsets at which the transfer continued after a lost connection. */
  resumedAt: number[];
}

function incomplete(what: string, done: number, total: number): CohortError {
  return new CohortError('COHORT_ERR_TRANSFER_INCOMPLETE', `${what} stopped at ${done} of ${total} bytes: the coordinator was not reachable before the task's deadline`);
}

/** A coded refusal from the coordinator, or a thrown emit (timeout, disconnect): the latter is worth a retry. */
async function ask<T>(socket: Socket, event: string, msg: unknown): Promise<Reply<T> | undefined> {
  try {
    return (await socket.timeout(CHUNK_ACK_MS).emitWithAck(event, msg)) as Reply<T>;
  } catch {
    return undefined;
  }
}

function refusal(r: Extract<Reply<unknown>, { ok: false }>): CohortError {
  return new CohortError(isErrorCode(r.error?.code) ? r.error.code : 'COHORT_ERR_PROTOCOL_MALFORMED', String(r.error?.message ?? 'refused').slice(0, 500));
}

/** Pulls a download; the bytes must match its declared size and digest. */
export async function download(link: TransferLink, ref: DownloadRef, received: number): Promise<{ bytes: Uint8Array; report: TransferReport }> {
  const deadline = received + ref.timeoutMs;
  const out = new Uint8Array(ref.bytes);
  const report: TransferReport = { bytes: ref.bytes, chunks: 0, resumedAt: [] };
  let offset = 0;
  let broken = false;
  while (offset < ref.bytes) {
    if (Date.now() > deadline) throw incomplete('download', offset, ref.bytes);
    const socket = await link.ready(deadline).catch(() => { throw incomplete('download', offset, ref.bytes); });
    if (broken && offset > 0) {
      report.resumedAt.push(offset);
      link.log.info({ transferId: ref.transferId, offset, total: ref.bytes }, 'download resumed');
    }
    broken = false;
    const r = await ask<DownloadChunkAck>(socket, 'download-chunk', { transferId: ref.transferId, offset });
    if (!r || (!r.ok && RETRY.has(r.error?.code))) {
      broken = true;
      await pause();
      continue;
    }
    if (!r.ok) throw refusal(r);
    const data = r.data?.data;
    const end = chunkEnd(offset, ref.bytes, ref.chunkBytes);
    if (!(data instanceof Uint8Array) || data.byteLength !== end - offset) {
      throw new CohortError('COHORT_ERR_TRANSFER_MALFORMED', `chunk at ${offset} has ${data instanceof Uint8Array ? data.byteLength : 'no'} bytes; ${end - offset} expected`);
    }
    out.set(data, offset);
    offset = end;
    report.chunks++;
  }
  if (sha256Hex(out) !== ref.digest) throw new CohortError('COHORT_ERR_TRANSFER_DIGEST', 'the downloaded model does not match its declared SHA-256 digest');
  return { bytes: out, report };
}

/** Pushes `payload` under `grant`, continuing after lost connections from what the coordinator acknowledged. */
export async function upload(link: TransferLink, grant: UploadGrant, payload: Uint8Array, received: number): Promise<TransferReport> {
  const deadline = received + grant.timeoutMs;
  const total = payload.byteLength;
  if (total > grant.maxBytes) throw new CohortError('COHORT_ERR_TRANSFER_TOO_LARGE', `the reply has ${total} bytes; the grant allows ${grant.maxBytes}`);
  const digest = sha256Hex(payload);
  const report: TransferReport = { bytes: total, chunks: 0, resumedAt: [] };
  /** Bytes the coordinator has acknowledged; unknown (-1) until (re)declared on the current connection. */
  let acked = -1;
  let opened = false;
  for (;;) {
    if (Date.now() > deadline) throw incomplete('upload', Math.max(acked, 0), total);
    const socket = await link.ready(deadline).catch(() => { throw incomplete('upload', Math.max(acked, 0), total); });
    if (acked < 0) {
      const r = await ask<UploadAck>(socket, 'upload-open', { transferId: grant.transferId, bytes: total, digest });
      if (!r || (!r.ok && RETRY.has(r.error?.code))) {
        await pause();
        continue;
      }
      if (!r.ok) throw refusal(r);
      acked = r.data.received;
      if (opened && acked > 0) {
        report.resumedAt.push(acked);
        link.log.info({ transferId: grant.transferId, offset: acked, total }, 'upload resumed');
      }
      opened = true;
    }
    if (acked >= total) return report;
    const end = chunkEnd(acked, total, grant.chunkBytes);
    const r = await ask<UploadAck>(socket, 'upload-chunk', { transferId: grant.transferId, offset: acked, data: payload.subarray(acked, end) });
    if (!r || (!r.ok && (RETRY.has(r.error?.code) || r.error?.code === 'COHORT_ERR_TRANSFER_OFFSET'))) {
      // Lost, or the ack was: ask again how much arrived before sending more.
      acked = -1;
      if (!r) await pause();
      continue;
    }
    if (!r.ok) throw refusal(r);
    acked = r.data.received;
    report.chunks++;
  }
}
