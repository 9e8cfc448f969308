/**
 * A site killed mid-round (its process SIGKILLed while it trains) or cut off by the network mid-round (every TCP
 * connection through a proxy dropped) fails that round's task with a code, comes back by itself (a restarted
 * process, a reconnecting agent) and takes part again. tests/integration/study-e2e.test.ts shows the other half:
 * with enough sites left, the round goes on without the one that left.
 */
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { agentFor, createStudy, json, makeSite, startCoordinator, waitForEnd, wdbcManifest, type StudyStatusBody, type TestSite } from '../helpers/cluster.ts';
import { logMessages, startSiteProcess, type Proc } from '../helpers/processes.ts';
import { tcpProxy } from '../helpers/tcp-proxy.ts';
import { splitCsvForSites, WDBC } from '../../cli/demo.ts';
import type { Task } from '../../protocol/messages.ts';

describe('a site that drops out mid-round', () => {
  const procs: Proc[] = [];
  const sites: TestSite[] = [];
  const cleanup: (() => unknown)[] = [];
  afterAll(async () => {
    await Promise.all(sites.map((s) => s.agent.stop()));
    await Promise.all(procs.map((p) => p.kill()));
    for (const c of cleanup) await c();
  });

  it('should rejoin the rounds after it is back, whether its process was killed or its network cut', async () => {
    const c = await startCoordinator();
    cleanup.push(() => c.coordinator.close());
    const parts = splitCsvForSites(WDBC, 3);
    // Site 1: an in-process agent behind a proxy we can cut. Site 2: in-process. Site 3: a real process we kill.
    const proxy = await tcpProxy(new URL(c.url));
    cleanup.push(() => proxy.close());
    const s1 = await makeSite(c.url, 'Site 1', parts[0]!);
    const cfg1 = join(s1.dir, 'site.json');
    writeFileSync(cfg1, JSON.stringify({ ...(JSON.parse(readFileSync(cfg1, 'utf8')) as object), coordinator: proxy.url }));
    const site1 = agentFor(s1.dir);
    const site2 = await makeSite(c.url, 'Site 2', parts[1]!);
    sites.push(site1, site2);
    const s3 = await makeSite(c.url, 'Site 3', parts[2]!);
    const c3 = join(s3.dir, 'site.json');
    writeFileSync(c3, JSON.stringify({ ...(JSON.parse(readFileSync(c3, 'utf8')) as object), reconnect: { initialDelayMs: 100, maxDelayMs: 500 } }));
    await Promise.all([site1.agent.start(), site2.agent.start()]);
    let site3 = await startSiteProcess(s3.dir);
    procs.push(site3);

    // Watch the real transport: act the moment a train task leaves for the site (mid-round by construction).
    const faults: { site: string; round: number; at: number }[] = [];
    const send = c.coordinator.transport.send.bind(c.coordinator.transport);
    let restarted: Promise<Proc> | undefined;
    c.coordinator.transport.send = (siteId: string, task: Task, timeoutMs: number) => {
      const name = c.coordinator.transport.onlineSites().find((s) => s.id === siteId)?.name;
      const p = send(siteId, task, timeoutMs);
      if (task.kind === 'train' && name === 'Site 3' && task.round === 2 && !restarted) {
        faults.push({ site: 'Site 3', round: task.round, at: Date.now() });
        const dying = site3;
        restarted = dying.kill().then(() => startSiteProcess(s3.dir)).then((p3) => { site3 = p3; procs.push(p3); return p3; });
      }
      if (task.kind === 'train' && name === 'Site 1' && task.round === 4 && !faults.some((f) => f.site === 'Site 1')) {
        faults.push({ site: 'Site 1', round: task.round, at: Date.now() });
        setTimeout(() => proxy.cut(), 5);
      }
      return p;
    };

    // Every site is needed (minSites 3), so the study cannot run ahead of a site that is away: the interrupted
    // round is retried once the site is back, and the site must take part in it and in every round after.
    const rounds = 6;
    const id = await createStudy(c.url, wdbcManifest({
      training: { rounds, localEpochs: 2, batchSize: 16, optimizer: 'adam', learningRate: 0.05 },
      participation: { minSites: 3, roundDeadlineMs: 20_000, waitForSitesMs: 30_000, maxRoundAttempts: 3 },
    }));
    await json(c.url, `/api/studies/${id}/start`, { method: 'POST' });
    const final: StudyStatusBody = await waitForEnd(c.url, id, 150_000);
    expect(final.study.status).toBe('completed');
    expect(faults.map((f) => f.site).sort()).toEqual(['Site 1', 'Site 3']);
    const records = (await json<{ rounds: (StudyStatusBody['rounds'][number] & { attempts: number })[] }>(c.url, `/api/studies/${id}`)).body.rounds;
    expect(records.map((r) => r.round)).toEqual(Array.from({ length: rounds }, (_, i) => i + 1));
    for (const f of faults) {
      // The coordinator saw the site fail mid-round, with a code (under secure aggregation, the default, the train
      // task is the masked-input stage and its failure is logged as a drop from the session)...
      const failedMidRound = (l: Record<string, unknown>) => l.site === f.site && /^COHORT_ERR_PROTOCOL_(DISCONNECTED|TIMEOUT)$/.test(String(l.code))
        && ((l.msg === 'site task failed' && l.stage === 'train') || (l.msg === 'secure aggregation: site dropped' && l.stage === 'masked-input'));
      expect(c.log.lines.some(failedMidRound), f.site).toBe(true);
      // ...retried the round, and the site, back, took part in the retry and in every round after.
      const hit = records.find((r) => r.round === f.round)!;
      expect(hit.attempts, `round ${f.round}`).toBeGreaterThan(1);
      for (const r of records.filter((x) => x.round >= f.round)) expect(r.participants, `round ${r.round}`).toContain(f.site);
    }
    // The killed site really was a new process, and the cut site really reconnected.
    expect(logMessages((await restarted!).lines).some((l) => l.msg === 'connected and authenticated')).toBe(true);
    expect(site1.log.lines.filter((l) => l.msg === 'connected and authenticated').length).toBeGreaterThanOrEqual(2);
  }, 180_000);
});
