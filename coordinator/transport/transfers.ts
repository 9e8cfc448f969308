/**
 * The coordinator's side of chunked transfers (protocol/transfer.ts): downloads it offers and uploads it grants,
 * each bound to one task and one authenticated site. Every refusal is coded and changes nothing, except that a
 * sink refusing a chunk or a digest that does not match at the end fails the whole upload.
 *
 * An upload either feeds a sink chunk by chunk (secure aggregation adds masked lanes into its sum as they arrive,
 * so no site's vector is ever held whole) or is reassembled into one buffer of its declared size, allocated only
 * for a granted upload and never larger than the grant. Reassembly buffers are admitted a few at a time
 * (`maxReassembling`, default 1): a site that declares an upload while they are taken gets its answer when one is
 * free, so the coordinator holds a bounded number of updates whatever the number of sites.
 */
import { createHash, randomBytes, type Hash } from 'node:crypto';
import { CohortError, toWireError, type WireError } from '../../protocol/errors.ts';
import {
  chunkEnd, sha256Hex, type DownloadChunk, type DownloadRef, type UploadAck, type UploadChunk, type UploadGrant, type UploadOpen,
} from '../../protocol/transfer.ts';

/** Receives an upload as it arrives. Throwing a CohortError refuses it (and fails the upload). */
export interface UploadSink {
  /** Once, when the site declares the size. */
  open(total: number): void;
  /** Every chunk, in order; `data` is only valid during the call. */
  chunk(offset: number, data: Uint8Array): void;
}

interface Download {
  kind: 'download';
  id: string;
  siteId: string;
  taskId: string;
  bytes: Uint8Array;
  chunkBytes: number;
  /** Connection that asked last, to tell a resumed download from a continuing one. */
  lastConnection?: string;
  next: number;
}

interface Upload {
  kind: 'upload';
  id: string;
  siteId: string;
  taskId: string;
  maxBytes: number;
  chunkBytes: number;
  sink: UploadSink | undefined;
  declared?: { bytes: number; digest: string };
  received: number;
  hash?: Hash;
  buffer?: Uint8Array;
  done: boolean;
  failed?: WireError;
  lastConnection?: string;
}

/** What a resumed transfer looked like: where it picked up. */
export interface ResumeEvent {
  transferId: string;
  taskId: string;
  siteId: string;
  direction: 'upload' | 'download';
  offset: number;
  total: number;
  at: string;
}

export interface TransferStats {
  uploadsOpened: number;
  uploadsCompleted: number;
  downloadsOffered: number;
  chunksIn: number;
  chunksOut: number;
  bytesIn: number;
  bytesOut: number;
  refused: number;
  /** Bytes held in reassembly buffers now, and at most at any moment (uploads with a sink hold none). */
  bufferedBytes: number;
  peakBufferedBytes: number;
  resumes: ResumeEvent[];
}

const MAX_RESUME_EVENTS = 200;

const digests = new WeakMap<Uint8Array, string>();
/** One global model goes to every site: hash it once. */
function digestOf(bytes: Uint8Array): string {
  let d = digests.get(bytes);
  if (!d) digests.set(bytes, (d = sha256Hex(bytes)));
  return d;
}

interface Waiting {
  t: Upload;
  msg: UploadOpen;
  connection: string;
  resolve: (ack: UploadAck) => void;
  reject: (err: unknown) => void;
}

export class TransferRegistry {
  private readonly transfers = new Map<string, Download | Upload>();
  private readonly byTask = new Map<string, Set<string>>();
  /** Uploads without a sink that declared themselves while every reassembly slot was taken, in arrival order. */
  private readonly waiting: Waiting[] = [];
  private reassembling = 0;

  constructor(private readonly opts: { maxReassembling?: number } = {}) {}
  readonly stats: TransferStats = {
    uploadsOpened: 0, uploadsCompleted: 0, downloadsOffered: 0, chunksIn: 0, chunksOut: 0, bytesIn: 0, bytesOut: 0, refused: 0,
    bufferedBytes: 0, peakBufferedBytes: 0, resumes: [],
  };

  private add(t: Download | Upload): void {
    this.transfers.set(t.id, t);
    let s = this.byTask.get(t.taskId);
    if (!s) this.byTask.set(t.taskId, (s = new Set()));
    s.add(t.id);
  }

  offerDownload(siteId: string, taskId: string, bytes: Uint8Array, chunkBytes: number, timeoutMs: number): DownloadRef {
    const id = randomBytes(16).toString('hex');
    this.add({ kind: 'download', id, siteId, taskId, bytes, chunkBytes, next: 0 });
    this.stats.downloadsOffered++;
    return { transferId: id, bytes: bytes.byteLength, digest: digestOf(bytes), chunkBytes, timeoutMs };
  }

  grantUpload(siteId: string, taskId: string, maxBytes: number, chunkBytes: number, timeoutMs: number, sink?: UploadSink): UploadGrant {
    const id = randomBytes(16).toString('hex');
    this.add({ kind: 'upload', id, siteId, taskId, maxBytes, chunkBytes, sink, received: 0, done: false });
    return { transferId: id, maxBytes, chunkBytes, timeoutMs };
  }

  /** A transfer of this site's, or a refusal that does not say whether the id exists for someone else. */
  private own<K extends 'download' | 'upload'>(siteId: string, transferId: string, kind: K): Extract<Download | Upload, { kind: K }> {
    const t = this.transfers.get(transferId);
    if (!t || t.siteId !== siteId || t.kind !== kind) throw new CohortError('COHORT_ERR_TRANSFER_UNKNOWN', `no ${kind} ${transferId.slice(0, 8)}… is open for this site`);
    return t as Extract<Download | Upload, { kind: K }>;
  }

  private refuse(err: unknown): never {
    this.stats.refused++;
    throw err;
  }

  private resumed(t: Download | Upload, offset: number, total: number): void {
    this.stats.resumes.push({ transferId: t.id, taskId: t.taskId, siteId: t.siteId, direction: t.kind, offset, total, at: new Date().toISOString() });
    if (this.stats.resumes.length > MAX_RESUME_EVENTS) this.stats.resumes.shift();
  }

  readChunk(siteId: string, msg: DownloadChunk, connection: string): Uint8Array {
    try {
      const t = this.own(siteId, msg.transferId, 'download');
      const total = t.bytes.byteLength;
      if (msg.offset % t.chunkBytes !== 0 || msg.offset >= total) {
        throw new CohortError('COHORT_ERR_TRANSFER_OFFSET', `offset ${msg.offset} is not a chunk of this ${total}-byte download`, { chunkBytes: t.chunkBytes, total });
      }
      if (t.lastConnection !== undefined && t.lastConnection !== connection && msg.offset > 0) this.resumed(t, msg.offset, total);
      t.lastConnection = connection;
      const end = chunkEnd(msg.offset, total, t.chunkBytes);
      t.next = Math.max(t.next, end);
      this.stats.chunksOut++;
      this.stats.bytesOut += end - msg.offset;
      return t.bytes.subarray(msg.offset, end);
    } catch (err) {
      return this.refuse(err);
    }
  }

  /**
   * Declares an upload, or re-declares it after a reconnect: the answer says where to continue. An upload to be
   * reassembled may wait here for a free slot.
   */
  openUpload(siteId: string, msg: UploadOpen, connection: string): UploadAck | Promise<UploadAck> {
    let t: Upload;
    try {
      t = this.own(siteId, msg.transferId, 'upload');
      if (t.failed) throw new CohortError(t.failed.code, t.failed.message);
      if (msg.bytes > t.maxBytes) throw new CohortError('COHORT_ERR_TRANSFER_TOO_LARGE', `upload of ${msg.bytes} bytes exceeds the grant of ${t.maxBytes}`, { maxBytes: t.maxBytes });
      if (t.declared) {
        if (t.declared.bytes !== msg.bytes || t.declared.digest !== msg.digest) {
          throw new CohortError('COHORT_ERR_TRANSFER_MALFORMED', 'this upload was declared with another size or digest');
        }
        if (t.lastConnection !== connection && t.received > 0 && !t.done) this.resumed(t, t.received, t.declared.bytes);
        t.lastConnection = connection;
        return { received: t.received };
      }
      if (t.sink) {
        t.sink.open(msg.bytes);
        return this.declare(t, msg, connection);
      }
    } catch (err) {
      return this.refuse(err);
    }
    if (this.reassembling < (this.opts.maxReassembling ?? 1)) return this.declare(t, msg, connection);
    return new Promise<UploadAck>((resolve, reject) => {
      // Asked again (the site's wait for the answer ran out): the newest question gets the answer.
      const i = this.waiting.findIndex((w) => w.t === t);
      if (i >= 0) this.waiting.splice(i, 1)[0]!.reject(new CohortError('COHORT_ERR_PROTOCOL_TIMEOUT', 'superseded by a newer upload-open'));
      this.waiting.push({ t, msg, connection, resolve, reject });
    });
  }

  private declare(t: Upload, msg: UploadOpen, connection: string): UploadAck {
    if (!t.sink) {
      t.buffer = new Uint8Array(msg.bytes);
      this.reassembling++;
      this.stats.bufferedBytes += msg.bytes;
      this.stats.peakBufferedBytes = Math.max(this.stats.peakBufferedBytes, this.stats.bufferedBytes);
    }
    t.declared = { bytes: msg.bytes, digest: msg.digest };
    t.hash = createHash('sha256');
    t.lastConnection = connection;
    this.stats.uploadsOpened++;
    return { received: 0 };
  }

  /** Gives free reassembly slots to waiting uploads, oldest first. */
  private admit(): void {
    while (this.waiting.length > 0 && this.reassembling < (this.opts.maxReassembling ?? 1)) {
      const w = this.waiting.shift()!;
      if (this.transfers.get(w.t.id) !== w.t) {
        w.reject(new CohortError('COHORT_ERR_TRANSFER_UNKNOWN', 'the task ended before the upload could start'));
        continue;
      }
      w.resolve(this.declare(w.t, w.msg, w.connection));
    }
  }

  /** Uploads waiting for a reassembly slot. */
  get queued(): number {
    return this.waiting.length;
  }

  writeChunk(siteId: string, msg: UploadChunk, connection: string): UploadAck {
    let t: Upload;
    try {
      t = this.own(siteId, msg.transferId, 'upload');
      if (t.failed) throw new CohortError(t.failed.code, t.failed.message);
      if (!t.declared || !t.hash) throw new CohortError('COHORT_ERR_TRANSFER_MALFORMED', 'declare the upload (upload-open) before its chunks');
      const total = t.declared.bytes;
      if (msg.offset !== t.received) {
        throw new CohortError('COHORT_ERR_TRANSFER_OFFSET', `chunk at offset ${msg.offset}; the next expected is ${t.received}`, { expected: t.received });
      }
      const len = msg.data.byteLength;
      if (len === 0) throw new CohortError('COHORT_ERR_TRANSFER_MALFORMED', 'empty chunk');
      if (len > t.chunkBytes) throw new CohortError('COHORT_ERR_TRANSFER_TOO_LARGE', `chunk of ${len} bytes exceeds the chunk size ${t.chunkBytes}`);
      if (msg.offset + len > total) throw new CohortError('COHORT_ERR_TRANSFER_TOO_LARGE', `chunk ends at ${msg.offset + len}, past the declared ${total} bytes`);
      // Every chunk but the last is exactly the chunk size, so offsets stay aligned (lanes, float32 values).
      if (msg.offset + len < total && len !== t.chunkBytes) {
        throw new CohortError('COHORT_ERR_TRANSFER_MALFORMED', `truncated chunk: ${len} bytes before the end; chunks are ${t.chunkBytes} bytes`);
      }
    } catch (err) {
      return this.refuse(err);
    }
    // Accepted from here on: the bytes count, whatever the sink makes of them.
    try {
      t.hash!.update(msg.data);
      if (t.sink) t.sink.chunk(msg.offset, msg.data);
      else t.buffer!.set(msg.data, msg.offset);
    } catch (err) {
      t.failed = toWireError(err);
      this.stats.refused++;
      throw err;
    }
    t.received += msg.data.byteLength;
    t.lastConnection = connection;
    this.stats.chunksIn++;
    this.stats.bytesIn += msg.data.byteLength;
    if (t.received === t.declared!.bytes) {
      if (t.hash!.digest('hex') !== t.declared!.digest) {
        t.failed = { code: 'COHORT_ERR_TRANSFER_DIGEST', message: 'the uploaded bytes do not match the declared SHA-256 digest' };
        this.stats.refused++;
        throw new CohortError(t.failed.code, t.failed.message);
      }
      t.done = true;
      this.stats.uploadsCompleted++;
    }
    return { received: t.received };
  }

  /** The task's upload, if the site began one (declared it). */
  uploadOf(taskId: string): { transferId: string; received: number; done: boolean; failed?: WireError } | undefined {
    for (const id of this.byTask.get(taskId) ?? []) {
      const t = this.transfers.get(id);
      if (t?.kind === 'upload' && t.declared) return { transferId: t.id, received: t.received, done: t.done, ...(t.failed ? { failed: t.failed } : {}) };
    }
    return undefined;
  }

  /** Whether the task has a chunked transfer under way, which makes it worth waiting for the site to come back. */
  resumable(taskId: string): boolean {
    for (const id of this.byTask.get(taskId) ?? []) {
      const t = this.transfers.get(id);
      if (t && (t.kind === 'download' || t.declared) && !(t.kind === 'upload' && t.failed)) return true;
    }
    return false;
  }

  /**
   * The reply to `taskId` names `transferId` as its payload: the upload must be this task's, complete and verified.
   * Returns the reassembled bytes (none when a sink took them).
   */
  complete(taskId: string, transferId: string): Uint8Array | undefined {
    const t = this.transfers.get(transferId);
    if (!t || t.kind !== 'upload' || t.taskId !== taskId) throw new CohortError('COHORT_ERR_TRANSFER_UNKNOWN', 'the reply names an upload that is not this task\'s');
    if (t.failed) throw new CohortError(t.failed.code, t.failed.message);
    if (!t.done) {
      throw new CohortError('COHORT_ERR_TRANSFER_INCOMPLETE', `the reply came after ${t.received} of ${t.declared?.bytes ?? '?'} bytes of its upload`, { received: t.received });
    }
    return t.buffer;
  }

  /** Forgets every transfer of a finished task (its buffers go with it). */
  release(taskId: string): void {
    for (const id of this.byTask.get(taskId) ?? []) {
      const t = this.transfers.get(id);
      if (t?.kind === 'upload' && t.buffer) {
        this.stats.bufferedBytes -= t.buffer.byteLength;
        this.reassembling--;
      }
      this.transfers.delete(id);
    }
    this.byTask.delete(taskId);
    for (let i = this.waiting.length - 1; i >= 0; i--) {
      if (this.waiting[i]!.t.taskId === taskId) this.waiting.splice(i, 1)[0]!.reject(new CohortError('COHORT_ERR_TRANSFER_UNKNOWN', 'the task ended before the upload could start'));
    }
    this.admit();
  }

  get open(): number {
    return this.transfers.size;
  }
}
