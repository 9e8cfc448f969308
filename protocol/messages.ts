/**
 * Message schemas. Each zod schema is the one definition of a message: its TypeScript type is inferred from it and
 * every inbound payload is checked with it at the edge (`parseMessage`). Binary fields are Uint8Array (socket.io
 * carries them as binary attachments).
 */
import { z } from 'zod';
import { CohortError, isErrorCode, type WireError } from './errors.ts';
import { LayersTopologySchema } from './model-topology.ts';
import { SecAggInputSchema, SecAggPeerSchema, SecAggSessionSchema, SecureAggregationManifestSchema } from './secagg-messages.ts';
import { DownloadRefSchema, UploadGrantSchema } from './transfer.ts';

const id = z.string().min(1).max(128).regex(/^[A-Za-z0-9._:-]+$/, 'letters, digits and . _ : - only');
const bytes = z.custom<Uint8Array>((v) => v instanceof Uint8Array, 'expected binary data');
const b64 = z.string().max(256).regex(/^[A-Za-z0-9+/=]+$/);

// ---------------------------------------------------------------- model specs (data, never code)

export const ModelSpecSchema = z.discriminatedUnion('template', [
  z.object({ template: z.literal('logreg'), l2: z.number().min(0).max(1).default(0) }),
  z.object({
    template: z.literal('mlp'),
    hidden: z.array(z.number().int().min(1).max(4096)).min(1).max(16).default([32, 16]),
    activation: z.enum(['relu', 'tanh', 'elu']).default('relu'),
    dropout: z.number().min(0).max(0.9).default(0),
    l2: z.number().min(0).max(1).default(0),
  }),
  /** The digits reference CNN for [h, w, c] images: conv 3x3x16 same - maxpool 2 - conv 3x3x32 - dense 64 - output. */
  z.object({ template: z.literal('cnn-small') }),
  /** A CNN from parameters: conv blocks (each `convs` convolutions then a max pool of `pool`, 1 = none), a dense head. */
  z.object({
    template: z.literal('cnn'),
    blocks: z.array(z.object({
      filters: z.number().int().min(1).max(512),
      kernel: z.number().int().min(1).max(11).default(3),
      convs: z.number().int().min(1).max(4).default(1),
      pool: z.number().int().min(1).max(4).default(2),
    })).min(1).max(8).default([{ filters: 16, kernel: 3, convs: 1, pool: 2 }, { filters: 32, kernel: 3, convs: 1, pool: 2 }]),
    padding: z.enum(['same', 'valid']).default('same'),
    dense: z.array(z.number().int().min(1).max(4096)).max(4).default([64]),
    activation: z.enum(['relu', 'tanh', 'elu']).default('relu'),
    /** Batch normalization after each convolution (before its activation). */
    batchNorm: z.boolean().default(false),
    /** Dropout before each dense layer of the head. */
    dropout: z.number().min(0).max(0.9).default(0),
    l2: z.number().min(0).max(1).default(0),
  }),
  /** A tfjs layers topology (JSON, checked against an allow-list; see protocol/model-topology.ts). */
  z.object({ template: z.literal('layers'), topology: LayersTopologySchema }),
]);
export type ModelSpec = z.infer<typeof ModelSpecSchema>;

/** A model spec bound to the data's shape: everything a site needs to build the exact same network. */
export const ResolvedModelSchema = z.object({
  spec: ModelSpecSchema,
  inputShape: z.array(z.number().int().min(1).max(1 << 20)).min(1).max(4),
  numClasses: z.number().int().min(2).max(10_000),
});
export type ResolvedModel = z.infer<typeof ResolvedModelSchema>;

// ---------------------------------------------------------------- aggregation strategies

/**
 * How the coordinator turns site updates into the next global model: a name and that paper's parameters, with the
 * paper's defaults (see coordinator/strategies/ and docs/simulations.md). `fedavg`, `fedavgm`, `fedprox` and the
 * adaptive optimizers need only the weighted mean of the updates (so they run under secure aggregation);
 * `fedmedian`, `trimmed-mean`, `krum` and `multi-krum` need each site's update and cannot.
 */
export const StrategySpecSchema = z.discriminatedUnion('name', [
  z.object({ name: z.literal('fedavg') }),
  z.object({
    name: z.literal('fedavgm'),
    serverLearningRate: z.number().positive().max(100).default(1),
    momentum: z.number().min(0).lt(1).default(0.9),
  }),
  z.object({ name: z.literal('fedprox'), mu: z.number().min(0).max(1000).default(0.01) }),
  ...(['fedadam', 'fedyogi'] as const).map((name) => z.object({
    name: z.literal(name),
    eta: z.number().positive().max(100).default(0.1),
    beta1: z.number().min(0).lt(1).default(0.9),
    beta2: z.number().min(0).lt(1).default(0.99),
    tau: z.number().positive().max(1).default(1e-3),
  })),
  z.object({
    name: z.literal('fedadagrad'),
    eta: z.number().positive().max(100).default(0.1),
    beta1: z.number().min(0).lt(1).default(0.9),
    tau: z.number().positive().max(1).default(1e-3),
  }),
  z.object({ name: z.literal('fedmedian') }),
  z.object({ name: z.literal('trimmed-mean'), beta: z.number().min(0).lt(0.5).default(0.1) }),
  z.object({ name: z.literal('krum'), byzantine: z.number().int().min(0).max(10_000).default(1) }),
  z.object({
    name: z.literal('multi-krum'),
    byzantine: z.number().int().min(0).max(10_000).default(1),
    /** Updates averaged; default n - byzantine. */
    select: z.number().int().min(1).max(100_000).optional(),
  }),
]);
export type StrategySpec = z.output<typeof StrategySpecSchema>;
export type StrategyName = StrategySpec['name'];
// ---------------------------------------------------------------- differential privacy (manifest `privacy.dp`)

/**
 * Differential privacy for a study (docs/privacy.md, "Differential privacy"). `record`: DP-SGD inside each site's
 * training, each site's own guarantee for its patients. `client-central`: each site's update is clipped and the
 * coordinator adds Gaussian noise to the sum, protecting a whole site's contribution from whoever gets the model.
 * `client-distributed`: the same with integer (Skellam) noise added by the sites under secure aggregation, so the
 * coordinator never sees an update without noise (protocol/privacy/distributed.ts). `record-distributed`: record-level
 * DP as one full-batch DP gradient step per round over all sites' records, each site adding its share of integer
 * (Skellam) noise to its sum of per-example clipped gradients under secure aggregation, so one round's noise
 * protects every record of every site at once (protocol/privacy/distributed.ts).
 */
export const DpSettingsSchema = z.object({
  mode: z.enum(['none', 'record', 'client-central', 'client-distributed', 'record-distributed']),
  /** L2 bound: per example (record) or per site update (client modes); the initial bound with adaptive clipping. */
  clip: z.number().positive().max(1e6).default(1),
  /** Noise standard deviation over clip. Give this, or `targetEpsilon`, or both (then the target is a cap). */
  noiseMultiplier: z.number().min(0).max(1e6).optional(),
  /** Epsilon at `delta` for the whole study: calibrates the noise when `noiseMultiplier` is absent, else caps it. */
  targetEpsilon: z.number().positive().max(1e4).optional(),
  delta: z.number().positive().max(0.1).default(1e-5),
  /** Record mode: examples per clipped microbatch (1 = per-example clipping). Larger costs privacy (2x sensitivity). */
  microbatch: z.number().int().min(1).max(65_536).default(1),
  /** Record mode: each site returns the mean of its last half of DP-SGD iterates (free in privacy, less noise). */
  averageIterates: z.boolean().default(false),
  /** Client modes: adapt the clip to a quantile of site update norms (Andrew et al. 2021). */
  adaptiveClipping: z.object({
    targetQuantile: z.number().min(0).max(1).default(0.5),
    learningRate: z.number().positive().max(10).default(0.2),
    /** Noise on the count of unclipped sites, in counts; default: expected sites / 20 as the paper suggests. */
    bitNoiseMultiplier: z.number().positive().max(1e6).optional(),
  }).optional(),
}).refine((d) => d.mode === 'none' || d.noiseMultiplier !== undefined || d.targetEpsilon !== undefined, {
  message: 'give noiseMultiplier or targetEpsilon (or both)', path: ['noiseMultiplier'],
}).refine((d) => !d.adaptiveClipping || d.mode === 'client-central' || d.mode === 'client-distributed', {
  message: 'adaptive clipping applies to the client modes only', path: ['adaptiveClipping'],
}).refine((d) => d.mode !== 'record-distributed' || (d.microbatch === 1 && !d.averageIterates), {
  // One full-batch step per round, clipped per example: there are no microbatches and no iterates to average.
  message: 'record-distributed clips every example and takes one step per round: microbatch must be 1 and averageIterates false', path: ['mode'],
});
export type DpSettings = z.output<typeof DpSettingsSchema>;

/** What a site reports about its privacy spend with each training reply (shown per site by the coordinator). */
export const TrainPrivacySchema = z.object({
  mode: z.enum(['record', 'client-central', 'client-distributed', 'record-distributed']),
  delta: z.number().positive(),
  /** The site's own accountant, this study and dataset, after this round: record-level epsilon. */
  recordEpsilon: z.number().min(0).optional(),
  /**
   * Client-level epsilon, as the site accounts it: from the manifest's noise in client-central mode (the coordinator
   * adds it), from the noise the sites add themselves in client-distributed mode.
   */
  clientEpsilon: z.number().min(0).optional(),
  /** Epsilon (of the level the site's policy caps) after one more round like this one. */
  nextRoundEpsilon: z.number().min(0).optional(),
  /** Record mode: noise multiplier, Poisson sampling rate and steps of this round's DP-SGD. */
  noiseMultiplier: z.number().min(0).optional(),
  sampleRate: z.number().min(0).max(1).optional(),
  steps: z.number().int().min(0).optional(),
  /** Client modes: whether the update's norm was within the clip before clipping (adaptive clipping's bit). */
  withinClip: z.boolean().optional(),
});
export type TrainPrivacy = z.infer<typeof TrainPrivacySchema>;

// ---------------------------------------------------------------- study manifest

export const StudyManifestSchema = z.object({
  name: z.string().min(1).max(200),
  description: z.string().max(4000).optional(),
  task: z.object({
    /** Dataset id each site registered locally. */
    dataset: id,
    /** Label column / class name. */
    label: z.string().min(1).max(200),
    /** Feature names in order; when given, every site must have exactly these. */
    features: z.array(z.string().min(1).max(200)).min(1).max(100_000).optional(),
    /** Class names; when given, every site must report the same. */
    classes: z.array(z.string().min(1).max(200)).min(2).max(10_000).optional(),
    // ---- the schema contract (all optional): what every site's data must be, checked before round 1
    /** Kind of data every site must hold. */
    kind: z.enum(['csv', 'images', 'dicom']).optional(),
    /** Declared type per tabular feature; sites use it for columns their site.json does not type. */
    featureTypes: z.record(z.string().min(1).max(200), z.enum(['number', 'category'])).optional(),
    /** Category levels in one-hot order; sites encode with exactly these, so one-hot columns line up. */
    levels: z.record(z.string().min(1).max(200), z.array(z.string().min(1).max(200)).min(1).max(10_000)).optional(),
    /** Shape of one example as the model sees it, e.g. [8, 8, 1] for images. */
    inputShape: z.array(z.number().int().min(1).max(1 << 20)).min(1).max(4).optional(),
    /** Fewest examples (as the site reports them, rounded) a site needs to take part. */
    minExamples: z.number().int().min(0).max(1e9).optional(),
    /**
     * `federated` (default): features scaled with means and variances pooled across sites before round 1;
     * `local`: each site's own training split (the pre-0.2 behaviour); `none`: as the data source gives them.
     */
    standardize: z.enum(['federated', 'local', 'none']).default('federated'),
  }),
  model: ModelSpecSchema,
  training: z.object({
    rounds: z.number().int().min(1).max(10_000),
    localEpochs: z.number().int().min(1).max(1000).default(1),
    batchSize: z.number().int().min(1).max(65_536).default(32),
    optimizer: z.enum(['adam', 'sgd']).default('adam'),
    learningRate: z.number().positive().max(10).default(0.01),
  }),
  strategy: StrategySpecSchema.default({ name: 'fedavg' }),
  participation: z.object({
    minSites: z.number().int().min(1).max(100_000).default(2),
    /** Sites by name; when absent, every connected site with the dataset takes part. */
    sites: z.array(z.string().min(1).max(200)).max(100_000).optional(),
    roundDeadlineMs: z.number().int().min(100).max(24 * 3600_000).default(120_000),
    /** How long to wait for `minSites` to be online before a round. */
    waitForSitesMs: z.number().int().min(0).max(24 * 3600_000).default(600_000),
    /** Attempts of one round before the study fails. */
    maxRoundAttempts: z.number().int().min(1).max(100).default(3),
  }).default({ minSites: 2, roundDeadlineMs: 120_000, waitForSitesMs: 600_000, maxRoundAttempts: 3 }),
  privacy: z.object({
    /**
     * Secure aggregation (SecAgg+), on by default: the coordinator only ever learns the weighted sum of the sites'
     * updates. `false` turns it off; an object sets its parameters (see secagg-messages.ts, docs/privacy.md).
     */
    secureAggregation: SecureAggregationManifestSchema,
    /** Differential privacy; absent means none. */
    dp: DpSettingsSchema.optional(),
  }).default({ secureAggregation: true }),
  evaluation: z.object({
    holdoutFraction: z.number().min(0.05).max(0.5).default(0.2),
    /**
     * After the study, train one model per site on all the other sites (same rounds) and score it on that site's
     * hold-out: how well the approach carries over to a hospital that did not take part.
     */
    leaveOneSiteOut: z.boolean().default(false),
  }).default({ holdoutFraction: 0.2, leaveOneSiteOut: false }),
  seed: z.number().int().min(0).max(2 ** 31 - 1).default(42),
});
export type StudyManifestInput = z.input<typeof StudyManifestSchema>;
export type StudyManifest = z.output<typeof StudyManifestSchema>;

// ---------------------------------------------------------------- handshake

export const HelloSchema = z.object({
  protocolVersion: z.string().max(32),
  siteName: z.string().min(1).max(200).regex(/^[\p{L}\p{N} ._'-]+$/u, 'letters, digits, space and . _ \' - only'),
  /** Ed25519 public key, base64. */
  publicKey: b64,
  agentVersion: z.string().max(64).optional(),
  /** Random nonce the coordinator must sign, so a site that pinned the coordinator's key can check it. */
  clientNonce: b64.optional(),
});
export type Hello = z.infer<typeof HelloSchema>;

export const ChallengeSchema = z.object({
  nonce: b64,
  coordinatorId: z.string().max(128),
  protocolVersion: z.string().max(32),
  coordinatorPublicKey: b64,
  /** Signature over `coordinatorProofMessage(coordinatorId, siteName, clientNonce, nonce)` when a clientNonce came. */
  coordinatorSignature: b64.optional(),
});
export type Challenge = z.infer<typeof ChallengeSchema>;

export const AuthSchema = z.object({ nonce: b64, signature: b64 });
export type Auth = z.infer<typeof AuthSchema>;

/** The bytes a site signs to answer a challenge: binds nonce, site name and coordinator id. */
export function challengeMessage(nonce: string, siteName: string, coordinatorId: string): Uint8Array {
  return new TextEncoder().encode(`cohort-auth-v1\n${coordinatorId}\n${siteName}\n${nonce}`);
}

// ---------------------------------------------------------------- tasks (coordinator -> site) and replies

/** The manifest exactly as the researcher wrote it, with its hash and (optionally) the researcher's signature. */
export const SignedManifestSchema = z.object({
  raw: z.unknown(),
  hash: z.string().regex(/^[0-9a-f]{64}$/),
  signature: b64.optional(),
  researcherPublicKey: b64.optional(),
});
export type SignedManifest = z.infer<typeof SignedManifestSchema>;

const taskBase = {
  taskId: id,
  manifest: SignedManifestSchema,
  studyId: id,
  round: z.number().int().min(0).max(1_000_000),
  dataset: id,
  holdoutFraction: z.number().min(0.05).max(0.5),
  seed: z.number().int().min(0),
};

export const DescribeTaskSchema = z.object({ kind: z.literal('describe'), ...taskBase });
/** Before round 1 (federated standardization): per-feature count, sum and sum of squares of the training split. */
export const StatsTaskSchema = z.object({ kind: z.literal('stats'), ...taskBase });

/** Most standardization slots (tabular numeric columns, or image channels) a study may have. */
export const MAX_STATS_SLOTS = 100_000;
/** Global per-slot mean and standard deviation, pooled across sites; every site scales its features with these. */
export const StandardizationSchema = z.object({
  mean: z.array(z.number().finite()).max(MAX_STATS_SLOTS),
  std: z.array(z.number().finite().positive()).max(MAX_STATS_SLOTS),
}).refine((s) => s.mean.length === s.std.length, 'mean and std differ in length');
export type Standardization = z.infer<typeof StandardizationSchema>;
export const TrainTaskSchema = z.object({
  kind: z.literal('train'),
  ...taskBase,
  model: ResolvedModelSchema,
  /** The global model as one tensor frame; empty (0 bytes) when it is too large for one message and `weightsRef` says where to pull it. */
  weights: bytes,
  weightsRef: DownloadRefSchema.optional(),
  /** The site may send its binary reply (`weights` or `masked`) in chunks under this grant (protocol/transfer.ts). */
  upload: UploadGrantSchema.optional(),
  localEpochs: z.number().int().min(1),
  batchSize: z.number().int().min(1),
  optimizer: z.enum(['adam', 'sgd']),
  learningRate: z.number().positive(),
  /** How many sites this round's aggregate combines (site policies may set a minimum). */
  participants: z.number().int().min(1),
  /** Pooled statistics when the study standardizes federatedly. */
  standardization: StandardizationSchema.optional(),
  /** FedProx: add (mu / 2) * ||w - w_global||^2 to the local loss. */
  proximalMu: z.number().min(0).max(1000).optional(),
  /** Client-level DP: this round's clip for the site's update (it changes under adaptive clipping). */
  dp: z.object({
    clip: z.number().positive(),
    /**
     * Client-distributed: the parameters the coordinator will decode with (protocol/privacy/plan.ts). The site
     * computes its own from the approved manifest and the session, and refuses a task whose numbers differ.
     */
    distributed: z.object({ scale: z.number().positive(), siteVariance: z.number().min(0), headroom: z.number().int().min(0) }).optional(),
  }).optional(),
  /** Present when the manifest has secure aggregation: the site replies with a masked vector (stage 3). */
  secagg: SecAggInputSchema.optional(),
});
export const EvaluateTaskSchema = z.object({
  kind: z.literal('evaluate'),
  ...taskBase,
  model: ResolvedModelSchema,
  weights: bytes,
  weightsRef: DownloadRefSchema.optional(),
  standardization: StandardizationSchema.optional(),
});
// Secure aggregation stages (the masked input is a `train` task with `secagg`); see docs/protocol.md.
const sessionId = z.string().regex(/^[0-9a-f]{32}$/);
export const SecAggAdvertiseTaskSchema = z.object({ kind: z.literal('secagg-advertise'), ...taskBase, session: SecAggSessionSchema });
export const SecAggShareTaskSchema = z.object({ kind: z.literal('secagg-share'), ...taskBase, sessionId, peers: z.array(SecAggPeerSchema).max(254) });
export const SecAggUnmaskTaskSchema = z.object({
  kind: z.literal('secagg-unmask'), ...taskBase, sessionId, survivors: z.array(id).max(10_000), dropped: z.array(id).max(10_000),
});
export type SecAggAdvertiseTask = z.infer<typeof SecAggAdvertiseTaskSchema>;
export type SecAggShareTask = z.infer<typeof SecAggShareTaskSchema>;
export type SecAggUnmaskTask = z.infer<typeof SecAggUnmaskTaskSchema>;

export const TaskSchema = z.discriminatedUnion('kind', [
  DescribeTaskSchema, StatsTaskSchema, TrainTaskSchema, EvaluateTaskSchema, SecAggAdvertiseTaskSchema, SecAggShareTaskSchema, SecAggUnmaskTaskSchema,
]);
export type DescribeTask = z.infer<typeof DescribeTaskSchema>;
export type StatsTask = z.infer<typeof StatsTaskSchema>;
export type TrainTask = z.infer<typeof TrainTaskSchema>;
export type EvaluateTask = z.infer<typeof EvaluateTaskSchema>;
export type Task = z.infer<typeof TaskSchema>;

const roundedCounts = z.record(z.string().max(200), z.number().int().min(0)).refine((r) => Object.keys(r).length <= 100_000, 'too many entries');
export const SchemaReportSchema = z.object({
  kind: z.enum(['csv', 'images', 'dicom']),
  label: z.string(),
  features: z.array(z.object({
    name: z.string(), type: z.enum(['number', 'category']),
    levels: z.array(z.string().max(200)).max(10_000).optional(),
  })).optional(),
  classes: z.array(z.string()),
  inputShape: z.array(z.number().int().min(1)),
  examplesRounded: z.number().int().min(0),
  // Data-quality counts, all rounded like examplesRounded: they tell the researcher why a site has fewer examples.
  skipped: z.object({ count: z.number().int().min(0), reasons: roundedCounts }).optional(),
  missing: roundedCounts.optional(),
  unseenLevels: roundedCounts.optional(),
  droppedRows: z.number().int().min(0).optional(),
});
export type SchemaReport = z.infer<typeof SchemaReportSchema>;

/** Evaluation as counts, so pooled metrics (AUC included) come from sums, never from per-patient scores. */
export const EvalCountsSchema = z.object({
  n: z.number().int().min(0),
  lossSum: z.number(),
  correct: z.number().int().min(0),
  /** Binary tasks: confusion counts at threshold 0.5 and score histograms per class. */
  tp: z.number().int().min(0).optional(),
  fp: z.number().int().min(0).optional(),
  tn: z.number().int().min(0).optional(),
  fn: z.number().int().min(0).optional(),
  histPos: z.array(z.number().int().min(0)).max(100_000).optional(),
  histNeg: z.array(z.number().int().min(0)).max(100_000).optional(),
  /** Exact AUC on this site's own hold-out scores. */
  auc: z.number().min(0).max(1).optional(),
  /** The site's minimum cell count: nothing it reports per site may rest on fewer cases than this. */
  minCellCount: z.number().int().min(0).optional(),
});
export type EvalCounts = z.infer<typeof EvalCountsSchema>;

export const TrainResultSchema = z.object({
  weights: bytes,
  numExamples: z.number().int().min(1),
  trainLoss: z.number(),
  backend: z.string().max(32),
  durationMs: z.number().min(0),
  /** Present when the study uses differential privacy. */
  privacy: TrainPrivacySchema.optional(),
});
export type TrainResult = z.infer<typeof TrainResultSchema>;

/**
 * The reply to a `train` task under secure aggregation (stage 3): the masked lanes (little-endian 32-bit; see
 * protocol/crypto/quantize.ts), never the update itself, and the site's privacy report when the study uses DP.
 */
export const MaskedTrainResultSchema = z.object({
  masked: bytes,
  backend: z.string().max(32),
  durationMs: z.number().min(0),
  privacy: TrainPrivacySchema.optional(),
});
export type MaskedTrainResult = z.infer<typeof MaskedTrainResultSchema>;

export const EvaluateResultSchema = z.object({ counts: EvalCountsSchema });
export type EvaluateResult = z.infer<typeof EvaluateResultSchema>;
export const DescribeResultSchema = z.object({ schema: SchemaReportSchema });
/**
 * One site's standardization sums as ONE numeric vector `[count_0..count_{k-1}, sum_0.., sumSq_0..]` (k = slots),
 * so pooling is a plain vector sum and can go through secure aggregation unchanged (protocol/standardization.ts).
 */
export const StatsResultSchema = z.object({
  stats: z.object({
    slots: z.number().int().min(0).max(MAX_STATS_SLOTS),
    vector: z.array(z.number().finite()).max(3 * MAX_STATS_SLOTS),
  }).refine((s) => s.vector.length === 3 * s.slots, 'vector length must be 3 × slots'),
});
export type StatsResult = z.infer<typeof StatsResultSchema>;
export type DescribeResult = z.infer<typeof DescribeResultSchema>;

export const WireErrorSchema = z.object({
  code: z.string().refine(isErrorCode, 'unregistered error code'),
  message: z.string().max(2000),
  details: z.record(z.string(), z.unknown()).optional(),
});

/** Every ack is `{ok: true, data}` or `{ok: false, error}`. */
export type Reply<T> = { ok: true; data: T } | { ok: false; error: WireError };

/** Validates an ack: `{ok: true, data}` with `data` checked by `schema`, or a well-formed coded error. */
export function parseReply<T extends z.ZodType>(schema: T, raw: unknown, what: string): Reply<z.output<T>> {
  const shape = parseMessage(z.object({ ok: z.boolean() }).loose(), raw, what);
  if (shape.ok) return { ok: true, data: parseMessage(schema, (raw as { data?: unknown }).data, what) };
  const error = parseMessage(WireErrorSchema, (raw as { error?: unknown }).error, `${what} error`);
  return { ok: false, error: error as WireError };
}

/** Validates an inbound payload; throws COHORT_ERR_PROTOCOL_MALFORMED with the first issues as details. */
export function parseMessage<T extends z.ZodType>(schema: T, value: unknown, what: string): z.output<T> {
  const res = schema.safeParse(value);
  if (res.success) return res.data;
  throw new CohortError('COHORT_ERR_PROTOCOL_MALFORMED', `malformed ${what}`, {
    issues: res.error.issues.slice(0, 5).map((i) => ({ path: i.path.join('.'), message: i.message })),
  });
}
