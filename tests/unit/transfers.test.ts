/**
 * The coordinator's transfer registry on its own: admission of reassembly buffers (a bounded number of uploads held
 * at once, the rest answered when a slot frees up), sinks that refuse, and resumes recorded where they pick up.
 * The wire side (real sockets, every refusal) is in tests/integration/fuzz.test.ts and transfer-resume.test.ts.
 */
import { describe, expect, it } from 'vitest';
import { TransferRegistry } from '../../coordinator/transport/transfers.ts';
import { CohortError } from '../../protocol/errors.ts';
import { sha256Hex } from '../../protocol/transfer.ts';

const CHUNK = 1024;
const bytes = (n: number, k = 1) => new Uint8Array(n).map((_, i) => (i * k) & 255);

function upload(reg: TransferRegistry, site: string, task: string, payload: Uint8Array, sink?: Parameters<TransferRegistry['grantUpload']>[5]) {
  const grant = reg.grantUpload(site, task, 1 << 20, CHUNK, 60_000, sink);
  return { grant, open: { transferId: grant.transferId, bytes: payload.length, digest: sha256Hex(payload) } };
}

function send(reg: TransferRegistry, site: string, transferId: string, payload: Uint8Array, connection = 'c1'): void {
  for (let off = 0; off < payload.length; off += CHUNK) reg.writeChunk(site, { transferId, offset: off, data: payload.subarray(off, off + CHUNK) }, connection);
}

describe('transfer registry', () => {
  it('should hold one reassembled upload at a time and answer the next declaration when it is released', async () => {
    const reg = new TransferRegistry();
    const p1 = bytes(3000, 3);
    const p2 = bytes(2500, 5);
    const a = upload(reg, 'site-a', 'task-a', p1);
    const b = upload(reg, 'site-b', 'task-b', p2);
    expect(reg.openUpload('site-a', a.open, 'c1')).toEqual({ received: 0 });
    const waiting = reg.openUpload('site-b', b.open, 'c2');
    expect(waiting).toBeInstanceOf(Promise);
    expect(reg.queued).toBe(1);
    let answered = false;
    void (waiting as Promise<unknown>).then(() => { answered = true; });
    send(reg, 'site-a', a.grant.transferId, p1);
    expect(Buffer.from(reg.complete('task-a', a.grant.transferId)!).equals(Buffer.from(p1))).toBe(true);
    await Promise.resolve();
    expect(answered).toBe(false);
    expect(reg.stats.peakBufferedBytes).toBe(p1.length);
    reg.release('task-a');
    expect(await waiting).toEqual({ received: 0 });
    send(reg, 'site-b', b.grant.transferId, p2, 'c2');
    expect(Buffer.from(reg.complete('task-b', b.grant.transferId)!).equals(Buffer.from(p2))).toBe(true);
    reg.release('task-b');
    expect(reg.stats.peakBufferedBytes).toBe(p1.length);
    expect(reg.stats.bufferedBytes).toBe(0);
    expect(reg.open).toBe(0);
  });

  it('should refuse a waiting declaration whose task ends, and keep only the newest of repeated ones', async () => {
    const reg = new TransferRegistry();
    const a = upload(reg, 'site-a', 'task-a', bytes(2000));
    const b = upload(reg, 'site-b', 'task-b', bytes(2000));
    reg.openUpload('site-a', a.open, 'c1');
    const first = reg.openUpload('site-b', b.open, 'c2') as Promise<unknown>;
    const second = reg.openUpload('site-b', b.open, 'c2') as Promise<unknown>;
    await expect(first).rejects.toMatchObject({ code: 'COHORT_ERR_PROTOCOL_TIMEOUT' });
    expect(reg.queued).toBe(1);
    reg.release('task-b');
    await expect(second).rejects.toMatchObject({ code: 'COHORT_ERR_TRANSFER_UNKNOWN' });
    expect(reg.queued).toBe(0);
  });

  it('should stream into a sink without holding the upload, and fail the upload when the sink refuses', () => {
    const reg = new TransferRegistry();
    const seen: number[] = [];
    const p = bytes(2600, 7);
    const ok = upload(reg, 'site-a', 'task-a', p, { open: () => undefined, chunk: (off, data) => void seen.push(off, data.byteLength) });
    reg.openUpload('site-a', ok.open, 'c1');
    send(reg, 'site-a', ok.grant.transferId, p);
    expect(seen).toEqual([0, 1024, 1024, 1024, 2048, 552]);
    expect(reg.complete('task-a', ok.grant.transferId)).toBeUndefined();
    expect(reg.stats.peakBufferedBytes).toBe(0);
    const bad = upload(reg, 'site-b', 'task-b', p, { open: () => undefined, chunk: () => { throw new CohortError('COHORT_ERR_TENSOR_SHAPE', 'no'); } });
    reg.openUpload('site-b', bad.open, 'c2');
    expect(() => reg.writeChunk('site-b', { transferId: bad.grant.transferId, offset: 0, data: p.subarray(0, CHUNK) }, 'c2')).toThrow(/no/);
    // Failed for good: a retry is refused with the same code, and the reply naming it is too.
    expect(() => reg.openUpload('site-b', bad.open, 'c2')).toThrow(expect.objectContaining({ code: 'COHORT_ERR_TENSOR_SHAPE' }));
    expect(() => reg.complete('task-b', bad.grant.transferId)).toThrow(expect.objectContaining({ code: 'COHORT_ERR_TENSOR_SHAPE' }));
    expect(reg.resumable('task-b')).toBe(false);
  });

  it('should record where a transfer resumed when it continues on a new connection', () => {
    const reg = new TransferRegistry();
    const p = bytes(4000, 11);
    const u = upload(reg, 'site-a', 'task-a', p);
    reg.openUpload('site-a', u.open, 'c1');
    reg.writeChunk('site-a', { transferId: u.grant.transferId, offset: 0, data: p.subarray(0, CHUNK) }, 'c1');
    expect(reg.resumable('task-a')).toBe(true);
    expect(reg.openUpload('site-a', u.open, 'c2')).toEqual({ received: CHUNK });
    expect(reg.stats.resumes).toMatchObject([{ direction: 'upload', offset: CHUNK, total: p.length, siteId: 'site-a' }]);
    const d = reg.offerDownload('site-a', 'task-a', p, CHUNK, 60_000);
    expect(d.digest).toBe(sha256Hex(p));
    reg.readChunk('site-a', { transferId: d.transferId, offset: 0 }, 'c2');
    reg.readChunk('site-a', { transferId: d.transferId, offset: CHUNK }, 'c3');
    expect(reg.stats.resumes.at(-1)).toMatchObject({ direction: 'download', offset: CHUNK });
  });
});
