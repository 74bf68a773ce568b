import { Group, Unit } from '../graph/analysis';
import type { WeightUse } from '../graph/rules';
import { DenseMath, lowerInverse } from '../onnx/linalg';
import { SpillRange, readSpilled, spillBytes } from '../onnx/spill';
import { OnnxModel } from '../onnx/model';
import { toFloat32 } from '../onnx/tensor';
import { AxisNorms } from './score';
import { ChannelStats, Consumer, channelMean, channelVariance, mergeCentered } from './stats';
import { CompensationChoice } from './types';

/**
 * Damage in closed form (docs/pruning.md, "Damage from statistics"): for each consumer of a
 * group (the weight op reading its channels), the error its output takes when some of its input
 * channels go and the kept ones are refit by least squares is the Optimal-Brain-Surgeon
 * quantity tr(W_Pᵀ · ([H⁻¹]_PP)⁻¹ · W_P), H the (damped) covariance of its input. Units are taken
 * greedily, lowest error first, the inverse updated after each block, as SlimGPT and ZipLM do:
 * one run gives the order in which a group's units go and the error after every count.
 */

/**
 * A consumer's weight seen as a matrix M[j, o]: j the input channel (the pruned axis), o the
 * output, in whatever layout the op keeps them (WeightUse). A convolution's kernel is summed over
 * its window for the bias (exact for 1x1, the mean effect away from the borders otherwise), and
 * divided by the taps an output receives on average (a ConvTranspose's strides).
 */
export class WeightMatrix {
  readonly data: Float32Array;
  readonly k: number;
  readonly n: number;
  private readonly window: number;
  private readonly strideIn: number;
  private readonly strideOut: number;
  private readonly taps: number;

  constructor(dims: number[], values: Float32Array, use: WeightUse) {
    this.data = Float32Array.from(values);
    const strides = dims.map((_, a) => dims.slice(a + 1).reduce((x, y) => x * y, 1));
    [this.k, this.n] = [dims[use.weightIn], dims[use.weightOut]];
    [this.strideIn, this.strideOut] = [strides[use.weightIn], strides[use.weightOut]];
    // The window is the trailing axes after the two channel axes (a kernel's spatial extent).
    this.window = dims.slice(Math.max(use.weightIn, use.weightOut) + 1).reduce((x, y) => x * y, 1);
    this.taps = use.tapsPerOutput;
  }

  /** Σ over the kernel window of W[j, o] (the weight itself for MatMul/Gemm), per output tap. */
  get(j: number, o: number): number {
    const base = j * this.strideIn + o * this.strideOut;
    let s = 0;
    for (let w = 0; w < this.window; w++) s += this.data[base + w];
    return s / this.taps;
  }

  /** Window 1 only (see `pointwise`). */
  set(j: number, o: number, v: number): void {
    this.data[j * this.strideIn + o * this.strideOut] = v;
  }

  get pointwise(): boolean {
    return this.window === 1 && this.taps === 1;
  }

  /** The matrix as k x n float64, row j the weights of input channel j (pointwise only). */
  dense(): Float64Array {
    const out = new Float64Array(this.k * this.n);
    for (let j = 0; j < this.k; j++) for (let o = 0; o < this.n; o++) out[j * this.n + o] = this.data[j * this.strideIn + o * this.strideOut];
    return out;
  }
}

/** Damping tried, as a fraction of the covariance's mean diagonal; null: no refit (the bias takes the mean). */
const DAMPINGS: (number | null)[] = [1e-6, 1e-3, 1, null];
/** The damping used where it cannot be checked (one calibration batch). */
export const DEFAULT_DAMPING = 1e-2;
/** Blocks of units removed at once in the greedy: at most about this many blocks per group. */
const GREEDY_BLOCKS = 16;

/**
 * How each consumer is repaired, chosen by checking on the calibration batches a refit fitted on
 * the others did not see (every other batch): a damping (refit by least squares, damped toward
 * the weight as it is), or null (no refit: the bias takes the removed channels' mean). Kept by
 * consumer across a search's steps (the data decide it, not the step).
 */
export type Dampings = Map<string, number | null>;

export const consumerKey = (c: Consumer) => `${c.node.name ?? ''}\u0000${c.weight}`;

/**
 * Consumers of one kind (op and weight shape) share the damping chosen for the first of them
 * (dampingOf): only that one needs every other batch's sums to choose it with.
 */
export const dampingKind = (opType: string, k: number, n: number) => `\u0001${opType} ${k}x${n}`;

/** Whether a damping of this kind is known already (chosen on some number of samples). */
export const kindHasDamping = (dampings: Dampings, kind: string) => [...dampings.keys()].some((key) => key.startsWith(`${kind} on `));

/**
 * A consumer's damping: its own, else that of the consumers of the same op and weight shape
 * whose input was read on as many samples (chosen on the first of them: the damping weighs the
 * samples against the channels, which they share; every layer of a transformer is one such
 * class, so a 12-layer model checks two dampings, not 24), else chosen now by `choose`.
 */
export async function dampingOf(dampings: Dampings, c: Consumer, k: number, n: number, samples: number, choose: () => Promise<number | null>): Promise<number | null> {
  const key = consumerKey(c);
  const own = dampings.get(key);
  if (own !== undefined) return own;
  const like = `${dampingKind(c.node.opType, k, n)} on ${samples}`;
  const known = dampings.get(like);
  const damping = known !== undefined ? known : await choose();
  dampings.set(key, damping);
  if (known === undefined) dampings.set(like, damping);
  return damping;
}

/**
 * Whether a consumer's kept rows can be refit by least squares: its weight is pointwise (a
 * MatMul, Gemm or 1x1 Conv: a kernel's taps would need the covariance of the unfolded input) and
 * no other op reads it. Only these need their input's covariance.
 */
export function refittable(c: Consumer, model: OnnxModel, readers: (tensor: string) => number): boolean {
  const dims = model.constantInfo(c.weight)?.dims;
  if (!dims || readers(c.weight) > 1 || c.use.tapsPerOutput !== 1) return false;
  return dims.slice(Math.max(c.use.weightIn, c.use.weightOut) + 1).every((d) => d === 1);
}

/** The covariance (k x k) of `count` vectors whose centered sums of products are `gram` (ChannelStats.gram). */
export function covariance(count: number, gram: Float32Array): Float64Array {
  const n = Math.max(1, count);
  const out = new Float64Array(gram.length);
  for (let i = 0; i < gram.length; i++) out[i] = gram[i] / n;
  return out;
}

/** cov + damping x mean(diag cov) on the diagonal. */
function damped(cov: Float64Array, k: number, damping: number): Float64Array {
  let trace = 0;
  for (let i = 0; i < k; i++) trace += cov[i * k + i];
  const lambda = damping * (trace / Math.max(1, k)) + 1e-12;
  const out = Float64Array.from(cov);
  for (let i = 0; i < k; i++) out[i * k + i] += lambda;
  return out;
}

/**
 * The damped inverse covariance of each consumer input of a step, computed once per damping and
 * kept while the step needs it (the curves, the probe's removals and the candidates all refit
 * the same consumers): in memory up to `memoryBytes`, past that in the spill file (a read is
 * far cheaper than an inverse), so memory does not grow with the number of layers.
 */
export class InverseCovariances {
  private readonly cache = new Map<ChannelStats, Map<number, Float64Array | SpillRange>>();
  private bytes = 0;

  constructor(
    readonly math: DenseMath,
    private readonly memoryBytes = 128 * 2 ** 20,
  ) {}

  /** Whether the inverse at this damping is at hand, or can be made (the covariance is still there). */
  has(s: ChannelStats, damping: number): boolean {
    return !!s.gram || !!this.cache.get(s)?.has(damping);
  }

  /**
   * Lets every covariance go whose inverses are kept (the step's curves have made the ones its
   * candidates read): a large model's covariances are then not held through its probe.
   */
  releaseCovariances(stats: Iterable<ChannelStats>): void {
    for (const s of stats) {
      if (!this.cache.has(s)) continue;
      delete s.gram;
      delete s.half;
    }
  }

  async of(s: ChannelStats, damping: number): Promise<Float64Array> {
    const hit = this.cache.get(s)?.get(damping);
    if (hit) return hit instanceof Float64Array ? hit : new Float64Array(readSpilled(hit).buffer);
    if (!s.gram) throw new Error('internal: the covariance was released before its inverse was made');
    const k = s.sum.length;
    const inverse = await this.math.inverse(damped(covariance(s.count, s.gram!), k, damping), k);
    const byDamping = this.cache.get(s) ?? new Map<number, Float64Array | SpillRange>();
    const fits = this.bytes + inverse.byteLength <= this.memoryBytes;
    if (fits) this.bytes += inverse.byteLength;
    byDamping.set(damping, fits ? inverse : spillBytes(new Uint8Array(inverse.buffer, inverse.byteOffset, inverse.byteLength)));
    this.cache.set(s, byDamping);
    return inverse;
  }
}

/** A consumer as the closed form sees it. */
interface ConsumerProblem {
  consumer: Consumer;
  /** Channels of each unit of the group in this consumer's input (same order as group.units). */
  channels: number[][];
  /** Refit by least squares: its weight as a dense matrix (k x n) and its input covariance. */
  refit?: { w: Float64Array; k: number; n: number; stats: ChannelStats; damping: number };
  /** Otherwise: each channel's error when removed alone, Var(x_j) · ||W_j||² (FLAP's fluctuation). */
  diagonal?: Float64Array;
}

/** The order in which a group's units go, and the damage after each count. */
export interface DamageCurve {
  group: Group;
  order: Unit[];
  /** errors[c]: the consumers' output error after the first c units of `order` went (errors[0] = 0). */
  errors: Float64Array;
}

export interface CurveOptions {
  /** Compensation asked for: auto and reconstruct refit (auto may choose not to), bias and none do not. */
  compensate: CompensationChoice;
  /** Dampings chosen so far (filled in for consumers seen the first time). */
  dampings: Dampings;
  /** Seconds spent choosing them, added to. */
  choosing?: { seconds: number };
  /** Share of a group's units at which a damping is checked (the step's share, say). */
  checkShare: number;
  /** Share of a group's units the curve goes up to: what one step may take from a group. */
  maxShare: number;
  /** Units the curve reaches at least (a width the group must keep a multiple of is one step away). */
  minReach?: (group: Group) => number;
}

/**
 * Every group's damage curve, from the statistics collected (covariances for the consumers
 * that are refit, variances for the others).
 */
export async function damageCurves(
  model: OnnxModel,
  norms: AxisNorms,
  groups: Group[],
  consumers: ReadonlyMap<Group, Consumer[]>,
  stats: Map<string, ChannelStats>,
  inverses: InverseCovariances,
  options: CurveOptions,
  shared: (weight: string) => boolean,
): Promise<Map<Group, DamageCurve>> {
  const curves = new Map<Group, DamageCurve>();
  for (const group of groups) {
    const problems: ConsumerProblem[] = [];
    for (const c of consumers.get(group) ?? []) {
      const s = stats.get(c.input);
      if (!s) continue;
      const problem = await consumerProblem(model, norms, group, c, s, inverses, options, shared(c.weight));
      if (problem) problems.push(problem);
    }
    const reach = Math.min(group.units.length - 1, Math.max(1, options.minReach?.(group) ?? 1, Math.round(options.maxShare * group.units.length)));
    curves.set(group, await greedyCurve(group, problems, inverses, reach));
  }
  return curves;
}

async function consumerProblem(
  model: OnnxModel,
  norms: AxisNorms,
  group: Group,
  c: Consumer,
  s: ChannelStats,
  inverses: InverseCovariances,
  options: CurveOptions,
  shared: boolean,
): Promise<ConsumerProblem | undefined> {
  const channels = group.units.map((u) => u.indices.get(c.inputSlot.id) ?? []);
  if (channels.every((ch) => ch.length === 0)) return undefined;
  const even = channels.every((ch) => ch.length === channels[0].length);
  const refits = options.compensate === 'auto' || options.compensate === 'reconstruct';
  const wt = model.constant(c.weight);
  if (refits && even && s.gram && !shared && wt) {
    const matrix = new WeightMatrix(wt.dims, toFloat32(wt), c.use);
    if (matrix.pointwise && matrix.k === s.sum.length) {
      const [k, n] = [matrix.k, matrix.n];
      const w = matrix.dense();
      const damping = await dampingOf(options.dampings, c, k, n, s.count, async () => {
        const started = Date.now();
        const removed = await cheapestUnits(s, w, k, n, channels, options.checkShare, inverses);
        const chosen = await chooseDamping(s, w, k, n, removed, options.compensate === 'auto', inverses.math);
        if (options.choosing) options.choosing.seconds += (Date.now() - started) / 1000;
        return chosen;
      });
      if (damping !== null) return { consumer: c, channels, refit: { w, k, n, stats: s, damping } };
    }
  }
  const variance = channelVariance(s);
  const w2 = norms.sumSquares(c.weightSlot);
  if (w2.length !== variance.length) return undefined;
  return { consumer: c, channels, diagonal: variance.map((v, j) => v * w2[j]) };
}

/**
 * The channels of the units that cost least alone with a refit under the default damping:
 * `share` of the units, at least one, never all. The removal a damping is checked on: units that
 * are cheap because kept ones can stand in for them, where the refit and its damping matter
 * (the units that are cheap without a refit, near-silent ones, would have every damping, and no
 * refit, look alike).
 */
async function cheapestUnits(s: ChannelStats, w: Float64Array, k: number, n: number, channels: number[][], share: number, inverses: InverseCovariances): Promise<number[]> {
  const errors = await inverses.math.unitErrors(await inverses.of(s, DEFAULT_DAMPING), w, k, n, channels);
  const units = Math.min(channels.length - 1, Math.max(1, Math.round(share * channels.length)));
  return [...errors.keys()].sort((a, b) => errors[a] - errors[b]).slice(0, units).flatMap((u) => channels[u]);
}

/**
 * The damping whose refit, fitted on every other calibration batch, best predicts the layer's
 * output on the rest when the channels `removed` go; with `noRefit`, null when no refit predicts
 * it better than leaving the kept weights as they are. The data decide: removed channels that are
 * combinations of kept ones want almost none, a few noisy samples more. The default when there
 * is only one batch.
 */
export async function chooseDamping(s: ChannelStats, w: Float64Array, k: number, n: number, removed: number[], noRefit: boolean, math: DenseMath): Promise<number | null> {
  const h = s.half;
  if (!h || h.count === 0 || h.count >= s.count || !s.gram) return DEFAULT_DAMPING;
  // The other batches' centered sums: the whole's less the half's and less the parallel
  // formula's cross term between the two (mergeCentered, taken out).
  const rest = { count: s.count - h.count, sum: s.sum.map((v, i) => v - h.sum[i]) };
  const restGram = new Float32Array(k * k);
  for (let i = 0; i < k * k; i++) restGram[i] = s.gram[i] - h.gram[i];
  mergeCentered(restGram, rest.count, rest.sum, h.count, h.sum, -1);
  const [fitOn, checkOn] = [covariance(rest.count, restGram), covariance(h.count, h.gram)];
  const gone = new Set(removed);
  const kept = [...Array(k).keys()].filter((j) => !gone.has(j));
  // Every damping is checked: the error need not dip once (removed channels that are exact
  // combinations of kept ones want almost none, where a middle damping may do worse than both).
  let best: { damping: number | null; error: number } | undefined;
  for (const damping of DAMPINGS) {
    if (damping === null && !noRefit) continue;
    // The change of the weight: the removed rows go, the kept ones move by the refit.
    const change = new Float64Array(k * n);
    for (const j of removed) for (let o = 0; o < n; o++) change[j * n + o] = -w[j * n + o];
    if (damping !== null) {
      const refit = await math.refit(await math.inverse(damped(fitOn, k, damping), k), w, k, n, removed, kept);
      kept.forEach((j, r) => {
        for (let o = 0; o < n; o++) change[j * n + o] = refit[r * n + o] - w[j * n + o];
      });
    }
    const error = await math.quadratic(checkOn, change, k, n);
    if (Number.isFinite(error) && (!best || error < best.error)) best = { damping, error };
  }
  return best ? best.damping : DEFAULT_DAMPING;
}

/**
 * The greedy removal: at each round every remaining unit's error alone is computed (summed over
 * the group's consumers), the cheapest block goes, and every refit consumer's inverse covariance
 * and weight are updated as if those units were gone (the kept rows absorbing them). Rounds take
 * blocks of about 1/GREEDY_BLOCKS of the units; within a block, the error of each unit given the
 * ones before it is exact.
 */
async function greedyCurve(group: Group, problems: ConsumerProblem[], inverses: InverseCovariances, maxCount: number): Promise<DamageCurve> {
  const math = inverses.math;
  const n = group.units.length;
  const diagonal = new Float64Array(n);
  for (const p of problems) {
    if (!p.diagonal) continue;
    p.channels.forEach((ch, u) => {
      for (const j of ch) diagonal[u] += p.diagonal![j];
    });
  }
  const refits = problems.filter((p) => p.refit);
  const order: number[] = [];
  const errors = [0];
  let total = 0;
  if (refits.length === 0) {
    // No refit: each unit costs the same whatever goes with it.
    const sorted = [...Array(n).keys()].sort((a, b) => diagonal[a] - diagonal[b]).slice(0, maxCount);
    for (const u of sorted) errors.push((total += diagonal[u]));
    return { group, order: sorted.map((u) => group.units[u]), errors: Float64Array.from(errors) };
  }
  // Per refit consumer: its inverse covariance and weight over the rows still present, and which
  // row each channel is in now.
  const state = await Promise.all(
    refits.map(async (p) => {
      const { w, k, n: outs, stats, damping } = p.refit!;
      return { p, hinv: await inverses.of(stats, damping), w, m: k, outs, row: new Map([...Array(k).keys()].map((j) => [j, j])) };
    }),
  );
  const remaining = new Set([...Array(n).keys()]);
  const block = Math.max(1, Math.ceil((n - 1) / GREEDY_BLOCKS));
  const rowsOf = (s: (typeof state)[number], units: number[]) => units.map((u) => s.p.channels[u].map((j) => s.row.get(j)!));
  // Each remaining unit's error alone, per refit consumer (updated by every removal).
  const alone = await Promise.all(state.map((s) => math.unitErrors(s.hinv, s.w, s.m, s.outs, rowsOf(s, [...remaining]))));
  while (order.length < maxCount) {
    const live = [...remaining];
    const score = live.map((u, i) => diagonal[u] + alone.reduce((t, e) => t + e[i], 0));
    const picked = live
      .map((u, i) => ({ u, score: score[i] }))
      .sort((a, b) => a.score - b.score)
      .slice(0, Math.min(block, maxCount - order.length))
      .map((x) => x.u);
    const gone = new Set(picked);
    const next = live.filter((u) => !gone.has(u));
    const increments = picked.map((u) => diagonal[u]);
    // After the last block nothing reads the updated matrices: only the removed block's errors.
    const last = order.length + picked.length >= maxCount;
    for (const [k, s] of state.entries()) {
      const removedChannels = new Set(picked.flatMap((u) => s.p.channels[u]));
      const removedRows = picked.flatMap((u) => s.p.channels[u].map((j) => s.row.get(j)!));
      const { hpp, wp } = removedBlock(s.hinv, s.w, s.m, s.outs, removedRows);
      const nested = await nestedErrors(math, hpp, wp, removedRows.length, s.outs, picked.map((u) => s.p.channels[u].length));
      nested.forEach((v, i) => (increments[i] += v));
      if (last) continue;
      const keptChannels = [...s.row.keys()].filter((j) => !removedChannels.has(j));
      const keptRows = keptChannels.map((j) => s.row.get(j)!);
      const row = new Map(keptChannels.map((j, i) => [j, i]));
      const r = await math.remove(s.hinv, s.w, s.m, s.outs, removedRows, keptRows, next.map((u) => s.p.channels[u].map((j) => row.get(j)!)));
      s.hinv = r.hinv;
      s.w = r.w;
      s.m = keptRows.length;
      s.row = row;
      alone[k] = r.errors;
    }
    picked.forEach((u, i) => {
      order.push(u);
      remaining.delete(u);
      errors.push((total += Math.max(0, increments[i])));
    });
  }
  return { group, order: order.map((u) => group.units[u]), errors: Float64Array.from(errors) };
}

/** The rows (and columns) `rows` of an m x m inverse covariance, and those rows of the m x n weight. */
export function removedBlock(hinv: Float64Array, w: Float64Array, m: number, n: number, rows: number[]): { hpp: Float64Array; wp: Float64Array } {
  const p = rows.length;
  const hpp = new Float64Array(p * p);
  const wp = new Float64Array(p * n);
  rows.forEach((r, i) => {
    rows.forEach((c, j) => (hpp[i * p + j] = hinv[r * m + c]));
    wp.set(w.subarray(r * n, r * n + n), i * n);
  });
  return { hpp, wp };
}

/**
 * The error added by each unit of a removed block given those before it: with the removed block
 * of the inverse covariance H_PP = L·Lᵀ, the error of removing its first r rows is
 * Σ_{i<r} ||(L⁻¹ W_P)_i||², so each unit adds the squared norms of its own rows. `sizes`: rows per
 * unit, in order. L and its inverse are made here (m is a block of units, a few hundred rows at
 * most); the product with W_P, m²n multiply-adds, by onnxruntime.
 */
async function nestedErrors(math: DenseMath, hpp: Float64Array, wp: Float64Array, m: number, n: number, sizes: number[]): Promise<Float64Array> {
  const l = new Float64Array(m * m);
  for (let i = 0; i < m; i++) {
    for (let j = 0; j <= i; j++) {
      let sum = hpp[i * m + j];
      for (let q = 0; q < j; q++) sum -= l[i * m + q] * l[j * m + q];
      if (i === j) {
        if (!(sum > 0)) return blockByUnit(hpp, wp, m, n, sizes);
        l[i * m + i] = Math.sqrt(sum);
      } else l[i * m + j] = sum / l[j * m + j];
    }
  }
  const v = await math.product(lowerInverse(l, m), wp, m, m, n);
  const out = new Float64Array(sizes.length);
  let row = 0;
  sizes.forEach((size, u) => {
    for (let r = 0; r < size; r++, row++) for (let o = 0; o < n; o++) out[u] += v[row * n + o] ** 2;
  });
  return out;
}

/** When rounding made the block not positive definite: each unit's error alone (its diagonal block). */
function blockByUnit(hpp: Float64Array, wp: Float64Array, m: number, n: number, sizes: number[]): Float64Array {
  const out = new Float64Array(sizes.length);
  let row = 0;
  sizes.forEach((size, u) => {
    for (let r = row; r < row + size; r++) {
      const d = hpp[r * m + r];
      if (d > 0) for (let o = 0; o < n; o++) out[u] += (wp[r * n + o] * wp[r * n + o]) / d;
    }
    row += size;
  });
  return out;
}

/**
 * The refit of a consumer's kept rows when `removed` (channel indices) go, with its damping:
 * W_k − Hinv_kP · (Hinv_PP)⁻¹ · W_P, and the bias change that keeps the output's mean,
 * b' − b = μᵀW − μ_kᵀW'_k. Undefined when the result is not finite, or when the inverse at that
 * damping is neither kept nor can be made.
 */
export async function refitConsumer(
  matrix: WeightMatrix,
  s: ChannelStats,
  removed: number[],
  damping: number,
  inverses: InverseCovariances,
): Promise<{ kept: number[]; weights: Float64Array; biasDelta: Float64Array } | undefined> {
  const [k, n] = [matrix.k, matrix.n];
  const gone = new Set(removed);
  const kept = [...Array(k).keys()].filter((j) => !gone.has(j));
  const w = matrix.dense();
  if (!inverses.has(s, damping)) return undefined;
  const weights = await inverses.math.refit(await inverses.of(s, damping), w, k, n, removed, kept);
  if (!weights.every(Number.isFinite)) return undefined;
  const mean = channelMean(s);
  // Row by row (the matrices are row-major): Σ_j μ_j W[j, o] − Σ_r μ_kept[r] W'[r, o].
  const biasDelta = new Float64Array(n);
  for (let j = 0; j < k; j++) {
    const [mu, at] = [mean[j], j * n];
    for (let o = 0; o < n; o++) biasDelta[o] += mu * w[at + o];
  }
  kept.forEach((j, r) => {
    const [mu, at] = [mean[j], r * n];
    for (let o = 0; o < n; o++) biasDelta[o] -= mu * weights[at + o];
  });
  return { kept, weights, biasDelta };
}
