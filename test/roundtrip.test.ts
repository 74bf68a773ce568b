// A model read and written back unchanged gives bit-identical outputs in
// onnxruntime, inline and with external data, and the input file is never modified.
import * as crypto from 'crypto';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { onnx } from 'onnx-proto';
import { OnnxModel, decodeModelProto } from '../src/onnx/model';
import { writeModel } from '../src/onnx/write';
import { expectSameOutputs, fixtureFiles } from './helpers/fixtures';
import { T, encode, floatTensor, model, node, valueInfo } from './helpers/onnx-builders';

const sha256 = (file: string) => crypto.createHash('sha256').update(fs.readFileSync(file)).digest('hex');

let tmp: string;
beforeAll(() => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'prune-gate-roundtrip-'));
});
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

const externalCount = (file: string) =>
  (decodeModelProto(fs.readFileSync(file)).graph?.initializer ?? []).filter(
    (t) => t.dataLocation === onnx.TensorProto.DataLocation.EXTERNAL,
  ).length;

const fixtures = fixtureFiles();

test('the exported fixtures are present', () => {
  expect(fixtures.map((f) => path.basename(f))).toEqual(
    expect.arrayContaining(['bert.onnx', 'cnn.onnx', 'gpt2.onnx', 'llama.onnx', 'mlp.onnx']),
  );
});

describe.each(fixtures.map((f) => [path.basename(f), f]))('%s', (name, file) => {
  const base = path.basename(name, '.onnx');

  test('read -> write inline gives bit-identical outputs; the input is unchanged', async () => {
    const before = sha256(file);
    const m = OnnxModel.read(file);
    const out = path.join(tmp, `${base}-inline.onnx`);
    const result = writeModel(m, out);
    expect(result.dataPath).toBeUndefined();
    expect(fs.existsSync(`${out}.data`)).toBe(false);
    await expectSameOutputs(file, out, m);
    expect(sha256(file)).toBe(before);
  });

  test('write with external data, read it back, keep that layout, write inline: same outputs each time', async () => {
    const before = sha256(file);
    const m = OnnxModel.read(file);
    const ext = path.join(tmp, `${base}-ext.onnx`);
    const result = writeModel(m, ext, { externalData: 'always' });
    expect(result.dataPath).toBe(`${ext}.data`);
    // The weights moved out: the model file is a small part of the whole.
    expect(externalCount(ext)).toBeGreaterThan(0);
    expect(fs.statSync(ext).size).toBeLessThan(fs.statSync(`${ext}.data`).size);
    await expectSameOutputs(file, ext, m);

    const reread = OnnxModel.read(ext);
    expect(reread.bytesOnDisk()).toBe(fs.statSync(ext).size + fs.statSync(`${ext}.data`).size);
    // By default a model keeps the layout it was read in; `never` brings the weights inline.
    const kept = path.join(tmp, `${base}-kept.onnx`);
    expect(writeModel(reread, kept).dataPath).toBe(`${kept}.data`);
    expect(externalCount(kept)).toBe(externalCount(ext));
    const back = path.join(tmp, `${base}-back.onnx`);
    writeModel(reread, back, { externalData: 'never' });
    expect(externalCount(back)).toBe(0);
    expect(fs.existsSync(`${back}.data`)).toBe(false);
    await expectSameOutputs(file, back, reread);
    expect(sha256(file)).toBe(before);
  });
});

test('a model with weights in typed fields and Constant nodes round-trips (no raw_data)', async () => {
  // float_data weights (as some exporters write them), a Constant node holding a weight, and a
  // float16 initializer in int32_data cast to float: every non-raw storage path.
  const w = onnx.TensorProto.create({ name: 'w', dataType: T.FLOAT, dims: [4, 300], floatData: [] });
  for (let i = 0; i < 1200; i++) w.floatData.push(Math.sin(i) * 0.25);
  const half = onnx.TensorProto.create({ name: 'h', dataType: T.FLOAT16, dims: [300], int32Data: [] });
  for (let i = 0; i < 300; i++) half.int32Data.push(0x3c00 + (i % 200)); // 1.0 .. ~1.2
  const c = floatTensor('', [300], Array.from({ length: 300 }, (_, i) => i / 300));
  const proto = model({
    nodes: [
      node('MatMul', ['x', 'w'], ['xw']),
      node('Constant', [], ['c'], [onnx.AttributeProto.create({ name: 'value', type: onnx.AttributeProto.AttributeType.TENSOR, t: c })]),
      node('Cast', ['h'], ['hf'], [onnx.AttributeProto.create({ name: 'to', type: onnx.AttributeProto.AttributeType.INT, i: T.FLOAT })]),
      node('Mul', ['xw', 'hf'], ['m']),
      node('Add', ['m', 'c'], ['y']),
    ],
    inputs: [valueInfo('x', T.FLOAT, ['batch', 4])],
    outputs: [valueInfo('y', T.FLOAT, ['batch', 300])],
    initializers: [w, half],
  });
  const file = path.join(tmp, 'typed.onnx');
  fs.writeFileSync(file, encode(proto));
  const m = OnnxModel.read(file);
  for (const [out, options] of [
    ['typed-inline.onnx', {}],
    ['typed-ext.onnx', { externalData: 'always' }],
  ] as const) {
    const target = path.join(tmp, out);
    writeModel(m, target, options);
    await expectSameOutputs(file, target, m);
  }
  expect(externalCount(path.join(tmp, 'typed-ext.onnx'))).toBe(1); // w (4.8 kB); h is under 1 kB
});

test('writing over the input model is refused', () => {
  const file = fixtures[0];
  const m = OnnxModel.read(file);
  expect(() => writeModel(m, file)).toThrow(/refusing to overwrite the input model/);
});
