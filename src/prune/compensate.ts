import { onnx } from 'onnx-proto';
import { Analysis, Group } from '../graph/analysis';
import { OnnxModel } from '../onnx/model';
import { fromFloat32, toFloat32 } from '../onnx/tensor';
import { DEFAULT_DAMPING, Dampings, InverseCovariances, WeightMatrix, chooseDamping, consumerKey, dampingOf, refitConsumer } from './obs';
import { Removal } from './plan';
import { ChannelStats, Consumer, channelMean } from './stats';
import { CompensationChoice } from './types';

/** How one consumer is repaired: its kept rows refit (with the damping), or not; the change of its bias. */
export interface ConsumerEdit {
  consumer: Consumer;
  /** Its input channels that go. */
  removed: number[];
  refit?: { kept: number[]; weights: Float64Array };
  biasDelta: Float64Array;
}

/** What compensation does to a model about to be sliced: computed once, applied to each copy. */
export interface CompensationEdits {
  edits: ConsumerEdit[];
  /** What happened that a user should know (a refit that could not be made, say). */
  notes: string[];
}

/**
 * How the consumers of removed channels are repaired (docs/pruning.md, "Compensation"):
 * bias: b += W[removed, :]ᵀ · mean(X[removed]) — FLAP's compensation, what the removed channels
 *   contributed on average;
 * reconstruct: the kept rows are refit by least squares to what the full layer computed on the
 *   calibration activations, damped toward the weight as it is (the Optimal-Brain-Surgeon
 *   update W_k − Hinv_kP · (Hinv_PP)⁻¹ · W_P), and the bias takes the rest of the mean,
 *   b' = b + μᵀW − μ_kᵀW'_k; the damping is each consumer's from `dampings`, else checked on
 *   calibration batches the fit did not see (obs.ts);
 * auto: as reconstruct, where that check may also find that no refit (bias) predicts best.
 * A refit needs the input covariance, a pointwise weight (MatMul, Gemm, 1x1 Conv) that no
 * other op shares; other consumers get the bias. `consumers` are each group's weight ops, as
 * findConsumers found them on the analysed graph.
 */
export async function compensation(
  analysis: Analysis,
  removals: Removal[],
  consumers: ReadonlyMap<Group, Consumer[]>,
  stats: Map<string, ChannelStats>,
  mode: CompensationChoice,
  dampings: Dampings,
  inverses: InverseCovariances,
): Promise<CompensationEdits> {
  const notes: string[] = [];
  const edits: ConsumerEdit[] = [];
  if (mode === 'none') return { edits, notes };
  for (const removal of removals) {
    for (const c of consumers.get(removal.group) ?? []) {
      const s = stats.get(c.input);
      const wt = analysis.model.constant(c.weight);
      if (!s || !wt) continue;
      const gone = new Set<number>();
      for (const u of removal.units) for (const j of u.indices.get(c.inputSlot.id) ?? []) gone.add(j);
      if (gone.size === 0) continue;
      const removed = [...gone].sort((a, b) => a - b);
      const matrix = new WeightMatrix(wt.dims, toFloat32(wt), c.use);
      const shared = analysis.index.consumersOf(c.weight).length > 1;
      let damping: number | null = null;
      if ((mode === 'reconstruct' || mode === 'auto') && !shared && inverses.has(s, dampings.get(consumerKey(c)) ?? DEFAULT_DAMPING) && matrix.pointwise) {
        damping = await dampingOf(dampings, c, matrix.k, matrix.n, s.count, () => chooseDamping(s, matrix.dense(), matrix.k, matrix.n, removed, mode === 'auto', inverses.math));
      }
      if (damping !== null) {
        const refit = await refitConsumer(matrix, s, removed, damping, inverses);
        if (refit) {
          edits.push({ consumer: c, removed, refit: { kept: refit.kept, weights: refit.weights }, biasDelta: refit.biasDelta });
          continue;
        }
        notes.push(`${c.node.name}: the least-squares refit was not finite; bias compensation only`);
      }
      const mean = channelMean(s);
      const delta = new Float64Array(matrix.n);
      for (const j of removed) for (let o = 0; o < matrix.n; o++) delta[o] += mean[j] * matrix.get(j, o);
      edits.push({ consumer: c, removed, biasDelta: delta });
    }
  }
  return { edits, notes };
}

/** Writes the refit weights and bias changes into `copy` (a clone of the analysed model, about to be sliced). */
export function applyCompensation(copy: OnnxModel, analysis: Analysis, edits: ConsumerEdit[]): void {
  // Consumers were found on the analysed graph; edit the same nodes of the copy.
  const copyOf = new Map(analysis.model.graph.node.map((n, i) => [n, copy.graph.node[i] as Consumer['node']]));
  const unique = copy.uniqueNames();
  for (const e of edits) {
    const c = { ...e.consumer, node: copyOf.get(e.consumer.node)! };
    const wt = analysis.model.constant(c.weight)!;
    if (e.refit) {
      const matrix = new WeightMatrix(wt.dims, toFloat32(wt), c.use);
      const { kept, weights } = e.refit;
      kept.forEach((j, r) => {
        for (let o = 0; o < matrix.n; o++) matrix.set(j, o, weights[r * matrix.n + o]);
      });
      copy.setConstant(c.weight, fromFloat32(matrix.data, wt.dtype, wt.dims));
    }
    addToBias(copy, c, e.biasDelta, wt.dtype, unique);
  }
}

/**
 * The change an edit makes to its consumer's weight, in the weight's own layout: the removed
 * input channels' weights negated (every tap of a kernel), the refit rows' differences.
 */
export function weightChange(analysis: Analysis, e: ConsumerEdit): { data: Float32Array; dims: number[]; dtype: number } {
  const wt = analysis.model.constant(e.consumer.weight)!;
  const before = toFloat32(wt);
  const change = new Float32Array(before.length);
  const use = e.consumer.use;
  const dims = wt.dims;
  const strides = dims.map((_, a) => dims.slice(a + 1).reduce((x, y) => x * y, 1));
  const gone = new Set(e.removed);
  // Every element whose input-channel index is removed.
  for (let i = 0; i < before.length; i++) {
    const j = Math.floor(i / strides[use.weightIn]) % dims[use.weightIn];
    if (gone.has(j)) change[i] = -before[i];
  }
  if (e.refit) {
    const n = dims[use.weightOut];
    e.refit.kept.forEach((j, r) => {
      for (let o = 0; o < n; o++) {
        const at = j * strides[use.weightIn] + o * strides[use.weightOut];
        change[at] = e.refit!.weights[r * n + o] - before[at];
      }
    });
  }
  return { data: change, dims, dtype: wt.dtype };
}

/**
 * Adds `delta` to the consumer's bias: its bias input (Conv, Gemm), or the Add that follows a
 * MatMul; creates the bias when the layer has none (LLaMA has no biases).
 */
function addToBias(model: OnnxModel, c: Consumer, delta: Float64Array, dtype: number, unique: (base: string) => string): void {
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
    const name = unique(`${node.name || node.output[0]}_bias`);
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
  const biasName = unique(`${node.name || out}_bias`);
  const before = unique(`${out}_before_bias`);
  model.addInitializer(biasName, biasTensor());
  node.output[0] = before;
  const at = graph.node.indexOf(node);
  graph.node.splice(at + 1, 0, onnx.NodeProto.create({ opType: 'Add', name: `${node.name}_bias_add`, input: [before, biasName], output: [out] }));
}
