import { onnx } from 'onnx-proto';
import { Analysis, Group } from '../graph/analysis';
import { Slot } from '../graph/atoms';
import { Node } from '../graph/graph';
import { WeightUse, ruleOf } from '../graph/rules';
import { OnnxModel } from '../onnx/model';
import { PassProgress } from '../util/progress';
import { Feeds, ort, sessionForProto } from '../onnx/runtime';
import { nodeOverAxes } from '../onnx/axes';
import { releaseGarbage } from '../util/gc';
import type { PassTap } from './types';

/**
 * A weight op that reads a group's channels: an op whose registry entry has a `weight` (MatMul,
 * Gemm, Conv, ConvTranspose), whose weight is a constant and whose contraction axis is in the group. Its input's statistics score the channels (FLAP:
 * Var(X_j)·||W_j||²) and its bias absorbs what removed channels contributed on average.
 */
export interface Consumer {
  node: Node;
  input: string;
  inputAxis: number;
  /** The input's rank and element type, as traced. */
  inputRank: number;
  inputType: string;
  inputSlot: Slot;
  weight: string;
  weightSlot: Slot;
  use: WeightUse;
}

/** The registry's WeightUse for this node, if it reads a weight in a way the registry knows. */
function weightUse(node: Node, inputRank: number, weightRank: number): WeightUse | undefined {
  return ruleOf(node)?.weight?.(node, inputRank, weightRank);
}

export function findConsumers(analysis: Analysis, group: Group): Consumer[] {
  const inGroup = new Set(group.slots.map((s) => s.id));
  const out: Consumer[] = [];
  for (const node of analysis.index.nodes) {
    const [x, w] = node.input;
    if (!w || !analysis.model.isConstant(w)) continue;
    const xr = analysis.traces[0].get(x)?.dims.length;
    const wr = analysis.model.constantInfo(w)?.dims.length;
    if (xr === undefined || wr === undefined) continue;
    const use = weightUse(node, xr, wr);
    if (!use) continue;
    const inputSlot = analysis.space.slot(x, use.inputAxis);
    const weightSlot = analysis.space.slot(w, use.weightIn);
    if (inputSlot && weightSlot && inGroup.has(inputSlot.id) && inGroup.has(weightSlot.id)) {
      out.push({ node, input: x, inputAxis: use.inputAxis, inputRank: xr, inputType: analysis.traces[0].get(x)!.type, inputSlot, weight: w, weightSlot, use });
    }
  }
  return out;
}

/** Per-channel running statistics of one tensor over the calibration set. */
export interface ChannelStats {
  /** Number of vectors seen (positions x samples). */
  count: number;
  sum: Float64Array;
  sumSquares: Float64Array;
  /**
   * Σ (x − μ)(x − μ)ᵀ over vectors, μ their mean (C x C, row-major, symmetric), when asked for
   * (least-squares reconstruction): each batch's rows are centered on the batch's own mean before
   * their product, and batches are merged by the parallel formula (mergeCentered). Float32, like
   * the activations it sums: centered, it needs no more digits, and a large layer's takes half
   * the memory. A raw Σ x xᵀ less μμᵀ did not: on BERT-base's FFN inputs deep in a search
   * (channels of mean 5 and variance 10⁻⁵) the difference came out indefinite, past any damping.
   */
  gram?: Float32Array;
  /**
   * The same sums over every other batch only (with gram), so reconstruction can fit on one
   * half and check on the other: how much damping the data needs (see obs.ts).
   */
  half?: { count: number; sum: Float64Array; gram: Float32Array };
}

export function channelMean(s: ChannelStats): Float64Array {
  return s.sum.map((v) => v / Math.max(1, s.count));
}

export function channelVariance(s: ChannelStats): Float64Array {
  return s.sumSquares.map((v, j) => Math.max(0, v / Math.max(1, s.count) - (s.sum[j] / Math.max(1, s.count)) ** 2));
}

export interface StatsRequest {
  tensor: string;
  axis: number;
  /** The tensor's rank and its channels (the size of `axis`), as traced. */
  rank: number;
  channels: number;
  /** Its element type as traced (onnxruntime's name: float32, float16, ...). */
  type: string;
  gram: boolean;
  /** With the gram, the sums of every other batch (what a damping is checked with: obs.ts). */
  half?: boolean;
}

/** What to collect for these consumers' inputs (with covariances for reconstruction). */
export function statsRequests(consumers: Consumer[], gram: boolean, half: (c: Consumer) => boolean = () => gram): StatsRequest[] {
  return consumers.map((c) => ({ tensor: c.input, axis: c.inputAxis, rank: c.inputRank, channels: c.inputSlot.size, type: c.inputType, gram, half: gram && half(c) }));
}

/** The tensors (and axes) requests read, in order: what names a pass in a record of passes. */
export function requestedTensors(requests: StatsRequest[]): string {
  return requests.map((r) => `${r.tensor}[${r.axis}]`).join(', ');
}

/** A statistics pass's results: per-channel sums, and the tensors kept whole (see collectStats). */
export interface CollectedStats {
  stats: Map<string, ChannelStats>;
  /** Each kept tensor's values, batch by batch (only tensors that fit whole). */
  rows: Map<string, Float32Array[]>;
}

/** Tensors kept whole (collectStats `keep`) hold at most this many bytes in all; past it, none is kept. */
const KEPT_MAX_BYTES = 256 * 2 ** 20;

/**
 * Runs the model over the calibration batches with the requested intermediate tensors reduced
 * to running sums per channel. Memory is the statistics plus one batch's activations, whatever
 * the number of samples. The tensors in `keep` (a normalization's input, which a refit of its
 * scale and bias reads whole: renorm.ts) are also kept as they are, while they fit in
 * KEPT_MAX_BYTES, so that no other pass needs to read them.
 */
export async function collectStats(
  model: OnnxModel,
  requests: StatsRequest[],
  calibration: () => AsyncIterable<Feeds> | Iterable<Feeds>,
  progress?: PassProgress,
  keep: string[] = [],
): Promise<CollectedStats> {
  const tap = new StatsTap(model, requests, keep);
  // No memory arena: a pass's outputs (a covariance per tensor) are copied out at once, and an
  // arena would keep their peak for the session's life.
  const session = await sessionForProto(tap.model, tap.model.proto, { enableCpuMemArena: false });
  try {
    for await (const feeds of calibration()) {
      await runFolding(session, feeds, tap, []);
      progress?.tick();
    }
    return tap.collected();
  } finally {
    await session.release();
  }
}

/**
 * A copy of a model that also reduces the requested tensors to their per-channel sums (and
 * Σ x xᵀ, a matrix product onnxruntime does far faster than a loop here), so that only C or
 * C x C numbers per tensor leave onnxruntime for each batch, and keeps the `keep` tensors whole:
 * run by a statistics pass, or riding along another pass over the same model (the confirmation
 * of the candidate the next step will prune). `add` folds one batch's outputs in.
 */
export class StatsTap {
  readonly model: OnnxModel;
  /** The outputs to fetch from each run, besides the model's own. */
  readonly outputs: string[];
  private readonly stats = new Map<string, ChannelStats>();
  private readonly rows = new Map<string, Float32Array[]>();
  private readonly wanted = new Map<string, StatsRequest>();
  private readonly sums = new Map<string, SumOutputs>();
  private keptBytes = 0;
  private batches = 0;

  constructor(
    source: OnnxModel,
    requests: StatsRequest[],
    private readonly keep: string[] = [],
  ) {
    for (const r of requests) {
      const prev = this.wanted.get(r.tensor);
      this.wanted.set(r.tensor, { ...r, gram: r.gram || !!prev?.gram, half: !!r.half || !!prev?.half });
    }
    this.model = source.clone();
    const graph = this.model.graph as onnx.GraphProto;
    let k = 0;
    for (const r of this.wanted.values()) this.sums.set(r.tensor, addSums(graph, r, `prune_gate_stats_${k++}`, source.defaultOpset ?? 13));
    const listed = new Set(graph.output.map((o) => o.name));
    const names = [...[...this.sums.values()].flatMap(outputNames), ...keep.filter((t) => !listed.has(t))];
    graph.output.push(...names.map((name) => onnx.ValueInfoProto.create({ name })));
    this.outputs = [...[...this.sums.values()].flatMap(outputNames), ...keep];
  }

  add(result: Record<string, ort.Tensor>): void {
    const odd = this.batches++ % 2 === 1;
    for (const [name, req] of this.wanted) accumulate(this.stats, name, req, this.sums.get(name)!, result, odd);
    for (const name of this.keep) {
      if (this.keptBytes < 0) break;
      if (result[name].type !== 'float32') continue; // read again by a pass of its own
      const data = Float32Array.from(result[name].data as Float32Array);
      this.keptBytes += data.byteLength;
      if (this.keptBytes > KEPT_MAX_BYTES) {
        this.rows.clear();
        this.keptBytes = -1;
        break;
      }
      this.rows.set(name, [...(this.rows.get(name) ?? []), data]);
    }
  }

  collected(): CollectedStats {
    return { stats: this.stats, rows: this.rows };
  }
}

/**
 * One run of `tap.model`'s session that folds the tap's outputs in and gives back the model's
 * own (`own`). The tap's outputs, a covariance per tensor it reads, are garbage once folded, and
 * collected as soon as the run that made them has returned (util/gc.ts), not beside the next
 * batch's (484 MB a batch on BERT-base).
 */
export async function runFolding(session: ort.InferenceSession, feeds: Feeds, tap: PassTap, own: string[]): Promise<Record<string, ort.Tensor>> {
  const { kept, folded } = await fold(session, feeds, tap, own);
  releaseGarbage(folded);
  return kept;
}

async function fold(session: ort.InferenceSession, feeds: Feeds, tap: PassTap, own: string[]): Promise<{ kept: Record<string, ort.Tensor>; folded: number }> {
  const result = await session.run(feeds, [...own, ...tap.outputs]);
  tap.add(result);
  const folded = tap.outputs.reduce((n, name) => n + ((result[name]?.data as ArrayBufferView | undefined)?.byteLength ?? 0), 0);
  return { kept: Object.fromEntries(own.map((name) => [name, result[name]])), folded };
}

/** A session over a copy of the model whose outputs include these intermediate tensors. */
export async function sessionExposing(model: OnnxModel, names: string[]): Promise<ort.InferenceSession> {
  const proto = model.clone().proto;
  const graph = proto.graph as onnx.GraphProto;
  const outputs = new Set(graph.output.map((o) => o.name));
  for (const name of names) if (!outputs.has(name)) graph.output.push(onnx.ValueInfoProto.create({ name }));
  return sessionForProto(model, proto);
}

/** The graph outputs that carry one request's sums for a batch. */
interface SumOutputs {
  count: string;
  sum: string;
  sumSquares: string;
  /** The batch's centered Σ x xᵀ by blocks: the blocks on and above the diagonal (the others are their transposes). */
  gram?: GramBlock[];
}

/** The block of Σ x xᵀ in rows [row, row + rows) and columns [col, col + cols), as output `name`. */
interface GramBlock {
  name: string;
  row: number;
  rows: number;
  col: number;
  cols: number;
}

/** The names of a request's outputs. */
const outputNames = (o: SumOutputs): string[] => [o.count, o.sum, o.sumSquares, ...(o.gram ?? []).map((b) => b.name)];

/**
 * Channels per block of Σ x xᵀ. The covariance is symmetric, so only the blocks on and above the
 * diagonal are computed: with k blocks a side, (k + 1) / 2k of the multiply-adds, 62 % for
 * BERT-base's 3072-wide FFN inputs, whose covariances cost more than the model's own forward
 * pass. A block of 768 rows by thousands of samples keeps onnxruntime's GEMM at full speed
 * (docs/measured.md, "What a gate costs").
 */
const GRAM_BLOCK = 768;

/** Nodes that reduce `r.tensor` to its per-channel sums, named from `prefix`. */
function addSums(graph: onnx.GraphProto, r: StatsRequest, prefix: string, opset: number): SumOutputs {
  const int64s = (name: string, values: number[]) =>
    graph.initializer.push(onnx.TensorProto.create({ name, dataType: onnx.TensorProto.DataType.INT64, dims: [values.length], int64Data: values }));
  const node = (opType: string, input: string[], output: string, attribute: onnx.IAttributeProto[] = []) =>
    graph.node.push(onnx.NodeProto.create({ opType, name: output, input, output: [output], attribute }));
  const ints = (name: string, values: number[]) => onnx.AttributeProto.create({ name, type: onnx.AttributeProto.AttributeType.INTS, ints: values });
  const int = (name: string, i: number) => onnx.AttributeProto.create({ name, type: onnx.AttributeProto.AttributeType.INT, i });
  let x = r.tensor;
  if (r.axis !== r.rank - 1) {
    // The channel axis last, so that every vector is a row.
    const perm = [...Array(r.rank).keys()].filter((a) => a !== r.axis);
    node('Transpose', [x], `${prefix}_last`, [ints('perm', [...perm, r.axis])]);
    x = `${prefix}_last`;
  }
  int64s(`${prefix}_shape`, [-1, r.channels]);
  node('Reshape', [x, `${prefix}_shape`], `${prefix}_rows`);
  x = `${prefix}_rows`;
  if (r.type !== 'float32') {
    node('Cast', [x], `${prefix}_float`, [int('to', onnx.TensorProto.DataType.FLOAT)]);
    x = `${prefix}_float`;
  }
  graph.node.push(nodeOverAxes('ReduceSum', x, `${prefix}_sum`, [0], opset, graph.initializer, [int('keepdims', 0)]));
  node('Mul', [x, x], `${prefix}_squares`);
  graph.node.push(nodeOverAxes('ReduceSum', `${prefix}_squares`, `${prefix}_sumsq`, [0], opset, graph.initializer, [int('keepdims', 0)]));
  node('Shape', [x], `${prefix}_count`);
  const out: SumOutputs = { count: `${prefix}_count`, sum: `${prefix}_sum`, sumSquares: `${prefix}_sumsq` };
  if (r.gram) {
    // The rows centered on the batch's mean: the products are of deviations, not of raw values.
    graph.node.push(nodeOverAxes('ReduceMean', x, `${prefix}_mean`, [0], opset, graph.initializer, [int('keepdims', 1)]));
    node('Sub', [x, `${prefix}_mean`], `${prefix}_centered`);
    x = `${prefix}_centered`;
    const k = Math.ceil(r.channels / GRAM_BLOCK);
    const size = Math.ceil(r.channels / k);
    const bounds = [...Array(k).keys()].map((i) => [i * size, Math.min(r.channels, (i + 1) * size)]);
    const columns = bounds.map(([start, end], i) => {
      if (k === 1) return x;
      const name = `${prefix}_columns_${i}`;
      if (opset >= 10) {
        int64s(`${name}_starts`, [start]);
        int64s(`${name}_ends`, [end]);
        int64s(`${name}_axes`, [1]);
        node('Slice', [x, `${name}_starts`, `${name}_ends`, `${name}_axes`], name);
      } else node('Slice', [x], name, [ints('starts', [start]), ints('ends', [end]), ints('axes', [1])]);
      return name;
    });
    out.gram = [];
    for (let i = 0; i < k; i++) {
      for (let j = i; j < k; j++) {
        const name = k === 1 ? `${prefix}_gram` : `${prefix}_gram_${i}_${j}`;
        // Gemm with transA: xᵢᵀ xⱼ without a transposed copy of the activations.
        node('Gemm', [columns[i], columns[j]], name, [int('transA', 1)]);
        out.gram.push({ name, row: bounds[i][0], rows: bounds[i][1] - bounds[i][0], col: bounds[j][0], cols: bounds[j][1] - bounds[j][0] });
      }
    }
  }
  return out;
}

/** Adds each block of a batch's centered Σ x xᵀ into `gram` (c x c), and its transpose below the diagonal. */
function addGram(gram: Float32Array, c: number, blocks: GramBlock[], result: Record<string, ort.Tensor>): void {
  for (const b of blocks) {
    const g = result[b.name].data as Float32Array;
    for (let i = 0; i < b.rows; i++) {
      const at = (b.row + i) * c + b.col;
      for (let j = 0; j < b.cols; j++) gram[at + j] += g[i * b.cols + j];
    }
    if (b.row === b.col) continue;
    // The transposed block, in tiles: a plain loop would write one row of the gram per element.
    for (let i0 = 0; i0 < b.rows; i0 += TILE) {
      for (let j0 = 0; j0 < b.cols; j0 += TILE) {
        const [i1, j1] = [Math.min(b.rows, i0 + TILE), Math.min(b.cols, j0 + TILE)];
        for (let j = j0; j < j1; j++) {
          const at = (b.col + j) * c + b.row;
          for (let i = i0; i < i1; i++) gram[at + i] += g[i * b.cols + j];
        }
      }
    }
  }
}

/** Rows and columns of the tiles a transposed block is added in. */
const TILE = 32;

function accumulate(stats: Map<string, ChannelStats>, name: string, req: StatsRequest, out: SumOutputs, result: Record<string, ort.Tensor>, odd: boolean): void {
  const c = req.channels;
  let s = stats.get(name);
  if (!s) {
    s = { count: 0, sum: new Float64Array(c), sumSquares: new Float64Array(c) };
    if (req.gram) s.gram = new Float32Array(c * c);
    if (req.gram && req.half) s.half = { count: 0, sum: new Float64Array(c), gram: new Float32Array(c * c) };
    stats.set(name, s);
  }
  const rows = Number((result[out.count].data as BigInt64Array)[0]);
  const sum = result[out.sum].data as Float32Array;
  const sq = result[out.sumSquares].data as Float32Array;
  if (s.gram && out.gram) {
    // Before the sums take the batch in: the merge reads the mean of the batches before it.
    mergeCentered(s.gram, s.count, s.sum, rows, sum);
    addGram(s.gram, c, out.gram, result);
    // Every other batch also into the half's sums.
    const half = odd ? s.half : undefined;
    if (half) {
      mergeCentered(half.gram, half.count, half.sum, rows, sum);
      addGram(half.gram, c, out.gram, result);
      for (let j = 0; j < c; j++) half.sum[j] += sum[j];
      half.count += rows;
    }
  }
  for (let j = 0; j < c; j++) {
    s.sum[j] += sum[j];
    s.sumSquares[j] += sq[j];
  }
  s.count += rows;
}

/**
 * The parallel formula's cross term (Chan, Golub and LeVeque): two sets' centered sums of
 * products, merged, are their sum plus nₐn_b/(nₐ + n_b)·δδᵀ, δ the difference of their means.
 * Adds that term (`sign` -1: takes it out, splitting a merge) to `gram` for a set of `count`
 * vectors summing to `sum` and a batch of `rows` summing to `batchSum`; the caller adds (or
 * takes out) the batch's own centered gram.
 */
export function mergeCentered(gram: Float32Array, count: number, sum: ArrayLike<number>, rows: number, batchSum: ArrayLike<number>, sign: 1 | -1 = 1): void {
  if (count === 0 || rows === 0) return;
  const c = sum.length;
  const delta = new Float64Array(c);
  for (let j = 0; j < c; j++) delta[j] = batchSum[j] / rows - sum[j] / count;
  const f = (sign * count * rows) / (count + rows);
  for (let i = 0; i < c; i++) {
    const [di, at] = [f * delta[i], i * c];
    if (di !== 0) for (let j = 0; j < c; j++) gram[at + j] += di * delta[j];
  }
}
