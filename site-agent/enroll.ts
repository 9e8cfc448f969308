/**
 * Enrollment: the site proves it holds its new key by signing the one-time token together with its name and
 * public key; the coordinator answers with its own public key, which the site pins.
 */
import { request as httpRequest } from 'node:http';
import { request as httpsRequest } from 'node:https';
import nacl from 'tweetnacl';
import { HttpsProxyAgent } from 'https-proxy-agent';
import { CohortError, isErrorCode } from '../protocol/errors.ts';
import { b64, enrollmentMessage } from '../protocol/signing.ts';
import type { Identity } from './keys.ts';
import { tlsRefusal } from './tls-trust.ts';

export interface Enrollment {
  siteId: string;
  coordinatorId: string;
  coordinatorPublicKey: string;
}

function postJson(url: URL, body: unknown, proxy?: string, ca?: string): Promise<{ status: number; json: unknown }> {
  const data = JSON.stringify(body);
  const req = url.protocol === 'https:' ? httpsRequest : httpRequest;
  return new Promise((resolve, reject) => {
    const r = req(url, {
      method: 'POST', headers: { 'content-type': 'application/json', 'content-length': Buffer.byteLength(data) },
      ...(proxy ? { agent: new HttpsProxyAgent(proxy) } : {}),
      ...(ca ? { ca } : {}),
    }, (res) => {
      const chunks: Buffer[] = [];
      res.on('data', (c: Buffer) => chunks.push(c));
      res.on('end', () => {
        const text = Buffer.concat(chunks).toString('utf8');
        try {
          resolve({ status: res.statusCode ?? 0, json: JSON.parse(text) });
        } catch {
          resolve({ status: res.statusCode ?? 0, json: { error: { code: 'COHORT_ERR_PROTOCOL_MALFORMED', message: text.slice(0, 200) } } });
        }
      });
    });
    r.on('error', (err) => reject(tlsRefusal(err, url.host) ?? err));
    r.end(data);
  });
}

/** `ca`: the PEM CA the coordinator's TLS certificate must chain to (site.json `caFile`); default: Node's roots. */
export async function enroll(coordinator: string, token: string, siteName: string, identity: Identity, proxy?: string, ca?: string): Promise<Enrollment> {
  const publicKey = b64(identity.publicKey);
  const signature = b64(nacl.sign.detached(enrollmentMessage(token, siteName, publicKey), identity.secretKey));
  const proxyUrl = proxy ?? process.env.HTTPS_PROXY ?? process.env.HTTP_PROXY;
  const res = await postJson(new URL('/api/enroll', coordinator), { token, name: siteName, publicKey, signature }, proxyUrl, ca);
  if (res.status !== 201) {
    const e = (res.json as { error?: { code?: string; message?: string } }).error;
    throw new CohortError(isErrorCode(e?.code) ? e.code : 'COHORT_ERR_AUTH_ENROLLMENT_TOKEN', e?.message ?? `enrollment failed with HTTP ${res.status}`);
  }
  return res.json as Enrollment;
}
