// A model whose weights are already quantized (every MatMul a com.microsoft MatMulNBits at 4 bits,
// block 32, as onnxruntime-genai's builder writes int4) cannot be pruned yet: `inspect`, `prune`
// and `run` say so, naming the quantized ops, and never blame If/Loop/Scan bodies it does not
// have; a model whose weights really are inside an If still gets that reason.
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { onnx } from 'onnx-proto';
import { runMain as cli } from './helpers/in-process';
import { countParams } from '../src/graph/cost';
import { OnnxModel } from '../src/onnx/model';
import { writeModel } from '../src/onnx/write';
import { findPrunable, pruneModel } from '../src/prune';
import { quantizeModel } from '../src/quantize';
import { T, attrInt, encode, floatTensor, model, node, valueInfo } from './helpers/onnx-builders';

const ROOT = path.resolve(__dirname, '..');
const MAGNITUDE = { structures: ['ffn', 'heads', 'channels'] as ('ffn' | 'heads' | 'channels')[], importance: 'magnitude' as const, compensate: 'none' as const };
const INT4_MATMUL = 'MatMulNBits (4-bit, block 32): pruning quantized weights is not supported yet';

let tmp: string;
let int4: string;
let matmuls: string[];
beforeAll(async () => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'prune-gate-quantized-input-'));
  const base = OnnxModel.read(path.join(ROOT, 'test/fixtures/llama.onnx'));
  const q = await quantizeModel(base, { bits: 4, blockSize: 32 });
  matmuls = q.model.graph.node.filter((n) => n.opType === 'MatMulNBits').map((n) => n.name ?? '');
  int4 = path.join(tmp, 'llama-int4.onnx');
  await writeModel(q.model, int4);
}, 120_000);
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));


test('the int4 model is what the builder writes: every weight MatMul a 4-bit MatMulNBits, and no control flow', () => {
  const m = OnnxModel.read(int4);
  expect(matmuls.length).toBeGreaterThan(0);
  expect(m.graph.node.filter((n) => n.opType === 'MatMul' && (n.input ?? []).some((i) => m.isConstant(i)))).toEqual([]);
  expect(m.graph.node.filter((n) => ['If', 'Loop', 'Scan'].includes(n.opType ?? ''))).toEqual([]);
  // Its weights count as the float model's.
  expect(countParams(m)).toBe(countParams(OnnxModel.read(path.join(ROOT, 'test/fixtures/llama.onnx'))));
});

test('inspect says the weights are quantized, overall and at every MatMulNBits, and nothing of If/Loop/Scan', async () => {
  const r = await cli(['inspect', '--model', int4]);
  expect(r.status).toBe(0);
  expect(r.stdout).not.toMatch(/If\/Loop\/Scan/);
  expect(r.stdout).toMatch(/Prunable groups\n {2}none\n/);
  expect(r.stdout).toContain(
    `the whole model: the weights are GatherBlockQuantized (8-bit, block 32) and ${INT4_MATMUL}; prune the float model, then quantize (quantize: int4)`,
  );
  for (const name of matmuls) expect(r.stdout).toContain(`  ${name}: ${INT4_MATMUL}\n`);
  const json = JSON.parse((await cli(['inspect', '--model', int4, '--json'])).stdout);
  expect(json.prunable).toEqual([]);
  expect(json.skipped).toHaveLength(1 + matmuls.length + 1);
});

test('prune and run stop with one line saying why (exit 2), not with If/Loop/Scan', async () => {
  const prune = await cli(['prune', '--model', int4, '--out', path.join(tmp, 'pruned.onnx'), '--target', '0.3']);
  expect(prune.status).toBe(2);
  expect(prune.stderr.trim().split('\n')).toEqual([
    expect.stringMatching(/llama-int4\.onnx: nothing to prune: the weights are .*MatMulNBits \(4-bit, block 32\): pruning quantized weights is not supported yet; prune the float model, then quantize \(quantize: int4\)$/),
  ]);
  expect(fs.existsSync(path.join(tmp, 'pruned.onnx'))).toBe(false);

  const config = path.join(tmp, 'run.yml');
  fs.writeFileSync(config, `model: ${int4}\ncalibration: ${path.join(ROOT, 'calibration', 'llama')}\nlatency: { warmup: 0, runs: 1 }\nprune:\n  target: 0.2\n`);
  const run = await cli(['run', '--config', config, '--out', path.join(tmp, 'run')]);
  expect(run.status).toBe(2);
  expect(run.stderr).toContain(INT4_MATMUL);
  expect(run.stderr).not.toMatch(/If\/Loop\/Scan/);
}, 120_000);

/** x -> MatMul A [16, 32] -> Relu -> MatMulNBits (K 32, N 16, 4 bits, block 32) -> y. */
function floatThenInt4(): OnnxModel {
  const codes = onnx.TensorProto.create({ name: 'B_Q4', dataType: T.UINT8, dims: [16, 1, 16], rawData: new Uint8Array(256).fill(0x98) });
  const proto = model({
    nodes: [
      node('MatMul', ['x', 'A'], ['a']),
      node('Relu', ['a'], ['r']),
      Object.assign(node('MatMulNBits', ['r', 'B_Q4', 'B_scales'], ['y'], [attrInt('K', 32), attrInt('N', 16), attrInt('bits', 4), attrInt('block_size', 32)]), {
        domain: 'com.microsoft',
        name: 'down_proj_Q4',
      }),
    ],
    inputs: [valueInfo('x', T.FLOAT, ['batch', 16])],
    outputs: [valueInfo('y', T.FLOAT, ['batch', 16])],
    initializers: [floatTensor('A', [16, 32]), codes, floatTensor('B_scales', [16, 1])],
  });
  proto.opsetImport.push({ domain: 'com.microsoft', version: 1 });
  return OnnxModel.fromBytes(encode(proto), 'half-int4.onnx');
}

test('a float layer that feeds a MatMulNBits is left alone with MatMulNBits named as the op that stops it', async () => {
  const m = floatThenInt4();
  expect(countParams(m)).toBe(16 * 32 + 32 * 16);
  const found = await findPrunable(m);
  expect(found.prunable).toEqual([]);
  expect(found.skipped).toContainEqual({
    where: 'MatMul_a',
    reason: 'com.microsoft.MatMulNBits down_proj_Q4 reads a quantized weight (4-bit, block 32): pruning quantized weights is not supported yet',
  });
  await expect(pruneModel(m, { target: 0.3, ...MAGNITUDE })).rejects.toThrow(
    'com.microsoft.MatMulNBits down_proj_Q4 reads a quantized weight (4-bit, block 32): pruning quantized weights is not supported yet',
  );
});

test('a model whose weights are all inside an If body still gets the control-flow reason', async () => {
  const branch = (name: string, op: string) =>
    onnx.GraphProto.create({ name, node: [node('MatMul', ['x', 'W'], ['m']), node(op, ['m'], [`${name}_out`])], output: [valueInfo(`${name}_out`, T.FLOAT, ['batch', 8])] });
  const proto = model({
    nodes: [
      node('If', ['flag'], ['y'], [
        onnx.AttributeProto.create({ name: 'then_branch', type: onnx.AttributeProto.AttributeType.GRAPH, g: branch('then', 'Relu') }),
        onnx.AttributeProto.create({ name: 'else_branch', type: onnx.AttributeProto.AttributeType.GRAPH, g: branch('else', 'Neg') }),
      ]),
    ],
    inputs: [valueInfo('x', T.FLOAT, ['batch', 16]), valueInfo('flag', T.BOOL, [])],
    outputs: [valueInfo('y', T.FLOAT, ['batch', 8])],
    initializers: [floatTensor('W', [16, 8])],
  });
  const m = OnnxModel.fromBytes(encode(proto), 'branches.onnx');
  const found = await findPrunable(m);
  expect(found).toEqual({ prunable: [], skipped: [{ where: 'the whole model', reason: expect.stringContaining('its weights are all inside If/Loop/Scan bodies') }] });
  await expect(pruneModel(m, { target: 0.3, ...MAGNITUDE })).rejects.toThrow('branches.onnx: nothing to prune: its weights are all inside If/Loop/Scan bodies');
});

test('int8 weights behind MatMulInteger count as parameters and are named as the reason, with int8 as the quantize to use', async () => {
  const proto = model({
    nodes: [node('MatMulInteger', ['x', 'B', 'x_zero', 'B_zero'], ['y'])],
    inputs: [valueInfo('x', T.UINT8, ['batch', 16])],
    outputs: [valueInfo('y', T.INT32, ['batch', 8])],
    initializers: [
      onnx.TensorProto.create({ name: 'B', dataType: T.INT8, dims: [16, 8], rawData: new Uint8Array(128).fill(3) }),
      onnx.TensorProto.create({ name: 'x_zero', dataType: T.UINT8, dims: [], rawData: new Uint8Array([128]) }),
      onnx.TensorProto.create({ name: 'B_zero', dataType: T.INT8, dims: [], rawData: new Uint8Array([0]) }),
    ],
  });
  const m = OnnxModel.fromBytes(encode(proto), 'integer.onnx');
  expect(countParams(m)).toBe(16 * 8);
  expect((await findPrunable(m)).skipped).toEqual([
    { where: 'the whole model', reason: 'the weights are MatMulInteger (int8): pruning quantized weights is not supported yet; prune the float model, then quantize (quantize: int8)' },
    { where: 'MatMulInteger_y', reason: 'MatMulInteger (int8): pruning quantized weights is not supported yet' },
  ]);
});
