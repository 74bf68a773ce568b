// Parameter count and MACs per sample (docs/pruning.md, "Cost").
import * as path from 'path';
import { onnx } from 'onnx-proto';
import { countParams, estimateMacs, measureMacs } from '../src/graph/cost';
import { traceModel } from '../src/graph/trace';
import { isFloatDType } from '../src/onnx/dtype';
import { OnnxModel } from '../src/onnx/model';
import { ort } from '../src/onnx/runtime';
import { toNumber } from '../src/onnx/tensor';
import { FIXTURES_DIR, sampleFeeds } from './helpers/fixtures';
import { T, attrInt, attrInts, encode, floatTensor, model, node, valueInfo } from './helpers/onnx-builders';

const fixture = (name: string) => OnnxModel.read(path.join(FIXTURES_DIR, `${name}.onnx`));

/** Sum of element counts of the float initializers, straight from the protobuf. */
function initializerElements(m: OnnxModel): number {
  return m.initializers
    .filter((t) => isFloatDType(t.dataType))
    .reduce((sum, t) => sum + t.dims.map(toNumber).reduce((a, b) => a * b, 1), 0);
}

describe('countParams', () => {
  test.each(['mlp', 'cnn', 'bert'])('%s: the sum of its initializers', (name) => {
    const m = fixture(name);
    expect(countParams(m)).toBe(initializerElements(m));
  });

  test('mlp 64-32-16-10: weights and biases', () => {
    expect(countParams(fixture('mlp'))).toBe(64 * 32 + 32 + 32 * 16 + 16 + 16 * 10 + 10);
  });

  test('counts float weights in Constant nodes, not scalars or integer constants', () => {
    const A = onnx.AttributeProto.AttributeType;
    const weight = floatTensor('', [4, 3]);
    const proto = model({
      nodes: [
        node('Constant', [], ['w'], [onnx.AttributeProto.create({ name: 'value', type: A.TENSOR, t: weight })]),
        node('Constant', [], ['eps'], [onnx.AttributeProto.create({ name: 'value_float', type: A.FLOAT, f: 1e-5 })]),
        node('Constant', [], ['b'], [onnx.AttributeProto.create({ name: 'value_floats', type: A.FLOATS, floats: [1, 2, 3] })]),
        node('Constant', [], ['shape'], [onnx.AttributeProto.create({ name: 'value_ints', type: A.INTS, ints: [1, 3] })]),
        node('MatMul', ['x', 'w'], ['xw']),
        node('Add', ['xw', 'b'], ['xb']),
        node('Add', ['xb', 'eps'], ['y']),
      ],
      inputs: [valueInfo('x', T.FLOAT, ['batch', 4])],
      outputs: [valueInfo('y', T.FLOAT, ['batch', 3])],
      initializers: [
        floatTensor('unused_f', [5]),
        onnx.TensorProto.create({ name: 'ids', dataType: T.INT64, dims: [7], int64Data: [1, 2, 3, 4, 5, 6, 7] }),
      ],
    });
    expect(countParams(OnnxModel.fromBytes(encode(proto), 'm.onnx'))).toBe(12 + 3 + 5);
  });
});

describe('MACs per sample', () => {
  test('mlp: 64x32 + 32x16 + 16x10', async () => {
    const r = await measureMacs(fixture('mlp'));
    expect(r.total).toBe(64 * 32 + 32 * 16 + 16 * 10);
    expect(r.nodes.map((n) => n.opType)).toEqual(['Gemm', 'Gemm', 'Gemm']);
    expect(r.inputShapes).toEqual({ features: [1, 64] });
    expect(r.unknown).toEqual([]);
  });

  test('cnn: the hand count of its layers on an 8x8 input', async () => {
    const hw = 8 * 8;
    const conv = 16 * 1 * 9 * hw; // stem 1->16, 3x3
    const resnet = 4 * (16 * 16 * 9 * hw); // two BasicBlocks of two 3x3 16->16 convs
    const depthwise = 16 * 1 * 9 * hw; // 3x3, groups=16: one input channel per output
    const pointwise = 16 * 16 * hw; // 1x1
    const se = 16 * 8 + 8 * 16; // squeeze-excite 1x1 convs on the pooled 1x1 map
    const down = 32 * 16 * 9 * (4 * 4); // 3x3 stride 2 -> 4x4
    const classifier = 32 * 64 + 64 * 10;
    const expected = conv + resnet + depthwise + pointwise + se + down + classifier;
    expect(expected).toBe(701312);

    const m = fixture('cnn');
    const r = await measureMacs(m);
    expect(r.total).toBe(expected);
    expect(r.byOp).toEqual({ Conv: expected - classifier, Gemm: classifier });
    // Per sample: a run with 3 samples gives the same figure, and says it divided by 3.
    const batch3 = estimateMacs(m, await traceModel(m, sampleFeeds(m, 3, 1)));
    expect(batch3.batch).toBe(3);
    expect(batch3.total).toBe(expected);
  });

  test('transformers: MACs grow with the sequence, per sample', async () => {
    const m = fixture('gpt2');
    const at = async (batch: number, length: number) => estimateMacs(m, await traceModel(m, sampleFeeds(m, batch, length)));
    const short = await at(1, 8);
    const long = await at(2, 16);
    expect(long.batch).toBe(2);
    // The weight matmuls double with the tokens; attention's QK^T and AV grow four-fold.
    expect(long.total).toBeGreaterThan(2 * short.total);
    expect(long.total).toBeLessThan(4 * short.total);
    // hidden 64, inner 256, 2 layers, vocab 256, 4 heads: the weight matmuls per token are
    // 2 x (64x192 + 64x64 + 64x256 + 256x64) + 64x256 (lm head); attention adds 2 x 2 x seq x 64.
    const perToken = 2 * (64 * 192 + 64 * 64 + 64 * 256 + 256 * 64) + 64 * 256;
    expect(short.total).toBe(8 * perToken + 2 * 2 * 8 * 8 * 64);
  });

  async function macsOf(proto: onnx.ModelProto, feeds: Record<string, ort.Tensor>) {
    const m = OnnxModel.fromBytes(encode(proto), 'synthetic.onnx');
    return estimateMacs(m, await traceModel(m, feeds));
  }
  const floats = (dims: number[]) => new ort.Tensor('float32', new Float32Array(dims.reduce((a, b) => a * b, 1)).fill(0.5), dims);

  test('grouped convolution: C_in/group inputs per output', async () => {
    // 8 -> 8 channels in 4 groups, 3x3, padding 1 on 5x5: 8*5*5 outputs x (8/4 * 9) each.
    const proto = model({
      nodes: [node('Conv', ['x', 'w'], ['y'], [attrInt('group', 4), attrInts('pads', [1, 1, 1, 1])])],
      inputs: [valueInfo('x', T.FLOAT, ['batch', 8, 5, 5])],
      outputs: [valueInfo('y', T.FLOAT, ['batch', 8, 5, 5])],
      initializers: [floatTensor('w', [8, 2, 3, 3])],
    });
    const r = await macsOf(proto, { x: floats([2, 8, 5, 5]) });
    expect(r.total).toBe(8 * 5 * 5 * 2 * 9);
  });

  test('ConvTranspose: every input element scattered to C_out/group x kernel outputs', async () => {
    // 4 -> 2 channels, 2x2 kernel, stride 2: 3x3 -> 6x6.
    const proto = model({
      nodes: [node('ConvTranspose', ['x', 'w'], ['y'], [attrInts('strides', [2, 2])])],
      inputs: [valueInfo('x', T.FLOAT, ['batch', 4, 3, 3])],
      outputs: [valueInfo('y', T.FLOAT, ['batch', 2, 6, 6])],
      initializers: [floatTensor('w', [4, 2, 2, 2])],
    });
    const r = await macsOf(proto, { x: floats([1, 4, 3, 3]) });
    expect(r.total).toBe(4 * 3 * 3 * (2 * 2 * 2));
  });

  test('Gemm with transA and a batched 3-D MatMul', async () => {
    const proto = model({
      nodes: [node('Gemm', ['a', 'g'], ['ga'], [attrInt('transA', 1)]), node('MatMul', ['s', 'm'], ['sm'])],
      inputs: [valueInfo('a', T.FLOAT, [6, 'm']), valueInfo('s', T.FLOAT, ['batch', 4, 6])],
      outputs: [valueInfo('ga', T.FLOAT, ['m', 5]), valueInfo('sm', T.FLOAT, ['batch', 4, 5])],
      initializers: [floatTensor('g', [6, 5]), floatTensor('m', [6, 5])],
    });
    // Gemm: A^T is [2, 6] -> [2, 5] x 6. MatMul: [2, 4, 6] x [6, 5] -> 2 x 4 x 5 x 6.
    const r = await macsOf(proto, { a: floats([6, 2]), s: floats([2, 4, 6]) });
    expect(r.nodes.map((n) => [n.opType, n.macs])).toEqual([
      ['Gemm', (2 * 5 * 6) / 6],
      ['MatMul', (2 * 4 * 5 * 6) / 6],
    ]);
    // The batch is axis 0 of the first input (6 here); an explicit batch overrides it.
    const m = OnnxModel.fromBytes(encode(proto), 'synthetic.onnx');
    const explicit = estimateMacs(m, await traceModel(m, { a: floats([6, 2]), s: floats([2, 4, 6]) }), { batch: 2 });
    expect(explicit.total).toBe((60 + 240) / 2);
  });

  test('Einsum: attention and FFN written with torch.einsum, counted like their MatMul twins', async () => {
    // test/fixtures/ops/einsum.onnx (tools/fixtures/export_ops.py): d 32, 4 heads of 8, FFN 64,
    // a 128-way head as a MatMul; `inspect` measures at 1 sample of 16 tokens.
    const r = await measureMacs(OnnxModel.read(path.join(FIXTURES_DIR, 'ops', 'einsum.onnx')));
    const [S, d, h, hd, f, vocab] = [16, 32, 4, 8, 64, 128];
    const projections = 4 * S * d * d; // q, k, v, o: bsd,de->bse
    const attention = 2 * h * S * S * hd; // bhqd,bhkd->bhqk and bhqk,bhkd->bhqd
    const ffn = 2 * S * d * f; // bsd,df->bsf and bsf,fd->bsd
    expect(r.byOp.Einsum).toBe(projections + attention + ffn);
    expect(r.byOp.MatMul).toBe(S * d * vocab);
    expect(r.total).toBe(projections + attention + ffn + S * d * vocab);
    expect(r.unknown).toEqual([]);
  });

  test('a single-operand Einsum (a transpose) multiplies nothing', async () => {
    const proto = model({
      nodes: [node('Einsum', ['x'], ['y'], [{ name: 'equation', type: onnx.AttributeProto.AttributeType.STRING, s: Buffer.from('bij->bji') }])],
      inputs: [valueInfo('x', T.FLOAT, ['batch', 3, 4])],
      outputs: [valueInfo('y', T.FLOAT, ['batch', 4, 3])],
    });
    expect((await macsOf(proto, { x: floats([1, 3, 4]) })).total).toBe(0);
  });
});
