/**
 * API tokens with roles, and one-time site enrollment tokens. Only SHA-256 hashes of tokens are stored; a token is
 * shown once, when it is made. Roles are ordered: admin > researcher > viewer.
 */
import { randomBytes, timingSafeEqual } from 'node:crypto';
import type { FastifyReply, FastifyRequest } from 'fastify';
import { CohortError } from '../protocol/errors.ts';
import { sha256Hex } from '../protocol/signing.ts';
import type { Store, TokenRecord } from './store/store.ts';

export type Role = 'admin' | 'researcher' | 'viewer';
const RANK: Record<Role, number> = { viewer: 1, researcher: 2, admin: 3 };

export function newToken(prefix: 'cht' | 'enr'): string {
  return `${prefix}_${randomBytes(32).toString('base64url')}`;
}

export function hashToken(token: string): string {
  return sha256Hex(token);
}

function sameHash(a: string, b: string): boolean {
  const x = Buffer.from(a, 'hex');
  const y = Buffer.from(b, 'hex');
  return x.length === y.length && timingSafeEqual(x, y);
}

export function bearer(req: FastifyRequest): string | undefined {
  const h = req.headers.authorization;
  if (!h) return undefined;
  const m = /^Bearer\s+(\S+)$/i.exec(h);
  return m?.[1];
}

/** Finds the live API token record for a presented token, or undefined. */
export function lookupApiToken(store: Store, token: string | undefined): TokenRecord | undefined {
  if (!token) return undefined;
  const h = hashToken(token);
  return store.listTokens().find((t) => t.kind === 'api' && !t.revokedAt && sameHash(t.hash, h) && (!t.expiresAt || Date.parse(t.expiresAt) > Date.now()));
}

/**
 * Failed authentications per client address in a sliding minute. Past the limit, requests are refused with 429
 * before any token is even compared, which bounds online guessing.
 */
export class AuthRateLimiter {
  private readonly failures = new Map<string, number[]>();
  constructor(private readonly limit = 20, private readonly windowMs = 60_000) {}
  blocked(ip: string): boolean {
    const now = Date.now();
    const list = (this.failures.get(ip) ?? []).filter((t) => now - t < this.windowMs);
    this.failures.set(ip, list);
    return list.length >= this.limit;
  }
  fail(ip: string): void {
    const list = this.failures.get(ip) ?? [];
    list.push(Date.now());
    this.failures.set(ip, list);
    if (this.failures.size > 10_000) this.prune();
  }
  /** Forgets addresses with no failure in the window, so many source addresses cannot grow memory without end. */
  private prune(): void {
    const now = Date.now();
    for (const [ip, list] of this.failures) if (!list.some((t) => now - t < this.windowMs)) this.failures.delete(ip);
  }
}

/** A fastify hook (used as `onRequest`, before the body is read) requiring at least `role`. */
export function requireRole(store: Store, limiter: AuthRateLimiter, role: Role) {
  return async (req: FastifyRequest, reply: FastifyReply): Promise<void> => {
    if (limiter.blocked(req.ip)) {
      await reply.status(429).send({ error: { code: 'COHORT_ERR_AUTH_RATE_LIMITED', message: 'too many failed authentications; try again in a minute' } });
      return;
    }
    const token = bearer(req);
    const rec = lookupApiToken(store, token);
    if (!rec) {
      limiter.fail(req.ip);
      const code = token ? 'COHORT_ERR_AUTH_TOKEN_INVALID' : 'COHORT_ERR_AUTH_TOKEN_MISSING';
      // Who failed, where, and how: never what they presented.
      req.log.warn({ code, remote: req.ip, method: req.method, path: req.routeOptions.url }, 'authentication failed');
      throw new CohortError(code);
    }
    if (RANK[rec.role as Role] < RANK[role]) {
      throw new CohortError('COHORT_ERR_AUTH_FORBIDDEN', `this needs the ${role} role; the token has ${rec.role}`);
    }
    (req as FastifyRequest & { principal?: TokenRecord }).principal = rec;
  };
}

export function principalOf(req: FastifyRequest): TokenRecord | undefined {
  return (req as FastifyRequest & { principal?: TokenRecord }).principal;
}
