/**
 * The report folder: `results.json` (everything), `results.csv` (one row per setting and round), `sites.csv` (one
 * row per setting and site) and `index.html` (the plots).
 */
import { mkdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import type { SimulationResult } from '../simulate.ts';
import { renderReport } from './html.ts';

function csvCell(v: unknown): string {
  if (v === null || v === undefined || (typeof v === 'number' && !Number.isFinite(v))) return '';
  const s = typeof v === 'string' ? v : typeof v === 'number' || typeof v === 'boolean' ? String(v) : JSON.stringify(v);
  return /[",\n]/.test(s) ? `"${s.replace(/"/g, '""')}"` : s;
}

const csv = (rows: unknown[][]): string => rows.map((r) => r.map(csvCell).join(',')).join('\n') + '\n';

/** One row per setting and round, with the setting's swept values and its final privacy figures on every row. */
export function resultsCsv(r: SimulationResult): string {
  const keys = r.sweeps.map((s) => s.key);
  const header = ['setting', ...keys, 'strategy', 'secure_aggregation', 'dp', 'status', 'round', 'accuracy', 'auc', 'loss', 'train_loss', 'participants', 'failures',
    'membership_auc', 'membership_advantage', 'epsilon', 'duration_ms'];
  const rows: unknown[][] = [header];
  for (const s of r.settings) {
    const common = (round: (typeof s.rounds)[number] | undefined) => [
      s.label, ...keys.map((k) => s.overrides[k]), s.strategy, s.privacy.secureAggregation, s.privacy.dp, s.status, round?.round, round?.accuracy, round?.auc, round?.loss, round?.trainLoss,
      round?.participants, round ? Object.values(round.failures).reduce((a, b) => a + b, 0) : undefined,
      // DP without a finite bound (noise 0) is `inf`; no DP leaves the cell empty.
      s.membership?.auc, s.membership?.threshold?.advantage, s.epsilon ?? (s.privacy.dp !== 'none' ? 'inf' : null), round?.durationMs,
    ];
    if (s.rounds.length === 0) rows.push(common(undefined));
    for (const round of s.rounds) rows.push(common(round));
  }
  return csv(rows);
}

/** One row per setting and site: its size, whether it was malicious, and its final hold-out metrics. */
export function sitesCsv(r: SimulationResult): string {
  const rows: unknown[][] = [['setting', 'site', 'rows', 'malicious', 'holdout_n', 'accuracy', 'auc']];
  for (const s of r.settings) {
    for (const site of s.sites) rows.push([s.label, site.name, site.rows, site.malicious, site.final?.n, site.final?.accuracy, site.final?.auc]);
  }
  return csv(rows);
}

/** Writes the report folder; returns the paths written. */
export function writeReport(dir: string, r: SimulationResult, opts: { command?: string } = {}): string[] {
  mkdirSync(dir, { recursive: true });
  const files: [string, string][] = [
    ['results.json', `${JSON.stringify(r, null, 2)}\n`],
    ['results.csv', resultsCsv(r)],
    ['sites.csv', sitesCsv(r)],
    ['index.html', renderReport(r, opts)],
  ];
  return files.map(([name, body]) => {
    const p = join(dir, name);
    writeFileSync(p, body);
    return p;
  });
}
