/**
 * Administration: API tokens, one-time site enrollment tokens, enrollment itself, revocation, the audit log.
 */
import { randomBytes } from 'node:crypto';
import type { FastifyInstance } from 'fastify';
import nacl from 'tweetnacl';
import type { Logger } from 'pino';
import { z } from 'zod';
import { CohortError } from '../../protocol/errors.ts';
import { parseMessage } from '../../protocol/messages.ts';
import { enrollmentMessage, fromB64 } from '../../protocol/signing.ts';
import { hashToken, newToken, principalOf, type AuthRateLimiter } from '../auth.ts';
import type { CoordinatorIdentity } from '../identity.ts';
import type { Store } from '../store/store.ts';
import type { SocketTransport } from '../transport/socket-transport.ts';
import { jsonSchema, routeOptions, type AuthHooks } from './openapi.ts';

interface Deps {
  store: Store;
  transport: SocketTransport;
  auth: AuthHooks;
  limiter: AuthRateLimiter;
  identity: CoordinatorIdentity;
  log: Logger;
}

const siteName = z.string().min(1).max(200).regex(/^[\p{L}\p{N} ._'-]+$/u);
export const InviteSchema = z.object({ name: siteName.optional(), expiresInHours: z.number().positive().max(24 * 30).default(24) });
export const TokenSchema = z.object({ name: z.string().min(1).max(200), role: z.enum(['admin', 'researcher', 'viewer']).default('researcher'), expiresInDays: z.number().positive().max(3650).optional() });
export const EnrollSchema = z.object({
  token: z.string().min(10).max(200),
  name: siteName,
  publicKey: z.string().max(64).regex(/^[A-Za-z0-9+/=]+$/),
  signature: z.string().max(128).regex(/^[A-Za-z0-9+/=]+$/),
});

const id = () => randomBytes(5).toString('hex');

export function registerAdminRoutes(app: FastifyInstance, { store, transport, auth, limiter, identity, log }: Deps): void {
  const created = (what: string, properties: Record<string, unknown>) => ({ 201: { description: what, schema: { type: 'object', properties } } });
  const ok = { 200: { description: 'Done', schema: { type: 'object', properties: { ok: { type: 'boolean' } } } } };

  app.post('/api/admin/site-invites', routeOptions(auth, 'admin', {
    summary: 'Issue a one-time, expiring enrollment token for a site',
    description: 'Give the token to the site\'s IT: `cohort site init --token <token>` enrolls the site with it. Only its hash is stored.',
    tags: ['admin'], body: jsonSchema(InviteSchema),
    responses: created('The token, shown once', { token: { type: 'string', example: 'enr_…' }, tokenId: { type: 'string' }, expiresAt: { type: 'string', format: 'date-time' }, name: { type: 'string' } }),
  }), async (req, reply) => {
    const body = parseMessage(InviteSchema, req.body ?? {}, 'invite');
    const token = newToken('enr');
    const expiresAt = new Date(Date.now() + body.expiresInHours * 3600_000).toISOString();
    const rec = { id: `enr-${id()}`, kind: 'enrollment' as const, hash: hashToken(token), role: 'site', name: body.name ?? '', createdAt: new Date().toISOString(), expiresAt };
    await store.addToken(rec);
    await store.appendAudit({ action: 'site.invited', actor: principalOf(req)?.name, details: { tokenId: rec.id, name: body.name, expiresAt } });
    return reply.status(201).send({ token, tokenId: rec.id, expiresAt, ...(body.name ? { name: body.name } : {}) });
  });

  app.post('/api/admin/tokens', routeOptions(auth, 'admin', {
    summary: 'Issue an API token (researcher, viewer or admin)',
    description: '`cohort admin add-researcher --name "Dr Ada" --role researcher` calls this. The token is shown once; only its SHA-256 is stored.',
    tags: ['admin'], body: jsonSchema(TokenSchema),
    responses: created('The token, shown once', { token: { type: 'string', example: 'cht_…' }, tokenId: { type: 'string' }, role: { type: 'string' }, name: { type: 'string' } }),
  }), async (req, reply) => {
    const body = parseMessage(TokenSchema, req.body ?? {}, 'token request');
    const token = newToken('cht');
    const rec = {
      id: `tok-${id()}`, kind: 'api' as const, hash: hashToken(token), role: body.role, name: body.name, createdAt: new Date().toISOString(),
      ...(body.expiresInDays ? { expiresAt: new Date(Date.now() + body.expiresInDays * 86400_000).toISOString() } : {}),
    };
    await store.addToken(rec);
    await store.appendAudit({ action: 'token.created', actor: principalOf(req)?.name, details: { tokenId: rec.id, role: rec.role, name: rec.name } });
    return reply.status(201).send({ token, tokenId: rec.id, role: rec.role, name: rec.name });
  });

  app.get('/api/admin/tokens', routeOptions(auth, 'admin', {
    summary: 'List API and enrollment tokens (never the tokens themselves, nor their hashes)', tags: ['admin'],
    responses: { 200: { description: 'Token records', schema: { type: 'object', properties: { tokens: { type: 'array', items: { type: 'object', additionalProperties: true } } } } } },
  }), async () => ({
    tokens: store.listTokens().map(({ hash: _hash, ...t }) => t),
  }));

  app.post<{ Params: { id: string } }>('/api/admin/tokens/:id/revoke', routeOptions(auth, 'admin', {
    summary: 'Revoke a token by its id', tags: ['admin'], responses: ok,
  }), async (req) => {
    await store.revokeToken(req.params.id);
    await store.appendAudit({ action: 'token.revoked', actor: principalOf(req)?.name, details: { tokenId: req.params.id } });
    return { ok: true };
  });

  app.post<{ Params: { id: string } }>('/api/admin/sites/:id/revoke', routeOptions(auth, 'admin', {
    summary: 'Revoke a site (by id or name): disconnected at once, refused from then on', tags: ['admin'],
    responses: { 200: { description: 'Revoked', schema: { type: 'object', properties: { site: { type: 'object', additionalProperties: true } } } }, 401: { description: 'No such site (COHORT_ERR_AUTH_UNKNOWN_SITE)' } },
  }), async (req) => {
    const site = await store.revokeSite(req.params.id);
    const wasOnline = transport.disconnectSite(site.id);
    await store.appendAudit({ action: 'site.revoked', actor: principalOf(req)?.name, site: site.name });
    log.warn({ site: site.name, siteId: site.id, wasOnline }, 'site revoked');
    return { site: { id: site.id, name: site.name, revokedAt: site.revokedAt } };
  });

  app.get<{ Querystring: { studyId?: string } }>('/api/audit', routeOptions(auth, 'researcher', {
    summary: 'The coordinator\'s audit log: studies, enrollments, rounds with the task ids the sites\' ledgers record', tags: ['admin'],
    querystring: { type: 'object', properties: { studyId: { type: 'string', description: 'Only this study' } } },
    responses: { 200: { description: 'Audit records, oldest first', schema: { type: 'object', properties: { audit: { type: 'array', items: { type: 'object', additionalProperties: true } } } } } },
  }), async (req) => ({
    audit: store.listAudit(req.query.studyId ? { studyId: req.query.studyId } : {}),
  }));

  // Enrollment: the one-time token is the credential, so no bearer token; failures count towards the rate limit.
  app.post('/api/enroll', routeOptions(auth, 'enrollment-token', {
    summary: 'Enroll a site with a one-time token, signed by the site\'s new key',
    description: 'Called by `cohort site init --token`. Answers with the coordinator\'s public key, which the site pins. Failures count towards the per-address rate limit.',
    tags: ['sites'], body: jsonSchema(EnrollSchema),
    responses: { 201: { description: 'Enrolled', schema: { type: 'object', properties: { siteId: { type: 'string' }, coordinatorId: { type: 'string' }, coordinatorPublicKey: { type: 'string' } } } } },
  }), async (req, reply) => {
    if (limiter.blocked(req.ip)) return reply.status(429).send({ error: { code: 'COHORT_ERR_AUTH_RATE_LIMITED', message: 'too many failed attempts' } });
    try {
      const body = parseMessage(EnrollSchema, req.body, 'enrollment');
      const pub = fromB64(body.publicKey);
      const sig = fromB64(body.signature);
      if (pub.length !== nacl.sign.publicKeyLength || sig.length !== nacl.sign.signatureLength || !nacl.sign.detached.verify(enrollmentMessage(body.token, body.name, body.publicKey), sig, pub)) {
        throw new CohortError('COHORT_ERR_AUTH_BAD_SIGNATURE', 'enrollment request is not signed by the presented key');
      }
      const now = new Date().toISOString();
      const siteId = `site-${Buffer.from(pub.subarray(0, 9)).toString('base64').replace(/[+/=]/g, '').toLowerCase()}`;
      await store.enrollSite(hashToken(body.token), { id: siteId, name: body.name, publicKey: body.publicKey, registeredAt: now, lastSeenAt: now });
      await store.appendAudit({ action: 'site.enrolled', site: body.name, details: { siteId } });
      log.info({ site: body.name, siteId }, 'site enrolled');
      return reply.status(201).send({ siteId, coordinatorId: store.coordinatorId, coordinatorPublicKey: identity.publicKeyB64 });
    } catch (err) {
      limiter.fail(req.ip);
      log.warn({ code: err instanceof CohortError ? err.code : 'COHORT_ERR_PROTOCOL_MALFORMED', remote: req.ip }, 'enrollment refused');
      throw err;
    }
  });
}
