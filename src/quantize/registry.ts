/**
 * The quantizer's registry: op type (default domain) -> how a node of that op is quantized. An
 * entry looks at one node and answers with a candidate (its quantized form, built by
 * ./formats.ts, whose output error calibration then measures), with the reason its weights stay
 * float, or with nothing when the node holds no weight to quantize. An op without an entry is
 * left as it is. Teaching the quantizer an op is one entry here.
 */
import { onnx } from 'onnx-proto';
import { attrFloat, attrInt } from '../graph/graph';
import { DataType } from '../onnx/dtype';
import { OnnxModel } from '../onnx/model';
import { Cache, Candidate, dequantizeCandidate, embeddingCandidate, nbitsCandidate } from './formats';
import { CheckedOptions } from './options';

export interface QuantContext {
  /** The copy being quantized: quantized weights are added to it as candidates are made. */
  work: OnnxModel;
  opts: CheckedOptions;
  cache: Cache;
  /** The model's default opset. */
  opset: number;
}

/** A candidate, the reason the node's weights stay float, or undefined: nothing to quantize. */
export type QuantAnswer = Candidate | { keptFloat: string } | undefined;

export interface QuantRule {
  candidate(node: onnx.NodeProto, ctx: QuantContext): QuantAnswer;
}

function isFloatWeight(dtype: number): boolean {
  return dtype === DataType.FLOAT || dtype === DataType.FLOAT16;
}

/** The op's 2-D float weight at input 1, read by a data (non-constant) input 0. */
function matrixWeight(node: onnx.NodeProto, work: OnnxModel): { name: string; dims: number[]; dtype: number; compute?: DataType } | undefined {
  const w = node.input[1];
  const widened = w && !work.isConstant(w) ? widenedWeight(w, work) : undefined;
  const name = widened ?? w;
  const info = name ? work.constantInfo(name) : undefined;
  if (!info || info.dims.length !== 2 || !isFloatWeight(info.dtype) || work.isConstant(node.input[0])) return undefined;
  return { name, ...info, ...(widened ? { compute: DataType.FLOAT } : {}) };
}

/**
 * The float16 initializer behind `name` when `name` is its Cast to float32: how half-precision
 * exports store weights for float32 compute (tools/bench/make_large.py --fp16). The quantized
 * layer then reads the float16 values and computes in float32, as the Cast did.
 */
function widenedWeight(name: string, work: OnnxModel): string | undefined {
  const cast = work.graph.node.find((n) => n.opType === 'Cast' && (n.domain ?? '') === '' && n.output?.[0] === name);
  const source = cast?.input?.[0];
  if (!cast || !source || attrInt(cast, 'to', 0) !== DataType.FLOAT || !work.isInitializer(source)) return undefined;
  return work.constantInfo(source)?.dtype === DataType.FLOAT16 ? source : undefined;
}

/** The node reads a float constant of two or more axes: a weight. */
function readsFloatWeight(node: onnx.NodeProto, work: OnnxModel): boolean {
  return node.input.some((i) => {
    const info = i ? work.constantInfo(i) : undefined;
    return !!info && info.dims.length >= 2 && isFloatWeight(info.dtype);
  });
}

const floatOr = (answer: Candidate | string): QuantAnswer => (typeof answer === 'string' ? { keptFloat: answer } : answer);

/** MatMul with a constant [K, N] weight: MatMulNBits, where a transformer's weights are. */
const matmul: QuantRule = {
  candidate(node, { work, opts, cache }) {
    const w = matrixWeight(node, work);
    return w && nbitsCandidate(work, node, 'matmul', w.name, false, undefined, opts, cache, undefined, w.compute);
  },
};

/** Gemm (classifier heads, poolers): int8 per output channel by default; see QuantizeOptions.gemm. */
const gemm: QuantRule = {
  candidate(node, { work, opts, cache, opset }) {
    const w = matrixWeight(node, work);
    if (!w) return undefined;
    const transB = !!attrInt(node, 'transB', 0);
    if (opts.gemm === 'float') return { keptFloat: 'Gemm weights stay float (gemm: float)' };
    if (opts.gemm === 'nbits') {
      const c = node.input[2];
      const cInfo = c ? work.constantInfo(c) : undefined;
      const n = w.dims[transB ? 0 : 1];
      const plain =
        attrInt(node, 'transA', 0) === 0 &&
        attrFloat(node, 'alpha', 1) === 1 &&
        (!c || (attrFloat(node, 'beta', 1) === 1 && cInfo?.dims.length === 1 && cInfo.dims[0] === n && cInfo.dtype === w.dtype));
      if (!plain) return { keptFloat: 'Gemm with transA, alpha, beta or a bias that is not a [N] constant: left float' };
      return nbitsCandidate(work, node, 'gemm', w.name, transB, c || undefined, opts, cache);
    }
    return floatOr(dequantizeCandidate(work, node, 'gemm', w.name, transB ? 0 : 1, opset, cache));
  },
};

/** Conv: float by default (see QuantizeOptions.conv), else int8 per output channel. */
const conv: QuantRule = {
  candidate(node, { work, opts, cache, opset }) {
    const w = node.input[1];
    const info = w ? work.constantInfo(w) : undefined;
    if (!info || !isFloatWeight(info.dtype)) return undefined;
    if (opts.conv === 'float') return { keptFloat: 'Conv weights stay float (conv: float)' };
    return floatOr(dequantizeCandidate(work, node, 'conv', w, 0, opset, cache));
  },
};

/** ConvTranspose: its weights stay float; the quantizer has no form for them. */
const convTranspose: QuantRule = {
  candidate: (node, { work }) => (readsFloatWeight(node, work) ? { keptFloat: 'ConvTranspose weights stay float (no quantized form for them)' } : undefined),
};

/** Gather on a constant [V, D] table along axis 0 (embeddings): GatherBlockQuantized. */
const gather: QuantRule = {
  candidate(node, { work, opts, cache }) {
    const table = node.input[0];
    const info = table ? work.constantInfo(table) : undefined;
    if (!info || info.dims.length !== 2 || !isFloatWeight(info.dtype) || attrInt(node, 'axis', 0) !== 0) return undefined;
    if (work.isConstant(node.input[1])) return undefined; // a constant row pick: folded by the runtime anyway
    if (opts.embeddings === false) return { keptFloat: 'embedding tables stay float (embeddings: false)' };
    return floatOr(embeddingCandidate(work, node, table, info.dims, opts.embeddings, opts.embeddingBlockSize, cache));
  },
};

/**
 * Einsum with a constant weight (a projection written with torch.einsum): its weights stay float,
 * and the report says so; onnxruntime has no quantized Einsum, and the quantizer does not rewrite
 * an Einsum as a MatMul.
 */
const einsum: QuantRule = {
  candidate: (node, { work }) => (readsFloatWeight(node, work) ? { keptFloat: 'Einsum weights stay float (onnxruntime has no quantized Einsum)' } : undefined),
};

/** onnxruntime's fused ops (a model saved after its optimizer): their weights stay float, reported. */
function fusedFloat(op: string): QuantRule {
  return {
    candidate: (node, { work }) => (readsFloatWeight(node, work) ? { keptFloat: `${op} weights stay float (no quantized form for onnxruntime's fused ops)` } : undefined),
  };
}

/** Op type -> entry; ops outside the default domain as `domain::Op` (as the op registry keys them). */
export const QUANT_RULES: Record<string, QuantRule> = {
  MatMul: matmul,
  Gemm: gemm,
  Conv: conv,
  ConvTranspose: convTranspose,
  Gather: gather,
  Einsum: einsum,
  'com.microsoft::FusedMatMul': fusedFloat('FusedMatMul'),
  'com.microsoft::FusedGemm': fusedFloat('FusedGemm'),
  'com.microsoft::FusedConv': fusedFloat('FusedConv'),
};

/** The registry's entry for a node. */
export function quantRuleOf(node: onnx.NodeProto): QuantRule | undefined {
  const domain = node.domain ?? '';
  const key = domain === '' || domain === 'ai.onnx' ? node.opType : `${domain}::${node.opType}`;
  return Object.prototype.hasOwnProperty.call(QUANT_RULES, key) ? QUANT_RULES[key] : undefined;
}
