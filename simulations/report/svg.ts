/**
 * Small inline-SVG charts for the simulation report: no scripts, no external assets, readable when printed.
 * Every mark carries a <title>, so hovering shows its exact value.
 */

/** Tableau 10: distinct, print-safe, friendly to the common colour-vision deficiencies. */
export const PALETTE = ['#4e79a7', '#f28e2b', '#59a14f', '#e15759', '#76b7b2', '#edc948', '#b07aa1', '#ff9da7', '#9c755f', '#bab0ac'];
export const colorAt = (i: number): string => PALETTE[i % PALETTE.length]!;

export function esc(s: string): string {
  return s.replace(/&/g, '&amp;').replace(/</g, '&lt;').replace(/>/g, '&gt;').replace(/"/g, '&quot;');
}

export const fmt = (v: number, digits = 3): string => (Math.abs(v) >= 1000 || (v !== 0 && Math.abs(v) < 0.001) ? v.toExponential(1) : String(+v.toFixed(digits)));

/** About `count` round tick values covering [lo, hi] (1, 2, 5 times a power of ten). */
export function ticks(lo: number, hi: number, count = 5): number[] {
  if (!(hi > lo)) return [lo];
  const raw = (hi - lo) / count;
  const p = Math.pow(10, Math.floor(Math.log10(raw)));
  const step = [1, 2, 5, 10].map((m) => m * p).find((s) => s >= raw) ?? 10 * p;
  const out: number[] = [];
  for (let v = Math.ceil(lo / step - 1e-9) * step; v <= hi + step * 1e-9; v += step) out.push(+v.toFixed(12));
  return out;
}

/** A domain padded a little and widened to at least `minSpan`, clamped to [floor, ceil] when given. */
export function domainOf(values: number[], opts: { floor?: number; ceil?: number; minSpan?: number } = {}): [number, number] {
  const finite = values.filter(Number.isFinite);
  if (finite.length === 0) return [opts.floor ?? 0, opts.ceil ?? 1];
  let lo = Math.min(...finite);
  let hi = Math.max(...finite);
  const span = Math.max(hi - lo, opts.minSpan ?? 0);
  const mid = (lo + hi) / 2;
  lo = Math.min(lo, mid - span / 2) - span * 0.08;
  hi = Math.max(hi, mid + span / 2) + span * 0.08;
  if (opts.floor !== undefined) lo = Math.max(lo, opts.floor);
  if (opts.ceil !== undefined) hi = Math.min(hi, opts.ceil);
  return [lo, hi];
}

export interface Series {
  name: string;
  color: string;
  points: [number, number | null][];
  dashed?: boolean;
}

interface Frame {
  width: number;
  height: number;
  left: number;
  right: number;
  top: number;
  bottom: number;
}

function frameOf(width: number, height: number, left = 56): Frame {
  return { width, height, left, right: 16, top: 30, bottom: 44 };
}

function axes(f: Frame, x: { lo: number; hi: number; label: string; ticks: number[]; format?: (v: number) => string },
  y: { lo: number; hi: number; label: string; format?: (v: number) => string }, title: string): { sx: (v: number) => number; sy: (v: number) => number; svg: string } {
  const pw = f.width - f.left - f.right;
  const ph = f.height - f.top - f.bottom;
  const sx = (v: number) => f.left + (x.hi === x.lo ? pw / 2 : ((v - x.lo) / (x.hi - x.lo)) * pw);
  const sy = (v: number) => f.top + ph - ((v - y.lo) / (y.hi - y.lo || 1)) * ph;
  const parts: string[] = [];
  parts.push(`<text x="${f.left}" y="18" class="title">${esc(title)}</text>`);
  for (const t of ticks(y.lo, y.hi, 5)) {
    parts.push(`<line x1="${f.left}" x2="${f.width - f.right}" y1="${sy(t).toFixed(1)}" y2="${sy(t).toFixed(1)}" class="grid"/>`);
    parts.push(`<text x="${f.left - 6}" y="${(sy(t) + 4).toFixed(1)}" class="tick" text-anchor="end">${esc((y.format ?? fmt)(t))}</text>`);
  }
  for (const t of x.ticks) {
    parts.push(`<line x1="${sx(t).toFixed(1)}" x2="${sx(t).toFixed(1)}" y1="${f.top + ph}" y2="${f.top + ph + 4}" class="axis"/>`);
    parts.push(`<text x="${sx(t).toFixed(1)}" y="${f.top + ph + 17}" class="tick" text-anchor="middle">${esc((x.format ?? fmt)(t))}</text>`);
  }
  parts.push(`<line x1="${f.left}" x2="${f.width - f.right}" y1="${f.top + ph}" y2="${f.top + ph}" class="axis"/>`);
  parts.push(`<text x="${f.left + pw / 2}" y="${f.height - 6}" class="label" text-anchor="middle">${esc(x.label)}</text>`);
  parts.push(`<text transform="translate(14 ${f.top + ph / 2}) rotate(-90)" class="label" text-anchor="middle">${esc(y.label)}</text>`);
  return { sx, sy, svg: parts.join('') };
}

function svgOpen(f: Frame, label: string): string {
  return `<svg viewBox="0 0 ${f.width} ${f.height}" width="${f.width}" height="${f.height}" role="img" aria-label="${esc(label)}" class="chart">`;
}

/** Lines with markers; `refLines` draws labelled horizontal references (e.g. AUC 0.5). */
export function lineChart(o: {
  title: string; xLabel: string; yLabel: string; series: Series[]; width?: number; height?: number;
  yDomain?: [number, number]; xDomain?: [number, number]; xTicks?: number[]; xFormat?: (v: number) => string; yFormat?: (v: number) => string;
  refLines?: { y: number; label: string }[]; logX?: boolean;
}): string {
  const f = frameOf(o.width ?? 460, o.height ?? 280);
  const tx = (v: number) => (o.logX ? Math.log10(v) : v);
  const xs = o.series.flatMap((s) => s.points.map((p) => tx(p[0])));
  const ys = o.series.flatMap((s) => s.points.map((p) => p[1]).filter((v): v is number => v !== null));
  const [xlo, xhi] = o.xDomain ?? [Math.min(...xs), Math.max(...xs)];
  const [ylo, yhi] = o.yDomain ?? domainOf([...ys, ...(o.refLines ?? []).map((r) => r.y)], { minSpan: 0.02 });
  const xt = o.xTicks ?? (o.logX ? xs : ticks(xlo, xhi, 6).filter((t) => Number.isInteger(t) || xhi - xlo < 6));
  const { sx, sy, svg } = axes(f, { lo: xlo, hi: xhi, label: o.xLabel, ticks: xt, ...(o.xFormat ? { format: o.xFormat } : o.logX ? { format: (v: number) => fmt(Math.pow(10, v)) } : {}) },
    { lo: ylo, hi: yhi, label: o.yLabel, ...(o.yFormat ? { format: o.yFormat } : {}) }, o.title);
  const parts = [svgOpen(f, o.title), svg];
  for (const r of o.refLines ?? []) {
    parts.push(`<line x1="${f.left}" x2="${f.width - f.right}" y1="${sy(r.y).toFixed(1)}" y2="${sy(r.y).toFixed(1)}" class="ref"/>`);
    parts.push(`<text x="${f.width - f.right - 4}" y="${(sy(r.y) - 5).toFixed(1)}" class="reflabel" text-anchor="end">${esc(r.label)}</text>`);
  }
  const many = Math.max(0, ...o.series.map((s) => s.points.length)) > 40;
  for (const s of o.series) {
    const pts = s.points.filter((p): p is [number, number] => p[1] !== null && Number.isFinite(p[1]));
    if (pts.length > 1) {
      parts.push(`<polyline fill="none" stroke="${s.color}" stroke-width="2" ${s.dashed ? 'stroke-dasharray="5 4"' : ''} points="${pts.map((p) => `${sx(tx(p[0])).toFixed(1)},${sy(p[1]).toFixed(1)}`).join(' ')}"><title>${esc(s.name)}</title></polyline>`);
    }
    if (!many) {
      for (const p of pts) {
        const xText = o.xFormat ? o.xFormat(tx(p[0])) : fmt(p[0], 4);
        parts.push(`<circle cx="${sx(tx(p[0])).toFixed(1)}" cy="${sy(p[1]).toFixed(1)}" r="3.2" fill="${s.color}" stroke="#fff" stroke-width="1"><title>${esc(`${s.name}\n${o.xLabel} ${xText}: ${o.yLabel} ${fmt(p[1], 4)}`)}</title></circle>`);
      }
    }
  }
  parts.push('</svg>');
  return parts.join('');
}

/** Horizontal bars with the value at the end of each; `refLine` marks a reference value (e.g. 0.5). */
export function barChart(o: {
  title: string; xLabel: string; bars: { label: string; value: number | null; color: string; note?: string }[];
  domain?: [number, number]; refLine?: { x: number; label: string }; width?: number; format?: (v: number) => string;
  /** Bars grow from this value (default 0), e.g. 0.5 for an AUC, so a bar shows the distance from chance. */
  base?: number;
}): string {
  const labelWidth = Math.min(440, Math.max(90, ...o.bars.map((b) => b.label.length * 6.2 + 14)));
  const rowH = 24;
  const f: Frame = { width: o.width ?? 1040, height: 30 + o.bars.length * rowH + 40, left: labelWidth, right: 60, top: 30, bottom: 40 };
  const values = o.bars.map((b) => b.value).filter((v): v is number => v !== null);
  const [lo, hi] = o.domain ?? domainOf([...values, ...(o.refLine ? [o.refLine.x] : [])], { minSpan: 0.02 });
  const pw = f.width - f.left - f.right;
  const sx = (v: number) => f.left + ((v - lo) / (hi - lo || 1)) * pw;
  const format = o.format ?? ((v: number) => fmt(v, 3));
  const parts = [svgOpen(f, o.title), `<text x="8" y="18" class="title">${esc(o.title)}</text>`];
  const bottom = f.top + o.bars.length * rowH;
  for (const t of ticks(lo, hi, 5)) {
    parts.push(`<line x1="${sx(t).toFixed(1)}" x2="${sx(t).toFixed(1)}" y1="${f.top}" y2="${bottom}" class="grid"/>`);
    parts.push(`<text x="${sx(t).toFixed(1)}" y="${bottom + 16}" class="tick" text-anchor="middle">${esc(format(t))}</text>`);
  }
  o.bars.forEach((b, i) => {
    const y = f.top + i * rowH;
    parts.push(`<text x="${f.left - 8}" y="${y + rowH / 2 + 4}" class="tick" text-anchor="end">${esc(b.label)}</text>`);
    if (b.value === null) {
      parts.push(`<text x="${f.left + 6}" y="${y + rowH / 2 + 4}" class="tick muted">${esc(b.note ?? 'n/a')}</text>`);
      return;
    }
    const x0 = sx(Math.max(lo, Math.min(o.base ?? 0, hi)));
    const x1 = sx(Math.max(lo, Math.min(b.value, hi)));
    parts.push(`<rect x="${Math.min(x0, x1).toFixed(1)}" y="${y + 4}" width="${Math.max(1, Math.abs(x1 - x0)).toFixed(1)}" height="${rowH - 8}" rx="3" fill="${b.color}"><title>${esc(`${b.label}: ${format(b.value)}${b.note ? ` (${b.note})` : ''}`)}</title></rect>`);
    parts.push(`<text x="${(Math.max(x0, x1) + 5).toFixed(1)}" y="${y + rowH / 2 + 4}" class="tick">${esc(format(b.value))}</text>`);
  });
  if (o.refLine) {
    parts.push(`<line x1="${sx(o.refLine.x).toFixed(1)}" x2="${sx(o.refLine.x).toFixed(1)}" y1="${f.top - 4}" y2="${bottom}" class="ref"/>`);
    parts.push(`<text x="${(sx(o.refLine.x) + 4).toFixed(1)}" y="${f.top - 6}" class="reflabel">${esc(o.refLine.label)}</text>`);
  }
  parts.push(`<text x="${f.left + pw / 2}" y="${f.height - 6}" class="label" text-anchor="middle">${esc(o.xLabel)}</text>`);
  parts.push('</svg>');
  return parts.join('');
}

/** One row of dots per group (e.g. per-site accuracy per setting); `points` may carry their own colour. */
export function stripPlot(o: {
  title: string; xLabel: string; rows: { label: string; points: { x: number; color: string; title: string }[] }[];
  domain?: [number, number]; width?: number; legend?: { label: string; color: string }[];
}): string {
  const labelWidth = Math.min(440, Math.max(90, ...o.rows.map((r) => r.label.length * 6.2 + 14)));
  const rowH = 30;
  const f: Frame = { width: o.width ?? 1040, height: 30 + o.rows.length * rowH + 44, left: labelWidth, right: 20, top: 30, bottom: 44 };
  const xs = o.rows.flatMap((r) => r.points.map((p) => p.x));
  const [lo, hi] = o.domain ?? domainOf(xs, { minSpan: 0.05 });
  const pw = f.width - f.left - f.right;
  const sx = (v: number) => f.left + ((v - lo) / (hi - lo || 1)) * pw;
  const parts = [svgOpen(f, o.title), `<text x="8" y="18" class="title">${esc(o.title)}</text>`];
  const bottom = f.top + o.rows.length * rowH;
  for (const t of ticks(lo, hi, 6)) {
    parts.push(`<line x1="${sx(t).toFixed(1)}" x2="${sx(t).toFixed(1)}" y1="${f.top}" y2="${bottom}" class="grid"/>`);
    parts.push(`<text x="${sx(t).toFixed(1)}" y="${bottom + 16}" class="tick" text-anchor="middle">${esc(fmt(t))}</text>`);
  }
  o.rows.forEach((r, i) => {
    const y = f.top + i * rowH + rowH / 2;
    parts.push(`<text x="${f.left - 8}" y="${y + 4}" class="tick" text-anchor="end">${esc(r.label)}</text>`);
    const radius = r.points.length > 200 ? 2 : 3.5;
    r.points.forEach((p, k) => {
      // Deterministic jitter so coincident sites stay visible.
      const jitter = (((k * 2654435761) >>> 0) % 1000) / 1000 - 0.5;
      parts.push(`<circle cx="${sx(Math.min(hi, Math.max(lo, p.x))).toFixed(1)}" cy="${(y + jitter * (rowH - 12)).toFixed(1)}" r="${radius}" fill="${p.color}" fill-opacity="0.75"><title>${esc(p.title)}</title></circle>`);
    });
  });
  parts.push(`<text x="${f.left + pw / 2}" y="${f.height - 6}" class="label" text-anchor="middle">${esc(o.xLabel)}</text>`);
  // Legend at the top right, clear of the axis.
  let lx = f.width - f.right - (o.legend ?? []).reduce((w, l) => w + 24 + l.label.length * 6.2, 0);
  for (const l of o.legend ?? []) {
    parts.push(`<circle cx="${lx + 5}" cy="14" r="4" fill="${l.color}"/><text x="${lx + 13}" y="18" class="tick">${esc(l.label)}</text>`);
    lx += 24 + l.label.length * 6.2;
  }
  parts.push('</svg>');
  return parts.join('');
}

/** A legend as HTML (wraps, so long setting labels stay readable). */
export function legend(items: { label: string; color: string; dashed?: boolean }[]): string {
  return `<div class="legend">${items.map((i) => `<span><i style="background:${i.color}"${i.dashed ? ' class="dashed"' : ''}></i>${esc(i.label)}</span>`).join('')}</div>`;
}
