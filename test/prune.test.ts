// Every fixture pruned at 10, 30 and 50 % of its parameters passes the ONNX checker, loads in
// onnxruntime, runs at other batch sizes and sequence lengths, keeps its output shapes, computes
// what the base computes with the removed entries zeroed (token ids drawn over the whole
// vocabulary), and loses the requested share of parameters; heads (KV groups for GQA), FFN
// neurons and conv channels are really removed; an op the engine does not know is left alone,
// and the rest is still pruned.
import * as crypto from 'crypto';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { onnx } from 'onnx-proto';
import { countParams } from '../src/graph/cost';
import { einsumLabels } from '../src/graph/rules';
import { DataType } from '../src/onnx/dtype';
import { OnnxModel } from '../src/onnx/model';
import { createSession, ort, sessionForProto } from '../src/onnx/runtime';
import { writeModel } from '../src/onnx/write';
import { setSpillMinBytes } from '../src/onnx/spill';
import { UserError } from '../src/errors';
import { PruneResult, findPrunable, pruneModel } from '../src/prune';
import { expectCheckerAccepts } from './helpers/checker';
import { FIXTURES_DIR, outputBytes, sampleFeeds, withVariedTokens } from './helpers/fixtures';
import { expectZeroedEqual, outputsAt } from './helpers/zeroed';

const FIXTURES = ['mlp', 'cnn', 'gpt2', 'llama', 'bert'];
const ALL = ['ffn', 'heads', 'channels'] as const;

let tmp: string;
beforeAll(() => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'prune-gate-prune-'));
});
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

async function run(model: OnnxModel | string, feeds: Record<string, ort.Tensor>) {
  const session = await createSession(model);
  try {
    return await session.run(feeds);
  } finally {
    await session.release();
  }
}

const prune = (model: OnnxModel, target: number) =>
  pruneModel(model, { target, structures: [...ALL], importance: 'magnitude', compensate: 'none' });

/** A weight's dims, found through the op that uses it (torch names MatMul weights anonymously). */
function weightDims(model: OnnxModel, nodeName: string, input = 1): number[] {
  const node = nodesOf(model).find((n) => n.name === nodeName);
  if (!node) throw new Error(`no node ${nodeName}`);
  return model.constantInfo(node.input[input])!.dims;
}

const nodesOf = (model: OnnxModel) => model.graph.node as onnx.NodeProto[];
const sha = (file: string) => crypto.createHash('sha256').update(fs.readFileSync(file)).digest('hex');

describe.each(FIXTURES)('%s', (name) => {
  const file = path.join(FIXTURES_DIR, `${name}.onnx`);
  const base = OnnxModel.read(file);
  const before = sha(file);

  test.each([0.1, 0.3, 0.5])('pruned at %p: a valid model that runs at other sizes and computes the base with the removed entries zeroed', async (target) => {
    const result = await prune(base, target);
    const removed = 1 - result.paramsAfter / result.paramsBefore;
    expect(Math.abs(removed - target)).toBeLessThanOrEqual(0.02);
    expect(result.paramsAfter).toBe(countParams(result.model));

    const out = path.join(tmp, `${name}-${target}.onnx`);
    writeModel(result.model, out);
    expectCheckerAccepts(out);
    for (const [batch, length] of [[1, 3], [4, 16]]) {
      const feeds = withVariedTokens(base, sampleFeeds(base, batch, length));
      const want = await run(base, feeds);
      const got = await run(out, feeds);
      for (const [k, t] of Object.entries(want)) {
        expect(got[k].dims).toEqual(t.dims);
        expect(Array.from(got[k].data as Float32Array).every(Number.isFinite)).toBe(true);
      }
      // Magnitude importance without compensation claims exactness: removing a unit is zeroing it
      // (checked at the larger size, where every row of the batch and position counts).
      if (batch > 1) await expectZeroedEqual(base, result, feeds, got);
    }
    expect(sha(file)).toBe(before); // the input model is never modified
  });

  test('pruning nothing gives outputs equal to the base', async () => {
    const result = await prune(base, 0);
    expect(result.pruned).toEqual([]);
    const feeds = sampleFeeds(base, 2, 5);
    expect(outputBytes(await run(result.model, feeds))).toEqual(outputBytes(await run(base, feeds)));
  });
});

describe('structures removed where the model has them', () => {
  const results = new Map<string, PruneResult>();
  beforeAll(async () => {
    for (const name of FIXTURES) results.set(name, await prune(OnnxModel.read(path.join(FIXTURES_DIR, `${name}.onnx`)), 0.3));
  });
  const kinds = (name: string) => new Set(results.get(name)!.pruned.filter((p) => p.after < p.before).map((p) => p.kind));

  test('GPT-2 (fused QKV): heads and FFN neurons; c_attn loses whole heads from q, k and v', () => {
    expect(kinds('gpt2')).toEqual(new Set(['heads', 'ffn']));
    const model = results.get('gpt2')!.model;
    const heads = results.get('gpt2')!.pruned.find((p) => p.kind === 'heads' && p.where.includes('h.0'))!;
    const kept = heads.after; // 4 heads of 16 dims each in the fixture
    expect(weightDims(model, '/transformer/h.0/attn/c_attn/MatMul')).toEqual([64, 3 * 16 * kept]);
    expect(weightDims(model, '/transformer/h.0/attn/c_proj/MatMul')).toEqual([16 * kept, 64]);
  });

  test('LLaMA (GQA): a KV group goes with its query heads; SwiGLU neurons go from gate, up and down', () => {
    expect(kinds('llama')).toEqual(new Set(['heads', 'ffn']));
    const model = results.get('llama')!.model;
    const attn = results.get('llama')!.pruned.filter((p) => p.kind === 'heads');
    expect(attn.every((p) => p.before === 2 && p.after === 1)).toBe(true); // 2 KV groups, 1 left
    const layer = '/model/layers.0/self_attn';
    expect(weightDims(model, `${layer}/k_proj/MatMul`)).toEqual([64, 16]); // 1 KV head of 16
    expect(weightDims(model, `${layer}/v_proj/MatMul`)).toEqual([64, 16]);
    expect(weightDims(model, `${layer}/q_proj/MatMul`)).toEqual([64, 32]); // its 2 query heads
    expect(weightDims(model, `${layer}/o_proj/MatMul`)).toEqual([32, 64]);
    const mlp = results.get('llama')!.pruned.find((p) => p.kind === 'ffn' && p.where.includes('layers.0'))!;
    expect(weightDims(model, '/model/layers.0/mlp/gate_proj/MatMul')).toEqual([64, mlp.after]);
    expect(weightDims(model, '/model/layers.0/mlp/up_proj/MatMul')).toEqual([64, mlp.after]);
    expect(weightDims(model, '/model/layers.0/mlp/down_proj/MatMul')).toEqual([mlp.after, 64]);
  });

  test('BERT (separate Q/K/V): heads and FFN neurons', () => {
    expect(kinds('bert')).toEqual(new Set(['heads', 'ffn']));
  });

  test('CNN: conv channels (residual-coupled, depthwise, squeeze-excite) and the classifier hidden layer', () => {
    expect(kinds('cnn')).toEqual(new Set(['channels', 'ffn']));
    const r = results.get('cnn')!;
    const dw = nodesOf(r.model).find((n) => n.name === '/dwsep/dw/dw.0/Conv')!;
    const channels = r.model.constantInfo(dw.input[1])!.dims[0];
    expect(channels).toBeLessThan(16);
    expect(Number(dw.attribute.find((a) => a.name === 'group')!.i)).toBe(channels);
    expect(r.pruned.some((p) => p.where.includes('/se'))).toBe(true);
  });

  test('the residual stream of transformers is left alone and reported', () => {
    for (const name of ['gpt2', 'bert']) {
      expect(results.get(name)!.skipped.some((s) => /LayerNormalization/.test(s.reason))).toBe(true);
    }
    expect(results.get('llama')!.skipped.some((s) => /ReduceMean/.test(s.reason))).toBe(true);
  });
});

test('an op the engine does not know, in the middle of an FFN, is skipped there; the rest is pruned', async () => {
  // The MLP fixture with a Shrink (a standard op onnxruntime runs, unknown to the engine)
  // after its first hidden layer's Relu.
  const proto = onnx.ModelProto.decode(fs.readFileSync(path.join(FIXTURES_DIR, 'mlp.onnx')));
  const nodes = (proto.graph as onnx.GraphProto).node as onnx.NodeProto[];
  const relu = nodes.findIndex((n) => n.opType === 'Relu');
  const reluOut = nodes[relu].output[0];
  const shrunk = `${reluOut}_shrink`;
  for (const n of nodes) n.input = n.input.map((i) => (i === reluOut ? shrunk : i));
  nodes.splice(relu + 1, 0, onnx.NodeProto.create({ opType: 'Shrink', name: 'mystery', input: [reluOut], output: [shrunk] }));
  const file = path.join(tmp, 'mlp-shrink.onnx');
  fs.writeFileSync(file, onnx.ModelProto.encode(proto).finish());

  const model = OnnxModel.read(file);
  const result = await prune(model, 0.1);
  expect(result.skipped.some((s) => /Shrink mystery is not understood/.test(s.reason))).toBe(true);
  const pruned = result.pruned.filter((p) => p.after < p.before);
  expect(pruned.length).toBe(1);
  expect(pruned[0].before).toBe(16); // the second hidden layer, after the unknown op
  const out = path.join(tmp, 'mlp-shrink-pruned.onnx');
  writeModel(result.model, out);
  const feeds = sampleFeeds(model, 3, 1);
  expect((await run(out, feeds)).logits.dims).toEqual([3, 10]);
});

/** Relative error of an NCHW output, and the mean over channels of |shift of the channel's mean|. */
function channelErrors(want: ort.Tensor, got: ort.Tensor): { rel: number; mean: number } {
  expect(got.dims).toEqual(want.dims);
  const [a, b] = [want.data as Float32Array, got.data as Float32Array];
  const [batch, channels] = want.dims;
  const plane = a.length / (batch * channels);
  let [diff, ref, mean] = [0, 0, 0];
  for (let o = 0; o < channels; o++) {
    let shift = 0;
    for (let n = 0; n < batch; n++) {
      for (let p = 0; p < plane; p++) {
        const i = (n * channels + o) * plane + p;
        [diff, ref, shift] = [diff + (a[i] - b[i]) ** 2, ref + a[i] ** 2, shift + a[i] - b[i]];
      }
    }
    mean += Math.abs(shift / (batch * plane)) / channels;
  }
  return { rel: Math.sqrt(diff / ref), mean };
}

/**
 * Removing a unit (an FFN neuron, a head) is the same as zeroing its rows of the projection that
 * reads it: finds the rows of each weight in `projections` kept in the pruned model (blocks of
 * `block` rows a unit, matched in order), zeros the others in a copy of the base, and checks that the
 * pruned model computes what that copy does. Returns the kept block count per weight.
 */
async function expectSameAsZeroedRows(base: OnnxModel, pruned: OnnxModel, projections: [name: string, block: number][]): Promise<number[]> {
  const zeroed = base.clone();
  const keptCounts: number[] = [];
  for (const [name, block] of projections) {
    const before = base.constant(name)!;
    const after = pruned.constant(name)!.data as Float32Array;
    const [rows, width] = before.dims;
    const data = before.data as Float32Array;
    const kept = new Set<number>();
    for (let b = 0, j = 0; b < rows / block && j < after.length / width; b++) {
      const rowsOf = data.subarray(b * block * width, (b + 1) * block * width);
      if (rowsOf.every((v, i) => v === after[j * width + i])) {
        kept.add(b);
        j += block;
      }
    }
    expect(kept.size * block * width).toBe(after.length);
    zeroed.setConstant(name, { dtype: DataType.FLOAT, dims: [rows, width], data: data.map((v, i) => (kept.has(Math.floor(i / width / block)) ? v : 0)) });
    keptCounts.push(kept.size);
  }
  for (const batch of [1, 3]) {
    const feeds = sampleFeeds(base, batch, 6);
    const [want, got] = [(await run(zeroed, feeds)).logits.data as Float32Array, (await run(pruned, feeds)).logits.data as Float32Array];
    expect(got.length).toBe(want.length);
    for (let i = 0; i < want.length; i++) expect(Math.abs(got[i] - want[i])).toBeLessThan(1e-4);
  }
  return keptCounts;
}

test('einsumLabels: explicit and implicit outputs, ellipsis axes aligned from the right', () => {
  expect(einsumLabels('bsd,df->bsf', [3, 2])).toEqual({ inputs: [['b', 's', 'd'], ['d', 'f']], output: ['b', 's', 'f'] });
  expect(einsumLabels('ij, jk', [2, 2])).toEqual({ inputs: [['i', 'j'], ['j', 'k']], output: ['i', 'k'] });
  expect(einsumLabels('...d,df->...f', [4, 2])).toEqual({ inputs: [['.3', '.2', '.1', 'd'], ['d', 'f']], output: ['.3', '.2', '.1', 'f'] });
  expect(einsumLabels('...ij,...jk', [3, 4])).toEqual({ inputs: [['.1', 'i', 'j'], ['.2', '.1', 'j', 'k']], output: ['.2', '.1', 'i', 'k'] });
  expect(einsumLabels('ij,jk->ik', [2])).toBeUndefined();
  expect(einsumLabels('ijk->i', [2])).toBeUndefined();
});

describe('op fixtures (tools/fixtures/export_ops.py)', () => {
  const ops = path.join(FIXTURES_DIR, 'ops');

  test('ConvTranspose: channels on both sides are pruned (a U-Net decoder), and the model runs', async () => {
    const base = OnnxModel.read(path.join(ops, 'conv-transpose.onnx'));
    const calibration = () => [0, 1, 2].map((k) => sampleFeeds(base, 4 + k, 1));
    const result = await pruneModel(base, { target: 0.3, structures: [...ALL], importance: 'activation', compensate: 'bias', calibration });
    // The upsampling ConvTranspose loses input (32) and output (24) channels, the refining one
    // input channels from both sides of the concat (16 from the skip, 24 upsampled).
    expect(result.pruned.map((p) => p.before)).toEqual(expect.arrayContaining([16, 24, 32]));
    expect(result.pruned.every((p) => p.after < p.before)).toBe(true);
    for (const batch of [1, 3]) {
      const feeds = sampleFeeds(base, batch, 1);
      expect((await run(result.model, feeds)).logits.dims).toEqual([batch, 2, 12, 12]);
    }
  });

  test('ConvTranspose: bias compensation restores the mean of its output (stride 1, padded)', async () => {
    // At 10 % only the 16-channel skip is pruned; the refining ConvTranspose reads it. Its output
    // (before the ReLU) is compared with the base's on calibration data.
    const base = OnnxModel.read(path.join(ops, 'conv-transpose.onnx'));
    const calibration = () => [0, 1, 2].map((k) => sampleFeeds(base, 4 + k, 1));
    const refine = base.graph.node.find((n) => n.opType === 'ConvTranspose' && n.name === '/refine/ConvTranspose')!.output![0];
    const fetch = async (m: OnnxModel) => {
      const probe = m.clone();
      probe.graph.output.push(onnx.ValueInfoProto.create({ name: refine }));
      const session = await sessionForProto(probe, probe.proto);
      try {
        return (await session.run(calibration()[0]))[refine];
      } finally {
        await session.release();
      }
    };
    const want = await fetch(base);
    const errors: { rel: number; mean: number }[] = [];
    for (const compensate of ['none', 'bias'] as const) {
      const result = await pruneModel(base, { target: 0.1, structures: ['channels'], importance: 'activation', compensate, calibration });
      expect(result.pruned.filter((p) => p.after < p.before).map((p) => p.before)).toEqual([16]);
      errors.push(channelErrors(want, await fetch(result.model)));
    }
    expect(errors[1].mean).toBeLessThan(errors[0].mean / 2);
    expect(errors[1].rel).toBeLessThan(errors[0].rel);
  });

  test('ConvTranspose with stride 2: the bias takes the kernel sum over the 4 taps, restoring the mean', async () => {
    // Its input is the only prunable space; its output is the model's. Without dividing by the
    // strides' product the bias would overshoot the lost mean threefold.
    const base = OnnxModel.read(path.join(ops, 'upsampling-head.onnx'));
    const calibration = () => [0, 1, 2].map((k) => sampleFeeds(base, 4 + k, 1));
    const feeds = calibration()[0];
    const want = (await run(base, feeds)).logits;
    const errors: { rel: number; mean: number }[] = [];
    for (const compensate of ['none', 'bias'] as const) {
      const result = await pruneModel(base, { target: 0.3, structures: ['channels'], importance: 'activation', compensate, calibration });
      expect(result.pruned.filter((p) => p.after < p.before).map((p) => p.before)).toEqual([16]);
      errors.push(channelErrors(want, (await run(result.model, feeds)).logits));
    }
    expect(errors[1].mean).toBeLessThan(errors[0].mean / 4);
    expect(errors[1].rel).toBeLessThan(errors[0].rel);
  });

  test('GroupNorm as torch writes it out (Reshape to groups, InstanceNormalization, Reshape back): a whole group of channels is one unit', async () => {
    const base = OnnxModel.read(path.join(ops, 'group-norm.onnx'));
    const found = await findPrunable(base);
    // GroupNorm(4, 16) and GroupNorm(6, 24): groups of 4 channels each.
    expect(found.prunable.map((g) => [g.kind, g.units, g.unitParams])).toEqual([
      ['channels', 4, 4 * (3 * 9 + 1 + 2 + 24 * 9) + 2],
      ['channels', 6, 4 * (16 * 9 + 1 + 2 + 4) + 2],
    ]);
    const result = await pruneModel(base, { target: 0.3, structures: [...ALL], importance: 'magnitude', compensate: 'none' });
    expect(result.pruned.every((p) => p.after < p.before)).toBe(true);
    // No other group's statistics change: the base with the removed channels zeroed (their
    // norm's scale and bias too) computes exactly what the pruned model does.
    const feeds = sampleFeeds(base, 3, 1);
    await expectZeroedEqual(base, result, feeds, await outputsAt(result.model, feeds));
  });

  test('a fused gate-and-up projection sliced in two: each neuron is its gate and up columns, and the slices move', async () => {
    const base = OnnxModel.read(path.join(ops, 'fused-gate-up.onnx'));
    const result = await pruneModel(base, { target: 0.2, structures: [...ALL], importance: 'magnitude', compensate: 'none' });
    const [ffn] = result.pruned.filter((p) => p.after < p.before);
    // One unit: a gate column, an up column 48 further on, and a row of the down projection.
    expect(ffn).toMatchObject({ kind: 'ffn', before: 48, params: (48 - ffn.after) * 3 * 32 });
    // The pruned model computes exactly what the base computes with the removed neurons' rows of
    // the down projection zeroed, which holds only if both slices were moved to the kept columns.
    const down = base.graph.node.filter((n) => n.opType === 'MatMul')[1].input![1];
    expect(await expectSameAsZeroedRows(base, result.model, [[down, 1]])).toEqual([ffn.after]);
  });

  test("timm's ViT attention, q, k and v picked from a (3, heads, head_dim) reshape: heads are pruned, exactly", async () => {
    // Block 0 picks q, k, v by unbind (Split), block 1 by indexing (Gather). The attention output
    // is reshaped to (B, N, C) with C read from the unpruned input's shape at run time.
    const base = OnnxModel.read(path.join(ops, 'timm-vit.onnx'));
    const result = await pruneModel(base, { target: 0.3, structures: ['heads'], importance: 'magnitude', compensate: 'none' });
    const heads = result.pruned.filter((p) => p.kind === 'heads');
    expect(heads.map((p) => p.where).sort()).toEqual([expect.stringMatching(/^\/attn\.0/), expect.stringMatching(/^\/attn\.1/)]);
    expect(heads.every((p) => p.after < p.before)).toBe(true);
    const projections = [0, 1].map((b) => base.graph.node.find((n) => n.name === `/attn.${b}/proj/MatMul`)!.input![1]);
    expect(await expectSameAsZeroedRows(base, result.model, projections.map((p) => [p, 8]))).toEqual(heads.map((p) => p.after));
  });

  test('Einsum: heads and FFN neurons written with einsum are pruned, exactly', async () => {
    const base = OnnxModel.read(path.join(ops, 'einsum.onnx'));
    const result = await pruneModel(base, { target: 0.3, structures: [...ALL], importance: 'magnitude', compensate: 'none' });
    const [heads, ffn] = ['heads', 'ffn'].map((k) => result.pruned.find((p) => p.kind === k)!);
    expect([heads.after < heads.before, ffn.after < ffn.before]).toEqual([true, true]);
    // The output projection (wo, rows by head of 8) and the FFN's down projection (w2).
    const einsums = base.graph.node.filter((n) => n.opType === 'Einsum');
    const [wo, w2] = [einsums[5].input![1], einsums[7].input![1]];
    expect(await expectSameAsZeroedRows(base, result.model, [[wo, 8], [w2, 1]])).toEqual([heads.after, ffn.after]);
  });

  test('Einsum as a weight op: activation importance and bias compensation read it like a MatMul', async () => {
    const base = OnnxModel.read(path.join(ops, 'einsum.onnx'));
    const calibration = () => [0, 1].map((k) => sampleFeeds(base, 4 + k, 8));
    const result = await pruneModel(base, { target: 0.3, structures: ['ffn'], importance: 'activation', compensate: 'bias', calibration });
    expect(result.pruned.find((p) => p.kind === 'ffn')!.after).toBeLessThan(64);
    // The down projection w2 has no bias of its own: compensation adds one after its Einsum.
    const w2 = base.graph.node.filter((n) => n.opType === 'Einsum')[7];
    const added = result.model.graph.node.find((n) => n.opType === 'Add' && n.input!.includes(`${w2.output![0]}_before_bias`));
    expect(added).toBeDefined();
    const feeds = sampleFeeds(base, 2, 5);
    expect((await run(result.model, feeds)).logits.dims).toEqual([2, 5, 128]);
  });

  test('spatial padding passes channels through: every conv layer of pad-cnn is pruned, exactly', async () => {
    // ZeroPad2d and a reflect pad of the right/bottom edge, with pads computed by torch's export.
    const base = OnnxModel.read(path.join(ops, 'pad-cnn.onnx'));
    const result = await prune(base, 0.3);
    expect(result.pruned.map((p) => p.before).sort((a, b) => a - b)).toEqual([16, 24, 32]);
    expect(result.pruned.every((p) => p.after < p.before)).toBe(true);
    expect(result.skipped.filter((s) => /Pad/.test(s.reason))).toEqual([]);
    for (const batch of [1, 3]) {
      const feeds = sampleFeeds(base, batch, 1);
      const got = await run(result.model, feeds);
      expect(got.logits.dims).toEqual([batch, 10]);
      await expectZeroedEqual(base, result, feeds, got);
    }
  });

  test('padding the channel axis (a ResNet option-A shortcut) fixes those channels, reported', async () => {
    const base = OnnxModel.read(path.join(ops, 'channel-pad.onnx'));
    // Nothing else in this model is prunable: asked for 30 %, it says why there is nothing to remove.
    const attempt = prune(base, 0.3);
    await expect(attempt).rejects.toThrow(UserError);
    await expect(prune(base, 0.3)).rejects.toThrow(/^channel-pad\.onnx: nothing to prune: no ffn, heads, channels the engine can remove \(.*padded by Pad \/Pad/);
    const found = await findPrunable(base);
    expect(found.prunable).toEqual([]);
    expect(found.skipped.filter((s) => /^padded by Pad \/Pad/.test(s.reason)).length).toBe(2);
  });
});

test('large weights are sliced lazily (streamed when read, twice over in two steps), with the same result', async () => {
  const base = OnnxModel.read(path.join(FIXTURES_DIR, 'llama.onnx'));
  const twoSteps = (m: OnnxModel) =>
    pruneModel(m, { target: 0.3, steps: 2, structures: [...ALL], importance: 'magnitude', compensate: 'none' });
  const inMemory = await twoSteps(base);
  setSpillMinBytes(1024); // every weight of the fixture now takes the large-model path
  try {
    const streamed = await twoSteps(base);
    const out = path.join(tmp, 'llama-streamed.onnx');
    writeModel(streamed.model, out, { externalData: 'always' });
    const feeds = sampleFeeds(base, 2, 9);
    expect(outputBytes(await run(out, feeds))).toEqual(outputBytes(await run(inMemory.model, feeds)));
  } finally {
    setSpillMinBytes(8 * 2 ** 20);
  }
});

test('align 8 keeps every wide FFN and channel layer a multiple of 8 wide, and the model computes the base with the removed entries zeroed', async () => {
  for (const name of ['gpt2', 'llama', 'cnn']) {
    const base = OnnxModel.read(path.join(FIXTURES_DIR, `${name}.onnx`));
    const result = await pruneModel(base, { target: 0.3, structures: [...ALL], importance: 'magnitude', compensate: 'none', align: 8 });
    const wide = result.pruned.filter((p) => p.kind !== 'heads' && p.before >= 32);
    expect(wide.length).toBeGreaterThan(0);
    for (const p of wide) expect(p.after % 8).toBe(0);
    const removed = 1 - result.paramsAfter / result.paramsBefore;
    // Rounding moves the total by up to half a block per layer: little on transformer FFNs, more
    // on the fixture CNN whose layers are 32 and 64 wide.
    expect(Math.abs(removed - 0.3)).toBeLessThan(name === 'cnn' ? 0.1 : 0.02);
    const feeds = withVariedTokens(base, sampleFeeds(base, 2, 5));
    const out = await run(result.model, feeds);
    for (const [k, t] of Object.entries(await run(base, feeds))) expect(out[k].dims).toEqual(t.dims);
    await expectZeroedEqual(base, result, feeds, out);
  }
});
