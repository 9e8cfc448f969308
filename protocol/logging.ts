/**
 * Structured JSON logs for every Cohort process. Anything that looks like a secret is redacted before it is
 * written: keys, tokens, signatures, authorization headers.
 */
import pino, { type Logger } from 'pino';

export const REDACT_PATHS = [
  'secretKey', '*.secretKey', 'token', '*.token', 'signature', '*.signature', 'req.headers.authorization', 'authorization', '*.authorization',
];

export function makeLogger(name: string, level = process.env.COHORT_LOG_LEVEL ?? 'info'): Logger {
  return pino({ name, level, redact: { paths: REDACT_PATHS, censor: '[redacted]' } }, pino.destination({ dest: 2, sync: true }));
}
