/**
 * What hospital IT relies on: enrollment tokens, revocation, the pinned coordinator key, signed and approved
 * manifests, local policy, and a ledger that shows any tampering. Real coordinator, real agents, real sockets.
 */
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import nacl from 'tweetnacl';
import {
  agentFor, createStudy, invite, json, makeSite, RESEARCHER, startCoordinator, tempDir, waitFor, waitForEnd, wdbcManifest,
  type StudyStatusBody,
} from '../helpers/cluster.ts';
import { splitCsvForSites, WDBC } from '../../cli/demo.ts';
import { enroll } from '../../site-agent/enroll.ts';
import { readLedger, verifyLedger } from '../../site-agent/ledger.ts';
import { loadIdentity } from '../../site-agent/keys.ts';
import { Approvals } from '../../site-agent/approvals.ts';
import { signedStudyRequest } from '../../cli/researcher.ts';
import { b64 } from '../../protocol/signing.ts';
import { perTestCluster } from '../helpers/per-test-cluster.ts';

const parts = splitCsvForSites(WDBC, 3);
const short = (over = {}) => wdbcManifest({ training: { rounds: 2, localEpochs: 1, batchSize: 32, optimizer: 'adam', learningRate: 0.05 }, participation: { minSites: 2, roundDeadlineMs: 10_000, waitForSitesMs: 4_000, maxRoundAttempts: 2 }, ...over });

describe('site governance', () => {
  const run = perTestCluster();

  async function cluster(policies: object[] = [{}, {}]) {
    const c = await startCoordinator();
    run.coordinator = c.coordinator;
    run.sites = await Promise.all(policies.map((p, i) => makeSite(c.url, `Site ${i + 1}`, parts[i]!, { policy: p })));
    await Promise.all(run.sites.map((s) => s.agent.start()));
    return c;
  }

  it('should enroll a site once per token and refuse reused, expired or misnamed tokens', async () => {
    const c = await startCoordinator();
    run.coordinator = c.coordinator;
    const token = await invite(c.url, 'North');
    const kp = nacl.sign.keyPair();
    const first = await enroll(c.url, token, 'North', kp);
    expect(first.coordinatorPublicKey).toBe(c.coordinator.coordinatorPublicKey);
    await expect(enroll(c.url, token, 'North2', nacl.sign.keyPair())).rejects.toMatchObject({ code: 'COHORT_ERR_AUTH_ENROLLMENT_TOKEN' });
    const named = await invite(c.url, 'South');
    await expect(enroll(c.url, named, 'Elsewhere', nacl.sign.keyPair())).rejects.toMatchObject({ code: 'COHORT_ERR_AUTH_ENROLLMENT_TOKEN' });
    const expired = await json<{ token: string }>(c.url, '/api/admin/site-invites', { method: 'POST', body: { name: 'Late', expiresInHours: 0.0000001 } });
    await new Promise((r) => setTimeout(r, 20));
    await expect(enroll(c.url, expired.body.token, 'Late', nacl.sign.keyPair())).rejects.toMatchObject({ code: 'COHORT_ERR_AUTH_ENROLLMENT_TOKEN' });
    await expect(enroll(c.url, 'enr_made_up_token_value', 'Nobody', nacl.sign.keyPair())).rejects.toMatchObject({ code: 'COHORT_ERR_AUTH_ENROLLMENT_TOKEN' });
    expect(c.coordinator.store.listSites().map((s) => s.name)).toEqual(['North']);
  });

  it('should refuse a site that never enrolled', async () => {
    const c = await startCoordinator();
    run.coordinator = c.coordinator;
    const s = await makeSite(c.url, 'Stranger', parts[0]!, { enroll: false });
    await expect(s.agent.start()).rejects.toMatchObject({ code: 'COHORT_ERR_AUTH_UNKNOWN_SITE' });
    await s.agent.stop();
  });

  it('should cut a revoked site off at once and never let it reconnect', async () => {
    const c = await cluster();
    const siteId = run.sites[0]!.agent.siteId!;
    const r = await json<{ site: { revokedAt: string } }>(c.url, `/api/admin/sites/${siteId}/revoke`, { method: 'POST' });
    expect(r.status).toBe(200);
    await waitFor(() => !c.coordinator.transport.onlineSites().some((s) => s.id === siteId) || undefined, 5000);
    // The same agent (its own reconnect) and a fresh process of the same site are both refused.
    const again = agentFor(run.sites[0]!.dir);
    await expect(again.agent.start()).rejects.toMatchObject({ code: 'COHORT_ERR_AUTH_SITE_REVOKED' });
    await again.agent.stop();
    await new Promise((res) => setTimeout(res, 600));
    expect(c.coordinator.transport.onlineSites().map((s) => s.name)).toEqual(['Site 2']);
  });

  it('should refuse a coordinator that cannot prove the pinned identity', async () => {
    const c = await cluster([{}]);
    const dir = run.sites[0]!.dir;
    await run.sites[0]!.agent.stop();
    run.sites = [];
    const cfg = JSON.parse(readFileSync(join(dir, 'site.json'), 'utf8')) as { coordinatorPublicKey: string };
    cfg.coordinatorPublicKey = b64(nacl.sign.keyPair().publicKey);
    writeFileSync(join(dir, 'site.json'), JSON.stringify(cfg));
    const s = agentFor(dir);
    await expect(s.agent.start()).rejects.toMatchObject({ code: 'COHORT_ERR_AUTH_COORDINATOR_MISMATCH' });
    await s.agent.stop();
    expect(c.url).toBeTruthy();
  });

  it('should never train on an unapproved manifest, then train once a person approves it', async () => {
    const c = await cluster([{ autoApprove: [] }, { autoApprove: [] }]);
    const id = await createStudy(c.url, short({ participation: { minSites: 2, roundDeadlineMs: 10_000, waitForSitesMs: 30_000, maxRoundAttempts: 2 } }));
    await json(c.url, `/api/studies/${id}/start`, { method: 'POST' });
    const waiting = await waitFor(async () => {
      const s = await json<StudyStatusBody>(c.url, `/api/studies/${id}`);
      return Object.keys(s.body.study.refusals ?? {}).length === 2 ? s.body : undefined;
    }, 10_000);
    expect(Object.values(waiting.study.refusals!).map((r) => r.code)).toEqual(['COHORT_ERR_SITE_STUDY_NOT_APPROVED', 'COHORT_ERR_SITE_STUDY_NOT_APPROVED']);
    expect(waiting.study.completedRounds).toBe(0);
    for (const s of run.sites) expect(readLedger(join(s.dir, 'ledger.jsonl')).every((e) => e.kind === 'describe' && e.outcome === 'refused')).toBe(true);
    // Site IT approves (what `cohort site approve` does).
    for (const s of run.sites) new Approvals(s.dir).decide(id, 'approved', 'it-admin');
    const done = await waitForEnd(c.url, id, 60_000);
    expect(done.study.status).toBe('completed');
    expect(done.rounds).toHaveLength(2);
  });

  it('should refuse a manifest altered after approval, and one whose signature does not verify', async () => {
    const c = await cluster([{ autoApprove: [] }, { autoApprove: [] }]);
    const m1 = short();
    const id = await createStudy(c.url, m1);
    // Approve this study id, but for a different manifest than the one the coordinator holds (as if altered).
    const altered = { ...m1, training: { ...m1.training, rounds: 2, learningRate: 0.5 } };
    for (const s of run.sites) new Approvals(s.dir).decide(id, 'approved', 'it-admin', undefined, (await import('../../protocol/signing.ts')).manifestHash(altered));
    await json(c.url, `/api/studies/${id}/start`, { method: 'POST' });
    const res = await waitForEnd(c.url, id, 30_000);
    expect(res.study.status).toBe('failed');
    expect(res.study.completedRounds).toBe(0);
    expect(Object.values(res.study.refusals!).every((r) => r.code === 'COHORT_ERR_SITE_STUDY_NOT_APPROVED')).toBe(true);
    // A bad signature never even becomes a study.
    const req = signedStudyRequest(m1, RESEARCHER);
    const forged = await json<{ error: { code: string } }>(c.url, '/api/studies', { method: 'POST', body: { ...req, manifest: altered } });
    expect(forged.body.error.code).toBe('COHORT_ERR_SITE_MANIFEST_SIGNATURE');
    for (const s of run.sites) expect(readLedger(join(s.dir, 'ledger.jsonl')).filter((e) => e.kind === 'train')).toHaveLength(0);
  });

  it('should refuse a policy breach with its code, and the researcher sees it', async () => {
    const c = await cluster([{ maxLocalEpochs: 1 }, { requireSecureAggregation: true }]);
    const id = await createStudy(c.url, short({ training: { rounds: 2, localEpochs: 3, batchSize: 32, optimizer: 'adam', learningRate: 0.05 }, privacy: { secureAggregation: false } }));
    await json(c.url, `/api/studies/${id}/start`, { method: 'POST' });
    const res = await waitForEnd(c.url, id, 30_000);
    expect(res.study.status).toBe('failed');
    expect(res.study.refusals).toMatchObject({
      'Site 1': { code: 'COHORT_ERR_POLICY_MAX_EPOCHS' },
      'Site 2': { code: 'COHORT_ERR_POLICY_SECAGG_REQUIRED' },
    });
    const unsigned = await createStudy(c.url, short(), { unsigned: true });
    await json(c.url, `/api/studies/${unsigned}/start`, { method: 'POST' });
    const res2 = await waitForEnd(c.url, unsigned, 30_000);
    expect(Object.values(res2.study.refusals!).map((r) => r.code)).toContain('COHORT_ERR_POLICY_UNSIGNED_MANIFEST');
  });

  it('should keep a ledger that matches the coordinator audit and fails --verify when edited, dropped or reordered', async () => {
    const c = await cluster();
    const id = await createStudy(c.url, short());
    await json(c.url, `/api/studies/${id}/start`, { method: 'POST' });
    const res = await waitForEnd(c.url, id, 30_000);
    expect(res.study.status).toBe('completed');
    const s = run.sites[0]!;
    const file = join(s.dir, 'ledger.jsonl');
    const entries = readLedger(file);
    // Secure aggregation is on by default: every stage's reply is in the ledger, and the update left masked.
    const round = ['secagg-advertise', 'secagg-share', 'train', 'secagg-unmask', 'evaluate'];
    // describe, then the federated-standardization sums, then two rounds.
    expect(entries.map((e) => e.kind)).toEqual(['describe', 'stats', ...round, ...round]);
    const trainEntry = entries.find((e) => e.kind === 'train')!;
    expect(trainEntry.bytes).toBeGreaterThan(31 * 4);
    expect(trainEntry.privacy).toMatchObject({ masked: true, secureAggregation: { threshold: 0.6, clip: 8, quantizationBits: 22 } });
    expect(entries.filter((e) => e.kind.startsWith('secagg-')).every((e) => e.outcome === 'sent' && e.bytes > 0)).toBe(true);
    // The coordinator's audit names the same task ids.
    const audit = await json<{ audit: { action: string; round?: number; details?: { tasks?: Record<string, { train: string; evaluate?: string }> } }[] }>(c.url, `/api/audit?studyId=${id}`);
    const round1 = audit.body.audit.find((a) => a.action === 'round.completed' && a.round === 1)!;
    expect(round1.details!.tasks!['Site 1']!.train).toBe(trainEntry.taskId);
    const pub = loadIdentity(join(s.dir, 'keys', 'identity.json')).publicKey;
    expect(verifyLedger(file, pub).ok).toBe(true);
    const lines = readFileSync(file, 'utf8').trim().split('\n');
    const check = (ls: string[]) => { const f = join(tempDir(), 'l.jsonl'); writeFileSync(f, `${ls.join('\n')}\n`); return verifyLedger(f, pub); };
    const edited = [...lines];
    edited[1] = edited[1]!.replace(/"bytes":\d+/, '"bytes":1');
    expect(check(edited)).toMatchObject({ ok: false, problems: [expect.objectContaining({ line: 2, problem: expect.stringContaining('edited') })] });
    expect(check([lines[0]!, ...lines.slice(2)]).ok).toBe(false);
    expect(check([lines[0]!, lines[2]!, lines[1]!, ...lines.slice(3)]).ok).toBe(false);
    // Re-signing an edited entry with another key does not help.
    const forged = JSON.parse(lines[1]!) as Record<string, unknown>;
    forged.signature = b64(nacl.sign.detached(new TextEncoder().encode(String(forged.hash)), nacl.sign.keyPair().secretKey));
    expect(check([lines[0]!, JSON.stringify(forged), ...lines.slice(2)]).ok).toBe(false);
  });
});
