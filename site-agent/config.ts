/**
 * `site.json`: who the site is, where its coordinator is, which local datasets it offers. Paths are relative to
 * the site directory. Data never leaves the site; only a schema with rounded counts does.
 */
import { readFileSync, writeFileSync, existsSync } from 'node:fs';
import { isAbsolute, join } from 'node:path';
import { z } from 'zod';
import { CohortError } from '../protocol/errors.ts';
import { PolicySchema } from './policy.ts';

const datasetId = z.string().min(1).max(128).regex(/^[A-Za-z0-9._:-]+$/);

/** How a missing value is filled: from the site's training split (mean, median, most frequent), or the row dropped. */
export const MissingStrategySchema = z.enum(['mean', 'median', 'mode', 'drop']);
export type MissingStrategy = z.infer<typeof MissingStrategySchema>;
export const ColumnTypeSchema = z.enum(['number', 'category', 'ignore']);

export const CsvDatasetSchema = z.object({
  id: datasetId,
  kind: z.literal('csv'),
  path: z.string().min(1),
  /** Label column (0/1 for binary tasks, or class names). */
  label: z.string().min(1),
  /** Feature columns in order; default: every column but the label, `exclude` and columns typed `ignore`. */
  features: z.array(z.string()).optional(),
  exclude: z.array(z.string()).default([]),
  /** Columns to one-hot encode (shorthand for `types: {col: 'category'}`). */
  categorical: z.array(z.string()).default([]),
  /** Declared column types; undeclared columns are numbers unless the study manifest declares them. */
  types: z.record(z.string(), ColumnTypeSchema).default({}),
  /** Per-column missing-value strategy; default: `missingDefault`. Mean and median apply to numbers only. */
  missing: z.record(z.string(), MissingStrategySchema).default({}),
  missingDefault: z.object({
    number: MissingStrategySchema.default('median'),
    category: z.enum(['mode', 'drop']).default('mode'),
  }).default({ number: 'median', category: 'mode' }),
  /**
   * Category levels in one-hot order, the same at every site (a study manifest's `task.levels` wins). A value
   * outside them is counted and encoded as all zeros ("none of the declared levels").
   */
  levels: z.record(z.string(), z.array(z.string().min(1)).min(1)).default({}),
});
export type CsvDatasetConfig = z.infer<typeof CsvDatasetSchema>;

/** [height, width, channels]: channels 1 (grey) or 3 (RGB). */
export const ImageShapeSchema = z.tuple([z.number().int().min(1).max(4096), z.number().int().min(1).max(4096), z.union([z.literal(1), z.literal(3)])]);

/** `scale`: pixel / 255 in [0, 1]; or per-channel `(pixel / 255 - mean) / std`. */
export const ImageNormalizeSchema = z.union([
  z.literal('scale'),
  z.object({ mean: z.array(z.number()).min(1).max(3), std: z.array(z.number().positive()).min(1).max(3) }),
]);

export const ImagesDatasetSchema = z.object({
  id: datasetId,
  kind: z.literal('images'),
  /** A folder with one sub-folder per class, each holding PNG or JPEG files. */
  path: z.string().min(1),
  /** Name reported as the label (class = sub-folder name). */
  label: z.string().min(1).default('class'),
  shape: ImageShapeSchema,
  normalize: ImageNormalizeSchema.default('scale'),
  /** Class folders in index order; default: every sub-folder, sorted (numerically when all are numbers). */
  classes: z.array(z.string().min(1)).min(2).optional(),
});
export type ImagesDatasetConfig = z.infer<typeof ImagesDatasetSchema>;

export const WindowPolicySchema = z.union([
  z.enum(['file', 'minmax', 'none']),
  z.object({ center: z.number(), width: z.number().positive() }),
]);

export const DicomDatasetSchema = z.object({
  id: datasetId,
  kind: z.literal('dicom'),
  /** A folder of DICOM files (any depth, any file names). */
  path: z.string().min(1),
  /** CSV with a file column (path relative to `path`) and a label column: the list of examples. */
  labels: z.string().min(1),
  fileColumn: z.string().min(1).default('file'),
  label: z.string().min(1).default('label'),
  shape: ImageShapeSchema,
  /** VOI window: the file's (default), the frame's own range, none, or a fixed `{center, width}` in modality units. */
  window: WindowPolicySchema.default('file'),
  /** Multi-frame files: every frame an example (same label, same split), or only the first or middle frame. */
  frames: z.enum(['all', 'first', 'middle']).default('all'),
  classes: z.array(z.string().min(1)).min(2).optional(),
});
export type DicomDatasetConfig = z.infer<typeof DicomDatasetSchema>;

export const DatasetConfigSchema = z.discriminatedUnion('kind', [CsvDatasetSchema, ImagesDatasetSchema, DicomDatasetSchema]);
export type DatasetConfig = z.infer<typeof DatasetConfigSchema>;

export const SiteConfigSchema = z.object({
  name: z.string().min(1).max(200),
  coordinator: z.string().url(),
  /** The coordinator's Ed25519 key, pinned at enrollment; the agent refuses a coordinator that cannot prove it. */
  coordinatorPublicKey: z.string().optional(),
  siteId: z.string().optional(),
  keyFile: z.string().default('keys/identity.json'),
  /**
   * PEM CA bundle that signed the coordinator's TLS certificate (a private CA). When set, only it is trusted for the
   * coordinator; when absent, Node's roots and NODE_EXTRA_CA_CERTS are.
   */
  caFile: z.string().min(1).optional(),
  /** HTTP(S) proxy for the outbound connection; default: HTTPS_PROXY / HTTP_PROXY from the environment. */
  proxy: z.string().url().optional(),
  /** socket.io transports in order; long-polling first upgrades to WebSocket where the network allows it. */
  transports: z.array(z.enum(['polling', 'websocket'])).min(1).default(['polling', 'websocket']),
  policy: PolicySchema.default(PolicySchema.parse({})),
  datasets: z.array(DatasetConfigSchema).default([]),
  reconnect: z.object({
    initialDelayMs: z.number().int().min(50).default(1000),
    maxDelayMs: z.number().int().min(100).default(30_000),
  }).default({ initialDelayMs: 1000, maxDelayMs: 30_000 }),
});
export type SiteConfig = z.infer<typeof SiteConfigSchema>;

export const SITE_CONFIG_FILE = 'site.json';

export function resolveIn(dir: string, p: string): string {
  return isAbsolute(p) ? p : join(dir, p);
}

export function loadSiteConfig(dir: string): SiteConfig {
  const file = join(dir, SITE_CONFIG_FILE);
  if (!existsSync(file)) throw new CohortError('COHORT_ERR_SITE_CONFIG_INVALID', `${file} not found; run 'cohort site init' first`);
  let raw: unknown;
  try {
    raw = JSON.parse(readFileSync(file, 'utf8'));
  } catch (err) {
    throw new CohortError('COHORT_ERR_SITE_CONFIG_INVALID', `${file} is not valid JSON: ${(err as Error).message}`);
  }
  const res = SiteConfigSchema.safeParse(raw);
  if (!res.success) {
    const i = res.error.issues[0];
    throw new CohortError('COHORT_ERR_SITE_CONFIG_INVALID', `${file}: ${i?.path.join('.')}: ${i?.message}`);
  }
  return res.data;
}

export function writeSiteConfig(dir: string, config: z.input<typeof SiteConfigSchema>): void {
  writeFileSync(join(dir, SITE_CONFIG_FILE), `${JSON.stringify(config, null, 2)}\n`, { mode: 0o600 });
}
