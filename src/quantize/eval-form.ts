/**
 * The weight-only int8 form a model evaluates in when, as written, it does not fit the device's
 * memory (docs/contracts.md, "The target device"): every MatMul whose B is a float weight [K, N]
 * (an initializer, or a float16 one behind a Cast to float, as half-precision exports store them)
 * reads it as `com.microsoft` `MatMulNBits`, 8 bits, block 32, accuracy_level 4 (int8 products
 * on CPU). Tensor names other than the weights' stay as they are, so any copy of the model (one
 * with the statistics' extra outputs, a traced one) takes the same form.
 *
 * Made on the fly, a weight at a time: its rows stream from where they lie (model file, pruned
 * slice) through a BlockQuantizer, and the codes go to a data file beside the model (onnxruntime
 * maps it from there), or to the spill file for a model not yet written. Each weight is quantized
 * once per process, whichever copy of the model asks.
 */
import * as crypto from 'crypto';
import * as fs from 'fs';
import * as path from 'path';
import { onnx } from 'onnx-proto';
import { DataType, dtypeInfo } from '../onnx/dtype';
import { externalLocation, isExternal } from '../onnx/external';
import { OnnxModel } from '../onnx/model';
import { nodeReads } from '../onnx/reads';
import { spillMinBytes, spillTensor } from '../onnx/spill';
import { elementCount, fromFloat32, tensorToProto } from '../onnx/tensor';
import { MS_DOMAIN } from './formats';
import { BlockQuantizer } from './pack';

export const EVAL_FORM_BITS = 8;
export const EVAL_FORM_BLOCK = 32;
/** Weights smaller than this stay float: they cost little memory, and a bias-sized one nothing. */
const MIN_ELEMENTS = 4096;
/** Bytes per element of the int8 form: one code, and a float32 scale per block of 32. */
const INT8_BYTES_PER_ELEMENT = 1 + 4 / EVAL_FORM_BLOCK;
/** onnxruntime maps external data whose offset is page aligned. */
const ALIGN = 4096;

/** A MatMul the form rewrites: its weight as stored, and the float type it computes in. */
interface FormWeight {
  node: onnx.INodeProto;
  /** The stored initializer (float32, or float16 behind `cast`). */
  weight: string;
  /** The Cast to float between them, when the weight is stored in float16. */
  cast?: onnx.INodeProto;
  k: number;
  n: number;
  /** The scales' type: the one the MatMul computes in. */
  compute: DataType;
}

/** The MatMuls of `proto`'s main graph whose B is a float weight the form quantizes. */
function formWeights(model: OnnxModel, proto: onnx.IModelProto): FormWeight[] {
  const nodes = proto.graph?.node ?? [];
  const producer = new Map<string, onnx.INodeProto>();
  for (const n of nodes) for (const o of n.output ?? []) if (o) producer.set(o, n);
  const out: FormWeight[] = [];
  for (const node of nodes) {
    if (node.opType !== 'MatMul' || (node.domain ?? '') !== '' || !node.input?.[1]) continue;
    let weight = node.input[1];
    let cast: onnx.INodeProto | undefined;
    const from = producer.get(weight);
    if (from?.opType === 'Cast' && (from.domain ?? '') === '' && from.input?.[0] && model.isInitializer(from.input[0])) {
      const to = from.attribute?.find((a) => a.name === 'to');
      if (to && Number(to.i) !== DataType.FLOAT) continue;
      cast = from;
      weight = from.input[0];
    } else if (from) continue;
    const info = model.isInitializer(weight) ? model.constantInfo(weight) : undefined;
    if (!info || info.dims.length !== 2 || elementCount(info.dims) < MIN_ELEMENTS) continue;
    if (cast ? info.dtype !== DataType.FLOAT16 : info.dtype !== DataType.FLOAT && info.dtype !== DataType.FLOAT16) continue;
    out.push({ node, weight, cast, k: info.dims[0], n: info.dims[1], compute: cast ? DataType.FLOAT : info.dtype });
  }
  return out;
}

/**
 * Bytes of weights onnxruntime holds to run `model` on x64 CPU: float16 (and bfloat16) as float32
 * copies (docs/measured.md, "The memory metric"), and while it makes the session the stored
 * float16 bytes on top. With `int8`, the weights the form quantizes count their codes and scales.
 */
export function heldWeightBytes(model: OnnxModel, int8 = false): number {
  const quantized = new Set(int8 ? formWeights(model, model.proto).map((w) => w.weight) : []);
  let bytes = 0;
  for (const name of model.constantNames()) {
    const info = model.constantInfo(name);
    if (!info) continue;
    const count = elementCount(info.dims);
    if (quantized.has(name)) bytes += count * INT8_BYTES_PER_ELEMENT;
    else if (info.dtype === DataType.FLOAT16 || info.dtype === DataType.BFLOAT16) bytes += count * (4 + 2);
    else bytes += count * (dtypeInfo(info.dtype)?.bytes ?? 4);
  }
  return bytes;
}

/** The form's tensors of one weight: codes [N, blocks, 32] and scales [N, blocks]. */
interface FormTensors {
  codes: onnx.TensorProto;
  scales: onnx.TensorProto;
}

/**
 * Makes and keeps the int8 form of the models a run evaluates. `apply` gives a copy of a
 * model's proto in the form (the input proto itself when it has nothing to quantize).
 */
export class Int8Form {
  /** By where the weight's bytes lie (file and offset), or by its proto for one held in memory. */
  private readonly byLocation = new Map<string, FormTensors>();
  private readonly byProto = new WeakMap<onnx.ITensorProto, FormTensors>();
  /** One data file per folder of models, removed at exit. */
  private readonly files = new Map<string, { file: string; fd: number; size: number }>();
  /** Weights quantized so far, and their float bytes read. */
  readonly made = { weights: 0, elements: 0 };

  apply(model: OnnxModel, proto: onnx.IModelProto): onnx.IModelProto {
    const found = formWeights(model, proto);
    if (found.length === 0) return proto;
    const graph = onnx.GraphProto.create({ ...proto.graph });
    const replaced = new Map<onnx.INodeProto, onnx.NodeProto>();
    const added: onnx.TensorProto[] = [];
    for (const w of found) {
      const t = this.tensors(model, w);
      added.push(t.codes, t.scales);
      replaced.set(
        w.node,
        onnx.NodeProto.create({
          name: `${w.node.name || w.node.output![0]}_int8form`, // unique: an output has one producer
          opType: 'MatMulNBits',
          domain: MS_DOMAIN,
          input: [w.node.input![0], t.codes.name, t.scales.name],
          output: w.node.output,
          attribute: [
            intAttribute('K', w.k),
            intAttribute('N', w.n),
            intAttribute('bits', EVAL_FORM_BITS),
            intAttribute('block_size', EVAL_FORM_BLOCK),
            intAttribute('accuracy_level', 4),
          ],
        }),
      );
    }
    const nodes = (graph.node ?? []).map((n) => replaced.get(n) ?? n);
    // The float weights (and their Casts) nothing reads any more go: onnxruntime would hold them.
    const read = new Set<string>((graph.output ?? []).map((o) => o.name ?? ''));
    for (const n of nodes) if (!found.some((w) => w.cast === n)) for (const i of nodeReads(n)) read.add(i);
    const dropped = new Set(found.flatMap((w) => (read.has(w.node.input![1]) ? [] : [w.node.input![1], ...(w.cast && !read.has(w.weight) ? [w.weight] : [])])));
    graph.node = nodes.filter((n) => !(n.opType === 'Cast' && (n.output ?? []).every((o) => dropped.has(o))));
    graph.initializer = [...(graph.initializer ?? []).filter((t) => !dropped.has(t.name ?? '')), ...uniqueByName(added)];
    graph.input = (graph.input ?? []).filter((v) => !dropped.has(v.name ?? ''));
    const opsetImport = (proto.opsetImport ?? []).some((o) => o.domain === MS_DOMAIN) ? proto.opsetImport : [...(proto.opsetImport ?? []), { domain: MS_DOMAIN, version: 1 }];
    return onnx.ModelProto.create({ ...proto, graph, opsetImport });
  }

  private tensors(model: OnnxModel, w: FormWeight): FormTensors {
    const source = model.initializerProto(w.weight)!;
    const loc = isExternal(source) ? externalLocation(source, model.dir, model.origin) : undefined;
    const key = loc && `${loc.file}:${loc.offset}:${loc.length ?? ''}:${w.compute}`;
    const cached = key ? this.byLocation.get(key) : this.byProto.get(source);
    if (cached) return cached;
    const quantizer = new BlockQuantizer(w.k, w.n, { bits: EVAL_FORM_BITS, blockSize: EVAL_FORM_BLOCK });
    model.forEachChunk(w.weight, w.n, (rows) => quantizer.add(rows));
    const q = quantizer.finish();
    this.made.weights++;
    this.made.elements += w.k * w.n;
    const base = `${w.weight}_int8form`;
    const scaleValues = w.compute === DataType.FLOAT ? q.scales : fromFloat32(q.scales, w.compute, [q.n, q.blocks]).data;
    const codes = { name: `${base}_codes`, dtype: DataType.UINT8, dims: [q.n, q.blocks, EVAL_FORM_BLOCK], data: q.packed };
    const scales = { name: `${base}_scales`, dtype: w.compute, dims: [q.n, q.blocks], data: scaleValues };
    // Beside the model when its folder takes a file (onnxruntime then maps the codes from there);
    // else in the spill file, and the session is opened from a written copy (runtime.ts).
    const beside = loc ? this.fileIn(model.dir) : undefined;
    const made: FormTensors = beside
      ? { codes: this.external(beside, codes), scales: this.external(beside, scales) }
      : { codes: inMemory(codes), scales: inMemory(scales) };
    if (key) this.byLocation.set(key, made);
    else this.byProto.set(source, made);
    return made;
  }

  /** The form's data file in `dir`, the model's folder (where onnxruntime resolves its locations); undefined if the folder takes no file. */
  private fileIn(dir: string): { file: string; fd: number; size: number } | undefined {
    const open = this.files.get(dir);
    if (open) return open;
    const file = path.join(dir, `.prune-gate-int8-${process.pid}-${crypto.randomBytes(4).toString('hex')}.data`);
    let fd: number;
    try {
      fd = fs.openSync(file, 'wx');
    } catch {
      return undefined;
    }
    const made = { file, fd, size: 0 };
    this.files.set(dir, made);
    process.once('exit', () => fs.rmSync(made.file, { force: true }));
    return made;
  }

  /** A tensor appended to the form's data file `f`. */
  private external(f: { file: string; fd: number; size: number }, t: { name: string; dtype: DataType; dims: number[]; data: ArrayBufferView }): onnx.TensorProto {
    const bytes = new Uint8Array(t.data.buffer, t.data.byteOffset, t.data.byteLength);
    const offset = Math.ceil(f.size / ALIGN) * ALIGN;
    let done = 0;
    while (done < bytes.byteLength) done += fs.writeSync(f.fd, bytes, done, bytes.byteLength - done, offset + done);
    f.size = offset + bytes.byteLength;
    const entry = (key: string, value: string) => onnx.StringStringEntryProto.create({ key, value });
    return onnx.TensorProto.create({
      name: t.name,
      dataType: t.dtype,
      dims: t.dims,
      dataLocation: onnx.TensorProto.DataLocation.EXTERNAL,
      externalData: [entry('location', path.basename(f.file)), entry('offset', String(offset)), entry('length', String(bytes.byteLength))],
    });
  }

  /** Removes the form's data files (they are also removed when the process exits). */
  close(): void {
    for (const f of this.files.values()) {
      fs.closeSync(f.fd);
      fs.rmSync(f.file, { force: true });
    }
    this.files.clear();
    this.byLocation.clear();
  }
}

function inMemory(t: { name: string; dtype: DataType; dims: number[]; data: ArrayBufferView }): onnx.TensorProto {
  const proto = tensorToProto(t.name, { dtype: t.dtype, dims: t.dims, data: t.data as never });
  if (proto.rawData.byteLength >= spillMinBytes()) {
    spillTensor(proto, proto.rawData);
    proto.rawData = new Uint8Array(0);
  }
  return proto;
}

function uniqueByName(tensors: onnx.TensorProto[]): onnx.TensorProto[] {
  const seen = new Set<string>();
  return tensors.filter((t) => !seen.has(t.name) && !!seen.add(t.name));
}

const intAttribute = (name: string, i: number) => onnx.AttributeProto.create({ name, type: onnx.AttributeProto.AttributeType.INT, i });
