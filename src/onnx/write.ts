import * as fs from 'fs';
import * as path from 'path';
import { onnx } from 'onnx-proto';
import { UserError } from '../errors';
import { temporaryName } from '../util/files';
import { isSupportedDType } from './dtype';
import { externalLocation, isExternal } from './external';
import { isSpilled } from './spill';
import { OnnxModel } from './model';
import { dataAsBytes, protoBytes } from './tensor';

/** protobuf messages cannot exceed 2 GiB; stay clear of it. */
const INLINE_LIMIT = 2 ** 31 - 64 * 2 ** 20;
/** Tensors smaller than this stay inline even in external-data mode (shape constants, biases). */
const EXTERNAL_MIN_BYTES = 1024;
const ALIGN = 64;

export interface WriteOptions {
  /** true: weights go to `<file>.data`; false: inline; default: inline unless above 2 GB. */
  externalData?: boolean;
}

export interface WriteResult {
  path: string;
  dataPath?: string;
  bytes: number;
}

function initializerBytes(t: onnx.ITensorProto): number {
  if (!isSupportedDType(t.dataType ?? 0)) return 0;
  return protoBytes(t);
}

/**
 * Writes `model` to `file` without modifying it. Weights are streamed one tensor at a time into
 * the external data file, so memory stays near the largest tensor. Both files are written under
 * temporary names and renamed when complete: an interrupted write leaves no half model behind.
 */
export function writeModel(model: OnnxModel, file: string, options: WriteOptions = {}): WriteResult {
  const out = path.resolve(file);
  if (model.origin && path.resolve(model.origin) === out) {
    throw new UserError(`refusing to overwrite the input model ${file}: choose another output path`);
  }
  const graph = model.graph;
  const total = model.initializers.reduce((sum, t) => sum + initializerBytes(t), 0);
  const external = options.externalData ?? total > INLINE_LIMIT;
  const dataName = `${path.basename(out)}.data`;
  const dataPath = path.join(path.dirname(out), dataName);

  if (external) {
    for (const t of model.initializers) {
      if (isExternal(t) && externalLocation(t, model.dir, model.origin).file === dataPath) {
        throw new UserError(`refusing to overwrite ${dataPath}: it holds the input model's weights; choose another output path`);
      }
    }
  }

  fs.mkdirSync(path.dirname(out), { recursive: true });
  const tmpModel = temporaryName(out);
  const tmpData = external ? temporaryName(dataPath) : undefined;
  let fd: number | undefined;
  try {
    let offset = 0;
    if (tmpData) fd = fs.openSync(tmpData, 'w');
    const initializers = model.initializers.map((t) => {
      const bytes = initializerBytes(t);
      const inMemory = !isExternal(t) && !isSpilled(t);
      const keepAsIs = !isSupportedDType(t.dataType) || (inMemory && (!external || bytes < EXTERNAL_MIN_BYTES));
      if (keepAsIs) return t;
      const source = model.tensorSource(t);
      const copy = onnx.TensorProto.create({ ...t, externalData: [], dataLocation: onnx.TensorProto.DataLocation.DEFAULT });
      copy.floatData = [];
      copy.int32Data = [];
      copy.int64Data = [];
      copy.doubleData = [];
      copy.uint64Data = [];
      if (fd === undefined || bytes < EXTERNAL_MIN_BYTES) {
        copy.rawData = 'bytes' in source ? source.bytes : dataAsBytes(model.readTensorProto(t).data);
        return copy;
      }
      const pad = (ALIGN - (offset % ALIGN)) % ALIGN;
      if (pad) fs.writeSync(fd, Buffer.alloc(pad), 0, pad, offset);
      offset += pad;
      const length = 'bytes' in source ? source.bytes.byteLength : source.length;
      if ('bytes' in source) writeAll(fd, source.bytes, offset);
      else if ('stream' in source) {
        let at = offset;
        source.stream((chunk) => {
          writeAll(fd!, chunk, at);
          at += chunk.byteLength;
        });
        if (at - offset !== length) throw new Error(`internal: tensor '${t.name}' streamed ${at - offset} bytes, expected ${length}`);
      } else copyRange(source.file, source.offset, length, fd, offset);
      copy.rawData = new Uint8Array(0);
      copy.dataLocation = onnx.TensorProto.DataLocation.EXTERNAL;
      copy.externalData = [
        { key: 'location', value: dataName },
        { key: 'offset', value: String(offset) },
        { key: 'length', value: String(length) },
      ];
      offset += length;
      return copy;
    });
    if (fd !== undefined) {
      fs.closeSync(fd);
      fd = undefined;
    }
    const proto = onnx.ModelProto.create({
      ...model.proto,
      graph: onnx.GraphProto.create({ ...graph, initializer: initializers }),
    });
    const encoded = onnx.ModelProto.encode(proto).finish();
    fs.writeFileSync(tmpModel, encoded);
    if (tmpData) fs.renameSync(tmpData, dataPath);
    fs.renameSync(tmpModel, out);
    return { path: out, dataPath: external ? dataPath : undefined, bytes: encoded.byteLength + offset };
  } catch (e) {
    if (fd !== undefined) fs.closeSync(fd);
    for (const f of [tmpModel, tmpData]) if (f && fs.existsSync(f)) fs.unlinkSync(f);
    throw e;
  }
}

function writeAll(fd: number, data: Uint8Array, at: number): void {
  let done = 0;
  while (done < data.byteLength) done += fs.writeSync(fd, data, done, data.byteLength - done, at + done);
}

const CHUNK = 16 * 2 ** 20;
let chunk: Buffer | undefined;

/** Copies a byte range between files through one reused buffer: memory stays at one chunk. */
function copyRange(file: string, from: number, length: number, fd: number, at: number): void {
  chunk ??= Buffer.allocUnsafe(CHUNK);
  const src = fs.openSync(file, 'r');
  try {
    for (let done = 0; done < length; ) {
      const n = fs.readSync(src, chunk, 0, Math.min(CHUNK, length - done), from + done);
      if (n === 0) throw new Error(`unexpected end of ${file}`);
      writeAll(fd, chunk.subarray(0, n), at + done);
      done += n;
    }
  } finally {
    fs.closeSync(src);
  }
}
