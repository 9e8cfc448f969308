// The Cohort dashboard: plain JS, no build step. Reads the REST API (bearer token from ?token= or localStorage)
// and follows the coordinator's /events namespace over socket.io; every value shown comes from the API.
import { reliabilityChart, roundsChart } from './charts.js';

const TOKEN_KEY = 'cohort.token';
const $ = (id) => document.getElementById(id);

// ---------------------------------------------------------------- token: ?token= wins, then localStorage
const params = new URLSearchParams(location.search);
let token = params.get('token') || localStorage.getItem(TOKEN_KEY) || '';
if (params.has('token')) {
  if (token) localStorage.setItem(TOKEN_KEY, token);
  params.delete('token'); // keep the token out of the address bar and history
  history.replaceState(null, '', location.pathname + (params.size ? `?${params}` : '') + location.hash);
}

const state = {
  sites: [],
  studies: [],
  selected: params.get('study') || '',
  detail: null, // GET /api/studies/:id
  metrics: null, // GET /api/studies/:id/metrics
  live: null, // { studyId, round, status, message } from the latest round event
};

class AuthError extends Error {}

async function api(path) {
  const res = await fetch(path, { headers: token ? { authorization: `Bearer ${token}` } : {}, cache: 'no-store' });
  if (res.status === 401 || res.status === 403) throw new AuthError((await res.json().catch(() => null))?.error?.code ?? `HTTP ${res.status}`);
  if (!res.ok) throw new Error((await res.json().catch(() => null))?.error?.message ?? `HTTP ${res.status}`);
  return res.json();
}

function showAuth(reason) {
  $('auth').hidden = false;
  $('auth-error').textContent = reason ? `(${reason})` : '';
  setConn('error', 'Not signed in');
}

function setConn(s, label) {
  $('conn').dataset.state = s;
  $('conn').textContent = label;
}

// ---------------------------------------------------------------- formatting
const dash = '—';
const fin = (v) => typeof v === 'number' && Number.isFinite(v);
const f3 = (v) => (fin(v) ? v.toFixed(3) : dash);
const f4 = (v) => (fin(v) ? v.toFixed(4) : dash);
const pct = (v) => (fin(v) ? `${(v * 100).toFixed(1)}%` : dash);
const hasEpsilon = (r) => Object.values(r?.epsilon ?? {}).some(fin);

function node(tag, attrs = {}, ...children) {
  const e = document.createElement(tag);
  for (const [k, v] of Object.entries(attrs)) {
    if (v === undefined || v === null || v === false) continue;
    if (k === 'class') e.className = v;
    else if (k === 'dataset') Object.assign(e.dataset, v);
    else e.setAttribute(k, v === true ? '' : String(v));
  }
  for (const c of children) if (c !== null && c !== undefined) e.append(c instanceof Node ? c : String(c));
  return e;
}

/**
 * A value with its interval, or a suppression marker saying why it is not shown. `fmt` formats the value, `fmtCi`
 * the interval bounds; `ci: false` leaves the interval out.
 */
function estimateCell(m, key, { fmt, fmtCi = fmt, ci = true }) {
  const est = m?.[key];
  if (est && fin(est.value)) {
    const td = node('td', { class: 'num' }, fmt(est.value));
    if (ci && fin(est.lower) && fin(est.upper)) td.append(' ', node('span', { class: 'ci' }, `(${fmtCi(est.lower)}–${fmtCi(est.upper)})`));
    return td;
  }
  if (m?.unverifiable?.includes(key)) {
    return node('td', { class: 'num suppressed', title: 'this coordinator did not keep the per-site class counts, so it cannot check that enough patients are behind this value' }, 'not shown');
  }
  if (m?.suppressed?.includes(key)) {
    return node('td', { class: 'num suppressed', title: `computed from fewer than ${m.minCellCount} patients, so not shown` }, `<${m.minCellCount} cases`);
  }
  return node('td', { class: 'num' }, dash);
}
const aucCell = (m) => estimateCell(m, 'auc', { fmt: f3 });
const pctCell = (m, key, ci = true) => estimateCell(m, key, { fmt: pct, fmtCi: (v) => (v * 100).toFixed(1), ci });

function ago(iso) {
  const s = Math.max(0, (Date.now() - Date.parse(iso)) / 1000);
  if (s < 60) return 'just now';
  if (s < 3600) return `${Math.round(s / 60)} min ago`;
  if (s < 86400) return `${Math.round(s / 3600)} h ago`;
  return new Date(iso).toLocaleDateString();
}

// ---------------------------------------------------------------- rendering
function renderSites() {
  const online = state.sites.filter((s) => s.online && !s.revokedAt).length;
  $('sites-online').textContent = `${online} site${online === 1 ? '' : 's'} online`;
  const ul = $('sites');
  ul.replaceChildren();
  if (state.sites.length === 0) ul.append(node('li', { class: 'muted' }, 'No site has connected yet.'));
  for (const s of [...state.sites].sort((a, b) => Number(b.online) - Number(a.online) || a.name.localeCompare(b.name))) {
    const cls = s.revokedAt ? 'dot revoked' : s.online ? 'dot on' : 'dot';
    ul.append(node('li', { dataset: { site: s.name, online: String(Boolean(s.online)) } },
      node('span', { class: cls, title: s.revokedAt ? 'revoked' : s.online ? 'online' : 'offline' }),
      node('span', { class: 'grow', title: s.name }, s.name),
      node('span', { class: 'small' }, s.revokedAt ? 'revoked' : s.online ? 'online' : `seen ${ago(s.lastSeenAt)}`)));
  }
}

function renderStudies() {
  const ul = $('studies');
  ul.replaceChildren();
  if (state.studies.length === 0) ul.append(node('li', { class: 'muted' }, 'No studies yet.'));
  for (const s of [...state.studies].sort((a, b) => b.createdAt.localeCompare(a.createdAt))) {
    const li = node('li', { class: 'study-item', tabindex: '0', role: 'button', 'aria-current': String(s.id === state.selected), dataset: { study: s.id } },
      node('span', { class: 'grow', title: s.id }, s.name),
      node('span', { class: 'small' }, `${s.completedRounds}/${s.rounds}`),
      node('span', { class: `badge ${s.status}` }, s.status));
    const pick = () => select(s.id);
    li.addEventListener('click', pick);
    li.addEventListener('keydown', (e) => { if (e.key === 'Enter' || e.key === ' ') { e.preventDefault(); pick(); } });
    ul.append(li);
  }
}

function inProgressText(study) {
  if (study.status !== 'running') return null;
  const live = state.live && state.live.studyId === study.id ? state.live : null;
  const next = study.completedRounds + 1;
  if (live && live.stage) return `Rounds done; ${live.stage}`;
  if (live && live.round === next && live.status !== 'completed') {
    const what = { training: 'training at the sites', evaluating: 'evaluating the new global model', retry: 'retrying' }[live.status] ?? live.status;
    return `Round ${next} of ${study.rounds} in progress: ${what}${live.message ? ` (${live.message})` : ''}`;
  }
  if (next > study.rounds) return 'Finishing…';
  return `Round ${next} of ${study.rounds} in progress`;
}

function renderHead() {
  const box = $('study-head');
  box.replaceChildren();
  const d = state.detail;
  if (!d) {
    box.append(node('div', { class: 'muted' }, state.studies.length ? 'Select a study.' : 'No study yet. Create one with ', state.studies.length ? null : node('code', {}, 'cohort study create'), state.studies.length ? null : '.'));
    return;
  }
  const s = d.study;
  box.dataset.status = s.status;
  box.append(node('div', { class: 'study-title' },
    node('h1', {}, s.name), node('span', { class: `badge ${s.status}`, id: 'study-status' }, s.status), node('span', { class: 'id' }, s.id)));
  const progress = node('div', { class: 'progress-line' });
  const bar = node('div', { class: 'bar', role: 'progressbar', 'aria-valuemin': '0', 'aria-valuemax': String(s.rounds), 'aria-valuenow': String(s.completedRounds) }, node('span'));
  bar.firstChild.style.width = `${Math.min(100, (100 * s.completedRounds) / Math.max(1, s.rounds))}%`;
  progress.append(node('span', { id: 'rounds-done' }, `${s.completedRounds} of ${s.rounds} rounds completed`), bar);
  box.append(progress);
  const live = inProgressText(s);
  if (live) box.append(node('div', { id: 'round-live' }, live));
  const m = s.manifest ?? {};
  const last = state.metrics?.rounds?.at(-1);
  box.append(node('div', { class: 'facts' },
    node('span', {}, 'Model ', node('b', {}, m.model?.template ?? dash)),
    node('span', {}, 'Strategy ', node('b', {}, m.strategy?.name ?? m.strategy ?? 'fedavg')),
    node('span', {}, 'Sites in last round ', node('b', {}, last ? String(last.participants.length) : dash)),
    node('span', {}, 'Pooled hold-out ', node('b', {}, last ? `${last.pooled.n} patients` : dash)),
    node('span', {}, 'Secure aggregation ', node('b', {}, m.privacy?.secureAggregation ? 'on' : 'off')),
    node('span', { title: 'largest privacy loss any site has spent on this study' }, 'ε spent ', node('b', { id: 'epsilon-max' }, hasEpsilon(last) ? Math.max(...Object.values(last.epsilon).filter(fin)).toFixed(2) : 'no DP')),
    node('span', {}, 'Updated ', node('b', {}, ago(s.updatedAt)))));
  if (s.error) box.append(node('div', { class: 'error-box' }, `${s.error.code}: ${s.error.message}`));
}

/** Colour-blind-safe qualitative palette (Okabe & Ito 2008), one colour per site. */
const SITE_COLORS = ['#0072b2', '#d55e00', '#009e73', '#cc79a7', '#e69f00', '#56b4e9', '#000000'];
/** AUC axes start at the next 0.05 below the lowest value shown (never above 0.95) and end at 1. */
const aucDomain = (vals) => [Math.max(0, Math.floor(Math.min(...vals, 0.95) * 20 + 1e-9) / 20), 1];

function renderCharts() {
  const rounds = state.metrics?.rounds ?? [];
  const xMax = Math.max(state.detail?.study.rounds ?? 1, rounds.at(-1)?.round ?? 1);
  roundsChart($('chart-loss'), {
    title: 'Loss per round', yLabel: 'Loss (cross-entropy)', xMax,
    series: [
      { key: 'train-loss', label: 'Training (sites, weighted)', color: '#b26a00', dash: '6 4', points: rounds.map((r) => ({ x: r.round, y: r.trainLoss, tip: `Round ${r.round}: training loss ${f4(r.trainLoss)}` })) },
      { key: 'holdout-loss', label: 'Pooled hold-out', color: '#1f5fa8', points: rounds.map((r) => ({ x: r.round, y: r.pooled.loss, tip: `Round ${r.round}: hold-out loss ${f4(r.pooled.loss)}` })) },
    ],
  });
  roundsChart($('chart-auc'), {
    title: 'Pooled hold-out AUC per round', yLabel: 'AUC', xMax,
    yDomain: aucDomain,
    fmtY: (v) => v.toFixed(2),
    series: [{
      key: 'auc', label: 'AUC', color: '#1f5fa8', band: true,
      points: rounds.map((r) => ({ x: r.round, y: r.pooled.auc?.value, lo: r.pooled.auc?.lower, hi: r.pooled.auc?.upper, tip: `Round ${r.round}: AUC ${f3(r.pooled.auc?.value)} (95% CI ${f3(r.pooled.auc?.lower)}–${f3(r.pooled.auc?.upper)})` })),
    }],
  });
  const siteNames = [...new Set(rounds.flatMap((r) => Object.keys(r.perSite)))].sort();
  roundsChart($('chart-sites'), {
    title: 'AUC per site per round', yLabel: 'AUC', xMax, yDomain: aucDomain, fmtY: (v) => v.toFixed(2),
    series: siteNames.map((site, i) => ({
      key: `site-${i}`, label: site, color: SITE_COLORS[i % SITE_COLORS.length],
      points: rounds.map((r) => ({ x: r.round, y: r.perSite[site]?.auc?.value, tip: `Round ${r.round}, ${site}: AUC ${f3(r.perSite[site]?.auc?.value)}` })),
    })),
  });
  reliabilityChart($('chart-cal'), rounds.at(-1)?.pooled.calibration ?? null, { title: 'Calibration of the latest round' });
}

function failuresCell(r, previous) {
  const td = node('td');
  const dropped = previous ? previous.participants.filter((p) => !r.participants.includes(p) && !r.failures.some((f) => f.site === p)) : [];
  if (r.failures.length === 0 && dropped.length === 0) {
    td.append(node('span', { class: 'muted' }, 'none'));
    return td;
  }
  td.dataset.failures = String(r.failures.length + dropped.length);
  for (const f of r.failures) td.append(node('div', { class: 'fail', title: f.message }, `${f.site}: ${f.code.replace(/^COHORT_ERR_/, '')} (${f.stage})`));
  for (const p of dropped) td.append(node('div', { class: 'fail' }, `${p}: not connected`));
  return td;
}

/** The largest epsilon any site has spent so far; the tooltip lists every site's. */
function epsilonCell(eps) {
  const entries = Object.entries(eps ?? {}).filter(([, v]) => fin(v));
  if (entries.length === 0) return node('td', { class: 'num', title: 'no differential privacy recorded for this round' }, dash);
  const max = Math.max(...entries.map(([, v]) => v));
  return node('td', { class: 'num', title: entries.map(([s, v]) => `${s}: ε ${v.toFixed(2)}`).join('\n'), dataset: { epsilon: String(max) } }, max.toFixed(2));
}

function renderRounds() {
  const tbody = $('rounds').tBodies[0];
  tbody.replaceChildren();
  const rounds = state.metrics?.rounds ?? [];
  // The ε column only when the study records privacy loss: no column of dashes for studies without DP.
  const anyEps = rounds.some(hasEpsilon);
  $('rounds-eps').hidden = !anyEps;
  const columns = anyEps ? 12 : 11;
  rounds.forEach((r, i) => {
    tbody.append(node('tr', { dataset: { round: String(r.round) } },
      node('td', {}, String(r.round)),
      node('td', { title: r.participants.join(', ') }, String(r.participants.length)),
      failuresCell(r, rounds[i - 1]),
      node('td', { class: 'num' }, f4(r.trainLoss)),
      node('td', { class: 'num' }, f4(r.pooled.loss)),
      aucCell(r.pooled),
      pctCell(r.pooled, 'accuracy', false),
      pctCell(r.pooled, 'sensitivity'),
      pctCell(r.pooled, 'specificity'),
      node('td', { class: 'num' }, f3(r.pooled.calibration?.ece)),
      anyEps ? epsilonCell(r.epsilon) : null,
      node('td', { class: 'num' }, (r.durationMs / 1000).toFixed(1))));
  });
  const s = state.detail?.study;
  const live = s ? inProgressText(s) : null;
  if (live) tbody.append(node('tr', { class: 'live' }, node('td', {}, s.completedRounds < s.rounds ? String(s.completedRounds + 1) : ''), node('td', { colspan: String(columns - 1) }, live)));
  if (tbody.children.length === 0) tbody.append(node('tr', {}, node('td', { colspan: String(columns), class: 'muted' }, 'No completed rounds yet.')));
}

function renderPerSite() {
  const tbody = $('persite').tBodies[0];
  tbody.replaceChildren();
  const last = state.metrics?.rounds?.at(-1);
  const min = state.metrics?.minCellCount ?? 10;
  const unverifiable = Object.values(last?.perSite ?? {}).some((m) => m.unverifiable?.length);
  $('suppression-note').textContent = `Any per-site value computed from fewer than ${min} patients is withheld. Pooled values sum every site's counts.`
    + (unverifiable ? ' "Not shown": this coordinator does not keep per-site class counts, so it cannot check how many patients are behind that value.' : '');
  if (!last) {
    tbody.append(node('tr', {}, node('td', { colspan: '7', class: 'muted' }, 'No completed rounds yet.')));
    return;
  }
  const eps = last.epsilon && Object.keys(last.epsilon).length ? last.epsilon : null;
  $('persite-eps').hidden = !eps;
  for (const [site, m] of Object.entries(last.perSite).sort(([a], [b]) => a.localeCompare(b))) {
    const floor = m.minCellCount ?? min;
    tbody.append(node('tr', { dataset: { site } },
      node('td', { class: 'site' }, site),
      node('td', { class: 'num' }, m.n >= floor ? String(m.n) : `<${floor}`),
      aucCell(m),
      pctCell(m, 'accuracy'),
      pctCell(m, 'sensitivity'),
      pctCell(m, 'specificity'),
      node('td', { class: 'num' }, f3(m.calibration?.ece)),
      eps ? node('td', { class: 'num' }, fin(eps[site]) ? eps[site].toFixed(2) : dash) : null));
  }
}

function renderLoso() {
  const loso = state.metrics?.loso;
  $('loso-card').hidden = !loso;
  const tbody = $('loso').tBodies[0];
  tbody.replaceChildren();
  if (!loso) return;
  for (const f of loso.folds) {
    const m = f.metrics;
    const floor = m?.minCellCount ?? state.metrics.minCellCount;
    tbody.append(node('tr', { dataset: { heldOut: f.heldOut, status: f.status } },
      node('td', { class: 'site' }, f.heldOut),
      node('td', {}, f.trainedOn.length ? f.trainedOn.join(', ') : dash),
      node('td', { class: 'num' }, m ? (m.n >= floor ? String(m.n) : `<${floor}`) : dash),
      aucCell(m),
      aucCell(f.global),
      pctCell(m, 'accuracy', false),
      node('td', { class: f.status === 'failed' ? 'fail' : '', title: f.error?.message ?? '' }, f.status === 'failed' ? `failed: ${(f.error?.code ?? '').replace(/^COHORT_ERR_/, '')}` : f.status)));
  }
  if (loso.pooled) {
    tbody.append(node('tr', { class: 'pooled' },
      node('td', {}, 'Pooled'), node('td', { class: 'muted' }, 'each patient scored by a model that never saw their site'),
      node('td', { class: 'num' }, String(loso.pooled.n)), aucCell(loso.pooled), node('td', { class: 'num' }, dash), pctCell(loso.pooled, 'accuracy', false), node('td')));
  }
  const running = state.detail?.study.status === 'running' && loso.status !== 'completed';
  if (running) tbody.append(node('tr', { class: 'live' }, node('td', { colspan: '7' }, 'Leave-one-site-out in progress…')));
}

function renderMethods() {
  const m = state.metrics?.methods;
  $('methods').textContent = m ? `Methods. AUC: ${m.auc}. Accuracy, sensitivity, specificity: ${m.proportions}. Calibration: ${m.calibration}. Small cells: ${m.suppression}. ε spent appears when the study uses differential privacy.` : '';
}

function render() {
  renderSites();
  renderStudies();
  renderHead();
  renderCharts();
  renderRounds();
  renderPerSite();
  renderLoso();
  renderMethods();
  document.body.dataset.ready = 'true';
}

// ---------------------------------------------------------------- loading
async function loadSites() {
  state.sites = (await api('/api/sites')).sites;
}
async function loadStudies() {
  state.studies = (await api('/api/studies')).studies;
  if (!state.selected || !state.studies.some((s) => s.id === state.selected)) {
    const running = state.studies.find((s) => s.status === 'running');
    const newest = [...state.studies].sort((a, b) => b.createdAt.localeCompare(a.createdAt))[0];
    state.selected = (running ?? newest)?.id ?? '';
  }
}
async function loadSelected() {
  if (!state.selected) {
    state.detail = null;
    state.metrics = null;
    return;
  }
  const id = encodeURIComponent(state.selected);
  const [detail, metrics] = await Promise.all([api(`/api/studies/${id}`), api(`/api/studies/${id}/metrics`)]);
  if (detail.study.id !== state.selected) return; // the selection moved on meanwhile
  state.detail = detail;
  state.metrics = metrics;
}

// Coalesce bursts of events into one reload per kind.
const pending = new Set();
let timer = null;
function refresh(...kinds) {
  for (const k of kinds) pending.add(k);
  if (timer) return;
  timer = setTimeout(async () => {
    timer = null;
    const kinds = new Set(pending);
    pending.clear();
    try {
      if (kinds.has('sites')) await loadSites();
      if (kinds.has('studies')) await loadStudies();
      if (kinds.has('studies') || kinds.has('selected')) await loadSelected();
      $('auth').hidden = true;
      render();
    } catch (err) {
      if (err instanceof AuthError) showAuth(err.message);
      else console.error(err);
    }
  }, 60);
}

function select(id) {
  state.selected = id;
  const p = new URLSearchParams(location.search);
  p.set('study', id);
  history.replaceState(null, '', `${location.pathname}?${p}${location.hash}`);
  state.detail = null;
  state.metrics = null;
  renderStudies();
  refresh('selected');
}

// ---------------------------------------------------------------- live events
let socket = null;
function connect() {
  if (socket) socket.close();
  if (typeof window.io !== 'function') {
    setConn('error', 'Live updates unavailable');
    return;
  }
  socket = window.io('/events', { auth: token ? { token } : {}, reconnectionDelayMax: 5000 });
  socket.on('connect', () => {
    setConn('live', 'Live');
    refresh('sites', 'studies', 'selected'); // catch up on anything missed while disconnected
  });
  socket.on('disconnect', () => setConn('connecting', 'Reconnecting…'));
  socket.on('connect_error', (err) => {
    if (/AUTH_TOKEN|AUTH_RATE/.test(err?.message ?? '')) {
      socket.close();
      showAuth(err.message);
    } else {
      setConn('connecting', 'Reconnecting…');
    }
  });
  socket.on('event', (e) => {
    if (e.type === 'site') refresh('sites');
    else if (e.type === 'study') {
      // Stages after the rounds (leave-one-site-out) come as study events with a message.
      if (e.studyId === state.selected && e.status === 'running' && e.message?.startsWith('leave-one-site-out')) {
        state.live = { studyId: e.studyId, stage: e.message };
        if (state.detail) renderHead();
        refresh('selected');
      } else if (e.studyId === state.selected && e.status !== 'running') {
        state.live = null;
      }
      refresh('studies', 'sites');
    }
    else if (e.type === 'round') {
      if (!state.selected && e.studyId) state.selected = e.studyId;
      if (e.studyId === state.selected) {
        state.live = { studyId: e.studyId, round: e.round, status: e.status, message: e.message };
        if (state.detail) {
          renderHead();
          renderRounds();
        }
      }
      if (e.status === 'completed') refresh('studies');
    }
  });
}

$('auth').addEventListener('submit', (e) => {
  e.preventDefault();
  token = $('token-input').value.trim();
  if (token) localStorage.setItem(TOKEN_KEY, token);
  else localStorage.removeItem(TOKEN_KEY);
  $('auth').hidden = true;
  setConn('connecting', 'Connecting…');
  refresh('sites', 'studies', 'selected');
  connect();
});

// Keep "seen 3 min ago" honest without a reload.
setInterval(() => { if (state.sites.length) renderSites(); }, 30_000);

refresh('sites', 'studies', 'selected');
if (document.readyState === 'complete') connect();
else window.addEventListener('load', connect);
