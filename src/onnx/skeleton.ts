import { onnx } from 'onnx-proto';
import { nodeOverAxes } from './axes';
import { DataType, dtypeInfo, isFloatDType } from './dtype';
import { OnnxModel } from './model';
import { nodeReads } from './reads';
import { elementCount, fromFloat32, intTensor, protoBytes, tensorToProto } from './tensor';

/** Float weights smaller than this stay as they are (norm scales, biases, shape-like tables). */
const SHAPE_ONLY_MIN_ELEMENTS = 4096;

/**
 * A copy of the model whose large float weights are made at run time by ConstantOfShape
 * instead of stored. It computes every tensor's shape exactly as the model does, with no weight
 * data read or held: runs that only need shapes (tracing the graph, checking a pruned model's
 * output shapes) then cost the memory of one weight at a time, not of the model.
 */
export function shapeOnlyProto(model: OnnxModel): { proto: onnx.ModelProto; replaced: Map<string, { dims: number[]; dtype: number }> } {
  const copy = model.clone();
  const graph = copy.graph;
  const uniqueName = copy.uniqueNames();
  const replaced = new Map<string, { dims: number[]; dtype: number }>();
  const made = new Set<onnx.INodeProto>(); // ConstantOfShape nodes standing in for weights
  const makers: onnx.NodeProto[] = [];
  const kept: onnx.ITensorProto[] = [];
  for (const t of copy.initializers) {
    const dims = t.dims.map(Number);
    if (isFloatDType(t.dataType) && elementCount(dims) >= SHAPE_ONLY_MIN_ELEMENTS) {
      replaced.set(t.name, { dims, dtype: t.dataType });
      const shapeName = uniqueName(`${t.name}__shape`);
      kept.push(tensorToProto(shapeName, intTensor(dims, DataType.INT64, [dims.length])));
      const maker = constantOfShape(shapeName, t.name, t.dataType);
      makers.push(maker);
      made.add(maker);
    } else kept.push(t);
  }
  graph.initializer = kept;
  graph.input = graph.input.filter((v) => !replaced.has(v.name ?? ''));
  for (const node of graph.node) {
    const value = node.opType === 'Constant' && (node.domain ?? '') === '' ? node.attribute?.find((a) => a.name === 'value')?.t : undefined;
    if (!value || !isFloatDType(value.dataType ?? 0)) continue;
    const dims = (value.dims ?? []).map(Number);
    if (elementCount(dims) < SHAPE_ONLY_MIN_ELEMENTS) continue;
    const out = node.output![0];
    const shapeName = uniqueName(`${out}__shape`);
    kept.push(tensorToProto(shapeName, intTensor(dims, DataType.INT64, [dims.length])));
    node.opType = 'ConstantOfShape';
    node.input = [shapeName];
    node.attribute = [fillValue(value.dataType ?? DataType.FLOAT)];
    replaced.set(out, { dims, dtype: value.dataType ?? DataType.FLOAT });
    made.add(node);
  }
  // A MatMul by a large constant weight only needs its output's shape: replace the product by
  // Mul(A, zeros[K]) (which still fails if A's last axis is not K) -> ReduceSum -> * zeros[N].
  // A trace of a 7B model then costs memory and time in proportion to its activations.
  const opset = copy.defaultOpset ?? 13;
  // A weight stored in float16 behind a Cast is a weight too: the Cast becomes a ConstantOfShape.
  const weightOf = replaced;
  for (const node of graph.node) {
    if (node.opType === 'Cast' && weightOf.has(node.input![0])) {
      const w = weightOf.get(node.input![0])!;
      const to = Number(node.attribute!.find((a) => a.name === 'to')!.i);
      const shapeName = uniqueName(`${node.output![0]}__shape`);
      kept.push(tensorToProto(shapeName, intTensor(w.dims, DataType.INT64, [w.dims.length])));
      node.opType = 'ConstantOfShape';
      node.input = [shapeName];
      node.attribute = [fillValue(to)];
      weightOf.set(node.output![0], { dims: w.dims, dtype: to });
      made.add(node);
    }
  }
  const rewritten: onnx.INodeProto[] = [];
  for (const node of graph.node) {
    const lookup = lookupRewrite(node, weightOf, opset);
    if (lookup) {
      // An embedding lookup only needs its output's shape, indices' shape + [D]: made from the
      // indices (cast, unsqueezed, times zeros[D]) without making the [V, D] table.
      const base = uniqueName(`${node.output![0]}__shape_only`);
      const zerosD = `${base}_d`;
      kept.push(tensorToProto(zerosD, zeros(lookup.dtype, lookup.dims[1])));
      rewritten.push(
        onnx.NodeProto.create({ opType: 'Cast', name: `${base}_cast`, input: [node.input![1]], output: [`${base}_c`], attribute: [onnx.AttributeProto.create({ name: 'to', type: onnx.AttributeProto.AttributeType.INT, i: lookup.dtype })] }),
        nodeOverAxes('Unsqueeze', `${base}_c`, `${base}_u`, [-1], opset, kept),
        onnx.NodeProto.create({ opType: 'Mul', name: `${base}_widen`, input: [`${base}_u`, zerosD], output: [node.output![0]] }),
      );
      continue;
    }
    const w = node.opType === 'MatMul' && (node.domain ?? '') === '' ? weightOf.get(node.input![1]) : undefined;
    if (!w || w.dims.length !== 2) {
      rewritten.push(node);
      continue;
    }
    const [k, n] = w.dims;
    const base = uniqueName(`${node.output![0]}__shape_only`);
    const zerosK = `${base}_k`;
    const zerosN = `${base}_n`;
    kept.push(tensorToProto(zerosK, zeros(w.dtype, k)), tensorToProto(zerosN, zeros(w.dtype, n)));
    rewritten.push(
      onnx.NodeProto.create({ opType: 'Mul', name: `${base}_check`, input: [node.input![0], zerosK], output: [`${base}_a`] }),
      nodeOverAxes('ReduceSum', `${base}_a`, `${base}_s`, [-1], opset, kept, [onnx.AttributeProto.create({ name: 'keepdims', type: onnx.AttributeProto.AttributeType.INT, i: 1 })]),
      onnx.NodeProto.create({ opType: 'Mul', name: `${base}_widen`, input: [`${base}_s`, zerosN], output: [node.output![0]] }),
    );
  }
  // Weights only the replaced MatMuls read are not made at all.
  const read = new Set(rewritten.flatMap((n) => nodeReads(n)));
  for (const o of graph.output) read.add(o.name ?? '');
  // (read by the graph's nodes, If/Loop/Scan bodies included: a body reads weights of the outer scope.)
  graph.node = [...makers, ...rewritten].filter((n) => !made.has(n) || read.has(n.output![0]));
  return { proto: copy.proto, replaced };
}

/** A Gather along axis 0 of a replaced 2-D weight (an embedding table), where Unsqueeze takes -1 (opset 11+). */
function lookupRewrite(node: onnx.INodeProto, weightOf: Map<string, { dims: number[]; dtype: number }>, opset: number) {
  if (node.opType !== 'Gather' || (node.domain ?? '') !== '' || opset < 11) return undefined;
  const w = weightOf.get(node.input![0]);
  const axis = Number(node.attribute?.find((a) => a.name === 'axis')?.i ?? 0);
  return w && w.dims.length === 2 && (axis === 0 || axis === -2) ? w : undefined;
}

function zeros(dtype: number, n: number) {
  return fromFloat32(new Float32Array(n), dtype, [n]);
}

function fillValue(dtype: number): onnx.AttributeProto {
  const t = onnx.TensorProto.create({ dataType: dtype, dims: [1], rawData: new Uint8Array(dtypeInfo(dtype).bytes) });
  return onnx.AttributeProto.create({ name: 'value', type: onnx.AttributeProto.AttributeType.TENSOR, t });
}

function constantOfShape(shape: string, out: string, dtype: number): onnx.NodeProto {
  return onnx.NodeProto.create({ opType: 'ConstantOfShape', name: `${out}__make`, input: [shape], output: [out], attribute: [fillValue(dtype)] });
}

/** Bytes of the float weights: what a run of the full model maps into memory. */
export function floatWeightBytes(model: OnnxModel): number {
  let total = 0;
  for (const t of model.initializers) {
    if (isFloatDType(t.dataType)) total += protoBytes(t);
  }
  return total;
}
