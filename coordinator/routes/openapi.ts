/**
 * The API's description: every fastify route declares who may call it (`access`) and a schema, through
 * `routeOptions`, and `registerOpenApi` publishes the OpenAPI 3 document at `/docs/json` with Swagger UI at
 * `/docs` (@fastify/swagger, @fastify/swagger-ui; the UI's files ship in the npm package).
 *
 * One validator: request bodies are checked by the zod schemas in the handlers (the same schemas the JSON Schemas
 * here are generated from, so the document cannot drift from what is enforced). fastify's own ajv validation and
 * fast-json-stringify serialization are switched off: ajv's defaults would coerce and strip a body before the
 * handler sees it, which would change a manifest the researcher signed.
 *
 * `/docs` is served without a token, deliberately: it holds the API's shape only (what this open-source code
 * already publishes), no data, and a browser cannot attach a bearer token to a page navigation. Every `/api`
 * route needs one; "Authorize" in the UI takes a token for "Try it out".
 */
import swagger from '@fastify/swagger';
import swaggerUi from '@fastify/swagger-ui';
import type { FastifyInstance, FastifyReply, FastifyRequest, FastifySchema, RouteShorthandOptions } from 'fastify';
import { z } from 'zod';
import { PROTOCOL_VERSION } from '../../protocol/version.ts';
import type { Role } from '../auth.ts';

/** Who may call a route: a bearer token of at least this role, nobody in particular, or a one-time enrollment token in the body. */
export type Access = Role | 'public' | 'enrollment-token';

declare module 'fastify' {
  interface FastifyContextConfig {
    /** Who may call the route (set by `routeOptions`). */
    access?: Access;
  }
}

export type AuthHook = (req: FastifyRequest, reply: FastifyReply) => Promise<void>;
export type AuthHooks = Record<Role, AuthHook>;

/** A registered route, as the onRoute hook saw it. */
export interface RouteInfo {
  method: string;
  url: string;
  /** Undefined for routes that did not declare it (only the documentation's own routes). */
  access: Access | undefined;
}

export interface RouteDoc {
  summary: string;
  description?: string;
  tags: string[];
  body?: unknown;
  querystring?: unknown;
  /** Success responses by status: a description and optionally a schema of the body. */
  responses?: Record<number, { description: string; schema?: unknown; contentType?: string }>;
}

export const DOCS_PREFIX = '/docs';

const ROLE_TEXT: Record<Access, string> = {
  viewer: 'Needs a bearer token with the `viewer` role or higher.',
  researcher: 'Needs a bearer token with the `researcher` role or higher.',
  admin: 'Needs a bearer token with the `admin` role.',
  public: 'No token needed.',
  'enrollment-token': 'No bearer token: the body carries a one-time enrollment token issued by an admin.',
};

/** A JSON Schema from a zod schema, as a request would be written (defaults optional). */
export function jsonSchema(schema: z.ZodType): Record<string, unknown> {
  const { $schema: _drop, ...rest } = z.toJSONSchema(schema, { io: 'input', target: 'openapi-3.0', unrepresentable: 'any' }) as Record<string, unknown>;
  return rest;
}

const ErrorBody = {
  type: 'object',
  required: ['error'],
  properties: {
    error: {
      type: 'object',
      required: ['code', 'message'],
      properties: {
        code: { type: 'string', description: 'A registered code `COHORT_ERR_<AREA>_<WHAT>` (docs/errors.md)', example: 'COHORT_ERR_AUTH_TOKEN_MISSING' },
        message: { type: 'string' },
        details: { type: 'object', additionalProperties: true },
      },
    },
  },
};

/**
 * Route options that enforce `access` (the token is checked in `onRequest`, before the body is even read) and
 * document the route, with its role, in the OpenAPI document.
 */
export function routeOptions(auth: AuthHooks | undefined, access: Access, doc: RouteDoc): RouteShorthandOptions {
  const secured = access === 'viewer' || access === 'researcher' || access === 'admin';
  const response: Record<string, unknown> = {};
  for (const [status, r] of Object.entries(doc.responses ?? { 200: { description: 'OK' } })) {
    response[status] = r.schema === undefined
      ? { description: r.description }
      : { description: r.description, content: { [r.contentType ?? 'application/json']: { schema: r.schema } } };
  }
  if (doc.body !== undefined || doc.querystring !== undefined) response['400'] = { description: 'Malformed request (COHORT_ERR_PROTOCOL_MALFORMED)', content: { 'application/json': { schema: ErrorBody } } };
  if (secured) {
    response['401'] = { description: 'Token missing, unknown, revoked or expired (COHORT_ERR_AUTH_TOKEN_MISSING, COHORT_ERR_AUTH_TOKEN_INVALID)', content: { 'application/json': { schema: ErrorBody } } };
    if (access !== 'viewer') response['403'] = { description: `The token's role is below \`${access}\` (COHORT_ERR_AUTH_FORBIDDEN)`, content: { 'application/json': { schema: ErrorBody } } };
    response['429'] = { description: 'Too many failed authentications from this address (COHORT_ERR_AUTH_RATE_LIMITED)', content: { 'application/json': { schema: ErrorBody } } };
  }
  const schema: FastifySchema & Record<string, unknown> = {
    summary: doc.summary,
    description: [doc.description, ROLE_TEXT[access]].filter(Boolean).join('\n\n'),
    tags: doc.tags,
    'x-cohort-access': access,
    response,
    ...(secured ? { security: [{ bearer: [] }] } : {}),
    ...(doc.body !== undefined ? { body: doc.body } : {}),
    ...(doc.querystring !== undefined ? { querystring: doc.querystring } : {}),
  };
  if (secured && !auth) throw new Error(`route needs the ${access} role but no auth hooks were given`);
  return { schema, config: { access }, ...(secured ? { onRequest: auth![access] } : {}) };
}

/**
 * Registers the OpenAPI document and Swagger UI, and starts recording every route registered from now on
 * (call it before any route). Returns the live list of routes.
 */
export async function registerOpenApi(app: FastifyInstance): Promise<RouteInfo[]> {
  const routes: RouteInfo[] = [];
  app.addHook('onRoute', (r) => {
    const methods = Array.isArray(r.method) ? r.method : [r.method];
    const access = r.config?.access;
    for (const method of methods) routes.push({ method: String(method), url: r.url, access });
  });
  // zod in the handlers is the one validator; responses are plain JSON.stringify (see the file comment).
  app.setValidatorCompiler(() => () => true);
  app.setSerializerCompiler(() => (data) => JSON.stringify(data));
  await app.register(swagger, {
    openapi: {
      openapi: '3.0.3',
      info: {
        title: 'Cohort coordinator API',
        version: PROTOCOL_VERSION,
        description: [
          'Create, run and inspect federated studies; download models and model cards; administer tokens and sites.',
          'Authenticate with `Authorization: Bearer <token>`. Roles are ordered admin > researcher > viewer; each operation names the role it needs.',
          'Errors are `{"error": {"code": "COHORT_ERR_…", "message": "…"}}` with the codes listed in docs/errors.md.',
          'Live events (study and round progress) are on the socket.io namespace `/events` (auth: `{token}`), not REST.',
        ].join('\n\n'),
      },
      components: { securitySchemes: { bearer: { type: 'http', scheme: 'bearer', description: 'A Cohort API token (cht_…), from `cohort admin add-researcher`' } } },
      tags: [
        { name: 'studies', description: 'Create, start, stop and inspect studies' },
        { name: 'results', description: 'Metrics, models and model cards' },
        { name: 'sites', description: 'Site agents' },
        { name: 'admin', description: 'Tokens, enrollment, revocation, audit' },
        { name: 'dashboard', description: 'The live dashboard (static files; its data comes from this API)' },
        { name: 'health', description: 'Liveness' },
      ],
    },
    refResolver: { buildLocalReference: (json, _base, _fragment, i) => (typeof json.$id === 'string' ? json.$id : `def-${i}`) },
  });
  await app.register(swaggerUi, { routePrefix: DOCS_PREFIX, staticCSP: true, uiConfig: { docExpansion: 'list', deepLinking: true, persistAuthorization: false } });
  return routes;
}
