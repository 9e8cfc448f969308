/**
 * Reads over an in-memory `StoreData`, shared by every backend: each keeps the whole state in memory (the lowdb
 * file, or a PostgreSQL replica's cache) and answers reads from it synchronously. Every read returns a copy.
 */
import { CohortError } from '../../protocol/errors.ts';
import { ops, type Operation } from './operations.ts';
import type { AuditRecord, RoundRecord, SiteRecord, StoreData, StudyRecord, TokenRecord } from './store.ts';

export abstract class StateView {
  protected abstract get data(): StoreData;
  /** Runs one operation as one durable write. */
  protected abstract mutate<T>(op: Operation<T>): Promise<T>;

  get coordinatorId(): string {
    return this.data.coordinatorId;
  }

  listStudies(): StudyRecord[] {
    return structuredClone(this.data.studies);
  }
  getStudy(id: string): StudyRecord | undefined {
    const s = this.data.studies.find((x) => x.id === id);
    return s && structuredClone(s);
  }
  mustGetStudy(id: string): StudyRecord {
    const s = this.getStudy(id);
    if (!s) throw new CohortError('COHORT_ERR_STUDY_NOT_FOUND', `study ${id} not found`);
    return s;
  }
  listRounds(studyId: string): RoundRecord[] {
    return structuredClone(this.data.rounds.filter((r) => r.studyId === studyId).sort((a, b) => a.round - b.round));
  }
  listSites(): SiteRecord[] {
    return structuredClone(this.data.sites);
  }
  getSiteByName(name: string): SiteRecord | undefined {
    const s = this.data.sites.find((x) => x.name === name);
    return s && structuredClone(s);
  }
  listTokens(): TokenRecord[] {
    return this.data.tokens.map((t) => ({ ...t }));
  }
  listAudit(filter: { studyId?: string } = {}): AuditRecord[] {
    return structuredClone(this.data.audit.filter((a) => !filter.studyId || a.studyId === filter.studyId));
  }

  addStudy(study: StudyRecord): Promise<void> {
    return this.mutate(ops.addStudy(study));
  }
  updateStudy(id: string, patch: Partial<Omit<StudyRecord, 'id'>>): Promise<StudyRecord> {
    return this.mutate(ops.updateStudy(id, patch));
  }
  completeRound(record: RoundRecord): Promise<void> {
    return this.mutate(ops.completeRound(record));
  }
  addSite(site: SiteRecord): Promise<void> {
    return this.mutate(ops.addSite(site));
  }
  revokeSite(id: string): Promise<SiteRecord> {
    return this.mutate(ops.revokeSite(id));
  }
  touchSite(id: string): Promise<void> {
    return this.mutate(ops.touchSite(id));
  }
  addToken(t: TokenRecord): Promise<void> {
    return this.mutate(ops.addToken(t));
  }
  enrollSite(tokenHash: string, site: SiteRecord): Promise<void> {
    return this.mutate(ops.enrollSite(tokenHash, site));
  }
  revokeToken(id: string): Promise<void> {
    return this.mutate(ops.revokeToken(id));
  }
  appendAudit(entry: Omit<AuditRecord, 'seq' | 'at'>): Promise<AuditRecord> {
    return this.mutate(ops.appendAudit(entry));
  }
}
