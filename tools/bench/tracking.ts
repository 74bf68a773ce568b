// Does the closed form track the damage it stands for? For every prunable group of a trained
// fixture, and a few unit counts of it, the loss the engine estimates (the group's damage curve
// in closed form, put in the loss's units by the probe pass: estimatedLosses) beside the loss
// measured by running the model with that group alone pruned at that count and compensated, on
// the calibration set; their rank correlation (Spearman) over all points. Used by
// `npm run bench -- quality` and by test/obs.test.ts.
import * as path from 'path';
import { calibrationFeeds, loadCalibration } from '../../src/eval/calibration';
import { Evaluator } from '../../src/eval/evaluator';
import { Group, analyze } from '../../src/graph/analysis';
import { countParams } from '../../src/graph/cost';
import { DenseMath } from '../../src/onnx/linalg';
import { OnnxModel } from '../../src/onnx/model';
import { RUN_PASSES } from '../../src/prune';
import { estimatedLosses } from '../../src/prune/allocate';
import { applyRemoval } from '../../src/prune/apply';
import { applyCompensation, compensation } from '../../src/prune/compensate';
import { PassLedger } from '../../src/prune/ledger';
import { InverseCovariances, refittable } from '../../src/prune/obs';
import { PlanInput, planCounts } from '../../src/prune/plan';
import { collectStats, findConsumers, statsRequests } from '../../src/prune/stats';

const ROOT = path.resolve(__dirname, '..', '..');

export interface TrackedPoint {
  group: string;
  count: number;
  units: number;
  estimated: number;
  measured: number;
}

/** Spearman's rank correlation (average ranks for ties). */
export function spearman(a: number[], b: number[]): number {
  const ranks = (v: number[]) => {
    const order = v.map((x, i) => [x, i]).sort((p, q) => p[0] - q[0]);
    const r = new Array<number>(v.length);
    for (let i = 0; i < order.length; ) {
      let j = i;
      while (j + 1 < order.length && order[j + 1][0] === order[i][0]) j++;
      for (let k = i; k <= j; k++) r[order[k][1]] = (i + j) / 2;
      i = j + 1;
    }
    return r;
  };
  const [ra, rb] = [ranks(a), ranks(b)];
  const mean = (v: number[]) => v.reduce((t, x) => t + x, 0) / v.length;
  const [ma, mb] = [mean(ra), mean(rb)];
  let [num, da, db] = [0, 0, 0];
  for (let i = 0; i < ra.length; i++) {
    num += (ra[i] - ma) * (rb[i] - mb);
    da += (ra[i] - ma) ** 2;
    db += (rb[i] - mb) ** 2;
  }
  return num / Math.sqrt(da * db);
}

/** Estimated and measured losses of `fixture`'s groups at `shares` of their units, for a step of `target`. */
export async function damageTracking(fixture: string, target = 0.3, shares = [0.25, 0.5, 0.75]): Promise<{ points: TrackedPoint[]; spearman: number }> {
  const base = OnnxModel.read(path.join(ROOT, 'test', 'fixtures', `${fixture}.onnx`));
  const set = loadCalibration(path.join(ROOT, 'calibration', fixture), base);
  const evaluator = await Evaluator.create(base, set, { latency: { warmup: 0, runs: 1 } });
  try {
    const analysis = await analyze(base);
    const groups = analysis.groups;
    const consumers = new Map(groups.map((g) => [g, findConsumers(analysis, g)]));
    const readers = (t: string) => analysis.index.consumersOf(t).length;
    const all = [...consumers.values()].flat();
    const requests = [...statsRequests(all.filter((c) => refittable(c, base, readers)), true), ...statsRequests(all.filter((c) => !refittable(c, base, readers)), false)];
    const { stats } = await collectStats(base, requests, calibrationFeeds(set));
    const params = countParams(base);
    const plan: PlanInput = {
      groups,
      scores: new Map(groups.map((g) => [g, new Float64Array(g.units.length)])),
      targetParams: target * params,
      slack: 0.0025 * params,
      slots: analysis.space.slots,
      paramDims: (t) => analysis.model.constantInfo(t)?.dims,
    };
    const inverses = new InverseCovariances(DenseMath.shared());
    const dampings = new Map<string, number | null>();
    const costs = await estimatedLosses({
      model: base,
      analysis,
      plan,
      consumers,
      stats,
      allocation: 'auto',
      compensate: 'auto',
      damage: evaluator.damageMeasure(),
      measured: true,
      passes: new PassLedger(RUN_PASSES),
      inverses,
      dampings,
      sensitivities: new Map(),
      probed: {},
      effort: { alternative: true, probe: true, share: 1 },
      build: () => Promise.reject(new Error('not built here')),
      log: () => undefined,
    });
    const points: TrackedPoint[] = [];
    for (const g of groups as Group[]) {
      const curve = costs.get(g)!;
      const counts = [...new Set(shares.map((s) => Math.min(curve.order.length, Math.max(1, Math.round(s * g.units.length)))))];
      for (const count of counts) {
        const { removals } = planCounts({ ...plan, groups: [g] }, new Map([[g, curve.order]]), new Map([[g, count]]));
        const edits = await compensation(analysis, removals, consumers, stats, 'auto', dampings, inverses);
        const pruned = applyRemoval(analysis, removals, (copy) => applyCompensation(copy, analysis, edits.edits)).model;
        points.push({ group: g.where, count, units: g.units.length, estimated: curve.cost[count], measured: await evaluator.loss(pruned, 1) });
      }
    }
    return { points, spearman: spearman(points.map((p) => p.estimated), points.map((p) => p.measured)) };
  } finally {
    await evaluator.close();
  }
}
