/**
 * A throwaway certificate authority and server certificates for TLS tests, made in-process with WebCrypto and
 * @peculiar/x509 (no system openssl needed). Keys are ECDSA P-256; certificates name localhost and 127.0.0.1.
 */
import 'reflect-metadata';
import { webcrypto } from 'node:crypto';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import * as x509 from '@peculiar/x509';

x509.cryptoProvider.set(webcrypto as unknown as Parameters<typeof x509.cryptoProvider.set>[0]);
type CryptoKeyPair = webcrypto.CryptoKeyPair;
type CryptoKey = webcrypto.CryptoKey;
const alg = { name: 'ECDSA', namedCurve: 'P-256', hash: 'SHA-256' } as const;

export interface Ca {
  cert: x509.X509Certificate;
  keys: CryptoKeyPair;
  pem: string;
}

async function keyPair(): Promise<CryptoKeyPair> {
  return webcrypto.subtle.generateKey(alg, true, ['sign', 'verify']);
}

async function keyPem(key: CryptoKey): Promise<string> {
  const der = await webcrypto.subtle.exportKey('pkcs8', key);
  return x509.PemConverter.encode(der, 'PRIVATE KEY');
}

export async function makeCa(name: string): Promise<Ca> {
  const keys = await keyPair();
  const cert = await x509.X509CertificateGenerator.createSelfSigned({
    serialNumber: '01', name: `CN=${name}`, notBefore: new Date(Date.now() - 60_000), notAfter: new Date(Date.now() + 86400_000), keys, signingAlgorithm: alg,
    extensions: [
      new x509.BasicConstraintsExtension(true, 0, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.keyCertSign | x509.KeyUsageFlags.cRLSign, true),
      await x509.SubjectKeyIdentifierExtension.create(keys.publicKey),
    ],
  });
  return { cert, keys, pem: cert.toString('pem') };
}

/** A server certificate for localhost / 127.0.0.1 signed by `ca`; `expired` makes one whose validity has ended. */
export async function makeServerCert(ca: Ca, o: { expired?: boolean; hosts?: string[] } = {}): Promise<{ cert: string; key: string }> {
  const keys = await keyPair();
  const now = Date.now();
  const names = (o.hosts ?? ['localhost', '127.0.0.1']).map((h) => (/^[\d.]+$/.test(h) ? { type: 'ip' as const, value: h } : { type: 'dns' as const, value: h }));
  const cert = await x509.X509CertificateGenerator.create({
    serialNumber: String(Math.floor(Math.random() * 1e9).toString(16)).padStart(8, '0'), subject: 'CN=cohort-coordinator', issuer: ca.cert.subject,
    notBefore: new Date(now - (o.expired ? 3 * 86400_000 : 60_000)), notAfter: new Date(o.expired ? now - 86400_000 : now + 86400_000),
    signingKey: ca.keys.privateKey, publicKey: keys.publicKey, signingAlgorithm: alg,
    extensions: [
      new x509.BasicConstraintsExtension(false, undefined, true),
      new x509.KeyUsagesExtension(x509.KeyUsageFlags.digitalSignature, true),
      new x509.ExtendedKeyUsageExtension([x509.ExtendedKeyUsage.serverAuth]),
      new x509.SubjectAlternativeNameExtension(names),
      await x509.AuthorityKeyIdentifierExtension.create(ca.keys.publicKey),
    ],
  });
  return { cert: cert.toString('pem'), key: await keyPem(keys.privateKey) };
}

/** Writes PEM text to `dir/name` (mode 0600) and returns the path. */
export function writePem(dir: string, name: string, pem: string): string {
  const file = join(dir, name);
  writeFileSync(file, pem, { mode: 0o600 });
  return file;
}
