// Small SVG charts for the dashboard: a line chart over rounds (optionally with an interval band) and a
// reliability diagram. No library, no CDN; every point carries data-* attributes so tests and people can read it.

const NS = 'http://www.w3.org/2000/svg';

function el(name, attrs = {}, parent) {
  const node = document.createElementNS(NS, name);
  for (const [k, v] of Object.entries(attrs)) if (v !== undefined && v !== null) node.setAttribute(k, String(v));
  if (parent) parent.appendChild(node);
  return node;
}

function text(parent, x, y, str, attrs = {}) {
  const t = el('text', { x, y, ...attrs }, parent);
  t.textContent = str;
  return t;
}

/** Round-number ticks covering [min, max]. */
export function niceTicks(min, max, count = 5) {
  const span = max - min || Math.abs(max) || 1;
  const raw = span / count;
  const mag = 10 ** Math.floor(Math.log10(raw));
  const f = raw / mag;
  const step = (f >= 7.5 ? 10 : f >= 3.5 ? 5 : f >= 1.5 ? 2 : 1) * mag;
  const ticks = [];
  for (let v = Math.ceil(min / step - 1e-9) * step; v <= max + step * 1e-9; v += step) ticks.push(Number(v.toFixed(10)));
  return { ticks, step };
}

function decimalsFor(step) {
  return Math.max(0, Math.min(4, -Math.floor(Math.log10(step) + 1e-9)));
}

const W = 560;
const H = 260;
const M = { left: 58, right: 16, top: 30, bottom: 44 };

function frame(container, { xLabel, yLabel, title }) {
  container.replaceChildren();
  const svg = el('svg', { viewBox: `0 0 ${W} ${H}`, role: 'img', 'aria-label': title, preserveAspectRatio: 'xMidYMid meet' }, container);
  el('title', {}, svg).textContent = title;
  const plot = { x0: M.left, x1: W - M.right, y0: H - M.bottom, y1: M.top };
  text(svg, (plot.x0 + plot.x1) / 2, H - 8, xLabel, { class: 'axis-label', 'text-anchor': 'middle' });
  text(svg, 0, 0, yLabel, { class: 'axis-label', 'text-anchor': 'middle', transform: `translate(14 ${(plot.y0 + plot.y1) / 2}) rotate(-90)` });
  return { svg, plot };
}

function axes(svg, plot, sx, sy, xTicks, yTicks, fmtX, fmtY) {
  const g = el('g', { class: 'axes' }, svg);
  for (const v of yTicks) {
    const y = sy(v);
    el('line', { x1: plot.x0, x2: plot.x1, y1: y, y2: y, stroke: '#edf0f4', 'stroke-width': 1 }, g);
    text(g, plot.x0 - 8, y + 4, fmtY(v), { 'text-anchor': 'end' });
  }
  for (const v of xTicks) {
    const x = sx(v);
    el('line', { x1: x, x2: x, y1: plot.y0, y2: plot.y0 + 5, stroke: '#9aa5b4' }, g);
    text(g, x, plot.y0 + 18, fmtX(v), { 'text-anchor': 'middle' });
  }
  el('line', { x1: plot.x0, x2: plot.x1, y1: plot.y0, y2: plot.y0, stroke: '#9aa5b4' }, g);
  el('line', { x1: plot.x0, x2: plot.x0, y1: plot.y0, y2: plot.y1, stroke: '#9aa5b4' }, g);
}

function legend(svg, plot, series) {
  let x = plot.x1;
  const g = el('g', { class: 'legend' }, svg);
  for (const s of [...series].reverse()) {
    const label = s.label;
    const w = 26 + label.length * 6.4;
    x -= w;
    el('line', { x1: x, x2: x + 16, y1: 14, y2: 14, stroke: s.color, 'stroke-width': 2.5, 'stroke-dasharray': s.dash ?? null }, g);
    text(g, x + 21, 18, label);
    if (s.band) {
      x -= 72;
      el('rect', { x, y: 8, width: 16, height: 12, fill: s.color, 'fill-opacity': 0.16 }, g);
      text(g, x + 21, 18, '95% CI');
    }
    x -= 12;
  }
}

/**
 * A chart of values per round. `series`: [{ key, label, color, dash?, band?, points: [{ x, y, lo?, hi?, tip }] }].
 * The x axis runs from round 1 to `xMax` (the study's planned rounds), so the chart fills as rounds complete.
 */
export function roundsChart(container, { series, xMax, xLabel = 'Round', yLabel, title, yDomain, fmtY }) {
  const { svg, plot } = frame(container, { xLabel, yLabel, title });
  const all = series.flatMap((s) => s.points.flatMap((p) => [p.y, p.lo, p.hi])).filter((v) => Number.isFinite(v));
  const rounds = series.reduce((n, s) => Math.max(n, s.points.length), 0);
  svg.setAttribute('data-rounds', String(rounds));
  let [lo, hi] = yDomain ? yDomain(all) : [Math.min(0, ...all), Math.max(...all, 0.1) * 1.1];
  if (!(hi > lo)) [lo, hi] = [0, 1];
  const { ticks: yTicks, step } = niceTicks(lo, hi, 5);
  lo = Math.min(lo, yTicks[0] ?? lo);
  hi = Math.max(hi, yTicks.at(-1) ?? hi);
  const n = Math.max(1, xMax);
  const sx = (r) => (n === 1 ? (plot.x0 + plot.x1) / 2 : plot.x0 + 14 + ((r - 1) / (n - 1)) * (plot.x1 - plot.x0 - 28));
  const sy = (v) => plot.y0 - ((v - lo) / (hi - lo)) * (plot.y0 - plot.y1);
  const xStep = Math.max(1, Math.ceil(n / 12));
  const xTicks = [];
  for (let r = 1; r <= n; r += xStep) xTicks.push(r);
  const fy = fmtY ?? ((v) => v.toFixed(decimalsFor(step)));
  axes(svg, plot, sx, sy, xTicks, yTicks, (v) => String(v), fy);
  if (rounds === 0) {
    text(svg, (plot.x0 + plot.x1) / 2, (plot.y0 + plot.y1) / 2, 'No completed rounds yet', { class: 'empty', 'text-anchor': 'middle' });
  }
  for (const s of series) {
    const g = el('g', { class: 'series', 'data-series': s.key }, svg);
    const pts = s.points.filter((p) => Number.isFinite(p.y));
    if (s.band) {
      const band = s.points.filter((p) => Number.isFinite(p.lo) && Number.isFinite(p.hi));
      if (band.length > 1) {
        const d = band.map((p, i) => `${i ? 'L' : 'M'}${sx(p.x).toFixed(1)},${sy(p.hi).toFixed(1)}`).join(' ')
          + ' ' + [...band].reverse().map((p) => `L${sx(p.x).toFixed(1)},${sy(p.lo).toFixed(1)}`).join(' ') + ' Z';
        el('path', { d, fill: s.color, 'fill-opacity': 0.14, stroke: 'none', class: 'band' }, g);
      }
      for (const p of band) el('line', { x1: sx(p.x), x2: sx(p.x), y1: sy(p.lo), y2: sy(p.hi), stroke: s.color, 'stroke-opacity': 0.45, 'stroke-width': 1.5 }, g);
    }
    if (pts.length > 1) {
      el('path', { d: pts.map((p, i) => `${i ? 'L' : 'M'}${sx(p.x).toFixed(1)},${sy(p.y).toFixed(1)}`).join(' '), fill: 'none', stroke: s.color, 'stroke-width': 2.2, 'stroke-dasharray': s.dash ?? null, 'stroke-linejoin': 'round' }, g);
    }
    for (const p of pts) {
      const c = el('circle', { cx: sx(p.x), cy: sy(p.y), r: 3.6, fill: '#fff', stroke: s.color, 'stroke-width': 2, class: 'pt', 'data-round': p.x, 'data-value': p.y }, g);
      if (p.tip) el('title', {}, c).textContent = p.tip;
    }
  }
  legend(svg, plot, series);
  return svg;
}

/** Reliability diagram: observed positive rate against mean predicted risk, per score bin, with the diagonal. */
export function reliabilityChart(container, calibration, { title = 'Calibration' } = {}) {
  const { svg, plot } = frame(container, { xLabel: 'Mean predicted risk', yLabel: 'Observed positive rate', title });
  const sx = (v) => plot.x0 + v * (plot.x1 - plot.x0);
  const sy = (v) => plot.y0 - v * (plot.y0 - plot.y1);
  const ticks = [0, 0.2, 0.4, 0.6, 0.8, 1];
  axes(svg, plot, sx, sy, ticks, ticks, (v) => v.toFixed(1), (v) => v.toFixed(1));
  el('line', { x1: sx(0), y1: sy(0), x2: sx(1), y2: sy(1), stroke: '#9aa5b4', 'stroke-dasharray': '5 4' }, svg);
  if (!calibration) {
    text(svg, (plot.x0 + plot.x1) / 2, (plot.y0 + plot.y1) / 2, 'No calibration data yet', { class: 'empty', 'text-anchor': 'middle' });
    return svg;
  }
  const shown = calibration.bins.filter((b) => b.observedRate !== undefined && b.observedRate !== null);
  const maxN = Math.max(1, ...shown.map((b) => b.n));
  const g = el('g', { class: 'series', 'data-series': 'calibration' }, svg);
  if (shown.length > 1) {
    el('path', { d: shown.map((b, i) => `${i ? 'L' : 'M'}${sx(b.meanPredicted).toFixed(1)},${sy(b.observedRate).toFixed(1)}`).join(' '), fill: 'none', stroke: '#1f5fa8', 'stroke-width': 2 }, g);
  }
  for (const b of shown) {
    const c = el('circle', { cx: sx(b.meanPredicted), cy: sy(b.observedRate), r: 3 + 5 * Math.sqrt(b.n / maxN), fill: '#1f5fa8', 'fill-opacity': 0.25, stroke: '#1f5fa8', 'stroke-width': 1.5, class: 'pt', 'data-bin': `${b.lower}-${b.upper}` }, g);
    el('title', {}, c).textContent = `risk ${b.lower.toFixed(1)}–${b.upper.toFixed(1)}: ${b.n} patients, predicted ${(b.meanPredicted * 100).toFixed(1)}%, observed ${(b.observedRate * 100).toFixed(1)}%`;
  }
  const hidden = calibration.bins.filter((b) => b.n > 0 && (b.observedRate === undefined || b.observedRate === null)).length;
  text(svg, plot.x0 + 10, plot.y1 + 4, `ECE ${Number.isFinite(calibration.ece) ? calibration.ece.toFixed(3) : '—'} · ${calibration.n} patients`, { 'text-anchor': 'start' });
  if (hidden) text(svg, plot.x0 + 10, plot.y1 + 20, `${hidden} bin${hidden > 1 ? 's' : ''} with too few patients not shown`, { 'text-anchor': 'start' });
  const angle = (-Math.atan2(plot.y0 - plot.y1, plot.x1 - plot.x0) * 180) / Math.PI;
  text(svg, 0, 0, 'perfect calibration', { 'text-anchor': 'middle', fill: '#7a8596', transform: `translate(${sx(0.62)} ${sy(0.62) + 14}) rotate(${angle.toFixed(1)})` });
  return svg;
}
