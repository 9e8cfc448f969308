/**
 * Administration: API tokens, one-time site enrollment tokens, enrollment itself, revocation, the audit log.
 */
import { randomBytes } from 'node:crypto';
import type { FastifyInstance, preHandlerAsyncHookHandler } from 'fastify';
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

interface Deps {
  store: Store;
  transport: SocketTransport;
  auth: { viewer: preHandlerAsyncHookHandler; researcher: preHandlerAsyncHookHandler; admin: preHandlerAsyncHookHandler };
  limiter: AuthRateLimiter;
  identity: CoordinatorIdentity;
  log: Logger;
}

const siteName = z.string().min(1).max(200).regex(/^[\p{L}\p{N} ._'-]+$/u);
const InviteSchema = z.object({ name: siteName.optional(), expiresInHours: z.number().positive().max(24 * 30).default(24) });
const TokenSchema = z.object({ name: z.string().min(1).max(200), role: z.enum(['admin', 'researcher', 'viewer']).default('researcher'), expiresInDays: z.number().positive().max(3650).optional() });
const EnrollSchema = z.object({
  token: z.string().min(10).max(200),
  name: siteName,
  publicKey: z.string().max(64).regex(/^[A-Za-z0-9+/=]+$/),
  signature: z.string().max(128).regex(/^[A-Za-z0-9+/=]+$/),
});

const id = () => randomBytes(5).toString('hex');

export function registerAdminRoutes(app: FastifyInstance, { store, transport, auth, limiter, identity, log }: Deps): void {
  app.post('/api/admin/site-invites', { preHandler: auth.admin }, async (req, reply) => {
    const body = parseMessage(InviteSchema, req.body ?? {}, 'invite');
    const token = newToken('enr');
    const expiresAt = new Date(Date.now() + body.expiresInHours * 3600_000).toISOString();
    const rec = { id: `enr-${id()}`, kind: 'enrollment' as const, hash: hashToken(token), role: 'site', name: body.name ?? '', createdAt: new Date().toISOString(), expiresAt };
    await store.addToken(rec);
    await store.appendAudit({ action: 'site.invited', actor: principalOf(req)?.name, details: { tokenId: rec.id, name: body.name, expiresAt } });
    return reply.status(201).send({ token, tokenId: rec.id, expiresAt, ...(body.name ? { name: body.name } : {}) });
  });

  app.post('/api/admin/tokens', { preHandler: auth.admin }, async (req, reply) => {
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

  app.get('/api/admin/tokens', { preHandler: auth.admin }, async () => ({
    tokens: store.listTokens().map(({ hash: _hash, ...t }) => t),
  }));

  app.post<{ Params: { id: string } }>('/api/admin/tokens/:id/revoke', { preHandler: auth.admin }, async (req) => {
    await store.revokeToken(req.params.id);
    await store.appendAudit({ action: 'token.revoked', actor: principalOf(req)?.name, details: { tokenId: req.params.id } });
    return { ok: true };
  });

  app.post<{ Params: { id: string } }>('/api/admin/sites/:id/revoke', { preHandler: auth.admin }, async (req) => {
    const site = await store.revokeSite(req.params.id);
    const wasOnline = transport.disconnectSite(site.id);
    await store.appendAudit({ action: 'site.revoked', actor: principalOf(req)?.name, site: site.name });
    log.warn({ site: site.name, siteId: site.id, wasOnline }, 'site revoked');
    return { site: { id: site.id, name: site.name, revokedAt: site.revokedAt } };
  });

  app.get<{ Querystring: { studyId?: string } }>('/api/audit', { preHandler: auth.researcher }, async (req) => ({
    audit: store.listAudit(req.query.studyId ? { studyId: req.query.studyId } : {}),
  }));

  // Enrollment: the one-time token is the credential, so no bearer token; failures count towards the rate limit.
  app.post('/api/enroll', async (req, reply) => {
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
