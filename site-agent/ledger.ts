/**
 * The site's ledger: every message that leaves the site, appended before it is sent to a hash-chained,
 * Ed25519-signed JSON-lines file. Each entry commits to the previous entry's hash, so an edited, dropped or
 * reordered entry breaks verification. A cut-off tail is not visible in the chain alone; compare the last
 * entry with the coordinator's audit log (same task ids) to see it.
 */
import { appendFileSync, existsSync, openSync, closeSync, fsyncSync, readFileSync } from 'node:fs';
import nacl from 'tweetnacl';
import { b64, canonicalJson, fromB64, sha256Hex } from '../protocol/signing.ts';

export interface LedgerBody {
  seq: number;
  at: string;
  prevHash: string;
  studyId: string;
  round: number;
  taskId: string;
  kind: string;
  /** 'sent' for what left the site; 'refused' for a coded refusal (which also leaves, as a reply). */
  outcome: 'sent' | 'refused';
  bytes: number;
  manifestHash?: string;
  code?: string;
  privacy?: Record<string, unknown>;
  epsilonSpent?: number;
}

export interface LedgerEntry extends LedgerBody {
  hash: string;
  signature: string;
}

export const GENESIS = '0'.repeat(64);

export function entryHash(body: LedgerBody): string {
  return sha256Hex(canonicalJson(body));
}

export class Ledger {
  private last: { seq: number; hash: string } | undefined;

  constructor(private readonly file: string, private readonly secretKey: Uint8Array) {}

  private tail(): { seq: number; hash: string } {
    if (this.last) return this.last;
    const entries = readLedger(this.file);
    const e = entries.at(-1);
    this.last = e ? { seq: e.seq, hash: e.hash } : { seq: 0, hash: GENESIS };
    return this.last;
  }

  append(entry: Omit<LedgerBody, 'seq' | 'at' | 'prevHash'>): LedgerEntry {
    const t = this.tail();
    const body: LedgerBody = { seq: t.seq + 1, at: new Date().toISOString(), prevHash: t.hash, ...entry };
    const hash = entryHash(body);
    const signature = b64(nacl.sign.detached(new TextEncoder().encode(hash), this.secretKey));
    const full: LedgerEntry = { ...body, hash, signature };
    appendFileSync(this.file, `${JSON.stringify(full)}\n`, { mode: 0o600 });
    // The ledger must be on disk before the message leaves.
    const fd = openSync(this.file, 'r');
    try { fsyncSync(fd); } finally { closeSync(fd); }
    this.last = { seq: body.seq, hash };
    return full;
  }
}

export function readLedger(file: string): LedgerEntry[] {
  if (!existsSync(file)) return [];
  return readFileSync(file, 'utf8').split('\n').filter((l) => l.trim()).map((l) => JSON.parse(l) as LedgerEntry);
}

export interface VerifyResult {
  ok: boolean;
  entries: number;
  problems: { line: number; problem: string }[];
}

/** Verifies chain, sequence, hashes and signatures; reports every problem with its line. */
export function verifyLedger(file: string, publicKey: Uint8Array): VerifyResult {
  const problems: { line: number; problem: string }[] = [];
  if (!existsSync(file)) return { ok: true, entries: 0, problems };
  const lines = readFileSync(file, 'utf8').split('\n').filter((l) => l.trim());
  let prev = GENESIS;
  let seq = 0;
  lines.forEach((line, i) => {
    const n = i + 1;
    let e: LedgerEntry;
    try {
      e = JSON.parse(line) as LedgerEntry;
    } catch {
      problems.push({ line: n, problem: 'not valid JSON' });
      return;
    }
    const { hash, signature, ...body } = e;
    if (body.seq !== seq + 1) problems.push({ line: n, problem: `sequence ${body.seq} where ${seq + 1} was expected (entry dropped or reordered)` });
    if (body.prevHash !== prev) problems.push({ line: n, problem: 'does not chain to the previous entry (entry dropped, inserted or reordered)' });
    if (entryHash(body) !== hash) problems.push({ line: n, problem: 'content does not match its hash (entry edited)' });
    let sigOk = false;
    try {
      sigOk = nacl.sign.detached.verify(new TextEncoder().encode(hash), fromB64(signature), publicKey);
    } catch {
      sigOk = false;
    }
    if (!sigOk) problems.push({ line: n, problem: 'signature does not verify with the site key' });
    prev = hash;
    seq = typeof body.seq === 'number' ? body.seq : seq + 1;
  });
  return { ok: problems.length === 0, entries: lines.length, problems };
}
