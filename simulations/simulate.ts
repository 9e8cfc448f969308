/**
 * A whole simulation: every sweep setting in turn on one pool of worker threads, with progress, then the results
 * (and, with `out`, the report folder).
 */
import { existsSync, mkdtempSync, rmSync } from 'node:fs';
import { availableParallelism, cpus, tmpdir } from 'node:os';
import { join } from 'node:path';
import { checkSetting, failedSetting, runSetting, type RoundSummary, type SettingResult } from './run-simulation.ts';
import type { Setting, Sweep } from './scenario.ts';
import { SitePool, defaultWorkers } from './site-pool.ts';
import type { Table } from './dataset.ts';

export interface SimulationResult {
  name: string;
  /** The keys and values swept (empty when one setting ran). */
  sweeps: Sweep[];
  settings: SettingResult[];
  seed: number;
  workers: number;
  machine: { cpus: number; model: string; node: string };
  startedAt: string;
  durationMs: number;
}

export interface Progress {
  setting: number;
  settings: number;
  label: string;
  round: RoundSummary | null;
  rounds: number;
  /** Set when a setting has finished. */
  result?: SettingResult;
}

export interface SimulateOptions {
  sweeps?: Sweep[];
  onProgress?: (p: Progress) => void;
  /** Worker threads; default the scenario's `workers`, else one per core. */
  workers?: number;
  checkpointsDir?: string;
}

/** Site folders (approvals, read at every task): on a RAM disk where there is a writable one, thousands of tiny files. */
function scratchDir(): string {
  if (existsSync('/dev/shm')) {
    try {
      return mkdtempSync(join('/dev/shm', 'cohort-sim-'));
    } catch {
      // not writable here: use the temp folder
    }
  }
  return mkdtempSync(join(tmpdir(), 'cohort-sim-'));
}

export async function simulate(settings: readonly Setting[], opts: SimulateOptions = {}): Promise<SimulationResult> {
  const first = settings[0];
  if (!first) throw new Error('simulate needs at least one setting');
  // Refusals a coordinator makes at study creation stop the whole simulation before anything runs.
  for (const setting of settings) checkSetting(setting);
  const startedAt = new Date();
  const maxSites = Math.max(...settings.map((s) => s.scenario.sites));
  const workers = Math.min(opts.workers ?? first.scenario.workers ?? defaultWorkers(), Math.max(1, maxSites));
  const pool = SitePool.start(workers);
  const workDir = scratchDir();
  const tables = new Map<string, Promise<Table>>();
  const results: SettingResult[] = [];
  try {
    for (const [i, setting] of settings.entries()) {
      const base = { setting: i + 1, settings: settings.length, label: setting.label, rounds: setting.scenario.rounds };
      opts.onProgress?.({ ...base, round: null });
      const t0 = Date.now();
      let result: SettingResult;
      try {
        result = await runSetting(setting, {
          pool, workDir, tables, onRound: (round) => opts.onProgress?.({ ...base, round }),
          ...(opts.checkpointsDir ? { checkpointsDir: join(opts.checkpointsDir, `setting-${i + 1}`) } : {}),
        }, i);
      } catch (err) {
        result = failedSetting(setting, err, t0);
      }
      results.push(result);
      opts.onProgress?.({ ...base, round: result.final, result });
    }
  } finally {
    await pool.close();
    rmSync(workDir, { recursive: true, force: true });
  }
  return {
    name: first.scenario.name, sweeps: opts.sweeps ?? [], settings: results, seed: first.scenario.seed, workers,
    machine: { cpus: availableParallelism(), model: cpus()[0]?.model ?? 'unknown', node: process.version },
    startedAt: startedAt.toISOString(), durationMs: Date.now() - startedAt.getTime(),
  };
}
