/**
 * HTTP security headers for every coordinator response, set in one place.
 *
 * The dashboard is plain ES modules, CSS and the socket.io client served from this origin, talking to this origin
 * (REST and socket.io: XHR polling, then WebSocket), so its policy allows exactly 'self' for scripts, styles,
 * images (plus data: URLs for generated images) and connections, and nothing else: no inline script or style, no
 * eval, no framing, no plugins, no form posts. CSP Level 3 lets 'self' match ws:/wss: on the same host; a browser
 * that does not simply keeps socket.io on long-polling. API responses get a policy that allows nothing at all.
 * A route that sets its own Content-Security-Policy keeps it.
 */
import type { FastifyInstance } from 'fastify';

export const DASHBOARD_CSP = "default-src 'none'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";
export const API_CSP = "default-src 'none'; base-uri 'none'; form-action 'none'; frame-ancestors 'none'";
/** One year; sent only over TLS (browsers ignore it on plain HTTP, and it would lock a plain-HTTP dev setup). */
export const HSTS = 'max-age=31536000';

export function registerSecurityHeaders(app: FastifyInstance, o: { tls: boolean }): void {
  app.addHook('onSend', async (req, reply, payload) => {
    reply.header('x-content-type-options', 'nosniff');
    reply.header('referrer-policy', 'no-referrer');
    reply.header('x-frame-options', 'DENY');
    reply.header('cross-origin-opener-policy', 'same-origin');
    reply.header('cross-origin-resource-policy', 'same-origin');
    reply.header('permissions-policy', 'camera=(), microphone=(), geolocation=(), usb=(), payment=()');
    if (!reply.hasHeader('content-security-policy')) {
      const type = String(reply.getHeader('content-type') ?? '');
      reply.header('content-security-policy', type.startsWith('text/html') ? DASHBOARD_CSP : API_CSP);
    }
    // API answers carry tokens, metrics and models: no cache may keep them.
    if (req.url.startsWith('/api/') && !reply.hasHeader('cache-control')) reply.header('cache-control', 'no-store');
    if (o.tls) reply.header('strict-transport-security', HSTS);
    return payload;
  });
}
