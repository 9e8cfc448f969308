/**
 * Chaos: real coordinator and site-agent processes (`cohort coordinator`, `cohort site run`) are SIGKILLed at
 * random stages of a study, from a seeded plan, and restarted. Every study must complete with consistent state:
 * each round recorded once and in order, a checkpoint for each round and no torn file, one audit line per round
 * whose task ids match the round record, and each site's ledger verifying and holding every task id the
 * coordinator recorded for it.
 *
 * `npm test` runs COHORT_CHAOS_RUNS=1; `npm run test:chaos` runs 12 (or COHORT_CHAOS_RUNS), seeds from
 * COHORT_CHAOS_SEED (default 1) on. Studies run under secure aggregation (the default), and kills also wait for
 * its stages: a site done advertising its keys, sharing its mask secrets, or unmasking (the masked input is the
 * `train` task), so the coordinator dies mid-session too.
 */
import { existsSync, readdirSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { afterAll, describe, expect, it } from 'vitest';
import { createStudy, json, makeSite, tempDir, waitFor, wdbcManifest } from '../helpers/cluster.ts';
import { logMessages, startCoordinatorProcess, startSiteProcess, type Proc } from '../helpers/processes.ts';
import { seededRandom } from '../../site-agent/data/split.ts';
import { splitCsvForSites, WDBC } from '../../cli/demo.ts';
import { newToken } from '../../coordinator/auth.ts';
import { loadIdentity } from '../../site-agent/keys.ts';
import { readLedger, verifyLedger } from '../../site-agent/ledger.ts';
import { decodeTensors } from '../../protocol/codec.ts';
import type { StoreData } from '../../coordinator/store/store.ts';

const RUNS = Number(process.env.COHORT_CHAOS_RUNS ?? 1);
const FIRST_SEED = Number(process.env.COHORT_CHAOS_SEED ?? 1);

/** What a kill waits for: an agent finishing a task of this kind, or the coordinator recording a round. */
type Trigger = 'describe' | 'secagg-advertise' | 'secagg-share' | 'train' | 'secagg-unmask' | 'evaluate' | 'recorded';
const ROUND_TRIGGERS = ['secagg-advertise', 'secagg-share', 'train', 'train', 'secagg-unmask', 'evaluate', 'recorded'] as const;
interface Kill { target: 'coordinator' | number; trigger: Trigger; delayMs: number; outcome?: 'done' | 'not reached' }
interface RunReport { seed: number; rounds: number; kills: Kill[]; status: string; ms: number; problems: string[] }

const SITES = 3;

async function chaosRun(seed: number): Promise<RunReport> {
  const rand = seededRandom(seed * 7919);
  const started = Date.now();
  const rounds = 3 + Math.floor(rand() * 3);
  // Kills in study order: the schema check (describe) happens once, so only the first kill may wait for it.
  const kills: Kill[] = Array.from({ length: 2 + Math.floor(rand() * 3) }, (_, i) => ({
    target: rand() < 0.6 ? 'coordinator' : Math.floor(rand() * SITES),
    trigger: (i === 0 ? ['describe', ...ROUND_TRIGGERS] as const : ROUND_TRIGGERS)[Math.floor(rand() * (i === 0 ? ROUND_TRIGGERS.length + 1 : ROUND_TRIGGERS.length))]!,
    delayMs: Math.floor(rand() * 250),
  }));
  const admin = newToken('cht');
  const dataDir = tempDir('cohort-chaos-');
  const procs: Proc[] = [];
  let coord = await startCoordinatorProcess(dataDir, { adminToken: admin });
  procs.push(coord);
  const port = Number(new URL(coord.url).port);
  const parts = splitCsvForSites(WDBC, SITES, seed);
  const dirs: string[] = [];
  for (let i = 0; i < SITES; i++) {
    const s = await makeSite(coord.url, `Site ${i + 1}`, parts[i]!);
    const file = join(s.dir, 'site.json');
    writeFileSync(file, JSON.stringify({ ...(JSON.parse(readFileSync(file, 'utf8')) as object), reconnect: { initialDelayMs: 100, maxDelayMs: 800 } }));
    dirs.push(s.dir);
  }
  const agents: Proc[] = await Promise.all(dirs.map((d) => startSiteProcess(d)));
  procs.push(...agents);
  const problems: string[] = [];
  try {
    const id = await createStudy(coord.url, wdbcManifest({
      name: `chaos ${seed}`,
      training: { rounds, localEpochs: 2, batchSize: 16, optimizer: 'adam', learningRate: 0.05 },
      participation: { minSites: 2, roundDeadlineMs: 15_000, waitForSitesMs: 60_000, maxRoundAttempts: 6 },
    }));
    await json(coord.url, `/api/studies/${id}/start`, { method: 'POST' });

    // Carry out the plan: each kill waits for its trigger among lines logged since the previous kill.
    const seen = new Map<Proc, number>();
    const fresh = (p: Proc) => {
      const from = seen.get(p) ?? 0;
      seen.set(p, p.lines.length);
      return logMessages(p.lines.slice(from));
    };
    const finished = () => readStore(dataDir)?.studies.find((s) => s.id === id)?.status === 'completed';
    for (const kill of kills) {
      for (const p of [coord, ...agents]) fresh(p);
      const hit = await waitFor(() => {
        if (finished()) return 'finished';
        if (kill.trigger === 'recorded') return fresh(coord).some((l) => l.msg === 'round completed') ? 'hit' : undefined;
        return agents.some((a) => fresh(a).some((l) => l.msg === 'task done' && l.task === kill.trigger)) ? 'hit' : undefined;
      }, 90_000, 5).catch(() => 'timeout');
      if (hit !== 'hit') {
        kill.outcome = 'not reached';
        continue;
      }
      await new Promise((r) => setTimeout(r, kill.delayMs));
      kill.outcome = 'done';
      if (kill.target === 'coordinator') {
        await coord.kill();
        coord = await startCoordinatorProcess(dataDir, { adminToken: admin, port });
        procs.push(coord);
      } else {
        const i = kill.target;
        await agents[i]!.kill();
        await new Promise((r) => setTimeout(r, Math.floor(rand() * 800)));
        agents[i] = await startSiteProcess(dirs[i]!, { waitConnected: false });
        procs.push(agents[i]!);
      }
    }
    const status = await waitFor(() => {
      const s = readStore(dataDir)?.studies.find((x) => x.id === id);
      return s && s.status !== 'running' ? s.status : undefined;
    }, 180_000, 100).catch(() => 'still running');
    // Let the last writes land before reading everything back.
    await new Promise((r) => setTimeout(r, 200));
    problems.push(...checkConsistency(dataDir, id, rounds, dirs));
    return { seed, rounds, kills, status, ms: Date.now() - started, problems };
  } finally {
    await Promise.all(procs.map((p) => p.kill()));
  }
}

function readStore(dataDir: string): StoreData | undefined {
  try {
    return JSON.parse(readFileSync(join(dataDir, 'store.json'), 'utf8')) as StoreData;
  } catch {
    return undefined; // between lowdb's write and rename, or before the first write
  }
}

/** Everything that must hold after any sequence of kills. Returns the problems found (empty: consistent). */
function checkConsistency(dataDir: string, id: string, rounds: number, siteDirs: string[]): string[] {
  const problems: string[] = [];
  const store = readStore(dataDir)!;
  const study = store.studies.find((s) => s.id === id)!;
  if (study.status !== 'completed') problems.push(`study ${study.status}: ${JSON.stringify(study.error)}`);
  if (study.completedRounds !== rounds) problems.push(`completedRounds ${study.completedRounds} != ${rounds}`);
  const recs = store.rounds.filter((r) => r.studyId === id);
  const numbers = recs.map((r) => r.round);
  if (JSON.stringify(numbers) !== JSON.stringify(Array.from({ length: rounds }, (_, i) => i + 1))) problems.push(`rounds recorded ${JSON.stringify(numbers)}`);
  // Checkpoints: one per round plus round 0, nothing torn or half-written, each a decodable frame.
  const ckDir = join(dataDir, 'checkpoints', id);
  const files = existsSync(ckDir) ? readdirSync(ckDir) : [];
  if (files.some((f) => f.endsWith('.tmp'))) problems.push(`temp checkpoint files left: ${files.join(',')}`);
  const ck = files.filter((f) => f.endsWith('.cht')).sort();
  if (ck.length !== rounds + 1) problems.push(`${ck.length} checkpoints for ${rounds} rounds`);
  for (const f of ck) {
    try {
      decodeTensors(readFileSync(join(ckDir, f)), { requireFinite: true });
    } catch (err) {
      problems.push(`checkpoint ${f} does not decode: ${(err as Error).message}`);
    }
  }
  // Audit: one 'round.completed' per round, with the task ids of the round record.
  const audits = store.audit.filter((a) => a.action === 'round.completed' && a.studyId === id);
  if (audits.length !== rounds) problems.push(`${audits.length} round.completed audit lines for ${rounds} rounds`);
  for (const r of recs) {
    const a = audits.filter((x) => x.round === r.round);
    if (a.length !== 1) problems.push(`round ${r.round}: ${a.length} audit lines`);
    else if (JSON.stringify((a[0]!.details as { tasks?: unknown }).tasks) !== JSON.stringify(r.tasks ?? {})) problems.push(`round ${r.round}: audit task ids differ from the round record`);
  }
  // Ledgers: each verifies. A participant's train task is in its ledger as sent (its update was aggregated).
  // Its evaluate task is in the ledger (sent or refused), unless the round records that evaluation as failed
  // (a site killed before it answered leaves no ledger line, and the coordinator says so with a code).
  for (const dir of siteDirs) {
    const cfg = JSON.parse(readFileSync(join(dir, 'site.json'), 'utf8')) as { name: string; keyFile: string };
    const file = join(dir, 'ledger.jsonl');
    const v = verifyLedger(file, loadIdentity(join(dir, cfg.keyFile)).publicKey);
    if (!v.ok) problems.push(`${cfg.name} ledger: ${JSON.stringify(v.problems.slice(0, 3))}`);
    const entries = readLedger(file);
    const sent = new Set(entries.filter((e) => e.outcome === 'sent').map((e) => e.taskId));
    const any = new Set(entries.map((e) => e.taskId));
    for (const r of recs) {
      const t = r.tasks?.[cfg.name];
      if (!r.participants.includes(cfg.name)) continue;
      if (!t) {
        problems.push(`round ${r.round}: no task ids for participant ${cfg.name}`);
        continue;
      }
      if (!sent.has(t.train)) problems.push(`round ${r.round}: ${cfg.name}'s ledger lacks its aggregated train task ${t.train}`);
      const evalFailed = r.failures.some((f) => f.site === cfg.name && f.stage === 'evaluate');
      if (t.evaluate && !any.has(t.evaluate) && !evalFailed) problems.push(`round ${r.round}: ${cfg.name}'s ledger lacks evaluate task ${t.evaluate}, and no failure is recorded`);
      if (t.evaluate && sent.has(t.evaluate) && !(cfg.name in (r.perSite ?? {}))) problems.push(`round ${r.round}: ${cfg.name} sent its evaluation but the round has no metrics for it`);
    }
  }
  return problems;
}

describe('chaos: processes killed at random stages of a study', () => {
  const reports: RunReport[] = [];
  afterAll(() => {
    const stage = new Map<string, number>();
    for (const k of reports.flatMap((r) => r.kills)) {
      const key = `${k.target === 'coordinator' ? 'coordinator' : 'site agent'} after ${k.trigger}${k.outcome === 'not reached' ? ' (not reached: study ended first)' : ''}`;
      stage.set(key, (stage.get(key) ?? 0) + 1);
    }
    console.log([
      `chaos summary: ${reports.length} runs, ${reports.filter((r) => r.status === 'completed' && r.problems.length === 0).length} completed consistently`,
      ...[...stage].sort().map(([k, n]) => `  ${String(n).padStart(3)} kills: ${k}`),
      ...reports.map((r) => `  seed ${r.seed}: ${r.rounds} rounds, ${r.kills.filter((k) => k.outcome === 'done').length} kills, ${r.status}, ${(r.ms / 1000).toFixed(1)} s${r.problems.length ? `, PROBLEMS: ${r.problems.join('; ')}` : ''}`),
    ].join('\n'));
  });

  for (let i = 0; i < RUNS; i++) {
    const seed = FIRST_SEED + i;
    it(`should complete the study with consistent state when processes are killed (seed ${seed})`, async () => {
      const report = await chaosRun(seed);
      reports.push(report);
      expect(report.problems).toEqual([]);
      expect(report.status).toBe('completed');
      expect(report.kills.some((k) => k.outcome === 'done')).toBe(true);
    }, 300_000);
  }
});
