/**
 * Which TLS certificates a site trusts for its coordinator, and a clear, coded refusal when the coordinator's
 * certificate is not one of them.
 *
 * A site trusts Node's default roots plus `NODE_EXTRA_CA_CERTS`, or, when site.json names a `caFile`, exactly that
 * CA (the hospital pins the coordinator's private CA; public roots are then not trusted for this connection).
 */
import { readFileSync } from 'node:fs';
import { connect } from 'node:tls';
import { CohortError } from '../protocol/errors.ts';

/** Node's codes for a certificate that does not verify (as opposed to a network failure). */
const UNTRUSTED = new Set([
  'UNABLE_TO_VERIFY_LEAF_SIGNATURE', 'UNABLE_TO_GET_ISSUER_CERT', 'UNABLE_TO_GET_ISSUER_CERT_LOCALLY', 'SELF_SIGNED_CERT_IN_CHAIN',
  'DEPTH_ZERO_SELF_SIGNED_CERT', 'CERT_HAS_EXPIRED', 'CERT_NOT_YET_VALID', 'CERT_REVOKED', 'CERT_UNTRUSTED', 'CERT_REJECTED',
  'ERR_TLS_CERT_ALTNAME_INVALID', 'CERT_SIGNATURE_FAILURE', 'INVALID_CA', 'HOSTNAME_MISMATCH',
]);

/** Reads the CA bundle named in site.json, or undefined to use Node's roots (and NODE_EXTRA_CA_CERTS). */
export function readCa(caFile: string | undefined): string | undefined {
  if (!caFile) return undefined;
  try {
    const pem = readFileSync(caFile, 'utf8');
    if (!pem.includes('-----BEGIN CERTIFICATE-----')) throw new Error('no PEM certificate in it');
    return pem;
  } catch (err) {
    throw new CohortError('COHORT_ERR_TLS_CONFIG', `cannot use caFile ${caFile}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
  }
}

/** The coded error for a TLS failure, or undefined when `err` is not about the certificate. */
export function tlsRefusal(err: unknown, host: string): CohortError | undefined {
  const code = (err as { code?: unknown } | undefined)?.code;
  if (typeof code !== 'string' || !UNTRUSTED.has(code)) return undefined;
  return new CohortError('COHORT_ERR_TLS_UNTRUSTED', `the certificate of ${host} is not trusted (${code}); check caFile in site.json or NODE_EXTRA_CA_CERTS, and the host name in the coordinator URL`, { reason: code });
}

/**
 * Opens a TLS connection to the coordinator and checks its certificate before anything else is sent.
 * Resolves when it verifies; rejects with COHORT_ERR_TLS_UNTRUSTED when it does not. Network errors (refused,
 * unreachable) resolve too: the connection's own retry loop deals with those.
 */
export function checkCoordinatorCertificate(url: URL, ca: string | undefined, timeoutMs = 10_000): Promise<void> {
  if (url.protocol !== 'https:') return Promise.resolve();
  const host = url.hostname.replace(/^\[|\]$/g, '');
  return new Promise((resolve, reject) => {
    const isIp = /^[\d.]+$|:/.test(host);
    const socket = connect({ host, port: Number(url.port || 443), ...(isIp ? {} : { servername: host }), ...(ca ? { ca } : {}) });
    const t = setTimeout(() => { socket.destroy(); resolve(); }, timeoutMs);
    socket.once('secureConnect', () => {
      clearTimeout(t);
      socket.end();
      resolve();
    });
    socket.once('error', (err) => {
      clearTimeout(t);
      socket.destroy();
      const refusal = tlsRefusal(err, url.host);
      if (refusal) reject(refusal);
      else resolve();
    });
  });
}
