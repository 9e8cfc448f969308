/**
 * The report page: one self-contained HTML file (inline CSS and SVG, no scripts, no external assets).
 * Sections: summary table, metrics per round, utility against epsilon (or against the swept parameter when no
 * setting used differential privacy), membership inference, per-site results, injected failures.
 */
import type { SettingResult } from '../run-simulation.ts';
import type { SimulationResult } from '../simulate.ts';
import { barChart, colorAt, domainOf, esc, fmt, legend, lineChart, stripPlot, type Series } from './svg.ts';

const HONEST = '#4e79a7';
const MALICIOUS = '#e15759';

const pct = (v: number | null | undefined): string => (v === null || v === undefined || !Number.isFinite(v) ? '–' : `${(100 * v).toFixed(1)}%`);
const dec = (v: number | null | undefined, d = 3): string => (v === null || v === undefined || !Number.isFinite(v) ? '–' : v.toFixed(d));
const ms = (v: number): string => (v < 1000 ? `${v} ms` : v < 120_000 ? `${(v / 1000).toFixed(1)} s` : `${(v / 60_000).toFixed(1)} min`);

const CSS = `
:root { --ink:#1f2933; --muted:#616e7c; --line:#e4e7eb; --bg:#f7f8fa; --card:#fff; --accent:#4e79a7; }
* { box-sizing: border-box; }
body { margin:0; font:14px/1.5 system-ui,-apple-system,"Segoe UI",Roboto,Helvetica,Arial,sans-serif; color:var(--ink); background:var(--bg); }
main { max-width:1120px; margin:0 auto; padding:28px 24px 48px; }
h1 { font-size:24px; margin:0 0 4px; }
h2 { font-size:17px; margin:0 0 4px; }
p { margin:4px 0 10px; }
.sub { color:var(--muted); margin:0 0 14px; }
.meta { display:flex; flex-wrap:wrap; gap:8px; margin:0 0 20px; padding:0; list-style:none; }
.meta li { background:var(--card); border:1px solid var(--line); border-radius:999px; padding:3px 12px; color:var(--muted); font-size:13px; }
.meta b { color:var(--ink); font-weight:600; }
section { background:var(--card); border:1px solid var(--line); border-radius:10px; padding:18px 20px; margin:0 0 18px; }
.note { color:var(--muted); font-size:13px; }
.grid2 { display:grid; grid-template-columns:repeat(auto-fit,minmax(460px,1fr)); gap:8px 16px; align-items:start; }
svg.chart { max-width:100%; height:auto; font-family:inherit; }
svg .title { font-size:13px; font-weight:600; fill:var(--ink); }
svg .tick { font-size:11px; fill:var(--muted); }
svg .muted { font-style:italic; }
svg .label { font-size:12px; fill:var(--ink); }
svg .grid { stroke:#eef0f3; }
svg .axis { stroke:#9aa5b1; }
svg .ref { stroke:#7b8794; stroke-dasharray:4 4; }
svg .reflabel { font-size:11px; fill:#52606d; }
.legend { display:flex; flex-wrap:wrap; gap:6px 18px; margin:6px 0 10px; font-size:13px; }
.legend span { display:inline-flex; align-items:center; gap:6px; }
.legend i { display:inline-block; width:18px; height:4px; border-radius:2px; }
.legend i.dashed { background-image:linear-gradient(90deg,#fff 50%,transparent 50%) !important; background-size:6px 4px; }
table { border-collapse:collapse; width:100%; font-size:13px; }
th, td { text-align:right; padding:6px 8px; border-bottom:1px solid var(--line); white-space:nowrap; }
.scroll { overflow-x:auto; }
th { color:var(--muted); font-weight:600; background:#fafbfc; }
th:first-child, td:first-child { text-align:left; white-space:normal; min-width:200px; overflow-wrap:anywhere; }
td.priv { text-align:left; color:var(--muted); font-size:12px; white-space:normal; min-width:110px; }
td .sw { display:inline-block; width:10px; height:10px; border-radius:2px; margin-right:8px; vertical-align:-1px; }
table.summary td:first-child .sw { position:absolute; left:8px; top:12px; margin:0; }
table.summary td:first-child { position:relative; padding-left:26px; }
tr.failed td { color:#9b2c2c; }
.best { font-weight:700; }
.tag { display:inline-block; font-size:11px; padding:1px 7px; border-radius:999px; background:#fde8e8; color:#9b2c2c; margin-left:6px; }
.ok { background:#e3f9e5; color:#207227; }
code { font:12px ui-monospace,SFMono-Regular,Menlo,Consolas,monospace; background:#f0f2f5; padding:1px 5px; border-radius:4px; }
pre { font:12px ui-monospace,SFMono-Regular,Menlo,Consolas,monospace; background:#f0f2f5; padding:10px 12px; border-radius:6px; overflow-x:auto; white-space:pre-wrap; }
footer { color:var(--muted); font-size:12px; margin-top:10px; }
`;

function summaryTable(r: SimulationResult): string {
  const done = r.settings.filter((s) => s.final);
  const bestAcc = Math.max(...done.map((s) => s.final!.accuracy));
  const rows = r.settings.map((s, i) => {
    const f = s.final;
    const malicious = s.sites.filter((x) => x.malicious).length;
    const fails = s.rounds.reduce((n, x) => n + Object.values(x.failures).reduce((a, b) => a + b, 0), 0);
    const status = s.status === 'completed' ? '' : `<span class="tag">${esc(s.error?.code ?? 'failed')}</span>`;
    return `<tr class="${s.status === 'completed' ? '' : 'failed'}"${s.error ? ` title="${esc(s.error.message)}"` : ''}>
<td><span class="sw" style="background:${colorAt(i)}"></span>${esc(s.label)}${status}</td>
<td>${esc(s.strategy)}</td><td class="priv">${esc(privacyText(s))}</td><td>${s.sites.length}${malicious ? ` <span class="note">(${malicious} malicious)</span>` : ''}</td>
<td${f && f.accuracy === bestAcc ? ' class="best"' : ''}>${pct(f?.accuracy)}</td><td>${dec(f?.auc)}</td><td>${dec(f?.loss)}</td>
<td>${dec(s.membership?.auc)}</td><td>${dec(s.membership?.threshold?.advantage)}</td><td>${epsText(s)}</td>
<td>${s.rounds.length}</td><td>${fails || '–'}</td><td>${ms(s.durationMs)}</td></tr>`;
  });
  return `<div class="scroll"><table class="summary"><thead><tr><th>setting</th><th>strategy</th><th title="secure aggregation (k: neighbours per site) and differential privacy (σ: noise multiplier)">privacy</th><th>sites</th><th>accuracy</th><th>AUC</th><th>loss</th>
<th title="membership-inference attack AUC (0.5: nothing learned)">MIA AUC</th><th title="Yeom et al. membership advantage TPR − FPR">MIA adv.</th>
<th title="privacy spent: ε at δ (∞: DP without noise; –: no DP)">ε</th><th>rounds</th><th title="site failures over all rounds">failures</th><th>time</th></tr></thead><tbody>${rows.join('')}</tbody></table></div>`;
}

function perRound(r: SimulationResult): string {
  const ok = r.settings.map((s, i) => ({ s, color: colorAt(i) })).filter(({ s }) => s.rounds.length > 0);
  if (ok.length === 0) return '<p class="note">No setting completed a round.</p>';
  const series = (pick: (x: SettingResult['rounds'][number]) => number | null): Series[] =>
    ok.map(({ s, color }) => ({ name: s.label, color, points: s.rounds.map((x) => [x.round, pick(x)] as [number, number | null]) }));
  const maxRound = Math.max(...ok.map(({ s }) => s.rounds.length));
  const xt = maxRound <= 12 ? Array.from({ length: maxRound }, (_, i) => i + 1) : undefined;
  const common = { xLabel: 'round', ...(xt ? { xTicks: xt } : {}), xDomain: [1, Math.max(2, maxRound)] as [number, number] };
  return `${legend(ok.map(({ s, color }) => ({ label: s.label, color })))}<div class="grid2">
${lineChart({ ...common, title: 'Pooled hold-out accuracy', yLabel: 'accuracy', series: series((x) => x.accuracy), yFormat: (v) => `${Math.round(v * 1000) / 10}%` })}
${lineChart({ ...common, title: 'Pooled hold-out AUC', yLabel: 'AUC', series: series((x) => x.auc) })}
${lineChart({ ...common, title: 'Pooled hold-out loss (cross-entropy)', yLabel: 'loss', series: series((x) => x.loss) })}
${ok.some(({ s }) => s.rounds.some((x) => x.trainLoss !== null))
    ? lineChart({ ...common, title: 'Training loss (example-weighted, as reported by sites)', yLabel: 'loss', series: series((x) => x.trainLoss) })
    : '<p class="note">No training loss: under record-level differential privacy sites do not report one (it is a function of their data that no noise protects).</p>'}
</div>`;
}

/** Swept keys that move a setting along the epsilon axis rather than making another line. */
const EPSILON_KEYS = new Set(['privacy.dp.noiseMultiplier', 'privacy.dp.targetEpsilon']);

/** Settings grouped by every swept key except `x`; each group becomes one line against `x`. */
function groupsAgainst(r: SimulationResult, x: (s: SettingResult) => number | null, xKey: string | null): { name: string; settings: SettingResult[] }[] {
  const others = r.sweeps.map((s) => s.key).filter((k) => k !== xKey && !(xKey === null && EPSILON_KEYS.has(k)));
  const groups = new Map<string, SettingResult[]>();
  for (const s of r.settings) {
    if (x(s) === null || !s.final) continue;
    const name = others.length ? others.map((k) => `${k}=${typeof s.overrides[k] === 'string' ? s.overrides[k] : JSON.stringify(s.overrides[k])}`).join(', ') : r.name;
    groups.set(name, [...(groups.get(name) ?? []), s]);
  }
  return [...groups.entries()].map(([name, settings]) => ({ name, settings: settings.sort((a, b) => x(a)! - x(b)!) }));
}

/** The privacy a setting ran with, in a few words. */
function privacyText(s: SettingResult): string {
  const p = s.privacy;
  const parts = [p.secureAggregation ? `SecAgg${s.final?.secureAggregation ? ` k ${s.final.secureAggregation.degree}` : ''}` : 'no SecAgg'];
  if (p.dp !== 'none') {
    const how = p.dp === 'record' ? 'DP-SGD' : p.dp === 'client-central' ? 'central DP' : 'distributed DP';
    parts.push(`${how}${p.noiseMultiplier !== null ? ` σ ${p.noiseMultiplier}` : ''}${p.targetEpsilon !== null ? ` target ε ${p.targetEpsilon}` : ''}`);
  }
  return parts.join(' · ');
}

/** ε as shown: a number, ∞ for DP without a finite bound (noise 0), – without DP. */
const epsText = (s: SettingResult): string => (s.epsilon !== null ? dec(s.epsilon, 2) : s.privacy.dp !== 'none' ? '∞' : '–');

function utility(r: SimulationResult): string {
  const withEps = r.settings.some((s) => s.privacy.dp !== 'none');
  // Against epsilon takes at least two settings that reached a model; one alone gets the bars below.
  if (withEps && r.settings.filter((s) => s.final).length >= 2) return utilityAgainstEpsilon(r);
  const numericKey = r.sweeps.find((s) => s.values.length > 1 && s.values.every((v) => typeof v === 'number'))?.key ?? null;
  if (withEps || !numericKey) {
    const bars = (pick: (s: SettingResult) => number | null | undefined) => r.settings.map((s, i) => ({ label: s.label, value: pick(s) ?? null, color: colorAt(i), note: s.status === 'completed' ? '' : s.error?.code ?? 'failed' }));
    return `<h2>Final utility by setting</h2>
<p class="note">${withEps ? 'One setting: its privacy spent (ε) is in the summary. A sweep (e.g. <code>--sweep dp.noiseMultiplier=0,1,4</code>) plots utility against ε here.'
    : 'No setting used differential privacy and no numeric parameter was swept, so the final round\'s utility is shown per setting. With DP, this section plots utility against the privacy spent (ε).'}</p>
${barChart({ title: 'Final pooled accuracy', xLabel: 'accuracy', bars: bars((s) => s.final?.accuracy), domain: [0, 1], format: (v) => `${(v * 100).toFixed(1)}%` })}
${barChart({ title: 'Final pooled AUC', xLabel: 'AUC', bars: bars((s) => s.final?.auc), domain: [0, 1], refLine: { x: 0.5, label: '0.5 = chance' } })}`;
  }
  const xOf = (s: SettingResult): number | null => s.overrides[numericKey!] as number;
  const groups = groupsAgainst(r, xOf, numericKey);
  const lines = (pick: (s: SettingResult) => number | null | undefined): Series[] => groups.map((g, i) => ({
    name: g.name, color: colorAt(i), points: g.settings.map((s) => [xOf(s)!, pick(s) ?? null] as [number, number | null]),
  }));
  const xt = [...new Set(groups.flatMap((g) => g.settings.map(xOf)).filter((v): v is number => v !== null))].sort((a, b) => a - b);
  return `<h2>Utility against ${esc(numericKey!)}</h2>
<p class="note">No setting used differential privacy, so utility is plotted against the swept parameter <code>${esc(numericKey!)}</code>; with DP, this section plots it against ε.</p>
${utilityCharts(r, groups, lines, { xLabel: numericKey!, xTicks: xt })}`;
}

function utilityCharts(r: SimulationResult, groups: { name: string }[], lines: (pick: (s: SettingResult) => number | null | undefined) => Series[], common: { xLabel: string; xTicks: number[]; xFormat?: (v: number) => string; xDomain?: [number, number] }): string {
  return `${legend(groups.map((g, i) => ({ label: g.name, color: colorAt(i) })))}
<div class="grid2">${lineChart({ ...common, title: 'Final pooled accuracy', yLabel: 'accuracy', series: lines((s) => s.final?.accuracy), yFormat: (v) => `${Math.round(v * 1000) / 10}%` })}
${lineChart({ ...common, title: 'Final pooled AUC', yLabel: 'AUC', series: lines((s) => s.final?.auc) })}
${lineChart({ ...common, title: 'Membership-inference attack AUC', yLabel: 'attack AUC', series: lines((s) => s.membership?.auc), refLines: [{ y: 0.5, label: '0.5 = no leak' }],
    // At least 0.2 tall, so noise around 0.5 does not look like a trend.
    yDomain: domainOf([0.5, ...r.settings.map((s) => s.membership?.auc ?? 0.5)], { minSpan: 0.2, floor: 0, ceil: 1 }) })}</div>`;
}

/**
 * Utility and attack AUC against epsilon. A setting without a finite epsilon (noise multiplier 0, or no DP in a
 * sweep that has some) sits at the right edge, at "∞". A wide range of epsilons is drawn on a log axis.
 */
function utilityAgainstEpsilon(r: SimulationResult): string {
  const done = r.settings.filter((s) => s.final);
  if (done.length === 0) return '<h2>Utility against epsilon</h2><p class="note">No setting completed a round.</p>';
  const finite = done.map((s) => s.epsilon).filter((v): v is number => v !== null && v > 0);
  const logX = finite.length > 1 && Math.max(...finite) / Math.min(...finite) > 20;
  const t = (v: number) => (logX ? Math.log10(v) : v);
  const lo = finite.length ? Math.min(...finite.map(t)) : 0;
  const hi = finite.length ? Math.max(...finite.map(t)) : 1;
  const span = hi - lo || (logX ? 1 : Math.max(1, hi));
  const inf = hi + Math.max(span * 0.18, logX ? 0.3 : 0);
  const hasInf = done.some((s) => s.epsilon === null);
  const xOf = (s: SettingResult): number => (s.epsilon === null ? inf : t(s.epsilon));
  const groups = groupsAgainst(r, (s) => xOf(s), null);
  const lines = (pick: (s: SettingResult) => number | null | undefined): Series[] => groups.map((g, i) => ({
    name: g.name, color: colorAt(i), points: g.settings.map((s) => [xOf(s), pick(s) ?? null] as [number, number | null]),
  }));
  const ticks = [...new Set(done.map(xOf))].sort((a, b) => a - b);
  const xFormat = (v: number) => (Math.abs(v - inf) < 1e-9 && hasInf ? '∞' : fmt(logX ? Math.pow(10, v) : v, 2));
  const rows = [...r.settings].sort((a, b) => (a.epsilon ?? Infinity) - (b.epsilon ?? Infinity)).map((s) => {
    const range = s.privacy.perSiteRange;
    return `<tr><td>${esc(s.label)}</td><td>${s.privacy.noiseMultiplier ?? '–'}</td><td>${epsText(s)}</td><td>${range ? `${dec(range[0], 2)}–${dec(range[1], 2)}` : '–'}</td>
<td>${pct(s.final?.accuracy)}</td><td>${dec(s.final?.auc)}</td><td>${dec(s.membership?.auc)}</td><td>${dec(s.membership?.threshold?.advantage)}</td></tr>`;
  });
  const first = r.settings.find((s) => s.privacy.delta !== null);
  return `<h2>Utility against epsilon</h2>
<p class="note">Final utility, and the membership-inference attack's AUC on the final model, against the privacy spent: ε at δ = ${first ? esc(String(first.privacy.delta)) : '–'}${first?.privacy.level === 'record' ? ', record level (each patient), the largest of the sites\' own accountants' : first?.privacy.level === 'client' ? ', client level (each site\'s whole contribution)' : ''}. Lower ε is stronger privacy${logX ? '; ε is on a log scale' : ''}.${hasInf ? ' ∞: no finite bound (no noise, or no DP), drawn at the right edge.' : ''}</p>
${utilityCharts(r, groups, lines, { xLabel: 'ε (privacy spent; lower is more private)', xTicks: ticks, xFormat, xDomain: [Math.min(...ticks) - span * 0.04, Math.max(...ticks) + span * 0.04] })}
<table><thead><tr><th>setting (most private first)</th><th title="noise standard deviation over the clip">σ</th><th>ε</th><th title="smallest and largest of the sites' own ε">ε per site</th><th>accuracy</th><th>AUC</th><th>attack AUC</th><th>attack adv.</th></tr></thead><tbody>${rows.join('')}</tbody></table>`;
}

function membership(r: SimulationResult): string {
  const any = r.settings.some((s) => s.membership);
  if (!any) return '<h2>Membership inference</h2><p class="note">The attack was not run (<code>membershipInference: false</code>).</p>';
  const bars = r.settings.map((s, i) => ({ label: s.label, value: s.membership?.auc ?? null, color: colorAt(i), note: s.membership ? `advantage ${dec(s.membership.threshold?.advantage)}` : 'not run' }));
  const m = r.settings.find((s) => s.membership)?.membership;
  return `<h2>Membership inference</h2>
<p class="note">Loss-threshold attack (Yeom et al., IEEE CSF 2018) on the final global model: records the model fits unusually well are guessed to be training records. Members: the sites' training rows (${m?.members ?? 0}); non-members: their hold-out rows (${m?.nonMembers ?? 0}). Attack AUC 0.5 means the attack does no better than a coin; differential privacy pushes it there.</p>
${barChart({ title: 'Attack AUC on the final model (bars start at 0.5: no leak)', xLabel: 'attack AUC (members vs non-members)', bars, base: 0.5,
    domain: [Math.min(0.4, ...bars.map((b) => (b.value ?? 1) - 0.02)), Math.max(0.75, ...bars.map((b) => (b.value ?? 0) + 0.05))], refLine: { x: 0.5, label: '0.5 = no leak' } })}`;
}

function perSite(r: SimulationResult): string {
  const rows = r.settings.filter((s) => s.sites.some((x) => x.final)).map((s) => ({
    label: s.label,
    points: s.sites.filter((x) => x.final && Number.isFinite(x.final.accuracy)).map((x) => ({
      x: x.final!.accuracy, color: x.malicious ? MALICIOUS : HONEST,
      title: `${x.name}${x.malicious ? ' (malicious)' : ''}: accuracy ${pct(x.final!.accuracy)} on ${x.final!.n} hold-out rows, AUC ${dec(x.final!.auc)}, ${x.rows} rows in all`,
    })),
  }));
  if (rows.length === 0) return '<h2>Per-site results</h2><p class="note">No site evaluated a final model.</p>';
  const hasBad = r.settings.some((s) => s.sites.some((x) => x.malicious));
  const sizes = r.settings[0]!.sites.map((x) => x.rows).sort((a, b) => a - b);
  const median = sizes[Math.floor(sizes.length / 2)] ?? 0;
  return `<h2>Per-site results</h2>
<p class="note">Each dot is one site: the final global model's accuracy on that site's own hold-out rows (hover for details). Small sites scatter more. ${sizes.length ? `First setting: ${sizes.length} sites of ${sizes[0]}–${sizes.at(-1)} rows (median ${median}).` : ''}</p>
${stripPlot({ title: 'Final accuracy at each site', xLabel: 'accuracy on the site\'s hold-out rows', rows, legend: hasBad ? [{ label: 'honest site', color: HONEST }, { label: 'malicious site', color: MALICIOUS }] : [{ label: 'site', color: HONEST }] })}`;
}

function failures(r: SimulationResult): string {
  const rows = r.settings.map((s) => {
    const byCode: Record<string, number> = {};
    for (const round of s.rounds) for (const [c, n] of Object.entries(round.failures)) byCode[c] = (byCode[c] ?? 0) + n;
    return { s, byCode };
  });
  const codes = [...new Set(rows.flatMap((x) => Object.keys(x.byCode)))].sort();
  if (codes.length === 0 && r.settings.every((s) => s.injected.dropouts + s.injected.stragglers + s.injected.coordinatorRestarts === 0)) return '';
  return `<section><h2>Failures</h2><p class="note">Site failures the coordinator recorded, by code, over all rounds; and the faults the simulation injected (dropouts come back as disconnects, stragglers as timeouts; a restarted coordinator resumes from its store and checkpoints).</p>
<table><thead><tr><th>setting</th><th>tasks sent</th><th>dropouts</th><th>stragglers</th><th>coordinator restarts</th>${codes.map((c) => `<th>${esc(c.replace('COHORT_ERR_', ''))}</th>`).join('')}</tr></thead>
<tbody>${rows.map(({ s, byCode }) => `<tr><td>${esc(s.label)}</td><td>${s.injected.tasks}</td><td>${s.injected.dropouts}</td><td>${s.injected.stragglers}</td><td>${s.injected.coordinatorRestarts}</td>${codes.map((c) => `<td>${byCode[c] ?? '–'}</td>`).join('')}</tr>`).join('')}</tbody></table></section>`;
}

export function renderReport(r: SimulationResult, opts: { command?: string } = {}): string {
  const first = r.settings[0];
  const sweeps = r.sweeps.length ? r.sweeps.map((s) => `<code>${esc(s.key)}</code> = ${s.values.map((v) => esc(String(v))).join(', ')}`).join('; ') : 'none';
  return `<!doctype html>
<html lang="en"><head><meta charset="utf-8"><meta name="viewport" content="width=device-width,initial-scale=1">
<title>${esc(r.name)} · Cohort simulation</title><style>${CSS}</style></head>
<body><main>
<h1>${esc(r.name)}</h1>
<p class="sub">Cohort simulation: virtual sites running the production coordinator, strategies and site agents over an in-process transport.</p>
<ul class="meta"><li><b>${r.settings.length}</b> setting${r.settings.length === 1 ? '' : 's'}</li><li>sweeps: ${sweeps}</li><li>seed <b>${r.seed}</b></li>
<li><b>${r.workers}</b> worker thread${r.workers === 1 ? '' : 's'}</li><li>took <b>${ms(r.durationMs)}</b></li><li>${esc(r.startedAt.replace('T', ' ').slice(0, 19))} UTC</li>
<li>${esc(r.machine.model)} × ${r.machine.cpus}, Node ${esc(r.machine.node)}</li></ul>
<section><h2>Summary</h2><p class="note">Final round of each setting, pooled over every site's hold-out rows. Bold: best accuracy.${first?.sites.some((x) => x.malicious) ? ' Malicious sites tamper with the update they send (see the scenario\'s <code>malicious</code>).' : ''}</p>
${summaryTable(r)}</section>
<section><h2>Metrics per round</h2>${perRound(r)}</section>
<section>${utility(r)}</section>
<section>${membership(r)}</section>
<section>${perSite(r)}</section>
${failures(r)}
<footer>Files: <a href="results.json">results.json</a> · <a href="results.csv">results.csv</a> (per round) · <a href="sites.csv">sites.csv</a> (per site).
${opts.command ? `Reproduce with: <code>${esc(opts.command)}</code>` : ''}</footer>
</main></body></html>
`;
}
