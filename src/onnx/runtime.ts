import * as crypto from 'crypto';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import * as ort from 'onnxruntime-node';
import { onnx } from 'onnx-proto';
import { DataType } from './dtype';
import { isSpilled } from './spill';
import { writeModel } from './write';
import { externalLocation, isExternal } from './external';
import { OnnxModel } from './model';
import { Tensor, elementCount, toNumber } from './tensor';
import { isPastInput, pastWithDeclaredSizes, presentOf } from './kv-cache';
import { releaseGarbage } from '../util/gc';

/** A batch of model inputs, keyed by graph input name (axis 0 is the sample axis). */
export type Feeds = Record<string, ort.Tensor>;

export { ort };

const ORT_TYPE: Partial<Record<number, ort.Tensor.Type>> = {
  [DataType.FLOAT]: 'float32',
  [DataType.DOUBLE]: 'float64',
  [DataType.FLOAT16]: 'float16',
  [DataType.INT8]: 'int8',
  [DataType.UINT8]: 'uint8',
  [DataType.BOOL]: 'bool',
  [DataType.INT16]: 'int16',
  [DataType.UINT16]: 'uint16',
  [DataType.INT32]: 'int32',
  [DataType.UINT32]: 'uint32',
  [DataType.INT64]: 'int64',
  [DataType.UINT64]: 'uint64',
};

/** The ONNX data type of an onnxruntime tensor type (ORT_TYPE read backwards). */
export function onnxType(type: ort.Tensor.Type): DataType | undefined {
  const found = Object.entries(ORT_TYPE).find(([, t]) => t === type);
  return found ? (Number(found[0]) as DataType) : undefined;
}

export function ortType(dtype: number): ort.Tensor.Type {
  const t = ORT_TYPE[dtype];
  if (!t) throw new Error(`onnxruntime has no tensor type for ONNX data type ${dtype}`);
  return t;
}

export function toOrtTensor(t: Tensor): ort.Tensor {
  return new ort.Tensor(ortType(t.dtype), t.data as never, t.dims);
}

/** A graph input's element type and shape; dynamic dims are their dim_param name, or null. */
export interface InputSpec {
  name: string;
  dtype: DataType;
  dims: (number | string | null)[];
}

export function graphInputs(model: OnnxModel): InputSpec[] {
  return model.graph.input
    .filter((v) => !model.isInitializer(v.name ?? ''))
    .map((v) => ({ name: v.name ?? '', dtype: v.type?.tensorType?.elemType ?? DataType.FLOAT, dims: valueDims(v) }));
}

export function graphOutputs(model: OnnxModel): InputSpec[] {
  return model.graph.output.map((v) => ({
    name: v.name ?? '',
    dtype: v.type?.tensorType?.elemType ?? DataType.FLOAT,
    dims: valueDims(v),
  }));
}

export function valueDims(v: onnx.IValueInfoProto): (number | string | null)[] {
  return (v.type?.tensorType?.shape?.dim ?? []).map((d) =>
    d.dimParam ? d.dimParam : d.dimValue !== null && d.dimValue !== undefined && toNumber(d.dimValue) > 0 ? toNumber(d.dimValue) : null,
  );
}

/** Sizes given to some axes of some inputs, by input name and axis, over what the model declares. */
export type FixedSizes = Readonly<Record<string, Readonly<Record<number, number | undefined>>>>;

const ZERO_ARRAY: Partial<Record<ort.Tensor.Type, { new (n: number): ort.Tensor.DataType }>> = {
  float64: Float64Array,
  int8: Int8Array,
  uint8: Uint8Array,
  int16: Int16Array,
  uint16: Uint16Array,
  uint32: Uint32Array,
  uint64: BigUint64Array,
};

/**
 * Dummy inputs for running a model when no data is given: dynamic axes get `axis0` on the
 * first axis (the batch) and `otherAxes` elsewhere; an axis named like one that is first in
 * some input gets `axis0` wherever it is (a recurrent state [layers, batch, hidden] follows the
 * input's batch), and an axis named as a sum of axes the sum of their sizes. A KV cache's past
 * takes the sizes the model's declarations give it (kv-cache.ts: a head size declared only on the
 * present output), then those `fixed` gives (by input and axis: sizes found by running the model,
 * graph/cache-sizes.ts). Integer inputs are 1 (a valid token id, a full attention mask), float
 * inputs small deterministic values.
 */
export function dummyFeeds(model: OnnxModel, axis0 = 2, otherAxes = 7, fixed: FixedSizes = {}): Record<string, ort.Tensor> {
  const feeds: Record<string, ort.Tensor> = {};
  const specs = graphInputs(model)
    .map((spec) => (isPastInput(spec.name) && spec.dims.length >= 3 ? pastWithDeclaredSizes(model, spec, new Map()) : spec))
    .map((spec): InputSpec => ({ ...spec, dims: spec.dims.map((d, axis) => fixed[spec.name]?.[axis] ?? d) }));
  const batchNames = new Set(specs.map((s) => s.dims[0]).filter((d): d is string => typeof d === 'string'));
  // A first step: every past with a present is empty. An attention op may refuse a past of
  // several tokens beside several new ones at batch 2 (GroupQueryAttention on CPU), and a mask
  // over past and new tokens (`past_sequence + sequence`, or the present's `total_sequence_length`
  // as onnxruntime-genai names it) is then as long as the new tokens, as every other axis is.
  const isEmptyAxis = (spec: InputSpec, i: number) => isPastInput(spec.name) && spec.dims.length >= 3 && i === spec.dims.length - 2 && !!presentOf(model, spec.name);
  const empty = new Set(specs.flatMap((s) => s.dims.filter((d, i): d is string => typeof d === 'string' && isEmptyAxis(s, i))));
  for (const spec of specs) {
    const size = (d: string | null, i: number): number => (i === 0 || (d !== null && batchNames.has(d)) ? axis0 : (d !== null && empty.has(d)) || isEmptyAxis(spec, i) ? 0 : otherAxes);
    // A sum of named axes ('past_sequence + sequence', as exporters name a cache's mask) is the sum of their sizes.
    const sum = (d: string, i: number) => d.split('+').reduce((total, part) => total + (/^\s*\d+\s*$/.test(part) ? Number(part) : size(part.trim(), i)), 0);
    const dims = spec.dims.map((d, i) => (typeof d === 'number' ? d : typeof d === 'string' && d.includes('+') ? sum(d, i) : size(d, i)));
    const n = elementCount(dims);
    const type = ortType(spec.dtype);
    let data: ort.Tensor.DataType;
    if (type === 'float32') {
      const f = new Float32Array(n);
      for (let i = 0; i < n; i++) f[i] = Math.sin(i * 12.9898) * 0.5;
      data = f;
    } else if (type === 'int64') data = new BigInt64Array(n).fill(1n);
    else if (type === 'int32') data = new Int32Array(n).fill(1);
    else if (type === 'bool') data = new Uint8Array(n).fill(1);
    else if (type === 'float16') data = new Uint16Array(n).fill(0x3800);
    else data = new (ZERO_ARRAY[type] ?? Float64Array)(n); // other types: zeros of the right array type
    feeds[spec.name] = new ort.Tensor(type, data as never, dims);
  }
  return feeds;
}

/**
 * The external data files of a model read into memory, in the form onnxruntime-node accepts for
 * a session created from bytes (its Node binding takes only buffers, not file paths).
 */
export function externalDataFiles(model: OnnxModel): { path: string; data: Uint8Array }[] {
  return [...externalFileMap(model)].map(([location, file]) => ({ path: location, data: fs.readFileSync(file) }));
}

/** location as written in the model -> absolute path (checked to stay inside the model's folder). */
function externalFileMap(model: OnnxModel): Map<string, string> {
  const files = new Map<string, string>();
  for (const t of model.initializers) {
    if (isExternal(t)) {
      const loc = externalLocation(t, model.dir, model.origin);
      files.set(loc.location, loc.file);
    }
  }
  return files;
}

/** The target device's intra-op threads (config `device.threads`), or undefined for all cores. */
let deviceThreads: number | undefined;

/**
 * Runs `fn` with every session it makes (evaluation, latency and the engine's own runs alike)
 * limited to `threads` intra-op threads, so the figures are the target device's
 * (docs/contracts.md, "The target device"). undefined: onnxruntime's default, every core.
 */
export async function withSessionThreads<R>(threads: number | undefined, fn: () => Promise<R>): Promise<R> {
  const before = deviceThreads;
  deviceThreads = threads;
  try {
    return await fn();
  } finally {
    deviceThreads = before;
  }
}

/**
 * The channel block of onnxruntime's blocked (NCHWc) convolutions on this machine: MLAS picks 16
 * on x64 processors with AVX-512F, 8 on other x64 ones; a convolution whose channels are not a
 * multiple of it runs unblocked, slower than the wider blocked one (docs/pruning.md, "Widths").
 * Elsewhere 8, a width every SIMD unit divides. Read from /proc/cpuinfo on Linux; 8 where the
 * processor's features cannot be read.
 */
export function convolutionBlock(): number {
  if (process.arch !== 'x64') return 8;
  cpuBlock ??= (() => {
    try {
      return /^flags\s*:.*\bavx512f\b/m.test(fs.readFileSync('/proc/cpuinfo', 'utf8')) ? 16 : 8;
    } catch {
      return 8;
    }
  })();
  return cpuBlock;
}
let cpuBlock: number | undefined;

/**
 * The form every session's model takes (a copy of its proto), or undefined for the model as
 * written: a model too large for the device runs in a weight-only int8 form (docs/contracts.md,
 * "The target device"). The quantizing layer supplies it; this layer only applies it.
 */
export type SessionForm = (model: OnnxModel, proto: onnx.IModelProto) => onnx.IModelProto;
let sessionForm: SessionForm | undefined;

/** Runs `fn` with every session it makes (evaluation, statistics, traces) opened in `form`. */
export async function withSessionForm<R>(form: SessionForm | undefined, fn: () => Promise<R>): Promise<R> {
  const before = sessionForm;
  sessionForm = form;
  try {
    return await fn();
  } finally {
    sessionForm = before;
  }
}

export function sessionThreads(): number | undefined {
  return deviceThreads;
}

/**
 * Fatal logs only: a failed run rejects with onnxruntime's message, which prune-gate reports in
 * its own words (or handles: a trace size tried, a plan verified); the runtime's own log would
 * repeat it. The device's threads override any caller's.
 */
function withDefaults(options: ort.InferenceSession.SessionOptions): ort.InferenceSession.SessionOptions {
  return { logSeverityLevel: 4, extra: { session: { 'intra_op.allow_spinning': '0' } }, ...options, ...(deviceThreads ? { intraOpNumThreads: deviceThreads } : {}) };
}

/**
 * onnxruntime refused a model or a run: its own message, the cause kept. Code that treats a model
 * onnxruntime cannot run as the user's (a trace size tried, a plan rejected) catches only this
 * (and UserError): a TypeError from our own code is a bug and must keep its stack (exit 3).
 */
export class RuntimeFailure extends Error {
  constructor(cause: unknown) {
    super(cause instanceof Error ? cause.message : String(cause), { cause });
  }
}

async function refusedAs<T>(call: () => Promise<T>): Promise<T> {
  try {
    return await call();
  } catch (e) {
    throw new RuntimeFailure(e);
  }
}

/**
 * An onnxruntime session whose runs take empty inputs of any fixed sizes: an input with no
 * elements (a KV cache's past on the first step) is given the sizes the model declares, since
 * it carries no values. A pruned model's cache has fewer heads than the base's, and the
 * calibration batches are made once, for the base.
 */
async function openSession(model: string | Uint8Array, options: ort.InferenceSession.SessionOptions): Promise<ort.InferenceSession> {
  return withFittedFeeds(await refusedAs(() => (typeof model === 'string' ? ort.InferenceSession.create(model, options) : ort.InferenceSession.create(model, options))));
}

/**
 * The session's run, given empty tensors where the model declares a fixed size (see fitted).
 * Apart from openSession so that the run's closure does not share a scope with the model's
 * bytes: it would keep them alive as long as the session (418 MB on BERT-base).
 */
function withFittedFeeds(session: ort.InferenceSession): ort.InferenceSession {
  const declared = new Map<string, readonly (number | string)[]>();
  for (const m of session.inputMetadata ?? []) if (m.isTensor) declared.set(m.name, m.shape);
  const run = session.run.bind(session) as (feeds: Feeds, ...rest: unknown[]) => Promise<ort.InferenceSession.ReturnType>;
  const fitted = (feeds: Feeds): Feeds => {
    let out: Feeds | undefined;
    for (const [name, t] of Object.entries(feeds)) {
      const shape = declared.get(name);
      if (t.size !== 0 || !shape || shape.length !== t.dims.length) continue;
      const dims = t.dims.map((d, i) => (typeof shape[i] === 'number' && (shape[i] as number) >= 0 ? (shape[i] as number) : d));
      if (dims.every((d, i) => d === t.dims[i]) || dims.every((d) => d !== 0)) continue;
      out ??= { ...feeds };
      out[name] = new ort.Tensor(t.type, t.data as never, dims);
    }
    return out ?? feeds;
  };
  (session as { run: unknown }).run = (feeds: Feeds, ...rest: unknown[]) => {
    const given = fitted(feeds);
    return refusedAs(() => run(given, ...rest));
  };
  return session;
}

export async function createSession(
  model: OnnxModel | Uint8Array | string,
  options: ort.InferenceSession.SessionOptions = {},
): Promise<ort.InferenceSession> {
  if (model instanceof OnnxModel) return sessionForProto(model, model.proto, options);
  if (sessionForm) {
    const read = typeof model === 'string' ? OnnxModel.read(model) : OnnxModel.fromBytes(model, '');
    return sessionForProto(read, read.proto, options);
  }
  const opts = withDefaults(options);
  return typeof model === 'string' ? openSession(model, opts) : openSession(model, opts);
}

/**
 * A session for `proto` (the model's own protobuf or a modified copy, e.g. with extra outputs)
 * whose external data are `model`'s files. A model without external data is passed as bytes.
 * With external data, the protobuf is written to a temporary file in the model's own folder, so
 * onnxruntime resolves the locations itself and maps the weights from disk instead of us reading
 * every data file into memory (it refuses locations outside the model's folder, symlinks
 * included, so a temporary folder elsewhere does not work); the file is removed as soon as the
 * session exists. If the folder is not writable, the data files are read into memory instead.
 */
export async function sessionForProto(
  model: OnnxModel,
  proto: onnx.IModelProto,
  options: ort.InferenceSession.SessionOptions = {},
): Promise<ort.InferenceSession> {
  const { session, garbage } = await openForProto(model, proto, withDefaults(options));
  releaseGarbage(garbage);
  return session;
}

/**
 * sessionForProto's session, and the bytes it leaves as garbage (the protobuf encoded, and the
 * evaluation form made for it): out of reach once this returns, so they are collected then
 * (util/gc.ts), not beside the next large buffer. A 7B model's int8 form is 7 GB.
 */
async function openForProto(model: OnnxModel, proto: onnx.IModelProto, opts: ort.InferenceSession.SessionOptions): Promise<{ session: ort.InferenceSession; garbage: number }> {
  if (sessionForm) proto = sessionForm(model, proto);
  if ((proto.graph?.initializer ?? []).some(isSpilled)) return { session: await sessionFromWrittenCopy(model, proto, opts), garbage: 0 };
  const bytes = onnx.ModelProto.encode(proto).finish();
  const garbage = bytes.byteLength;
  const files = externalFileMap(model);
  if (files.size === 0) return { session: await openSession(bytes, opts), garbage };
  const tmp = path.join(model.dir, `.prune-gate-session-${process.pid}-${crypto.randomBytes(6).toString('hex')}.onnx`);
  try {
    fs.writeFileSync(tmp, bytes, { flag: 'wx' });
  } catch {
    return { session: await openSession(bytes, { ...opts, externalData: externalDataFiles(model) }), garbage };
  }
  const removeTmp = removedAtExitToo(tmp);
  try {
    return { session: await openSession(tmp, opts), garbage };
  } finally {
    removeTmp();
  }
}

/**
 * A model holding pruned weights that wait in the spill file: written with external data to a
 * temporary folder (streaming, one tensor at a time) and opened from there.
 */
async function sessionFromWrittenCopy(
  model: OnnxModel,
  proto: onnx.IModelProto,
  opts: ort.InferenceSession.SessionOptions,
): Promise<ort.InferenceSession> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'prune-gate-session-'));
  const removeDir = removedAtExitToo(dir);
  try {
    const file = path.join(dir, 'model.onnx');
    writeModel(OnnxModel.fromProto(proto as onnx.ModelProto, '', model.origin), file, { externalData: 'always' });
    return await openSession(file, opts);
  } finally {
    removeDir();
  }
}

/**
 * A temporary file or folder that a session is made from: the function returned removes it; so
 * does the process's exit until then, for a run ended by a signal meanwhile (util/signals.ts).
 */
function removedAtExitToo(target: string): () => void {
  const remove = () => fs.rmSync(target, { recursive: true, force: true });
  process.once('exit', remove);
  return () => {
    remove();
    process.removeListener('exit', remove);
  };
}
