// Builders for small ONNX models made in memory with onnx-proto, for tests that need a model
// with a particular property (a bad external location, typed fields, a grouped convolution...).
import { onnx } from 'onnx-proto';

export const T = onnx.TensorProto.DataType;

export function valueInfo(name: string, elemType: number, dims: (number | string)[]): onnx.ValueInfoProto {
  return onnx.ValueInfoProto.create({
    name,
    type: {
      tensorType: {
        elemType,
        shape: { dim: dims.map((d) => (typeof d === 'number' ? { dimValue: d } : { dimParam: d })) },
      },
    },
  });
}

export function floatTensor(name: string, dims: number[], values?: ArrayLike<number>): onnx.TensorProto {
  const n = dims.reduce((a, b) => a * b, 1);
  const data = new Float32Array(n);
  for (let i = 0; i < n; i++) data[i] = values ? values[i] : Math.cos(i * 0.7) * 0.3;
  return onnx.TensorProto.create({ name, dataType: T.FLOAT, dims, rawData: new Uint8Array(data.buffer) });
}

export function node(opType: string, inputs: string[], outputs: string[], attrs: onnx.IAttributeProto[] = []): onnx.NodeProto {
  return onnx.NodeProto.create({ opType, input: inputs, output: outputs, name: `${opType}_${outputs[0]}`, attribute: attrs });
}

export const attrInts = (name: string, ints: number[]) =>
  onnx.AttributeProto.create({ name, type: onnx.AttributeProto.AttributeType.INTS, ints });
export const attrInt = (name: string, i: number) =>
  onnx.AttributeProto.create({ name, type: onnx.AttributeProto.AttributeType.INT, i });

export function model(graph: {
  nodes: onnx.NodeProto[];
  inputs: onnx.ValueInfoProto[];
  outputs: onnx.ValueInfoProto[];
  initializers?: onnx.TensorProto[];
}): onnx.ModelProto {
  return onnx.ModelProto.create({
    irVersion: 8,
    producerName: 'prune-gate-tests',
    opsetImport: [{ domain: '', version: 17 }],
    graph: {
      name: 'g',
      node: graph.nodes,
      input: graph.inputs,
      output: graph.outputs,
      initializer: graph.initializers ?? [],
    },
  });
}

export function encode(proto: onnx.IModelProto): Uint8Array {
  return onnx.ModelProto.encode(proto).finish();
}

/** y = x · W + b with W a [4, 3] initializer: the smallest model that has weights. */
export function tinyLinear(initializer?: onnx.TensorProto): onnx.ModelProto {
  return model({
    nodes: [node('MatMul', ['x', 'w'], ['y'])],
    inputs: [valueInfo('x', T.FLOAT, ['batch', 4])],
    outputs: [valueInfo('y', T.FLOAT, ['batch', 3])],
    initializers: [initializer ?? floatTensor('w', [4, 3])],
  });
}
