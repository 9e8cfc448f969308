/**
 * The live dashboard: static files at `/` (HTML, CSS and plain JS from coordinator/dashboard, no build step) and
 * one JSON route with clinical metrics per round (`/api/dashboard/studies/:id/metrics`), computed here from counts
 * with protocol/metrics so the browser never re-implements a statistic.
 *
 * The page holds no data itself: everything it shows comes from the REST API and the `/events` namespace, both
 * behind the same bearer token, so serving the page without a token gives nothing away.
 *
 * The socket.io browser client is served from the installed `socket.io-client` package at
 * `/dashboard/socket.io.min.js` instead of `serveClient: true`: it stays on the dashboard's own path (one
 * `script-src 'self'` CSP covers it) and the coordinator's socket.io options are left alone.
 */
import { readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { FastifyInstance, FastifyReply, preHandlerAsyncHookHandler } from 'fastify';
import type { EvalCounts } from '../../protocol/messages.ts';
import { clinicalMetrics, DEFAULT_MIN_CELL_COUNT, wilsonInterval, type ClinicalMetrics, type Metrics } from '../../protocol/metrics.ts';
import type { RoundRecord, Store } from '../store/store.ts';

export interface DashboardDeps {
  store: Store;
  /** The API's auth hooks; the metrics route needs a viewer, as `/api/studies/:id` does. */
  auth?: { viewer: preHandlerAsyncHookHandler };
  /** Smallest number of cases behind any per-site value shown (default 10); a request may only raise it. */
  minCellCount?: number;
}

const DASHBOARD_DIR = join(dirname(fileURLToPath(import.meta.url)), '..', 'dashboard');

/** Content-Security-Policy of the page: nothing but this origin, no inline script or style. */
const CSP = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";

interface Asset {
  body: Buffer;
  type: string;
}

function loadAssets(): Record<string, Asset> {
  const require = createRequire(import.meta.url);
  const ioClient = join(dirname(require.resolve('socket.io-client/package.json')), 'dist', 'socket.io.min.js');
  return {
    '/': { body: readFileSync(join(DASHBOARD_DIR, 'index.html')), type: 'text/html; charset=utf-8' },
    '/dashboard/app.js': { body: readFileSync(join(DASHBOARD_DIR, 'app.js')), type: 'text/javascript; charset=utf-8' },
    '/dashboard/charts.js': { body: readFileSync(join(DASHBOARD_DIR, 'charts.js')), type: 'text/javascript; charset=utf-8' },
    '/dashboard/style.css': { body: readFileSync(join(DASHBOARD_DIR, 'style.css')), type: 'text/css; charset=utf-8' },
    '/dashboard/socket.io.min.js': { body: readFileSync(ioClient), type: 'text/javascript; charset=utf-8' },
  };
}

/** Per-site metrics; `unverifiable` names values whose case counts this coordinator cannot check. */
export type SiteMetrics = ClinicalMetrics & { unverifiable?: string[] };

/** Per-site clinical metrics for a round: from the site's counts when the round kept them, else only what is safe. */
function perSiteMetrics(r: RoundRecord, minCellCount: number): Record<string, SiteMetrics> {
  const counts = (r as RoundRecord & { perSiteCounts?: Record<string, EvalCounts> }).perSiteCounts;
  const out: Record<string, SiteMetrics> = {};
  for (const [site, m] of Object.entries(r.perSite)) {
    const c = counts?.[site];
    out[site] = c ? clinicalMetrics(c, { minCellCount }) : fromSummary(m, minCellCount);
  }
  return out;
}

/**
 * Without the site's counts only n is known, not how many positives and negatives are behind a sensitivity,
 * specificity or AUC; those are withheld rather than shown from a cell that might be tiny.
 */
function fromSummary(m: Metrics, minCellCount: number): SiteMetrics {
  const out: SiteMetrics = { n: m.n, minCellCount, suppressed: [], unverifiable: [] };
  if (m.n >= minCellCount && m.n > 0) {
    out.loss = m.loss;
    out.accuracy = { value: m.accuracy, n: m.n, ...wilsonInterval(Math.round(m.accuracy * m.n), m.n) };
  } else if (m.n > 0) {
    out.suppressed.push('loss', 'accuracy');
  }
  for (const k of ['auc', 'sensitivity', 'specificity'] as const) if (m[k] !== undefined) out.unverifiable!.push(k);
  return out;
}

export interface DashboardRound {
  round: number;
  participants: string[];
  failures: RoundRecord['failures'];
  attempts: number;
  trainLoss: number;
  durationMs: number;
  completedAt: string;
  pooled: ClinicalMetrics;
  perSite: Record<string, SiteMetrics>;
  /** Differential privacy: largest epsilon spent by any site (record level) or the client-level epsilon; absent without DP. */
  epsilonSpent?: number;
}

/** NaN is not JSON: send it as null, which the page shows as "—". */
function jsonSafe<T>(v: T): T {
  return JSON.parse(JSON.stringify(v, (_k, x: unknown) => (typeof x === 'number' && !Number.isFinite(x) ? null : x))) as T;
}

export function registerDashboard(app: FastifyInstance, deps: DashboardDeps): void {
  const assets = loadAssets();
  const floor = deps.minCellCount ?? DEFAULT_MIN_CELL_COUNT;
  const send = (reply: FastifyReply, a: Asset) =>
    reply.header('content-type', a.type).header('cache-control', 'no-cache').header('content-security-policy', CSP).send(a.body);
  for (const [path, asset] of Object.entries(assets)) {
    app.get(path, async (_req, reply) => send(reply, asset));
  }

  const viewer = deps.auth ? { preHandler: deps.auth.viewer } : {};
  app.get<{ Params: { id: string }; Querystring: { minCellCount?: string } }>('/api/dashboard/studies/:id/metrics', viewer, async (req) => {
    const study = deps.store.mustGetStudy(req.params.id);
    const asked = Number(req.query.minCellCount);
    const minCellCount = Number.isInteger(asked) && asked > floor ? asked : floor;
    const rounds: DashboardRound[] = deps.store.listRounds(study.id).map((r) => ({
      round: r.round, participants: r.participants, failures: r.failures, attempts: r.attempts, trainLoss: r.trainLoss,
      durationMs: r.durationMs, completedAt: r.completedAt,
      pooled: clinicalMetrics(r.pooledCounts, { minCellCount }),
      perSite: perSiteMetrics(r, minCellCount),
      // Differential privacy: the largest epsilon any site has spent (record level), or the study's client level.
      ...(r.privacy ? { epsilonSpent: r.privacy.client?.epsilon ?? Math.max(0, ...Object.values(r.privacy.perSite).map((e) => e.record ?? e.client ?? 0)) } : {}),
    }));
    return jsonSafe({
      studyId: study.id, minCellCount,
      methods: { auc: 'DeLong (1988) from score histograms, Wald 95% interval clipped to [0, 1]', proportions: 'Wilson score 95% interval', calibration: '10 equal-width score bins; ECE weighted by bin size' },
      rounds,
    });
  });
}
