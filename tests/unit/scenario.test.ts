import { describe, expect, it } from 'vitest';
import { CohortError } from '../../protocol/errors.ts';
import { BUNDLED_WDBC, expandSweeps, loadScenarioRaw, parseAssignment, parseScenario } from '../../simulations/scenario.ts';
import { checkSetting } from '../../simulations/run-simulation.ts';

function codeOf(fn: () => unknown): string | undefined {
  try {
    fn();
  } catch (err) {
    return err instanceof CohortError ? err.code : String(err);
  }
  return undefined;
}

describe('simulation scenarios and sweeps', () => {
  it('should fill every default when the scenario is empty', () => {
    const s = parseScenario({}, '/tmp');
    expect(s).toMatchObject({ sites: 10, rounds: 10, seed: 42, strategy: { name: 'fedavg' }, partition: { kind: 'iid', minRows: 4 }, model: { template: 'logreg' } });
    expect(s.data.csv).toBe(BUNDLED_WDBC);
    expect(s.malicious).toEqual({ fraction: 0, attack: 'sign-flip', sigma: 1 });
  });

  it('should parse sweep values as JSON where they parse, keeping brackets together', () => {
    expect(parseAssignment('privacy.dp.noiseMultiplier=0,0.5,1,2', true)).toEqual({ key: 'privacy.dp.noiseMultiplier', values: [0, 0.5, 1, 2] });
    expect(parseAssignment('model.hidden=[32,16],[8]', true).values).toEqual([[32, 16], [8]]);
    expect(parseAssignment('strategy.name=fedavg,krum', true).values).toEqual(['fedavg', 'krum']);
    expect(parseAssignment('membershipInference=false', false).values).toEqual([false]);
  });

  it('should run every combination, the first sweep varying slowest, with readable labels', () => {
    const settings = expandSweeps({}, '/tmp', [parseAssignment('strategy.name=fedavg,fedmedian', true), parseAssignment('sites=5,20', true)]);
    expect(settings.map((s) => s.label)).toEqual([
      'strategy.name=fedavg, sites=5', 'strategy.name=fedavg, sites=20', 'strategy.name=fedmedian, sites=5', 'strategy.name=fedmedian, sites=20',
    ]);
    expect(settings[3]!.scenario).toMatchObject({ sites: 20, strategy: { name: 'fedmedian' } });
    expect(expandSweeps({ name: 'x' }, '/tmp', []).map((s) => s.label)).toEqual(['x']);
  });

  it('should refuse unknown keys, bad values and malformed flags with a coded error before anything runs', () => {
    expect(codeOf(() => expandSweeps({}, '/tmp', [parseAssignment('partition.alpah=0.1,1', true)]))).toBe('COHORT_ERR_SIM_SCENARIO_INVALID');
    expect(codeOf(() => expandSweeps({}, '/tmp', [parseAssignment('privacy.dp.noiseMultipler=0,1', true)]))).toBe('COHORT_ERR_SIM_SCENARIO_INVALID');
    expect(codeOf(() => expandSweeps({}, '/tmp', [parseAssignment('privacy.secureAggregation.thresold=0.7', true)]))).toBe('COHORT_ERR_SIM_SCENARIO_INVALID');
    // DP needs its mode: the error names the field.
    expect(() => expandSweeps({}, '/tmp', [parseAssignment('dp.noiseMultiplier=0,1', true)])).toThrow(/privacy\.dp\.mode/);
    expect(codeOf(() => expandSweeps({}, '/tmp', [parseAssignment('sites=5,-1', true)]))).toBe('COHORT_ERR_SIM_SCENARIO_INVALID');
    expect(codeOf(() => expandSweeps({}, '/tmp', [parseAssignment('strategy.name=fedsgd', true)]))).toBe('COHORT_ERR_SIM_SCENARIO_INVALID');
    expect(codeOf(() => parseAssignment('sites', true))).toBe('COHORT_ERR_SIM_SCENARIO_INVALID');
    expect(codeOf(() => parseAssignment('sites=1,,2', true))).toBe('COHORT_ERR_SIM_SCENARIO_INVALID');
    expect(codeOf(() => loadScenarioRaw('/nonexistent/scenario.json'))).toBe('COHORT_ERR_SIM_SCENARIO_INVALID');
  });

  it('should mirror the manifest\'s privacy: secure aggregation on by default, DP settings as the manifest has them, short keys for both', () => {
    expect(parseScenario({}, '/tmp').privacy).toEqual({ secureAggregation: true });
    expect(parseAssignment('dp.noiseMultiplier=0,1', true).key).toBe('privacy.dp.noiseMultiplier');
    expect(parseAssignment('secureAggregation=false', false)).toEqual({ key: 'privacy.secureAggregation', values: [false] });
    expect(parseAssignment('secureAggregation.threshold=0.7', false).key).toBe('privacy.secureAggregation.threshold');
    const [a, b] = expandSweeps({ privacy: { dp: { mode: 'record', clip: 2 } } }, '/tmp', [parseAssignment('dp.noiseMultiplier=0,1.5', true)]);
    expect(a!.label).toBe('privacy.dp.noiseMultiplier=0');
    expect(b!.scenario.privacy.dp).toMatchObject({ mode: 'record', clip: 2, noiseMultiplier: 1.5, delta: 1e-5 });
    // Setting one field of `secureAggregation: true` keeps it on with that field.
    const [c] = expandSweeps({}, '/tmp', [parseAssignment('secureAggregation.threshold=0.7', true)]);
    expect(c!.scenario.privacy.secureAggregation).toMatchObject({ threshold: 0.7, clip: 8, quantizationBits: 22, neighbours: 'auto' });
  });

  it('should refuse every robust strategy under secure aggregation before anything runs, with the coordinator\'s coded error', () => {
    for (const name of ['fedmedian', 'trimmed-mean', 'krum', 'multi-krum']) {
      const [setting] = expandSweeps({ sites: 10, strategy: { name } }, '/tmp', []);
      expect(codeOf(() => checkSetting(setting!))).toBe('COHORT_ERR_STUDY_STRATEGY_NEEDS_INDIVIDUAL');
      expect(() => checkSetting(setting!)).toThrow(/privacy\.secureAggregation=false/);
      const [plain] = expandSweeps({ sites: 10, strategy: { name }, privacy: { secureAggregation: false } }, '/tmp', []);
      expect(() => checkSetting(plain!)).not.toThrow();
    }
    for (const name of ['fedavg', 'fedavgm', 'fedprox', 'fedadam', 'fedyogi', 'fedadagrad']) {
      expect(() => checkSetting(expandSweeps({ sites: 10, strategy: { name } }, '/tmp', [])[0]!)).not.toThrow();
    }
    // Central client-level DP needs each update at the coordinator: refused under secure aggregation too.
    const [central] = expandSweeps({ privacy: { dp: { mode: 'client-central', noiseMultiplier: 1 } } }, '/tmp', []);
    expect(codeOf(() => checkSetting(central!))).toBe('COHORT_ERR_DP_INVALID');
  });

  it('should resolve a relative data path against the scenario file', () => {
    expect(parseScenario({ data: { csv: 'data.csv' } }, '/srv/scenarios').data.csv).toBe('/srv/scenarios/data.csv');
  });
});
