/**
 * Wire schemas of secure aggregation (SecAgg+): the manifest's settings, the session parameters the coordinator
 * proposes, and the payloads of the four stages (advertise keys, share keys, masked input, unmask). The task
 * schemas that carry them live in messages.ts with the other tasks. See docs/protocol.md and docs/privacy.md.
 */
import { z } from 'zod';

const id = z.string().min(1).max(128).regex(/^[A-Za-z0-9._:-]+$/, 'letters, digits and . _ : - only');
const b64 = z.string().max(256).regex(/^[A-Za-z0-9+/=]+$/);
const B64 = /^(?:[A-Za-z0-9+/]{4})*(?:[A-Za-z0-9+/]{2}==|[A-Za-z0-9+/]{3}=)?$/;
/**
 * Keys, signatures, boxes and shares travel as base64 strings inside the JSON part of a message, not as binary
 * attachments: socket.io's parser refuses a packet with more than 10 attachments, and a share task carries three
 * values per neighbour. Only the masked vector, which is large, travels as binary.
 */
const b64Of = (n: number) => z.string().length(4 * Math.ceil(n / 3)).regex(B64, 'expected base64');
const b64Max = (maxBytes: number) => z.string().max(4 * Math.ceil(maxBytes / 3)).regex(B64, 'expected base64');

/**
 * `privacy.secureAggregation` in a manifest: `true` (the default: these defaults), `false` (plain FedAvg: the
 * coordinator sees each site's update), or an object that sets any of the parameters. docs/privacy.md explains
 * what each one trades.
 */
export const SecureAggregationSettingsSchema = z.object({
  /** Fraction (0.5, 1] of each site's neighbourhood whose shares rebuild its secrets; more tolerates fewer dropouts. */
  threshold: z.number().gt(0.5).max(1).default(0.6),
  /** Per-coordinate clipping bound of each site's update (weight delta). */
  clip: z.number().positive().max(1e6).default(8),
  /** Each site's update is rounded to 2^bits levels over [-clip, clip]. */
  quantizationBits: z.number().int().min(8).max(30).default(22),
  /** Neighbour graph: 'auto' (complete for small studies, random k-regular when sites are many), 'complete', or k. */
  neighbours: z.union([z.enum(['auto', 'complete']), z.number().int().min(2).max(254)]).default('auto'),
  /** Example counts above this are capped when weighting; default: from the sites' reported data sizes. */
  maxWeight: z.number().int().min(1).max(2 ** 30).optional(),
  /** Deadline of each key stage (advertise, share, unmask); the masked-input stage has the round deadline. */
  stageDeadlineMs: z.number().int().min(100).max(3_600_000).default(30_000),
});
export type SecureAggregationSettings = z.output<typeof SecureAggregationSettingsSchema>;

export const SecureAggregationManifestSchema = z.union([z.boolean(), SecureAggregationSettingsSchema]).default(true);

/** The settings in force for a manifest's `privacy.secureAggregation`, or null when it is off. */
export function secureAggregationSettings(value: boolean | SecureAggregationSettings | undefined): SecureAggregationSettings | null {
  if (value === false) return null;
  if (value === true || value === undefined) return SecureAggregationSettingsSchema.parse({});
  return value;
}

/** One site of a session: its id at the coordinator and its enrolled Ed25519 identity key. */
export const RosterEntrySchema = z.object({ siteId: id, identityKey: b64 });

/** What the coordinator proposes for one secure-aggregation session (one round attempt). Every site checks it. */
export const SecAggSessionSchema = z.object({
  sessionId: z.string().regex(/^[0-9a-f]{32}$/),
  /** Every site asked to take part, in index order (a site's index fixes its place in the graph and mask signs). */
  roster: z.array(RosterEntrySchema).min(2).max(10_000),
  /** Shares needed to rebuild a site's secrets. */
  threshold: z.number().int().min(2).max(255),
  /** Neighbours per site (n - 1: complete graph). */
  degree: z.number().int().min(1).max(254),
  /** Public seed of the neighbour graph, hex. */
  graphSeed: z.string().regex(/^[0-9a-f]{64}$/),
  /** Lanes of the summed vector. */
  vectorLength: z.number().int().min(1).max(1 << 28),
  clip: z.number().positive(),
  quantizationBits: z.number().int().min(8).max(30),
  maxWeight: z.number().int().min(1).max(2 ** 30),
});
export type SecAggSession = z.infer<typeof SecAggSessionSchema>;

/** Stage 1 reply: two fresh X25519 public keys (c: share encryption, s: masks), signed with the identity key. */
export const SecAggAdvertiseResultSchema = z.object({
  cPk: b64Of(32),
  sPk: b64Of(32),
  signature: b64Of(64),
});
export type SecAggAdvertiseResult = z.infer<typeof SecAggAdvertiseResultSchema>;

/** A neighbour's advertisement, relayed by the coordinator in stage 2. */
export const SecAggPeerSchema = z.object({ siteId: id, cPk: b64Of(32), sPk: b64Of(32), signature: b64Of(64) });
export type SecAggPeer = z.infer<typeof SecAggPeerSchema>;

/** Stage 2 reply: one sealed box of shares per accepted neighbour, and a commitment to the self-mask seed. */
export const SecAggShareResultSchema = z.object({
  commitment: b64Of(32),
  shares: z.array(z.object({ to: id, box: b64Max(256) })).max(254),
  /** Neighbours this site refused (bad signature or key), with the code. */
  rejected: z.array(z.object({ siteId: id, code: z.string().max(64) })).max(254),
});
export type SecAggShareResult = z.infer<typeof SecAggShareResultSchema>;

/** Stage 3 input (inside the task that produces the vector, e.g. `train`): the boxes addressed to this site. */
export const SecAggInputSchema = z.object({
  sessionId: z.string().regex(/^[0-9a-f]{32}$/),
  shares: z.array(z.object({ from: id, box: b64Max(256) })).max(254),
});
export type SecAggInput = z.infer<typeof SecAggInputSchema>;

/** Stage 4 reply: shares of survivors' self-mask seeds and of dropped sites' mask keys, never both for one site. */
export const SecAggUnmaskResultSchema = z.object({
  selfShares: z.array(z.object({ of: id, share: b64Of(33) })).max(255),
  keyShares: z.array(z.object({ of: id, share: b64Of(33) })).max(255),
});
export type SecAggUnmaskResult = z.infer<typeof SecAggUnmaskResultSchema>;
