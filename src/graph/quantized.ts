import { onnx } from 'onnx-proto';
import { DataType, dtypeName, isFloatDType } from '../onnx/dtype';
import { OnnxModel } from '../onnx/model';
import { elementCount } from '../onnx/tensor';
import { attrInt, nodeLabel } from './graph';

/** A weight stored quantized in the top-level graph, and the op that reads it. */
export interface QuantizedWeight {
  /** The op that reads the codes (MatMulNBits, DequantizeLinear, QLinearMatMul, ...). */
  node: onnx.INodeProto;
  /** The constant holding the codes. */
  codes: string;
  /** Weights it stands for (K·N for MatMulNBits, whatever the packing). */
  elements: number;
  /** Its scales and zero points: not parameters. */
  auxiliary: string[];
  /** Bits per code. */
  bits: number;
  /** Its codes: "4-bit, block 32", "int8". */
  detail: string;
  /** The format, as a user knows it: "MatMulNBits (4-bit, block 32)", "DequantizeLinear (int8)". */
  format: string;
}

/**
 * Why the engine leaves a quantized weight alone (docs/contracts.md, "What is prunable and what
 * is left alone"): it prunes MatMulNBits and DequantizeLinear weights (src/quantize/inputs.ts
 * lifts them to float and lowers them back), no other quantized format.
 */
export const QUANTIZED_NOT_PRUNABLE = 'pruning this quantized form is not supported (MatMulNBits of 4 or 8 bits and DequantizeLinear of int8/uint8 weights are)';

/** The reason an op that reads a quantized weight stops the analysis of every axis it touches. */
export function quantizedOpReason(q: QuantizedWeight, model?: OnnxModel): string {
  const { node } = q;
  const blocker = model ? liftBlocker(model, node) : undefined;
  const why = blocker === NOT_LIFTED_FORMAT ? undefined : blocker;
  return `${node.domain ? node.domain + '.' : ''}${node.opType} ${nodeLabel(node)} reads a quantized weight (${q.detail}): ${why ? `${why}: ` : ''}${QUANTIZED_NOT_PRUNABLE}`;
}

const isConstantOf = (model: OnnxModel, name: string | undefined, dtypes: number[]) => {
  const info = name ? model.constantInfo(name) : undefined;
  return !!info && dtypes.includes(info.dtype);
};

/**
 * Why the weight `node` reads cannot be lifted to float and lowered back in its format
 * (src/quantize/inputs.ts), or undefined when it can: a com.microsoft MatMulNBits of 4 or 8 bits
 * with constant codes, scales and uint8 zero points, no g_idx; a DequantizeLinear of constant
 * int8/uint8 codes, per tensor or per axis. Other nodes: 'not MatMulNBits or DequantizeLinear'.
 */
export function liftBlocker(model: OnnxModel, node: onnx.INodeProto): string | undefined {
  const inputs = node.input ?? [];
  const floats = [DataType.FLOAT, DataType.FLOAT16];
  if (node.domain === 'com.microsoft' && node.opType === 'MatMulNBits') {
    const bits = attrInt(node, 'bits', 4);
    const block = attrInt(node, 'block_size', 0);
    const [k, n] = [attrInt(node, 'K', 0), attrInt(node, 'N', 0)];
    const codes = inputs[1] ? model.constantInfo(inputs[1]) : undefined;
    if (bits !== 4 && bits !== 8) return `${bits}-bit codes`;
    if (!(block >= 16 && (block & (block - 1)) === 0)) return `block size ${block}`;
    if (!codes || codes.dtype !== DataType.UINT8 || elementCount(codes.dims) !== n * Math.ceil(k / block) * ((block * bits) / 8)) return 'its codes are not a constant of N × blocks × block·bits/8 bytes';
    if (!isConstantOf(model, inputs[2], floats)) return 'its scales are not a float constant';
    if (inputs[3] && !isConstantOf(model, inputs[3], [DataType.UINT8])) return 'its zero points are not uint8 constants';
    if (inputs[4]) return 'it has a g_idx (act-order) input';
    if (inputs[5] && !isConstantOf(model, inputs[5], floats)) return 'its bias is not a float constant';
    return undefined;
  }
  if ((node.domain ?? '') === '' && node.opType === 'DequantizeLinear') {
    const codes = inputs[0] ? model.constantInfo(inputs[0]) : undefined;
    if (!codes || (codes.dtype !== DataType.INT8 && codes.dtype !== DataType.UINT8)) return 'its codes are not int8 or uint8 constants';
    const scale = inputs[1] ? model.constantInfo(inputs[1]) : undefined;
    if (!scale || !floats.includes(scale.dtype)) return 'its scale is not a float constant';
    if (attrInt(node, 'block_size', 0) > 0) return 'it is blocked (block_size)';
    const rank = codes.dims.length;
    const axis = attrInt(node, 'axis', 1);
    const perAxis = elementCount(scale.dims) !== 1;
    if (perAxis && (scale.dims.length !== 1 || axis < -rank || axis >= rank || scale.dims[0] !== codes.dims[(axis + rank) % rank])) return 'its scale is neither one value nor one per index of its axis';
    const zp = inputs[2] ? model.constantInfo(inputs[2]) : undefined;
    if (inputs[2] && (!zp || zp.dtype !== codes.dtype || elementCount(zp.dims) !== elementCount(scale.dims))) return 'its zero point is not a constant shaped like its scale';
    // Lowered back, its codes take the shape its own output was pruned to.
    if ((model.graph.node ?? []).some((other) => other !== node && (other.input ?? []).includes(inputs[0]))) return 'its codes are read by another op too';
    return undefined;
  }
  return NOT_LIFTED_FORMAT;
}

/** liftBlocker's answer for a format other than MatMulNBits and DequantizeLinear. */
export const NOT_LIFTED_FORMAT = 'not MatMulNBits or DequantizeLinear';

/**
 * Where an op of each quantized format reads its weight: the codes' input, its scales' and zero
 * points', and how many weights the codes stand for. The default domain's ops (DequantizeLinear,
 * QLinearMatMul, QLinearConv, MatMulInteger, ConvInteger) and com.microsoft's (MatMulNBits,
 * GatherBlockQuantized, DynamicQuantizeMatMul), as onnxruntime's quantizers and
 * onnxruntime-genai's model builder write them.
 */
const FORMATS: Record<string, { codes: number; auxiliary: number[]; elements?: (node: onnx.INodeProto, dims: number[], dtype: number) => number; bits?: (node: onnx.INodeProto) => number; detail?: (node: onnx.INodeProto) => string }> = {
  'com.microsoft::MatMulNBits': {
    codes: 1,
    auxiliary: [2, 3],
    elements: (node) => attrInt(node, 'K', 0) * attrInt(node, 'N', 0),
    bits: (node) => attrInt(node, 'bits', 4),
    detail: (node) => `${attrInt(node, 'bits', 4)}-bit, block ${attrInt(node, 'block_size', 0)}`,
  },
  'com.microsoft::GatherBlockQuantized': {
    codes: 0,
    auxiliary: [2, 3],
    // Codes packed two to a byte at 4 bits when stored as uint8.
    elements: (node, dims, dtype) => elementCount(dims) * (dtype === DataType.UINT8 ? 8 / attrInt(node, 'bits', 4) : 1),
    bits: (node) => attrInt(node, 'bits', 4),
    detail: (node) => `${attrInt(node, 'bits', 4)}-bit, block ${attrInt(node, 'block_size', 128)}`,
  },
  'com.microsoft::DynamicQuantizeMatMul': { codes: 1, auxiliary: [2, 3] },
  DequantizeLinear: { codes: 0, auxiliary: [1, 2] },
  QLinearMatMul: { codes: 3, auxiliary: [1, 2, 4, 5, 6, 7] },
  QLinearConv: { codes: 3, auxiliary: [1, 2, 4, 5, 6, 7] },
  MatMulInteger: { codes: 1, auxiliary: [3] },
  ConvInteger: { codes: 1, auxiliary: [3] },
};

function formatOf(node: onnx.INodeProto) {
  const domain = node.domain ?? '';
  const key = domain === '' || domain === 'ai.onnx' ? (node.opType ?? '') : `${domain}::${node.opType}`;
  return Object.prototype.hasOwnProperty.call(FORMATS, key) ? FORMATS[key] : undefined;
}

/**
 * The quantized weight `node` reads, if it is an op of a quantized format whose codes are a
 * constant of an integer type (a DequantizeLinear of a computed tensor or of a float constant is
 * not one).
 */
export function quantizedWeightOf(model: OnnxModel, node: onnx.INodeProto): QuantizedWeight | undefined {
  const format = formatOf(node);
  const inputs = node.input ?? [];
  const codes = format ? inputs[format.codes] : undefined;
  const info = codes && model.isConstant(codes) ? model.constantInfo(codes) : undefined;
  if (!format || !codes || !info || isFloatDType(info.dtype)) return undefined;
  const detail = format.detail ? format.detail(node) : codeTypeName(info.dtype);
  return {
    node,
    codes,
    elements: format.elements ? format.elements(node, info.dims, info.dtype) : elementCount(info.dims),
    auxiliary: format.auxiliary.map((i) => inputs[i]).filter((name): name is string => !!name),
    bits: format.bits ? format.bits(node) : codeBits(info.dtype),
    detail,
    format: `${node.opType} (${detail})`,
  };
}

/** ONNX's UINT4 and INT4 (onnx.proto, IR 10), newer than the onnx-proto package's enum. */
const UINT4 = 21;
const INT4 = 22;

/** Bits of an integer element type: int8 and uint8 are 8, int4 and uint4 4, and so on. */
function codeBits(dtype: number): number {
  if (dtype === UINT4 || dtype === INT4) return 4;
  return Number(/\d+$/.exec(dtypeName(dtype))?.[0] ?? 8);
}

function codeTypeName(dtype: number): string {
  return dtype === UINT4 ? 'uint4' : dtype === INT4 ? 'int4' : dtypeName(dtype);
}

/** Every quantized weight the top-level graph's ops read, in graph order (a weight read twice is listed twice). */
export function quantizedWeights(model: OnnxModel): QuantizedWeight[] {
  return model.graph.node.map((n) => quantizedWeightOf(model, n)).filter((q): q is QuantizedWeight => !!q);
}
