import * as ort from 'onnxruntime-node';
import { onnx } from 'onnx-proto';
import { DataType } from './dtype';
import { externalLocation, isExternal } from './external';
import { OnnxModel } from './model';
import { Tensor, elementCount, toNumber } from './tensor';

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

/**
 * Dummy inputs for running a model when no data is given: dynamic axes get `axis0` on the
 * first axis (the batch) and `otherAxes` elsewhere; integer inputs are 1 (a valid token id,
 * a full attention mask), float inputs small deterministic values.
 */
export function dummyFeeds(model: OnnxModel, axis0 = 2, otherAxes = 7): Record<string, ort.Tensor> {
  const feeds: Record<string, ort.Tensor> = {};
  for (const spec of graphInputs(model)) {
    const dims = spec.dims.map((d, i) => (typeof d === 'number' ? d : i === 0 ? axis0 : otherAxes));
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
    else data = new (Float64Array as unknown as { new (n: number): ort.Tensor.DataType })(n);
    feeds[spec.name] = new ort.Tensor(type, data as never, dims);
  }
  return feeds;
}

/**
 * The external data files of a model, for a session created from bytes in memory (which has no
 * folder to resolve relative locations against).
 */
export function externalDataFiles(model: OnnxModel): { path: string; data: string }[] {
  const files = new Map<string, string>();
  for (const t of model.initializers) {
    if (isExternal(t)) {
      const loc = externalLocation(t, model.dir, model.path);
      files.set(loc.location, loc.file);
    }
  }
  return [...files].map(([location, file]) => ({ path: location, data: file }));
}

export async function createSession(
  model: OnnxModel | Uint8Array | string,
  options: ort.InferenceSession.SessionOptions = {},
): Promise<ort.InferenceSession> {
  const source = model instanceof OnnxModel ? onnx.ModelProto.encode(model.proto).finish() : model;
  const external = model instanceof OnnxModel ? externalDataFiles(model) : [];
  const opts = { logSeverityLevel: 3 as const, ...(external.length ? { externalData: external } : {}), ...options };
  return typeof source === 'string'
    ? ort.InferenceSession.create(source, opts)
    : ort.InferenceSession.create(source, opts);
}
