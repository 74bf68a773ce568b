import { onnx } from 'onnx-proto';
import { Analysis, Group } from '../graph/analysis';
import { Slot } from '../graph/atoms';
import { Node } from '../graph/graph';
import { WeightUse, ruleOf } from '../graph/rules';
import { OnnxModel } from '../onnx/model';
import { PassProgress } from '../util/progress';
import { Feeds, ort, sessionForProto } from '../onnx/runtime';

/**
 * A weight op that reads a group's channels: an op whose registry entry has a `weight` (MatMul,
 * Gemm, Conv, ConvTranspose), whose weight is a constant and whose contraction axis is in the group. Its input's statistics score the channels (FLAP:
 * Var(X_j)·||W_j||²) and its bias absorbs what removed channels contributed on average.
 */
export interface Consumer {
  node: Node;
  input: string;
  inputAxis: number;
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
      out.push({ node, input: x, inputAxis: use.inputAxis, inputSlot, weight: w, weightSlot, use });
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
  /** Σ x xᵀ over vectors (C x C, row-major), when asked for (least-squares reconstruction). */
  gram?: Float64Array;
  /**
   * The same sums over every other batch only (with gram), so reconstruction can fit on one
   * half and check on the other: how much damping the data needs (see compensate.ts).
   */
  half?: { count: number; sum: Float64Array; gram: Float64Array };
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
  gram: boolean;
}

/** What to collect for these consumers' inputs (with covariances for reconstruction). */
export function statsRequests(consumers: Consumer[], gram: boolean): StatsRequest[] {
  return consumers.map((c) => ({ tensor: c.input, axis: c.inputAxis, gram }));
}

/** The tensors (and axes) requests read, in order: what names a pass in a record of passes. */
export function requestedTensors(requests: StatsRequest[]): string {
  return requests.map((r) => `${r.tensor}[${r.axis}]`).join(', ');
}

/**
 * Runs the model over the calibration batches with the requested intermediate tensors added as
 * outputs and folds each batch into running sums per channel. Memory is the statistics plus one
 * batch's activations, whatever the number of samples.
 */
export async function collectStats(
  model: OnnxModel,
  requests: StatsRequest[],
  calibration: () => AsyncIterable<Feeds> | Iterable<Feeds>,
  progress?: PassProgress,
): Promise<Map<string, ChannelStats>> {
  const collector = await StatsCollector.create(model, requests);
  try {
    for await (const feeds of calibration()) {
      await collector.add(feeds);
      progress?.tick();
    }
    return collector.stats;
  } finally {
    await collector.release();
  }
}

/** A session over a copy of the model whose outputs include these intermediate tensors. */
export async function sessionExposing(model: OnnxModel, names: string[]): Promise<ort.InferenceSession> {
  const proto = model.clone().proto;
  const graph = proto.graph as onnx.GraphProto;
  const outputs = new Set(graph.output.map((o) => o.name));
  for (const name of names) if (!outputs.has(name)) graph.output.push(onnx.ValueInfoProto.create({ name }));
  return sessionForProto(model, proto);
}

/** One session over the model with the requested tensors exposed, fed batch by batch. */
export class StatsCollector {
  readonly stats = new Map<string, ChannelStats>();

  private constructor(
    private readonly session: ort.InferenceSession,
    private readonly wanted: Map<string, StatsRequest>,
  ) {}

  static async create(model: OnnxModel, requests: StatsRequest[]): Promise<StatsCollector> {
    const wanted = new Map<string, StatsRequest>();
    for (const r of requests) {
      const prev = wanted.get(r.tensor);
      wanted.set(r.tensor, { ...r, gram: r.gram || !!prev?.gram });
    }
    return new StatsCollector(await sessionExposing(model, [...wanted.keys()]), wanted);
  }

  private batches = 0;

  async add(feeds: Feeds): Promise<void> {
    const result = await this.session.run(feeds, [...this.wanted.keys()]);
    const odd = this.batches++ % 2 === 1;
    for (const [name, req] of this.wanted) accumulate(this.stats, name, req, result[name], odd);
  }

  release(): Promise<void> {
    return this.session.release();
  }
}

function accumulate(stats: Map<string, ChannelStats>, name: string, req: StatsRequest, t: ort.Tensor, odd: boolean): void {
  const dims = t.dims;
  const data = t.data as Float32Array;
  const c = dims[req.axis];
  const inner = dims.slice(req.axis + 1).reduce((a, b) => a * b, 1);
  const outer = dims.slice(0, req.axis).reduce((a, b) => a * b, 1);
  let s = stats.get(name);
  if (!s) {
    s = { count: 0, sum: new Float64Array(c), sumSquares: new Float64Array(c) };
    if (req.gram) {
      s.gram = new Float64Array(c * c);
      s.half = { count: 0, sum: new Float64Array(c), gram: new Float64Array(c * c) };
    }
    stats.set(name, s);
  }
  for (let o = 0; o < outer; o++) {
    const base = o * c * inner;
    for (let j = 0; j < c; j++) {
      let sum = 0;
      let sq = 0;
      const off = base + j * inner;
      for (let k = 0; k < inner; k++) {
        const v = data[off + k];
        sum += v;
        sq += v * v;
      }
      s.sum[j] += sum;
      s.sumSquares[j] += sq;
    }
  }
  s.count += outer * inner;
  if (s.gram) {
    // Σ over vectors x (the channel values at one position) of x xᵀ; every other batch also
    // into the half's sums.
    const half = odd ? s.half : undefined;
    const g = s.gram;
    const x = new Float64Array(c);
    for (let o = 0; o < outer; o++) {
      for (let k = 0; k < inner; k++) {
        for (let j = 0; j < c; j++) x[j] = data[o * c * inner + j * inner + k];
        for (let i = 0; i < c; i++) {
          const xi = x[i];
          if (xi === 0) continue;
          const row = i * c;
          for (let j = i; j < c; j++) g[row + j] += xi * x[j];
          if (half) for (let j = i; j < c; j++) half.gram[row + j] += xi * x[j];
        }
        if (half) for (let j = 0; j < c; j++) half.sum[j] += x[j];
      }
    }
    if (half) half.count += outer * inner;
  }
}

/** The full symmetric matrix from the upper triangle accumulated above (of `s`, or of its half). */
export function symmetricGram(s: Pick<ChannelStats, 'sum' | 'gram'>): Float64Array {
  const c = s.sum.length;
  const g = Float64Array.from(s.gram!);
  for (let i = 0; i < c; i++) for (let j = 0; j < i; j++) g[i * c + j] = g[j * c + i];
  return g;
}
