/**
 * Quantized inputs (docs/quantization.md, "Pruning a quantized model"): the weights a model holds
 * as com.microsoft `MatMulNBits` or default-domain `DequantizeLinear` codes are "lifted" into
 * float constants the pruning engine treats like any MatMul/Gemm/Conv weight, and each weight
 * that survives is "lowered" back into its own format:
 * - kept exactly when only whole rows of its codes went (a MatMulNBits' output rows N, or its
 *   input columns K in whole blocks; any axis of a DequantizeLinear's codes): the kept codes,
 *   scales and zero points are the original bytes;
 * - else (other input columns K of a MatMulNBits removed, or values refit by compensation)
 *   requantized with the original scheme: bits, block size, symmetric or with zero points, per
 *   tensor or per axis. The relative error of that requantization is reported per weight.
 * A lifted weight is computed from its codes whenever it is read (a deferred tensor, spill.ts):
 * lifting copies no weight.
 */
import { onnx } from 'onnx-proto';
import { attrInt, nodeLabel, setAttrInt } from '../graph/graph';
import { liftBlocker, quantizedWeightOf } from '../graph/quantized';
import { DataType, floatToHalf, halfToFloat } from '../onnx/dtype';
import { OnnxModel } from '../onnx/model';
import { deferTensor } from '../onnx/spill';
import { Tensor, elementCount, fromFloat32, takeAlongAxis, toFloat32 } from '../onnx/tensor';
import { Bits, BlockQuantizer, quantizeAffine, quantizePerChannel } from './pack';

/** A quantized weight standing in the lifted model as the float constant `name`. */
interface LiftedWeight {
  /** The float constant in the lifted model. */
  name: string;
  /** The node that read the codes, as the input model has it. */
  node: onnx.NodeProto;
  /** "MatMulNBits (4-bit, block 32)", "DequantizeLinear (int8, per axis)". */
  format: string;
  /** Shape of the float constant: [K, N] for MatMulNBits, the codes' shape for DequantizeLinear. */
  dims: number[];
  dtype: DataType;
  /** Its values, `count` from row-major element `first` (rows of the float constant). */
  values(first: number, count: number): Float32Array;
}

export interface Lifted {
  /** The input model with its liftable quantized weights as float constants. */
  model: OnnxModel;
  /** The model as given. */
  source: OnnxModel;
  weights: LiftedWeight[];
}

/** What lowering did to one quantized weight. */
export interface LoweredWeight {
  /** The op that reads it (its name in the model). */
  where: string;
  format: string;
  /** `exact`: the kept codes are the original bytes; else why it was requantized. */
  how: 'exact' | 'input columns removed' | 'values refit by compensation';
  /** ‖requantized − pruned float‖ / ‖pruned float‖ of the weight (0 when exact). */
  error: number;
}

/** The report of pruning a quantized model (report.json `quantized_inputs`). */
export interface QuantizedInputsReport {
  /** Weights kept in their format with their original bytes. */
  exact: number;
  /** Weights requantized, with their errors, worst first. */
  requantized: LoweredWeight[];
  /** The worst relative weight error of a requantized weight (0 when none was). */
  worst: number;
}

const nodesOf = (model: OnnxModel) => model.graph.node as onnx.NodeProto[];

/** Bytes of a lifted weight produced per chunk when it is read. */
const CHUNK_BYTES = 8 * 2 ** 20;

/** Float values as the weight's own type stores them (a float16 weight's are rounded to half). */
function roundTo(dtype: DataType): (v: number) => number {
  return dtype === DataType.FLOAT16 ? (v) => halfToFloat(floatToHalf(v)) : Math.fround;
}

/** Each model's lifted form, made once: the gate's statistics tap on the base and its first step share it (and its analysis). */
const liftedForms = new WeakMap<OnnxModel, Lifted | null>();

/**
 * The model with every MatMulNBits and DequantizeLinear weight whose form src/graph/quantized.ts
 * `liftBlocker` accepts as a float constant; undefined when it has none. Others stay as they are
 * (the analysis names them with the reason). The same object for the same model: nothing edits
 * either (pruning works on copies).
 */
export function liftQuantized(source: OnnxModel): Lifted | undefined {
  let lifted = liftedForms.get(source);
  if (lifted === undefined) liftedForms.set(source, (lifted = lift(source) ?? null));
  return lifted ?? undefined;
}

function lift(source: OnnxModel): Lifted | undefined {
  const liftable = nodesOf(source).filter((n) => quantizedWeightOf(source, n) && !liftBlocker(source, n));
  if (liftable.length === 0) return undefined;
  const model = source.clone();
  const names = model.uniqueNames();
  const weights: LiftedWeight[] = [];
  const replaced = new Map<onnx.NodeProto, onnx.NodeProto[]>();
  const byKey = new Map<string, LiftedWeight>();
  const copies = nodesOf(model);
  for (const node of liftable) {
    const copy = copies[nodesOf(source).indexOf(node)];
    if (node.opType === 'MatMulNBits') {
      const key = node.input.slice(1, 4).join('\0') + `\0${attrInt(node, 'block_size', 0)}\0${attrInt(node, 'bits', 4)}`;
      let weight = byKey.get(key);
      if (!weight) byKey.set(key, (weight = liftNBits(source, node, names(`${node.input[1]}_float`))));
      const [a, , , , , bias] = node.input;
      const matmul = onnx.NodeProto.create({ name: node.name, opType: 'MatMul', input: [a, weight.name], output: bias ? [names(`${node.output[0]}_nobias`)] : [node.output[0]] });
      const add = bias ? [onnx.NodeProto.create({ name: `${node.name}_bias`, opType: 'Add', input: [matmul.output[0], bias], output: [node.output[0]] })] : [];
      replaced.set(copy, [matmul, ...add]);
      weights.push(weight);
    } else {
      weights.push(liftDequantize(source, node));
      replaced.set(copy, []);
    }
  }
  model.graph.node = copies.flatMap((n) => replaced.get(n) ?? [n]);
  for (const w of new Set(weights)) {
    const proto = onnx.TensorProto.create({ name: w.name, dataType: w.dtype, dims: w.dims });
    deferTensor(proto, (fn) => streamValues(w, fn));
    model.graph.initializer.push(proto);
  }
  model.reindexConstants();
  const lifted = new Set(liftable.flatMap((n) => n.input.filter(Boolean)));
  model.dropUnread((name) => lifted.has(name));
  return { model, source, weights: [...new Set(weights)] };
}

/** A lifted weight's bytes in chunks of whole rows, as a deferred tensor streams them. */
function streamValues(w: LiftedWeight, fn: (bytes: Uint8Array) => void): void {
  const row = w.dims[w.dims.length - 1] ?? 1;
  const total = elementCount(w.dims);
  const bytesPer = w.dtype === DataType.FLOAT16 ? 2 : 4;
  const step = Math.max(1, Math.floor(CHUNK_BYTES / (row * bytesPer))) * row;
  for (let first = 0; first < total; first += step) {
    const values = w.values(first, Math.min(step, total - first));
    const data = w.dtype === DataType.FLOAT16 ? (fromFloat32(values, DataType.FLOAT16, [values.length]).data as Uint16Array) : values;
    fn(new Uint8Array(data.buffer, data.byteOffset, data.byteLength));
  }
}

/** A MatMulNBits' parts, read once: codes [N, blocks, blob], scales [N, blocks], zero points unpacked [N, blocks]. */
function nbitsParts(model: OnnxModel, node: onnx.NodeProto) {
  const [k, n] = [attrInt(node, 'K', 0), attrInt(node, 'N', 0)];
  const bits = attrInt(node, 'bits', 4) as Bits;
  const blockSize = attrInt(node, 'block_size', 0);
  const blocks = Math.ceil(k / blockSize);
  const codes = model.constant(node.input[1])!.data as Uint8Array;
  const scales = toFloat32(model.constant(node.input[2])!);
  const zpBytes = node.input[3] ? (model.constant(node.input[3])!.data as Uint8Array) : undefined;
  let zeroPoints: Uint8Array | undefined;
  if (zpBytes) {
    // 4 bits: two to a byte along the blocks, low nibble first, each row padded to whole bytes.
    const perRow = Math.ceil((blocks * bits) / 8);
    zeroPoints = new Uint8Array(n * blocks);
    for (let r = 0; r < n; r++) {
      for (let b = 0; b < blocks; b++) zeroPoints[r * blocks + b] = bits === 8 ? zpBytes[r * perRow + b] : (zpBytes[r * perRow + (b >> 1)] >> ((b & 1) * 4)) & 0xf;
    }
  }
  return { k, n, bits, blockSize, blocks, codes, scales, zeroPoints };
}

/**
 * The parts of the weight read last: a lifted weight is read a chunk at a time, weight after
 * weight, so one weight's codes are in memory at a time, not the model's.
 */
let lastRead: { key: object; parts: unknown } | undefined;
function readOnce<P>(key: object, read: () => P): P {
  if (lastRead?.key !== key) lastRead = { key, parts: read() };
  return lastRead.parts as P;
}

function liftNBits(model: OnnxModel, node: onnx.NodeProto, name: string): LiftedWeight {
  const [k, n] = [attrInt(node, 'K', 0), attrInt(node, 'N', 0)];
  const bits = attrInt(node, 'bits', 4);
  const blockSize = attrInt(node, 'block_size', 0);
  const blob = (blockSize * bits) / 8;
  const dtype = model.constantInfo(node.input[2])!.dtype;
  const round = roundTo(dtype);
  const zp = 1 << (bits - 1);
  const key = {};
  return {
    name,
    node,
    format: `MatMulNBits (${bits}-bit, block ${blockSize}${node.input[3] ? ', zero points' : ''})`,
    dims: [k, n],
    dtype,
    // Element (kk, col) of [K, N] is value kk of output row col: codes [col, kk / block, ...].
    values(first, count) {
      const { blocks, codes, scales, zeroPoints } = readOnce(key, () => nbitsParts(model, node));
      const out = new Float32Array(count);
      // Row kk of [K, N] at a time: one block index and one byte offset within it for the row.
      for (let i = 0, col = first % n, kk = Math.floor(first / n); i < count; kk++, col = 0) {
        const b = Math.floor(kk / blockSize);
        const j = kk % blockSize;
        const [offset, shift] = bits === 8 ? [j, 0] : [j >> 1, (j & 1) * 4];
        for (; col < n && i < count; col++, i++) {
          const block = col * blocks + b;
          const code = (codes[block * blob + offset] >> shift) & (bits === 8 ? 0xff : 0xf);
          out[i] = round((code - (zeroPoints ? zeroPoints[block] : zp)) * scales[block]);
        }
      }
      return out;
    },
  };
}

/** A DequantizeLinear's axis (normalized) when its scale has one value per index of it, else undefined (per tensor). */
function dequantizeAxis(model: OnnxModel, node: onnx.NodeProto): number | undefined {
  const rank = model.constantInfo(node.input[0])!.dims.length;
  const scale = model.constantInfo(node.input[1])!;
  return elementCount(scale.dims) === 1 ? undefined : (attrInt(node, 'axis', 1) + rank) % rank;
}

function liftDequantize(model: OnnxModel, node: onnx.NodeProto): LiftedWeight {
  const codesInfo = model.constantInfo(node.input[0])!;
  const key = {};
  const parts = () =>
    readOnce(key, () => ({
      codes: model.constant(node.input[0])!.data as Int8Array | Uint8Array,
      scales: toFloat32(model.constant(node.input[1])!),
      zeroPoints: node.input[2] ? (model.constant(node.input[2])!.data as Int8Array | Uint8Array) : undefined,
    }));
  const axis = dequantizeAxis(model, node);
  const dims = codesInfo.dims;
  const inner = axis === undefined ? 1 : elementCount(dims.slice(axis + 1));
  const channels = axis === undefined ? 1 : dims[axis];
  const dtype = model.constantInfo(node.input[1])!.dtype;
  const round = roundTo(dtype);
  return {
    name: node.output[0],
    node,
    format: `DequantizeLinear (${codesInfo.dtype === DataType.INT8 ? 'int8' : 'uint8'}, ${axis === undefined ? 'per tensor' : 'per axis'})`,
    dims,
    dtype,
    values(first, count) {
      const { codes, scales, zeroPoints } = parts();
      const out = new Float32Array(count);
      for (let i = 0; i < count; i++) {
        const c = axis === undefined ? 0 : Math.floor((first + i) / inner) % channels;
        out[i] = round((codes[first + i] - (zeroPoints ? zeroPoints[c] : 0)) * scales[c]);
      }
      return out;
    },
  };
}

/** Indices kept along one axis of a lifted weight: `removed` (sorted) left out of 0..size-1. */
function keptIndices(size: number, removed: readonly number[] | undefined): number[] {
  const gone = new Set(removed ?? []);
  const kept: number[] = [];
  for (let i = 0; i < size; i++) if (!gone.has(i)) kept.push(i);
  return kept;
}

/**
 * The pruned lifted model with each surviving lifted weight back in its format. `removed(name,
 * axis)`: the indices of the lifted weight `name` that pruning removed along `axis`, in the
 * lifted model's numbering (PruneResult.sliced).
 */
export function lowerQuantized(lifted: Lifted, pruned: OnnxModel, removed: (name: string, axis: number) => readonly number[] | undefined): { model: OnnxModel; report: QuantizedInputsReport } {
  const model = pruned.clone();
  const lowered: LoweredWeight[] = [];
  const front: onnx.NodeProto[] = [];
  for (const w of lifted.weights) {
    const info = model.constantInfo(w.name);
    if (!info) continue; // nothing reads it any more
    const kept = w.dims.map((size, axis) => keptIndices(size, removed(w.name, axis)));
    if (kept.some((k, axis) => k.length !== info.dims[axis])) throw new Error(`internal: ${w.name} is ${info.dims.join('x')}, its kept indices say ${kept.map((k) => k.length).join('x')}`);
    const values = toFloat32(model.constant(w.name)!);
    const unchanged = sameValues(w, kept, values);
    let how: LoweredWeight['how'] = !unchanged ? 'values refit by compensation' : w.node.opType === 'MatMulNBits' && kept[0].length < w.dims[0] ? 'input columns removed' : 'exact';
    // Input columns that went as whole blocks leave every kept block's bytes as they were.
    if (how === 'input columns removed' && wholeBlocks(kept[0], attrInt(w.node, 'block_size', 0), w.dims[0]).length === Math.ceil(kept[0].length / attrInt(w.node, 'block_size', 0))) how = 'exact';
    const error = w.node.opType === 'MatMulNBits' ? lowerNBits(lifted.source, model, w, kept, values, how) : lowerDequantize(lifted.source, model, w, kept, values, how === 'exact', front);
    lowered.push({ where: nodeLabel(w.node), format: w.format, how, error });
  }
  model.graph.node = [...front, ...model.graph.node];
  model.reindexConstants();
  model.dropUnread((name) => lifted.weights.some((w) => w.name === name));
  const requantized = lowered.filter((l) => l.how !== 'exact').sort((a, b) => b.error - a.error);
  return { model, report: { exact: lowered.length - requantized.length, requantized, worst: requantized[0]?.error ?? 0 } };
}

/** Whether the pruned weight's values are the lifted ones at the kept indices (no compensation touched it). */
function sameValues(w: LiftedWeight, kept: number[][], values: Float32Array): boolean {
  const dims = w.dims;
  const rowLength = dims[dims.length - 1];
  const lastKept = kept[kept.length - 1];
  let at = 0;
  // Every kept row of the original (its multi-index over the leading axes), in order.
  const leading = kept.slice(0, -1);
  const index = new Array<number>(leading.length).fill(0);
  const rows = leading.reduce((a, k) => a * k.length, 1);
  for (let r = 0; r < rows; r++) {
    let row = 0;
    for (let a = 0; a < leading.length; a++) row = row * dims[a] + leading[a][index[a]];
    const original = w.values(row * rowLength, rowLength);
    for (const c of lastKept) if (original[c] !== values[at++]) return false;
    for (let a = leading.length - 1; a >= 0; a--) {
      if (++index[a] < leading[a].length) break;
      index[a] = 0;
    }
  }
  return true;
}

/** ‖q − w‖ / ‖w‖. */
function relativeError(q: Float32Array, w: Float32Array): number {
  let num = 0;
  let den = 0;
  for (let i = 0; i < w.length; i++) {
    num += (q[i] - w[i]) ** 2;
    den += w[i] ** 2;
  }
  return den > 0 ? Math.sqrt(num / den) : 0;
}

function setOrAdd(model: OnnxModel, name: string, value: Tensor): void {
  if (model.isConstant(name)) model.setConstant(name, value);
  else model.addInitializer(name, value);
}

/**
 * A lifted MatMulNBits weight back as MatMulNBits, K and N its new sizes: the kept output rows'
 * bytes when `exact`, else `values` ([K', N']) requantized with the same bits, block size and
 * zero points or none, except, when only input columns went, the blocks that are whole original
 * blocks (heads of a multiple of the block size removed from an output projection take whole
 * blocks): those keep their bytes. Every MatMul that reads the lifted weight becomes one.
 * Returns the requantization error.
 */
function lowerNBits(source: OnnxModel, model: OnnxModel, w: LiftedWeight, kept: number[][], values: Float32Array, how: LoweredWeight['how']): number {
  // Whole rows, zero points' bytes included; else block by block.
  const rowsOnly = how === 'exact' && kept[0].length === w.dims[0];
  const { node } = w;
  const { bits, blockSize, blocks, codes, scales, zeroPoints } = nbitsParts(source, node);
  const [k, n] = [kept[0].length, kept[1].length];
  const scaleType = source.constantInfo(node.input[2])!.dtype;
  const blob = (blockSize * bits) / 8;
  const zpRow = (b: number) => Math.ceil((b * bits) / 8);
  const [, codesName, scalesName, zpName] = node.input;
  let error = 0;
  if (rowsOnly) {
    const rows = kept[1];
    const zpBytes = zpName ? (source.constant(zpName)!.data as Uint8Array) : undefined;
    const newCodes = new Uint8Array(n * blocks * blob);
    const newScales = new Float32Array(n * blocks);
    const newZp = zpBytes && new Uint8Array(n * zpRow(blocks));
    rows.forEach((r, i) => {
      newCodes.set(codes.subarray(r * blocks * blob, (r + 1) * blocks * blob), i * blocks * blob);
      newScales.set(scales.subarray(r * blocks, (r + 1) * blocks), i * blocks);
      newZp?.set(zpBytes!.subarray(r * zpRow(blocks), (r + 1) * zpRow(blocks)), i * zpRow(blocks));
    });
    // Scales go back in their own type: float16 values are read from it and written exactly.
    writeNBits(model, node, n, newCodes, fromFloat32(newScales, scaleType, scaleDims(source, scalesName, n, blocks)), newZp && { dtype: DataType.UINT8, dims: sameRank(source, zpName, n, newZp.length), data: newZp });
  } else {
    const quantizer = new BlockQuantizer(k, n, { bits, blockSize, zeroPoints: !!zeroPoints });
    quantizer.add(values);
    const q = quantizer.finish();
    if (how !== 'values refit by compensation') {
      for (const [to, from] of wholeBlocks(kept[0], blockSize, readAttr(node, 'K'))) {
        kept[1].forEach((row, col) => {
          q.packed.set(codes.subarray((row * blocks + from) * blob, (row * blocks + from + 1) * blob), (col * q.blocks + to) * blob);
          q.scales[col * q.blocks + to] = scales[row * blocks + from];
          if (q.zeroPoints) q.zeroPoints[col * q.blocks + to] = zeroPoints![row * blocks + from];
        });
      }
    }
    let packedZp: Uint8Array | undefined;
    if (q.zeroPoints) {
      packedZp = new Uint8Array(n * zpRow(q.blocks));
      for (let r = 0; r < n; r++) {
        for (let b = 0; b < q.blocks; b++) {
          const z = q.zeroPoints[r * q.blocks + b];
          if (bits === 8) packedZp[r * zpRow(q.blocks) + b] = z;
          else packedZp[r * zpRow(q.blocks) + (b >> 1)] |= z << ((b & 1) * 4);
        }
      }
    }
    const scaleTensor = fromFloat32(q.scales, scaleType, scaleDims(source, scalesName, n, q.blocks));
    writeNBits(model, node, n, q.packed, scaleTensor, packedZp && { dtype: DataType.UINT8, dims: sameRank(source, zpName, n, packedZp.length), data: packedZp });
    // The error of what onnxruntime will compute with: the scales as stored.
    const stored = toFloat32(scaleTensor);
    const round = roundTo(w.dtype);
    const dequantized = new Float32Array(k * n);
    for (let col = 0; col < n; col++) {
      for (let kk = 0; kk < k; kk++) {
        const b = Math.floor(kk / blockSize);
        const j = kk % blockSize;
        const at = (col * q.blocks + b) * blob;
        const code = bits === 8 ? q.packed[at + j] : (q.packed[at + (j >> 1)] >> ((j & 1) * 4)) & 0xf;
        const z = q.zeroPoints ? q.zeroPoints[col * q.blocks + b] : 1 << (bits - 1);
        dequantized[kk * n + col] = round((code - z) * stored[col * q.blocks + b]);
      }
    }
    error = relativeError(dequantized, values);
  }
  for (const matmul of nodesOf(model).filter((m) => m.opType === 'MatMul' && m.input[1] === w.name)) {
    // Each lifted MatMul carries the name of the MatMulNBits it stands for (lift).
    const bias = nodesOf(model).find((m) => m.name === `${matmul.name}_bias` && m.opType === 'Add' && m.input[0] === matmul.output[0]);
    const copy = onnx.NodeProto.decode(onnx.NodeProto.encode(node).finish());
    copy.name = matmul.name;
    setAttrInt(copy, 'K', k);
    setAttrInt(copy, 'N', n);
    // The bias, sliced with the output rows, back in its slot (input 5); its Add gone, nowhere:
    // never added twice.
    const rest = copy.input.slice(1, 5);
    if (bias) rest.push(...new Array<string>(4 - rest.length).fill(''), bias.input[1]);
    copy.input = [matmul.input[0], ...rest];
    copy.output = [bias ? bias.output[0] : matmul.output[0]];
    if (bias) model.graph.node.splice(model.graph.node.indexOf(bias), 1);
    model.graph.node.splice(model.graph.node.indexOf(matmul), 1, copy);
  }
  return error;
}

const readAttr = (node: onnx.NodeProto, name: string) => attrInt(node, name, 0);

/**
 * The new blocks that are whole original blocks, as [new block, original block]: the kept
 * indices along K (`kept`, of `k`) that fill new block b are exactly original block c's, in
 * order (a last, shorter block counts when it is the last of both).
 */
function wholeBlocks(kept: number[], blockSize: number, k: number): [number, number][] {
  const pairs: [number, number][] = [];
  for (let b = 0; b * blockSize < kept.length; b++) {
    const run = kept.slice(b * blockSize, (b + 1) * blockSize);
    const c = run[0] / blockSize;
    const length = Math.min(blockSize, k - run[0]);
    const isLast = (b + 1) * blockSize >= kept.length;
    if (!Number.isInteger(c) || run.length !== length || (run.length < blockSize && !isLast)) continue;
    if (run.every((v, i) => v === run[0] + i)) pairs.push([b, c]);
  }
  return pairs;
}

/** A [N, ...] tensor's shape of `length` elements as the input had it: [N, length / N], or flat. */
function sameRank(source: OnnxModel, name: string, n: number, length: number): number[] {
  return source.constantInfo(name)!.dims.length === 1 ? [length] : [n, length / n];
}

/** The scales' shape as the input had it: [N, blocks], or flat [N · blocks] as the builder writes it. */
function scaleDims(source: OnnxModel, name: string, n: number, blocks: number): number[] {
  return source.constantInfo(name)!.dims.length === 1 ? [n * blocks] : [n, blocks];
}

function writeNBits(model: OnnxModel, node: onnx.NodeProto, n: number, codes: Uint8Array, scales: Tensor, zeroPoints: Tensor | undefined): void {
  const [, codesName, scalesName, zpName] = node.input;
  const blob = (attrInt(node, 'block_size', 0) * attrInt(node, 'bits', 4)) / 8;
  setOrAdd(model, codesName, { dtype: DataType.UINT8, dims: [n, codes.length / n / blob, blob], data: codes });
  setOrAdd(model, scalesName, scales);
  if (zpName && zeroPoints) setOrAdd(model, zpName, zeroPoints);
}

/**
 * A lifted DequantizeLinear weight back as its codes, scale and zero point behind the same node:
 * the kept codes (and, per axis, the kept scales and zero points) when `exact`, else `values`
 * requantized with the same type, per tensor or per axis, symmetric (int8 without a zero point or
 * with zeros) or affine. The node goes to `front` (it reads only constants). Returns the error.
 */
function lowerDequantize(source: OnnxModel, model: OnnxModel, w: LiftedWeight, kept: number[][], values: Float32Array, exact: boolean, front: onnx.NodeProto[]): number {
  const { node } = w;
  const [codesName, scaleName, zpName] = node.input;
  const axis = dequantizeAxis(source, node);
  const codes = source.constant(codesName)!;
  const scale = source.constant(scaleName)!;
  const zp = zpName ? source.constant(zpName) : undefined;
  const dims = kept.map((k) => k.length);
  let error = 0;
  let newCodes: Tensor;
  let newScale: Tensor = scale;
  let newZp: Tensor | undefined = zp;
  if (exact) {
    newCodes = kept.reduce((t, k, a) => (k.length === codes.dims[a] ? t : takeAlongAxis(t, a, k)), codes);
    if (axis !== undefined && kept[axis].length !== codes.dims[axis]) {
      newScale = takeAlongAxis(scale, 0, kept[axis]);
      newZp = zp && takeAlongAxis(zp, 0, kept[axis]);
    }
  } else {
    const signed = codes.dtype === DataType.INT8;
    const symmetric = signed && (!zp || (zp.data as Int8Array).every((z) => z === 0));
    let scales: Float32Array;
    let codeValues: ArrayLike<number>;
    let zeroPoints: ArrayLike<number> | undefined;
    if (symmetric) {
      const q = axis === undefined ? quantizePerChannel(values, [1, values.length], 0) : quantizePerChannel(values, dims, axis);
      [scales, codeValues] = [q.scales, q.codes];
      zeroPoints = zp && new Array(q.scales.length).fill(0);
    } else {
      const q = quantizeAffine(values, dims, axis, signed ? -128 : 0, signed ? 127 : 255);
      [scales, codeValues, zeroPoints] = [q.scales, q.codes, q.zeroPoints];
    }
    newCodes = { dtype: codes.dtype, dims, data: signed ? Int8Array.from(codeValues) : Uint8Array.from(codeValues) };
    newScale = fromFloat32(scales, scale.dtype, scale.dims.length === 0 ? [] : [scales.length]);
    newZp = zp && zeroPoints && { dtype: zp.dtype, dims: zp.dims.length === 0 ? [] : [scales.length], data: signed ? Int8Array.from(zeroPoints) : Uint8Array.from(zeroPoints) };
    const stored = toFloat32(newScale);
    const round = roundTo(w.dtype);
    const inner = axis === undefined ? 1 : elementCount(dims.slice(axis + 1));
    const dequantized = Float32Array.from(codeValues, (c, i) => {
      const ch = axis === undefined ? 0 : Math.floor(i / inner) % dims[axis];
      return round((c - (zeroPoints ? zeroPoints[ch] : 0)) * stored[ch]);
    });
    error = relativeError(dequantized, values);
  }
  // The float constant's name is the node's output again.
  model.graph.initializer = model.graph.initializer.filter((t) => t.name !== w.name);
  model.reindexConstants();
  setOrAdd(model, codesName, newCodes);
  setOrAdd(model, scaleName, newScale);
  if (zpName && newZp) setOrAdd(model, zpName, newZp);
  front.push(onnx.NodeProto.decode(onnx.NodeProto.encode(node).finish()));
  return error;
}
