// An estimate of what onnxruntime holds to run a model once, made from the graph and a traced run
// without reading any memory counter: the bench checks the gate's `memory` metric against it
// (docs/measured.md, "The memory metric").
import type { onnx } from 'onnx-proto';
import { Trace, traceModelAt } from '../../src/graph/trace';
import { DataType, dtypeInfo, isSupportedDType } from '../../src/onnx/dtype';
import type { OnnxModel } from '../../src/onnx/model';
import { Feeds, ort } from '../../src/onnx/runtime';
import { nodeReads } from '../../src/onnx/reads';
import { elementCount } from '../../src/onnx/tensor';

/** Bytes, by what they hold. */
export interface MemoryEstimate {
  /** Weights as onnxruntime holds them to run: every constant a computing node reads, float16 as float32. */
  weights: number;
  /** The most bytes of intermediate tensors alive at once, nodes run in the graph's order. */
  activations: number;
  /** Weights as stored in the model, held while the session is made. */
  stored: number;
  /** Weights made while the session is made: folded from constants, or float16 widened to float32. */
  folded: number;
  /** The larger of the two moments: making the session (stored + folded) and running it (weights + activations). */
  total: number;
  /** Nodes that compute on the inputs (not folded into constants). */
  nodes: number;
}

const BYTES_BY_TYPE = new Map<string, number>(
  Object.values(DataType)
    .filter((d): d is DataType => typeof d === 'number' && isSupportedDType(d))
    .map((d) => [dtypeInfo(d).name, dtypeInfo(d).bytes]),
);

/**
 * Bytes of one element as held. onnxruntime's x64 CPU kernels compute float16 in float32 and keep
 * float32 copies of float16 weights (a float16 weight behind a Cast is folded into one):
 * docs/measured.md, "The memory metric".
 */
function heldBytes(type: string): number {
  if (type === 'float16' || type === 'bfloat16') return 4;
  const bytes = BYTES_BY_TYPE.get(type);
  if (bytes === undefined) throw new Error(`no element size known for ${type}`);
  return bytes;
}

/** A node onnxruntime folds into a constant: every input constant, and no subgraph or randomness. */
function folds(node: onnx.INodeProto, constant: (name: string) => boolean): boolean {
  const inputs = (node.input ?? []).filter(Boolean);
  if (inputs.length === 0 || /^Random/.test(node.opType ?? '')) return false;
  if ((node.attribute ?? []).some((a) => a.g || a.graphs?.length)) return false;
  return inputs.every(constant);
}

/**
 * What a run of `model` holds at its peak, from `trace` (the shape and type of every tensor at
 * the inputs measured). Running, it holds its weights: the initializers and Constant nodes, and
 * what nodes of constants alone compute (folded when the session is made), each counted once
 * where a computing node reads it; and its activations: each computing node's outputs live from
 * the node that makes them to the last that reads them (graph outputs to the end; the graph's
 * inputs are the caller's). Making the session, it holds the weights as stored while it folds
 * and widens them, so a model storing float16 weights peaks there. Left out: onnxruntime's graph
 * and kernel structures, the code of its kernels, its arena's rounding and the kernels' scratch
 * buffers, which the measured figure holds on top.
 */
export function estimateRunMemory(model: OnnxModel, trace: Trace): MemoryEstimate {
  const nodes = model.graph.node;
  const outputs = new Set(model.graph.output.map((o) => o.name ?? ''));
  const foldedNames = new Set<string>();
  const isConstant = (name: string) => model.isConstant(name) || foldedNames.has(name);
  const computing = nodes.filter((n) => {
    if (n.opType === 'Constant' && (n.domain ?? '') === '') return false;
    if (!folds(n, isConstant)) return true;
    for (const o of n.output ?? []) if (o) foldedNames.add(o);
    return false;
  });
  const traced = (name: string) => {
    const t = trace.get(name);
    return t ? elementCount(t.dims) * heldBytes(t.type) : 0;
  };
  const constantBytes = (name: string) => {
    const info = model.constantInfo(name);
    return info ? elementCount(info.dims) * heldBytes(dtypeInfo(info.dtype).name) : traced(name);
  };

  // Weights: each constant read by a computing node (or returned), once.
  const held = new Set<string>();
  for (const n of computing) for (const i of nodeReads(n)) if (i && isConstant(i)) held.add(i);
  for (const o of outputs) if (isConstant(o)) held.add(o);
  let weights = 0;
  let folded = 0;
  for (const name of held) {
    const bytes = constantBytes(name);
    weights += bytes;
    const asStored = model.constantInfo(name);
    if (!asStored || asStored.dtype === DataType.FLOAT16 || asStored.dtype === DataType.BFLOAT16) folded += bytes;
  }
  let stored = 0;
  for (const name of model.constantNames()) {
    const info = model.constantInfo(name);
    if (info && isSupportedDType(info.dtype)) stored += elementCount(info.dims) * dtypeInfo(info.dtype).bytes;
  }

  // Activations: live from their node to the last computing node that reads them.
  const lastRead = new Map<string, number>();
  computing.forEach((n, i) => {
    for (const name of nodeReads(n)) if (name) lastRead.set(name, i);
  });
  const freedAfter: number[] = computing.map(() => 0);
  let live = 0;
  let activations = 0;
  computing.forEach((n, i) => {
    for (const o of n.output ?? []) {
      if (!o) continue;
      const bytes = traced(o);
      live += bytes;
      if (!outputs.has(o)) freedAfter[Math.max(i, lastRead.get(o) ?? i)] += bytes;
    }
    activations = Math.max(activations, live);
    live -= freedAfter[i];
  });
  return { weights, activations, stored, folded, total: Math.max(stored + folded, weights + activations), nodes: computing.length };
}

/** `feeds` with `rows` samples along axis 0, taken from its own rows in turn (fewer, or repeated). */
export function withRows(feeds: Feeds, rows: number): Feeds {
  const out: Feeds = {};
  for (const [name, t] of Object.entries(feeds)) {
    type Indexed = { [i: number]: unknown; length: number };
    const data = t.data as unknown as Indexed & { constructor: new (n: number) => Indexed };
    const copy = new data.constructor((rows * data.length) / t.dims[0]);
    for (let i = 0; i < copy.length; i++) copy[i] = data[i % data.length];
    out[name] = new ort.Tensor(t.type, copy as never, [rows, ...t.dims.slice(1)]);
  }
  return out;
}

/**
 * Every tensor's shape and type at `feeds`, from traced runs of one and two of its samples:
 * each axis that differs between them grows by that difference per sample (the sample axis, and
 * axes that fold it in). Tracing the whole batch would hold every intermediate at once: 4.3 GB
 * for BERT-base at 16 × 128 tokens.
 */
export async function traceAtBatch(model: OnnxModel, feeds: Feeds): Promise<Trace> {
  const batch = Object.values(feeds)[0].dims[0];
  const [one, two] = await traceModelAt(model, [withRows(feeds, 1), withRows(feeds, 2)]);
  const trace: Trace = new Map();
  for (const [name, a] of one) {
    const b = two.get(name);
    const dims = b && b.dims.length === a.dims.length ? a.dims.map((d, i) => d + (b.dims[i] - d) * (batch - 1)) : a.dims;
    trace.set(name, { dims, type: a.type });
  }
  return trace;
}
