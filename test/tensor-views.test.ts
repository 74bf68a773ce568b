// Typed views of weights stored in raw_data, in the typed fields and in
// Constant nodes, and the float16 / bfloat16 conversions they rely on.
import Long from 'long';
import { onnx } from 'onnx-proto';
import { bfloat16ToFloat, floatToBfloat16, floatToHalf, halfToFloat } from '../src/onnx/dtype';
import { OnnxModel } from '../src/onnx/model';
import { toFloat32, toNumbers } from '../src/onnx/tensor';
import { T, encode, model, node, valueInfo } from './helpers/onnx-builders';

describe('float16', () => {
  test('known values', () => {
    expect(halfToFloat(0x3c00)).toBe(1);
    expect(halfToFloat(0xc000)).toBe(-2);
    expect(halfToFloat(0x7bff)).toBe(65504); // largest finite
    expect(halfToFloat(0x0001)).toBe(2 ** -24); // smallest subnormal
    expect(halfToFloat(0x0400)).toBe(2 ** -14); // smallest normal
    expect(halfToFloat(0x7c00)).toBe(Infinity);
    expect(halfToFloat(0xfc00)).toBe(-Infinity);
    expect(Object.is(halfToFloat(0x8000), -0)).toBe(true);
    expect(halfToFloat(0x7e00)).toBeNaN();
    expect(floatToHalf(1)).toBe(0x3c00);
    expect(floatToHalf(-2)).toBe(0xc000);
    expect(floatToHalf(0.1)).toBe(0x2e66);
    expect(floatToHalf(1e-8)).toBe(0); // below half the smallest subnormal
    expect(floatToHalf(-1e-8)).toBe(0x8000);
    expect(floatToHalf(NaN) & 0x7c00).toBe(0x7c00);
    expect(floatToHalf(NaN) & 0x3ff).not.toBe(0);
  });

  test('rounds to nearest, ties to even, and overflows to infinity', () => {
    expect(floatToHalf(1 + 2 ** -11)).toBe(0x3c00); // tie, 0x3c00 is even
    expect(floatToHalf(1 + 3 * 2 ** -11)).toBe(0x3c02); // tie, rounds up to even
    expect(floatToHalf(1 + 2 ** -11 + 2 ** -20)).toBe(0x3c01); // just above the tie
    expect(floatToHalf(65519)).toBe(0x7bff);
    expect(floatToHalf(65520)).toBe(0x7c00); // rounds past the largest finite
    expect(floatToHalf(1e6)).toBe(0x7c00);
    expect(floatToHalf(3 * 2 ** -25)).toBe(0x0002); // subnormal tie: 1.5 ulp -> 2 (even)
    expect(floatToHalf(2 ** -25)).toBe(0x0000); // subnormal tie: 0.5 ulp -> 0 (even)
  });

  test('every half value survives half -> float -> half', () => {
    for (let h = 0; h < 0x10000; h++) {
      const f = halfToFloat(h);
      if (Number.isNaN(f)) continue;
      if (floatToHalf(f) !== h) throw new Error(`0x${h.toString(16)} -> ${f} -> 0x${floatToHalf(f).toString(16)}`);
    }
  });
});

describe('bfloat16', () => {
  test('known values and rounding', () => {
    expect(bfloat16ToFloat(0x3f80)).toBe(1);
    expect(bfloat16ToFloat(0xc040)).toBe(-3);
    expect(bfloat16ToFloat(0x7f80)).toBe(Infinity);
    expect(floatToBfloat16(1)).toBe(0x3f80);
    expect(floatToBfloat16(3.140625)).toBe(0x4049);
    expect(floatToBfloat16(1 + 2 ** -8)).toBe(0x3f80); // tie -> even
    expect(floatToBfloat16(1 + 3 * 2 ** -8)).toBe(0x3f82); // tie -> even (up)
    expect(floatToBfloat16(NaN) & 0x7f80).toBe(0x7f80);
    expect(floatToBfloat16(NaN) & 0x7f).not.toBe(0); // stays NaN, not infinity
  });

  test('every bfloat16 value survives bf16 -> float -> bf16', () => {
    for (let b = 0; b < 0x10000; b++) {
      const f = bfloat16ToFloat(b);
      if (Number.isNaN(f)) continue;
      if (floatToBfloat16(f) !== b) throw new Error(`0x${b.toString(16)} -> ${f} -> 0x${floatToBfloat16(f).toString(16)}`);
    }
  });
});

/** Reads `tensors` as initializers and `constants` as Constant nodes of a model decoded from bytes. */
function loadWith(tensors: onnx.ITensorProto[], constants: onnx.IAttributeProto[] = []): OnnxModel {
  const nodes = constants.map((a, i) => node('Constant', [], [`const${i}`], [onnx.AttributeProto.create(a)]));
  const proto = model({
    nodes: [...nodes, node('Identity', ['x'], ['y'])],
    inputs: [valueInfo('x', T.FLOAT, [1])],
    outputs: [valueInfo('y', T.FLOAT, [1])],
    initializers: tensors.map((t) => onnx.TensorProto.create(t)),
  });
  return OnnxModel.fromBytes(encode(proto), 'test.onnx');
}

describe('initializers stored in typed fields', () => {
  test('float_data and double_data', () => {
    const m = loadWith([
      { name: 'f', dataType: T.FLOAT, dims: [2, 2], floatData: [1.5, -2, 0.25, 3] },
      { name: 'd', dataType: T.DOUBLE, dims: [2], doubleData: [1e-300, -7] },
    ]);
    const f = m.constant('f')!;
    expect(f.data).toBeInstanceOf(Float32Array);
    expect(f.dims).toEqual([2, 2]);
    expect(Array.from(f.data as Float32Array)).toEqual([1.5, -2, 0.25, 3]);
    expect(Array.from(m.constant('d')!.data as Float64Array)).toEqual([1e-300, -7]);
  });

  test('int64_data keeps values beyond 2^32 and negatives exactly', () => {
    const big = Long.fromString('1099511627779'); // 2^40 + 3
    const m = loadWith([{ name: 'i', dataType: T.INT64, dims: [3], int64Data: [big, Long.fromInt(-5), 7] }]);
    const t = m.constant('i')!;
    expect(t.data).toBeInstanceOf(BigInt64Array);
    expect(Array.from(t.data as BigInt64Array)).toEqual([1099511627779n, -5n, 7n]);
    expect(toNumbers(t)).toEqual([1099511627779, -5, 7]);
  });

  test('float16 and bfloat16 bit patterns in int32_data', () => {
    const m = loadWith([
      { name: 'h', dataType: T.FLOAT16, dims: [3], int32Data: [0x3c00, 0xc000, 0x3800] },
      { name: 'b', dataType: T.BFLOAT16, dims: [2], int32Data: [0x3f80, 0xc040] },
    ]);
    const h = m.constant('h')!;
    expect(h.data).toBeInstanceOf(Uint16Array);
    expect(Array.from(toFloat32(h))).toEqual([1, -2, 0.5]);
    expect(Array.from(toFloat32(m.constant('b')!))).toEqual([1, -3]);
  });

  test('int8, uint8 and int32 in int32_data', () => {
    const m = loadWith([
      { name: 'i8', dataType: T.INT8, dims: [3], int32Data: [-128, 0, 127] },
      { name: 'u8', dataType: T.UINT8, dims: [2], int32Data: [0, 255] },
      { name: 'i32', dataType: T.INT32, dims: [2], int32Data: [-2147483648, 2147483647] },
    ]);
    expect(Array.from(m.constant('i8')!.data as Int8Array)).toEqual([-128, 0, 127]);
    expect(m.constant('i8')!.data).toBeInstanceOf(Int8Array);
    expect(Array.from(m.constant('u8')!.data as Uint8Array)).toEqual([0, 255]);
    expect(Array.from(m.constant('i32')!.data as Int32Array)).toEqual([-2147483648, 2147483647]);
  });

  test('raw_data of every supported type, little-endian', () => {
    const raw = (values: ArrayBufferView) => new Uint8Array(values.buffer, values.byteOffset, values.byteLength);
    const m = loadWith([
      { name: 'f', dataType: T.FLOAT, dims: [2], rawData: raw(new Float32Array([0.5, -1])) },
      { name: 'h', dataType: T.FLOAT16, dims: [2], rawData: raw(new Uint16Array([0x3c00, 0x4000])) },
      { name: 'b', dataType: T.BFLOAT16, dims: [1], rawData: raw(new Uint16Array([0x4049])) },
      { name: 'i8', dataType: T.INT8, dims: [2], rawData: raw(new Int8Array([-3, 4])) },
      { name: 'u8', dataType: T.UINT8, dims: [2], rawData: raw(new Uint8Array([200, 1])) },
      { name: 'i32', dataType: T.INT32, dims: [1], rawData: raw(new Int32Array([-70000])) },
      { name: 'i64', dataType: T.INT64, dims: [2], rawData: raw(new BigInt64Array([-1n, 2n ** 50n])) },
    ]);
    expect(Array.from(toFloat32(m.constant('f')!))).toEqual([0.5, -1]);
    expect(Array.from(toFloat32(m.constant('h')!))).toEqual([1, 2]);
    expect(Array.from(toFloat32(m.constant('b')!))).toEqual([3.140625]);
    expect(Array.from(m.constant('i8')!.data as Int8Array)).toEqual([-3, 4]);
    expect(Array.from(m.constant('u8')!.data as Uint8Array)).toEqual([200, 1]);
    expect(Array.from(m.constant('i32')!.data as Int32Array)).toEqual([-70000]);
    expect(Array.from(m.constant('i64')!.data as BigInt64Array)).toEqual([-1n, 2n ** 50n]);
  });

  test('raw_data whose size does not match the shape is a clear error', () => {
    expect(() => loadWith([{ name: 'w', dataType: T.FLOAT, dims: [3], rawData: new Uint8Array(8) }])).toThrow(
      /initializer 'w' holds 8 bytes but its shape \[3\] of float32 needs 12/,
    );
  });
});

describe('Constant nodes', () => {
  const A = onnx.AttributeProto.AttributeType;

  test('value (a TensorProto), value_floats, value_ints, value_float, value_int', () => {
    const m = loadWith(
      [],
      [
        {
          name: 'value',
          type: A.TENSOR,
          t: { dataType: T.FLOAT16, dims: [2], rawData: new Uint8Array(new Uint16Array([0x3c00, 0xbc00]).buffer) },
        },
        { name: 'value_floats', type: A.FLOATS, floats: [0.5, 2.5, -1] },
        { name: 'value_ints', type: A.INTS, ints: [Long.fromString('-4294967297'), 3] },
        { name: 'value_float', type: A.FLOAT, f: 0.125 },
        { name: 'value_int', type: A.INT, i: -9 },
        { name: 'value', type: A.TENSOR, t: { dataType: T.INT64, dims: [2], int64Data: [Long.fromString('8589934592'), -1] } },
      ],
    );
    const v0 = m.constant('const0')!;
    expect(v0.dims).toEqual([2]);
    expect(Array.from(toFloat32(v0))).toEqual([1, -1]);
    expect(Array.from(m.constant('const1')!.data as Float32Array)).toEqual([0.5, 2.5, -1]);
    const ints = m.constant('const2')!;
    expect(ints.dtype).toBe(T.INT64);
    expect(Array.from(ints.data as BigInt64Array)).toEqual([-4294967297n, 3n]);
    const f = m.constant('const3')!;
    expect(f.dims).toEqual([]);
    expect(Array.from(f.data as Float32Array)).toEqual([0.125]);
    expect(Array.from(m.constant('const4')!.data as BigInt64Array)).toEqual([-9n]);
    expect(Array.from(m.constant('const5')!.data as BigInt64Array)).toEqual([8589934592n, -1n]);
    expect(m.constantInfo('const1')).toEqual({ dtype: T.FLOAT, dims: [3] });
    expect(m.isConstant('const2')).toBe(true);
    expect(m.isInitializer('const2')).toBe(false);
  });
});
