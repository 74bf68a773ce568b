import * as fs from 'fs';
import * as path from 'path';
import { onnx } from 'onnx-proto';
import { UserError } from '../errors';
import { TensorData, dtypeInfo } from './dtype';

/** Where one tensor's bytes live outside the model file. */
export interface ExternalLocation {
  file: string; // absolute path, checked to be inside the model's folder
  location: string; // as written in the model
  offset: number;
  length: number | undefined;
}

export function isExternal(t: onnx.ITensorProto): boolean {
  return t.dataLocation === onnx.TensorProto.DataLocation.EXTERNAL;
}

/**
 * Resolves a tensor's external_data entries against the model's folder. A location that is
 * absolute or leaves the folder is refused: it could make us read any file on the runner
 * (docs/contracts.md, "Model files").
 */
export function externalLocation(t: onnx.ITensorProto, modelDir: string, modelPath: string): ExternalLocation {
  const entries = new Map((t.externalData ?? []).map((e) => [e.key ?? '', e.value ?? '']));
  const location = entries.get('location');
  if (!location) throw new UserError(`${modelPath}: tensor '${t.name}' is marked external but has no location`);
  const normalized = location.replace(/\\/g, '/');
  if (path.isAbsolute(location) || path.posix.isAbsolute(normalized) || /^[a-zA-Z]:/.test(location)) {
    throw new UserError(
      `${modelPath}: tensor '${t.name}' has an absolute external data location '${location}'; refusing to read outside the model's folder (re-save the model with a relative location)`,
    );
  }
  const root = path.resolve(modelDir);
  const file = path.resolve(root, normalized);
  if (file !== root && !file.startsWith(root + path.sep)) {
    throw new UserError(
      `${modelPath}: tensor '${t.name}' has external data location '${location}' that escapes the model's folder; refusing to read it`,
    );
  }
  const offset = entries.has('offset') ? Number(entries.get('offset')) : 0;
  const length = entries.has('length') ? Number(entries.get('length')) : undefined;
  if (!Number.isSafeInteger(offset) || offset < 0 || (length !== undefined && (!Number.isSafeInteger(length) || length < 0))) {
    throw new UserError(`${modelPath}: tensor '${t.name}' has an invalid external data offset or length`);
  }
  return { file, location, offset, length };
}

/** Checks that the external file exists and holds the bytes the tensor claims. */
export function checkExternal(t: onnx.ITensorProto, loc: ExternalLocation, modelPath: string, expectedBytes: number): void {
  let size: number;
  try {
    size = fs.statSync(loc.file).size;
  } catch {
    throw new UserError(
      `${modelPath}: external data file '${loc.location}' (tensor '${t.name}') not found next to the model; copy it beside the .onnx file (with Git LFS, set lfs: true on actions/checkout)`,
    );
  }
  // A length that disagrees with the shape would make us read the wrong number of elements.
  if (loc.length !== undefined && loc.length !== expectedBytes) {
    throw new UserError(
      `${modelPath}: tensor '${t.name}' has external data length ${loc.length} but its shape needs ${expectedBytes} bytes; the model is damaged (re-export it)`,
    );
  }
  const length = loc.length ?? expectedBytes;
  if (loc.offset + length > size) {
    throw new UserError(
      `${modelPath}: external data file '${loc.location}' is too short for tensor '${t.name}' (needs bytes ${loc.offset}..${loc.offset + length}, file has ${size}); it is truncated or belongs to another model`,
    );
  }
}

/**
 * Reads a tensor's bytes straight into an aligned typed array of its element type: one copy in
 * memory, however large the tensor.
 */
export function readTensorData(dtype: number, file: string, offset: number, length: number): TensorData {
  const info = dtypeInfo(dtype);
  if (length % info.bytes !== 0) throw new Error(`${file}: ${length} bytes is not a whole number of ${info.name} elements`);
  const buffer = new ArrayBuffer(length);
  const bytes = new Uint8Array(buffer);
  const fd = fs.openSync(file, 'r');
  try {
    let done = 0;
    while (done < length) {
      const n = fs.readSync(fd, bytes, done, length - done, offset + done);
      if (n === 0) throw new Error(`unexpected end of ${file}`);
      done += n;
    }
  } finally {
    fs.closeSync(fd);
  }
  return new info.array(buffer, 0, length / info.bytes);
}
