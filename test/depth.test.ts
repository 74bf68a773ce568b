// Depth pruning (docs/pruning.md, "Depth"): residual blocks found in the graph, removed whole
// (the model then computes what it computes with the block's output zeroed), left alone with a
// reason where that cannot be done, scored by ShortGPT's block influence, and asked for with
// `structures: [blocks]` (off by default).
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { onnx } from 'onnx-proto';
import { parseStructures } from '../src/cli/commands/prune';
import { parseConfig } from '../src/config/config';
import { UserError } from '../src/errors';
import { calibrationFeeds, loadCalibration } from '../src/eval/calibration';
import { ResidualBlock, findBlocks, removeBlocks } from '../src/graph/blocks';
import { countParams } from '../src/graph/cost';
import { OnnxModel } from '../src/onnx/model';
import { dummyFeeds, ort } from '../src/onnx/runtime';
import { pruneModel } from '../src/prune';
import { blockInfluence } from '../src/prune/depth';
import { expectCheckerAccepts } from './helpers/checker';
import { FIXTURES_DIR, withVariedTokens } from './helpers/fixtures';
import { T, floatTensor, model, node, valueInfo } from './helpers/onnx-builders';
import { outputValues, outputsAt } from './helpers/zeroed';
import { runMain } from './helpers/in-process';
import type { Inspection } from '../src/cli/commands/inspect';

let tmp: string;
beforeAll(() => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'prune-gate-depth-'));
});
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

/** The model with the block's f(x) replaced by f(x) − f(x) where it is added: what the model computes with the block's output zeroed. */
function zeroedBlock(m: OnnxModel, block: ResidualBlock): OnnxModel {
  const copy = m.clone();
  const zero = copy.uniqueName(`${block.output}_zeroed`);
  const at = m.graph.node.indexOf(block.node as onnx.NodeProto);
  const adding = copy.graph.node[at];
  adding.input = (adding.input ?? []).map((i) => (i === block.output ? zero : i));
  copy.graph.node.splice(at, 0, onnx.NodeProto.create({ opType: 'Sub', name: zero, input: [block.output, block.output], output: [zero] }));
  return copy;
}

function expectClose(got: Record<string, ort.Tensor>, want: Record<string, ort.Tensor>): void {
  expect(Object.keys(got).sort()).toEqual(Object.keys(want).sort());
  for (const [name, t] of Object.entries(want)) {
    expect([name, got[name].dims]).toEqual([name, t.dims]);
    const a = outputValues(got[name]);
    const b = outputValues(t);
    const scale = Math.max(1, ...b.map(Math.abs));
    let worst = 0;
    for (let i = 0; i < a.length; i++) worst = Math.max(worst, Math.abs(a[i] - b[i]));
    expect([name, worst / scale < 1e-4]).toEqual([name, true]);
  }
}

const FIXTURES: [string, number][] = [
  ['llama.onnx', 4],
  ['gpt2.onnx', 4],
  ['bert.onnx', 4],
  ['cnn.onnx', 2],
  ['genai/llama-genai-mha.onnx', 4],
  ['kv/llama-kv.onnx', 4],
];

describe('a residual block removed', () => {
  test.each(FIXTURES)('%s: every block found; without it the model computes what it computes with the block zeroed, loads, and keeps its outputs', async (file, count) => {
    const base = OnnxModel.read(path.join(FIXTURES_DIR, file));
    const { blocks } = await findBlocks(base);
    expect(blocks).toHaveLength(count);
    const feeds = withVariedTokens(base, dummyFeeds(base));
    for (const block of [blocks[0], blocks[blocks.length - 1]]) {
      const without = removeBlocks(base, [block]);
      expect(countParams(base) - countParams(without)).toBe(block.params);
      expect(block.weights.length).toBeGreaterThan(0);
      expectClose(await outputsAt(without, feeds), await outputsAt(zeroedBlock(base, block), feeds));
      const out = path.join(tmp, `${path.basename(file, '.onnx')}-without.onnx`);
      fs.writeFileSync(out, onnx.ModelProto.encode(without.proto).finish());
      expectCheckerAccepts(out, path.join(FIXTURES_DIR, file));
    }
  });

  test('with a KV cache, an attention block goes and the present outputs stay, with what computes them', async () => {
    const base = OnnxModel.read(path.join(FIXTURES_DIR, 'kv', 'llama-kv.onnx'));
    const { blocks } = await findBlocks(base);
    const attention = blocks.find((b) => b.keptFor.length > 0)!;
    expect(attention.keptFor.sort()).toEqual(['present.0.key', 'present.0.value']);
    const without = removeBlocks(base, [attention]);
    expect(without.graph.output.map((o) => o.name)).toEqual(base.graph.output.map((o) => o.name));
    const feeds = withVariedTokens(base, dummyFeeds(base));
    const [got, want] = [await outputsAt(without, feeds), await outputsAt(base, feeds)];
    // Keys and values of the layer are computed before its attention: the cache is the base's.
    const { 'present.0.key': key, 'present.0.value': value } = want;
    expectClose({ 'present.0.key': got['present.0.key'], 'present.0.value': got['present.0.value'] }, { 'present.0.key': key, 'present.0.value': value });
  });
});

describe('a residual add that cannot be removed is left alone, with why', () => {
  // x -> MatMul W -> y; out = x + y; y also read elsewhere.
  const build = (extra: 'output' | 'reader') => {
    const nodes = [node('MatMul', ['x', 'W'], ['y']), node('Add', ['x', 'y'], ['out'])];
    const outputs = [valueInfo('out', T.FLOAT, [1, 4])];
    if (extra === 'output') outputs.push(valueInfo('y', T.FLOAT, [1, 4]));
    else {
      nodes.push(node('Mul', ['y', 'y'], ['sq']));
      outputs.push(valueInfo('sq', T.FLOAT, [1, 4]));
    }
    return OnnxModel.fromProto(model({ nodes, inputs: [valueInfo('x', T.FLOAT, [1, 4])], outputs, initializers: [floatTensor('W', [4, 4])] }));
  };

  test('its output is also a graph output', async () => {
    const found = await findBlocks(build('output'));
    expect(found.blocks).toEqual([]);
    expect(found.skipped).toEqual([{ where: 'Add_out (x + f(x))', reason: 'its output y is also a graph output' }]);
  });

  test('its output is also read by another node', async () => {
    const found = await findBlocks(build('reader'));
    expect(found.blocks).toEqual([]);
    expect(found.skipped).toEqual([{ where: 'Add_out (x + f(x))', reason: 'its output y is also read by Mul_sq: removing the block would change more than the residual sum' }]);
  });

  test('pruning with blocks reports it in skipped and leaves the model whole', async () => {
    const m = build('reader');
    const data = [{ x: new ort.Tensor('float32', Float32Array.of(1, 2, 3, 4), [1, 4]) }];
    const result = await pruneModel(m, { target: 0.3, structures: ['blocks'], importance: 'activation', compensate: 'none', calibration: () => data });
    expect(result.pruned).toEqual([]);
    expect(result.paramsAfter).toBe(result.paramsBefore);
    expect(result.skipped.map((s) => s.reason)).toContain('block left whole: its output y is also read by Mul_sq: removing the block would change more than the residual sum');
  });
});

describe('block influence', () => {
  // h = x + x·(0.1 I); out = h + h·[[0,1],[1,0]] (the swap of h's two features).
  const tiny = OnnxModel.fromProto(
    model({
      nodes: [node('MatMul', ['x', 'A'], ['ya']), node('Add', ['x', 'ya'], ['h']), node('MatMul', ['h', 'B'], ['yb']), node('Add', ['h', 'yb'], ['out'])],
      inputs: [valueInfo('x', T.FLOAT, [1, 'tokens', 2])],
      outputs: [valueInfo('out', T.FLOAT, [1, 'tokens', 2])],
      initializers: [floatTensor('A', [2, 2], [0.1, 0, 0, 0.1]), floatTensor('B', [2, 2], [0, 1, 1, 0])],
    }),
  );

  test('is 1 − the mean cosine of x and x + f(x) per token, as computed by hand, the least influential first', async () => {
    const { blocks } = await findBlocks(tiny);
    expect(blocks.map((b) => [b.input, b.output])).toEqual([
      ['x', 'ya'],
      ['h', 'yb'],
    ]);
    // Tokens (1, 0), (0, 2), (3, 3). Block 1 scales x by 1.1: every cosine is 1, influence 0.
    // Block 2: h = 1.1x; h + swap(h) is (1.1, 1.1), (2.2, 2.2), (6.6, 6.6): cosines 1/√2, 1/√2, 1.
    const x = new ort.Tensor('float32', Float32Array.of(1, 0, 0, 2, 3, 3), [1, 3, 2]);
    const influence = await blockInfluence(tiny, blocks, () => [{ x }]);
    expect(influence[0]).toBeCloseTo(0, 6);
    expect(influence[1]).toBeCloseTo(1 - (2 / Math.SQRT2 + 1) / 3, 6);
  });

  test('prune with blocks alone removes the least influential block and says which went', async () => {
    const x = new ort.Tensor('float32', Float32Array.of(1, 0, 0, 2, 3, 3), [1, 3, 2]);
    const result = await pruneModel(tiny, { target: 0.5, structures: ['blocks'], importance: 'activation', compensate: 'none', calibration: () => [{ x }] });
    expect(result.pruned).toEqual([{ kind: 'blocks', where: 'Add_h (x + f(x)): MatMul_ya', before: 1, after: 0, params: 4 }]);
    expect(result.depth?.blocks.map((b) => b.removed)).toEqual([true, false]);
    expect(result.paramsAfter).toBe(4);
  });
});

describe('depth pruning of the LLaMA fixture', () => {
  const base = OnnxModel.read(path.join(FIXTURES_DIR, 'llama.onnx'));
  const set = loadCalibration(path.join(FIXTURES_DIR, '..', '..', 'calibration', 'llama'), base);

  test('blocks alone: whole blocks as close to the target as they come, the model runs with its outputs', async () => {
    const result = await pruneModel(base, { target: 0.25, structures: ['blocks'], importance: 'activation', compensate: 'auto', calibration: calibrationFeeds(set) });
    expect(result.pruned.length).toBeGreaterThan(0);
    expect(result.pruned.every((p) => p.kind === 'blocks' && p.before === 1 && p.after === 0)).toBe(true);
    expect(result.paramsBefore - result.paramsAfter).toBe(result.pruned.reduce((a, p) => a + p.params, 0));
    // The least influential single FFN block frees 27 % of the parameters: closer to 25 % than any other set.
    expect((result.paramsBefore - result.paramsAfter) / result.paramsBefore).toBeCloseTo(0.27, 2);
    const feeds = withVariedTokens(base, dummyFeeds(base));
    expect((await outputsAt(result.model, feeds)).logits.dims).toEqual((await outputsAt(base, feeds)).logits.dims);
  });

  test('without calibration data, blocks are refused with what to do', async () => {
    await expect(pruneModel(base, { target: 0.25, structures: ['blocks'], importance: 'magnitude', compensate: 'none' })).rejects.toThrow(UserError);
    await expect(pruneModel(base, { target: 0.25, structures: ['blocks'], importance: 'magnitude', compensate: 'none' })).rejects.toThrow(/blocks needs calibration data/);
  });
});

describe('structures: blocks', () => {
  test('the config and the CLI take it; it is off by default', () => {
    const file = path.join(tmp, 'pg.yml');
    expect(parseConfig('prune:\n  structures: [blocks, ffn]\n', file).prune.structures).toEqual(['blocks', 'ffn']);
    expect(parseConfig('prune:\n  target: 0.3\n', file).prune.structures).toEqual(['ffn', 'heads', 'channels']);
    expect(parseStructures('ffn,blocks')).toEqual(['ffn', 'blocks']);
    expect(() => parseStructures('layers')).toThrow('--structures takes a list of ffn, heads, channels, blocks');
  });
});

describe('the CLI says which blocks went', () => {
  const llama = path.join(FIXTURES_DIR, 'llama.onnx');

  test('prune --structures blocks lists each block removed, 1 -> 0, with its weights', async () => {
    const out = path.join(tmp, 'llama-depth.onnx');
    const r = await runMain(['prune', '--model', llama, '--out', out, '--target', '0.25', '--calibration', path.join(FIXTURES_DIR, '..', '..', 'calibration', 'llama'), '--structures', 'blocks']);
    expect([r.status, r.stderr.split('\n').filter((l) => /error/i.test(l))]).toEqual([0, []]);
    const rows = r.stdout.split('\n').filter((l) => /^\s*blocks\s/.test(l));
    expect(rows).toHaveLength(1);
    expect(rows[0]).toMatch(/1 -> 0 .*\/model\/layers\.\d\/Add_1 .*mlp\/down_proj\/MatMul/);
    expect(fs.existsSync(out)).toBe(true);
  });

  test('inspect lists the removable blocks apart from the width groups', async () => {
    const r = await runMain(['inspect', '--model', llama, '--json']);
    const ins = JSON.parse(r.stdout) as Inspection;
    expect(ins.blocks?.removable.map((b) => b.where.split(' ')[0])).toEqual(['/model/layers.0/Add', '/model/layers.0/Add_1', '/model/layers.1/Add', '/model/layers.1/Add_1']);
    expect(ins.prunable.every((g) => g.kind !== 'blocks')).toBe(true);
    expect((await runMain(['inspect', '--model', llama])).stdout).toContain('Residual blocks (structures: blocks, off by default)');
  });
});
