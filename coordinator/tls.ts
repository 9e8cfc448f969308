/**
 * TLS for the coordinator: certificate and key (PEM) for fastify's HTTPS server, which socket.io shares.
 * Files are checked at start, so a wrong path, a broken PEM or a key that does not match the certificate is a
 * coded error before the port opens, not a failed handshake later.
 */
import { readFileSync } from 'node:fs';
import { createSecureContext } from 'node:tls';
import { X509Certificate } from 'node:crypto';
import { CohortError } from '../protocol/errors.ts';

export interface TlsFiles {
  cert: string;
  key: string;
}

function readPem(file: string, what: string): string {
  try {
    return readFileSync(file, 'utf8');
  } catch (err) {
    throw new CohortError('COHORT_ERR_TLS_CONFIG', `cannot read the TLS ${what} ${file}: ${(err as NodeJS.ErrnoException).code ?? (err as Error).message}`);
  }
}

/** Reads and checks a certificate (chain) and its private key. */
export function loadTlsFiles(certFile: string, keyFile: string): TlsFiles {
  const tls = { cert: readPem(certFile, 'certificate'), key: readPem(keyFile, 'key') };
  checkTls(tls);
  return tls;
}

/** Validates PEM material; returns the leaf certificate's expiry. The error never quotes the key. */
export function checkTls(tls: TlsFiles): { validTo: Date; subject: string } {
  let leaf: X509Certificate;
  try {
    leaf = new X509Certificate(tls.cert);
  } catch {
    throw new CohortError('COHORT_ERR_TLS_CONFIG', 'the TLS certificate is not a PEM X.509 certificate');
  }
  try {
    createSecureContext({ cert: tls.cert, key: tls.key });
  } catch (err) {
    const reason = /mismatch/i.test((err as Error).message) ? 'the key does not match the certificate' : 'the TLS key is not a valid PEM private key';
    throw new CohortError('COHORT_ERR_TLS_CONFIG', reason);
  }
  return { validTo: new Date(leaf.validTo), subject: leaf.subject };
}
