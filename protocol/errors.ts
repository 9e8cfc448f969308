/**
 * The one registry of Cohort error codes. A code is `COHORT_ERR_<AREA>_<WHAT>`, is never reused for another meaning,
 * and has an entry in docs/errors.md (tests/unit/errors-registry.test.ts checks both ways).
 *
 * A site's failure or refusal travels as data (`WireError`), never as a stack trace; only a broken run throws.
 */
export const ERRORS = {
  // protocol: anything that arrives over the wire
  COHORT_ERR_PROTOCOL_MALFORMED: { http: 400, message: 'message failed schema validation' },
  COHORT_ERR_PROTOCOL_VERSION: { http: 400, message: 'protocol major version not supported' },
  COHORT_ERR_PROTOCOL_UNKNOWN_EVENT: { http: 400, message: 'unknown event or task kind' },
  COHORT_ERR_PROTOCOL_REPLAY: { http: 409, message: 'message replayed or out of order' },
  COHORT_ERR_PROTOCOL_TIMEOUT: { http: 504, message: 'peer did not answer before the deadline' },
  COHORT_ERR_PROTOCOL_DISCONNECTED: { http: 503, message: 'peer disconnected' },
  COHORT_ERR_PROTOCOL_TOO_LARGE: { http: 413, message: 'request body or message exceeds the size limit' },
  // chunked transfers (protocol/transfer.ts)
  COHORT_ERR_TRANSFER_UNKNOWN: { http: 404, message: 'no transfer with that id is open for this site' },
  COHORT_ERR_TRANSFER_OFFSET: { http: 409, message: 'chunk is not at the next expected offset (replayed or reordered)' },
  COHORT_ERR_TRANSFER_TOO_LARGE: { http: 413, message: 'transfer or chunk exceeds its declared or granted size' },
  COHORT_ERR_TRANSFER_MALFORMED: { http: 400, message: 'chunk or transfer declaration is inconsistent' },
  COHORT_ERR_TRANSFER_DIGEST: { http: 400, message: 'transferred bytes do not match their declared SHA-256 digest' },
  COHORT_ERR_TRANSFER_INCOMPLETE: { http: 409, message: 'transfer did not complete' },
  // tensor codec
  COHORT_ERR_TENSOR_MALFORMED: { http: 400, message: 'tensor frame could not be decoded' },
  COHORT_ERR_TENSOR_TOO_LARGE: { http: 413, message: 'tensor frame exceeds the size limit' },
  COHORT_ERR_TENSOR_SHAPE: { http: 400, message: 'tensor shapes do not match the model' },
  COHORT_ERR_TENSOR_NONFINITE: { http: 400, message: 'tensor contains NaN or infinite values' },
  // authentication of sites
  COHORT_ERR_AUTH_UNKNOWN_SITE: { http: 401, message: 'site is not registered' },
  COHORT_ERR_AUTH_BAD_SIGNATURE: { http: 401, message: 'challenge signature does not verify with the site key' },
  COHORT_ERR_AUTH_CHALLENGE_EXPIRED: { http: 401, message: 'handshake challenge expired or already used' },
  COHORT_ERR_AUTH_KEY_MISMATCH: { http: 409, message: 'site name already registered with another key' },
  COHORT_ERR_AUTH_SITE_REVOKED: { http: 403, message: 'site has been revoked' },
  COHORT_ERR_AUTH_TOKEN_MISSING: { http: 401, message: 'a bearer token is required' },
  COHORT_ERR_AUTH_TOKEN_INVALID: { http: 401, message: 'token is unknown, revoked or expired' },
  COHORT_ERR_AUTH_FORBIDDEN: { http: 403, message: 'token lacks the role this needs' },
  COHORT_ERR_AUTH_RATE_LIMITED: { http: 429, message: 'too many failed authentications' },
  COHORT_ERR_AUTH_TOKEN_UNKNOWN: { http: 404, message: 'no token with that id' },
  COHORT_ERR_AUTH_ENROLLMENT_TOKEN: { http: 401, message: 'enrollment token is unknown, used or expired' },
  COHORT_ERR_AUTH_COORDINATOR_MISMATCH: { http: 401, message: 'coordinator identity does not match the pinned key' },
  // studies
  COHORT_ERR_STUDY_NOT_FOUND: { http: 404, message: 'study not found' },
  COHORT_ERR_STUDY_INVALID_MANIFEST: { http: 400, message: 'study manifest is invalid' },
  COHORT_ERR_STUDY_BAD_STATE: { http: 409, message: 'study is not in a state that allows this' },
  COHORT_ERR_STUDY_NO_MODEL: { http: 404, message: 'study has no model yet' },
  COHORT_ERR_STUDY_NOT_ENOUGH_SITES: { http: 503, message: 'fewer sites than the study minimum' },
  // rounds
  COHORT_ERR_ROUND_STALE: { http: 409, message: 'reply is for a round that is not in progress' },
  COHORT_ERR_ROUND_TOO_FEW_RESULTS: { http: 503, message: 'too few sites returned results before the deadline' },
  COHORT_ERR_ROUND_DUPLICATE: { http: 409, message: 'site already submitted for this round' },
  // aggregation strategies (coordinator/strategies)
  COHORT_ERR_STUDY_STRATEGY_NEEDS_INDIVIDUAL: { http: 400, message: 'strategy needs individual updates and cannot run under secure aggregation' },
  COHORT_ERR_STUDY_STRATEGY_INVALID: { http: 400, message: 'strategy parameters do not fit the study' },
  // simulations (cohort simulate)
  COHORT_ERR_SIM_SCENARIO_INVALID: { http: 400, message: 'simulation scenario or flag is invalid' },
  COHORT_ERR_SIM_PARTITION_INVALID: { http: 400, message: 'data cannot be partitioned across the virtual sites as asked' },
  COHORT_ERR_SIM_WORKER_FAILED: { http: 500, message: 'a simulation worker thread failed' },
  // site-side
  COHORT_ERR_SITE_DATASET_UNKNOWN: { http: 404, message: 'the site has no dataset with that id' },
  COHORT_ERR_SITE_SCHEMA_MISMATCH: { http: 422, message: 'site data does not match the study task' },
  COHORT_ERR_SITE_TRAINING_FAILED: { http: 500, message: 'local training failed' },
  COHORT_ERR_SITE_CONFIG_INVALID: { http: 400, message: 'site configuration is invalid' },
  COHORT_ERR_SITE_STUDY_NOT_APPROVED: { http: 403, message: 'the site has not approved this study manifest' },
  COHORT_ERR_SITE_STUDY_REJECTED: { http: 403, message: 'the site rejected this study' },
  COHORT_ERR_SITE_MANIFEST_SIGNATURE: { http: 403, message: 'study manifest signature is missing or invalid' },
  COHORT_ERR_SITE_TASK_MISMATCH: { http: 409, message: 'task parameters differ from the approved manifest' },
  // site policy (enforced by the agent; see docs/operations.md)
  COHORT_ERR_POLICY_SECAGG_REQUIRED: { http: 403, message: 'site policy requires secure aggregation' },
  COHORT_ERR_POLICY_TOO_FEW_SITES: { http: 403, message: 'fewer sites in the aggregate than site policy allows' },
  COHORT_ERR_POLICY_EPSILON_EXCEEDED: { http: 403, message: 'task would exceed the privacy budget of site policy' },
  COHORT_ERR_POLICY_MAX_ROUNDS: { http: 403, message: 'study has more rounds than site policy allows' },
  COHORT_ERR_POLICY_MAX_EPOCHS: { http: 403, message: 'more local epochs than site policy allows' },
  COHORT_ERR_POLICY_MODEL_TOO_LARGE: { http: 403, message: 'model has more parameters than site policy allows' },
  COHORT_ERR_POLICY_LAYER_NOT_ALLOWED: { http: 403, message: 'model uses a layer type site policy does not allow' },
  COHORT_ERR_POLICY_UNSIGNED_MANIFEST: { http: 403, message: 'site policy requires signed study manifests' },
  // secure aggregation (SecAgg+; see docs/privacy.md)
  COHORT_ERR_SECAGG_BELOW_THRESHOLD: { http: 503, message: 'fewer sites than the secure-aggregation threshold remain; the round aborts and nothing is revealed' },
  COHORT_ERR_SECAGG_BAD_SIGNATURE: { http: 401, message: 'a key advertisement does not verify with the site identity key' },
  COHORT_ERR_SECAGG_BAD_KEY: { http: 400, message: 'a key-agreement public key is invalid or of low order' },
  COHORT_ERR_SECAGG_BAD_SHARE: { http: 400, message: 'an encrypted share does not open, or revealed shares do not rebuild the committed secret' },
  COHORT_ERR_SECAGG_UNKNOWN_SESSION: { http: 409, message: 'the site holds no secure-aggregation session with that id' },
  COHORT_ERR_SECAGG_STAGE_ORDER: { http: 409, message: 'secure-aggregation stage out of order or repeated' },
  COHORT_ERR_SECAGG_OVERFLOW: { http: 400, message: 'secure-aggregation lanes could wrap past 2^32 with these parameters' },
  COHORT_ERR_SECAGG_CONFIG: { http: 400, message: 'secure-aggregation session parameters are invalid or differ from the manifest' },
  COHORT_ERR_SECAGG_INCONSISTENT: { http: 409, message: 'unmask request is inconsistent (a site both survived and dropped, or unknown sites)' },
  COHORT_ERR_SECAGG_DISCONNECTED: { http: 409, message: 'the surviving sites do not form a connected neighbour graph; unmasking would reveal partial sums' },
  // differential privacy (protocol/privacy, site-agent/mods/dp.ts, coordinator/privacy)
  COHORT_ERR_DP_INVALID: { http: 400, message: 'differential privacy settings are invalid for this study' },
  COHORT_ERR_DP_UNSUPPORTED: { http: 501, message: 'this differential privacy mode is not available yet' },
  COHORT_ERR_STUDY_EPSILON_TARGET: { http: 409, message: 'the next round would exceed the study target epsilon' },
  // data sources
  COHORT_ERR_DATA_PARSE: { http: 422, message: 'data file could not be parsed' },
  COHORT_ERR_DATA_SCHEMA: { http: 422, message: 'data does not match its declared schema' },
  COHORT_ERR_DATA_CORRUPT: { http: 422, message: 'data file is damaged or truncated and cannot be decoded' },
  COHORT_ERR_DATA_UNSUPPORTED: { http: 422, message: 'data file format or encoding is not supported' },
  COHORT_ERR_DATA_EMPTY: { http: 422, message: 'dataset has no usable examples' },
  COHORT_ERR_SITE_DATASET_PATH: { http: 400, message: 'dataset path does not exist or is the wrong kind' },
  COHORT_ERR_SITE_DATASET_EXISTS: { http: 409, message: 'a dataset with that id is already registered' },
  // models
  COHORT_ERR_MODEL_SPEC_INVALID: { http: 400, message: 'model specification is invalid' },
  // transport security (TLS)
  COHORT_ERR_TLS_UNTRUSTED: { http: 502, message: 'the coordinator TLS certificate is not trusted' },
  COHORT_ERR_TLS_CONFIG: { http: 500, message: 'TLS certificate, key or CA file is missing or invalid' },
  // shared store (coordinator replicas)
  COHORT_ERR_STORE_UNAVAILABLE: { http: 503, message: 'the coordinator store could not complete the write' },
  COHORT_ERR_STORE_REPLICA_MISMATCH: { http: 500, message: 'this replica has another coordinator identity than the shared store' },
  // generic
  COHORT_ERR_SERVER_INTERNAL: { http: 500, message: 'internal error' },
} as const satisfies Record<string, { http: number; message: string }>;

export type ErrorCode = keyof typeof ERRORS;

/** What crosses the wire (and REST bodies) when something is refused. */
export interface WireError {
  code: ErrorCode;
  message: string;
  details?: Record<string, unknown>;
}

export class CohortError extends Error {
  readonly code: ErrorCode;
  readonly details: Record<string, unknown> | undefined;
  constructor(code: ErrorCode, message?: string, details?: Record<string, unknown>) {
    super(message ?? ERRORS[code].message);
    this.name = 'CohortError';
    this.code = code;
    this.details = details;
  }
  toWire(): WireError {
    return this.details === undefined
      ? { code: this.code, message: this.message }
      : { code: this.code, message: this.message, details: this.details };
  }
}

export function isErrorCode(value: unknown): value is ErrorCode {
  return typeof value === 'string' && Object.hasOwn(ERRORS, value);
}

/** Turns anything thrown into a WireError without leaking stack traces. */
export function toWireError(err: unknown): WireError {
  if (err instanceof CohortError) return err.toWire();
  return { code: 'COHORT_ERR_SERVER_INTERNAL', message: ERRORS.COHORT_ERR_SERVER_INTERNAL.message };
}
