/**
 * Fixed, seeded hold-out splits: the same n, fraction, seed (and labels) always give the same rows, on every run
 * and every machine, so a site's hold-out never drifts into training between rounds or restarts.
 */

/** mulberry32: small, fast, seeded; used only for ordering rows, never for anything secret. */
export function seededRandom(seed: number): () => number {
  let a = seed >>> 0;
  return () => {
    a = (a + 0x6d2b79f5) >>> 0;
    let t = a;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

export function shuffleInPlace<T>(items: T[], rand: () => number): T[] {
  for (let i = items.length - 1; i > 0; i--) {
    const j = Math.floor(rand() * (i + 1));
    const t = items[i]!;
    items[i] = items[j]!;
    items[j] = t;
  }
  return items;
}

/**
 * Splits indices 0..n-1 into train and hold-out. With labels the split is stratified: each class contributes
 * round(count * fraction) rows to the hold-out (at least one when the class has two or more rows).
 */
export function splitIndices(n: number, holdoutFraction: number, seed: number, labels?: ArrayLike<number>): { train: number[]; holdout: number[] } {
  const rand = seededRandom(seed);
  const groups = new Map<number, number[]>();
  for (let i = 0; i < n; i++) {
    const k = labels ? labels[i]! : 0;
    let g = groups.get(k);
    if (!g) groups.set(k, (g = []));
    g.push(i);
  }
  const train: number[] = [];
  const holdout: number[] = [];
  for (const k of [...groups.keys()].sort((a, b) => a - b)) {
    const g = shuffleInPlace(groups.get(k)!, rand);
    let h = Math.round(g.length * holdoutFraction);
    if (h === 0 && g.length >= 2 && holdoutFraction > 0) h = 1;
    holdout.push(...g.slice(0, h));
    train.push(...g.slice(h));
  }
  return { train: train.sort((a, b) => a - b), holdout: holdout.sort((a, b) => a - b) };
}
