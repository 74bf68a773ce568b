import Long from 'long';
import { onnx } from 'onnx-proto';
import {
  DataType,
  TensorData,
  bfloat16ToFloat,
  dtypeInfo,
  floatToBfloat16,
  floatToHalf,
  halfToFloat,
} from './dtype';

/** A dense tensor in memory. float16/bfloat16 data are raw 16-bit patterns (Uint16Array). */
export interface Tensor {
  dtype: DataType;
  dims: number[];
  data: TensorData;
}

export function toNumber(v: number | Long | null | undefined): number {
  if (v === null || v === undefined) return 0;
  return typeof v === 'number' ? v : Long.fromValue(v).toNumber();
}

export function elementCount(dims: readonly number[]): number {
  return dims.reduce((a, b) => a * b, 1);
}

export function tensorBytes(dtype: number, dims: readonly number[]): number {
  return elementCount(dims) * dtypeInfo(dtype).bytes;
}

/** Bytes of a tensor proto's data, from its type and dims (wherever the data is kept). */
export function protoBytes(t: onnx.ITensorProto): number {
  return tensorBytes(t.dataType ?? 0, (t.dims ?? []).map(toNumber));
}

/** Copies `bytes` into a fresh, aligned typed array of the tensor's element type. */
export function dataFromBytes(dtype: number, bytes: Uint8Array): TensorData {
  const info = dtypeInfo(dtype);
  if (bytes.byteLength % info.bytes !== 0) {
    throw new Error(`raw data of ${bytes.byteLength} bytes is not a whole number of ${info.name} elements`);
  }
  const copy = new ArrayBuffer(bytes.byteLength);
  new Uint8Array(copy).set(bytes);
  return new info.array(copy, 0, bytes.byteLength / info.bytes);
}

export function dataAsBytes(data: TensorData): Uint8Array {
  return new Uint8Array(data.buffer, data.byteOffset, data.byteLength);
}

/** Reads the typed repeated fields of a TensorProto (used when raw_data is absent). */
export function dataFromTypedFields(proto: onnx.ITensorProto, count: number): TensorData {
  const dtype = proto.dataType ?? DataType.UNDEFINED;
  const info = dtypeInfo(dtype);
  const out = new info.array(count);
  const fill = (values: ArrayLike<number | Long> | null | undefined, map: (v: number | Long) => number | bigint) => {
    if (!values) return;
    for (let i = 0; i < Math.min(values.length, count); i++) (out as unknown as (number | bigint)[])[i] = map(values[i]);
  };
  switch (dtype) {
    case DataType.FLOAT:
      fill(proto.floatData, (v) => v as number);
      break;
    case DataType.DOUBLE:
      fill(proto.doubleData, (v) => v as number);
      break;
    case DataType.INT64:
      fill(proto.int64Data, (v) => BigInt(Long.fromValue(v).toString()));
      break;
    case DataType.UINT64:
      fill(proto.uint64Data, (v) => BigInt(Long.fromValue(v).toUnsigned().toString()));
      break;
    case DataType.UINT32:
      fill(proto.uint64Data, (v) => toNumber(v));
      break;
    default:
      // int32_data carries int32, int16, int8, uint16, uint8, bool, float16 and bfloat16 (as bits).
      fill(proto.int32Data, (v) => v as number);
  }
  return out;
}

/** How many values the typed field that holds `proto`'s data type has (see dataFromTypedFields). */
export function typedFieldLength(proto: onnx.ITensorProto): number {
  switch (proto.dataType) {
    case DataType.FLOAT:
      return proto.floatData?.length ?? 0;
    case DataType.DOUBLE:
      return proto.doubleData?.length ?? 0;
    case DataType.INT64:
      return proto.int64Data?.length ?? 0;
    case DataType.UINT64:
    case DataType.UINT32:
      return proto.uint64Data?.length ?? 0;
    default:
      return proto.int32Data?.length ?? 0;
  }
}

let HALF_TABLE: Float32Array | undefined;
/** Every float16 bit pattern's value: converting a large half-precision weight is one lookup each. */
function halfTable(): Float32Array {
  if (!HALF_TABLE) {
    HALF_TABLE = new Float32Array(65536);
    for (let h = 0; h < 65536; h++) HALF_TABLE[h] = halfToFloat(h);
  }
  return HALF_TABLE;
}

/** float16 bit patterns to float32 values, into `out` (reused by streaming readers). */
export function halfToFloat32Into(src: Uint16Array, out: Float32Array): Float32Array {
  const table = halfTable();
  for (let i = 0; i < src.length; i++) out[i] = table[src[i]];
  return out;
}

export function toFloat32(t: Tensor): Float32Array {
  const n = t.data.length;
  if (t.dtype === DataType.FLOAT) return t.data as Float32Array;
  const out = new Float32Array(n);
  if (t.dtype === DataType.FLOAT16) {
    const table = halfTable();
    const d = t.data as Uint16Array;
    for (let i = 0; i < n; i++) out[i] = table[d[i]];
  }
  else if (t.dtype === DataType.BFLOAT16)
    for (let i = 0; i < n; i++) out[i] = bfloat16ToFloat((t.data as Uint16Array)[i]);
  else if (t.data instanceof BigInt64Array || t.data instanceof BigUint64Array)
    for (let i = 0; i < n; i++) out[i] = Number(t.data[i]);
  else for (let i = 0; i < n; i++) out[i] = (t.data as Float64Array)[i];
  return out;
}

/** Builds a tensor of `dtype` from float values (rounding for float16/bfloat16/integers). */
export function fromFloat32(values: ArrayLike<number>, dtype: DataType, dims: number[]): Tensor {
  const n = values.length;
  const info = dtypeInfo(dtype);
  const data = new info.array(n);
  if (dtype === DataType.FLOAT16) for (let i = 0; i < n; i++) (data as Uint16Array)[i] = floatToHalf(values[i]);
  else if (dtype === DataType.BFLOAT16)
    for (let i = 0; i < n; i++) (data as Uint16Array)[i] = floatToBfloat16(values[i]);
  else if (data instanceof BigInt64Array || data instanceof BigUint64Array)
    for (let i = 0; i < n; i++) data[i] = BigInt(Math.round(values[i]));
  else if (dtype === DataType.FLOAT || dtype === DataType.DOUBLE) (data as Float32Array).set(values);
  else for (let i = 0; i < n; i++) (data as Int32Array)[i] = Math.round(values[i]);
  return { dtype, dims: [...dims], data };
}

/** A tensor's values as plain numbers, int64 ones included (shape constants, axes, sizes). */
export function toNumbers(t: { data: unknown }): number[] {
  return Array.from(t.data as ArrayLike<number | bigint>, Number);
}

export function intTensor(values: number[], dtype: DataType = DataType.INT64, dims?: number[]): Tensor {
  return fromFloat32(values, dtype, dims ?? [values.length]);
}

/**
 * Keeps the entries `keep` (sorted indices) along `axis`: the basic operation of structured
 * pruning. Works on any element type without converting it.
 */
export function takeAlongAxis(t: Tensor, axis: number, keep: readonly number[]): Tensor {
  const dims = t.dims;
  if (axis < 0) axis += dims.length;
  const outer = elementCount(dims.slice(0, axis));
  const inner = elementCount(dims.slice(axis + 1));
  const size = dims[axis];
  const info = dtypeInfo(t.dtype);
  const out = new info.array(outer * keep.length * inner);
  const src = t.data as Float32Array;
  const dst = out as Float32Array;
  // Copy runs of consecutive kept indices at once: a pruned axis keeps long runs, and per-element
  // copies of a [4096, 11008] weight's columns would dominate the pruning time.
  const runs: [number, number][] = [];
  for (let i = 0; i < keep.length; ) {
    let j = i + 1;
    while (j < keep.length && keep[j] === keep[j - 1] + 1) j++;
    runs.push([keep[i] * inner, (keep[j - 1] + 1) * inner]);
    i = j;
  }
  let o = 0;
  for (let a = 0; a < outer; a++) {
    const base = a * size * inner;
    for (const [from, to] of runs) {
      if (to - from < 16) {
        for (let x = base + from; x < base + to; x++) dst[o++] = src[x];
      } else {
        dst.set(src.subarray(base + from, base + to), o);
        o += to - from;
      }
    }
  }
  const newDims = [...dims];
  newDims[axis] = keep.length;
  return { dtype: t.dtype, dims: newDims, data: out };
}

/** A TensorProto holding `t` inline as raw_data (little-endian, as ONNX requires). */
export function tensorToProto(name: string, t: Tensor): onnx.TensorProto {
  return onnx.TensorProto.create({
    name,
    dataType: t.dtype,
    dims: [...t.dims],
    rawData: dataAsBytes(t.data),
  });
}
