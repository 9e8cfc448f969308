/**
 * Study approvals. The agent writes what it has seen to `studies/inbox.json`; the hospital's decisions live in
 * `studies/decisions.json`, written only by `cohort site approve|reject`. Two writers never share a file, and both
 * write atomically (temp file + rename). A decision binds to the manifest's hash: any change needs a new one.
 */
import { existsSync, mkdirSync, readFileSync, renameSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { CohortError } from '../protocol/errors.ts';
import { keyFingerprint } from '../protocol/signing.ts';

export interface InboxEntry {
  studyId: string;
  name: string;
  manifestHash: string;
  manifest: unknown;
  researcherPublicKey?: string;
  researcherFingerprint?: string;
  firstSeenAt: string;
  lastSeenAt: string;
  /** The last refusal the agent sent for it, if any. */
  lastRefusal?: string;
}

export interface Decision {
  studyId: string;
  manifestHash: string;
  decision: 'approved' | 'rejected';
  at: string;
  by: string;
  reason?: string;
}

function readJson<T>(file: string, empty: T): T {
  if (!existsSync(file)) return empty;
  try {
    return JSON.parse(readFileSync(file, 'utf8')) as T;
  } catch {
    throw new CohortError('COHORT_ERR_SITE_CONFIG_INVALID', `${file} is not valid JSON`);
  }
}

function writeAtomic(file: string, value: unknown): void {
  const tmp = `${file}.${process.pid}.tmp`;
  writeFileSync(tmp, `${JSON.stringify(value, null, 2)}\n`, { mode: 0o600 });
  renameSync(tmp, file);
}

export class Approvals {
  private readonly inboxFile: string;
  private readonly decisionsFile: string;

  constructor(siteDir: string) {
    const dir = join(siteDir, 'studies');
    mkdirSync(dir, { recursive: true, mode: 0o700 });
    this.inboxFile = join(dir, 'inbox.json');
    this.decisionsFile = join(dir, 'decisions.json');
  }

  inbox(): InboxEntry[] {
    return readJson<InboxEntry[]>(this.inboxFile, []);
  }

  decisions(): Decision[] {
    return readJson<Decision[]>(this.decisionsFile, []);
  }

  /** The decision in force for this exact manifest (the latest one with a matching hash). */
  decisionFor(studyId: string, manifestHash: string): Decision | undefined {
    return this.decisions().filter((d) => d.studyId === studyId && d.manifestHash === manifestHash).at(-1);
  }

  /** Records a study the coordinator offered (agent side). */
  see(entry: Omit<InboxEntry, 'firstSeenAt' | 'lastSeenAt' | 'researcherFingerprint'>, refusal?: string): void {
    const all = this.inbox();
    const now = new Date().toISOString();
    const prev = all.find((e) => e.studyId === entry.studyId && e.manifestHash === entry.manifestHash);
    const next: InboxEntry = {
      ...entry, firstSeenAt: prev?.firstSeenAt ?? now, lastSeenAt: now,
      ...(entry.researcherPublicKey ? { researcherFingerprint: keyFingerprint(entry.researcherPublicKey) } : {}),
      ...(refusal ? { lastRefusal: refusal } : {}),
    };
    writeAtomic(this.inboxFile, [...all.filter((e) => e !== prev), next]);
  }

  /** Records a decision (CLI side, or the agent for a policy auto-approval). */
  decide(studyId: string, decision: 'approved' | 'rejected', by: string, reason?: string, manifestHash?: string): Decision {
    const seen = this.inbox().filter((e) => e.studyId === studyId).at(-1);
    const hash = manifestHash ?? seen?.manifestHash;
    if (!hash) throw new CohortError('COHORT_ERR_STUDY_NOT_FOUND', `study ${studyId} has not been offered to this site yet`);
    const d: Decision = { studyId, manifestHash: hash, decision, at: new Date().toISOString(), by, ...(reason ? { reason } : {}) };
    writeAtomic(this.decisionsFile, [...this.decisions(), d]);
    return d;
  }
}
