import { onnx } from 'onnx-proto';
import { DataType, dtypeInfo, isFloatDType } from './dtype';
import { OnnxModel } from './model';
import { elementCount, intTensor, tensorToProto } from './tensor';

/** Float weights smaller than this stay as they are (norm scales, biases, shape-like tables). */
const SHAPE_ONLY_MIN_ELEMENTS = 4096;

/**
 * A copy of the model whose large float weights are made at run time by ConstantOfShape
 * instead of stored. It computes every tensor's shape exactly as the model does, with no weight
 * data read or held: runs that only need shapes (tracing the graph, checking a pruned model's
 * output shapes) then cost the memory of one weight at a time, not of the model.
 */
export function shapeOnlyProto(model: OnnxModel): { proto: onnx.ModelProto; replaced: Set<string> } {
  const copy = model.clone();
  const graph = copy.graph;
  const replaced = new Set<string>();
  const makers: onnx.NodeProto[] = [];
  const kept: onnx.ITensorProto[] = [];
  for (const t of copy.initializers) {
    const dims = t.dims.map(Number);
    if (isFloatDType(t.dataType) && elementCount(dims) >= SHAPE_ONLY_MIN_ELEMENTS) {
      replaced.add(t.name);
      const shapeName = copy.uniqueName(`${t.name}__shape`);
      kept.push(tensorToProto(shapeName, intTensor(dims, DataType.INT64, [dims.length])));
      makers.push(constantOfShape(shapeName, t.name, t.dataType));
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
    const shapeName = copy.uniqueName(`${out}__shape`);
    kept.push(tensorToProto(shapeName, intTensor(dims, DataType.INT64, [dims.length])));
    node.opType = 'ConstantOfShape';
    node.input = [shapeName];
    node.attribute = [fillValue(value.dataType ?? DataType.FLOAT)];
    replaced.add(out);
  }
  graph.node = [...makers, ...graph.node];
  return { proto: copy.proto, replaced };
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
    if (isFloatDType(t.dataType)) total += elementCount(t.dims.map(Number)) * dtypeInfo(t.dataType).bytes;
  }
  return total;
}
