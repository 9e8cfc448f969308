import { execFile } from 'node:child_process';
import { existsSync, readFileSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { describe, expect, it } from 'vitest';
import { decodeTensors } from '../../protocol/codec.ts';
import { expandSweeps, parseAssignment, type ScenarioInput } from '../../simulations/scenario.ts';
import { simulate, type SimulationResult } from '../../simulations/simulate.ts';
import type { RoundSummary } from '../../simulations/run-simulation.ts';
import { tempDir } from '../helpers/cluster.ts';

const run = promisify(execFile);
const root = join(import.meta.dirname, '..', '..');
const BIN = join(root, 'bin', 'cohort.js');

describe('cohort simulate with 20% sign-flipping sites (acceptance, small scale)', () => {
  it('should show FedAvg degrading while FedMedian or Krum stays within 2 points of the clean run, in the report', async () => {
    const out = tempDir('cohort-sim-report-');
    const { stdout } = await run(process.execPath, [BIN, 'simulate', 'examples/scenarios/sign-flip.json', '--rounds', '6',
      '--sweep', 'strategy.name=fedavg,fedmedian,krum', '--sweep', 'malicious.fraction=0,0.2', '--out', out, '--quiet'], { cwd: root, timeout: 150_000 });
    expect(stdout).toContain(`report: ${join(out, 'index.html')}`);

    const r = JSON.parse(readFileSync(join(out, 'results.json'), 'utf8')) as SimulationResult;
    expect(r.settings.map((s) => s.status)).toEqual(new Array(6).fill('completed'));
    const acc = (strategy: string, fraction: number) => r.settings.find((s) => s.strategy === strategy && s.overrides['malicious.fraction'] === fraction)!.final!.accuracy;
    const clean = acc('fedavg', 0);
    expect(clean).toBeGreaterThan(0.88);
    expect(acc('fedavg', 0.2)).toBeLessThan(clean - 0.15); // FedAvg degrades
    expect(Math.max(acc('fedmedian', 0.2), acc('krum', 0.2))).toBeGreaterThanOrEqual(clean - 0.02); // a robust strategy holds
    const attacked = r.settings.find((s) => s.label === 'strategy.name=fedmedian, malicious.fraction=0.2')!;
    expect(attacked.sites.filter((s) => s.malicious)).toHaveLength(2);

    const html = readFileSync(join(out, 'index.html'), 'utf8');
    for (const label of ['strategy.name=fedavg, malicious.fraction=0.2', 'strategy.name=fedmedian, malicious.fraction=0.2', 'strategy.name=krum, malicious.fraction=0.2']) {
      expect(html).toContain(label);
    }
    for (const section of ['Metrics per round', 'Utility against malicious.fraction', 'Membership inference', 'Per-site results', 'malicious site']) expect(html).toContain(section);
    expect(html.match(/<svg /g)!.length).toBeGreaterThanOrEqual(8);
    expect(html).not.toMatch(/<script|https?:\/\/(?!www\.w3\.org)/); // self-contained
    const csv = readFileSync(join(out, 'results.csv'), 'utf8').trim().split('\n');
    expect(csv[0]).toBe('setting,strategy.name,malicious.fraction,strategy,status,round,accuracy,auc,loss,train_loss,participants,failures,membership_auc,membership_advantage,epsilon,duration_ms');
    expect(csv).toHaveLength(1 + 6 * 6);
    expect(readFileSync(join(out, 'sites.csv'), 'utf8').trim().split('\n')).toHaveLength(1 + 6 * 10);
  }, 180_000);
});

describe('cohort simulate on the command line', () => {
  it('should show an example in --help and refuse an unknown sweep key with a coded error before running anything', async () => {
    const { stdout } = await run(process.execPath, [BIN, 'simulate', '--help'], { cwd: root });
    expect(stdout).toMatch(/Example:\n\s+cohort simulate /);
    for (const flag of ['--sites', '--rounds', '--seed', '--strategy', '--sweep', '--set', '--out']) expect(stdout).toContain(flag);
    const out = tempDir('cohort-sim-bad-');
    const err = await run(process.execPath, [BIN, 'simulate', '--sweep', 'dp.noiseMultiplier=0,1', '--out', out], { cwd: root }).then(() => null, (e: { code: number; stderr: string }) => e);
    expect(err?.code).toBe(3);
    expect(err?.stderr).toContain('error COHORT_ERR_SIM_SCENARIO_INVALID');
    expect(existsSync(join(out, 'results.json'))).toBe(false);
  }, 60_000);
});

describe('simulation reproducibility', () => {
  const scenario: ScenarioInput = {
    name: 'reproducibility', seed: 9, sites: 6, rounds: 4,
    partition: { kind: 'dirichlet', alpha: 1 },
    training: { localEpochs: 1, batchSize: 16, optimizer: 'sgd', learningRate: 0.2 },
    strategy: { name: 'fedadam' },
    faults: { dropout: { train: 0.15 }, straggler: { evaluate: 0.15 } },
    malicious: { fraction: 0.2, attack: 'noise', sigma: 0.05 },
  };
  const withoutTime = (rounds: RoundSummary[]) => rounds.map(({ durationMs: _t, ...rest }) => rest);

  it('should give identical per-round metrics and final model for the same scenario and seed, whatever the worker count and a coordinator restart', async () => {
    const ckpts = tempDir('cohort-sim-ckpt-');
    const settings = expandSweeps(scenario as Record<string, unknown>, root, [parseAssignment('faults.restartCoordinatorAfter=[],[2]', true)]);
    const two = await simulate(settings, { workers: 2, checkpointsDir: ckpts });
    const one = await simulate(settings.slice(0, 1), { workers: 1 });
    const [plain, restarted] = two.settings;
    expect(plain!.status).toBe('completed');
    expect(plain!.rounds).toHaveLength(4);
    // the faults really happened
    expect(plain!.injected.dropouts + plain!.injected.stragglers).toBeGreaterThan(0);
    expect(plain!.rounds.some((r) => Object.keys(r.failures).length > 0)).toBe(true);

    expect(withoutTime(one.settings[0]!.rounds)).toEqual(withoutTime(plain!.rounds));
    expect(one.settings[0]!.modelSha256).toBe(plain!.modelSha256);
    expect(one.settings[0]!.membership).toEqual(plain!.membership);
    expect(one.settings[0]!.sites).toEqual(plain!.sites);

    // FedAdam's moments went through the checkpoints: a coordinator restarted after round 2 ends exactly the same.
    expect(restarted!.injected.coordinatorRestarts).toBe(1);
    expect(withoutTime(restarted!.rounds)).toEqual(withoutTime(plain!.rounds));
    expect(restarted!.modelSha256).toBe(plain!.modelSha256);
    const files = readdirSync(join(ckpts, 'setting-2', 'sim-2')).sort();
    expect(files).toContain('round-00002.strategy.cht');
    expect(files.filter((f) => f.endsWith('.strategy.cht'))).toHaveLength(4);
    expect(existsSync(join(ckpts, 'setting-2', 'sim-2', 'round-00004.cht'))).toBe(true);

    // Round 2's moments continue round 1's (FedAdam: m2 = b1 m1 + (1 - b1) d, v2 = b2 v1 + (1 - b2) d^2): the
    // runner restored the saved state rather than starting the optimizer afresh each round.
    const frame = (name: string) => decodeTensors(readFileSync(join(ckpts, 'setting-2', 'sim-2', name))).flatMap((t) => Array.from(t.data));
    const [s1, s2] = [frame('round-00001.strategy.cht'), frame('round-00002.strategy.cht')];
    const half = s1.length / 2;
    let checked = 0;
    for (let j = 0; j < half; j++) {
      const d = (s2[j]! - 0.9 * s1[j]!) / 0.1;
      const v2 = 0.99 * s1[half + j]! + 0.01 * d * d;
      if (Math.abs(d) < 1e-3) continue; // too small to tell apart in float32
      expect(Math.abs(v2 - s2[half + j]!) / s2[half + j]!).toBeLessThan(1e-2);
      checked++;
    }
    expect(checked).toBeGreaterThan(5);
  }, 150_000);
});
