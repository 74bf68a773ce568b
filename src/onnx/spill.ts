import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { onnx } from 'onnx-proto';

/**
 * Where large tensors made in memory (pruned weights) wait until the model is written: one
 * append-only temporary file per process. Pruning a many-GB model then holds one tensor at a
 * time in memory, not the whole pruned model. Entries are keyed by the TensorProto object, which
 * copies of a model share (OnnxModel.clone), so a spilled tensor reads the same in every copy.
 */
let spillThreshold = 8 * 2 ** 20;

/** Tensors at least this large are spilled and sliced by streaming. */
export function spillMinBytes(): number {
  return spillThreshold;
}

/** For tests: make small fixtures take the streaming path. */
export function setSpillMinBytes(bytes: number): void {
  spillThreshold = bytes;
}

export interface SpillRange {
  file: string;
  offset: number;
  length: number;
}

const spilled = new WeakMap<onnx.ITensorProto, SpillRange>();
let store: { file: string; fd: number; size: number } | undefined;

function openStore(): { file: string; fd: number; size: number } {
  if (store) return store;
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'prune-gate-spill-'));
  const file = path.join(dir, 'tensors.bin');
  store = { file, fd: fs.openSync(file, 'w+'), size: 0 };
  process.once('exit', () => fs.rmSync(dir, { recursive: true, force: true }));
  return store;
}

export function spillTensor(proto: onnx.ITensorProto, bytes: Uint8Array): void {
  spilled.set(proto, spillBytes(bytes));
}

/** Appends `bytes` to the spill file (a matrix the engine reads again later), and says where. */
export function spillBytes(bytes: Uint8Array): SpillRange {
  const s = openStore();
  let done = 0;
  while (done < bytes.byteLength) done += fs.writeSync(s.fd, bytes, done, bytes.byteLength - done, s.size + done);
  const range = { file: s.file, offset: s.size, length: bytes.byteLength };
  s.size += bytes.byteLength;
  return range;
}

/** Bytes spilled by spillBytes, read back. */
export function readSpilled(range: SpillRange): Uint8Array {
  const out = new Uint8Array(range.length);
  const fd = fs.openSync(range.file, 'r');
  try {
    let done = 0;
    while (done < range.length) done += fs.readSync(fd, out, done, range.length - done, range.offset + done);
  } finally {
    fs.closeSync(fd);
  }
  return out;
}

export function spilledRange(proto: onnx.ITensorProto): SpillRange | undefined {
  return spilled.get(proto);
}

/** Streams a tensor's bytes, in chunks of whole rows, in order. */
export type TensorStream = (fn: (bytes: Uint8Array) => void) => void;

/**
 * Tensors computed from another when read (a pruned weight is its source with rows and columns
 * left out): nothing is written until the model is, and then each weight is read once.
 */
const deferred = new WeakMap<onnx.ITensorProto, TensorStream>();

export function deferTensor(proto: onnx.ITensorProto, stream: TensorStream): void {
  deferred.set(proto, stream);
}

export function deferredStream(proto: onnx.ITensorProto): TensorStream | undefined {
  return deferred.get(proto);
}

/** The tensor's bytes are not in the proto nor in the model's files: spilled or deferred. */
export function isSpilled(proto: onnx.ITensorProto): boolean {
  return spilled.has(proto) || deferred.has(proto);
}
