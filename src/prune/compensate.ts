import { onnx } from 'onnx-proto';
import { Analysis, Group } from '../graph/analysis';
import type { WeightUse } from '../graph/rules';
import { OnnxModel } from '../onnx/model';
import { fromFloat32, toFloat32 } from '../onnx/tensor';
import { Removal } from './plan';
import { ChannelStats, Consumer, channelMean, symmetricGram } from './stats';
import { Compensation } from './types';

/**
 * A consumer's weight seen as a matrix M[j, o]: j the input channel (the pruned axis), o the
 * output, in whatever layout the op keeps them (WeightUse). A convolution's kernel is summed over
 * its window for the bias (exact for 1x1, the mean effect away from the borders otherwise), and
 * divided by the taps an output receives on average (a ConvTranspose's strides).
 */
class WeightMatrix {
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

  /** Window 1 only (checked by the caller through `pointwise`). */
  set(j: number, o: number, v: number): void {
    this.data[j * this.strideIn + o * this.strideOut] = v;
  }

  get pointwise(): boolean {
    return this.window === 1 && this.taps === 1;
  }
}

/**
 * Edits the consumers of removed channels in `model` (a copy about to be sliced):
 * bias: b += W[removed, :]ᵀ · mean(X[removed]) — FLAP's compensation, what the removed channels
 *   contributed on average;
 * reconstruct: the kept rows are refit by ridge least squares to what the full layer computed on
 *   the calibration activations: W'_k = (Cov_kk + λI)⁻¹ Cov_k· W, and the bias takes the rest
 *   of the mean, b' = b + μᵀW − μ_kᵀW'_k.
 * `consumers` are each group's weight ops, as findConsumers found them on the analysed graph.
 */
export function compensate(
  model: OnnxModel,
  analysis: Analysis,
  removals: Removal[],
  consumers: ReadonlyMap<Group, Consumer[]>,
  stats: Map<string, ChannelStats>,
  mode: Compensation,
): string[] {
  const notes: string[] = [];
  if (mode === 'none') return notes;
  // Consumers were found on the analysed graph; edit the same nodes of the copy.
  const copyOf = new Map(analysis.model.graph.node.map((n, i) => [n, model.graph.node[i] as Consumer['node']]));
  for (const removal of removals) {
    for (const found of consumers.get(removal.group) ?? []) {
      const c = { ...found, node: copyOf.get(found.node)! };
      const s = stats.get(c.input);
      if (!s) continue;
      const removed = new Set<number>();
      for (const u of removal.units) for (const j of u.indices.get(c.inputSlot.id) ?? []) removed.add(j);
      if (removed.size === 0) continue;
      const shared = analysis.index.consumersOf(c.weight).length > 1;
      compensateConsumer(model, c, s, removed, mode === 'reconstruct' && !shared && !!s.gram, notes);
    }
  }
  return notes;
}

function compensateConsumer(
  model: OnnxModel,
  c: Consumer,
  s: ChannelStats,
  removed: Set<number>,
  reconstruct: boolean,
  notes: string[],
): void {
  const wt = model.constant(c.weight)!;
  const w = new WeightMatrix(wt.dims, toFloat32(wt), c.use);
  const mean = channelMean(s);
  const delta = new Float64Array(w.n);
  if (reconstruct && w.pointwise) {
    const kept: number[] = [];
    for (let j = 0; j < w.k; j++) if (!removed.has(j)) kept.push(j);
    const refit = ridgeRefit(w, s, kept);
    if (refit) {
      // b' - b = μᵀW − μ_kᵀW'_k, with W the original weight.
      for (let o = 0; o < w.n; o++) {
        let before = 0;
        for (let j = 0; j < w.k; j++) before += mean[j] * w.get(j, o);
        let after = 0;
        kept.forEach((j, r) => (after += mean[j] * refit[r * w.n + o]));
        delta[o] = before - after;
      }
      kept.forEach((j, r) => {
        for (let o = 0; o < w.n; o++) w.set(j, o, refit[r * w.n + o]);
      });
      model.setConstant(c.weight, fromFloat32(w.data, wt.dtype, wt.dims));
    } else notes.push(`${c.node.name}: least squares was ill-conditioned; bias compensation only`);
  }
  if (!reconstruct || !w.pointwise || delta.every((d) => d === 0)) {
    for (const j of removed) for (let o = 0; o < w.n; o++) delta[o] += mean[j] * w.get(j, o);
  }
  addToBias(model, c, delta, wt.dtype);
}

/** Damping tried, relative to the kept channels' mean variance; the default when it cannot be checked. */
const DAMPINGS = [1e-8, 1e-6, 1e-4, 1e-2, 1e-1];
const DEFAULT_DAMPING = 1e-2;
/** Above this many multiply-adds (K² x N per damping), the damping is not checked (large layers). */
const CHECK_MAX_WORK = 2e8;

/** Centered covariance (K x K) of a set of vectors from its sums. */
function covariance(count: number, sum: Float64Array, gram: Float64Array): Float64Array {
  const k = sum.length;
  const g = symmetricGram({ sum, gram });
  const out = new Float64Array(k * k);
  for (let i = 0; i < k; i++) for (let j = 0; j < k; j++) out[i * k + j] = g[i * k + j] / count - (sum[i] / count) * (sum[j] / count);
  return out;
}

/** Solves (C_kk + λI) W'_k = C_k· W for the kept rows, λ = damping × C_kk's mean diagonal. */
function solveRidge(w: WeightMatrix, cov: Float64Array, kept: number[], damping: number): Float64Array | undefined {
  const k = w.k;
  const m = kept.length;
  const a = new Float64Array(m * m);
  let trace = 0;
  for (let r = 0; r < m; r++) for (let q = 0; q < m; q++) a[r * m + q] = cov[kept[r] * k + kept[q]];
  for (let r = 0; r < m; r++) trace += a[r * m + r];
  const lambda = damping * (trace / m) + 1e-12;
  for (let r = 0; r < m; r++) a[r * m + r] += lambda;
  // Right-hand side: C_k· W  (m x N).
  const b = new Float64Array(m * w.n);
  const col = new Float64Array(k);
  for (let o = 0; o < w.n; o++) {
    for (let j = 0; j < k; j++) col[j] = w.get(j, o);
    for (let r = 0; r < m; r++) {
      let acc = 0;
      const row = kept[r] * k;
      for (let j = 0; j < k; j++) acc += cov[row + j] * col[j];
      b[r * w.n + o] = acc;
    }
  }
  return choleskySolve(a, m, b, w.n);
}

/** Σ over outputs of E[((x − μ)·W − (x_k − μ_k)·W'_k)²] under covariance `cov`. */
function refitError(w: WeightMatrix, cov: Float64Array, kept: number[], refit: Float64Array): number {
  const k = w.k;
  const m = kept.length;
  // d = W − [W'_k placed at the kept rows]: the error of an output is dᵀ C d.
  const d = new Float64Array(k);
  let err = 0;
  for (let o = 0; o < w.n; o++) {
    for (let j = 0; j < k; j++) d[j] = w.get(j, o);
    for (let r = 0; r < m; r++) d[kept[r]] -= refit[r * w.n + o];
    for (let i = 0; i < k; i++) {
      if (d[i] === 0) continue;
      let acc = 0;
      for (let j = 0; j < k; j++) acc += cov[i * k + j] * d[j];
      err += d[i] * acc;
    }
  }
  return err;
}

/**
 * The least-squares refit of the kept rows. The damping is the one whose fit on every other
 * calibration batch best predicts the layer's output on the remaining batches (data that pins
 * the weights down, such as removed channels that are combinations of kept ones, takes almost
 * none; a few samples take more); then the fit is redone on all of them. Undefined if the
 * system is not positive definite.
 */
function ridgeRefit(w: WeightMatrix, s: ChannelStats, kept: number[]): Float64Array | undefined {
  const full = covariance(s.count, s.sum, s.gram!);
  const h = s.half;
  let damping = DEFAULT_DAMPING;
  if (h && h.count > 0 && h.count < s.count && w.k * w.k * w.n * DAMPINGS.length <= CHECK_MAX_WORK) {
    const rest = { count: s.count - h.count, sum: s.sum.map((v, i) => v - h.sum[i]), gram: s.gram!.map((v, i) => v - h.gram[i]) };
    const [fitOn, checkOn] = [covariance(rest.count, rest.sum, rest.gram), covariance(h.count, h.sum, h.gram)];
    let best = Infinity;
    for (const d of DAMPINGS) {
      const refit = solveRidge(w, fitOn, kept, d);
      const err = refit ? refitError(w, checkOn, kept, refit) : Infinity;
      if (err < best) [best, damping] = [err, d];
    }
  }
  return solveRidge(w, full, kept, damping);
}

/** Solves A X = B for symmetric positive definite A (m x m), B (m x n); undefined if A is not. */
export function choleskySolve(a: Float64Array, m: number, b: Float64Array, n: number): Float64Array | undefined {
  const l = new Float64Array(m * m);
  for (let i = 0; i < m; i++) {
    for (let j = 0; j <= i; j++) {
      let sum = a[i * m + j];
      for (let k = 0; k < j; k++) sum -= l[i * m + k] * l[j * m + k];
      if (i === j) {
        if (!(sum > 0)) return undefined;
        l[i * m + i] = Math.sqrt(sum);
      } else l[i * m + j] = sum / l[j * m + j];
    }
  }
  const x = Float64Array.from(b);
  for (let c = 0; c < n; c++) {
    for (let i = 0; i < m; i++) {
      let sum = x[i * n + c];
      for (let k = 0; k < i; k++) sum -= l[i * m + k] * x[k * n + c];
      x[i * n + c] = sum / l[i * m + i];
    }
    for (let i = m - 1; i >= 0; i--) {
      let sum = x[i * n + c];
      for (let k = i + 1; k < m; k++) sum -= l[k * m + i] * x[k * n + c];
      x[i * n + c] = sum / l[i * m + i];
    }
  }
  return x;
}

/**
 * Adds `delta` to the consumer's bias: its bias input (Conv, Gemm), or the Add that follows a
 * MatMul; creates the bias when the layer has none (LLaMA has no biases).
 */
function addToBias(model: OnnxModel, c: Consumer, delta: Float64Array, dtype: number): void {
  const node = c.node;
  const scale = c.use.biasScale ?? 1;
  const add = (name: string) => {
    const t = model.constant(name)!;
    const v = Float32Array.from(toFloat32(t));
    if (v.length !== delta.length) return false;
    for (let o = 0; o < v.length; o++) v[o] += delta[o] * scale;
    model.setConstant(name, fromFloat32(v, t.dtype, t.dims));
    return true;
  };
  const biasTensor = () => fromFloat32(Array.from(delta, (d) => d * scale), dtype, [delta.length]);
  const biasAt = c.use.biasInput;
  if (biasAt !== undefined) {
    const bias = node.input[biasAt];
    if (bias && model.isConstant(bias) && add(bias)) return;
    if (bias) return; // a computed bias: leave it
    const name = model.uniqueName(`${node.name || node.output[0]}_bias`);
    model.addInitializer(name, biasTensor());
    while (node.input.length < biasAt) node.input.push('');
    node.input[biasAt] = name;
    return;
  }
  // MatMul: the bias is the constant operand of the Add that alone consumes its output.
  const out = node.output[0];
  const users = model.graph.node.filter((n) => n.input?.includes(out));
  if (users.length === 1 && users[0].opType === 'Add') {
    const other = users[0].input!.find((i) => i !== out)!;
    if (model.isConstant(other) && model.constantInfo(other)!.dims.reduce((a, b) => a * b, 1) === delta.length) {
      if (add(other)) return;
    }
  }
  const graph = model.graph;
  const biasName = model.uniqueName(`${node.name || out}_bias`);
  const before = model.uniqueName(`${out}_before_bias`);
  model.addInitializer(biasName, biasTensor());
  node.output[0] = before;
  const at = graph.node.indexOf(node);
  graph.node.splice(at + 1, 0, onnx.NodeProto.create({ opType: 'Add', name: `${node.name}_bias_add`, input: [before, biasName], output: [out] }));
}
