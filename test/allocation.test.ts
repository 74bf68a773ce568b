// How removals are shared between layers and repaired (src/prune/allocate.ts, compensate.ts):
// the FLAP baseline as its paper defines it, least-squares reconstruction where it must be exact,
// and the search that measures candidates on calibration data and keeps the least damaging.
import * as path from 'path';
import { onnx } from 'onnx-proto';
import { CalibrationSet, calibrationFeeds, loadCalibration } from '../src/eval/calibration';
import { Evaluator } from '../src/eval/evaluator';
import { OnnxModel } from '../src/onnx/model';
import * as runtime from '../src/onnx/runtime';
import { createSession, ort } from '../src/onnx/runtime';
import { pruneModel } from '../src/prune';
import { sessionExposing } from '../src/prune/stats';
import { FIXTURES_DIR } from './helpers/fixtures';
import { T, encode, floatTensor, model, node, valueInfo } from './helpers/onnx-builders';

const load = (proto: onnx.ModelProto) => OnnxModel.fromBytes(encode(proto), 'synthetic.onnx');

/** Seeded uniform batches for a single float input `x` of `width` features. */
function batches(width: number, count: number, rows: number, seed = 5): Record<string, ort.Tensor>[] {
  let s = seed;
  const random = () => ((s = (s * 16807) % 2147483647) / 2147483647) * 2 - 1;
  return Array.from({ length: count }, () => ({ x: new ort.Tensor('float32', Float32Array.from({ length: rows * width }, () => random() + 0.3 * Math.sin(s)), [rows, width]) }));
}

async function run(m: OnnxModel, feeds: Record<string, ort.Tensor>, names?: string[]): Promise<Record<string, Float32Array>> {
  const session = names ? await sessionExposing(m, names) : await createSession(m);
  try {
    const out = await session.run(feeds, names ?? session.outputNames);
    return Object.fromEntries(Object.entries(out).map(([k, t]) => [k, t.data as Float32Array]));
  } finally {
    await session.release();
  }
}

/**
 * A model with its calibration set and an evaluator on it (latency timed once), for `use`; the
 * evaluator is closed and every mock restored after it.
 */
async function withEvaluator(base: OnnxModel, calibration: string, use: (base: OnnxModel, set: CalibrationSet, evaluator: Evaluator) => Promise<void>): Promise<void> {
  const set = loadCalibration(path.join(__dirname, '..', 'calibration', calibration), base);
  const evaluator = await Evaluator.create(base, set, { latency: { warmup: 0, runs: 1 } });
  try {
    await use(base, set, evaluator);
  } finally {
    jest.restoreAllMocks();
    await evaluator.close();
  }
}

describe('FLAP, as its paper defines it (the `global` allocation with activation importance and bias compensation)', () => {
  // Two branches x -> [6, 10] -> Relu -> [10, 3] and x -> [6, 12] -> Relu -> [12, 3], added: two
  // FFN groups of 10 and 12 neurons, every neuron 9 parameters.
  const weights = (name: string, dims: number[], phase: number) =>
    floatTensor(name, dims, Array.from({ length: dims[0] * dims[1] }, (_, i) => Math.sin(i * 0.37 + phase) * (0.2 + ((i * 7) % 11) / 10)));
  const proto = model({
    nodes: [
      node('MatMul', ['x', 'A1'], ['a']),
      node('Relu', ['a'], ['ha']),
      node('MatMul', ['ha', 'A2'], ['ya']),
      node('MatMul', ['x', 'B1'], ['b']),
      node('Relu', ['b'], ['hb']),
      node('MatMul', ['hb', 'B2'], ['yb']),
      node('Add', ['ya', 'yb'], ['y']),
    ],
    inputs: [valueInfo('x', T.FLOAT, ['batch', 6])],
    outputs: [valueInfo('y', T.FLOAT, ['batch', 3])],
    initializers: [weights('A1', [6, 10], 0), weights('A2', [10, 3], 1), weights('B1', [6, 12], 2), weights('B2', [12, 3], 3)],
  });
  const data = batches(6, 4, 32);

  test('fluctuation Var(X_j)·||W_j||², standardized per layer, one global ranking; bias compensation keeps the output mean', async () => {
    const base = load(proto);
    const result = await pruneModel(base, { target: 0.2, structures: ['ffn'], importance: 'activation', compensate: 'bias', allocation: 'global', calibration: () => data });
    // The same ranking computed here from the hidden activations and the consumers' rows.
    const hidden = { ha: [] as number[][], hb: [] as number[][] };
    for (const feeds of data) {
      const out = await run(base, feeds, ['ha', 'hb']);
      for (const [name, width] of [['ha', 10], ['hb', 12]] as const) {
        for (let r = 0; r < out[name].length / width; r++) hidden[name].push(Array.from(out[name].slice(r * width, (r + 1) * width)));
      }
    }
    const units: { layer: string; j: number; z: number }[] = [];
    for (const [layer, consumer, width] of [['ha', 'A2', 10], ['hb', 'B2', 12]] as const) {
      const w = Array.from(base.constant(consumer)!.data as Float32Array);
      const rows = hidden[layer];
      const scores = Array.from({ length: width }, (_, j) => {
        const mean = rows.reduce((s, r) => s + r[j], 0) / rows.length;
        const variance = rows.reduce((s, r) => s + (r[j] - mean) ** 2, 0) / rows.length;
        return variance * [0, 1, 2].reduce((s, o) => s + w[j * 3 + o] ** 2, 0);
      });
      const mean = scores.reduce((a, b) => a + b, 0) / width;
      const std = Math.sqrt(scores.reduce((a, b) => a + (b - mean) ** 2, 0) / width);
      scores.forEach((s, j) => units.push({ layer, j, z: (s - mean) / std }));
    }
    units.sort((a, b) => a.z - b.z);
    const target = 0.2 * 198;
    let removed = 0;
    const expected = { ha: 0, hb: 0 };
    for (const u of units) {
      if (removed >= target) break;
      if (removed + 9 > target + 1.98) continue;
      removed += 9;
      expected[u.layer as 'ha' | 'hb']++;
    }
    expect(result.pruned.map((p) => [p.before, p.before - p.after])).toEqual([
      [10, expected.ha],
      [12, expected.hb],
    ]);
    // Bias compensation: on the calibration data, the output's mean is the base's.
    const mean = (v: Float32Array) => [0, 1, 2].map((o) => v.filter((_, i) => i % 3 === o).reduce((a, b) => a + b, 0) / (v.length / 3));
    const [want, got] = [await run(base, data[0]), await run(result.model, data[0])];
    const all = async (m: OnnxModel) => {
      const sums = [0, 0, 0];
      for (const feeds of data) mean((await run(m, feeds)).y).forEach((v, o) => (sums[o] += v / data.length));
      return sums;
    };
    expect(want.y.length).toBe(got.y.length);
    const [a, b] = [await all(base), await all(result.model)];
    a.forEach((v, o) => expect(b[o]).toBeCloseTo(v, 4));
  });
});

test('reconstruction restores the outputs when the removed channels are combinations of kept ones', async () => {
  // x [8] -> [8, 12] -> h -> [12, 4]: h has 12 channels of an 8-dimensional input, so any channel
  // is a combination of 8 others, and refitting the kept rows of [12, 4] loses nothing.
  const proto = model({
    nodes: [node('MatMul', ['x', 'W1'], ['h']), node('MatMul', ['h', 'W2'], ['y'])],
    inputs: [valueInfo('x', T.FLOAT, ['batch', 8])],
    outputs: [valueInfo('y', T.FLOAT, ['batch', 4])],
    initializers: [floatTensor('W1', [8, 12]), floatTensor('W2', [12, 4])],
  });
  const base = load(proto);
  const data = batches(8, 4, 64);
  const result = await pruneModel(base, { target: 0.2, structures: ['ffn'], importance: 'magnitude', compensate: 'reconstruct', allocation: 'global', calibration: () => data });
  expect(result.pruned[0].after).toBeGreaterThanOrEqual(8);
  expect(result.pruned[0].after).toBeLessThan(12);
  for (const feeds of [...data, ...batches(8, 1, 16, 99)]) {
    const [want, got] = [(await run(base, feeds)).y, (await run(result.model, feeds)).y];
    const scale = Math.max(...Array.from(want, Math.abs));
    expect(Math.max(...Array.from(want, (v, i) => Math.abs(v - got[i]))) / scale).toBeLessThan(1e-5);
  }
});

describe('allocation by damage curves', () => {
  const fixture = (name: string) => OnnxModel.read(path.join(FIXTURES_DIR, `${name}.onnx`));

  test('the plan from the curves and one alternative are built at equal removal and run; the less damaging is kept, and it is the model written (CNN, 40 %)', async () => {
    await withEvaluator(fixture('cnn'), 'cnn', async (base, set, evaluator) => {
      const damage = evaluator.damageMeasure();
      const result = await pruneModel(base, { target: 0.4, structures: ['ffn', 'heads', 'channels'], importance: 'activation', compensate: 'auto', align: 1, damage, calibration: calibrationFeeds(set), calibrationSamples: set.count });
      const a = result.allocation!;
      expect(a.tried).toHaveLength(2);
      // The race is decided on the first half of the set's 4 batches, both candidates on the same ones.
      expect(a.tried[0]).toMatchObject({ strategy: 'measured', note: 'planned from the damage curves' });
      expect(a.on).toBe('the first 2 of 4 calibration batches (the race)');
      const kept = a.tried.reduce((x, y) => (y.loss! < x.loss! ? y : x));
      expect([a.strategy, a.compensate]).toEqual([kept.strategy, kept.compensate]);
      // The written model is the kept candidate: its loss on those batches is the one measured for it.
      expect(await evaluator.loss(result.model, 0.5)).toBeCloseTo(kept.loss!, 6);
      // Candidates at equal removal: both within 0.25 % of the model of the target.
      for (const t of a.tried) expect(Math.abs(t.params / result.paramsBefore - 0.4)).toBeLessThanOrEqual(0.0025 + 1e-9);
      // Statistics, the probe, the plan's confirmation over the whole set (the step's evaluation)
      // and the runner-up's over the race's half; the runner-up, if it won, then over the whole
      // set. What each read and why.
      expect(a.passes!.map((p) => [p.what, p.samples])).toEqual([
        ['statistics', set.count],
        ['probe', set.count],
        ['confirmation', set.count],
        ['confirmation', set.count / 2],
        ...(kept === a.tried[0] ? [] : [['confirmation', set.count]]),
      ]);
      for (const p of a.passes!) expect(p.why.length).toBeGreaterThan(10);
    });
  });

  test('a runner-up that wins the race on half the set is kept, and then runs over the whole set: the step needs no pass of its own to evaluate it', async () => {
    await withEvaluator(fixture('cnn'), 'cnn', async (base, set, evaluator) => {
      // A data set on which the runner-up (the only candidate run on part of the set alone) loses nothing.
      const measure = evaluator.damageMeasure();
      const damage = { ...measure, loss: async (m: OnnxModel, share: number, tap?: never) => (share < 1 ? 0 : measure.loss(m, share, tap)) };
      const result = await pruneModel(base, { target: 0.4, structures: ['ffn', 'heads', 'channels'], importance: 'activation', compensate: 'auto', align: 1, damage, calibration: calibrationFeeds(set), calibrationSamples: set.count });
      const a = result.allocation!;
      expect(a.tried.map((t) => t.loss! > 0)).toEqual([true, false]);
      expect(result.paramsBefore - result.paramsAfter).toBe(a.tried[1].params);
      expect(evaluator.hasPassOf(result.model)).toBe(true);
      expect(a.passes!.map((p) => [p.what, p.samples])).toEqual([
        ['statistics', set.count],
        ['probe', set.count],
        ['confirmation', set.count],
        ['confirmation', set.count / 2],
        ['confirmation', set.count],
      ]);
    });
  });

  test('align auto, where whole blocks cannot land on the target: the plan stops short rather than take a costly block that lands closer (digits CNN, 10 %)', async () => {
    // Convolutions of 32 and 64 channels in blocks of 16: landing on 10 % would cut a
    // 32-channel convolution to 16, which loses a quarter of the digits; blocks of the 64-channel
    // ones overshoot. Stopping short costs nothing.
    jest.spyOn(runtime, 'convolutionBlock').mockReturnValue(16);
    await withEvaluator(OnnxModel.read(path.join(__dirname, '..', 'examples', 'digits-cnn', 'model.onnx')), 'digits-cnn', async (base, set, evaluator) => {
      const logs: string[] = [];
      const damage = { ...evaluator.damageMeasure(), latency: async () => 0.9 };
      const result = await pruneModel(base, { target: 0.1, structures: ['ffn', 'channels'], importance: 'activation', compensate: 'auto', align: 'auto', damage, calibration: calibrationFeeds(set), calibrationSamples: set.count, log: (line) => logs.push(line) });
      expect(logs.some((l) => /the target is out of reach at widths that keep the convolutions blocked/.test(l))).toBe(true);
      const removed = 1 - result.paramsAfter / result.paramsBefore;
      expect(removed).toBeGreaterThan(0);
      expect(removed).toBeLessThan(0.1);
      expect(await evaluator.loss(result.model, 1)).toBeLessThan(0.01);
    });
  });

  test.each([8, 16])('align auto: a convolution whose width is a multiple of the kernel block (%i here) keeps a multiple of it, other widths as planned', async (block) => {
    jest.spyOn(runtime, 'convolutionBlock').mockReturnValue(block);
    await withEvaluator(fixture('cnn'), 'cnn', async (base, set, evaluator) => {
      // A machine where the candidate is never slower: the kernel table alone decides the widths.
      const damage = { ...evaluator.damageMeasure(), latency: async () => 0.9 };
      const result = await pruneModel(base, { target: 0.3, structures: ['ffn', 'channels'], importance: 'activation', compensate: 'auto', align: 'auto', damage, calibration: calibrationFeeds(set), calibrationSamples: set.count });
      const blocked = result.pruned.filter((p) => p.kind === 'channels' && p.before % block === 0);
      expect(blocked.length).toBeGreaterThan(0);
      for (const p of blocked) expect(p.after % block).toBe(0);
      expect(result.allocation).toMatchObject({ latency: 0.9 });
    });
  });

  test.each([8, 16])('align auto (kernel block %i): a kept candidate slower than its base here is planned again with every convolution as it is, and the faster one kept', async (block) => {
    jest.spyOn(runtime, 'convolutionBlock').mockReturnValue(block);
    await withEvaluator(fixture('cnn'), 'cnn', async (base, set, evaluator) => {
      // A machine where any convolution that lost channels runs slower than the base.
      const convolutions = base.graph.node.filter((n) => n.opType === 'Conv').map((n) => n.input![1]!);
      const channels = (m: OnnxModel) => convolutions.map((w) => m.constantInfo(w)!.dims[0]).join();
      const latency = async (m: OnnxModel) => (channels(m) === channels(base) ? 0.95 : 1.4);
      const damage = { ...evaluator.damageMeasure(), latency };
      const result = await pruneModel(base, { target: block === 8 ? 0.2 : 0.05, structures: ['ffn', 'channels'], importance: 'activation', compensate: 'auto', align: 'auto', damage, calibration: calibrationFeeds(set), calibrationSamples: set.count });
      const a = result.allocation!;
      expect(a.latency).toBe(0.95);
      expect(a.tried[a.tried.length - 1]).toMatchObject({ latency: 0.95, note: expect.stringContaining('every convolution as it is') });
      expect(result.pruned.filter((x) => x.kind === 'channels')).toEqual([]);
      expect(result.pruned.length).toBeGreaterThan(0);
    });
  });

  test('without a damage measure, the allocation asked for is used and the result says nothing was measured', async () => {
    const result = await pruneModel(fixture('mlp'), { target: 0.3, structures: ['ffn'], importance: 'magnitude', compensate: 'auto', allocation: 'uniform' });
    expect(result.allocation).toMatchObject({ strategy: 'uniform', compensate: 'none', tried: [] });
    expect(result.allocation!.measure).toContain('nothing measured');
    // Uniform: both hidden layers (32 and 16 neurons) lose the same share, to within the two
    // units of the narrower one that meeting the target exactly may take.
    const shares = result.pruned.map((p) => (p.before - p.after) / p.before);
    expect(shares).toHaveLength(2);
    expect(Math.abs(shares[0] - shares[1])).toBeLessThanOrEqual(2 / 16);
  });
});

test('a strategy asked for is built as it is: no curves, no probe, no confirmation', async () => {
  await withEvaluator(OnnxModel.read(path.join(FIXTURES_DIR, 'cnn.onnx')), 'cnn', async (base, set, evaluator) => {
    const result = await pruneModel(base, { target: 0.3, structures: ['ffn', 'channels'], importance: 'activation', compensate: 'auto', allocation: 'uniform', damage: evaluator.damageMeasure(), calibration: calibrationFeeds(set), calibrationSamples: set.count });
    expect(result.allocation).toMatchObject({ strategy: 'uniform', measure: 'as asked (allocation: uniform)', tried: [] });
    expect(result.allocation!.passes!.map((p) => p.what)).toEqual(['statistics']);
  });
});
