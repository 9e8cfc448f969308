import { execFile } from 'node:child_process';
import { existsSync, readFileSync, readdirSync } from 'node:fs';
import { join } from 'node:path';
import { promisify } from 'node:util';
import { describe, expect, it } from 'vitest';
import { decodeTensors } from '../../protocol/codec.ts';
import { expandSweeps, parseAssignment, type ScenarioInput } from '../../simulations/scenario.ts';
import { simulate, type SimulationResult } from '../../simulations/simulate.ts';
import { STUDY_ID, type RoundSummary, type SettingResult } from '../../simulations/run-simulation.ts';
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
    expect(csv[0]).toBe('setting,strategy.name,malicious.fraction,strategy,secure_aggregation,dp,status,round,accuracy,auc,loss,train_loss,participants,failures,membership_auc,membership_advantage,epsilon,duration_ms');
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
    const fail = (args: string[]) => run(process.execPath, [BIN, 'simulate', ...args, '--out', out], { cwd: root }).then(() => null, (e: { code: number; stderr: string }) => e);
    const err = await fail(['--sweep', 'dp.noiseMultipler=0,1']);
    expect(err?.code).toBe(3);
    expect(err?.stderr).toContain('error COHORT_ERR_SIM_SCENARIO_INVALID');
    // A simulation mirrors a real study: secure aggregation is on, so a robust strategy is refused, with the way out.
    const krum = await fail(['--sweep', 'strategy.name=fedavg,krum']);
    expect(krum?.code).toBe(3);
    expect(krum?.stderr).toContain('error COHORT_ERR_STUDY_STRATEGY_NEEDS_INDIVIDUAL');
    expect(krum?.stderr).toContain('privacy.secureAggregation=false');
    expect(existsSync(join(out, 'results.json'))).toBe(false);
  }, 60_000);
});

describe('simulation reproducibility', () => {
  // Secure aggregation (the default) and record-level DP-SGD, through the production code: stochastic rounding, DP
  // noise and sampling, and each session's id and neighbour graph come from the scenario seed in a simulation.
  const scenario: ScenarioInput = {
    name: 'reproducibility', seed: 9, sites: 6, rounds: 4,
    partition: { kind: 'dirichlet', alpha: 1 },
    training: { localEpochs: 1, batchSize: 16, optimizer: 'sgd', learningRate: 0.2 },
    strategy: { name: 'fedadam' },
    privacy: { dp: { mode: 'record', clip: 1, noiseMultiplier: 1 } },
    faults: { dropout: { train: 0.15, 'secagg-share': 0.1 }, straggler: { evaluate: 0.15 } },
    malicious: { fraction: 0.2, attack: 'noise', sigma: 0.05 },
  };
  const withoutTime = (rounds: RoundSummary[]) => rounds.map(({ durationMs: _t, ...rest }) => rest);
  const same = (a: SettingResult, b: SettingResult) => {
    expect(withoutTime(a.rounds)).toEqual(withoutTime(b.rounds));
    expect(a.modelSha256).toBe(b.modelSha256);
    expect(a.membership).toEqual(b.membership);
    expect(a.sites).toEqual(b.sites);
    expect(a.privacy).toEqual(b.privacy);
  };

  it('should give identical per-round metrics, epsilon and final model for the same scenario and seed, with secure aggregation and DP, whatever the worker count and a coordinator restart', async () => {
    const ckpts = tempDir('cohort-sim-ckpt-');
    const secure = expandSweeps(scenario as Record<string, unknown>, root, [parseAssignment('faults.restartCoordinatorAfter=[],[2]', true)]);
    const [plain] = expandSweeps({ ...scenario, privacy: { secureAggregation: false } } as Record<string, unknown>, root, []);
    const two = await simulate([...secure, plain!], { workers: 2, checkpointsDir: ckpts });
    const one = await simulate([secure[0]!, plain!], { workers: 1 });
    const [base, restarted, clear] = two.settings;
    expect(two.settings.map((x) => x.status)).toEqual(['completed', 'completed', 'completed']);
    expect(base!.rounds).toHaveLength(4);
    // the faults really happened, and secure aggregation and DP really ran
    expect(base!.injected.dropouts + base!.injected.stragglers).toBeGreaterThan(0);
    expect(base!.rounds.some((r) => Object.keys(r.failures).length > 0)).toBe(true);
    for (const r of base!.rounds) expect(r.secureAggregation).toMatchObject({ degree: 5, threshold: 4 });
    expect(base!.rounds.every((r) => r.trainLoss === null)).toBe(true); // record-level DP: sites report no loss
    expect(base!.privacy).toMatchObject({ secureAggregation: true, dp: 'record', level: 'record', delta: 1e-5, noiseMultiplier: 1 });
    expect(base!.epsilon).toBeGreaterThan(0);
    expect(clear!.privacy).toMatchObject({ secureAggregation: false, dp: 'none', epsilon: null });
    expect(clear!.rounds.every((r) => r.secureAggregation === undefined && r.trainLoss !== null)).toBe(true);
    expect(clear!.modelSha256).not.toBe(base!.modelSha256);

    same(one.settings[0]!, base!);
    same(one.settings[1]!, clear!);

    // FedAdam's moments went through the checkpoints: a coordinator restarted after round 2 ends exactly the same.
    expect(restarted!.injected.coordinatorRestarts).toBe(1);
    same(restarted!, base!);
    const files = readdirSync(join(ckpts, 'setting-2', STUDY_ID)).sort();
    expect(files).toContain('round-00002.strategy.cht');
    expect(files.filter((f) => f.endsWith('.strategy.cht'))).toHaveLength(4);
    expect(existsSync(join(ckpts, 'setting-2', STUDY_ID, 'round-00004.cht'))).toBe(true);

    // Round 2's moments continue round 1's (FedAdam: m2 = b1 m1 + (1 - b1) d, v2 = b2 v1 + (1 - b2) d^2): the
    // runner restored the saved state rather than starting the optimizer afresh each round.
    const frame = (name: string) => decodeTensors(readFileSync(join(ckpts, 'setting-2', STUDY_ID, name))).flatMap((t) => Array.from(t.data));
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
  }, 180_000);
});

describe('a sweep over differential-privacy noise on WDBC (acceptance, small scale)', () => {
  it('should report epsilon per setting and plot utility against it, with the membership attack falling to 0.5 as noise grows', async () => {
    const out = tempDir('cohort-sim-dp-');
    // The example scenario (3 sites, an MLP that memorises its patients) at 3 rounds instead of 8.
    const { stdout } = await run(process.execPath, [BIN, 'simulate', 'examples/scenarios/dp-sweep.json', '--rounds', '3',
      '--sweep', 'dp.noiseMultiplier=0,2,16', '--out', out, '--quiet'], { cwd: root, timeout: 150_000 });
    expect(stdout).toMatch(/privacy\.dp\.noiseMultiplier=0 +completed .* inf /);
    const r = JSON.parse(readFileSync(join(out, 'results.json'), 'utf8')) as SimulationResult;
    expect(r.sweeps).toEqual([{ key: 'privacy.dp.noiseMultiplier', values: [0, 2, 16] }]);
    const [none, some, much] = r.settings;
    for (const s of r.settings) {
      expect(s.status).toBe('completed');
      expect(s.privacy).toMatchObject({ secureAggregation: true, dp: 'record', level: 'record' });
      expect(s.rounds.every((x) => x.secureAggregation?.survivors === 3)).toBe(true);
    }
    // Without noise the attack tells members from non-members; with the most noise it is close to a coin.
    const mia = r.settings.map((s) => s.membership!.auc!);
    expect(mia[0]).toBeGreaterThan(0.56);
    expect(mia[2]).toBeLessThan(mia[0]! - 0.04);
    expect(Math.abs(mia[2]! - 0.5)).toBeLessThan(0.03);
    // Epsilon: unbounded without noise, then falling as the noise grows.
    expect(none!.epsilon).toBeNull();
    expect(some!.epsilon!).toBeGreaterThan(much!.epsilon!);
    expect(much!.epsilon!).toBeGreaterThan(0);
    expect(much!.epsilon!).toBeLessThan(2);
    const csv = readFileSync(join(out, 'results.csv'), 'utf8').trim().split('\n').map((l) => l.split(','));
    const eps = csv[0]!.indexOf('epsilon');
    expect(new Set(csv.slice(1).filter((c) => c[1] === '0').map((c) => c[eps]))).toEqual(new Set(['inf']));
    expect(Number(csv.find((c) => c[1] === '16')![eps])).toBeCloseTo(much!.epsilon!, 6);

    const html = readFileSync(join(out, 'index.html'), 'utf8');
    const section = html.match(/<section><h2>Utility against epsilon<\/h2>[\s\S]*?<\/section>/)?.[0] ?? '';
    for (const chart of ['Final pooled accuracy', 'Final pooled AUC', 'Membership-inference attack AUC']) expect(section).toContain(`aria-label="${chart}"`);
    expect(section).toContain('ε (privacy spent; lower is more private)');
    expect(section).toContain('>∞</text>'); // the no-noise setting, at the right edge
    expect(section).toContain(`>${Number(much!.epsilon!.toFixed(2))}</text>`);
    expect(section.match(/<circle /g)!.length).toBe(9); // 3 settings in each of the 3 charts
  }, 180_000);
});
