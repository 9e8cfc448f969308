/**
 * Network loss in the middle of a large transfer: an agent behind a TCP proxy has every connection cut while it
 * uploads its masked vector (round 1) and again while it downloads a model (later), reconnects by itself and
 * continues each transfer from the last acknowledged chunk. The round is not retried (one attempt each), the site
 * is in every round, and the stored model moved by exactly the weighted mean of the sites' updates, re-trained
 * here from the recorded tasks: a chunk added twice or lost would show in that comparison.
 */
import { readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { agentFor, makeSite, runStudy, startCoordinator, wdbcManifest, type TestSite } from '../helpers/cluster.ts';
import { tcpProxy } from '../helpers/tcp-proxy.ts';
import { meanError, replayTraining } from '../helpers/replay.ts';
import { splitCsvForSites, WDBC } from '../../cli/demo.ts';
import type { TrainTask } from '../../protocol/messages.ts';
import { flatDelta } from '../../protocol/crypto/quantize.ts';

describe('a large transfer cut by the network', () => {
  const sites: TestSite[] = [];
  const cleanup: (() => unknown)[] = [];
  afterAll(async () => {
    await Promise.all(sites.map((s) => s.agent.stop()));
    for (const c of cleanup.reverse()) await c();
  });

  it('should resume from the last acknowledged chunk, upload and download, and complete the round with that site', async () => {
    // 64 KiB chunks: the 1.1 MB model of this study is 18 chunks each way.
    const c = await startCoordinator({ transferChunkBytes: 64 * 1024 });
    cleanup.push(() => c.coordinator.close());
    const proxy = await tcpProxy(new URL(c.url));
    cleanup.push(() => proxy.close());
    const parts = splitCsvForSites(WDBC, 3);
    const s1 = await makeSite(c.url, 'Site 1', parts[0]!);
    const cfg = join(s1.dir, 'site.json');
    writeFileSync(cfg, JSON.stringify({ ...(JSON.parse(readFileSync(cfg, 'utf8')) as object), coordinator: proxy.url }));
    const cut = agentFor(s1.dir);
    sites.push(cut, await makeSite(c.url, 'Site 2', parts[1]!), await makeSite(c.url, 'Site 3', parts[2]!));
    await Promise.all(sites.map((s) => s.agent.start()));

    // Cut the moment a third of the site's upload (then, later, of a download) has gone through the coordinator.
    const { transfers } = c.coordinator.transport;
    const cuts: { direction: string; at: number }[] = [];
    const writeChunk = transfers.writeChunk.bind(transfers);
    transfers.writeChunk = (siteId, msg, connection) => {
      const ack = writeChunk(siteId, msg, connection);
      if (cuts.length === 0 && siteId === cut.agent.siteId && ack.received >= 6 * 64 * 1024) {
        cuts.push({ direction: 'upload', at: ack.received });
        proxy.cut();
      }
      return ack;
    };
    const readChunk = transfers.readChunk.bind(transfers);
    transfers.readChunk = (siteId, msg, connection) => {
      const data = readChunk(siteId, msg, connection);
      if (cuts.length === 1 && siteId === cut.agent.siteId && msg.offset >= 6 * 64 * 1024) {
        cuts.push({ direction: 'download', at: msg.offset + data.byteLength });
        proxy.cut();
      }
      return data;
    };
    const trainTasks: { siteId: string; task: TrainTask }[] = [];
    const send = c.coordinator.transport.send.bind(c.coordinator.transport);
    c.coordinator.transport.send = (siteId, task, timeoutMs, opts) => {
      if (task.kind === 'train') trainTasks.push({ siteId, task });
      return send(siteId, task, timeoutMs, opts);
    };

    const res = await runStudy(c.url, wdbcManifest({
      model: { template: 'mlp', hidden: [512, 512] },
      training: { rounds: 2, localEpochs: 1, batchSize: 32, optimizer: 'adam', learningRate: 0.01 },
      participation: { minSites: 3, roundDeadlineMs: 30_000, waitForSitesMs: 20_000, maxRoundAttempts: 2 },
    }), 150_000);
    expect(res.study.error).toBeUndefined();
    expect(res.study.status).toBe('completed');
    expect(cuts.map((x) => x.direction)).toEqual(['upload', 'download']);

    // The site reconnected and continued each transfer where the coordinator had it, not from zero.
    expect(cut.log.lines.filter((l) => l.msg === 'connected and authenticated').length).toBeGreaterThanOrEqual(3);
    const resumes = transfers.stats.resumes.filter((r) => r.siteId === cut.agent.siteId);
    const up = resumes.find((r) => r.direction === 'upload');
    const down = resumes.find((r) => r.direction === 'download');
    expect(up?.offset).toBeGreaterThan(0);
    expect(up!.offset).toBeGreaterThanOrEqual(cuts[0]!.at - 64 * 1024);
    expect(up!.offset).toBeLessThanOrEqual(cuts[0]!.at);
    expect(down?.offset).toBeGreaterThan(0);
    expect(cut.agent.stats.uploadResumes).toContain(up!.offset);
    expect(cut.agent.stats.downloadResumes.length).toBeGreaterThan(0);
    expect(cut.agent.stats.downloadResumes.every((o) => o > 0)).toBe(true);

    // No retry was needed: the site is in every round, each in one attempt, with its evaluation.
    const rounds = res.rounds as unknown as { round: number; attempts: number; participants: string[]; perSite: Record<string, unknown> }[];
    for (const r of rounds) {
      expect(r.attempts, `round ${r.round}`).toBe(1);
      expect(r.participants.sort(), `round ${r.round}`).toEqual(['Site 1', 'Site 2', 'Site 3']);
      expect(Object.keys(r.perSite).sort(), `round ${r.round}`).toEqual(['Site 1', 'Site 2', 'Site 3']);
    }

    // Round 1's model moved by the weighted mean of the three updates (quantization error only): the resumed
    // masked vector was added once, every chunk of it.
    const tasks = trainTasks.filter((t) => t.task.round === 1);
    expect(tasks).toHaveLength(3);
    const updates = await Promise.all(tasks.map((t) => replayTraining(sites.find((s) => s.agent.siteId === t.siteId)!.dir, t.task)));
    const stored = flatDelta(await c.coordinator.checkpoints.load(res.study.id, 1), await c.coordinator.checkpoints.load(res.study.id, 0));
    expect(meanError(stored, updates)).toBeLessThan(1e-4);
  }, 180_000);
});
