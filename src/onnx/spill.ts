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

interface SpillRange {
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
  const s = openStore();
  let done = 0;
  while (done < bytes.byteLength) done += fs.writeSync(s.fd, bytes, done, bytes.byteLength - done, s.size + done);
  spilled.set(proto, { file: s.file, offset: s.size, length: bytes.byteLength });
  s.size += bytes.byteLength;
}

export function spilledRange(proto: onnx.ITensorProto): SpillRange | undefined {
  return spilled.get(proto);
}

export function isSpilled(proto: onnx.ITensorProto): boolean {
  return spilled.has(proto);
}

/** Appends one tensor's bytes in pieces; `finish` records them for `proto`. */
export function beginSpill(): { write(bytes: Uint8Array): void; finish(proto: onnx.ITensorProto): void } {
  const s = openStore();
  const start = s.size;
  return {
    write(bytes) {
      let done = 0;
      while (done < bytes.byteLength) done += fs.writeSync(s.fd, bytes, done, bytes.byteLength - done, s.size + done);
      s.size += bytes.byteLength;
    },
    finish(proto) {
      spilled.set(proto, { file: s.file, offset: start, length: s.size - start });
    },
  };
}
