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

/** Why the engine leaves a quantized weight alone (docs/contracts.md, "What is prunable and what is left alone"). */
export const QUANTIZED_NOT_PRUNABLE = 'pruning quantized weights is not supported yet';

/** The reason an op that reads a quantized weight stops the analysis of every axis it touches. */
export function quantizedOpReason(q: QuantizedWeight): string {
  const { node } = q;
  return `${node.domain ? node.domain + '.' : ''}${node.opType} ${nodeLabel(node)} reads a quantized weight (${q.detail}): ${QUANTIZED_NOT_PRUNABLE}`;
}

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
