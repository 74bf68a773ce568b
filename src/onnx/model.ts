import * as fs from 'fs';
import * as path from 'path';
import { onnx } from 'onnx-proto';
import { UserError } from '../errors';
import { DataType, dtypeInfo, dtypeName, isSupportedDType } from './dtype';
import { checkExternal, externalLocation, isExternal, readTensorData } from './external';
import { graphDefect, nodeReads } from './reads';
import { withScratch } from './scratch';
import { TensorStream, deferTensor, deferredStream, spillMinBytes, spillTensor, spilledRange } from './spill';

const CHUNK_BYTES = 32 * 2 ** 20;
import {
  Tensor,
  dataAsBytes,
  dataFromBytes,
  dataFromTypedFields,
  elementCount,
  fromFloat32,
  halfToFloat32Into,
  protoBytes,
  takeAlongAxis,
  tensorToProto,
  toFloat32,
  toNumber,
  typedFieldLength,
} from './tensor';

const LFS_POINTER = 'version https://git-lfs.github.com/spec/v1';

/**
 * Decodes a ModelProto from a plain Uint8Array view of `bytes`. Given a Node Buffer, protobufjs 6
 * makes empty bytes fields with `new Buffer(0)`, which prints a deprecation warning (DEP0005)
 * once the code is bundled outside node_modules; a plain view also makes bytes fields views
 * into the file instead of copies.
 */
export function decodeModelProto(bytes: Uint8Array): onnx.ModelProto {
  return onnx.ModelProto.decode(new Uint8Array(bytes.buffer, bytes.byteOffset, bytes.byteLength));
}

/** Where a constant tensor of the graph is defined. */
type ConstantSource =
  | { kind: 'initializer'; index: number }
  | { kind: 'constant-node'; node: onnx.INodeProto };

/**
 * An ONNX model in memory. The protobuf is decoded once; tensor data is read on demand (inline
 * bytes are views of the file buffer, external data is read by offset when asked for), so memory
 * follows the tensors being worked on, not the model's size.
 */
export class OnnxModel {
  private constants = new Map<string, ConstantSource>();

  private constructor(
    readonly proto: onnx.ModelProto,
    /** The file that holds exactly this model ('' once edited, or when built in memory). */
    readonly path: string,
    /**
     * The file the model came from: names it in messages, anchors external data, and is never
     * overwritten. Copies (clone) keep it, but not `path`: they no longer match the file.
     */
    readonly origin: string = path,
    hadExternalData?: boolean,
  ) {
    this.hadExternalData = hadExternalData ?? this.initializers.some(isExternal);
    this.reindexConstants();
  }

  /** The model as read kept weights in external data files: writers keep that layout by default. */
  readonly hadExternalData: boolean;

  get graph(): onnx.GraphProto {
    return this.proto.graph as onnx.GraphProto;
  }

  /** The graph's initializers (decoded messages, so every field has its default). */
  get initializers(): onnx.TensorProto[] {
    return this.graph.initializer as onnx.TensorProto[];
  }

  /** The version of the default (ai.onnx) operator set the model imports, if it names one. */
  get defaultOpset(): number | undefined {
    const imp = this.proto.opsetImport.find((o) => !o.domain || o.domain === 'ai.onnx');
    return imp ? toNumber(imp.version) : undefined;
  }

  /** Folder that external data locations are relative to. */
  get dir(): string {
    return this.origin ? path.dirname(path.resolve(this.origin)) : process.cwd();
  }

  static read(file: string): OnnxModel {
    let bytes: Buffer;
    try {
      bytes = fs.readFileSync(file);
    } catch (e) {
      const code = (e as NodeJS.ErrnoException).code;
      if (code === 'ENOENT') throw new UserError(`model file not found: ${file}`);
      if (code === 'EISDIR') throw new UserError(`${file} is a folder, not an ONNX model file`);
      throw new UserError(`cannot read model ${file}: ${(e as Error).message}`);
    }
    return OnnxModel.fromBytes(bytes, file);
  }

  static fromBytes(bytes: Uint8Array, file: string): OnnxModel {
    const name = file || 'model';
    if (bytes.byteLength === 0) throw new UserError(`${name} is empty, not an ONNX model`);
    if (Buffer.from(bytes.subarray(0, LFS_POINTER.length)).toString('latin1') === LFS_POINTER) {
      throw new UserError(
        `${name} is a Git LFS pointer, not the model: fetch LFS files (set lfs: true on actions/checkout, or run git lfs pull)`,
      );
    }
    let proto: onnx.ModelProto;
    try {
      proto = decodeModelProto(bytes);
    } catch (e) {
      // A real model starts with field 1 (ir_version, varint): tag byte 0x08. If that much is
      // right but decoding ran off the end, the file was cut short.
      const truncated = bytes[0] === 0x08 && /index out of range|invalid wire type/i.test((e as Error).message);
      throw new UserError(
        truncated
          ? `${name} is truncated: the ONNX protobuf ends early (${(e as Error).message}); re-download or re-export the model`
          : `${name} is not an ONNX model (protobuf decoding failed: ${(e as Error).message})`,
      );
    }
    if (!proto.graph) {
      const looksLikeOnnx = toNumber(proto.irVersion) > 0 || (proto.opsetImport?.length ?? 0) > 0;
      throw new UserError(
        looksLikeOnnx
          ? `${name} has no graph: it is an ONNX model without a computation graph`
          : `${name} is not an ONNX model (no ir_version, opset or graph found)`,
      );
    }
    const defect = graphDefect(proto.graph);
    if (defect) throw new UserError(`${name} is not a valid ONNX graph: ${defect}; fix or re-export the model`);
    const model = new OnnxModel(proto, file);
    model.checkTensors();
    return model;
  }

  /** Wraps a protobuf built in memory (tests, generated models). */
  static fromProto(proto: onnx.ModelProto, file = '', origin = file): OnnxModel {
    return new OnnxModel(proto, file, origin);
  }

  /** Validates every initializer up front so a bad model fails at load with a clear message. */
  private checkTensors(): void {
    for (const t of this.initializers) {
      if (!isSupportedDType(t.dataType)) continue; // strings etc.: never touched, kept as they are
      const expected = protoBytes(t);
      if (isExternal(t)) {
        const loc = externalLocation(t, this.dir, this.origin);
        checkExternal(t, loc, this.origin, expected);
      } else if (t.rawData && t.rawData.byteLength > 0) {
        if (t.rawData.byteLength !== expected) {
          throw new UserError(
            `${this.origin}: initializer '${t.name}' holds ${t.rawData.byteLength} bytes but its shape [${t.dims.join(', ')}] of ${dtypeName(t.dataType)} needs ${expected}; the file is damaged`,
          );
        }
      } else {
        // Values in the typed fields (float_data, int64_data, ...): a short list would silently
        // read as zeros.
        const count = elementCount(t.dims.map(toNumber));
        const found = typedFieldLength(t);
        if (found !== count) {
          throw new UserError(
            `${this.origin}: initializer '${t.name}' holds ${found} values but its shape [${t.dims.join(', ')}] needs ${count}; the file is damaged`,
          );
        }
      }
    }
  }

  reindexConstants(): void {
    this.constants.clear();
    this.initializers.forEach((t, index) => this.constants.set(t.name, { kind: 'initializer', index }));
    for (const node of this.graph.node) {
      if (node.opType === 'Constant' && (node.domain ?? '') === '' && node.output?.[0]) {
        this.constants.set(node.output[0], { kind: 'constant-node', node });
      }
    }
  }

  isConstant(name: string): boolean {
    return this.constants.has(name);
  }

  isInitializer(name: string): boolean {
    return this.constants.get(name)?.kind === 'initializer';
  }

  constantNames(): string[] {
    return [...this.constants.keys()];
  }

  /** The proto of an initializer, without reading its data. */
  initializerProto(name: string): onnx.TensorProto | undefined {
    const src = this.constants.get(name);
    return src?.kind === 'initializer' ? this.initializers[src.index] : undefined;
  }

  /** Shape and type of a constant without reading its data. */
  constantInfo(name: string): { dtype: DataType; dims: number[] } | undefined {
    const src = this.constants.get(name);
    if (!src) return undefined;
    if (src.kind === 'initializer') {
      const t = this.initializers[src.index];
      return { dtype: t.dataType, dims: t.dims.map(toNumber) };
    }
    const a = src.node.attribute?.[0];
    if (a?.name === 'value' && a.t) return { dtype: a.t.dataType ?? DataType.UNDEFINED, dims: (a.t.dims ?? []).map(toNumber) };
    const t = this.constantNodeValue(src.node); // the small value_* forms
    return t && { dtype: t.dtype, dims: t.dims };
  }

  /** The value of an initializer or Constant node output, or undefined if `name` is computed. */
  constant(name: string): Tensor | undefined {
    const src = this.constants.get(name);
    if (!src) return undefined;
    if (src.kind === 'initializer') return this.readTensorProto(this.initializers[src.index]);
    return this.constantNodeValue(src.node);
  }

  /** Replaces the value of an initializer or Constant node output (shape may change). */
  setConstant(name: string, value: Tensor): void {
    const src = this.constants.get(name);
    if (!src) throw new Error(`internal: '${name}' is not a constant`);
    const proto = this.tensorProto(name, value, src.kind === 'initializer');
    if (src.kind === 'initializer') {
      this.initializers[src.index] = proto;
    } else {
      proto.name = '';
      src.node.attribute = [
        onnx.AttributeProto.create({ name: 'value', type: onnx.AttributeProto.AttributeType.TENSOR, t: proto }),
      ];
    }
  }

  addInitializer(name: string, value: Tensor): void {
    if (this.constants.has(name)) throw new Error(`internal: '${name}' already exists`);
    this.graph.initializer.push(this.tensorProto(name, value, true));
    this.constants.set(name, { kind: 'initializer', index: this.initializers.length - 1 });
  }

  /** Large initializers go to the spill file until the model is written (see spill.ts). */
  private tensorProto(name: string, value: Tensor, mayspill: boolean): onnx.TensorProto {
    const proto = tensorToProto(name, value);
    if (mayspill && proto.rawData.byteLength >= spillMinBytes()) {
      spillTensor(proto, proto.rawData);
      proto.rawData = new Uint8Array(0);
    }
    return proto;
  }

  /**
   * Drops what nothing reads any more: initializers (and their graph-input entries), and nodes
   * none of whose outputs is read or a graph output, repeatedly (a dead node can leave its
   * inputs dead). Only names `removable` allows go. Reads include If/Loop/Scan bodies' reads of
   * the outer scope. Returns how many initializers and nodes were dropped.
   */
  dropUnread(removable: (name: string) => boolean = () => true): { initializers: number; nodes: number } {
    const graph = this.graph;
    let initializers = 0;
    let nodes = 0;
    for (;;) {
      const read = new Set<string>(graph.output.map((o) => o.name ?? ''));
      for (const n of graph.node) for (const i of nodeReads(n)) read.add(i);
      const unread = (name: string) => !read.has(name) && removable(name);
      const deadNodes = graph.node.filter((n) => (n.output ?? []).length > 0 && (n.output ?? []).every((o) => !o || unread(o)));
      const deadInits = new Set(this.initializers.filter((t) => unread(t.name)).map((t) => t.name));
      if (deadNodes.length === 0 && deadInits.size === 0) break;
      if (deadInits.size > 0) {
        graph.initializer = this.initializers.filter((t) => !deadInits.has(t.name));
        graph.input = graph.input.filter((v) => !deadInits.has(v.name ?? ''));
      }
      const dead = new Set(deadNodes);
      graph.node = graph.node.filter((n) => !dead.has(n));
      initializers += deadInits.size;
      nodes += deadNodes.length;
    }
    if (initializers + nodes > 0) this.reindexConstants();
    return { initializers, nodes };
  }

  /** A tensor name not used anywhere in the graph yet. */
  uniqueName(base: string): string {
    return this.uniqueNames()(base);
  }

  /**
   * Names not used in the graph, for a caller that adds many: each one given is taken (the graph
   * is read once), so names from one maker never collide, as long as only they are added.
   */
  uniqueNames(): (base: string) => string {
    const used = new Set<string>(this.constants.keys());
    for (const n of this.graph.node) for (const o of [...(n.input ?? []), ...(n.output ?? [])]) used.add(o);
    for (const v of [...this.graph.input, ...this.graph.output]) used.add(v.name ?? '');
    return (base) => {
      let name = base;
      for (let i = 1; used.has(name); i++) name = `${base}_${i}`;
      used.add(name);
      return name;
    };
  }

  /**
   * Where a tensor's bytes are, without reading them when they are in a file: writers copy file
   * ranges in chunks instead of holding the tensor.
   */
  tensorSource(
    t: onnx.ITensorProto,
  ): { file: string; offset: number; length: number } | { bytes: Uint8Array } | { stream: TensorStream; length: number } {
    const stream = deferredStream(t);
    if (stream) return { stream, length: protoBytes(t) };
    const spill = spilledRange(t);
    if (spill) return spill;
    if (isExternal(t)) {
      const bytes = protoBytes(t);
      const loc = externalLocation(t, this.dir, this.origin);
      checkExternal(t, loc, this.origin, bytes);
      return { file: loc.file, offset: loc.offset, length: loc.length ?? bytes };
    }
    if (t.rawData && t.rawData.byteLength > 0) return { bytes: t.rawData };
    return { bytes: dataAsBytes(this.readTensorProto(t).data) };
  }

  /**
   * Streams a constant's values as float32 in chunks of whole rows of `rowElements` (at most
   * about `maxBytes` at a time), through one reused buffer: reading a weight for statistics
   * costs a chunk of memory, not the tensor.
   */
  forEachChunk(name: string, rowElements: number, fn: (values: Float32Array, firstElement: number) => void, maxBytes = CHUNK_BYTES): void {
    const info = this.constantInfo(name)!;
    const size = dtypeInfo(info.dtype).bytes;
    this.forEachRawChunk(name, rowElements * size, (bytes, firstByte) => {
      const data = new (dtypeInfo(info.dtype).array)(bytes.buffer as ArrayBuffer, bytes.byteOffset, bytes.byteLength / size);
      if (info.dtype === DataType.FLOAT16) {
        withScratch(data.length * 4, (b) => fn(halfToFloat32Into(data as Uint16Array, new Float32Array(b.buffer as ArrayBuffer, 0, data.length)), firstByte / size));
      } else fn(toFloat32({ dtype: info.dtype, dims: [data.length], data }), firstByte / size);
    }, maxBytes);
  }

  /** The raw bytes of a constant in chunks of whole rows of `rowBytes`, aligned for typed views. */
  private forEachRawChunk(name: string, rowBytes: number, fn: (bytes: Uint8Array, firstByte: number) => void, maxBytes = CHUNK_BYTES): void {
    const proto = this.initializerProto(name);
    if (proto) this.forEachRawChunkOf(proto, rowBytes, fn, maxBytes);
    else fn(Uint8Array.from(dataAsBytes(this.constant(name)!.data)), 0);
  }

  private forEachRawChunkOf(proto: onnx.ITensorProto, rowBytes: number, fn: (bytes: Uint8Array, firstByte: number) => void, maxBytes = CHUNK_BYTES): void {
    const source = this.tensorSource(proto);
    const chunk = Math.max(1, Math.floor(maxBytes / rowBytes)) * rowBytes;
    if ('stream' in source) {
      // A stream's pieces are rows of its own last axis: regathered into chunks of whole rows
      // of `rowBytes` (a conv weight's channel is many of them).
      withScratch(Math.min(chunk, source.length), (buffer) => {
        let filled = 0;
        let first = 0;
        source.stream((bytes) => {
          for (let at = 0; at < bytes.byteLength; ) {
            const n = Math.min(buffer.byteLength - filled, bytes.byteLength - at);
            buffer.set(bytes.subarray(at, at + n), filled);
            filled += n;
            at += n;
            if (filled === buffer.byteLength) {
              fn(buffer, first);
              first += filled;
              filled = 0;
            }
          }
        });
        if (filled > 0) fn(buffer.subarray(0, filled), first);
      });
      return;
    }
    if ('bytes' in source) {
      // (copied: a view into the file's bytes may not be aligned for its element type)
      withScratch(source.bytes.byteLength, (aligned) => {
        aligned.set(source.bytes);
        fn(aligned, 0);
      });
      return;
    }
    const fd = fs.openSync(source.file, 'r');
    try {
      withScratch(Math.min(chunk, source.length), (buffer) => {
        for (let first = 0; first < source.length; first += chunk) {
          const bytes = buffer.subarray(0, Math.min(chunk, source.length - first));
          for (let done = 0; done < bytes.byteLength; ) {
            const n = fs.readSync(fd, bytes, done, bytes.byteLength - done, source.offset + first + done);
            if (n === 0) throw new Error(`unexpected end of ${source.file}`);
            done += n;
          }
          fn(bytes, first);
        }
      });
    } finally {
      fs.closeSync(fd);
    }
  }

  /**
   * Keeps only the given indices along some axes of a constant (structured pruning). A large
   * initializer is streamed row by row from where it lies into the spill file, so neither the
   * old nor the new tensor is ever whole in memory.
   */
  sliceConstant(name: string, keep: Map<number, number[]>): void {
    const info = this.constantInfo(name)!;
    const proto = this.initializerProto(name);
    const size = dtypeInfo(info.dtype).bytes;
    const dims = info.dims;
    if (!proto || elementCount(dims) * size < spillMinBytes() || dims.length === 0) {
      let t = this.constant(name)!;
      for (const [axis, k] of keep) t = takeAlongAxis(t, axis, k);
      this.setConstant(name, t);
      return;
    }
    const last = dims.length - 1;
    const rowBytes = dims[last] * size;
    const masks = dims.slice(0, last).map((d, a) => {
      const k = keep.get(a);
      if (!k) return undefined;
      const m = new Uint8Array(d);
      for (const i of k) m[i] = 1;
      return m;
    });
    const keptColumns = keep.get(last);
    // undefined: every column, in order (rows are then copied whole)
    const columns = keptColumns && !(keptColumns.length === dims[last] && keptColumns.every((c, i) => c === i)) ? Int32Array.from(keptColumns) : undefined;
    const gather = columns && { columns, runs: runsOf(columns) };
    // Deferred: the sliced tensor is produced from its source whenever it is read (written,
    // scored, sliced again), so pruning itself moves no weight bytes.
    const source = proto;
    const sliced = onnx.TensorProto.create({ name, dataType: info.dtype, dims: dims.map((d, a) => keep.get(a)?.length ?? d) });
    deferTensor(sliced, (fn) => {
      const index = new Array<number>(last).fill(0); // multi-index of the current row
      this.forEachRawChunkOf(source, rowBytes, (bytes) => {
        const rows = bytes.byteLength / rowBytes;
        const keptRows: number[] = [];
        for (let r = 0; r < rows; r++) {
          let kept = true;
          for (let a = 0; a < last && kept; a++) if (masks[a] && !masks[a]![index[a]]) kept = false;
          if (kept) keptRows.push(r);
          for (let a = last - 1; a >= 0; a--) {
            if (++index[a] < dims[a]) break;
            index[a] = 0;
          }
        }
        const outBytes = keptRows.length * (columns?.length ?? dims[last]) * size;
        if (keptRows.length) withScratch(outBytes, (out) => fn(gatherColumns(bytes, size, dims[last], keptRows, gather, out)));
      });
    });
    const src = this.constants.get(name);
    if (src?.kind === 'initializer') this.graph.initializer[src.index] = sliced;
  }

  readTensorProto(t: onnx.ITensorProto): Tensor {
    const dtype = t.dataType ?? DataType.UNDEFINED;
    const dims = (t.dims ?? []).map(toNumber);
    if (!isSupportedDType(dtype)) {
      throw new UserError(`${this.origin || 'model'}: tensor '${t.name}' has unsupported data type ${dtypeName(dtype)}`);
    }
    const count = elementCount(dims);
    const bytes = count * dtypeInfo(dtype).bytes;
    const spill = spilledRange(t);
    if (spill) return { dtype, dims, data: readTensorData(dtype, spill.file, spill.offset, spill.length) };
    const stream = deferredStream(t);
    if (stream) {
      const buffer = new Uint8Array(new ArrayBuffer(bytes));
      let at = 0;
      stream((chunk) => {
        buffer.set(chunk, at);
        at += chunk.byteLength;
      });
      return { dtype, dims, data: new (dtypeInfo(dtype).array)(buffer.buffer, 0, count) };
    }
    if (isExternal(t)) {
      const loc = externalLocation(t, this.dir, this.origin);
      checkExternal(t, loc, this.origin, bytes);
      return { dtype, dims, data: readTensorData(dtype, loc.file, loc.offset, loc.length ?? bytes) };
    }
    if (t.rawData && t.rawData.byteLength > 0) return { dtype, dims, data: dataFromBytes(dtype, t.rawData) };
    return { dtype, dims, data: dataFromTypedFields(t, count) };
  }

  private constantNodeValue(node: onnx.INodeProto): Tensor | undefined {
    const attr = node.attribute?.[0];
    if (!attr) return undefined;
    switch (attr.name) {
      case 'value':
        return attr.t ? this.readTensorProto(attr.t) : undefined;
      case 'value_float':
        return fromFloat32([attr.f ?? 0], DataType.FLOAT, []);
      case 'value_floats':
        return fromFloat32(attr.floats ?? [], DataType.FLOAT, [attr.floats?.length ?? 0]);
      case 'value_int':
        return fromFloat32([toNumber(attr.i)], DataType.INT64, []);
      case 'value_ints': {
        const ints = (attr.ints ?? []).map(toNumber);
        return fromFloat32(ints, DataType.INT64, [ints.length]);
      }
      default:
        return undefined; // sparse or string constants: not something we prune
    }
  }

  /**
   * A copy to edit. Nodes and the graph are copied; initializer protos are shared, which is safe
   * because edits replace them (setConstant) rather than change them in place.
   */
  clone(): OnnxModel {
    const graph = this.graph;
    const initializers = graph.initializer;
    graph.initializer = [];
    try {
      const copy = decodeModelProto(onnx.ModelProto.encode(this.proto).finish());
      (copy.graph as onnx.GraphProto).initializer = initializers.slice();
      return new OnnxModel(copy, '', this.origin, this.hadExternalData);
    } finally {
      graph.initializer = initializers;
    }
  }

  /** Size of the model on disk: the .onnx file plus every external data file it references. */
  bytesOnDisk(): number {
    return this.files().reduce((total, f) => total + fs.statSync(f).size, 0);
  }

  /** The files the model is made of: the .onnx file, then its external data files (none for a model in memory). */
  files(): string[] {
    if (!this.path) return [];
    const data = new Set<string>();
    for (const t of this.initializers) if (isExternal(t)) data.add(externalLocation(t, this.dir, this.origin).file);
    return [this.path, ...data];
  }
}

/**
 * The kept rows of a chunk with only the kept columns (undefined: all of them), into `out`. Kept
 * columns in runs (a head's block of columns) are copied a run at a time; scattered ones element
 * by element through an integer view of the element's width, one monomorphic loop per width.
 */
function gatherColumns(
  bytes: Uint8Array,
  size: number,
  rowLength: number,
  rows: number[],
  kept: { columns: Int32Array; runs: [number, number][] } | undefined,
  out: Uint8Array,
): Uint8Array {
  const rowBytes = rowLength * size;
  if (!kept) {
    // Every column kept: runs of kept rows are copied whole.
    let o = 0;
    for (const [first, count] of runsOf(rows)) {
      out.set(bytes.subarray(first * rowBytes, (first + count) * rowBytes), o);
      o += count * rowBytes;
    }
    return out;
  }
  const { columns, runs } = kept;
  const m = columns.length;
  if (runs.length * 16 <= m) {
    let o = 0;
    for (let ri = 0; ri < rows.length; ri++) {
      const base = rows[ri] * rowBytes;
      for (const [first, count] of runs) {
        out.set(bytes.subarray(base + first * size, base + (first + count) * size), o);
        o += count * size;
      }
    }
    return out;
  }
  if (size === 4 || size === 2 || size === 1) {
    const View = size === 4 ? Uint32Array : size === 2 ? Uint16Array : Uint8Array;
    const input = new View(bytes.buffer as ArrayBuffer, bytes.byteOffset, bytes.byteLength / size);
    const output = new View(out.buffer as ArrayBuffer, out.byteOffset, rows.length * m);
    for (let ri = 0, o = 0; ri < rows.length; ri++, o += m) {
      const base = rows[ri] * rowLength;
      for (let c = 0; c < m; c++) output[o + c] = input[base + columns[c]];
    }
    return out;
  }
  // 8-byte elements: byte copies of each element.
  let o = 0;
  for (const r of rows) {
    const base = r * rowBytes;
    for (let c = 0; c < m; c++) {
      const from = base + columns[c] * size;
      for (let b = 0; b < size; b++) out[o++] = bytes[from + b];
    }
  }
  return out;
}

/** Indices as [first, count] runs of consecutive ones, in order. */
function runsOf(indices: ArrayLike<number>): [number, number][] {
  const runs: [number, number][] = [];
  for (let i = 0; i < indices.length; ) {
    let j = i + 1;
    while (j < indices.length && indices[j] === indices[j - 1] + 1) j++;
    runs.push([indices[i], j - i]);
    i = j;
  }
  return runs;
}
