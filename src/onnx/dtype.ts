import { onnx } from 'onnx-proto';

export const DataType = onnx.TensorProto.DataType;
export type DataType = onnx.TensorProto.DataType;

/** Element storage of a tensor. float16 and bfloat16 are kept as their raw 16-bit patterns. */
export type TensorData =
  | Float32Array
  | Float64Array
  | Int8Array
  | Uint8Array
  | Int16Array
  | Uint16Array
  | Int32Array
  | Uint32Array
  | BigInt64Array
  | BigUint64Array;

interface DTypeInfo {
  name: string;
  bytes: number;
  array: { new (n: number): TensorData; new (buf: ArrayBuffer, offset: number, length: number): TensorData };
}

const INFO: Partial<Record<number, DTypeInfo>> = {
  [DataType.FLOAT]: { name: 'float32', bytes: 4, array: Float32Array },
  [DataType.DOUBLE]: { name: 'float64', bytes: 8, array: Float64Array },
  [DataType.FLOAT16]: { name: 'float16', bytes: 2, array: Uint16Array },
  [DataType.BFLOAT16]: { name: 'bfloat16', bytes: 2, array: Uint16Array },
  [DataType.INT8]: { name: 'int8', bytes: 1, array: Int8Array },
  [DataType.UINT8]: { name: 'uint8', bytes: 1, array: Uint8Array },
  [DataType.BOOL]: { name: 'bool', bytes: 1, array: Uint8Array },
  [DataType.INT16]: { name: 'int16', bytes: 2, array: Int16Array },
  [DataType.UINT16]: { name: 'uint16', bytes: 2, array: Uint16Array },
  [DataType.INT32]: { name: 'int32', bytes: 4, array: Int32Array },
  [DataType.UINT32]: { name: 'uint32', bytes: 4, array: Uint32Array },
  [DataType.INT64]: { name: 'int64', bytes: 8, array: BigInt64Array },
  [DataType.UINT64]: { name: 'uint64', bytes: 8, array: BigUint64Array },
};

export function isSupportedDType(dtype: number): boolean {
  return INFO[dtype] !== undefined;
}

export function dtypeInfo(dtype: number): DTypeInfo {
  const info = INFO[dtype];
  if (!info) throw new Error(`unsupported tensor data type ${dtypeName(dtype)}`);
  return info;
}

export function dtypeName(dtype: number): string {
  return INFO[dtype]?.name ?? DataType[dtype]?.toLowerCase() ?? `type ${dtype}`;
}

export function isFloatDType(dtype: number): boolean {
  return (
    dtype === DataType.FLOAT || dtype === DataType.DOUBLE || dtype === DataType.FLOAT16 || dtype === DataType.BFLOAT16
  );
}

// float16 <-> float32, exact for every half value; float32 -> half rounds to nearest even.
const f32 = new Float32Array(1);
const u32 = new Uint32Array(f32.buffer);

export function halfToFloat(h: number): number {
  const sign = h & 0x8000 ? -1 : 1;
  const exp = (h >> 10) & 0x1f;
  const frac = h & 0x3ff;
  if (exp === 0) return sign * frac * 2 ** -24;
  if (exp === 0x1f) return frac ? NaN : sign * Infinity;
  return sign * (1 + frac / 1024) * 2 ** (exp - 15);
}

export function floatToHalf(v: number): number {
  f32[0] = v;
  const x = u32[0];
  const sign = (x >>> 16) & 0x8000;
  const exp = (x >>> 23) & 0xff;
  let mant = x & 0x7fffff;
  if (exp === 0xff) return sign | 0x7c00 | (mant ? 0x200 : 0);
  let e = exp - 127 + 15;
  if (e >= 0x1f) return sign | 0x7c00;
  if (e <= 0) {
    if (e < -10) return sign;
    mant |= 0x800000;
    const shift = 14 - e;
    let half = mant >> shift;
    const rem = mant & ((1 << shift) - 1);
    const mid = 1 << (shift - 1);
    if (rem > mid || (rem === mid && half & 1)) half++;
    return sign | half;
  }
  let half = (e << 10) | (mant >> 13);
  const rem = mant & 0x1fff;
  if (rem > 0x1000 || (rem === 0x1000 && half & 1)) half++;
  return sign | half;
}

export function bfloat16ToFloat(b: number): number {
  u32[0] = b << 16;
  return f32[0];
}

export function floatToBfloat16(v: number): number {
  f32[0] = v;
  const x = u32[0];
  if ((x & 0x7f800000) === 0x7f800000 && x & 0x7fffff) return (x >>> 16) | 0x40;
  return ((x + 0x7fff + ((x >>> 16) & 1)) >>> 16) & 0xffff;
}
