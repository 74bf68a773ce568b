// Graphs written differently from our fixtures: control flow that reads the outer scope, models
// that only run on inputs longer than a few positions, recurrent states that share the batch
// axis. None may end in an internal error; what is written must load and keep its outputs.
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { onnx } from 'onnx-proto';
import { UserError } from '../src/errors';
import { OnnxModel } from '../src/onnx/model';
import { createSession, dummyFeeds, ort } from '../src/onnx/runtime';
import { sessionExposing } from '../src/prune/stats';
import { expectZeroedEqual, outputsAt } from './helpers/zeroed';
import { OP_RULES } from '../src/graph/rules';
import { writeModel } from '../src/onnx/write';
import { DataType } from '../src/onnx/dtype';
import { fromFloat32 } from '../src/onnx/tensor';
import { findPrunable, pruneModel } from '../src/prune';
import { quantizeModel } from '../src/quantize';
import { checkModel, checkerAvailable } from '../tools/onnx-checker';
import { T, attrInt, attrInts, encode, floatTensor, model, node, valueInfo } from './helpers/onnx-builders';

const load = (proto: onnx.ModelProto) => OnnxModel.fromBytes(encode(proto), 'synthetic.onnx');
const MAGNITUDE = { structures: ['ffn', 'heads', 'channels'] as ('ffn' | 'heads' | 'channels')[], importance: 'magnitude' as const, compensate: 'none' as const };

async function outputDims(m: OnnxModel, feeds: ReturnType<typeof dummyFeeds>): Promise<number[][]> {
  const session = await createSession(m);
  try {
    const out = await session.run(feeds);
    return session.outputNames.map((n) => [...out[n].dims]);
  } finally {
    await session.release();
  }
}

test('an If body that reads a large weight of the outer scope: the weight stays, the FFN before it is pruned', async () => {
  // x -> FFN 16 -> 32 -> 16 -> h; If(flag): then h . W, else relu(h . W), W [16, 512] read only
  // inside the branches (large enough for the shape-only trace to make it at run time).
  const branch = (relu: boolean) =>
    onnx.GraphProto.create({
      name: relu ? 'else' : 'then',
      node: relu ? [node('MatMul', ['h', 'W'], ['bm']), node('Relu', ['bm'], ['b'])] : [node('MatMul', ['h', 'W'], ['b'])],
      output: [valueInfo('b', T.FLOAT, ['batch', 512])],
    });
  const proto = model({
    nodes: [
      node('MatMul', ['x', 'A'], ['a']),
      node('Relu', ['a'], ['r']),
      node('MatMul', ['r', 'B'], ['h']),
      node('If', ['flag'], ['y'], [
        onnx.AttributeProto.create({ name: 'then_branch', type: onnx.AttributeProto.AttributeType.GRAPH, g: branch(false) }),
        onnx.AttributeProto.create({ name: 'else_branch', type: onnx.AttributeProto.AttributeType.GRAPH, g: branch(true) }),
      ]),
    ],
    inputs: [valueInfo('x', T.FLOAT, ['batch', 16]), valueInfo('flag', T.BOOL, [])],
    outputs: [valueInfo('y', T.FLOAT, ['batch', 512])],
    initializers: [floatTensor('A', [16, 32]), floatTensor('B', [32, 16]), floatTensor('W', [16, 512])],
  });
  const base = load(proto);
  const r = await pruneModel(base, { target: 0.05, ...MAGNITUDE });
  expect(r.pruned.map((p) => [p.kind, p.before])).toEqual([['ffn', 32]]);
  expect(r.model.constantInfo('W')?.dims).toEqual([16, 512]);
  expect(await outputDims(r.model, dummyFeeds(r.model, 3, 1))).toEqual([[3, 512]]);
});

test('a model that only runs on longer inputs is traced at a size it runs at, and pruned', async () => {
  // A 1-D conv with a kernel of 9 fails on the first sizes tried (7 and 5 positions).
  const proto = model({
    nodes: [node('Conv', ['x', 'w1', 'b1'], ['c']), node('Relu', ['c'], ['r']), node('Conv', ['r', 'w2'], ['y'])],
    inputs: [valueInfo('x', T.FLOAT, ['batch', 1, 'time'])],
    outputs: [valueInfo('y', T.FLOAT, ['batch', 4, 'frames'])],
    initializers: [floatTensor('w1', [16, 1, 9]), floatTensor('b1', [16]), floatTensor('w2', [4, 16, 1])],
  });
  const r = await pruneModel(load(proto), { target: 0.3, ...MAGNITUDE });
  expect(r.pruned).toEqual([expect.objectContaining({ kind: 'channels', before: 16 })]);
  expect(r.paramsAfter).toBeLessThan(r.paramsBefore);
  expect(await outputDims(r.model, dummyFeeds(r.model, 2, 40))).toEqual([[2, 4, 32]]);
  // The quantizer's check of its result runs at a size the model runs at too.
  const q = await quantizeModel(r.model, { bits: 8, conv: 'int8' });
  expect(q.quantized.map((l) => l.kind)).toEqual(['conv', 'conv']);
});

test('a model that runs at no size tried is a one-line UserError, not an internal error', async () => {
  const proto = model({
    nodes: [node('Conv', ['x', 'w'], ['y'], [attrInts('kernel_shape', [4097])])],
    inputs: [valueInfo('x', T.FLOAT, ['batch', 1, 'time'])],
    outputs: [valueInfo('y', T.FLOAT, ['batch', 2, 'frames'])],
    initializers: [floatTensor('w', [2, 1, 4097])],
  });
  const attempt = pruneModel(load(proto), { target: 0.3, ...MAGNITUDE });
  await expect(attempt).rejects.toThrow(UserError);
  await expect(pruneModel(load(proto), { target: 0.3, ...MAGNITUDE })).rejects.toThrow(/does not run it on dummy inputs at any size tried.*Conv/);
});

test('dummy inputs: an axis named like an input batch axis gets the batch size wherever it is', () => {
  const proto = model({
    nodes: [node('Identity', ['x'], ['y']), node('Identity', ['state'], ['s'])],
    inputs: [valueInfo('x', T.FLOAT, ['batch', 'time']), valueInfo('state', T.FLOAT, [2, 'batch', 8])],
    outputs: [valueInfo('y', T.FLOAT, ['batch', 'time']), valueInfo('s', T.FLOAT, [2, 'batch', 8])],
  });
  const feeds = dummyFeeds(load(proto), 3, 11);
  expect(feeds.x.dims).toEqual([3, 11]);
  expect(feeds.state.dims).toEqual([2, 3, 8]);
});

test('a run-time failure at one node leaves that node alone, once, and the rest is still pruned', async () => {
  // Two FFNs; the first passes through a Mul whose rule is made wrong here (it does not couple
  // its constant operand), so the pruned model fails in onnxruntime at that Mul.
  const proto = model({
    nodes: [
      node('MatMul', ['x', 'A1'], ['a1']),
      node('Mul', ['a1', 'scale'], ['m']),
      node('Relu', ['m'], ['r1']),
      node('MatMul', ['r1', 'B1'], ['h']),
      node('MatMul', ['h', 'A2'], ['a2']),
      node('Relu', ['a2'], ['r2']),
      node('MatMul', ['r2', 'B2'], ['y']),
    ],
    inputs: [valueInfo('x', T.FLOAT, ['batch', 16])],
    outputs: [valueInfo('y', T.FLOAT, ['batch', 16])],
    initializers: [floatTensor('A1', [16, 32]), floatTensor('scale', [1, 32]), floatTensor('B1', [32, 16]), floatTensor('A2', [16, 32]), floatTensor('B2', [32, 16])],
  });
  const mul = OP_RULES.Mul;
  OP_RULES.Mul = {
    link(ctx) {
      const [a, c] = ctx.node.input;
      const y = ctx.node.output[0];
      ctx.same(a, 0, y, 0);
      ctx.same(a, 1, y, 1);
      ctx.keep(c, 0);
      ctx.freeze(c, 1, 'a constant left as it is');
    },
  };
  try {
    const r = await pruneModel(load(proto), { target: 0.3, ...MAGNITUDE });
    const atMul = r.skipped.filter((s) => s.reason.startsWith('onnxruntime rejected the pruned model at Mul_m (Mul)'));
    expect(atMul.map((s) => s.where)).toEqual(['MatMul_a1, MatMul_h']); // the one group through it, nothing else
    expect(r.pruned.map((p) => p.where)).toEqual(['MatMul_h, MatMul_a2', 'MatMul_a2, MatMul_y']);
    expect(await outputDims(r.model, dummyFeeds(r.model, 2, 1))).toEqual([[2, 16]]);
  } finally {
    OP_RULES.Mul = mul;
  }
});

test('older exports: initializers also listed as graph inputs are weights, pruned, with their input entries resized', async () => {
  const proto = model({
    nodes: [node('Gemm', ['x', 'W1', 'b1'], ['h']), node('Relu', ['h'], ['r']), node('Gemm', ['r', 'W2'], ['y'])],
    inputs: [valueInfo('x', T.FLOAT, ['batch', 8]), valueInfo('W1', T.FLOAT, [8, 32]), valueInfo('b1', T.FLOAT, [32]), valueInfo('W2', T.FLOAT, [32, 4])],
    outputs: [valueInfo('y', T.FLOAT, ['batch', 4])],
    initializers: [floatTensor('W1', [8, 32]), floatTensor('b1', [32]), floatTensor('W2', [32, 4])],
  });
  const r = await pruneModel(load(proto), { target: 0.3, ...MAGNITUDE });
  expect(r.pruned).toEqual([expect.objectContaining({ kind: 'ffn', before: 32 })]);
  const kept = r.pruned[0].after;
  const dims = (name: string) => r.model.graph.input.find((v) => v.name === name)!.type!.tensorType!.shape!.dim!.map((d) => Number(d.dimValue));
  expect([dims('W1'), dims('b1'), dims('W2')]).toEqual([[8, kept], [kept], [kept, 4]]);
  expect(await outputDims(r.model, dummyFeeds(r.model, 2, 1))).toEqual([[2, 4]]);
});

test('recorded shapes of pruned tensors go, and so do initializers nothing reads: the checker accepts the result', async () => {
  const proto = model({
    nodes: [node('MatMul', ['x', 'W1'], ['h']), node('Relu', ['h'], ['r']), node('MatMul', ['r', 'W2'], ['y'])],
    inputs: [valueInfo('x', T.FLOAT, ['batch', 8])],
    outputs: [valueInfo('y', T.FLOAT, ['batch', 4])],
    initializers: [floatTensor('W1', [8, 32]), floatTensor('W2', [32, 4]), floatTensor('unused', [3, 3])],
  });
  proto.graph!.valueInfo = [valueInfo('h', T.FLOAT, ['batch', 32]), valueInfo('r', T.FLOAT, ['batch', 32])];
  const r = await pruneModel(load(proto), { target: 0.3, ...MAGNITUDE });
  expect(r.model.graph.valueInfo).toEqual([]);
  expect(r.model.initializers.map((t) => t.name).sort()).toEqual(['W1', 'W2']);
  if (checkerAvailable()) {
    const file = path.join(os.tmpdir(), `prune-gate-tidy-${process.pid}.onnx`);
    writeModel(r.model, file);
    try {
      expect(checkModel(file)).toEqual({ status: 'ok' });
    } finally {
      fs.rmSync(file, { force: true });
    }
  }
});

describe('a normalization over a width', () => {
  const ln = (x: string, y: string, w: string) => node('LayerNormalization', [x, `${w}_scale`, `${w}_bias`], [y], [onnx.AttributeProto.create({ name: 'axis', type: onnx.AttributeProto.AttributeType.INT, i: -1 })]);
  const params = (w: string, n: number) => [floatTensor(`${w}_scale`, [n]), floatTensor(`${w}_bias`, [n])];

  test("of a layer's own hidden units (an MLP with LayerNorm after a Linear) is pruned with the norm's scale and bias", async () => {
    const proto = model({
      nodes: [node('MatMul', ['x', 'W1'], ['h']), ln('h', 'n', 'ln'), node('Relu', ['n'], ['r']), node('MatMul', ['r', 'W2'], ['y'])],
      inputs: [valueInfo('x', T.FLOAT, ['batch', 8])],
      outputs: [valueInfo('y', T.FLOAT, ['batch', 4])],
      initializers: [floatTensor('W1', [8, 32]), ...params('ln', 32), floatTensor('W2', [32, 4])],
    });
    const r = await pruneModel(load(proto), { target: 0.3, ...MAGNITUDE });
    expect(r.pruned).toEqual([expect.objectContaining({ kind: 'ffn', before: 32 })]);
    const kept = r.pruned[0].after;
    expect([r.model.constantInfo('ln_scale')?.dims, r.model.constantInfo('ln_bias')?.dims]).toEqual([[kept], [kept]]);
    expect(await outputDims(r.model, dummyFeeds(r.model, 2, 1))).toEqual([[2, 4]]);
  });

  // LayerNorm as exporters write it out: mean, centre, variance, epsilon, divide, scale, shift.
  const writtenOut = [
    node('ReduceMean', ['h'], ['m'], [attrInts('axes', [-1])]),
    node('Sub', ['h', 'm'], ['d']),
    node('Pow', ['d', 'two'], ['d2']),
    node('ReduceMean', ['d2'], ['v'], [attrInts('axes', [-1])]),
    node('Add', ['v', 'eps'], ['ve']),
    node('Sqrt', ['ve'], ['sd']),
    node('Div', ['d', 'sd'], ['z']),
    node('Mul', ['z', 'ln_scale'], ['zs']),
    node('Add', ['zs', 'ln_bias'], ['n']),
  ];
  test.each(['LayerNormalization', 'written out'])("with calibration data, the norm's scale and bias are refit to the remaining channels' statistics (%s)", async (form) => {
    // x -> MatMul [8, 32] -> LN(32) -> Relu -> MatMul [32, 4]: the hidden width shrinks, so the
    // LayerNorm's mean and variance are over fewer channels; its kept outputs should still be
    // what the full-width norm gave, as nearly as an affine refit of each channel makes them.
    const proto = model({
      nodes: [node('MatMul', ['x', 'W1'], ['h']), ...(form === 'written out' ? writtenOut : [ln('h', 'n', 'ln')]), node('Relu', ['n'], ['r']), node('MatMul', ['r', 'W2'], ['y'])],
      inputs: [valueInfo('x', T.FLOAT, ['batch', 8])],
      outputs: [valueInfo('y', T.FLOAT, ['batch', 4])],
      initializers: [
        floatTensor('W1', [8, 32], Array.from({ length: 256 }, (_, i) => Math.sin(i * 1.3) * (1 + (i % 32) / 8))),
        ...params('ln', 32),
        floatTensor('W2', [32, 4]),
        floatTensor('two', [], [2]),
        floatTensor('eps', [], [1e-5]),
      ],
    });
    const base = load(proto);
    let seed = 7;
    const random = () => ((seed = (seed * 16807) % 2147483647) / 2147483647) * 2 - 1;
    const batches = Array.from({ length: 8 }, () => ({ x: new ort.Tensor('float32', Float32Array.from({ length: 16 * 8 }, () => random() + 0.5), [16, 8]) }));
    const options = { target: 0.3, structures: MAGNITUDE.structures, importance: 'magnitude' as const, calibration: () => batches };
    const notes: string[] = [];
    const [refit, plain] = [await pruneModel(base, { ...options, compensate: 'bias', log: (m) => notes.push(m) }), await pruneModel(base, { ...options, compensate: 'none' })];
    expect(refit.pruned.map((p) => p.after)).toEqual(plain.pruned.map((p) => p.after));
    expect(notes.some((n) => /statistics over \d+ of 32 channels; kept outputs moved by .* after refitting its scale and bias/.test(n))).toBe(true);
    // The norm's output, kept channels: the base's against each pruned model's.
    const kept = new Set(Array.from({ length: 32 }, (_, i) => i));
    for (const { tensor, indices } of refit.sliced ?? []) if (tensor === 'ln_scale') for (const i of indices) kept.delete(i);
    const normOut = async (m: OnnxModel) => {
      const session = await sessionExposing(m, ['n']);
      try {
        return (await session.run(batches[0], ['n'])).n.data as Float32Array;
      } finally {
        await session.release();
      }
    };
    const want = Array.from(await normOut(base)).filter((_, i) => kept.has(i % 32));
    const error = async (m: OnnxModel) => (await normOut(m)).reduce((e, v, i) => e + (v - want[i]) ** 2, 0);
    expect(await error(refit.model)).toBeLessThan(0.5 * (await error(plain.model)));
  });

  test('of a residual stream (added to itself across a block) is left alone, and says why', async () => {
    // y = x + W2 . relu(W1 . LN(x)): the LayerNorm normalizes the stream the Add writes back.
    const proto = model({
      nodes: [ln('x', 'n', 'ln'), node('MatMul', ['n', 'W1'], ['h']), node('Relu', ['h'], ['r']), node('MatMul', ['r', 'W2'], ['f']), node('Add', ['x', 'f'], ['s']), node('MatMul', ['s', 'W3'], ['y'])],
      inputs: [valueInfo('x', T.FLOAT, ['batch', 16])],
      outputs: [valueInfo('y', T.FLOAT, ['batch', 4])],
      initializers: [...params('ln', 16), floatTensor('W1', [16, 32]), floatTensor('W2', [32, 16]), floatTensor('W3', [16, 4])],
    });
    const found = await findPrunable(load(proto));
    expect(found.prunable.map((g) => [g.kind, g.units])).toEqual([['ffn', 32]]);
    expect(found.skipped.map((s) => s.reason)).toContain('LayerNormalization normalizes over it (the residual stream)');
  });
});

test.each(['scales', 'sizes'] as const)('channels pass through a Resize given %s, whose sizes are rewritten when channels go', async (form) => {
  const resizeInputs = form === 'scales' ? ['c', '', 'scales'] : ['c', '', '', 'sizes'];
  const proto = model({
    nodes: [node('Conv', ['x', 'w1'], ['c']), node('Resize', resizeInputs, ['u']), node('Relu', ['u'], ['r']), node('Conv', ['r', 'w2'], ['y'])],
    inputs: [valueInfo('x', T.FLOAT, [1, 3, 8, 8])],
    outputs: [valueInfo('y', T.FLOAT, [1, 4, 16, 16])],
    initializers: [
      floatTensor('w1', [16, 3, 1, 1]),
      floatTensor('w2', [4, 16, 1, 1]),
      floatTensor('scales', [4], [1, 1, 2, 2]),
      onnx.TensorProto.create({ name: 'sizes', dataType: T.INT64, dims: [4], int64Data: [1, 16, 16, 16] }),
    ],
  });
  const r = await pruneModel(load(proto), { target: 0.3, ...MAGNITUDE });
  expect(r.pruned).toEqual([expect.objectContaining({ kind: 'channels', before: 16 })]);
  expect(await outputDims(r.model, dummyFeeds(r.model, 1, 1))).toEqual([[1, 4, 16, 16]]);
});

test('bias compensation for convs without a bias (before a BatchNorm, as paddle2onnx writes them) keeps every group prunable', async () => {
  const bn = (x: string, y: string, p: string, n: number) =>
    node('BatchNormalization', [x, `${p}_g`, `${p}_b`, `${p}_m`, `${p}_v`], [y]);
  const bnParams = (p: string, n: number) => [floatTensor(`${p}_g`, [n]), floatTensor(`${p}_b`, [n]), floatTensor(`${p}_m`, [n]), floatTensor(`${p}_v`, [n], Array(n).fill(1))];
  const proto = model({
    nodes: [
      node('Conv', ['x', 'w1'], ['c1']), bn('c1', 'n1', 'bn1', 16), node('Relu', ['n1'], ['r1']),
      node('Conv', ['r1', 'w2'], ['c2']), bn('c2', 'n2', 'bn2', 16), node('Relu', ['n2'], ['r2']),
      node('Conv', ['r2', 'w3'], ['y']),
    ],
    inputs: [valueInfo('x', T.FLOAT, ['batch', 3, 8, 8])],
    outputs: [valueInfo('y', T.FLOAT, ['batch', 4, 8, 8])],
    initializers: [floatTensor('w1', [16, 3, 1, 1]), ...bnParams('bn1', 16), floatTensor('w2', [16, 16, 1, 1]), ...bnParams('bn2', 16), floatTensor('w3', [4, 16, 1, 1])],
  });
  const base = load(proto);
  const calibration = () => [dummyFeeds(base, 2, 8), dummyFeeds(base, 3, 8)];
  const r = await pruneModel(base, { target: 0.6, structures: ['channels'], importance: 'activation', compensate: 'bias', calibration });
  expect(r.skipped.filter((s) => s.reason.includes('onnxruntime'))).toEqual([]);
  expect(r.pruned.map((p) => [p.kind, p.before])).toEqual([['channels', 16], ['channels', 16]]);
  expect(await outputDims(r.model, dummyFeeds(r.model, 2, 8))).toEqual([[2, 4, 8, 8]]);
});

describe("onnxruntime's fused attention (com.microsoft Attention)", () => {
  // x [B, S, 8] -> Attention (2 heads of 4, packed QKV weight [8, 24]) -> MatMul [8, 8] -> z
  const attention = (present: boolean) => {
    const attn = node('Attention', ['x', 'Wqkv', 'bqkv'], present ? ['y', 'present'] : ['y'], [attrInt('num_heads', 2)]);
    attn.domain = 'com.microsoft';
    const proto = model({
      nodes: [attn, node('MatMul', ['y', 'O'], ['z'])],
      inputs: [valueInfo('x', T.FLOAT, ['batch', 'sequence', 8])],
      outputs: [valueInfo('z', T.FLOAT, ['batch', 'sequence', 8]), ...(present ? [valueInfo('present', T.FLOAT, [2, 'batch', 2, 'sequence', 4])] : [])],
      initializers: [floatTensor('Wqkv', [8, 24]), floatTensor('bqkv', [24]), floatTensor('O', [8, 8])],
    });
    proto.opsetImport.push({ domain: 'com.microsoft', version: 1 });
    return load(proto);
  };

  test('a head goes with its Q, K and V columns and its output rows, and num_heads follows', async () => {
    const r = await pruneModel(attention(false), { target: 0.5, ...MAGNITUDE });
    expect(r.pruned.map((p) => [p.kind, p.before, p.after])).toEqual([['heads', 2, 1]]);
    const attn = r.model.graph.node.find((n) => n.opType === 'Attention')!;
    expect(attn.attribute?.find((a) => a.name === 'num_heads')?.i).toBe(1);
    expect(r.model.constantInfo('Wqkv')?.dims).toEqual([8, 12]);
    expect(await outputDims(r.model, dummyFeeds(r.model, 2, 5))).toEqual([[2, 5, 8]]);
  });

  test('heads whose cache is a model output are left alone, and say so', async () => {
    const prunable = await findPrunable(attention(true));
    expect(prunable.prunable).toEqual([]);
    expect(prunable.skipped.map((s) => s.reason)).toContain('model output');
  });
});

test.each([18, 21])('GroupNormalization (opset %i): a whole group of channels is one unit, num_groups follows', async (opset) => {
  // x [N, 2, 6, 6] -> Conv 2->8 -> GroupNormalization(4 groups of 2) -> Relu -> Conv 8->3
  const perGroup = opset < 21; // opset 18 has one scale and bias per group, 21 one per channel
  const proto = model({
    nodes: [
      node('Conv', ['x', 'W1', 'b1'], ['c'], [attrInts('pads', [1, 1, 1, 1])]),
      node('GroupNormalization', ['c', 'gamma', 'beta'], ['g'], [attrInt('num_groups', 4)]),
      node('Relu', ['g'], ['r']),
      node('Conv', ['r', 'W2', 'b2'], ['y']),
    ],
    inputs: [valueInfo('x', T.FLOAT, ['batch', 2, 6, 6])],
    outputs: [valueInfo('y', T.FLOAT, ['batch', 3, 6, 6])],
    initializers: [
      floatTensor('W1', [8, 2, 3, 3]),
      floatTensor('b1', [8]),
      floatTensor('gamma', [perGroup ? 4 : 8], Array.from({ length: 8 }, (_, i) => 1 + i / 10)),
      floatTensor('beta', [perGroup ? 4 : 8]),
      floatTensor('W2', [3, 8, 1, 1]),
      floatTensor('b2', [3]),
    ],
  });
  proto.opsetImport = [{ domain: '', version: opset }];
  proto.irVersion = opset < 21 ? 8 : 10;
  const base = load(proto);
  const found = await findPrunable(base);
  expect(found.prunable.map((g) => [g.kind, g.units])).toEqual([['channels', 4]]);
  const r = await pruneModel(base, { target: 0.3, ...MAGNITUDE });
  const [{ after }] = r.pruned;
  const norm = r.model.graph.node.find((n) => n.opType === 'GroupNormalization')!;
  expect(norm.attribute?.find((a) => a.name === 'num_groups')?.i).toBe(after);
  expect(r.model.constantInfo('W1')?.dims).toEqual([2 * after, 2, 3, 3]);
  expect(r.model.constantInfo('gamma')?.dims).toEqual([perGroup ? after : 2 * after]);
  expect(await outputDims(r.model, dummyFeeds(r.model, 2, 1))).toEqual([[2, 3, 6, 6]]);
});

test('an NHWC graph (as tf2onnx writes it): channels are followed through Transpose chains around each Conv', async () => {
  // x [N, 8, 8, 3] -> T -> Conv 3->16 -> T -> Mul by a per-channel scale [16] -> Relu -> T ->
  // Conv 16->8 -> T -> ReduceMean over H, W -> MatMul [8, 10]
  const toNchw = [attrInts('perm', [0, 3, 1, 2])];
  const toNhwc = [attrInts('perm', [0, 2, 3, 1])];
  const proto = model({
    nodes: [
      node('Transpose', ['x'], ['x1'], toNchw),
      node('Conv', ['x1', 'W1', 'b1'], ['c1'], [attrInts('pads', [1, 1, 1, 1])]),
      node('Transpose', ['c1'], ['h1'], toNhwc),
      node('Mul', ['h1', 's1'], ['m1']),
      node('Relu', ['m1'], ['r1']),
      node('Transpose', ['r1'], ['x2'], toNchw),
      node('Conv', ['x2', 'W2', 'b2'], ['c2']),
      node('Transpose', ['c2'], ['h2'], toNhwc),
      node('ReduceMean', ['h2'], ['p'], [attrInts('axes', [1, 2]), attrInt('keepdims', 0)]),
      node('MatMul', ['p', 'W3'], ['y']),
    ],
    inputs: [valueInfo('x', T.FLOAT, ['batch', 8, 8, 3])],
    outputs: [valueInfo('y', T.FLOAT, ['batch', 10])],
    initializers: [floatTensor('W1', [16, 3, 3, 3]), floatTensor('b1', [16]), floatTensor('s1', [16]), floatTensor('W2', [8, 16, 1, 1]), floatTensor('b2', [8]), floatTensor('W3', [8, 10])],
  });
  const base = load(proto);
  expect((await findPrunable(base)).prunable.map((g) => [g.kind, g.units])).toEqual([
    ['channels', 16],
    ['channels', 8],
  ]);
  const r = await pruneModel(base, { target: 0.3, ...MAGNITUDE });
  expect(r.pruned.length).toBeGreaterThan(0);
  expect(r.model.constantInfo('s1')?.dims).toEqual([r.model.constantInfo('W1')!.dims[0]]);
  const feeds = dummyFeeds(base, 2, 1);
  await expectZeroedEqual(base, r, feeds, await outputsAt(r.model, feeds));
});

test('float16 weights read through a Cast (as fp16 exports keep them) are weights: the model is pruned, not refused', async () => {
  const proto = model({
    nodes: [
      node('Cast', ['W1h'], ['W1'], [attrInt('to', T.FLOAT)]),
      node('MatMul', ['x', 'W1'], ['h']),
      node('Relu', ['h'], ['r']),
      node('Cast', ['W2h'], ['W2'], [attrInt('to', T.FLOAT)]),
      node('MatMul', ['r', 'W2'], ['y']),
    ],
    inputs: [valueInfo('x', T.FLOAT, ['batch', 8])],
    outputs: [valueInfo('y', T.FLOAT, ['batch', 4])],
    initializers: [floatTensor('W1h', [8, 32]), floatTensor('W2h', [32, 4])],
  });
  const base = load(proto);
  for (const name of ['W1h', 'W2h']) {
    const t = base.constant(name)!;
    base.setConstant(name, fromFloat32(Float32Array.from(t.data as Float32Array), DataType.FLOAT16, t.dims));
  }
  const r = await pruneModel(base, { target: 0.3, ...MAGNITUDE });
  expect(r.pruned.map((p) => [p.kind, p.before])).toEqual([['ffn', 32]]);
  expect(r.model.constantInfo('W1h')?.dims[1]).toBeLessThan(32);
});
