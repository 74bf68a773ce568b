import { onnx } from 'onnx-proto';
import { DataType } from './dtype';

/** The opset from which each op takes `axes` as an input rather than an attribute. */
const AXES_INPUT_FROM: Record<string, number> = {
  ReduceSum: 13,
  Squeeze: 13,
  Unsqueeze: 13,
  ReduceMean: 18,
  ReduceMax: 18,
  ReduceMin: 18,
  ReduceProd: 18,
  ReduceSumSquare: 18,
  ReduceL1: 18,
  ReduceL2: 18,
  ReduceLogSum: 18,
  ReduceLogSumExp: 18,
};

/**
 * A node of `opType` over `axes`, written for the model's opset: `axes` as an int64 constant
 * input (named `name`_axes, pushed to `initializers`) where the opset takes it so, else as the
 * attribute older opsets read.
 */
export function nodeOverAxes(
  opType: string,
  input: string,
  output: string,
  axes: number[],
  opset: number,
  initializers: onnx.ITensorProto[],
  attribute: onnx.IAttributeProto[] = [],
): onnx.NodeProto {
  if (opset >= (AXES_INPUT_FROM[opType] ?? Infinity)) {
    const name = `${output}_axes`;
    initializers.push(onnx.TensorProto.create({ name, dataType: DataType.INT64, dims: [axes.length], int64Data: axes }));
    return onnx.NodeProto.create({ opType, name: output, input: [input, name], output: [output], attribute });
  }
  const list = onnx.AttributeProto.create({ name: 'axes', type: onnx.AttributeProto.AttributeType.INTS, ints: axes });
  return onnx.NodeProto.create({ opType, name: output, input: [input], output: [output], attribute: [list, ...attribute] });
}
