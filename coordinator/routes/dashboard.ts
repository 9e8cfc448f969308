/**
 * The live dashboard: static files at `/` (HTML, CSS and plain JS from coordinator/dashboard, no build step). Its
 * numbers come from `/api/studies/:id/metrics` (coordinator/study-metrics.ts), so the browser never re-implements
 * a statistic.
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
import type { FastifyInstance, FastifyReply } from 'fastify';
import { routeOptions } from './openapi.ts';

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

export function registerDashboard(app: FastifyInstance): void {
  const assets = loadAssets();
  const send = (reply: FastifyReply, a: Asset) =>
    reply.header('content-type', a.type).header('cache-control', 'no-cache').header('content-security-policy', CSP).send(a.body);
  for (const [path, asset] of Object.entries(assets)) {
    app.get(path, routeOptions(undefined, 'public', {
      summary: path === '/' ? 'The live dashboard (HTML)' : `Dashboard asset ${path.slice('/dashboard/'.length)}`,
      description: 'Holds no data: the page reads this API and the /events namespace with the token the user enters.',
      tags: ['dashboard'],
      responses: { 200: { description: asset.type, contentType: asset.type.split(';')[0]!, schema: { type: 'string' } } },
    }), async (_req, reply) => send(reply, asset));
  }

}
