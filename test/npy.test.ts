import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { encodeNpy, parseNpy, readNpy } from '../src/eval/npy';
import { DataType, dtypeName, halfToFloat } from '../src/onnx/dtype';
import { UserError } from '../src/errors';

// Files written by numpy itself (tools/fixtures/npy_testdata.py), with the values numpy saw.
const DIR = path.join(__dirname, 'data', 'npy');
const expected: Record<string, { shape: number[]; descr: string; values: (number | string | boolean)[] }> = JSON.parse(
  fs.readFileSync(path.join(DIR, 'expected.json'), 'utf8'),
);

const DTYPE_OF_DESCR: Record<string, DataType> = {
  '<f4': DataType.FLOAT,
  '<f8': DataType.DOUBLE,
  '<f2': DataType.FLOAT16,
  '|i1': DataType.INT8,
  '|u1': DataType.UINT8,
  '<i2': DataType.INT16,
  '<u2': DataType.UINT16,
  '<i4': DataType.INT32,
  '>i4': DataType.INT32,
  '<u4': DataType.UINT32,
  '<i8': DataType.INT64,
  '<u8': DataType.UINT64,
  '|b1': DataType.BOOL,
};

function decoded(dtype: DataType, data: ArrayLike<number | bigint>): (number | string | boolean)[] {
  return Array.from(data, (v) => {
    if (typeof v === 'bigint') return v.toString();
    if (dtype === DataType.FLOAT16) return halfToFloat(v);
    if (dtype === DataType.BOOL) return v !== 0;
    return v;
  });
}

describe('readNpy against files written by numpy', () => {
  for (const [name, want] of Object.entries(expected)) {
    test(`${name} (${want.descr}, shape [${want.shape}])`, () => {
      const t = readNpy(path.join(DIR, `${name}.npy`));
      expect(dtypeName(t.dtype)).toBe(dtypeName(DTYPE_OF_DESCR[want.descr]));
      expect(t.dims).toEqual(want.shape);
      const got = decoded(t.dtype, t.data as ArrayLike<number | bigint>);
      if (t.dtype === DataType.FLOAT) {
        expect(got.length).toBe(want.values.length);
        got.forEach((v, i) => expect(v).toBeCloseTo(want.values[i] as number, 6));
      } else {
        expect(got).toEqual(want.values);
      }
    });
  }
});

describe('readNpy refuses what it cannot read, naming the file and the fix', () => {
  const cases: [string, RegExp][] = [
    ['bad_fortran.npy', /bad_fortran\.npy: the array is stored in Fortran order; save it in C order/],
    ['bad_object.npy', /bad_object\.npy: object arrays \(pickled Python objects\) are not supported/],
    ['bad_strings.npy', /bad_strings\.npy: string arrays are not supported/],
    ['bad_complex.npy', /bad_complex\.npy: dtype '<c8' is not supported; save a numeric array/],
    ['bad_truncated.npy', /bad_truncated\.npy: truncated: shape \[2, 3\] of float32 needs 24 bytes of data, the file has 19/],
    ['bad_archive.npy', /bad_archive\.npy: not a NumPy \.npy file \(it is a \.npz archive/],
    ['missing.npy', /missing\.npy: file not found/],
  ];
  for (const [file, message] of cases) {
    test(file, () => {
      expect(() => readNpy(path.join(DIR, file))).toThrow(UserError);
      expect(() => readNpy(path.join(DIR, file))).toThrow(message);
    });
  }

  test('an unknown format version', () => {
    const bytes = Buffer.from(fs.readFileSync(path.join(DIR, 'f4_2x3.npy')));
    bytes[6] = 4;
    expect(() => parseNpy(bytes, 'x.npy')).toThrow('x.npy: .npy format version 4.0 is not supported (1.0, 2.0 and 3.0 are)');
  });
});

test('encodeNpy writes what numpy writes (byte for byte) and reads back', () => {
  const numpyBytes = fs.readFileSync(path.join(DIR, 'i8_2x2.npy'));
  const t = readNpy(path.join(DIR, 'i8_2x2.npy'));
  expect(encodeNpy(t).equals(numpyBytes)).toBe(true);
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'npy-'));
  const f32 = { dtype: DataType.FLOAT, dims: [2, 2], data: new Float32Array([1, 2, 3, 4]) };
  fs.writeFileSync(path.join(dir, 'a.npy'), encodeNpy(f32));
  const back = readNpy(path.join(dir, 'a.npy'));
  expect(back.dims).toEqual([2, 2]);
  expect(Array.from(back.data as Float32Array)).toEqual([1, 2, 3, 4]);
});
