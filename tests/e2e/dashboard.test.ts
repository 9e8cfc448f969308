/**
 * The dashboard in a real browser: Debian's headless Chromium driven by playwright-core watches a live study (real
 * coordinator on port 0, real agents training WDBC over real sockets) from sign-in to completion, and the test
 * reads the charts and table as the page rendered them. A screenshot is saved to reports/e2e/dashboard.png.
 *
 * Chromium is a system package (`apt-get install -y chromium`; .ci/run installs it). When it is missing this test
 * fails, loudly: a skipped browser test would claim coverage it does not give.
 */
import { existsSync, mkdirSync, mkdtempSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { chromium, type BrowserContext, type Page } from 'playwright-core';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import type { Coordinator } from '../../coordinator/app.ts';
import type { StudyMetricsReport } from '../../coordinator/study-metrics.ts';
import { createStudy, json, startCoordinator, startSites, waitForEnd, wdbcManifest, type TestSite } from '../helpers/cluster.ts';

const CHROMIUM = process.env.COHORT_CHROMIUM ?? '/usr/bin/chromium';
const REPORT_DIR = join(import.meta.dirname, '..', '..', 'reports', 'e2e');
const ROUNDS = 5;

/** Flags for a quiet, sandbox-free headless Chromium on a machine with no network but loopback. */
const CHROMIUM_ARGS = [
  '--headless', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run', '--disable-background-networking',
  '--disable-component-update', '--disable-sync', '--disable-default-apps', '--disable-extensions', '--mute-audio',
];

// Code run inside the page. Plain JavaScript strings: the project's type check has no DOM library, on purpose
// (nothing outside the browser may use `document`).

/** Records every progress text the page shows, to prove it updated live (no reload) round by round. */
const PROGRESS_RECORDER = `(() => {
  const seen = [];
  window.__progress = seen;
  new MutationObserver(() => {
    const t = document.getElementById('rounds-done')?.textContent;
    if (t && seen.at(-1) !== t) seen.push(t);
  }).observe(document, { subtree: true, childList: true, characterData: true });
})()`;

interface Drawn {
  aucRounds: string | null;
  auc: { round: number; value: number }[];
  aucBand: number;
  holdoutLoss: { round: number; value: number }[];
  trainLoss: { round: number; value: number }[];
  tableRounds: number[];
  perSite: string[];
  calibrationPoints: number;
  loso: { heldOut: string; status: string }[];
  progress: string[];
}

/** What the page drew: chart points (their data attributes), table rows, per-site rows. */
const READ_PAGE = `(() => {
  const points = (chart, series) => [...document.querySelectorAll('#' + chart + ' [data-series="' + series + '"] circle.pt')]
    .map((c) => ({ round: Number(c.getAttribute('data-round')), value: Number(c.getAttribute('data-value')) }));
  return {
    aucRounds: document.querySelector('#chart-auc svg')?.getAttribute('data-rounds') ?? null,
    auc: points('chart-auc', 'auc'),
    aucBand: document.querySelectorAll('#chart-auc [data-series="auc"] .band').length,
    holdoutLoss: points('chart-loss', 'holdout-loss'),
    trainLoss: points('chart-loss', 'train-loss'),
    tableRounds: [...document.querySelectorAll('#rounds tbody tr[data-round]')].map((r) => Number(r.getAttribute('data-round'))),
    perSite: [...document.querySelectorAll('#persite tbody tr[data-site]')].map((r) => r.getAttribute('data-site')),
    calibrationPoints: document.querySelectorAll('#chart-cal [data-series="calibration"] circle.pt').length,
    loso: [...document.querySelectorAll('#loso tbody tr[data-held-out]')].map((r) => ({ heldOut: r.dataset.heldOut, status: r.dataset.status })),
    progress: window.__progress,
  };
})()`;

/** Decodes a PNG (base64) in the page and counts its colours, sampling every 7th pixel. */
const PIXEL_STATS = `async (b64) => {
  const img = new Image();
  img.src = 'data:image/png;base64,' + b64;
  await img.decode();
  const canvas = document.createElement('canvas');
  canvas.width = img.width;
  canvas.height = img.height;
  const ctx = canvas.getContext('2d');
  ctx.drawImage(img, 0, 0);
  const d = ctx.getImageData(0, 0, img.width, img.height).data;
  const counts = new Map();
  for (let i = 0; i < d.length; i += 4 * 7) { const k = (d[i] << 16) | (d[i + 1] << 8) | d[i + 2]; counts.set(k, (counts.get(k) ?? 0) + 1); }
  const total = [...counts.values()].reduce((a, b) => a + b, 0);
  return { distinct: counts.size, topShare: Math.max(...counts.values()) / total, width: img.width, height: img.height };
}`;

describe('the dashboard in headless Chromium', () => {
  let coordinator: Coordinator;
  let url: string;
  let sites: TestSite[];
  let context: BrowserContext;
  let profile: string;
  let viewerToken: string;

  beforeAll(async () => {
    if (!existsSync(CHROMIUM)) {
      throw new Error(`no Chromium at ${CHROMIUM}: install Debian's package (apt-get install -y chromium; .ci/run does this) or set COHORT_CHROMIUM`);
    }
    ({ coordinator, url } = await startCoordinator());
    sites = await startSites(url, 3);
    const t = await json<{ token: string }>(url, '/api/admin/tokens', { method: 'POST', body: { name: 'ward viewer', role: 'viewer' } });
    viewerToken = t.body.token;
    profile = mkdtempSync(join(tmpdir(), 'cohort-chromium-'));
    context = await chromium.launchPersistentContext(profile, {
      executablePath: CHROMIUM, headless: true, args: CHROMIUM_ARGS, viewport: { width: 1440, height: 1100 }, deviceScaleFactor: 1,
    });
  }, 90_000);

  afterAll(async () => {
    await context?.close();
    if (profile) rmSync(profile, { recursive: true, force: true });
    await Promise.all((sites ?? []).map((s) => s.agent.stop()));
    await coordinator?.close();
  });

  it('should follow a live study from sign-in to completion and chart every round', async () => {
    const page: Page = context.pages()[0] ?? await context.newPage();
    const pageErrors: string[] = [];
    page.on('pageerror', (e) => pageErrors.push(String(e)));
    page.on('console', (m) => { if (m.type() === 'error') pageErrors.push(m.text()); });
    // Record every progress text the page shows, to prove it updated live (no reload) round by round.
    await page.addInitScript(PROGRESS_RECORDER);
    let navigations = 0;
    page.on('framenavigated', (f) => { if (f === page.mainFrame()) navigations++; });

    // Sign in as a person would (the page's first, token-less API call is refused: that 401 is expected): the page asks for a token, we type the viewer token.
    await page.goto(`${url}/`);
    await page.locator('#auth').waitFor({ state: 'visible' });
    await page.fill('#token-input', viewerToken);
    await page.click('#auth button[type=submit]');
    await page.locator('#conn[data-state="live"]').waitFor({ timeout: 20_000 });
    pageErrors.length = 0;
    await expect.poll(() => page.textContent('#sites-online')).toBe('3 sites online');

    // Start a study only now: the page must pick it up from live events.
    const manifest = wdbcManifest({ name: 'Malignancy (WDBC), three hospitals', evaluation: { holdoutFraction: 0.25, leaveOneSiteOut: true } });
    manifest.training = { ...manifest.training, rounds: ROUNDS };
    const id = await createStudy(url, manifest);
    await json(url, `/api/studies/${id}/start`, { method: 'POST' });
    await page.locator(`#studies [data-study="${id}"]`).waitFor({ timeout: 20_000 });
    await page.locator('#study-status', { hasText: 'completed' }).waitFor({ timeout: 90_000 });
    await waitForEnd(url, id);

    // Every round, as the page drew it.
    const drawn = await page.evaluate<Drawn>(READ_PAGE);
    const all = Array.from({ length: ROUNDS }, (_, i) => i + 1);
    expect(drawn.aucRounds).toBe(String(ROUNDS));
    expect(drawn.auc.map((p) => p.round)).toEqual(all);
    expect(drawn.holdoutLoss.map((p) => p.round)).toEqual(all);
    expect(drawn.trainLoss.map((p) => p.round)).toEqual(all);
    expect(drawn.tableRounds).toEqual(all);
    expect(drawn.aucBand).toBe(1);
    expect(drawn.perSite).toEqual(['Site 1', 'Site 2', 'Site 3']);
    expect(drawn.calibrationPoints).toBeGreaterThan(1);
    expect(drawn.loso).toEqual(['Site 1', 'Site 2', 'Site 3'].map((heldOut) => ({ heldOut, status: 'completed' })));
    // The drawn values are the API's.
    const { body } = await json<StudyMetricsReport>(url, `/api/studies/${id}/metrics`);
    drawn.auc.forEach((p, i) => expect(p.value).toBeCloseTo(body.rounds[i]!.pooled.auc!.value, 9));
    drawn.holdoutLoss.forEach((p, i) => expect(p.value).toBeCloseTo(body.rounds[i]!.pooled.loss!, 9));
    // Live, not reloaded: one navigation, and the progress line went through intermediate rounds.
    expect(navigations).toBe(1);
    expect(drawn.progress.at(-1)).toBe(`${ROUNDS} of ${ROUNDS} rounds completed`);
    expect(drawn.progress.filter((t) => /^[1-4] of 5 rounds completed$/.test(t)).length).toBeGreaterThanOrEqual(2);
    expect(pageErrors).toEqual([]);

    // The screenshot, checked to be a real picture rather than a blank page.
    mkdirSync(REPORT_DIR, { recursive: true });
    const file = join(REPORT_DIR, 'dashboard.png');
    const png = await page.screenshot({ fullPage: true });
    writeFileSync(file, png);
    expect(png.subarray(0, 8)).toEqual(Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]));
    expect(statSync(file).size).toBeGreaterThan(40_000);
    const colours = await page.evaluate<{ distinct: number; topShare: number; width: number; height: number }>(`(${PIXEL_STATS})(${JSON.stringify(png.toString('base64'))})`);
    expect(colours.width).toBe(1440);
    expect(colours.height).toBeGreaterThan(900);
    expect(colours.distinct).toBeGreaterThan(100);
    expect(colours.topShare).toBeLessThan(0.9);
  }, 150_000);
});
