/**
 * Partitioners: how a dataset's rows are spread over virtual sites. All are seeded (same spec, data and seed give
 * the same partition) and, except `sample`, assign every row to exactly one site.
 *
 * - `iid`: a seeded shuffle dealt in equal shares.
 * - `dirichlet`: label skew. For each class, the shares of its rows per site are drawn from Dirichlet(alpha)
 *   (Hsu, Qi & Brown 2019; the NIID-Bench recipe of Li, Diao, Chen & He, ICDE 2022, including its balancing rule that
 *   stops giving rows to a site once it holds n / sites). Small alpha (0.1): most sites see mostly one class;
 *   large alpha (100): close to IID. Redrawn until every site has `minRows` rows.
 * - `quantity`: quantity skew with IID labels: site sizes drawn from Dirichlet(alpha) or following a power law
 *   (size of the site ranked r proportional to r^-exponent), each site keeping at least `minRows`.
 * - `column`: one site per distinct value of a column (a natural hospital id); the column is not a feature.
 * - `sample`: each site draws `rowsPerSite` rows at random *with replacement*, for scale tests with more sites than
 *   rows (rows repeat across sites; membership inference counts a row as a member if any site trained on it).
 */
import { z } from 'zod';
import { CohortError } from '../protocol/errors.ts';
import { dirichlet, permutation, randFor, type Rand } from './rng.ts';

const minRows = z.number().int().min(1).max(1_000_000).default(4);

export const PartitionSchema = z.discriminatedUnion('kind', [
  z.strictObject({ kind: z.literal('iid'), minRows }),
  z.strictObject({ kind: z.literal('dirichlet'), alpha: z.number().positive().max(1e6).default(0.5), minRows }),
  z.strictObject({
    kind: z.literal('quantity'),
    distribution: z.enum(['dirichlet', 'power-law']).default('dirichlet'),
    alpha: z.number().positive().max(1e6).default(0.5),
    exponent: z.number().min(0).max(10).default(1),
    minRows,
  }),
  z.strictObject({ kind: z.literal('column'), column: z.string().min(1), minRows }),
  z.strictObject({ kind: z.literal('sample'), rowsPerSite: z.number().int().min(2).max(1_000_000).default(20) }),
]);
export type PartitionSpec = z.output<typeof PartitionSchema>;

export interface SitePart {
  name: string;
  /** Row indices into the table, ascending. */
  rows: Int32Array;
}

export interface PartitionInput {
  n: number;
  labels: Int32Array;
  numClasses: number;
  sites: number;
  seed: number;
  /** Raw values of the partition column (`column` partitions only). */
  column?: () => string[];
}

/** `site-001`, `site-002`, ... (zero-padded so names sort in site order). */
export function siteNames(count: number): string[] {
  const width = Math.max(3, String(count).length);
  return Array.from({ length: count }, (_, i) => `site-${String(i + 1).padStart(width, '0')}`);
}

const invalid = (message: string) => new CohortError('COHORT_ERR_SIM_PARTITION_INVALID', message);

function sorted(rows: number[]): Int32Array {
  return Int32Array.from(rows).sort();
}

/** Splits `total` into integer shares proportional to `p` (largest remainder), each at least `floor`. */
export function apportion(total: number, p: readonly number[], floor: number): number[] {
  const extra = total - floor * p.length;
  const raw = p.map((x) => x * extra);
  const sizes = raw.map((x) => floor + Math.floor(x));
  let left = total - sizes.reduce((a, b) => a + b, 0);
  const order = raw.map((x, i) => ({ frac: x - Math.floor(x), i })).sort((a, b) => b.frac - a.frac || a.i - b.i);
  for (let k = 0; left > 0; k = (k + 1) % order.length, left--) sizes[order[k]!.i]!++;
  return sizes;
}

function deal(order: Int32Array, sizes: readonly number[], names: readonly string[]): SitePart[] {
  let start = 0;
  return sizes.map((size, i) => {
    const rows = Array.from(order.subarray(start, start + size));
    start += size;
    return { name: names[i]!, rows: sorted(rows) };
  });
}

function checkMin(parts: SitePart[], min: number, hint: string): SitePart[] {
  const small = parts.filter((p) => p.rows.length < min);
  if (small.length) throw invalid(`${small.length} site(s) would hold fewer than ${min} rows (${small[0]!.name}: ${small[0]!.rows.length}); ${hint}`);
  return parts;
}

function dirichletLabelSkew(input: PartitionInput, alpha: number, min: number, rand: Rand): SitePart[] {
  const { n, labels, numClasses, sites } = input;
  const byClass = Array.from({ length: numClasses }, () => [] as number[]);
  for (let i = 0; i < n; i++) byClass[labels[i]!]!.push(i);
  const names = siteNames(sites);
  let smallest = 0;
  for (let attempt = 0; attempt < 1000; attempt++) {
    const buckets = Array.from({ length: sites }, () => [] as number[]);
    for (const rows of byClass) {
      const order = permutation(rows.length, rand);
      // NIID-Bench balancing: a site that already holds n / sites rows gets no more of this class.
      const p = dirichlet(rand, alpha, sites).map((x, s) => (buckets[s]!.length < n / sites ? x : 0));
      const sum = p.reduce((a, b) => a + b, 0);
      let acc = 0;
      let start = 0;
      p.forEach((x, s) => {
        acc += sum > 0 ? x / sum : 1 / sites;
        const end = s === sites - 1 ? rows.length : Math.round(acc * rows.length);
        for (let k = start; k < end; k++) buckets[s]!.push(rows[order[k]!]!);
        start = Math.max(start, end);
      });
    }
    smallest = Math.min(...buckets.map((b) => b.length));
    if (smallest >= min) return buckets.map((b, s) => ({ name: names[s]!, rows: sorted(b) }));
  }
  throw invalid(`Dirichlet(${alpha}) over ${sites} sites left a site with ${smallest} rows after 1000 draws (minRows ${min}); use fewer sites, a larger alpha or a smaller minRows`);
}

/** Spreads the table's rows over sites as `spec` says. */
export function partitionRows(spec: PartitionSpec, input: PartitionInput): SitePart[] {
  const { n, sites, seed } = input;
  const rand = randFor(seed, 'partition', spec.kind);
  if (spec.kind !== 'column' && sites < 1) throw invalid('at least one site is needed');
  switch (spec.kind) {
    case 'iid': {
      if (n < sites * spec.minRows) throw invalid(`${n} rows cannot give ${sites} sites ${spec.minRows} rows each; use fewer sites or partition 'sample'`);
      const base = Math.floor(n / sites);
      const sizes = Array.from({ length: sites }, (_, i) => base + (i < n % sites ? 1 : 0));
      return deal(permutation(n, rand), sizes, siteNames(sites));
    }
    case 'dirichlet':
      if (n < sites * spec.minRows) throw invalid(`${n} rows cannot give ${sites} sites ${spec.minRows} rows each`);
      return dirichletLabelSkew(input, spec.alpha, spec.minRows, rand);
    case 'quantity': {
      if (n < sites * spec.minRows) throw invalid(`${n} rows cannot give ${sites} sites ${spec.minRows} rows each`);
      let p: number[];
      if (spec.distribution === 'dirichlet') p = dirichlet(rand, spec.alpha, sites);
      else {
        const rank = permutation(sites, rand);
        const w = Array.from(rank, (r) => Math.pow(r + 1, -spec.exponent));
        const sum = w.reduce((a, b) => a + b, 0);
        p = w.map((x) => x / sum);
      }
      return deal(permutation(n, rand), apportion(n, p, spec.minRows), siteNames(sites));
    }
    case 'column': {
      if (!input.column) throw invalid(`partition by column ${spec.column} needs the column's values`);
      const values = input.column();
      const groups = new Map<string, number[]>();
      values.forEach((v, i) => {
        const key = v === '' ? '(missing)' : v;
        let g = groups.get(key);
        if (!g) groups.set(key, (g = []));
        g.push(i);
      });
      const keys = [...groups.keys()].sort((a, b) => (Number.isFinite(+a) && Number.isFinite(+b) ? +a - +b : a.localeCompare(b)));
      const parts = keys.map((k) => ({ name: `${spec.column}-${k}`.replace(/[^\p{L}\p{N} ._'-]/gu, '_').slice(0, 200), rows: sorted(groups.get(k)!) }));
      return checkMin(parts, spec.minRows, `merge small groups in ${spec.column} or lower partition.minRows`);
    }
    case 'sample': {
      const names = siteNames(sites);
      return names.map((name) => ({ name, rows: sorted(Array.from({ length: spec.rowsPerSite }, () => Math.floor(rand() * n))) }));
    }
  }
}
