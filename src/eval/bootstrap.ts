/**
 * Percentiles, and their 95 % intervals by the bootstrap (docs/contracts.md, "Latency"): how
 * sure a median of timed runs is, without assuming how the times are distributed (a busy
 * machine's are not normal: a few runs wait for the CPU).
 */

/** A range of values: [low, high]. */
export type Interval = [number, number];

/**
 * The `p`th percentile of `values`, interpolated linearly between the closest ranks (numpy's
 * default). Reorders `values` (selection, not a sort: linear time).
 */
export function percentileInPlace(values: Float64Array, p: number): number {
  const n = values.length;
  if (n === 0) return NaN;
  const pos = (p / 100) * (n - 1);
  const lo = Math.floor(pos);
  const below = select(values, lo);
  if (pos === lo) return below;
  // After the selection every value past `lo` is at least `below`: the next rank is their least.
  let above = Infinity;
  for (let i = lo + 1; i < n; i++) if (values[i] < above) above = values[i];
  return below + (above - below) * (pos - lo);
}

/** The `p`th percentile of `values` (left as they are); see percentileInPlace. */
export function percentile(values: readonly number[], p: number): number {
  return percentileInPlace(Float64Array.from(values), p);
}

/** Puts the `k`th smallest value at `k`, the smaller ones before it and the others after (Hoare's selection). */
function select(a: Float64Array, k: number): number {
  let left = 0;
  let right = a.length - 1;
  while (right > left) {
    // The median of three as the pivot: sorted or reversed input stays linear.
    const mid = (left + right) >> 1;
    if (a[mid] < a[left]) swap(a, mid, left);
    if (a[right] < a[left]) swap(a, right, left);
    if (a[right] < a[mid]) swap(a, right, mid);
    const pivot = a[mid];
    let i = left;
    let j = right;
    while (i <= j) {
      while (a[i] < pivot) i++;
      while (a[j] > pivot) j--;
      if (i <= j) swap(a, i++, j--);
    }
    if (k <= j) right = j;
    else if (k >= i) left = i;
    else break;
  }
  return a[k];
}

function swap(a: Float64Array, i: number, j: number): void {
  const t = a[i];
  a[i] = a[j];
  a[j] = t;
}

/**
 * A small seeded generator of uniform numbers in [0, 1) (mulberry32): the same seed gives the
 * same resamples, so the same times always give the same interval.
 */
export function seededRandom(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (s + 0x6d2b79f5) >>> 0;
    let t = s;
    t = Math.imul(t ^ (t >>> 15), t | 1);
    t ^= t + Math.imul(t ^ (t >>> 7), t | 61);
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

/** Resamples per interval: enough for the 2.5th and 97.5th percentiles to move by well under the interval's width. */
const RESAMPLES = 1000;
const SEED = 27;

/**
 * Consecutive values are resampled in this many blocks: values measured close in time share the
 * machine's state (a neighbour's burst of work), so they are drawn together, and the interval
 * reflects how much that state moved during the measurement (a moving-block bootstrap).
 */
const BLOCKS = 20;

/**
 * 95 % percentile-bootstrap intervals of statistics of paired samples: the pairs (the i-th
 * value of every sample) are resampled together, since they were measured together (a base run
 * and the candidate run beside it), and in `blocks` blocks of consecutive pairs (wrapping around
 * the end; as many blocks as pairs resamples them one by one). `statistics` takes one resample
 * (each sample's values, which it may reorder) and returns its figures; the result is each
 * figure's interval, the 2.5th and 97.5th percentiles of its resampled values.
 */
export function pairedBootstrap(samples: readonly Float64Array[], statistics: (resample: Float64Array[]) => number[], blocks = BLOCKS): Interval[] {
  const n = samples[0]?.length ?? 0;
  const block = Math.max(1, Math.ceil(n / blocks));
  const random = seededRandom(SEED);
  const drawn = samples.map(() => new Float64Array(n));
  const at = new Int32Array(n);
  const figures: Float64Array[] = [];
  for (let r = 0; r < RESAMPLES; r++) {
    for (let i = 0; i < n; i += block) {
      const start = Math.floor(random() * n);
      for (let j = 0; j < block && i + j < n; j++) at[i + j] = (start + j) % n;
    }
    samples.forEach((sample, s) => {
      const out = drawn[s];
      for (let i = 0; i < n; i++) out[i] = sample[at[i]];
    });
    statistics(drawn).forEach((v, f) => {
      figures[f] ??= new Float64Array(RESAMPLES);
      figures[f][r] = v;
    });
  }
  return figures.map((values) => [percentileInPlace(values, 2.5), percentileInPlace(values, 97.5)]);
}
