import * as fs from 'fs';
import { UserError } from '../errors';
import { DataType, TensorData, dtypeInfo, dtypeName } from '../onnx/dtype';
import { Tensor, dataAsBytes, elementCount } from '../onnx/tensor';

/**
 * NumPy `.npy` files (format versions 1.0, 2.0 and 3.0), the format calibration tensors come in.
 * https://numpy.org/doc/stable/reference/generated/numpy.lib.format.html
 * Layout: magic "\x93NUMPY", major, minor, header length (uint16 in 1.0, uint32 in 2.0/3.0), a
 * Python dict literal {'descr', 'fortran_order', 'shape'} padded with spaces to a 64-byte
 * boundary, then the raw elements.
 */

const MAGIC = Buffer.from([0x93, 0x4e, 0x55, 0x4d, 0x50, 0x59]); // \x93NUMPY

/** NumPy type codes (kind + item size) and the ONNX element type each one loads as. */
const DESCR_TO_DTYPE: Record<string, DataType> = {
  f4: DataType.FLOAT,
  f8: DataType.DOUBLE,
  f2: DataType.FLOAT16,
  i1: DataType.INT8,
  u1: DataType.UINT8,
  i2: DataType.INT16,
  u2: DataType.UINT16,
  i4: DataType.INT32,
  u4: DataType.UINT32,
  i8: DataType.INT64,
  u8: DataType.UINT64,
  b1: DataType.BOOL,
};

const DTYPE_TO_DESCR = new Map<number, string>(Object.entries(DESCR_TO_DTYPE).map(([k, v]) => [v, k]));

interface NpyHeader {
  descr: string;
  fortranOrder: boolean;
  shape: number[];
}

/** Reads an .npy file into a tensor (ONNX element type, C order). */
export function readNpy(file: string): Tensor {
  let bytes: Buffer;
  try {
    bytes = fs.readFileSync(file);
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') throw new UserError(`${file}: file not found`);
    throw new UserError(`${file}: cannot read: ${(e as Error).message}`);
  }
  return parseNpy(bytes, file);
}

export function parseNpy(bytes: Uint8Array, file: string): Tensor {
  const buf = Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  if (buf.byteLength < 10 || !buf.subarray(0, 6).equals(MAGIC)) {
    const hint = buf.subarray(0, 2).toString('latin1') === 'PK' ? ' (it is a .npz archive: save each array with numpy.save)' : '';
    throw new UserError(`${file}: not a NumPy .npy file${hint}`);
  }
  const major = buf[6];
  let headerLen: number;
  let headerStart: number;
  if (major === 1) {
    headerLen = buf.readUInt16LE(8);
    headerStart = 10;
  } else if (major === 2 || major === 3) {
    if (buf.byteLength < 12) throw new UserError(`${file}: truncated .npy header`);
    headerLen = buf.readUInt32LE(8);
    headerStart = 12;
  } else {
    throw new UserError(`${file}: .npy format version ${major}.${buf[7]} is not supported (1.0, 2.0 and 3.0 are)`);
  }
  const dataStart = headerStart + headerLen;
  if (dataStart > buf.byteLength) throw new UserError(`${file}: truncated .npy header`);
  // Version 3.0 allows UTF-8 in the header (field names); 1.0 and 2.0 are latin1.
  const text = buf.subarray(headerStart, dataStart).toString(major === 3 ? 'utf8' : 'latin1');
  const header = parseHeader(text, file);
  if (header.fortranOrder) {
    throw new UserError(
      `${file}: the array is stored in Fortran order; save it in C order (numpy.save(f, numpy.ascontiguousarray(a)))`,
    );
  }
  const { dtype, bigEndian } = decodeDescr(header.descr, file);
  const info = dtypeInfo(dtype);
  const count = elementCount(header.shape);
  const need = count * info.bytes;
  const available = buf.byteLength - dataStart;
  if (available < need) {
    throw new UserError(
      `${file}: truncated: shape [${header.shape.join(', ')}] of ${dtypeName(dtype)} needs ${need} bytes of data, the file has ${available}`,
    );
  }
  // Copy into a fresh buffer: the data offset need not be aligned for the element type.
  const copy = new Uint8Array(need);
  copy.set(buf.subarray(dataStart, dataStart + need));
  if (bigEndian && info.bytes > 1) swapBytes(copy, info.bytes);
  const data = new info.array(copy.buffer, 0, count);
  return { dtype, dims: header.shape, data };
}

/** Parses the header dict, e.g. {'descr': '<f4', 'fortran_order': False, 'shape': (3, 4), }. */
function parseHeader(text: string, file: string): NpyHeader {
  const descr = /['"]descr['"]\s*:\s*(['"])(.*?)\1/.exec(text);
  const fortran = /['"]fortran_order['"]\s*:\s*(True|False)/.exec(text);
  const shape = /['"]shape['"]\s*:\s*\(([^)]*)\)/.exec(text);
  if (!descr) {
    if (/['"]descr['"]\s*:\s*\[/.test(text)) {
      throw new UserError(`${file}: structured (record) arrays are not supported; save one plain numeric array per input`);
    }
    throw new UserError(`${file}: malformed .npy header (no 'descr'): ${text.trim()}`);
  }
  if (!fortran || !shape) throw new UserError(`${file}: malformed .npy header: ${text.trim()}`);
  const dims = shape[1]
    .split(',')
    .map((s) => s.trim().replace(/L$/, '')) // Python 2 wrote long ints as 3L
    .filter((s) => s.length > 0)
    .map((s) => {
      if (!/^\d+$/.test(s)) throw new UserError(`${file}: malformed .npy shape (${shape[1]})`);
      return Number(s);
    });
  return { descr: descr[2], fortranOrder: fortran[1] === 'True', shape: dims };
}

function decodeDescr(descr: string, file: string): { dtype: DataType; bigEndian: boolean } {
  const m = /^([<>|=]?)([a-zA-Z]\d+|\?)$/.exec(descr);
  const code = m ? (m[2] === '?' ? 'b1' : m[2]) : undefined;
  const dtype = code !== undefined ? DESCR_TO_DTYPE[code] : undefined;
  if (!m || dtype === undefined) {
    const what = /^[<>|=]?O/.test(descr)
      ? 'object arrays (pickled Python objects) are'
      : /^[<>|=]?[US]/.test(descr)
        ? 'string arrays are'
        : `dtype '${descr}' is`;
    throw new UserError(
      `${file}: ${what} not supported; save a numeric array (float32, float64, float16, int8..int64, uint8..uint64 or bool)`,
    );
  }
  // '=' is native order; numpy writes '<' or '>' explicitly, and every platform we run on is little-endian.
  return { dtype, bigEndian: m[1] === '>' };
}

function swapBytes(bytes: Uint8Array, size: number): void {
  for (let i = 0; i < bytes.length; i += size) {
    for (let a = i, b = i + size - 1; a < b; a++, b--) {
      const t = bytes[a];
      bytes[a] = bytes[b];
      bytes[b] = t;
    }
  }
}

/** Encodes a tensor as an .npy file (version 1.0, little-endian, C order). */
export function encodeNpy(t: Tensor): Buffer {
  const code = DTYPE_TO_DESCR.get(t.dtype);
  if (!code) throw new Error(`internal: no .npy type for ${dtypeName(t.dtype)}`);
  const descr = code === 'b1' ? '|b1' : code.endsWith('1') ? `|${code}` : `<${code}`;
  const shape = t.dims.length === 1 ? `(${t.dims[0]},)` : `(${t.dims.join(', ')})`;
  let header = `{'descr': '${descr}', 'fortran_order': False, 'shape': ${shape}, }`;
  // Pad with spaces so that magic + version + length + header + '\n' is a multiple of 64.
  const total = Math.ceil((10 + header.length + 1) / 64) * 64;
  header = header.padEnd(total - 10 - 1, ' ') + '\n';
  const prefix = Buffer.alloc(10);
  MAGIC.copy(prefix, 0);
  prefix[6] = 1;
  prefix[7] = 0;
  prefix.writeUInt16LE(header.length, 8);
  return Buffer.concat([prefix, Buffer.from(header, 'latin1'), Buffer.from(dataAsBytes(t.data as TensorData))]);
}
