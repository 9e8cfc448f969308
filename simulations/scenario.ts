/**
 * The scenario: everything one simulation needs (data, sites, partition, study settings, faults, attacks), as JSON.
 * Flags (`--sites`, `--set key=value`) and sweeps (`--sweep key=v1,v2`) address it by dotted paths, so any field
 * can be swept. Unknown keys are refused, so a typo in a sweep key fails before anything runs.
 */
import { readFileSync } from 'node:fs';
import { dirname, isAbsolute, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { z } from 'zod';
import { CohortError } from '../protocol/errors.ts';
import { DpSettingsSchema, ModelSpecSchema, StrategySpecSchema } from '../protocol/messages.ts';
import { SecureAggregationSettingsSchema } from '../protocol/secagg-messages.ts';
import { FaultsSchema, MaliciousSchema } from './faults.ts';
import { PartitionSchema } from './partition.ts';

/** The bundled WDBC data: the default when a scenario names none. */
export const BUNDLED_WDBC = fileURLToPath(new URL('../data/tabular/wdbc.csv', import.meta.url));

export const ScenarioSchema = z.strictObject({
  name: z.string().min(1).max(200).default('simulation'),
  description: z.string().max(4000).optional(),
  /** Seeds everything: partition, model initialisation, shuffles, faults, attacks. */
  seed: z.number().int().min(0).max(2 ** 31 - 1).default(42),
  data: z.strictObject({
    /** CSV file; relative paths are relative to the scenario file. Default: the bundled WDBC. */
    csv: z.string().min(1).default(BUNDLED_WDBC),
    label: z.string().min(1).default('malignant'),
    /** Dataset id the virtual sites register the data under. */
    id: z.string().min(1).max(128).regex(/^[A-Za-z0-9._:-]+$/).default('data'),
    features: z.array(z.string().min(1)).min(1).optional(),
    exclude: z.array(z.string()).default([]),
    categorical: z.array(z.string()).default([]),
    /**
     * `site` (default, what a site's CSV source does): each site imputes and standardizes with its own training
     * rows' statistics. `global`: every site uses the whole table's (a shared data dictionary); under label skew,
     * per-site scaling shifts each site's features by its own class mix, which `global` removes.
     */
    standardize: z.enum(['site', 'global']).default('site'),
  }).prefault({}),
  /** Number of virtual sites (a `column` partition makes one per value instead). */
  sites: z.number().int().min(1).max(100_000).default(10),
  rounds: z.number().int().min(1).max(10_000).default(10),
  partition: PartitionSchema.prefault({ kind: 'iid' }),
  model: ModelSpecSchema.prefault({ template: 'logreg' }),
  training: z.strictObject({
    localEpochs: z.number().int().min(1).max(1000).default(1),
    batchSize: z.number().int().min(1).max(65_536).default(16),
    optimizer: z.enum(['adam', 'sgd']).default('adam'),
    learningRate: z.number().positive().max(10).default(0.05),
  }).prefault({}),
  strategy: StrategySpecSchema.prefault({ name: 'fedavg' }),
  participation: z.strictObject({
    /** Fewest valid updates a round needs; default half the sites (at least 2, and 2f + 3 for Krum). */
    minSites: z.number().int().min(1).max(100_000).optional(),
    /** The deadline a straggler misses (time is simulated: nobody waits it). */
    roundDeadlineMs: z.number().int().min(100).max(24 * 3600_000).default(60_000),
    maxRoundAttempts: z.number().int().min(1).max(100).default(3),
  }).prefault({}),
  evaluation: z.strictObject({ holdoutFraction: z.number().min(0.05).max(0.5).default(0.25) }).prefault({}),
  faults: FaultsSchema.prefault({}),
  malicious: MaliciousSchema.prefault({}),
  /**
   * The study manifest's `privacy`, run by the production code: `secureAggregation` (default on, as in a real
   * study; `false`, or an object of its settings) and `dp` (differential privacy: mode, clip, noiseMultiplier or
   * targetEpsilon, delta, ...). Robust strategies (median, trimmed mean, Krum) need secure aggregation off.
   */
  privacy: z.strictObject({
    secureAggregation: z.union([z.boolean(), SecureAggregationSettingsSchema.strict()]).default(true),
    dp: DpSettingsSchema.strict().optional(),
  }).prefault({}),
  /** Run the loss-threshold membership-inference attack on the final model. */
  membershipInference: z.boolean().default(true),
  /** Site policy of every virtual site (site.json's `policy`); signatures are not required in simulations. */
  sitePolicy: z.record(z.string(), z.unknown()).default({}),
  /** Worker threads for the virtual sites (default: one per core). */
  workers: z.number().int().min(1).max(256).optional(),
  /** Log level of the coordinator and the virtual sites (to stderr). */
  logLevel: z.enum(['silent', 'error', 'warn', 'info', 'debug']).default('silent'),
});
export type ScenarioInput = z.input<typeof ScenarioSchema>;
export type Scenario = z.output<typeof ScenarioSchema>;

const invalid = (message: string, details?: Record<string, unknown>) => new CohortError('COHORT_ERR_SIM_SCENARIO_INVALID', message, details);

/** Parses a flag or sweep value: JSON when it parses (numbers, booleans, null, arrays), else the text itself. */
export function parseValue(text: string): unknown {
  try {
    return JSON.parse(text);
  } catch {
    return text;
  }
}

/** Sets `obj.a.b.c = value` for the path 'a.b.c', creating objects on the way. */
export function setPath(obj: Record<string, unknown>, path: string, value: unknown): void {
  const keys = path.split('.');
  if (keys.some((k) => !/^[A-Za-z][A-Za-z0-9_-]*$/.test(k))) throw invalid(`"${path}" is not a scenario key (use dotted names such as strategy.name)`);
  let o = obj;
  for (const k of keys.slice(0, -1)) {
    const next = o[k];
    // `true` stands for "on, with the defaults" (secureAggregation): setting one of its fields keeps it on.
    if (next === undefined || next === null || next === true) o[k] = {};
    else if (typeof next !== 'object' || Array.isArray(next)) throw invalid(`"${path}": ${k} is not an object`);
    o = o[k] as Record<string, unknown>;
  }
  o[keys.at(-1)!] = value;
}

/** Splits `a,b,[1,2],c` on the commas outside brackets. */
function splitValues(text: string): string[] {
  const out: string[] = [];
  let depth = 0;
  let cur = '';
  for (const ch of text) {
    if (ch === '[' || ch === '{') depth++;
    if (ch === ']' || ch === '}') depth--;
    if (ch === ',' && depth === 0) {
      out.push(cur);
      cur = '';
    } else cur += ch;
  }
  out.push(cur);
  return out.map((s) => s.trim());
}

/** Short spellings of scenario keys: `dp.noiseMultiplier` is `privacy.dp.noiseMultiplier`, and so on. */
const ALIASES: [string, string][] = [['dp', 'privacy.dp'], ['secureAggregation', 'privacy.secureAggregation']];

/** The canonical dotted path of a flag or sweep key. */
export function canonicalKey(key: string): string {
  for (const [short, full] of ALIASES) if (key === short || key.startsWith(`${short}.`)) return full + key.slice(short.length);
  return key;
}

export interface Sweep {
  key: string;
  values: unknown[];
}

/** Parses `key=v1,v2,...` (a `--sweep` flag) or `key=value` (a `--set` flag, one value). */
export function parseAssignment(text: string, many: boolean): Sweep {
  const eq = text.indexOf('=');
  if (eq <= 0 || eq === text.length - 1) throw invalid(`"${text}" is not key=${many ? 'v1,v2,...' : 'value'}`);
  const key = canonicalKey(text.slice(0, eq).trim());
  const values = (many ? splitValues(text.slice(eq + 1)) : [text.slice(eq + 1).trim()]).map(parseValue);
  if (values.some((v) => v === '')) throw invalid(`"${text}" has an empty value`);
  return { key, values };
}

/** Validates a raw scenario; `baseDir` resolves a relative data path. */
export function parseScenario(raw: unknown, baseDir: string): Scenario {
  const res = ScenarioSchema.safeParse(raw);
  if (!res.success) {
    const issues = res.error.issues.slice(0, 5).map((i) => ({ path: i.path.join('.'), message: i.message }));
    throw invalid(`scenario: ${issues.map((i) => `${i.path || '(root)'}: ${i.message}`).join('; ')}`, { issues });
  }
  const s = res.data;
  if (!isAbsolute(s.data.csv)) s.data.csv = resolve(baseDir, s.data.csv);
  return s;
}

/** Reads a scenario file (or starts from defaults) and applies `--set`-style assignments. */
export function loadScenarioRaw(file: string | undefined, sets: readonly Sweep[] = []): { raw: Record<string, unknown>; baseDir: string } {
  let raw: Record<string, unknown> = {};
  if (file) {
    let text: string;
    try {
      text = readFileSync(file, 'utf8');
    } catch (err) {
      throw invalid(`cannot read scenario ${file}: ${(err as NodeJS.ErrnoException).code ?? 'error'}`);
    }
    try {
      raw = JSON.parse(text) as Record<string, unknown>;
    } catch (err) {
      throw invalid(`scenario ${file} is not valid JSON: ${(err as Error).message}`);
    }
    if (!raw || typeof raw !== 'object' || Array.isArray(raw)) throw invalid(`scenario ${file} must be a JSON object`);
  }
  for (const s of sets) setPath(raw, s.key, s.values[0]);
  return { raw, baseDir: file ? dirname(resolve(file)) : process.cwd() };
}

export interface Setting {
  /** `strategy.name=fedmedian, sites=20`, or the scenario's name when nothing is swept. */
  label: string;
  overrides: Record<string, unknown>;
  scenario: Scenario;
}

/** Every combination of the sweeps (the first sweep varies slowest), each validated before anything runs. */
export function expandSweeps(raw: Record<string, unknown>, baseDir: string, sweeps: readonly Sweep[]): Setting[] {
  let combos: [string, unknown][][] = [[]];
  for (const s of sweeps) combos = combos.flatMap((c) => s.values.map((v) => [...c, [s.key, v] as [string, unknown]]));
  return combos.map((combo) => {
    const copy = structuredClone(raw);
    for (const [k, v] of combo) setPath(copy, k, v);
    const scenario = parseScenario(copy, baseDir);
    const label = combo.length ? combo.map(([k, v]) => `${k}=${typeof v === 'string' ? v : JSON.stringify(v)}`).join(', ') : scenario.name;
    return { label, overrides: Object.fromEntries(combo), scenario };
  });
}
