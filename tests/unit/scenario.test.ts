import { describe, expect, it } from 'vitest';
import { CohortError } from '../../protocol/errors.ts';
import { BUNDLED_WDBC, expandSweeps, loadScenarioRaw, parseAssignment, parseScenario } from '../../simulations/scenario.ts';

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
    expect(parseAssignment('dp.noiseMultiplier=0,0.5,1,2', true)).toEqual({ key: 'dp.noiseMultiplier', values: [0, 0.5, 1, 2] });
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
    expect(codeOf(() => expandSweeps({}, '/tmp', [parseAssignment('dp.noiseMultiplier=0,1', true)]))).toBe('COHORT_ERR_SIM_SCENARIO_INVALID');
    expect(codeOf(() => expandSweeps({}, '/tmp', [parseAssignment('sites=5,-1', true)]))).toBe('COHORT_ERR_SIM_SCENARIO_INVALID');
    expect(codeOf(() => expandSweeps({}, '/tmp', [parseAssignment('strategy.name=fedsgd', true)]))).toBe('COHORT_ERR_SIM_SCENARIO_INVALID');
    expect(codeOf(() => parseAssignment('sites', true))).toBe('COHORT_ERR_SIM_SCENARIO_INVALID');
    expect(codeOf(() => parseAssignment('sites=1,,2', true))).toBe('COHORT_ERR_SIM_SCENARIO_INVALID');
    expect(codeOf(() => loadScenarioRaw('/nonexistent/scenario.json'))).toBe('COHORT_ERR_SIM_SCENARIO_INVALID');
  });

  it('should resolve a relative data path against the scenario file', () => {
    expect(parseScenario({ data: { csv: 'data.csv' } }, '/srv/scenarios').data.csv).toBe('/srv/scenarios/data.csv');
  });
});
