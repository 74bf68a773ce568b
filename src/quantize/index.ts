/**
 * Weight quantization after pruning: the last step before the gate evaluates a candidate, so the
 * gate judges the artifact that ships.
 *
 * What is quantized (weights only; activations stay float):
 * - **MatMul** with a constant 2-D float weight B [K, N] (float32 or float16) becomes onnxruntime's
 *   `com.microsoft` `MatMulNBits` (bits 8 or 4, symmetric per-block scales along K, no zero points,
 *   `accuracy_level` 4 so the CPU kernel computes in int8: without it the 8-bit kernel is about
 *   100x slower than float). The layout is described in ./pack.ts. This is where a transformer's
 *   weights are, the LM head included.
 * - **Gemm** weights (classifier heads, BERT's pooler): int8 per output channel behind a
 *   `DequantizeLinear` by default, whatever `bits` (same latency as float on the fixtures; 4 bits
 *   cost the MLP fixture 3 points of accuracy); `gemm: 'nbits'` makes a plain Gemm (alpha 1, no
 *   transA, a [N] bias or none) a MatMulNBits at `bits`; `gemm: 'float'` leaves them.
 * - **Conv** weights: float by default. `conv: 'int8'` stores them int8 per output channel
 *   behind a DequantizeLinear: 2.7x smaller, but onnxruntime 1.30 then cannot prepack the
 *   weight and the CNN fixture ran 4-15x slower.
 * - **Embeddings** (Gather on a constant [V, D] table, axis 0): `com.microsoft`
 *   `GatherBlockQuantized` with the same block-wise codes along D, so only the gathered rows
 *   are dequantized at run time. 8 bits by default (4 on request): on small language models the
 *   token table is one of the largest tensors; at 4 bits it cost the LM fixtures another 1-2
 *   points of top-1 agreement and 0.5-1.8 % of perplexity, for a file 4-6 % smaller.
 *
 * With calibration data, the output error of every quantized layer is measured on the real
 * activations (the float layer and its quantized twin read the same input in one run), and up
 * to `keepFloat` layers with the largest relative error ||Y - Ŷ|| / ||Y|| are exceptions, those
 * whose error stands out (`keepFloatRatio` times the median layer's) and is at least 2 %. At 4
 * bits an exception is stored at 8 bits when that brings its error under 2 % (a quarter of the
 * float bytes, and below the error at which a layer would be kept float); otherwise, and at 8
 * bits, it stays float.
 *
 * The input model is not changed. The result always loads in onnxruntime-node and keeps its
 * output names and shapes (checked by running it once before returning).
 */
import { onnx } from 'onnx-proto';
import { UserError } from '../errors';
import { attrFloat, attrInt, nodeLabel, nodeReads } from '../graph/graph';
import { DataType, dtypeInfo, halfToFloat } from '../onnx/dtype';
import { OnnxModel } from '../onnx/model';
import { createSession, dummyFeeds, graphOutputs, ort, sessionForProto } from '../onnx/runtime';
import { Tensor, fromFloat32, tensorBytes, toFloat32 } from '../onnx/tensor';
import type { Feeds } from '../onnx/runtime';
import { Bits, blockSizeFor, quantizeBlocks, quantizePerChannel } from './pack';

export * from './pack';

export const MS_DOMAIN = 'com.microsoft';

/**
 * Block length along K when none is given: 128 for 8 bits (scales cost 3 % of the codes, and the
 * error is already small), 32 for 4 bits (the usual Q4 block: 4-bit error grows quickly with the
 * block). Measured on the fixtures: see the README's quantization section.
 */
export const DEFAULT_BLOCK_SIZE: Record<Bits, number> = { 8: 128, 4: 32 };
/** At most this many layers are kept float by calibration error when none is given... */
export /** Relative output error below which a layer is never kept in float (quantization costs too little). */
const KEEP_FLOAT_MIN_ERROR = 0.02;
const DEFAULT_KEEP_FLOAT = 2;
/** ...and only those whose error is at least this many times the median layer's error. */
export const DEFAULT_KEEP_FLOAT_RATIO = 1.5;
/** Embedding tables are 8-bit unless asked (see the module comment). */
export const DEFAULT_EMBEDDING_BITS: Bits = 8;
/** Quantized layers compared per calibration pass (bounds the activations held at once). */
const PROBE_CHUNK = 32;

export type LayerKind = 'matmul' | 'gemm' | 'conv' | 'embedding';
export type QuantFormat = 'MatMulNBits' | 'DequantizeLinear' | 'GatherBlockQuantized';

export interface QuantizeOptions {
  bits: 8 | 4;
  /**
   * Longest block along K (16..256, a power of two; default 128 for 8 bits, 32 for 4). A layer
   * may take a shorter one when that stores it in fewer bytes (K not a multiple of the block).
   */
  blockSize?: number;
  /** Calibration batches: enables calibration-aware exceptions (`keepFloat`). */
  calibration?: () => Iterable<Feeds> | AsyncIterable<Feeds>;
  /** With calibration: at most this many layers, those with the largest output error, stay float (default 2). */
  keepFloat?: number;
  /**
   * With calibration: a layer stays float only if its error is at least this multiple of the
   * median layer's error (default 1.5), so a model whose layers all quantize alike keeps none.
   * 0 keeps exactly `keepFloat` layers.
   */
  keepFloatRatio?: number;
  /** Embedding tables (Gather): false leaves them float; 8 or 4 sets their bits (default 8; true = 8). */
  embeddings?: boolean | Bits;
  /**
   * Gemm weights: int8 per output channel behind DequantizeLinear (the default, whatever `bits`:
   * Gemms are small classifier heads, where 4 bits cost the most agreement), MatMulNBits at
   * `bits` ('nbits'), or float.
   */
  gemm?: 'float' | 'int8' | 'nbits';
  /**
   * Conv weights: float (the default: with a DequantizeLinear in front, onnxruntime 1.30 cannot
   * prepack the weight and the CNN fixture ran 4-15x slower) or int8 per output channel.
   */
  conv?: 'float' | 'int8';
  /**
   * How a 4-bit exception is stored: at 8 bits when its 8-bit error is under 2 % (the default),
   * else float; 'float' always keeps it float.
   */
  exceptions?: 'int8' | 'float';
  /** MatMulNBits accuracy_level: 4 (int8 compute, the default) or 0 (compute in A's type). */
  accuracyLevel?: 0 | 4;
  log?: (line: string) => void;
}

export interface QuantizedLayer {
  /** The node's name, else its op and first output. */
  node: string;
  kind: LayerKind;
  format: QuantFormat;
  bits: number;
  /** Block length along K (block-wise formats). */
  blockSize?: number;
  /** Bytes of the float weight, and of what replaces it (codes and scales). */
  bytesBefore: number;
  bytesAfter: number;
  /** Relative output error on the calibration data, when measured. */
  error?: number;
  /** Why this layer has more bits than asked (a calibration exception stored at 8 bits). */
  exception?: string;
}

export interface KeptFloatLayer {
  node: string;
  reason: string;
  error?: number;
}

export interface QuantizeResult {
  model: OnnxModel;
  quantized: QuantizedLayer[];
  keptFloat: KeptFloatLayer[];
  /** The quantized layers' weights: float bytes, and bytes of what replaced them. */
  weightBytesBefore: number;
  weightBytesAfter: number;
}

/** A weight op that can be quantized, with the replacement built for it. */
interface Candidate {
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
  error?: number;
  /** The same layer at 8 bits, for a 4-bit MatMulNBits layer (see `exceptions`). */
  at8Bits?: () => Candidate;
  exception?: string;
}

/**
 * Quantizes the weights of `model` (see the module comment). Returns the quantized copy, what was
 * quantized (bytes before and after per layer) and what stayed float, and why.
 */
export async function quantizeModel(model: OnnxModel, options: QuantizeOptions): Promise<QuantizeResult> {
  const opts = checkOptions(options);
  const work = model.clone();
  const log = options.log ?? (() => {});
  const keptFloat: KeptFloatLayer[] = [];
  const candidates = planCandidates(work, opts, keptFloat);
  log(`quantize: ${candidates.length} layers to quantize (${opts.bits} bits, blocks up to ${opts.blockSize})`);

  if (opts.calibration && candidates.length > 0) {
    await measureErrors(work, candidates, opts.calibration, log);
    const ranked = [...candidates].sort((a, b) => (b.error ?? 0) - (a.error ?? 0));
    const median = medianOf(ranked.map((c) => c.error ?? 0));
    // An exception must stand out from the other layers and matter on its own: at int8 every
    // layer's error is a fraction of a percent, and a float layer would cost bytes for nothing.
    const keep = ranked
      .slice(0, opts.keepFloat)
      .filter((c) => (c.error ?? 0) > 0 && (c.error ?? 0) >= opts.keepFloatRatio * median && (c.error ?? 0) >= KEEP_FLOAT_MIN_ERROR);
    const measured = candidates.length;
    const reasons = new Map(
      keep.map((c, rank) => [c, `largest output error on the calibration data (${rank + 1} of ${measured}: ${formatError(c.error)}, ${(c.error! / median).toFixed(1)}x the median layer's)`]),
    );
    // A 4-bit exception is first tried at 8 bits, measured the same way.
    const wider = new Map(opts.exceptions === 'int8' ? keep.flatMap((c) => (c.at8Bits ? [[c, c.at8Bits()] as const] : [])) : []);
    if (wider.size > 0) await measureErrors(work, [...wider.values()], opts.calibration, log);
    for (const c of keep) {
      const at8 = wider.get(c);
      if (at8 && (at8.error ?? Infinity) < KEEP_FLOAT_MIN_ERROR) {
        at8.exception = `${reasons.get(c)}; at 8 bits: ${formatError(at8.error)}`;
        candidates[candidates.indexOf(c)] = at8;
        continue;
      }
      keptFloat.push({ node: c.label, reason: reasons.get(c)!, error: c.error });
      candidates.splice(candidates.indexOf(c), 1);
    }
  }

  const original = new Set(model.constantNames());
  const weights = new Set(candidates.map((c) => c.weight));
  apply(work, candidates, (name) => weights.has(name) || !original.has(name));
  await verify(model, work);
  const quantized = candidates.map(
    (c): QuantizedLayer => ({
      node: c.label,
      kind: c.kind,
      format: c.format,
      bits: c.bits,
      ...(c.blockSize ? { blockSize: c.blockSize } : {}),
      bytesBefore: c.bytesBefore,
      bytesAfter: c.bytesAfter,
      ...(c.error !== undefined ? { error: c.error } : {}),
      ...(c.exception ? { exception: c.exception } : {}),
    }),
  );
  const weightBytesBefore = quantized.reduce((s, q) => s + q.bytesBefore, 0);
  const weightBytesAfter = quantized.reduce((s, q) => s + q.bytesAfter, 0);
  log(`quantize: ${quantized.length} layers quantized, weights ${weightBytesBefore} -> ${weightBytesAfter} bytes; ${keptFloat.length} kept float`);
  return { model: work, quantized, keptFloat, weightBytesBefore, weightBytesAfter };
}

type CheckedOptions = Required<Omit<QuantizeOptions, 'calibration' | 'log' | 'embeddings'>> & {
  calibration?: QuantizeOptions['calibration'];
  embeddings: Bits | false;
  /** Longest block of the embedding tables (their bits may differ from `bits`). */
  embeddingBlockSize: number;
};

function checkOptions(o: QuantizeOptions): CheckedOptions {
  if (o.bits !== 8 && o.bits !== 4) throw new UserError(`quantize: bits must be 8 or 4 (got ${String(o.bits)})`);
  const blockSize = o.blockSize ?? DEFAULT_BLOCK_SIZE[o.bits];
  if (!Number.isInteger(blockSize) || blockSize < 16 || blockSize > 256 || (blockSize & (blockSize - 1)) !== 0) {
    throw new UserError(`quantize: block size must be a power of two from 16 to 256 (got ${blockSize})`);
  }
  const keepFloat = o.keepFloat ?? DEFAULT_KEEP_FLOAT;
  if (!Number.isInteger(keepFloat) || keepFloat < 0) throw new UserError(`quantize: keepFloat must be a whole number >= 0 (got ${keepFloat})`);
  const keepFloatRatio = o.keepFloatRatio ?? DEFAULT_KEEP_FLOAT_RATIO;
  if (!(keepFloatRatio >= 0)) throw new UserError(`quantize: keepFloatRatio must be a number >= 0 (got ${keepFloatRatio})`);
  const embeddings = o.embeddings === undefined || o.embeddings === true ? DEFAULT_EMBEDDING_BITS : o.embeddings;
  if (embeddings !== false && embeddings !== 8 && embeddings !== 4) {
    throw new UserError(`quantize: embeddings must be true, false, 8 or 4 (got ${String(o.embeddings)})`);
  }
  return {
    bits: o.bits,
    blockSize,
    keepFloat,
    keepFloatRatio,
    embeddings,
    embeddingBlockSize: o.blockSize ?? DEFAULT_BLOCK_SIZE[embeddings || o.bits],
    gemm: o.gemm ?? 'int8',
    conv: o.conv ?? 'float',
    accuracyLevel: o.accuracyLevel ?? 4,
    exceptions: o.exceptions ?? 'int8',
    calibration: o.calibration,
  };
}

function medianOf(values: number[]): number {
  const s = [...values].sort((a, b) => a - b);
  if (s.length === 0) return 0;
  const mid = s.length >> 1;
  return s.length % 2 ? s[mid] : (s[mid - 1] + s[mid]) / 2;
}

function formatError(e: number | undefined): string {
  return e === undefined ? 'not measured' : `relative error ${e.toPrecision(3)}`;
}

// ---------------------------------------------------------------------------------------------
// Finding the layers and quantizing their weights
// ---------------------------------------------------------------------------------------------

function isFloatWeight(dtype: number): boolean {
  return dtype === DataType.FLOAT || dtype === DataType.FLOAT16;
}

const int = (name: string, i: number) => onnx.AttributeProto.create({ name, type: onnx.AttributeProto.AttributeType.INT, i });

/**
 * Walks the top-level graph and builds a candidate for every quantizable weight op. Quantized
 * initializers are added to `work` right away (shared by every op that reads the same weight);
 * the ops themselves are only rewritten by `apply`, so the float graph can still be probed.
 */
function planCandidates(work: OnnxModel, opts: CheckedOptions, keptFloat: KeptFloatLayer[]): Candidate[] {
  const candidates: Candidate[] = [];
  const cache: Cache = new Map();
  const opset = work.defaultOpset ?? 1;
  const skip = (node: onnx.NodeProto, reason: string) => keptFloat.push({ node: nodeLabel(node), reason });

  for (const node of work.graph.node as onnx.NodeProto[]) {
    const domain = node.domain ?? '';
    if (domain !== '' && domain !== 'ai.onnx') continue;
    const op = node.opType;
    if (op === 'MatMul' || op === 'Gemm') {
      const w = node.input[1];
      const info = w ? work.constantInfo(w) : undefined;
      if (!info || info.dims.length !== 2 || !isFloatWeight(info.dtype) || work.isConstant(node.input[0])) continue;
      if (op === 'MatMul') {
        candidates.push(nbitsCandidate(work, node, 'matmul', w, false, undefined, opts, cache));
        continue;
      }
      // Gemm
      if (opts.gemm === 'float') {
        skip(node, 'Gemm weights stay float (gemm: float)');
        continue;
      }
      if (opts.gemm === 'nbits') {
        const c = node.input[2];
        const cInfo = c ? work.constantInfo(c) : undefined;
        const n = info.dims[attrInt(node, 'transB', 0) ? 0 : 1];
        const plain =
          attrInt(node, 'transA', 0) === 0 &&
          attrFloat(node, 'alpha', 1) === 1 &&
          (!c || (attrFloat(node, 'beta', 1) === 1 && cInfo?.dims.length === 1 && cInfo.dims[0] === n && cInfo.dtype === info.dtype));
        if (!plain) {
          skip(node, 'Gemm with transA, alpha, beta or a bias that is not a [N] constant: left float');
          continue;
        }
        candidates.push(nbitsCandidate(work, node, 'gemm', w, !!attrInt(node, 'transB', 0), c || undefined, opts, cache));
        continue;
      }
      const axis = attrInt(node, 'transB', 0) ? 0 : 1;
      const cand = dequantizeCandidate(work, node, 'gemm', w, axis, opset, cache, skip);
      if (cand) candidates.push(cand);
    } else if (op === 'Conv') {
      const w = node.input[1];
      const info = w ? work.constantInfo(w) : undefined;
      if (!info || !isFloatWeight(info.dtype)) continue;
      if (opts.conv === 'float') {
        skip(node, 'Conv weights stay float (conv: float)');
        continue;
      }
      const cand = dequantizeCandidate(work, node, 'conv', w, 0, opset, cache, skip);
      if (cand) candidates.push(cand);
    } else if (op === 'Gather') {
      const table = node.input[0];
      const info = table ? work.constantInfo(table) : undefined;
      if (!info || info.dims.length !== 2 || !isFloatWeight(info.dtype) || attrInt(node, 'axis', 0) !== 0) continue;
      if (work.isConstant(node.input[1])) continue; // a constant row pick: folded by the runtime anyway
      if (opts.embeddings === false) {
        skip(node, 'embedding tables stay float (embeddings: false)');
        continue;
      }
      const cand = embeddingCandidate(work, node, table, info.dims, opts.embeddings, opts.embeddingBlockSize, cache, skip);
      if (cand) candidates.push(cand);
    }
  }
  // A layer whose codes and scales are not smaller than its float weight (tiny K padded to a
  // whole block) gains nothing.
  return candidates.filter((c) => {
    if (c.bytesAfter < c.bytesBefore) return true;
    skip(c.node, `too small to gain from quantization (${c.bytesBefore} bytes float, ${c.bytesAfter} quantized)`);
    return false;
  });
}

type CacheEntry = { names: string[]; bytes: number; blockSize?: number; shared: onnx.NodeProto[] };
type Cache = Map<string, CacheEntry>;
type Skip = (node: onnx.NodeProto, reason: string) => void;

/**
 * The block-wise codes and scales of `weight` (see ./pack.ts), stored once per `key` as two
 * initializers, `<weight>_Q<bits>` shaped by `codesDims(blocks)` and `<weight>_scales` [rows of
 * the result, blocks] in the weight's float type.
 */
function storeBlocks(
  work: OnnxModel,
  cache: Cache,
  key: string,
  weight: string,
  layout: { bits: Bits; blockSize: number; transposed: boolean; outputs: number; codesDims: (blocks: number) => number[] },
): CacheEntry {
  const cached = cache.get(key);
  if (cached) return cached;
  const w = readWeight(work, weight);
  const { bits, blockSize, transposed } = layout;
  const q = quantizeBlocks(w.values, w.dims[0], w.dims[1], { bits, blockSize, transposed });
  const codes = work.uniqueName(`${weight}_Q${bits}`);
  work.addInitializer(codes, { dtype: DataType.UINT8, dims: layout.codesDims(q.blocks), data: q.packed });
  const scales = work.uniqueName(`${weight}_scales`);
  work.addInitializer(scales, scaleTensor(q.scales, w.dtype, [layout.outputs, q.blocks]));
  const entry = { names: [codes, scales], bytes: q.packed.byteLength + q.scales.length * dtypeInfo(w.dtype).bytes, blockSize, shared: [] };
  cache.set(key, entry);
  return entry;
}

function weightBytes(work: OnnxModel, name: string): number {
  const info = work.constantInfo(name)!;
  return tensorBytes(info.dtype, info.dims);
}

/** Float values of a weight, and the type its scales take (A's type: the weight's). */
function readWeight(work: OnnxModel, name: string): { values: Float32Array; dtype: DataType; dims: number[] } {
  const t = work.constant(name)!;
  return { values: toFloat32(t), dtype: t.dtype, dims: t.dims };
}

function scaleTensor(values: Float32Array, dtype: DataType, dims: number[]): Tensor {
  return dtype === DataType.FLOAT ? { dtype, dims, data: values } : fromFloat32(values, dtype, dims);
}

/** MatMul (B [K, N]) or Gemm (B [K, N], or [N, K] with transB) -> MatMulNBits. */
function nbitsCandidate(
  work: OnnxModel,
  node: onnx.NodeProto,
  kind: 'matmul' | 'gemm',
  weight: string,
  transposed: boolean,
  bias: string | undefined,
  opts: CheckedOptions,
  cache: Cache,
): Candidate {
  const info = work.constantInfo(weight)!;
  const [k, n] = transposed ? [info.dims[1], info.dims[0]] : info.dims;
  const blockSize = blockSizeFor(k, opts.blockSize, opts.bits, dtypeInfo(info.dtype).bytes);
  const entry = storeBlocks(work, cache, `nbits:${weight}:${transposed}:${opts.bits}:${blockSize}`, weight, {
    bits: opts.bits,
    blockSize,
    transposed,
    outputs: n,
    codesDims: (blocks) => [n, blocks, (blockSize * opts.bits) / 8],
  });
  const [bName, sName] = entry.names;
  const a = node.input[0];
  const name = node.name;
  const accuracy = opts.accuracyLevel;
  const bits = opts.bits;
  const at8Bits =
    bits === 4 ? () => nbitsCandidate(work, node, kind, weight, transposed, bias, { ...opts, bits: 8, blockSize: DEFAULT_BLOCK_SIZE[8] }, cache) : undefined;
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
    build: (outputs) => [
      onnx.NodeProto.create({
        name: name ? `${name}_Q${bits}` : '',
        opType: 'MatMulNBits',
        domain: MS_DOMAIN,
        input: bias ? [a, bName, sName, '', '', bias] : [a, bName, sName],
        output: outputs,
        attribute: [int('K', k), int('N', n), int('bits', bits), int('block_size', blockSize), int('accuracy_level', accuracy)],
      }),
    ],
  };
}

/** Gemm/Conv weight -> int8 per output channel + DequantizeLinear feeding the op. */
function dequantizeCandidate(
  work: OnnxModel,
  node: onnx.NodeProto,
  kind: 'gemm' | 'conv',
  weight: string,
  axis: number,
  opset: number,
  cache: Cache,
  skip: Skip,
): Candidate | undefined {
  const info = work.constantInfo(weight)!;
  // DequantizeLinear has a per-axis scale from opset 13, and a float16 output from opset 19.
  const needed = info.dtype === DataType.FLOAT ? 13 : 19;
  if (opset < needed) {
    skip(node, `DequantizeLinear per channel${info.dtype === DataType.FLOAT ? '' : ' to float16'} needs opset ${needed} (model: ${opset})`);
    return undefined;
  }
  const key = `dq:${weight}:${axis}`;
  let entry = cache.get(key);
  if (!entry) {
    const w = readWeight(work, weight);
    const q = quantizePerChannel(w.values, w.dims, axis);
    const qName = work.uniqueName(`${weight}_int8`);
    work.addInitializer(qName, { dtype: DataType.INT8, dims: w.dims, data: q.codes });
    const sName = work.uniqueName(`${weight}_scale`);
    work.addInitializer(sName, scaleTensor(q.scales, w.dtype, [q.scales.length]));
    const out = work.uniqueName(`${weight}_dequantized`);
    const dq = onnx.NodeProto.create({
      name: `${out}_DequantizeLinear`,
      opType: 'DequantizeLinear',
      input: [qName, sName],
      output: [out],
      attribute: [int('axis', axis)],
    });
    entry = { names: [out], bytes: q.codes.byteLength + q.scales.length * dtypeInfo(w.dtype).bytes, shared: [dq] };
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

/** Gather on a [V, D] table -> GatherBlockQuantized, codes along D (gather_axis 0, quantize_axis 1). */
function embeddingCandidate(
  work: OnnxModel,
  node: onnx.NodeProto,
  table: string,
  dims: number[],
  bits: Bits,
  wantedBlock: number,
  cache: Cache,
  skip: Skip,
): Candidate | undefined {
  const [v, d] = dims;
  // GatherBlockQuantized stores D values a row, unpadded: the block must divide D.
  let blockSize = blockSizeFor(d, wantedBlock, bits, dtypeInfo(work.constantInfo(table)!.dtype).bytes);
  while (blockSize > 16 && d % blockSize !== 0) blockSize /= 2;
  if (d % blockSize !== 0) {
    skip(node, `embedding width ${d} is not a multiple of 16: left float`);
    return undefined;
  }
  // GatherBlockQuantized keeps each row's D values unpadded (the block divides D).
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

// ---------------------------------------------------------------------------------------------
// Calibration-aware exceptions
// ---------------------------------------------------------------------------------------------

/**
 * Sets `error` on every candidate: ||Y - Ŷ|| / ||Y|| over the calibration batches, Y the float
 * layer's output and Ŷ its quantized twin's, both computed in one run from the same input (the
 * float model's activation), so each layer's error is its own, not accumulated from upstream.
 * Layers are probed `PROBE_CHUNK` at a time to bound the activations held per run.
 */
async function measureErrors(
  work: OnnxModel,
  candidates: Candidate[],
  calibration: () => Iterable<Feeds> | AsyncIterable<Feeds>,
  log: (line: string) => void,
): Promise<void> {
  for (let start = 0; start < candidates.length; start += PROBE_CHUNK) {
    const chunk = candidates.slice(start, start + PROBE_CHUNK);
    const probe = work.clone();
    const graph = probe.graph;
    const pairs: [string, string][] = [];
    const shared = new Set<onnx.NodeProto>();
    for (const c of chunk) {
      const y = c.node.output[0];
      const twin = probe.uniqueName(`${y}__quantized`);
      for (const s of c.shared) shared.add(s);
      graph.node.push(...c.build([twin]));
      graph.output.push(onnx.ValueInfoProto.create({ name: twin }));
      if (!graph.output.some((o) => o.name === y)) graph.output.push(onnx.ValueInfoProto.create({ name: y }));
      pairs.push([y, twin]);
    }
    graph.node = [...shared, ...graph.node];
    addMsOpset(probe);
    const session = await sessionForProto(work, probe.proto);
    const sums = chunk.map(() => ({ diff: 0, ref: 0 }));
    try {
      const fetches = [...new Set(pairs.flat())];
      for await (const feeds of calibration()) {
        const out = await session.run(feeds, fetches);
        pairs.forEach(([y, twin], i) => {
          const a = floatData(out[y]);
          const b = floatData(out[twin]);
          let diff = 0;
          let ref = 0;
          for (let j = 0; j < a.length; j++) {
            diff += (a[j] - b[j]) ** 2;
            ref += a[j] * a[j];
          }
          sums[i].diff += diff;
          sums[i].ref += ref;
        });
      }
    } finally {
      await session.release();
    }
    chunk.forEach((c, i) => {
      c.error = sums[i].ref > 0 ? Math.sqrt(sums[i].diff / sums[i].ref) : sums[i].diff > 0 ? Infinity : 0;
      log(`quantize: ${c.label} at ${c.bits} bits: output ${formatError(c.error)}`);
    });
  }
}

function floatData(t: ort.Tensor): Float32Array | Float64Array {
  if (t.type === 'float16') return Float32Array.from(t.data as Uint16Array, halfToFloat);
  return t.data as Float32Array;
}

// ---------------------------------------------------------------------------------------------
// Rewriting the graph
// ---------------------------------------------------------------------------------------------

function addMsOpset(model: OnnxModel): void {
  const uses = model.graph.node.some((n) => n.domain === MS_DOMAIN);
  if (uses && !model.proto.opsetImport.some((o) => o.domain === MS_DOMAIN)) {
    model.proto.opsetImport.push(onnx.OperatorSetIdProto.create({ domain: MS_DOMAIN, version: 1 }));
  }
}

/**
 * Replaces every candidate's op by its quantized form, places shared DequantizeLinear nodes
 * first (they read initializers only), drops the float weights nothing reads any more, and the
 * quantized initializers of layers that were kept float (`removable` says which names are
 * those). Other unread tensors of the model are left as they were.
 */
function apply(work: OnnxModel, candidates: Candidate[], removable: (name: string) => boolean): void {
  const graph = work.graph;
  const byNode = new Map(candidates.map((c) => [c.node, c]));
  const shared = new Set<onnx.NodeProto>();
  const nodes: onnx.NodeProto[] = [];
  for (const node of graph.node as onnx.NodeProto[]) {
    const c = byNode.get(node);
    if (!c) {
      nodes.push(node);
      continue;
    }
    for (const s of c.shared) shared.add(s);
    nodes.push(...c.build([...node.output]));
  }
  graph.node = [...shared, ...nodes];
  addMsOpset(work);
  removeUnused(work, removable);
}

/** Drops the initializers and Constant nodes among `removable` that nothing reads any more. */
function removeUnused(work: OnnxModel, removable: (name: string) => boolean): void {
  const graph = work.graph;
  const read = new Set<string>(graph.output.map((o) => o.name ?? ''));
  for (const n of graph.node) for (const i of nodeReads(n)) read.add(i);
  const unread = (name: string) => !read.has(name) && removable(name);
  const dropped = new Set(work.initializers.filter((t) => unread(t.name)).map((t) => t.name));
  if (dropped.size > 0) {
    graph.initializer = work.initializers.filter((t) => !dropped.has(t.name));
    graph.input = graph.input.filter((v) => !dropped.has(v.name ?? ''));
  }
  graph.node = graph.node.filter((n) => !(n.opType === 'Constant' && (n.domain ?? '') === '' && n.output?.length === 1 && unread(n.output[0])));
  work.reindexConstants();
}

/**
 * Runs the quantized model once (batch 1, 4 positions along other dynamic axes) and checks its
 * outputs keep the float model's names, element types and ranks, and every fixed size.
 */
async function verify(original: OnnxModel, quantized: OnnxModel): Promise<void> {
  const expected = graphOutputs(original);
  let session: ort.InferenceSession;
  try {
    session = await createSession(quantized);
  } catch (e) {
    throw new Error(`internal: the quantized model does not load in onnxruntime: ${(e as Error).message}`);
  }
  try {
    const out = await session.run(dummyFeeds(quantized, 1, 4));
    for (const spec of expected) {
      const t = out[spec.name];
      const fits = t && t.dims.length === spec.dims.length && spec.dims.every((d, i) => typeof d !== 'number' || t.dims[i] === d);
      if (!fits) {
        throw new Error(
          `internal: the quantized model's output '${spec.name}' has shape [${t ? t.dims.join(', ') : 'missing'}], expected [${spec.dims.map((d) => d ?? '?').join(', ')}]`,
        );
      }
    }
  } finally {
    await session.release();
  }
}
