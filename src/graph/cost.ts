import { onnx } from 'onnx-proto';
import { DataType, isFloatDType } from '../onnx/dtype';
import { OnnxModel } from '../onnx/model';
import { dummyFeeds, ort } from '../onnx/runtime';
import { cacheSizes } from './cache-sizes';
import { elementCount, toNumber } from '../onnx/tensor';
import { Node, nodeLabel } from './graph';
import { quantizedWeights } from './quantized';
import { ruleOf } from './rules';
import { Trace, traceModel } from './trace';

/**
 * Parameters of the model: elements of every floating-point initializer and of every
 * floating-point Constant node with more than one element, in the top-level graph (paddle2onnx
 * and others keep weights in Constant nodes).
 * Integer tensors are shapes, indices and quantized codes, not parameters. Reads no tensor data.
 *
 * Quantization does not change the number of weights, only their storage: a quantized weight
 * counts as its logical elements (K·N for com.microsoft MatMulNBits, from its K and N
 * attributes; V·D for GatherBlockQuantized; the integer tensor a DequantizeLinear, QLinearMatMul,
 * MatMulInteger or the like reads), and its scales and zero points count as nothing. So a quantized model has the params of its float
 * original.
 */
export function countParams(model: OnnxModel): number {
  const { auxiliary, logical } = quantizedParams(model);
  let total = logical;
  for (const t of model.initializers) {
    if (isFloatDType(t.dataType) && !auxiliary.has(t.name)) total += elementCount(t.dims.map(toNumber));
  }
  for (const node of model.graph.node) {
    if (node.opType !== 'Constant' || (node.domain ?? '') !== '' || auxiliary.has(node.output?.[0] ?? '')) continue;
    // A Constant holding a single number is an op's scalar operand (an epsilon, sqrt(head_dim),
    // GELU's 0.5), not a learned weight; counting it would disagree with the framework's count.
    const info = constantNodeInfo(node);
    if (info && isFloatDType(info.dtype) && elementCount(info.dims) > 1) total += elementCount(info.dims);
  }
  return total;
}

/**
 * Weights stored quantized (./quantized.ts): their logical element count (each stored tensor
 * counted once, however many ops read it), and the names of their scales and zero points, which
 * are not parameters.
 */
function quantizedParams(model: OnnxModel): { auxiliary: Set<string>; logical: number } {
  const auxiliary = new Set<string>();
  const counted = new Set<string>();
  let logical = 0;
  for (const q of quantizedWeights(model)) {
    for (const a of q.auxiliary) auxiliary.add(a);
    if (counted.has(q.codes)) continue;
    counted.add(q.codes);
    logical += q.elements;
  }
  return { auxiliary, logical };
}

/** Element type and shape of a Constant node's value, from the attribute alone (no data read). */
function constantNodeInfo(node: onnx.INodeProto): { dtype: number; dims: number[] } | undefined {
  const a = node.attribute?.[0];
  if (!a) return undefined;
  switch (a.name) {
    case 'value':
      return a.t ? { dtype: a.t.dataType ?? DataType.UNDEFINED, dims: (a.t.dims ?? []).map(toNumber) } : undefined;
    case 'value_float':
      return { dtype: DataType.FLOAT, dims: [] };
    case 'value_floats':
      return { dtype: DataType.FLOAT, dims: [a.floats?.length ?? 0] };
    default:
      return undefined; // ints, strings, sparse tensors: not parameters
  }
}

/** The multiply-accumulates of one node, per sample. */
export interface NodeMacs {
  /** The node's name, else its op and first output. */
  node: string;
  opType: string;
  macs: number;
}

export interface MacEstimate {
  /** Multiply-accumulates per sample: the run's total divided by its batch size. */
  total: number;
  /** The batch size of the traced run that the totals were divided by. */
  batch: number;
  /** Every node whose multiply-accumulates are counted (MatMul, Gemm, Conv, ...), in graph order. */
  nodes: NodeMacs[];
  /** Per-sample MACs summed by op type. */
  byOp: Record<string, number>;
  /** Nodes that should have a cost but whose shapes the trace did not record (not counted). */
  unknown: string[];
}

/**
 * Estimates the multiply-accumulates of the top-level graph from the shapes a run of the model
 * recorded (`traceModel`): every op whose registry entry counts them (`macs` in
 * src/graph/rules.ts: MatMul, Gemm, Conv (grouped too), ConvTranspose, Einsum, MatMulInteger,
 * com.microsoft MatMulNBits). Shapes of a transformer depend on the sequence length, so the
 * result holds for the traced input shape only. `batch` defaults to axis 0 of the first graph
 * input in the trace (axis 0 of every input is the sample axis).
 */
export function estimateMacs(model: OnnxModel, trace: Trace, options: { batch?: number } = {}): MacEstimate {
  const firstInput = model.graph.input.find((v) => !model.isInitializer(v.name ?? ''));
  const traced = firstInput ? trace.get(firstInput.name ?? '') : undefined;
  const batch = options.batch ?? (traced && traced.dims.length > 0 && traced.dims[0] > 0 ? traced.dims[0] : 1);

  const shapeOf = (name: string | undefined): number[] | undefined => {
    if (!name) return undefined;
    const t = trace.get(name);
    if (t) return t.dims;
    return model.isInitializer(name) ? model.initializerProto(name)?.dims.map(toNumber) : undefined;
  };

  const nodes: NodeMacs[] = [];
  const byOp: Record<string, number> = {};
  const unknown: string[] = [];
  let total = 0;
  for (const node of model.graph.node) {
    const count = ruleOf(node)?.macs;
    if (!count) continue;
    const runMacs = count(node as Node, shapeOf);
    if (runMacs === undefined) {
      unknown.push(nodeLabel(node));
      continue;
    }
    const op = node.opType ?? '';
    const macs = runMacs / batch;
    nodes.push({ node: nodeLabel(node), opType: op, macs });
    byOp[op] = (byOp[op] ?? 0) + macs;
    total += macs;
  }
  return { total, batch, nodes, byOp, unknown };
}

/** Dummy input shape for `inspect`: one sample, 16 along every other dynamic axis (e.g. tokens). */
export const DUMMY_BATCH = 1;
export const DUMMY_SEQUENCE = 16;

/** The shapes the model was run at to measure its MACs, by input name. */
export type InputShapes = Record<string, number[]>;

/**
 * Runs the model once (with `feeds`, else dummy inputs of batch 1 and length 16 on the other
 * dynamic axes) and estimates its MACs per sample at that input shape.
 */
export async function measureMacs(
  model: OnnxModel,
  feeds?: Record<string, ort.Tensor>,
): Promise<MacEstimate & { inputShapes: InputShapes }> {
  const inputs = feeds ?? dummyFeeds(model, DUMMY_BATCH, DUMMY_SEQUENCE, await cacheSizes(model));
  const trace = await traceModel(model, inputs);
  const inputShapes: InputShapes = {};
  for (const [name, t] of Object.entries(inputs)) inputShapes[name] = [...t.dims];
  return { ...estimateMacs(model, trace), inputShapes };
}
