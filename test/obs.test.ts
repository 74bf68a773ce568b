// Damage from statistics (src/onnx/linalg.ts, src/prune/obs.ts, src/prune/probe.ts,
// src/prune/plan.ts): the linear algebra onnxruntime does for the engine against plain
// JavaScript, the Optimal-Brain-Surgeon error against a refit computed the long way, the probe
// against the pruned model it stands for, and the planner against the windows it promises.
import * as path from 'path';
import { calibrationFeeds, loadCalibration } from '../src/eval/calibration';
import { DenseMath } from '../src/onnx/linalg';
import { OnnxModel } from '../src/onnx/model';
import { createSession, ort } from '../src/onnx/runtime';
import { Group, analyze } from '../src/graph/analysis';
import { applyRemoval } from '../src/prune/apply';
import { applyCompensation, compensation } from '../src/prune/compensate';
import { DEFAULT_DAMPING, Dampings, InverseCovariances, covariance, damageCurves, dampingOf, removedBlock } from '../src/prune/obs';
import { PlanInput, planByCurves, planCounts } from '../src/prune/plan';
import { probeAssignment, probeFeeds, probeModel } from '../src/prune/probe';
import { AxisNorms } from '../src/prune/score';
import { collectStats, findConsumers, statsRequests } from '../src/prune/stats';
import { firstStatisticsTap } from '../src/prune';
import { newPruneMemory } from '../src/prune/types';
import { T, encode, floatTensor, model, node, valueInfo } from './helpers/onnx-builders';
import { damageTracking } from '../tools/bench/tracking';

const math = DenseMath.shared();

/**
 * A seeded symmetric positive definite matrix: XᵀX/m of random X [m, n], plus `damping` times its
 * mean diagonal on the diagonal. With m < n it is singular but for the damping, as a covariance
 * of correlated channels read on few tokens is.
 */
function spd(n: number, seed = 3, m = n + 5, damping = 0.1): Float64Array {
  let s = seed;
  const random = () => ((s = (s * 16807) % 2147483647) / 2147483647) * 2 - 1;
  const x = Array.from({ length: m * n }, random);
  const a = new Float64Array(n * n);
  for (let i = 0; i < n; i++) for (let j = 0; j < n; j++) {
    let acc = 0;
    for (let r = 0; r < m; r++) acc += x[r * n + i] * x[r * n + j];
    a[i * n + j] = acc / m;
  }
  let mean = 0;
  for (let i = 0; i < n; i++) mean += a[i * n + i] / n;
  for (let i = 0; i < n; i++) a[i * n + i] += damping * mean;
  return a;
}

const product = (a: Float64Array, b: Float64Array, n: number) => {
  const out = new Float64Array(n * n);
  for (let i = 0; i < n; i++) for (let k = 0; k < n; k++) for (let j = 0; j < n; j++) out[i * n + j] += a[i * n + k] * b[k * n + j];
  return out;
};

const worstFromIdentity = (a: Float64Array, n: number) => {
  let worst = 0;
  for (let i = 0; i < n; i++) for (let j = 0; j < n; j++) worst = Math.max(worst, Math.abs(a[i * n + j] - (i === j ? 1 : 0)));
  return worst;
};

test.each([7, 300, 520])('the inverse of an n x n positive definite matrix, n = %i (onnxruntime; by halves above 64 rows), times the matrix is the identity', async (n) => {
  const a = spd(n);
  expect(worstFromIdentity(product(a, await math.inverse(a, n), n), n)).toBeLessThan(1e-9);
});

test('the inverse keeps its digits on a covariance singular but for a damping of 1e-6 (condition number about 1e8): inverting by blocks of explicit inverses lost them all', async () => {
  const n = 520;
  const a = spd(n, 5, 130, 1e-6);
  expect(worstFromIdentity(product(a, await math.inverse(a, n), n), n)).toBeLessThan(1e-6);
});

test('a matrix that is not positive definite gets the least jitter that makes it so, and NaNs past 1e-4', async () => {
  // Rank 1: positive semi-definite, singular without jitter.
  const v = Float64Array.from({ length: 100 }, (_, i) => Math.cos(i));
  const rank1 = Float64Array.from({ length: 100 * 100 }, (_, k) => v[Math.floor(k / 100)] * v[k % 100]);
  const inverse = await math.inverse(rank1, 100);
  expect(inverse.every(Number.isFinite)).toBe(true);
  const negative = Float64Array.from({ length: 9 }, (_, k) => (k % 4 === 0 ? -1 : 0));
  expect((await math.inverse(negative, 3)).every(Number.isNaN)).toBe(true);
});

test("an Optimal-Brain-Surgeon removal refits the kept rows to the least-squares solution, and its error is the refit's error", async () => {
  const k = 9;
  const n = 4;
  const h = spd(k, 11);
  const w = Float64Array.from({ length: k * n }, (_, i) => Math.sin(i * 1.3));
  const removed = [2, 5, 6];
  const kept = [0, 1, 3, 4, 7, 8];
  const hinv = await math.inverse(h, k);
  const r = await math.remove(hinv, w, k, n, removed, kept, kept.map((_, i) => [i]));
  // The long way: W'_k = W_k + H_kk⁻¹ H_kP W_P, error tr(ΔWᵀ H ΔW) with ΔW the whole change.
  const hkk = Float64Array.from(kept.flatMap((i) => kept.map((j) => h[i * k + j])));
  const hkkInv = await math.inverse(hkk, kept.length);
  const change = new Float64Array(k * n);
  for (const j of removed) for (let o = 0; o < n; o++) change[j * n + o] = -w[j * n + o];
  kept.forEach((i, ri) => {
    for (let o = 0; o < n; o++) {
      let delta = 0;
      kept.forEach((_, rq) => {
        let hkp = 0;
        for (const p of removed) hkp += h[kept[rq] * k + p] * w[p * n + o];
        delta += hkkInv[ri * kept.length + rq] * hkp;
      });
      expect(r.w[ri * n + o]).toBeCloseTo(w[i * n + o] + delta, 9);
      change[i * n + o] = delta;
    }
  });
  const error = await math.quadratic(h, change, k, n);
  // The block's error as obs.ts reads it: tr(W_Pᵀ (Hinv_PP)⁻¹ W_P).
  const { hpp, wp } = removedBlock(hinv, w, k, n, removed);
  const hppInv = await math.inverse(hpp, removed.length);
  let closed = 0;
  for (let o = 0; o < n; o++) for (let a = 0; a < removed.length; a++) for (let b = 0; b < removed.length; b++) closed += wp[a * n + o] * hppInv[a * removed.length + b] * wp[b * n + o];
  expect(closed).toBeCloseTo(error, 9);
});

/** x [B, 6] -> MatMul [6, 10] -> Relu -> MatMul [10, 3]: one FFN group of 10 neurons, its consumer the second MatMul. */
function mlp(): OnnxModel {
  const weights = (name: string, dims: number[], phase: number) => floatTensor(name, dims, Array.from({ length: dims[0] * dims[1] }, (_, i) => Math.sin(i * 0.37 + phase) * (0.3 + ((i * 7) % 11) / 10)));
  const proto = model({
    nodes: [node('MatMul', ['x', 'A'], ['a']), node('Relu', ['a'], ['h']), node('MatMul', ['h', 'B'], ['y'])],
    inputs: [valueInfo('x', T.FLOAT, ['batch', 6])],
    outputs: [valueInfo('y', T.FLOAT, ['batch', 3])],
    initializers: [weights('A', [6, 10], 0), weights('B', [10, 3], 1)],
  });
  return OnnxModel.fromBytes(encode(proto), 'mlp.onnx');
}

function batches(count: number, rows: number, seed = 5): Record<string, ort.Tensor>[] {
  let s = seed;
  const random = () => ((s = (s * 16807) % 2147483647) / 2147483647) * 2 - 1;
  return Array.from({ length: count }, () => ({ x: new ort.Tensor('float32', Float32Array.from({ length: rows * 6 }, random), [rows, 6]) }));
}

async function outputs(m: OnnxModel, feeds: Record<string, ort.Tensor>): Promise<Float32Array> {
  const session = await createSession(m);
  try {
    const out = await session.run(feeds);
    return out[session.outputNames[0]].data as Float32Array;
  } finally {
    await session.release();
  }
}

/** The MLP fixture's one group, its consumers' statistics on `data`, and a plan over it alone. */
async function mlpGroup(data: Record<string, ort.Tensor>[]) {
  const base = mlp();
  const analysis = await analyze(base);
  const [group] = analysis.groups;
  const consumers = new Map([[group, findConsumers(analysis, group)]]);
  const { stats } = await collectStats(base, statsRequests(consumers.get(group)!, true), () => data);
  const plan: PlanInput = { groups: [group], scores: new Map(), targetParams: 0, slack: 0, slots: analysis.space.slots, paramDims: (t) => analysis.model.constantInfo(t)?.dims };
  return { base, analysis, group, consumers, stats, plan, dampings: new Map<string, number | null>(), inverses: new InverseCovariances(math) };
}

describe('the damage curve of a group', () => {
  test('its error after c units is the output error of the model pruned at c units and refit, measured on the calibration set', async () => {
    const data = batches(4, 64);
    const { base, analysis, group, consumers, stats, plan, dampings, inverses } = await mlpGroup(data);
    const curves = await damageCurves(base, new AxisNorms(analysis), [group], consumers, stats, inverses, { compensate: 'reconstruct', dampings, checkShare: 0.3, maxShare: 0.9 }, () => false);
    const curve = curves.get(group)!;
    expect(curve.errors[0]).toBe(0);
    for (let c = 1; c < curve.errors.length; c++) expect(curve.errors[c]).toBeGreaterThanOrEqual(curve.errors[c - 1]);
    const damping = [...dampings.values()][0]!;
    for (const count of [2, 5]) {
      const { removals } = planCounts(plan, new Map([[group, curve.order]]), new Map([[group, count]]));
      const edits = await compensation(analysis, removals, consumers, stats, 'reconstruct', dampings, inverses);
      const pruned = applyRemoval(analysis, removals, (copy) => applyCompensation(copy, analysis, edits.edits)).model;
      // Mean over rows of the squared output change, centered (the bias took the mean), under
      // the damped metric the curve is in: the measured part is at most the curve's value.
      let sq = 0;
      const mean = [0, 0, 0];
      const diffs: number[][] = [];
      for (const feeds of data) {
        const [a, b] = [await outputs(base, feeds), await outputs(pruned, feeds)];
        for (let r = 0; r < a.length / 3; r++) diffs.push([0, 1, 2].map((o) => b[r * 3 + o] - a[r * 3 + o]));
      }
      for (const d of diffs) d.forEach((v, o) => (mean[o] += v / diffs.length));
      for (const d of diffs) for (let o = 0; o < 3; o++) sq += (d[o] - mean[o]) ** 2;
      const measured = sq / diffs.length;
      expect(measured).toBeLessThanOrEqual(curve.errors[count] * (1 + 1e-6));
      // With a damping of at most 1 % the damped metric adds little: the two agree within it.
      if (damping <= DEFAULT_DAMPING) expect(measured).toBeGreaterThan(curve.errors[count] * 0.8);
    }
  });

  test('the probe model, on a sample that probes a removal, gives exactly what the model pruned that way gives', async () => {
    const data = batches(2, 8);
    const { base, analysis, group, consumers, stats, plan, dampings, inverses } = await mlpGroup(data);
    const order = group.units.slice().reverse();
    const cells = [];
    for (const count of [3, 6]) {
      const { removals } = planCounts(plan, new Map([[group, order]]), new Map([[group, count]]));
      cells.push({ group, count, edits: (await compensation(analysis, removals, consumers, stats, 'reconstruct', dampings, inverses)).edits, removals });
    }
    const probe = probeModel(analysis, cells);
    expect(probe.batched).toBe(true);
    const feeds = data[0];
    const rows = feeds.x.dims[0];
    // Rows 0..3 probe cell 0, 4..7 cell 1 (assigned in turn: 0, 1, 0, 1, ...).
    const assignment = probeAssignment(rows, 2);
    const session = await createSession(probe.model);
    try {
      const got = (await session.run({ ...feeds, ...probeFeeds(probe, assignment, 0, rows) }, [probe.model.graph.output[0].name!]))[probe.model.graph.output[0].name!].data as Float32Array;
      for (const [k, cell] of cells.entries()) {
        const pruned = applyRemoval(analysis, cell.removals, (copy) => applyCompensation(copy, analysis, cell.edits)).model;
        const want = await outputs(pruned, feeds);
        for (let r = 0; r < rows; r++) {
          if (assignment[r][0] !== k) continue;
          for (let o = 0; o < 3; o++) expect(got[r * 3 + o]).toBeCloseTo(want[r * 3 + o], 5);
        }
      }
      const plain = await outputs(base, feeds);
      const none = (await session.run({ ...feeds, ...probeFeeds(probe, [], 0, rows) }))[probe.model.graph.output[0].name!].data as Float32Array;
      none.forEach((v, i) => expect(v).toBeCloseTo(plain[i], 6));
    } finally {
      await session.release();
    }
  });
});

describe('planning from damage curves', () => {
  // Three groups of single-parameter-per-unit kinds: params = units x unit size.
  const group = (id: number, units: number, size: number): Group => {
    const slot = { id, tensor: `w${id}`, axis: 0, size: units, base: 0, constant: true };
    return {
      id,
      kind: 'ffn',
      where: `g${id}`,
      units: Array.from({ length: units }, (_, i) => ({ indices: new Map([[id, [i]]]), params: size })),
      constantSlots: [slot],
      slots: [slot],
    };
  };
  const groups = [group(0, 40, 10), group(1, 40, 10), group(2, 8, 100)];
  const input = (target: number, extra: Partial<PlanInput> = {}): PlanInput => ({
    groups,
    scores: new Map(),
    targetParams: target,
    slack: 5,
    slots: groups.map((g) => g.slots[0]),
    paramDims: (t) => [Number(t.slice(1)) === 2 ? 8 : 40, Number(t.slice(1)) === 2 ? 100 : 10],
    ...extra,
  });
  // A curve up to n - 1 units (a group keeps one), cost[c] after c units.
  const curve = (g: Group, perUnit: (c: number) => number) => ({ order: g.units.slice(0, -1), cost: Float64Array.from({ length: g.units.length }, (_, c) => perUnit(c)) });

  test('the cheapest groups go first, and the plan lands within the slack of the target', () => {
    const curves = new Map([
      [groups[0], curve(groups[0], (c) => c * 1)],
      [groups[1], curve(groups[1], (c) => c * 3)],
      [groups[2], curve(groups[2], (c) => c * 50)],
    ]);
    const plan = planByCurves(input(300), curves)!;
    expect(Math.abs(plan.params - 300)).toBeLessThanOrEqual(5);
    const counts = new Map(plan.removals.map((r) => [r.group.id, r.units.length]));
    expect(counts.get(0)).toBe(30);
    expect(counts.get(1) ?? 0).toBe(0);
  });

  test('a coarse group (units of 100 parameters) is combined with fine ones to land in the window', () => {
    const curves = new Map([
      [groups[0], curve(groups[0], (c) => c * 1)],
      [groups[1], curve(groups[1], (c) => c * 1)],
      [groups[2], curve(groups[2], (c) => c * 0.5)],
    ]);
    const plan = planByCurves(input(735), curves)!;
    expect(Math.abs(plan.params - 735)).toBeLessThanOrEqual(5);
    expect(plan.removals.find((r) => r.group.id === 2)!.units.length).toBe(7);
  });

  test('aligned widths: a group stops only where its kept width is a multiple of 8, unless no such plan lands in the window', () => {
    const curves = new Map(groups.slice(0, 2).map((g, k) => [g, curve(g, (c) => c * (k + 1))]));
    const aligned = planByCurves(input(160, { groups: groups.slice(0, 2), align: 8 }), curves)!;
    for (const r of aligned.removals) expect((r.group.units.length - r.units.length) % 8).toBe(0);
    const odd = planByCurves(input(150, { groups: groups.slice(0, 2), align: 8 }), curves)!;
    expect(Math.abs(odd.params - 150)).toBeLessThanOrEqual(5);
  });
});

test('the probe gives every sample one removal, in turn, and shares samples when removals outnumber them', () => {
  expect(probeAssignment(5, 2)).toEqual([[0], [1], [0], [1], [0]]);
  expect(probeAssignment(2, 5)).toEqual([[0, 2, 4], [1, 3]]);
});

test("the closed form tracks the damage it stands for: on the trained LLaMA fixture, each group's estimated loss at a quarter, half and three quarters of its units ranks as the measured loss does", async () => {
  // The same check for every fixture is in docs/measured.md (npm run bench -- quality).
  const { points, spearman } = await damageTracking('llama');
  expect(points.length).toBeGreaterThanOrEqual(6);
  expect(spearman).toBeGreaterThanOrEqual(0.9);
});

test("a damping is checked once per kind of consumer: the same op and weight shape, read on as many samples, takes the first one's", async () => {
  const consumer = (name: string, opType = 'MatMul') => ({ node: { name, opType }, weight: `${name}.weight` }) as never;
  const dampings: Dampings = new Map();
  const checked: string[] = [];
  const choose = (name: string, value: number | null) => async () => (checked.push(name), value);
  expect(await dampingOf(dampings, consumer('layer0.down'), 3072, 768, 8192, choose('layer0.down', 1e-3))).toBe(1e-3);
  // Another layer's down projection: no check of its own.
  expect(await dampingOf(dampings, consumer('layer1.down'), 3072, 768, 8192, choose('layer1.down', 1))).toBe(1e-3);
  // Another shape, another op, or another sample count: checked.
  expect(await dampingOf(dampings, consumer('layer0.out'), 768, 768, 8192, choose('layer0.out', null))).toBeNull();
  expect(await dampingOf(dampings, consumer('conv', 'Conv'), 3072, 768, 8192, choose('conv', 1))).toBe(1);
  expect(await dampingOf(dampings, consumer('cls'), 3072, 768, 64, choose('cls', 1e-6))).toBe(1e-6);
  // A consumer seen before keeps its own, whatever its shape now (a later step pruned it).
  expect(await dampingOf(dampings, consumer('layer1.down'), 2048, 768, 8192, choose('again', 1))).toBe(1e-3);
  expect(checked).toEqual(['layer0.down', 'layer0.out', 'conv', 'cls']);
});

test("a pass collects every other batch's sums (a second covariance per input) only for the first consumer of each kind, whose damping the others take", async () => {
  const base = OnnxModel.read(path.join(__dirname, 'fixtures', 'gpt2.onnx'));
  const set = loadCalibration(path.join(__dirname, '..', 'calibration', 'gpt2'), base);
  const tap = await firstStatisticsTap(base, { target: 0.2, structures: ['ffn', 'heads'], importance: 'activation', compensate: 'reconstruct', allocation: 'auto', calibration: calibrationFeeds(set), memory: newPruneMemory() });
  const session = await createSession(tap!.model);
  try {
    for (const feeds of calibrationFeeds(set, 2)()) tap!.add(await session.run(feeds, tap!.outputs));
  } finally {
    await session.release();
  }
  const stats = [...tap!.collected().stats.values()].filter((s) => s.gram);
  // Each layer's attention output and FFN down projection: two kinds, one of each per layer.
  expect(stats.length).toBeGreaterThanOrEqual(4);
  const widths = stats.filter((s) => s.half).map((s) => s.sum.length);
  expect(widths.sort((a, b) => a - b)).toEqual([...new Set(stats.map((s) => s.sum.length))].sort((a, b) => a - b));
});

/** y = x · w, x [n, c] and w [c, 2]: a consumer whose input covariance is x's. */
function matMulOf(c: number): OnnxModel {
  return OnnxModel.fromBytes(encode(
    model({
      nodes: [node('MatMul', ['x', 'w'], ['y'])],
      inputs: [valueInfo('x', T.FLOAT, ['n', c])],
      outputs: [valueInfo('y', T.FLOAT, ['n', 2])],
      initializers: [floatTensor('w', [c, 2])],
    }),
  ), `matmul-${c}.onnx`);
}

test('covariances of wide inputs are summed by blocks on and above the diagonal, centered batch by batch, and equal Σ (x − μ)(x − μ)ᵀ computed whole', async () => {
  // 1700 channels: three blocks a side, the last narrower; two batches of 40 rows.
  const c = 1700;
  const base = matMulOf(c);
  const rows = (seed: number) => Float32Array.from({ length: 40 * c }, (_, i) => Math.sin(i * 0.37 + seed) * (1 + (i % c) / c));
  const data = [rows(1), rows(2)].map((x) => ({ x: new ort.Tensor('float32', x, [40, c]) }));
  const request = { tensor: 'x', axis: 1, rank: 2, channels: c, type: 'float32', gram: true, half: true } as const;
  const { stats } = await collectStats(base, [request], () => data);
  const s = stats.get('x')!;
  const meanOf = (batches: Float32Array[]) => {
    const mean = new Float64Array(c);
    for (const x of batches) for (let r = 0; r < 40; r++) for (let i = 0; i < c; i++) mean[i] += x[r * c + i] / (40 * batches.length);
    return mean;
  };
  const all = data.map((b) => b.x.data as Float32Array);
  const mean = meanOf(all);
  const expected = new Float64Array(c * c);
  for (const x of all) {
    for (let r = 0; r < 40; r++) for (let i = 0; i < c; i++) for (let j = 0; j < c; j++) expected[i * c + j] += (x[r * c + i] - mean[i]) * (x[r * c + j] - mean[j]);
  }
  let worst = 0;
  for (let i = 0; i < c * c; i++) worst = Math.max(worst, Math.abs(s.gram![i] - expected[i]) / (1 + Math.abs(expected[i])));
  expect(worst).toBeLessThan(1e-4);
  // The half holds the second batch alone, centered on its own mean, symmetric like the whole.
  const x2 = all[1];
  const mean2 = meanOf([x2]);
  for (const [i, j] of [[0, 1699], [1699, 0], [800, 5], [1200, 1650]]) {
    let v = 0;
    for (let r = 0; r < 40; r++) v += (x2[r * c + i] - mean2[i]) * (x2[r * c + j] - mean2[j]);
    expect(s.half!.gram[i * c + j]).toBeCloseTo(v, 3);
  }
});

test('a covariance of values far from zero keeps its small variances: its rows are centered before they are summed', async () => {
  // 64 channels around 5, with spreads down to 10⁻³ (variance 10⁻⁶), in 4 batches of 256 rows,
  // the batches' means apart: Σ x xᵀ less μμᵀ in float32 loses these variances entirely.
  const c = 64;
  const base = matMulOf(c);
  const spread = (j: number) => 10 ** (-3 + (2 * j) / c);
  const batch = (b: number) => Float32Array.from({ length: 256 * c }, (_, i) => 5 + 0.01 * b + spread(i % c) * Math.sin(i * 0.61 + b));
  const data = [0, 1, 2, 3].map((b) => ({ x: new ort.Tensor('float32', batch(b), [256, c]) }));
  const { stats } = await collectStats(base, [{ tensor: 'x', axis: 1, rank: 2, channels: c, type: 'float32', gram: true, half: false }], () => data);
  const s = stats.get('x')!;
  const cov = covariance(s.count, s.gram!);
  // Each channel's variance as computed in float64 from the rows themselves.
  const rows = data.flatMap((d) => [...Array(256).keys()].map((r) => (d.x.data as Float32Array).subarray(r * c, (r + 1) * c)));
  for (const j of [0, 17, 40, 63]) {
    const m = rows.reduce((t, r) => t + r[j], 0) / rows.length;
    const v = rows.reduce((t, r) => t + (r[j] - m) ** 2, 0) / rows.length;
    expect(Math.abs(cov[j * c + j] / v - 1)).toBeLessThan(1e-3);
  }
});
