/**
 * The three forms a quantized weight takes in the graph, and the replacement node each builds:
 * - `MatMulNBits` (onnxruntime's com.microsoft op): block-wise codes along K, 8 or 4 bits.
 * - int8 per output channel behind a `DequantizeLinear` that feeds the original op.
 * - `GatherBlockQuantized` (com.microsoft): an embedding table's rows in block-wise codes.
 * The codes themselves are computed in ./pack.ts. Which op takes which form is the registry's
 * decision (./registry.ts).
 */
import { onnx } from 'onnx-proto';
import { nodeLabel } from '../graph/graph';
import { DataType, dtypeInfo } from '../onnx/dtype';
import { OnnxModel } from '../onnx/model';
import { Tensor, fromFloat32, tensorBytes, toFloat32 } from '../onnx/tensor';
import { CheckedOptions, DEFAULT_BLOCK_SIZE } from './options';
import { Bits, BlockQuantized, BlockQuantizer, ChannelQuantized, blockSizeFor, quantizePerChannel } from './pack';
import { gptqWithDampening } from './gptq';
import type { Hessian } from './hessian';
import type { QuantizeMethod } from './options';

export const MS_DOMAIN = 'com.microsoft';

export type LayerKind = 'matmul' | 'gemm' | 'conv' | 'embedding';
export type QuantFormat = 'MatMulNBits' | 'DequantizeLinear' | 'GatherBlockQuantized';

/** A weight op that can be quantized, with the replacement built for it. */
export interface Candidate {
  node: onnx.NodeProto;
  label: string;
  kind: LayerKind;
  format: QuantFormat;
  bits: Bits;
  blockSize?: number;
  weight: string;
  bytesBefore: number;
  bytesAfter: number;
  /** Nodes that compute the layer from its quantized weight, writing to `outputs`. */
  build: (outputs: string[]) => onnx.NodeProto[];
  /** Nodes shared by every user of the same quantized weight (DequantizeLinear), placed first. */
  shared: onnx.NodeProto[];
  /** Relative output error on the calibration data, when measured. */
  error?: number;
  /** The same layer's error with round-to-nearest codes, when GPTQ's were chosen by measurement. */
  rtnError?: number;
  /** The same layer at 8 bits, for a 4-bit MatMulNBits layer (see QuantizeOptions.exceptions). */
  at8Bits?: () => Candidate;
  /** Why this layer has more bits than asked. */
  exception?: string;
  /** How a MatMulNBits layer's codes were chosen: round-to-nearest or GPTQ (./gptq.ts). */
  method?: Exclude<QuantizeMethod, 'auto'>;
  /**
   * The same layer with GPTQ's codes (MatMulNBits layers): the input whose Hessian it needs
   * (read with its last axis of K channels) and how it is made from that Hessian.
   */
  gptq?: { input: string; channels: number; outputs: number; float16: boolean; make: (hessian: Hessian) => Promise<Candidate> };
}

/**
 * Quantized initializers already written to the model, by what they are (weight, form, bits,
 * block): every op that reads the same weight shares them.
 */
export type Cache = Map<string, CacheEntry>;
type CacheEntry = { names: string[]; bytes: number; blockSize?: number; shared: onnx.NodeProto[] };

const int = (name: string, i: number) => onnx.AttributeProto.create({ name, type: onnx.AttributeProto.AttributeType.INT, i });

/**
 * The block-wise codes and scales of `weight` (see ./pack.ts), stored once per `key` as two
 * initializers, `<weight>_Q<bits>` (GPTQ's: `_G<bits>`) shaped by `codesDims(blocks)` and `<weight>_scales` (`_Gscale`) [rows of
 * the result, blocks] in the weight's float type.
 */
function storeBlocks(
  work: OnnxModel,
  cache: Cache,
  key: string,
  weight: string,
  layout: { bits: Bits; blockSize: number; transposed: boolean; outputs: number; codesDims: (blocks: number) => number[]; scaleType?: DataType },
  chosen?: BlockQuantized,
): CacheEntry {
  const cached = cache.get(key);
  if (cached) return cached;
  const { dtype: stored, dims } = work.constantInfo(weight)!;
  const dtype = layout.scaleType ?? stored;
  const { bits, blockSize, transposed } = layout;
  let q = chosen;
  if (!q) {
    // Round to nearest. Rows stream from where the weight lies (its file, or the slice of a pruned weight).
    const quantizer = new BlockQuantizer(dims[0], dims[1], { bits, blockSize, transposed });
    work.forEachChunk(weight, dims[1], (rows) => quantizer.add(rows));
    q = quantizer.finish();
  }
  // GPTQ's codes sit beside round-to-nearest's while both are measured: names of their own, as
  // long (a suffixed name would cost the shipped file bytes).
  const codes = work.uniqueName(`${weight}_${chosen ? 'G' : 'Q'}${bits}`);
  work.addInitializer(codes, { dtype: DataType.UINT8, dims: layout.codesDims(q.blocks), data: q.packed });
  const scales = work.uniqueName(`${weight}_${chosen ? 'Gscale' : 'scales'}`);
  work.addInitializer(scales, scaleTensor(q.scales, dtype, [layout.outputs, q.blocks]));
  const entry = { names: [codes, scales], bytes: q.packed.byteLength + q.scales.length * dtypeInfo(dtype).bytes, blockSize, shared: [] };
  cache.set(key, entry);
  return entry;
}

function weightBytes(work: OnnxModel, name: string): number {
  const info = work.constantInfo(name)!;
  return tensorBytes(info.dtype, info.dims);
}

/**
 * int8 codes per output channel. Along axis 0 each channel is a run of whole rows: they stream
 * from the file a chunk of channels at a time. Along another axis every row holds every channel,
 * so the weight is read whole (Gemm weights of classifier heads: small).
 */
function channelCodes(work: OnnxModel, name: string, dims: number[], axis: number): ChannelQuantized {
  if (axis !== 0 || dims.length < 2) return quantizePerChannel(toFloat32(work.constant(name)!), dims, axis);
  const inner = dims.slice(1).reduce((a, b) => a * b, 1);
  const codes = new Int8Array(dims[0] * inner);
  const scales = new Float32Array(dims[0]);
  work.forEachChunk(name, inner, (values, first) => {
    const q = quantizePerChannel(values, [values.length / inner, ...dims.slice(1)], 0);
    codes.set(q.codes, first);
    scales.set(q.scales, first / inner);
  });
  return { codes, scales };
}

/** [rows, cols] row-major -> [cols, rows]. */
function transpose(w: Float32Array, rows: number, cols: number): Float32Array {
  const out = new Float32Array(w.length);
  for (let r = 0; r < rows; r++) for (let c = 0; c < cols; c++) out[c * rows + r] = w[r * cols + c];
  return out;
}

function scaleTensor(values: Float32Array, dtype: DataType, dims: number[]): Tensor {
  return dtype === DataType.FLOAT ? { dtype, dims, data: values } : fromFloat32(values, dtype, dims);
}

/**
 * MatMul (B [K, N]) or Gemm (B [K, N], or [N, K] with transB) -> MatMulNBits, its codes rounded to
 * nearest, or `chosen` (GPTQ's, for the same bits and block).
 */
export function nbitsCandidate(
  work: OnnxModel,
  node: onnx.NodeProto,
  kind: 'matmul' | 'gemm',
  weight: string,
  transposed: boolean,
  bias: string | undefined,
  opts: CheckedOptions,
  cache: Cache,
  chosen?: BlockQuantized,
  /** The float type the layer computes in, when not the weight's own (a float16 weight behind a Cast to float32). */
  compute?: DataType,
): Candidate {
  const info = work.constantInfo(weight)!;
  const [k, n] = transposed ? [info.dims[1], info.dims[0]] : info.dims;
  const blockSize = blockSizeFor(k, opts.blockSize, opts.bits, dtypeInfo(compute ?? info.dtype).bytes);
  const method = chosen ? 'gptq' : 'rtn';
  const entry = storeBlocks(
    work,
    cache,
    `nbits:${weight}:${transposed}:${opts.bits}:${blockSize}:${method}:${compute ?? ''}`,
    weight,
    { scaleType: compute, bits: opts.bits, blockSize, transposed, outputs: n, codesDims: (blocks) => [n, blocks, (blockSize * opts.bits) / 8] },
    chosen,
  );
  const [bName, sName] = entry.names;
  const a = node.input[0];
  const name = node.name;
  const accuracy = opts.accuracyLevel;
  const bits = opts.bits;
  const at8Bits =
    bits === 4 ? () => nbitsCandidate(work, node, kind, weight, transposed, bias, { ...opts, bits: 8, blockSize: DEFAULT_BLOCK_SIZE[8] }, cache, undefined, compute) : undefined;
  const gptq = chosen
    ? undefined
    : {
        input: a,
        channels: k,
        outputs: n,
        float16: info.dtype === DataType.FLOAT16,
        make: async (hessian: Hessian) => {
          const w = toFloat32(work.constant(weight)!);
          const codes = await gptqWithDampening(transposed ? transpose(w, n, k) : w, k, n, hessian, { bits, blockSize });
          return nbitsCandidate(work, node, kind, weight, transposed, bias, opts, cache, codes, compute);
        },
      };
  return {
    node,
    label: nodeLabel(node),
    kind,
    format: 'MatMulNBits',
    bits,
    blockSize,
    weight,
    bytesBefore: weightBytes(work, weight),
    bytesAfter: entry.bytes,
    shared: [],
    at8Bits,
    method,
    ...(gptq ? { gptq } : {}),
    build: (outputs) => [
      onnx.NodeProto.create({
        // Both methods' twins sit in one graph while their errors are measured: names of their own.
        name: name ? `${name}_Q${bits}${chosen ? '_GPTQ' : ''}` : '',
        opType: 'MatMulNBits',
        domain: MS_DOMAIN,
        input: bias ? [a, bName, sName, '', '', bias] : [a, bName, sName],
        output: outputs,
        attribute: [int('K', k), int('N', n), int('bits', bits), int('block_size', blockSize), int('accuracy_level', accuracy)],
      }),
    ],
  };
}

/**
 * Gemm/Conv weight -> int8 per output channel (`axis`) + DequantizeLinear feeding the op; or,
 * when the model's opset has no such DequantizeLinear, why the layer stays float.
 */
export function dequantizeCandidate(
  work: OnnxModel,
  node: onnx.NodeProto,
  kind: 'gemm' | 'conv',
  weight: string,
  axis: number,
  opset: number,
  cache: Cache,
): Candidate | string {
  const info = work.constantInfo(weight)!;
  // DequantizeLinear has a per-axis scale from opset 13, and a float16 output from opset 19.
  const needed = info.dtype === DataType.FLOAT ? 13 : 19;
  if (opset < needed) {
    return `DequantizeLinear per channel${info.dtype === DataType.FLOAT ? '' : ' to float16'} needs opset ${needed} (model: ${opset})`;
  }
  const key = `dq:${weight}:${axis}`;
  let entry = cache.get(key);
  if (!entry) {
    const q = channelCodes(work, weight, info.dims, axis);
    const qName = work.uniqueName(`${weight}_int8`);
    work.addInitializer(qName, { dtype: DataType.INT8, dims: info.dims, data: q.codes });
    const sName = work.uniqueName(`${weight}_scale`);
    work.addInitializer(sName, scaleTensor(q.scales, info.dtype, [q.scales.length]));
    const out = work.uniqueName(`${weight}_dequantized`);
    const dq = onnx.NodeProto.create({
      name: `${out}_DequantizeLinear`,
      opType: 'DequantizeLinear',
      input: [qName, sName],
      output: [out],
      attribute: [int('axis', axis)],
    });
    entry = { names: [out], bytes: q.codes.byteLength + q.scales.length * dtypeInfo(info.dtype).bytes, shared: [dq] };
    cache.set(key, entry);
  }
  const dequantized = entry.names[0];
  return {
    node,
    label: nodeLabel(node),
    kind,
    format: 'DequantizeLinear',
    bits: 8,
    weight,
    bytesBefore: weightBytes(work, weight),
    bytesAfter: entry.bytes,
    shared: entry.shared,
    build: (outputs) => {
      const copy = onnx.NodeProto.decode(onnx.NodeProto.encode(node).finish());
      // Its own name: the float node and this twin sit in one graph while errors are measured.
      copy.name = node.name ? `${node.name}_Q8` : '';
      copy.input[1] = dequantized;
      copy.output = outputs;
      return [copy];
    },
  };
}

/**
 * Gather on a [V, D] table -> GatherBlockQuantized, codes along D (gather_axis 0, quantize_axis
 * 1); or why the table stays float.
 */
export function embeddingCandidate(
  work: OnnxModel,
  node: onnx.NodeProto,
  table: string,
  dims: number[],
  bits: Bits,
  wantedBlock: number,
  cache: Cache,
): Candidate | string {
  const [v, d] = dims;
  // GatherBlockQuantized keeps each row's D values unpadded: the block must divide D.
  let blockSize = blockSizeFor(d, wantedBlock, bits, dtypeInfo(work.constantInfo(table)!.dtype).bytes);
  while (blockSize > 16 && d % blockSize !== 0) blockSize /= 2;
  if (d % blockSize !== 0) return `embedding width ${d} is not a multiple of 16: left float`;
  const entry = storeBlocks(work, cache, `gbq:${table}:${bits}:${blockSize}`, table, {
    bits,
    blockSize,
    transposed: true,
    outputs: v,
    codesDims: () => [v, (d * bits) / 8],
  });
  const [dName, sName] = entry.names;
  const ids = node.input[1];
  const name = node.name;
  return {
    node,
    label: nodeLabel(node),
    kind: 'embedding',
    format: 'GatherBlockQuantized',
    bits,
    blockSize,
    weight: table,
    bytesBefore: weightBytes(work, table),
    bytesAfter: entry.bytes,
    shared: [],
    build: (outputs) => [
      onnx.NodeProto.create({
        name: name ? `${name}_Q${bits}` : '',
        opType: 'GatherBlockQuantized',
        domain: MS_DOMAIN,
        input: [dName, ids, sName],
        output: outputs,
        attribute: [int('bits', bits), int('block_size', blockSize), int('gather_axis', 0), int('quantize_axis', 1)],
      }),
    ],
  };
}
