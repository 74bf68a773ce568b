// SlimGPT (Ling, Wang and Liu, "SlimGPT: Layer-wise Structured Pruning for Large Language
// Models", NeurIPS 2024, arXiv 2412.18110) as a baseline of `npm run bench -- quality`: a
// re-implementation of its reference code's method, not prune-gate's engine. Layer by layer, in
// depth order, on the model as the layers before have left it:
//   - each consumer's (the weight op reading the group's channels) input Hessian
//     H = XᵀX / samples (uncentered, as the paper's), dampened by 1 % of its mean diagonal;
//   - heads: batched greedy, one head per round, each scored by the grouped Cholesky of its
//     block of H⁻¹ (Σ_j ||W_j||² / L_jj², L the Cholesky factor of that block), removed with the
//     Optimal-Brain-Surgeon update of the kept columns;
//   - FFN neurons (and conv channels): columns scored by ||W_j||² / [H⁻¹]_jj, removed in
//     shrinking groups ("Dynamic Group Size") with the same OBS update;
//   - the Incremental Pruning Ratio: each layer's ratio grows with ln(1 + layer) from the first
//     layer to the last (the last five times the first, the reference's 0.06 → 0.3), scaled so
//     that the parameters removed are the target's.
// The model is sliced by the engine's own plan/apply machinery (src/prune/apply.ts), so the
// written model is a valid ONNX model like any of prune-gate's.
import { Analysis, Group, analyze } from '../../src/graph/analysis';
import { countParams } from '../../src/graph/cost';
import { OnnxModel } from '../../src/onnx/model';
import { Feeds } from '../../src/onnx/runtime';
import { fromFloat32, toFloat32 } from '../../src/onnx/tensor';
import { applyRemoval } from '../../src/prune/apply';
import { ParamLedger, Removal } from '../../src/prune/plan';
import { ChannelStats, Consumer, collectStats, findConsumers, statsRequests } from '../../src/prune/stats';
import type { Structure } from '../../src/prune/types';

/** The reference's dampening: this fraction of the Hessian's mean diagonal. */
const PERCDAMP = 0.01;
/** The Incremental Pruning Ratio's last layer over its first (the reference's defaults, 0.3 / 0.06). */
const LAST_OVER_FIRST = 5;
/** The FFN width the reference's group sizes (512, 64, 1024 columns) were set for (LLaMA-7B's). */
const REFERENCE_WIDTH = 11008;

/** One consumer of a layer: its weight as a k x n matrix (row j: what input channel j feeds), its input Hessian (k x k). */
export interface ObsConsumer {
  w: Float64Array;
  k: number;
  n: number;
  h: Float64Array;
  /** The input channels of each unit of the group. */
  units: number[][];
}

/** Lower Cholesky factor of a symmetric positive definite m x m matrix, or undefined. */
function cholesky(a: Float64Array, m: number): Float64Array | undefined {
  const l = new Float64Array(m * m);
  for (let i = 0; i < m; i++) {
    for (let j = 0; j <= i; j++) {
      let sum = a[i * m + j];
      for (let q = 0; q < j; q++) sum -= l[i * m + q] * l[j * m + q];
      if (i === j) {
        if (!(sum > 0)) return undefined;
        l[i * m + i] = Math.sqrt(sum);
      } else l[i * m + j] = sum / l[j * m + j];
    }
  }
  return l;
}

/** The inverse of a symmetric positive definite matrix through its Cholesky factor (L⁻ᵀL⁻¹). */
function inverseSpd(a: Float64Array, m: number): Float64Array {
  const l = cholesky(a, m);
  if (!l) throw new Error('internal: the dampened Hessian is not positive definite');
  const x = new Float64Array(m * m); // L⁻¹, lower
  for (let c = 0; c < m; c++) {
    for (let i = c; i < m; i++) {
      let sum = i === c ? 1 : 0;
      for (let q = c; q < i; q++) sum -= l[i * m + q] * x[q * m + c];
      x[i * m + c] = sum / l[i * m + i];
    }
  }
  const out = new Float64Array(m * m);
  for (let i = 0; i < m; i++) {
    for (let j = 0; j <= i; j++) {
      let sum = 0;
      for (let q = i; q < m; q++) sum += x[q * m + i] * x[q * m + j];
      out[i * m + j] = out[j * m + i] = sum;
    }
  }
  return out;
}

/** H with the reference's treatment: dead inputs (zero diagonal) get 1 and their weights 0; percdamp x mean diagonal added. */
function dampened(c: ObsConsumer, percdamp = PERCDAMP): { h: Float64Array; w: Float64Array } {
  const { k, n } = c;
  const h = Float64Array.from(c.h);
  const w = Float64Array.from(c.w);
  for (let j = 0; j < k; j++) {
    if (h[j * k + j] !== 0) continue;
    h[j * k + j] = 1;
    w.fill(0, j * n, (j + 1) * n);
  }
  let mean = 0;
  for (let j = 0; j < k; j++) mean += h[j * k + j] / k;
  for (let j = 0; j < k; j++) h[j * k + j] += percdamp * mean;
  return { h, w };
}

/**
 * One layer of SlimGPT: removes `count` of the units (heads: units of several channels; FFN
 * neurons and channels: of one) from every consumer, greedily, each round's units scored on the
 * Hessian inverse as the earlier rounds left it, the kept columns updated by OBS. Returns the
 * removed units (in the order they went) and each consumer's weight after (removed rows zero).
 */
export function slimgptLayer(consumers: ObsConsumer[], count: number, percdamp = PERCDAMP): { removed: number[]; weights: Float64Array[] } {
  const units = consumers[0]?.units.length ?? 0;
  const state = consumers.map((c) => ({ c, ...dampened(c, percdamp) }));
  const grouped = consumers.some((c) => c.units.some((u) => u.length > 1));
  const gone = new Set<number>();
  const removed: number[] = [];
  // Dynamic Group Size (FFN): the first groups large, then smaller, as the reference's
  // (target − 512) / 2, halving with 512 taken off each round, at least 64 and at most 1024 columns,
  // those constants scaled from LLaMA-7B's FFN width to this layer's.
  const scale = Math.max(1, ...consumers.map((c) => c.k)) / REFERENCE_WIDTH;
  let blocksize = Math.floor((count - 512 * scale) / 2);
  while (removed.length < count) {
    const score = new Float64Array(units);
    const hinvs = state.map((s) => inverseSpd(s.h, s.c.k));
    state.forEach((s, i) => {
      const { k, n } = s.c;
      const hinv = hinvs[i];
      s.c.units.forEach((ch, u) => {
        if (gone.has(u) || ch.length === 0) return;
        // Grouped Cholesky: the head's block of H⁻¹ factored, its squared diagonal in place of H⁻¹'s.
        let diag: number[];
        if (ch.length > 1) {
          const block = new Float64Array(ch.length * ch.length);
          ch.forEach((a, r) => ch.forEach((b, q) => (block[r * ch.length + q] = hinv[a * k + b])));
          const l = cholesky(block, ch.length);
          diag = l ? ch.map((_, r) => l[r * ch.length + r] ** 2) : ch.map((a) => hinv[a * k + a]);
        } else diag = [hinv[ch[0] * k + ch[0]]];
        ch.forEach((j, r) => {
          let w2 = 0;
          for (let o = 0; o < n; o++) w2 += s.w[j * n + o] ** 2;
          score[u] += w2 / diag[r];
        });
      });
    });
    const live = [...Array(units).keys()].filter((u) => !gone.has(u)).sort((a, b) => score[a] - score[b]);
    const take = grouped ? 1 : Math.min(count - removed.length, Math.round(Math.max(blocksize, 64 * scale, 1)), Math.max(1, Math.round(1024 * scale)));
    const picked = live.slice(0, Math.max(1, take));
    blocksize = Math.floor((blocksize - 512 * scale) / 2);
    state.forEach((s, i) => obsRemove(s, hinvs[i], picked.flatMap((u) => s.c.units[u])));
    for (const u of picked) {
      gone.add(u);
      removed.push(u);
    }
  }
  return { removed, weights: state.map((s) => s.w) };
}

/**
 * The OBS removal of columns `cols` (in this order) of one consumer, as the reference does it:
 * with H⁻¹ = UᵀU over the columns cols first, then the rest, each removed column's error
 * E_i = W_i / U_ii is taken out of the columns after it (W_t −= E_i U_it), the removed columns
 * zeroed; then H loses them (their rows and columns 0, their diagonal 1).
 */
function obsRemove(s: { c: ObsConsumer; h: Float64Array; w: Float64Array }, hinv: Float64Array, cols: number[]): void {
  const { k, n } = s.c;
  const first = new Set(cols);
  const order = [...cols, ...[...Array(k).keys()].filter((j) => !first.has(j))];
  const p = new Float64Array(k * k);
  order.forEach((a, r) => order.forEach((b, q) => (p[r * k + q] = hinv[a * k + b])));
  const l = cholesky(p, k);
  if (!l) throw new Error('internal: the Hessian inverse is not positive definite');
  const u = (r: number, q: number) => l[q * k + r]; // U = Lᵀ
  const err = new Float64Array(n);
  for (let r = 0; r < cols.length; r++) {
    const j = order[r];
    for (let o = 0; o < n; o++) err[o] = s.w[j * n + o] / u(r, r);
    for (let q = r; q < k; q++) {
      const f = u(r, q);
      if (f === 0) continue;
      const t = order[q];
      for (let o = 0; o < n; o++) s.w[t * n + o] -= err[o] * f;
    }
  }
  for (const j of cols) {
    s.w.fill(0, j * n, (j + 1) * n);
    for (let q = 0; q < k; q++) s.h[j * k + q] = s.h[q * k + j] = 0;
    s.h[j * k + j] = 1;
  }
}

/**
 * The Incremental Pruning Ratio: layer i of L gets first · (1 + (LAST_OVER_FIRST − 1) · ln(1 + i) / ln L),
 * at most `max`. `first` is what makes the removal the target's (found by the caller).
 */
export function incrementalRatios(layers: number, first: number, max = 0.95): number[] {
  if (layers <= 1) return [Math.min(max, first * (1 + LAST_OVER_FIRST) / 2)];
  return [...Array(layers).keys()].map((i) => Math.min(max, first * (1 + ((LAST_OVER_FIRST - 1) * Math.log(1 + i)) / Math.log(layers))));
}

/** A consumer's weight as a k x n matrix (row j: every element whose input-channel index is j), and back. */
function asRows(dims: number[], weightIn: number) {
  const strideIn = dims.slice(weightIn + 1).reduce((a, b) => a * b, 1);
  const k = dims[weightIn];
  const total = dims.reduce((a, b) => a * b, 1);
  const n = total / k;
  const at = (i: number) => {
    const j = Math.floor(i / strideIn) % k;
    return j * n + (i % strideIn) + Math.floor(i / (strideIn * k)) * strideIn;
  };
  return { k, n, at, total };
}

/** Depth of a group: where its first consumer is in the graph's order. */
function depth(analysis: Analysis, g: Group): number {
  const nodes = findConsumers(analysis, g).map((c) => analysis.index.nodes.indexOf(c.node));
  return nodes.length ? Math.min(...nodes) : analysis.index.nodes.length;
}

/** The units each group loses: its kind's incremental ratios, `first` found by bisection so the parameters removed are `target`'s. */
function plannedCounts(analysis: Analysis, groups: Group[], targetParams: number): Map<string, number> {
  const byKind = new Map<Structure, Group[]>();
  for (const g of groups) byKind.set(g.kind, [...(byKind.get(g.kind) ?? []), g]);
  const counts = (first: number) => {
    const out = new Map<string, number>();
    for (const gs of byKind.values()) {
      const ratios = incrementalRatios(gs.length, first);
      gs.forEach((g, i) => out.set(g.where, Math.min(g.units.length - 1, Math.round(ratios[i] * g.units.length))));
    }
    return out;
  };
  const removedBy = (c: Map<string, number>) => {
    const ledger = new ParamLedger(analysis.space.slots, (t) => analysis.model.constantInfo(t)?.dims);
    let sum = 0;
    for (const g of groups) for (const u of g.units.slice(0, c.get(g.where) ?? 0)) sum += ledger.take(u);
    return sum;
  };
  let [lo, hi] = [0, 1];
  for (let it = 0; it < 40; it++) {
    const mid = (lo + hi) / 2;
    if (removedBy(counts(mid)) < targetParams) lo = mid;
    else hi = mid;
  }
  // The closer of the two bracketing plans.
  const [a, b] = [counts(lo), counts(hi)];
  return Math.abs(removedBy(a) - targetParams) <= Math.abs(removedBy(b) - targetParams) ? a : b;
}

export interface SlimgptResult {
  model: OnnxModel;
  paramsBefore: number;
  paramsAfter: number;
  /** Units removed per group, in the order the layers were pruned. */
  layers: { where: string; kind: Structure; before: number; removed: number; consumers: number }[];
}

/**
 * Prunes `target` of the model's parameters the SlimGPT way (see the top of this file), over the
 * `structures` given, with the calibration batches `calibration`.
 */
export async function slimgptPrune(base: OnnxModel, target: number, structures: Structure[], calibration: () => Iterable<Feeds>): Promise<SlimgptResult> {
  const paramsBefore = countParams(base);
  const first = await analyze(base);
  const groups = first.groups.filter((g) => structures.includes(g.kind));
  const order = groups.map((g) => ({ g, d: depth(first, g) })).sort((a, b) => a.d - b.d).map((x) => x.g);
  const counts = plannedCounts(first, order, target * paramsBefore);
  let model = base;
  const layers: SlimgptResult['layers'] = [];
  for (const planned of order) {
    const count = counts.get(planned.where) ?? 0;
    if (count <= 0) continue;
    // The model as the layers before left it: its own analysis and Hessians.
    const analysis = await analyze(model);
    const g = analysis.groups.find((x) => x.kind === planned.kind && x.where === planned.where);
    if (!g) continue;
    const consumers = findConsumers(analysis, g).filter((c) => {
      const dims = analysis.model.constantInfo(c.weight)?.dims;
      return dims && dims[c.use.weightIn] === c.inputSlot.size && analysis.index.consumersOf(c.weight).length === 1;
    });
    const collected = consumers.length ? await collectStats(model, statsRequests(consumers, true, () => false), calibration) : { stats: new Map<string, ChannelStats>() };
    const problems: { c: Consumer; o: ObsConsumer; dims: number[]; dtype: number }[] = [];
    for (const c of consumers) {
      const s = collected.stats.get(c.input);
      const wt = analysis.model.constant(c.weight);
      if (!s?.gram || !wt) continue;
      const { k, n, at, total } = asRows(wt.dims, c.use.weightIn);
      const values = toFloat32(wt);
      const w = new Float64Array(total);
      for (let i = 0; i < total; i++) w[at(i)] = values[i];
      // SlimGPT's Hessian is the raw 2XᵀX/n (its scale does not matter): the centered sums
      // collectStats gives (ChannelStats.gram) plus the mean's outer product.
      const count = Math.max(1, s.count);
      const h = new Float64Array(s.gram.length);
      for (let i = 0; i < k; i++) for (let j = 0; j < k; j++) h[i * k + j] = s.gram[i * k + j] / count + (s.sum[i] / count) * (s.sum[j] / count);
      problems.push({ c, o: { w, k, n, h, units: g.units.map((u) => u.indices.get(c.inputSlot.id) ?? []) }, dims: wt.dims, dtype: wt.dtype });
    }
    let removedUnits: number[];
    let weights: Float64Array[] = [];
    if (problems.length > 0) ({ removed: removedUnits, weights } = slimgptLayer(problems.map((p) => p.o), count));
    else removedUnits = [...g.units.keys()].slice(0, count); // no consumer to measure: the first units (`consumers: 0` in `layers`)
    const ledger = new ParamLedger(analysis.space.slots, (t) => analysis.model.constantInfo(t)?.dims);
    const units = removedUnits.map((u) => g.units[u]);
    const removal: Removal = { group: g, units, params: units.reduce((sum, u) => sum + ledger.take(u), 0) };
    const applied = applyRemoval(analysis, [removal], (copy) => {
      problems.forEach((p, i) => {
        const { at, total } = asRows(p.dims, p.c.use.weightIn);
        const out = new Float32Array(total);
        for (let q = 0; q < total; q++) out[q] = weights[i][at(q)];
        copy.setConstant(p.c.weight, fromFloat32(out, p.dtype, p.dims));
      });
    });
    model = applied.model;
    layers.push({ where: g.where, kind: g.kind, before: g.units.length, removed: units.length, consumers: problems.length });
  }
  return { model, paramsBefore, paramsAfter: countParams(model), layers };
}
