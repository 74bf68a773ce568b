import * as fs from 'fs';
import * as path from 'path';
import { onnx } from 'onnx-proto';
import { UserError } from '../errors';
import { temporaryName } from '../util/files';
import { isSupportedDType } from './dtype';
import { externalLocation, isExternal } from './external';
import { OnnxModel } from './model';
import { withScratch } from './scratch';
import { isSpilled } from './spill';
import { dataAsBytes, protoBytes } from './tensor';

/** Where a written model's weights go (docs/contracts.md, "Model files"). */
export const EXTERNAL_DATA_MODES = ['auto', 'always', 'never'] as const;
export type ExternalDataMode = (typeof EXTERNAL_DATA_MODES)[number];

/** The largest message protobuf parsers accept (onnxruntime's limit is INT_MAX bytes). */
const PROTOBUF_LIMIT = 2 ** 31 - 1;
/** Tensors smaller than this stay inline even in external-data mode (shape constants, biases). */
const EXTERNAL_MIN_BYTES = 1024;
/** Offsets in the data file are multiples of a page, so a runtime can map each tensor as it is. */
const DATA_ALIGN = 4096;

export interface WriteOptions {
  /**
   * auto (default): external data when the input model had it, or when inline weights would pass
   * protobuf's 2 GiB; always: weights of 1 KiB and more go to `<file>.data`; never: all inline,
   * refused above 2 GiB.
   */
  externalData?: ExternalDataMode;
  /** Written in place of the model's own producer and metadata_props (the model is not changed). */
  producer?: ProducerStamp;
}

/** Who wrote a model and what it says about itself: ModelProto's producer_name, producer_version and metadata_props. */
export interface ProducerStamp {
  name: string;
  version: string;
  metadata: { key: string; value: string }[];
}

export interface WriteResult {
  path: string;
  dataPath?: string;
  bytes: number;
}

/** Where an initializer's bytes come from when they are not encoded with its proto. */
type Source = ReturnType<OnnxModel['tensorSource']>;

/**
 * One initializer as written: either `proto` encoded as it is (small tensors, typed-field
 * values, strings, and external ones once their bytes are in the data file), or `proto`
 * without its data plus the `length` bytes of `source`, written as its raw_data.
 */
interface Entry {
  proto: onnx.ITensorProto;
  source?: Source;
  length: number;
}

/**
 * Writes `model` to `file` without modifying it, streaming: the protobuf's length-delimited
 * fields are sized in advance, so tensor bytes go from where they lie (the input's files, the
 * spill file, a deferred slice) straight to the output, and the whole message is never held.
 * Both files are written under temporary names and renamed when complete: an interrupted write
 * leaves no half model behind.
 */
export function writeModel(model: OnnxModel, file: string, options: WriteOptions = {}): WriteResult {
  const out = path.resolve(file);
  if (model.origin && path.resolve(model.origin) === out) {
    throw new UserError(`refusing to overwrite the input model ${file}: choose another output path`);
  }
  const mode = options.externalData ?? 'auto';
  // The inline layout is only sized when it may be written: never, or auto for an inline input.
  let inline: { entries: Entry[]; layout: MessageLayout } | undefined;
  if (mode === 'never' || (mode === 'auto' && !model.hadExternalData)) {
    const entries = model.initializers.map((t) => entryFor(model, t, false));
    inline = { entries, layout: messageLayout(model, entries, options.producer) };
    if (mode === 'never' && inline.layout.size > PROTOBUF_LIMIT) {
      throw new UserError(
        `${file}: with its weights inline the model would be ${gib(inline.layout.size)}, above protobuf's 2 GiB limit; write it with external data (external-data: auto or always)`,
      );
    }
  }
  const external = !inline || inline.layout.size > PROTOBUF_LIMIT;
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
  const sinks: FileSink[] = [];
  try {
    let written = inline;
    let dataBytes = 0;
    if (tmpData) {
      const data = new FileSink(tmpData);
      sinks.push(data);
      const entries = model.initializers.map((t) => entryFor(model, t, true)).map((e) => {
        if (!e.source || e.length < EXTERNAL_MIN_BYTES) return e; // small ones come inline, as raw bytes
        data.pad(DATA_ALIGN);
        const offset = data.position;
        data.copy(e.source, e.length, e.proto.name ?? '');
        const proto = onnx.TensorProto.create({
          ...e.proto,
          dataLocation: onnx.TensorProto.DataLocation.EXTERNAL,
          externalData: [
            { key: 'location', value: dataName },
            { key: 'offset', value: String(offset) },
            { key: 'length', value: String(e.length) },
          ],
        });
        return { proto, length: 0 };
      });
      data.close();
      dataBytes = data.position;
      written = { entries, layout: messageLayout(model, entries, options.producer) };
    }
    const { entries, layout } = written!;
    const sink = new FileSink(tmpModel);
    sinks.push(sink);
    writeMessage(sink, layout, entries);
    sink.close();
    if (sink.position !== layout.size) throw new Error(`internal: wrote ${sink.position} bytes of a ${layout.size}-byte model`);
    if (tmpData) fs.renameSync(tmpData, dataPath);
    fs.renameSync(tmpModel, out);
    return { path: out, dataPath: external ? dataPath : undefined, bytes: layout.size + dataBytes };
  } catch (e) {
    for (const s of sinks) s.close();
    for (const f of [tmpModel, tmpData]) if (f) fs.rmSync(f, { force: true });
    throw e;
  }
}

function gib(bytes: number): string {
  return `${(bytes / 2 ** 30).toFixed(2)} GiB`;
}

/**
 * How `t` is written. Tensors whose bytes are large or not in the proto (external, spilled,
 * deferred) get a source; the proto kept is `t` without its data. Small in-memory tensors and
 * types we do not read stay as they are.
 */
function entryFor(model: OnnxModel, t: onnx.TensorProto, external: boolean): Entry {
  if (!isSupportedDType(t.dataType)) return { proto: t, length: 0 };
  const length = protoBytes(t);
  const inMemory = !isExternal(t) && !isSpilled(t);
  if (inMemory && (external ? length < EXTERNAL_MIN_BYTES : !(t.rawData?.byteLength > 0))) return { proto: t, length: 0 };
  return { proto: withoutData(t), source: model.tensorSource(t), length };
}

/** `t`'s own fields without its values or their location (the writer supplies both). */
function withoutData(t: onnx.TensorProto): onnx.TensorProto {
  const copy = onnx.TensorProto.create({ ...t, floatData: [], int32Data: [], int64Data: [], doubleData: [], uint64Data: [], externalData: [] });
  delete (copy as { rawData?: Uint8Array }).rawData;
  if (isExternal(t)) copy.dataLocation = onnx.TensorProto.DataLocation.DEFAULT;
  return copy;
}

// Protobuf encodes a message as its fields one after another, in field-number order (protobufjs
// writes them so). A message can thus be written as the encoding of the fields before a large
// field, that field, and the encoding of the fields after it; only the lengths of the enclosing
// messages must be known first. These are the fields before ModelProto.graph (7),
// GraphProto.initializer (5) and TensorProto.raw_data (9) in onnx.proto.
const MODEL_BEFORE_GRAPH = ['irVersion', 'producerName', 'producerVersion', 'domain', 'modelVersion', 'docString'];
const GRAPH_BEFORE_INITIALIZERS = ['node', 'name'];
const TENSOR_BEFORE_RAW_DATA = ['dims', 'dataType', 'segment', 'floatData', 'int32Data', 'stringData', 'int64Data', 'name'];

const TAG_GRAPH = (7 << 3) | 2;
const TAG_INITIALIZER = (5 << 3) | 2;
const TAG_RAW_DATA = (9 << 3) | 2;

/** `message`'s own fields split around `field`: those named in `before`, and the rest. */
function split<T extends object>(message: T, before: string[], field: string): [Partial<T>, Partial<T>] {
  const head: Record<string, unknown> = {};
  const tail: Record<string, unknown> = {};
  for (const key of Object.keys(message)) {
    if (key === field) continue;
    (before.includes(key) ? head : tail)[key] = (message as Record<string, unknown>)[key];
  }
  return [head as Partial<T>, tail as Partial<T>];
}

interface TensorLayout {
  head: Uint8Array;
  tail: Uint8Array;
  /** The encoded TensorProto's length. */
  size: number;
}

interface MessageLayout {
  modelHead: Uint8Array;
  graphHead: Uint8Array;
  tensors: TensorLayout[];
  graphTail: Uint8Array;
  modelTail: Uint8Array;
  graphSize: number;
  size: number;
}

/** The encoded pieces of the model around its initializers, and every length, before writing. */
function messageLayout(model: OnnxModel, entries: Entry[], producer: ProducerStamp | undefined): MessageLayout {
  const [modelFields, modelRest] = split(model.proto, MODEL_BEFORE_GRAPH, 'graph');
  if (producer) {
    modelFields.producerName = producer.name;
    modelFields.producerVersion = producer.version;
    modelRest.metadataProps = producer.metadata.map((p) => onnx.StringStringEntryProto.create(p));
  }
  const [graphFields, graphRest] = split(model.graph, GRAPH_BEFORE_INITIALIZERS, 'initializer');
  if (graphFields.node) graphFields.node = withNestedDataInline(model, graphFields.node);
  const tensors = entries.map((e): TensorLayout => {
    if (!e.source) {
      const head = onnx.TensorProto.encode(e.proto).finish();
      return { head, tail: new Uint8Array(0), size: head.byteLength };
    }
    const [before, after] = split(e.proto, TENSOR_BEFORE_RAW_DATA, 'rawData');
    const head = onnx.TensorProto.encode(onnx.TensorProto.create(before)).finish();
    const tail = onnx.TensorProto.encode(onnx.TensorProto.create(after)).finish();
    return { head, tail, size: head.byteLength + fieldBytes(e.length) + tail.byteLength };
  });
  const graphHead = onnx.GraphProto.encode(onnx.GraphProto.create(graphFields)).finish();
  const graphTail = onnx.GraphProto.encode(onnx.GraphProto.create(graphRest)).finish();
  const graphSize = graphHead.byteLength + tensors.reduce((sum, t) => sum + fieldBytes(t.size), 0) + graphTail.byteLength;
  const modelHead = onnx.ModelProto.encode(onnx.ModelProto.create(modelFields)).finish();
  const modelTail = onnx.ModelProto.encode(onnx.ModelProto.create(modelRest)).finish();
  const size = modelHead.byteLength + fieldBytes(graphSize) + modelTail.byteLength;
  return { modelHead, graphHead, tensors, graphTail, modelTail, graphSize, size };
}

/**
 * Nodes whose tensors (Constant values, initializers of If/Loop/Scan bodies) are in external
 * data name a file beside the input model, which the output's folder may not have: such
 * tensors are written inline. The nodes are copied only when one is found.
 */
function withNestedDataInline(model: OnnxModel, nodes: onnx.INodeProto[]): onnx.INodeProto[] {
  const hasExternal = (n: onnx.INodeProto): boolean =>
    (n.attribute ?? []).some(
      (a) =>
        [a.t, ...(a.tensors ?? [])].some((t) => t && isExternal(t)) ||
        [a.g, ...(a.graphs ?? [])].some((g) => g && ((g.initializer ?? []).some(isExternal) || (g.node ?? []).some(hasExternal))),
    );
  if (!nodes.some(hasExternal)) return nodes;
  const inline = (t: onnx.ITensorProto): onnx.ITensorProto => {
    if (!isExternal(t)) return t;
    const copy = onnx.TensorProto.create({ ...t, externalData: [], rawData: dataAsBytes(model.readTensorProto(t).data) });
    copy.dataLocation = onnx.TensorProto.DataLocation.DEFAULT;
    return copy;
  };
  const graph = (g: onnx.IGraphProto): onnx.IGraphProto => onnx.GraphProto.create({ ...g, initializer: (g.initializer ?? []).map(inline), node: (g.node ?? []).map(node) });
  const node = (n: onnx.INodeProto): onnx.INodeProto =>
    !hasExternal(n)
      ? n
      : onnx.NodeProto.create({
          ...n,
          attribute: (n.attribute ?? []).map((a) =>
            onnx.AttributeProto.create({ ...a, t: a.t ? inline(a.t) : a.t, tensors: (a.tensors ?? []).map(inline), g: a.g ? graph(a.g) : a.g, graphs: (a.graphs ?? []).map(graph) }),
          ),
        });
  return nodes.map(node);
}

/** Bytes of a length-delimited field (one-byte tag, length varint, payload). */
function fieldBytes(length: number): number {
  return 1 + varint(length).byteLength + length;
}

function varint(value: number): Uint8Array {
  const bytes: number[] = [];
  for (let v = value; ; v = Math.floor(v / 128)) {
    if (v < 128) {
      bytes.push(v);
      return Uint8Array.from(bytes);
    }
    bytes.push((v % 128) | 128);
  }
}

function writeMessage(sink: FileSink, layout: MessageLayout, entries: Entry[]): void {
  const delimited = (tag: number, length: number) => {
    sink.write(Uint8Array.of(tag));
    sink.write(varint(length));
  };
  sink.write(layout.modelHead);
  delimited(TAG_GRAPH, layout.graphSize);
  sink.write(layout.graphHead);
  entries.forEach((e, i) => {
    const t = layout.tensors[i];
    delimited(TAG_INITIALIZER, t.size);
    sink.write(t.head);
    if (e.source) {
      delimited(TAG_RAW_DATA, e.length);
      sink.copy(e.source, e.length, e.proto.name ?? '');
    }
    sink.write(t.tail);
  });
  sink.write(layout.graphTail);
  sink.write(layout.modelTail);
}

const BUFFER_BYTES = 4 * 2 ** 20;
const COPY_BYTES = 16 * 2 ** 20;

/**
 * An output file written front to back. Small pieces (protobuf fields) gather in a buffer; large
 * ones go straight to the file.
 */
class FileSink {
  position = 0;
  private fd: number | undefined;
  private buffer = Buffer.allocUnsafe(BUFFER_BYTES);
  private buffered = 0;

  constructor(file: string) {
    this.fd = fs.openSync(file, 'w');
  }

  write(bytes: Uint8Array): void {
    if (bytes.byteLength >= BUFFER_BYTES / 4) {
      this.flush();
      writeAll(this.fd!, bytes);
    } else {
      if (this.buffered + bytes.byteLength > BUFFER_BYTES) this.flush();
      this.buffer.set(bytes, this.buffered);
      this.buffered += bytes.byteLength;
    }
    this.position += bytes.byteLength;
  }

  /** Zeros up to the next multiple of `align`. */
  pad(align: number): void {
    const pad = (align - (this.position % align)) % align;
    if (pad) this.write(new Uint8Array(pad));
  }

  /** Writes a tensor's `length` bytes from where they lie. */
  copy(source: Source, length: number, name: string): void {
    const start = this.position;
    if ('bytes' in source) this.write(source.bytes);
    else if ('stream' in source) source.stream((chunk) => this.write(chunk));
    else this.copyRange(source.file, source.offset, length);
    if (this.position - start !== length) throw new Error(`internal: tensor '${name}' gave ${this.position - start} bytes, expected ${length}`);
  }

  /** Copies a file range through one reused buffer: memory stays at one chunk. */
  private copyRange(file: string, from: number, length: number): void {
    this.flush();
    const src = fs.openSync(file, 'r');
    try {
      withScratch(Math.min(COPY_BYTES, length), (buffer) => {
        for (let done = 0; done < length; ) {
          const n = fs.readSync(src, buffer, 0, Math.min(buffer.byteLength, length - done), from + done);
          if (n === 0) throw new Error(`unexpected end of ${file}`);
          writeAll(this.fd!, buffer.subarray(0, n));
          done += n;
        }
      });
    } finally {
      fs.closeSync(src);
    }
    this.position += length;
  }

  private flush(): void {
    if (this.buffered === 0) return;
    writeAll(this.fd!, this.buffer.subarray(0, this.buffered));
    this.buffered = 0;
  }

  /** Flushes and closes; safe to call again after an error. */
  close(): void {
    if (this.fd === undefined) return;
    const fd = this.fd;
    this.fd = undefined;
    try {
      if (this.buffered) writeAll(fd, this.buffer.subarray(0, this.buffered));
      this.buffered = 0;
    } finally {
      fs.closeSync(fd);
    }
  }
}

/** Appends all of `data` at the file's current position. */
function writeAll(fd: number, data: Uint8Array): void {
  let done = 0;
  while (done < data.byteLength) done += fs.writeSync(fd, data, done, data.byteLength - done);
}
