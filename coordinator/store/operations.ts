/**
 * Every change to the coordinator's durable state, written once as a pure function over `StoreData` and shared
 * by every backend (lowdb, PostgreSQL), so both enforce exactly the same rules (a round recorded once and in
 * order, a token spent once, a site name registered once).
 *
 * Each operation checks everything it needs BEFORE it changes anything: a refused operation leaves the data
 * as it was, which lets a backend keep its in-memory copy without a snapshot. It reports every record it touched
 * through `touch`, so a backend that stores records one by one (PostgreSQL) writes exactly those.
 */
import { CohortError } from '../../protocol/errors.ts';
import type { AuditRecord, RoundRecord, SiteRecord, StoreData, StudyRecord, TokenRecord } from './store.ts';

/** The record kinds a backend stores; the key of each record is `recordKey(kind, record)`. */
export type RecordKind = 'study' | 'round' | 'site' | 'token' | 'audit';
export type Touch = (kind: RecordKind, key: string) => void;
export type Operation<T> = (data: StoreData, touch: Touch) => T;

export const roundKey = (studyId: string, round: number): string => `${studyId}#${round}`;

function nextAudit(d: StoreData, touch: Touch, entry: Omit<AuditRecord, 'seq' | 'at'>, at = new Date().toISOString()): AuditRecord {
  const rec: AuditRecord = { seq: (d.audit.at(-1)?.seq ?? 0) + 1, at, ...structuredClone(entry) };
  d.audit.push(rec);
  touch('audit', String(rec.seq));
  return rec;
}

export const ops = {
  addStudy: (study: StudyRecord): Operation<void> => (d, touch) => {
    if (d.studies.some((x) => x.id === study.id)) throw new CohortError('COHORT_ERR_STUDY_BAD_STATE', `study ${study.id} already exists`);
    d.studies.push(structuredClone(study));
    touch('study', study.id);
  },

  updateStudy: (id: string, patch: Partial<Omit<StudyRecord, 'id'>>): Operation<StudyRecord> => (d, touch) => {
    const s = d.studies.find((x) => x.id === id);
    if (!s) throw new CohortError('COHORT_ERR_STUDY_NOT_FOUND', `study ${id} not found`);
    Object.assign(s, structuredClone(patch), { updatedAt: new Date().toISOString() });
    touch('study', id);
    return structuredClone(s);
  },

  /** A round is recorded only as the next one of its study, together with the study's progress and an audit line. */
  completeRound: (record: RoundRecord): Operation<void> => (d, touch) => {
    const s = d.studies.find((x) => x.id === record.studyId);
    if (!s) throw new CohortError('COHORT_ERR_STUDY_NOT_FOUND', `study ${record.studyId} not found`);
    if (record.round !== s.completedRounds + 1) {
      throw new CohortError('COHORT_ERR_ROUND_STALE', `round ${record.round} is not the next round (${s.completedRounds + 1})`);
    }
    d.rounds.push(structuredClone(record));
    touch('round', roundKey(record.studyId, record.round));
    s.completedRounds = record.round;
    s.updatedAt = record.completedAt;
    touch('study', s.id);
    nextAudit(d, touch, {
      action: 'round.completed', studyId: record.studyId, round: record.round,
      details: { participants: record.participants, tasks: record.tasks ?? {}, failures: record.failures.map((f) => ({ site: f.site, code: f.code })) },
    }, record.completedAt);
  },

  addSite: (site: SiteRecord): Operation<void> => (d, touch) => {
    if (d.sites.some((x) => x.name === site.name)) throw new CohortError('COHORT_ERR_AUTH_KEY_MISMATCH', `site ${site.name} is already registered`);
    d.sites.push(structuredClone(site));
    touch('site', site.id);
  },

  revokeSite: (id: string): Operation<SiteRecord> => (d, touch) => {
    const s = d.sites.find((x) => x.id === id || x.name === id);
    if (!s) throw new CohortError('COHORT_ERR_AUTH_UNKNOWN_SITE', `no site ${id}`);
    s.revokedAt ??= new Date().toISOString();
    touch('site', s.id);
    return structuredClone(s);
  },

  touchSite: (id: string): Operation<void> => (d, touch) => {
    const s = d.sites.find((x) => x.id === id);
    if (!s) return;
    s.lastSeenAt = new Date().toISOString();
    touch('site', id);
  },

  addToken: (t: TokenRecord): Operation<void> => (d, touch) => {
    d.tokens.push({ ...t });
    touch('token', t.id);
  },

  /** Spends a one-time enrollment token and registers the site in the same write. */
  enrollSite: (tokenHash: string, site: SiteRecord): Operation<void> => (d, touch) => {
    const t = d.tokens.find((x) => x.kind === 'enrollment' && x.hash === tokenHash);
    if (!t || t.usedAt || t.revokedAt || (t.expiresAt && Date.parse(t.expiresAt) <= Date.now())) {
      throw new CohortError('COHORT_ERR_AUTH_ENROLLMENT_TOKEN');
    }
    if (t.name && t.name !== site.name) throw new CohortError('COHORT_ERR_AUTH_ENROLLMENT_TOKEN', `this token was issued for site "${t.name}"`);
    if (d.sites.some((x) => x.name === site.name)) throw new CohortError('COHORT_ERR_AUTH_KEY_MISMATCH', `site ${site.name} is already registered`);
    t.usedAt = new Date().toISOString();
    touch('token', t.id);
    d.sites.push({ ...structuredClone(site), enrolledWith: t.id });
    touch('site', site.id);
  },

  revokeToken: (id: string): Operation<void> => (d, touch) => {
    const t = d.tokens.find((x) => x.id === id);
    if (!t) throw new CohortError('COHORT_ERR_AUTH_TOKEN_UNKNOWN', `no token ${id}`);
    t.revokedAt ??= new Date().toISOString();
    touch('token', id);
  },

  appendAudit: (entry: Omit<AuditRecord, 'seq' | 'at'>): Operation<AuditRecord> => (d, touch) => structuredClone(nextAudit(d, touch, entry)),
};

/** Where a record of `kind` lives in `StoreData`, and its key. */
export function recordKey(kind: RecordKind, rec: unknown): string {
  switch (kind) {
    case 'round': {
      const r = rec as RoundRecord;
      return roundKey(r.studyId, r.round);
    }
    case 'audit':
      return String((rec as AuditRecord).seq);
    default:
      return (rec as { id: string }).id;
  }
}

export function collectionOf(d: StoreData, kind: RecordKind): unknown[] {
  switch (kind) {
    case 'study': return d.studies;
    case 'round': return d.rounds;
    case 'site': return d.sites;
    case 'token': return d.tokens;
    case 'audit': return d.audit;
  }
}

/** Inserts or replaces one record in `d` (used when a backend loads records written elsewhere). */
export function putRecord(d: StoreData, kind: RecordKind, doc: unknown): void {
  const list = collectionOf(d, kind);
  if (kind === 'audit' && ((list.at(-1) as AuditRecord | undefined)?.seq ?? 0) < (doc as AuditRecord).seq) {
    list.push(doc);
    return;
  }
  const key = recordKey(kind, doc);
  const i = list.findIndex((x) => recordKey(kind, x) === key);
  if (i >= 0) list[i] = doc;
  else if (kind === 'audit') {
    // Keep the audit ordered by seq even when records arrive out of order.
    const seq = (doc as AuditRecord).seq;
    let j = list.length;
    while (j > 0 && (list[j - 1] as AuditRecord).seq > seq) j--;
    list.splice(j, 0, doc);
  } else list.push(doc);
}

export function findRecord(d: StoreData, kind: RecordKind, key: string): unknown {
  return collectionOf(d, kind).find((x) => recordKey(kind, x) === key);
}
