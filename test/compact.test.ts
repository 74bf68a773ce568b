// A quantized artifact is written with short intermediate names. The model must compute
// exactly what it computed before, and every name a caller or a weight map relies on must stay.
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { onnx } from 'onnx-proto';
import { compactNames } from '../src/graph/compact';
import { OnnxModel } from '../src/onnx/model';
import { writeModel } from '../src/onnx/write';
import { quantizeModel } from '../src/quantize';
import { expectSameOutputs, fixtureFiles } from './helpers/fixtures';
import { T, encode, floatTensor, model, node, valueInfo } from './helpers/onnx-builders';

let tmp: string;
beforeAll(() => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'prune-gate-compact-'));
});
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

const interfaceNames = (m: OnnxModel) => ({
  inputs: m.graph.input.map((v) => v.name),
  outputs: m.graph.output.map((v) => v.name),
  initializers: m.initializers.map((t) => t.name),
});

/** Writes the compacted copy of `file` and checks it against the original; returns both sizes. */
async function compactAndCompare(file: string, label: string): Promise<{ before: number; after: number }> {
  const original = OnnxModel.read(file);
  const namesBefore = original.graph.node.map((n) => n.name);
  const result = compactNames(original);
  const out = path.join(tmp, `${label}-compact.onnx`);
  writeModel(result.model, out);
  await expectSameOutputs(file, out, original);
  const compacted = OnnxModel.read(out);
  expect(interfaceNames(compacted)).toEqual(interfaceNames(original));
  expect(compacted.graph.node.every((n) => !n.name && !n.docString)).toBe(true);
  // The model in memory is not changed: compactNames works on a copy.
  expect(original.graph.node.map((n) => n.name)).toEqual(namesBefore);
  // What the names cost, measured on the same writer's output for the unchanged model.
  const rewritten = path.join(tmp, `${label}-rewritten.onnx`);
  writeModel(original, rewritten);
  const before = fs.statSync(rewritten).size;
  const after = fs.statSync(out).size;
  expect(before - after).toBe(result.bytesSaved);
  return { before, after };
}

describe.each(fixtureFiles().map((f) => [path.basename(f, '.onnx'), f]))('%s', (name, file) => {
  test('short names: bit-identical outputs, same inputs, outputs and weights, a smaller file', async () => {
    const { before, after } = await compactAndCompare(file, name);
    expect(after).toBeLessThan(before);
  });
});

test('a quantized model loses most of its graph bytes and computes the same', async () => {
  const file = fixtureFiles().find((f) => path.basename(f) === 'gpt2.onnx')!;
  const quantized = path.join(tmp, 'gpt2-int4.onnx');
  writeModel((await quantizeModel(OnnxModel.read(file), { bits: 4 })).model, quantized);
  const quantizedBytes = fs.statSync(quantized).size;
  const { after } = await compactAndCompare(quantized, 'gpt2-int4');
  // gpt2's exporter names are about a quarter of its int4 file.
  expect(after).toBeLessThan(quantizedBytes * 0.85);
});

test('names read by a subgraph from the outer scope, and short names already taken, are kept', async () => {
  // x is named "0": the first short name, which must then be skipped. The If branches read the
  // outer intermediate "relu_out" by name, so it cannot be renamed.
  const branch = (op: string, out: string) =>
    onnx.GraphProto.create({
      name: `${op}_branch`,
      node: [node(op, op === 'Add' ? ['relu_out', 'one'] : ['relu_out'], [out])],
      output: [valueInfo(out, T.FLOAT, ['batch', 4])],
    });
  const graphAttr = (name: string, g: onnx.GraphProto) =>
    onnx.AttributeProto.create({ name, type: onnx.AttributeProto.AttributeType.GRAPH, g });
  const proto = model({
    nodes: [
      node('Relu', ['0'], ['relu_out']),
      node('ReduceSum', ['0'], ['sum_out'], [onnx.AttributeProto.create({ name: 'keepdims', type: onnx.AttributeProto.AttributeType.INT, i: 0 })]),
      node('Greater', ['sum_out', 'zero'], ['positive']),
      node('If', ['positive'], ['branch_out'], [graphAttr('then_branch', branch('Add', 'then_out')), graphAttr('else_branch', branch('Neg', 'else_out'))]),
      node('Mul', ['branch_out', 'relu_out'], ['y']),
    ],
    inputs: [valueInfo('0', T.FLOAT, ['batch', 4])],
    outputs: [valueInfo('y', T.FLOAT, ['batch', 4])],
    initializers: [floatTensor('one', [], [1]), floatTensor('zero', [], [0])],
  });
  proto.graph!.valueInfo = [valueInfo('sum_out', T.FLOAT, ['batch'])]; // follows the tensor's new name
  const file = path.join(tmp, 'if.onnx');
  fs.writeFileSync(file, encode(proto));
  await compactAndCompare(file, 'if');
  const compacted = compactNames(OnnxModel.read(file)).model;
  const outputs = compacted.graph.node.flatMap((n) => n.output);
  expect(outputs).toContain('relu_out');
  expect(outputs).not.toContain('sum_out');
  expect(new Set(outputs).size).toBe(outputs.length);
  expect(outputs).not.toContain('0');
  const sum = compacted.graph.node.find((n) => n.opType === 'ReduceSum')!.output![0];
  expect(compacted.graph.valueInfo.map((v) => v.name)).toEqual([sum]);
});
