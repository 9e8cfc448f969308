/**
 * The neighbour graph of a secure-aggregation session (SecAgg+, Bell et al. CCS 2020). Each site shares its keys
 * with, and masks against, only its neighbours, so the work per site grows with the degree k rather than with the
 * number of sites n. Small studies use the complete graph (plain SecAgg, Bonawitz et al. CCS 2017).
 *
 * The graph is a random Harary graph H(k, n): the n sites are placed on a ring in an order drawn from the
 * session's public seed, and each is joined to the k/2 nearest on either side. Every party derives the same graph
 * from (n, k, seed), so no graph travels on the wire.
 */
import { createHash } from 'node:crypto';
import { prgLanes } from './prg.ts';
import { MAX_SHARES } from './shamir.ts';

/** Assumptions behind the automatic degree; docs/privacy.md explains the trade-off. */
export const AUTO_DEGREE_ASSUMPTIONS = {
  colludingFraction: 0.1,
  dropoutFraction: 0.1,
  /** A privacy failure is a breach: keep it below 2^-20 per round (union bound over the sites). */
  privacyFailureLog2: -20,
  /** A recovery failure costs only a retried round: 2^-10 per round is enough. */
  recoveryFailureLog2: -10,
} as const;

/** The most neighbours a site can have: its neighbourhood (itself included) must fit the 255 Shamir x values. */
export const MAX_DEGREE = MAX_SHARES - 1;

/**
 * Shares needed to reconstruct a secret of a site whose neighbourhood (itself included) has `m` members:
 * at least the fraction asked for, at least 2, and always more than half, so no one can collect both the
 * self-mask shares and the key shares of the same site by telling different sites different stories.
 */
export function thresholdCount(fraction: number, m: number): number {
  if (!(fraction > 0.5 && fraction <= 1)) throw new RangeError('threshold fraction must be in (0.5, 1]');
  return Math.min(m, Math.max(2, Math.ceil(fraction * m - 1e-9), Math.floor(m / 2) + 1));
}

function logChoose(n: number, k: number): number {
  let s = 0;
  for (let i = 1; i <= k; i++) s += Math.log((n - k + i) / i);
  return s;
}

/** P[Binomial(n, p) >= k]. */
export function binomialTail(n: number, p: number, k: number): number {
  if (k <= 0) return 1;
  if (k > n) return 0;
  let sum = 0;
  for (let i = k; i <= n; i++) sum += Math.exp(logChoose(n, i) + i * Math.log(p) + (n - i) * Math.log1p(-p));
  return Math.min(1, sum);
}

/**
 * The degree used when the manifest says `neighbours: 'auto'`: the smallest even k such that, with a tenth of the
 * sites colluding and a tenth dropping out at random, the chance that some site's neighbours include a threshold
 * of colluders (privacy) stays below 2^-20 and the chance that some neighbourhood keeps fewer than a threshold of
 * live members (recovery: the round is retried) below 2^-10. When that k is n - 1 or more, the graph is complete.
 */
export function autoDegree(n: number, fraction: number): number {
  if (n <= 2) return Math.max(1, n - 1);
  const { colludingFraction, dropoutFraction, privacyFailureLog2, recoveryFailureLog2 } = AUTO_DEGREE_ASSUMPTIONS;
  for (let k = 2; k < n - 1 && k <= MAX_DEGREE; k += 2) {
    const m = k + 1;
    const t = thresholdCount(fraction, m);
    const privacyFails = binomialTail(k, colludingFraction, t);
    const recoveryFails = binomialTail(m, dropoutFraction, m - t + 1);
    if (privacyFails <= 2 ** privacyFailureLog2 / n && recoveryFails <= 2 ** recoveryFailureLog2 / n) return k;
  }
  return Math.min(n - 1, MAX_DEGREE);
}

/** The degree a session uses for `n` sites: the complete graph, a fixed k (made even), or the automatic choice. */
export function sessionDegree(spec: 'auto' | 'complete' | number, n: number, fraction: number): number {
  if (spec === 'complete') return n - 1;
  if (spec === 'auto') return autoDegree(n, fraction);
  const even = spec % 2 === 0 ? spec : spec + 1;
  return Math.min(n - 1, even);
}

/** Uniform permutation of 0..n-1 drawn from the seed (Fisher-Yates with rejection sampling, so unbiased). */
function permutation(n: number, seed: Uint8Array): number[] {
  const key = createHash('sha256').update('cohort-secagg-graph-v1').update(seed).digest();
  let pool = new Uint32Array(prgLanes(new Uint8Array(key), 4 * n + 64).buffer);
  let next = 0;
  let refills = 0;
  const draw = (bound: number): number => {
    const limit = Math.floor(2 ** 32 / bound) * bound;
    for (;;) {
      if (next >= pool.length) {
        // Practically never: rejections are rare. Extend the stream deterministically.
        refills++;
        const k2 = createHash('sha256').update(key).update(String(refills)).digest();
        pool = new Uint32Array(prgLanes(new Uint8Array(k2), 4 * n + 64).buffer);
        next = 0;
      }
      const v = pool[next++]!;
      if (v < limit) return v % bound;
    }
  };
  const p = Array.from({ length: n }, (_, i) => i);
  for (let i = n - 1; i > 0; i--) {
    const j = draw(i + 1);
    const t = p[i]!;
    p[i] = p[j]!;
    p[j] = t;
  }
  return p;
}

// The last few graphs by (n, k, seed): every party of a session derives the same one, and where many share a
// process (simulations, the bench) it is built once instead of once per site. Callers never mutate a graph.
const graphs = new Map<string, number[][]>();

/**
 * Neighbour lists (sorted site indices, self excluded) of the random Harary graph H(k, n) drawn from `seed`.
 * `k >= n - 1` gives the complete graph; `k` must be even otherwise. The result is shared: do not mutate it.
 */
export function neighbourGraph(n: number, k: number, seed: Uint8Array): number[][] {
  const key = `${n}|${k}|${Buffer.from(seed.buffer, seed.byteOffset, seed.byteLength).toString('hex')}`;
  let g = graphs.get(key);
  if (!g) {
    g = buildGraph(n, k, seed);
    if (graphs.size >= 8) graphs.delete(graphs.keys().next().value!);
    graphs.set(key, g);
  }
  return g;
}

function buildGraph(n: number, k: number, seed: Uint8Array): number[][] {
  if (!Number.isInteger(n) || n < 1) throw new RangeError('n must be a positive integer');
  if (k >= n - 1) return Array.from({ length: n }, (_, i) => Array.from({ length: n }, (_, j) => j).filter((j) => j !== i));
  if (k < 2 || k % 2 !== 0) throw new RangeError('degree must be even and at least 2 when the graph is not complete');
  const ring = permutation(n, seed);
  const adj: Set<number>[] = Array.from({ length: n }, () => new Set<number>());
  for (let pos = 0; pos < n; pos++) {
    const u = ring[pos]!;
    for (let d = 1; d <= k / 2; d++) {
      const v = ring[(pos + d) % n]!;
      adj[u]!.add(v);
      adj[v]!.add(u);
    }
  }
  return adj.map((s) => [...s].sort((a, b) => a - b));
}

/** A site's neighbourhood: itself and its neighbours, sorted. A member's Shamir x is its position here + 1. */
export function neighbourhood(graph: readonly (readonly number[])[], i: number): number[] {
  return [...graph[i]!, i].sort((a, b) => a - b);
}

/** Whether `nodes` induce a connected subgraph (an empty or single set counts as connected). */
export function isConnected(graph: readonly (readonly number[])[], nodes: Iterable<number>): boolean {
  const set = new Set(nodes);
  const first = set.values().next();
  if (first.done) return true;
  const seen = new Set<number>([first.value]);
  const stack = [first.value];
  while (stack.length) {
    const u = stack.pop()!;
    for (const v of graph[u]!) {
      if (set.has(v) && !seen.has(v)) {
        seen.add(v);
        stack.push(v);
      }
    }
  }
  return seen.size === set.size;
}
