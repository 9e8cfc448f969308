/**
 * The API's contract, generated from the coordinator's own route table (recorded by an onRoute hook), so a new
 * endpoint cannot escape it: every route is in the OpenAPI document with the access it enforces, and every
 * token-protected endpoint refuses a missing token, a wrong token and a token of too low a role, changing nothing.
 */
import { io as connect } from 'socket.io-client';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { EVENTS_NAMESPACE, type StudyEvent } from '../../protocol/events.ts';
import type { Coordinator } from '../../coordinator/app.ts';
import { DOCS_PREFIX, type Access } from '../../coordinator/routes/openapi.ts';
import { json, startCoordinator, wdbcManifest } from '../helpers/cluster.ts';

const ROLES = ['viewer', 'researcher', 'admin'] as const;
type Role = (typeof ROLES)[number];
const isRole = (a: Access | undefined): a is Role => ROLES.includes(a as Role);

/** A request a holder of the right role could plausibly send, so a refusal is about the token, not the body. */
function plausibleBody(method: string, url: string): unknown {
  if (method !== 'POST') return undefined;
  if (url === '/api/studies') return wdbcManifest();
  if (url === '/api/admin/tokens') return { name: 'intruder', role: 'admin' };
  if (url === '/api/admin/site-invites') return { name: 'Rogue Site' };
  return {};
}

describe('the REST API contract', () => {
  let coordinator: Coordinator;
  let url: string;
  const tokens = {} as Record<Role, string>;

  beforeAll(async () => {
    // Hundreds of deliberate failures from one address: lift the per-minute limit for this test only.
    ({ coordinator, url } = await startCoordinator({ authFailuresPerMinute: 1_000_000 }));
    for (const role of ROLES) {
      const r = await json<{ token: string }>(url, '/api/admin/tokens', { method: 'POST', body: { name: `${role} user`, role } });
      expect(r.status).toBe(201);
      tokens[role] = r.body.token;
    }
  });
  afterAll(async () => {
    await coordinator.close();
  });

  it('should declare who may call every route, and list every route in the OpenAPI document with that access', async () => {
    const res = await fetch(new URL(`${DOCS_PREFIX}/json`, url));
    expect(res.status).toBe(200); // served without a token, deliberately (see coordinator/routes/openapi.ts)
    const doc = (await res.json()) as { openapi: string; paths: Record<string, Record<string, { security?: unknown[]; 'x-cohort-access'?: string; summary?: string }>>; components: { securitySchemes: Record<string, { scheme?: string }> } };
    expect(doc.openapi).toMatch(/^3\./);
    expect(doc.components.securitySchemes.bearer?.scheme).toBe('bearer');
    const routes = coordinator.routes.filter((r) => !r.url.startsWith(DOCS_PREFIX));
    expect(routes.length).toBeGreaterThan(15);
    for (const r of routes) {
      expect(r.access, `${r.method} ${r.url} declares no access`).toBeDefined();
      const op = doc.paths[r.url.replace(/:(\w+)/g, '{$1}')]?.[r.method.toLowerCase()];
      expect(op, `${r.method} ${r.url} is missing from the OpenAPI document`).toBeDefined();
      expect(op!.summary, `${r.method} ${r.url} has no summary`).toBeTruthy();
      expect(op!['x-cohort-access']).toBe(r.access);
      if (isRole(r.access)) expect(op!.security).toEqual([{ bearer: [] }]);
      else expect(op!.security).toBeUndefined();
      if (r.url.startsWith('/api/')) expect(['viewer', 'researcher', 'admin', 'enrollment-token']).toContain(r.access);
    }
    // And nothing in the document that the server does not serve.
    const served = new Set(routes.map((r) => `${r.method.toLowerCase()} ${r.url.replace(/:(\w+)/g, '{$1}')}`));
    for (const [path, ops] of Object.entries(doc.paths)) for (const m of Object.keys(ops)) expect(served.has(`${m} ${path}`), `${m} ${path}`).toBe(true);
    const ui = await fetch(new URL(DOCS_PREFIX, url));
    expect(ui.status).toBe(200);
    expect(await ui.text()).toContain('swagger');
  });

  it('should refuse every token-protected endpoint without a token, with a wrong token, and with a too-low role, changing nothing', async () => {
    const before = { studies: coordinator.store.listStudies().length, tokens: coordinator.store.listTokens().length, sites: coordinator.store.listSites().length };
    const protectedRoutes = coordinator.routes.filter((r) => isRole(r.access));
    expect(protectedRoutes.length).toBeGreaterThan(12);
    let checked = 0;
    for (const r of protectedRoutes) {
      const path = r.url.replace(/:(\w+)/g, 'does-not-exist');
      const body = plausibleBody(r.method, r.url);
      const call = (token: string | null) => json<{ error?: { code: string } }>(url, path, { method: r.method, token, ...(body === undefined ? {} : { body }) });
      const what = `${r.method} ${r.url}`;

      const none = await call(null);
      expect([none.status, none.body.error?.code], `${what} without a token`).toEqual([401, 'COHORT_ERR_AUTH_TOKEN_MISSING']);
      const wrong = await call(`cht_${'x'.repeat(43)}`);
      expect([wrong.status, wrong.body.error?.code], `${what} with a wrong token`).toEqual([401, 'COHORT_ERR_AUTH_TOKEN_INVALID']);
      const required = ROLES.indexOf(r.access as Role);
      for (const lower of ROLES.slice(0, required)) {
        const low = await call(tokens[lower]);
        expect([low.status, low.body.error?.code], `${what} with a ${lower} token`).toEqual([403, 'COHORT_ERR_AUTH_FORBIDDEN']);
      }
      // The role that suffices gets past authentication (a 404 for the made-up id is fine, a 401/403 is not).
      if (r.method === 'GET') {
        const okCall = await call(tokens[r.access as Role]);
        expect([401, 403], `${what} with a ${r.access} token`).not.toContain(okCall.status);
      }
      checked++;
    }
    expect(checked).toBe(protectedRoutes.length);
    expect({ studies: coordinator.store.listStudies().length, tokens: coordinator.store.listTokens().length, sites: coordinator.store.listSites().length }).toEqual(before);
  });

  it('should refuse enrollment without a valid one-time token, the only /api route without a bearer token', async () => {
    const open = coordinator.routes.filter((r) => r.url.startsWith('/api/') && !isRole(r.access));
    expect(open.map((r) => `${r.method} ${r.url}`)).toEqual(['POST /api/enroll']);
    const missing = await json<{ error: { code: string } }>(url, '/api/enroll', { method: 'POST', body: {}, token: null });
    expect([missing.status, missing.body.error.code]).toEqual([400, 'COHORT_ERR_PROTOCOL_MALFORMED']);
    const { default: nacl } = await import('tweetnacl');
    const { enrollmentMessage } = await import('../../protocol/signing.ts');
    const kp = nacl.sign.keyPair();
    const token = `enr_${'y'.repeat(43)}`;
    const publicKey = Buffer.from(kp.publicKey).toString('base64');
    const signature = Buffer.from(nacl.sign.detached(enrollmentMessage(token, 'Rogue', publicKey), kp.secretKey)).toString('base64');
    const wrong = await json<{ error: { code: string } }>(url, '/api/enroll', { method: 'POST', body: { token, name: 'Rogue', publicKey, signature }, token: null });
    expect([wrong.status, wrong.body.error.code]).toEqual([401, 'COHORT_ERR_AUTH_ENROLLMENT_TOKEN']);
    expect(coordinator.store.listSites()).toHaveLength(0);
  });

  it('should refuse the live events namespace without a valid token, and stream events to a viewer', async () => {
    const attempt = (auth: Record<string, string>) => new Promise<{ error?: string; events?: StudyEvent[] }>((resolve) => {
      const socket = connect(new URL(EVENTS_NAMESPACE, url).toString(), { auth, reconnection: false, transports: ['websocket'] });
      socket.on('connect_error', (e) => { socket.close(); resolve({ error: e.message }); });
      socket.on('connect', async () => {
        const events: StudyEvent[] = [];
        socket.on('event', (e: StudyEvent) => events.push(e));
        await json(url, '/api/studies', { method: 'POST', body: wdbcManifest({ name: 'events probe' }), token: tokens.researcher });
        await new Promise((r) => setTimeout(r, 200));
        socket.close();
        resolve({ events });
      });
    });
    expect(await attempt({})).toEqual({ error: 'COHORT_ERR_AUTH_TOKEN_MISSING' });
    expect(await attempt({ token: `cht_${'z'.repeat(43)}` })).toEqual({ error: 'COHORT_ERR_AUTH_TOKEN_INVALID' });
    const ok = await attempt({ token: tokens.viewer });
    expect(ok.events?.some((e) => e.type === 'study' && e.status === 'created')).toBe(true);
  });
});
