import { Analysis } from '../graph/analysis';
import { Node, nodeLabel } from '../graph/graph';
import { GraphView, NormStatistics, ruleOf } from '../graph/rules';
import { toNumbers } from '../onnx/tensor';
import { OnnxModel } from '../onnx/model';
import { Feeds } from '../onnx/runtime';
import { fromFloat32, toFloat32 } from '../onnx/tensor';
import { Removal } from './plan';
import { sessionExposing } from './stats';

/**
 * A normalization over a layer's own width (a LayerNorm after a Linear) computes its mean and
 * variance over the channels that remain, so every kept channel's output moves when others go.
 * Per kept channel j, with z_j the full-width normalized value and z'_j the pruned one, the norm
 * gave y_j = γ_j z_j + β_j; the least-squares affine map of z'_j onto y_j over the calibration set
 * is the new scale and bias: γ'_j = γ_j Cov(z_j, z'_j) / Var(z'_j), β'_j = β_j + γ_j E[z_j] − γ'_j E[z'_j]
 * (an RMSNorm has no bias and no mean: γ'_j = γ_j E[z_j z'_j] / E[z'_j²]).
 */
export interface NormRefit {
  node: Node;
  stats: NormStatistics;
  /** Channels of the normalized axis that stay. */
  keep: Uint8Array;
}

/** Sums over the calibration vectors, per channel of the width: z, z', z², z'², z z'. */
export interface NormSums {
  count: number;
  z: Float64Array;
  p: Float64Array;
  zz: Float64Array;
  pp: Float64Array;
  zp: Float64Array;
}

/** The normalizations whose width loses channels in this plan, when their rule says how they compute statistics. */
export function normsToRefit(analysis: Analysis, removals: Removal[]): NormRefit[] {
  const removedBySlot = new Map<number, Set<number>>();
  for (const r of removals) {
    for (const u of r.units) {
      for (const [slot, indices] of u.indices) {
        let set = removedBySlot.get(slot);
        if (!set) removedBySlot.set(slot, (set = new Set()));
        for (const i of indices) set.add(i);
      }
    }
  }
  const { model, index, traces } = analysis;
  const graph: GraphView = {
    rank: (t) => traces[0].get(t)?.dims.length ?? model.constantInfo(t)?.dims.length,
    consumers: (t) => index.consumersOf(t),
    producer: (t) => index.producer.get(t),
    scalar(t) {
      const c = model.isConstant(t) ? model.constant(t) : undefined;
      return c && c.dims.reduce((a, b) => a * b, 1) === 1 ? toNumbers(c)[0] : undefined;
    },
    isConstant: (t) => model.isConstant(t),
  };
  const out: NormRefit[] = [];
  for (const node of index.nodes) {
    const stats = ruleOf(node)?.statistics?.(node, graph);
    const slot = stats && analysis.space.slot(stats.input, stats.axis);
    const removed = slot && removedBySlot.get(slot.id);
    if (!stats || !slot || !removed || removed.size === 0) continue;
    // Parameters it shares with other ops are left as they are.
    if ([stats.scale, stats.bias].some((p) => p && (!model.isConstant(p) || index.consumersOf(p).length !== 1))) continue;
    const keep = new Uint8Array(slot.size).fill(1);
    for (const i of removed) keep[i] = 0;
    out.push({ node, stats, keep });
  }
  return out;
}

/**
 * Every refit norm's input folded into its sums: from `kept`, the inputs the statistics pass kept
 * whole, when it holds them all; else the base model runs over the calibration set once.
 */
export async function measureNorms(
  model: OnnxModel,
  refits: NormRefit[],
  calibration: () => AsyncIterable<Feeds> | Iterable<Feeds>,
  kept: Map<string, Float32Array[]>,
  pass: (run: () => Promise<NormSums[]>) => Promise<NormSums[]>,
): Promise<NormSums[]> {
  const empty = () =>
    refits.map((r) => ({
      count: 0,
      ...Object.fromEntries(['z', 'p', 'zz', 'pp', 'zp'].map((k) => [k, new Float64Array(r.keep.length)])),
    })) as NormSums[];
  if (refits.every((r) => kept.has(r.stats.input))) {
    const sums = empty();
    refits.forEach((r, k) => {
      for (const data of kept.get(r.stats.input)!) accumulate(sums[k], r, data);
    });
    return sums;
  }
  return pass(() => normPass(model, refits, calibration, empty()));
}

/** The norms' inputs exposed and folded into `sums`, batch by batch. */
async function normPass(model: OnnxModel, refits: NormRefit[], calibration: () => AsyncIterable<Feeds> | Iterable<Feeds>, sums: NormSums[]): Promise<NormSums[]> {
  const names = [...new Set(refits.map((r) => r.stats.input))];
  const session = await sessionExposing(model, names);
  try {
    for await (const feeds of calibration()) {
      const result = await session.run(feeds, names);
      refits.forEach((r, k) => accumulate(sums[k], r, result[r.stats.input].data as Float32Array));
    }
  } finally {
    await session.release();
  }
  return sums;
}

function accumulate(s: NormSums, r: NormRefit, data: Float32Array): void {
  const c = r.keep.length;
  const kept = r.keep.reduce((a, b) => a + b, 0);
  for (let base = 0; base + c <= data.length; base += c) {
    let [sum, sumKept, sq, sqKept] = [0, 0, 0, 0];
    for (let j = 0; j < c; j++) {
      const v = data[base + j];
      sum += v;
      sq += v * v;
      if (r.keep[j]) {
        sumKept += v;
        sqKept += v * v;
      }
    }
    const [mean, meanKept] = r.stats.rms ? [0, 0] : [sum / c, sumKept / kept];
    const scale = 1 / Math.sqrt(Math.max(0, sq / c - mean * mean) + r.stats.epsilon);
    const scaleKept = 1 / Math.sqrt(Math.max(0, sqKept / kept - meanKept * meanKept) + r.stats.epsilon);
    for (let j = 0; j < c; j++) {
      if (!r.keep[j]) continue;
      const z = (data[base + j] - mean) * scale;
      const p = (data[base + j] - meanKept) * scaleKept;
      s.z[j] += z;
      s.p[j] += p;
      s.zz[j] += z * z;
      s.pp[j] += p * p;
      s.zp[j] += z * p;
    }
    s.count++;
  }
}

/**
 * Writes the refit scale and bias into `model` (a copy about to be sliced; the removed entries
 * go with the slicing) and says, per norm, how far its kept outputs moved and how far they move
 * after the refit (mean squared error over the variance of the full-width outputs, on the
 * calibration set).
 */
export function applyNormRefits(model: OnnxModel, refits: NormRefit[], sums: NormSums[]): string[] {
  const notes: string[] = [];
  refits.forEach((r, k) => {
    const s = sums[k];
    // The copy keeps the analysed model's tensor names.
    const [scaleName, biasName] = [r.stats.scale, r.stats.bias];
    const scaleT = model.constant(scaleName);
    const biasT = biasName ? model.constant(biasName) : undefined;
    if (!scaleT || scaleT.dims.length !== 1 || scaleT.dims[0] !== r.keep.length || s.count === 0) return;
    if (biasName && (!biasT || biasT.dims.length !== 1 || biasT.dims[0] !== r.keep.length)) return;
    const gamma = toFloat32(scaleT);
    const beta = biasT ? toFloat32(biasT) : undefined;
    const n = s.count;
    let [variance, before, after] = [0, 0, 0];
    for (let j = 0; j < r.keep.length; j++) {
      if (!r.keep[j]) continue;
      const g = gamma[j];
      const [ez, ep] = [s.z[j] / n, s.p[j] / n];
      const varZ = Math.max(0, s.zz[j] / n - (beta || !r.stats.rms ? ez * ez : 0));
      variance += g * g * varZ;
      // Unchanged parameters: the output moves by γ (z' − z).
      before += g * g * ((s.pp[j] - 2 * s.zp[j] + s.zz[j]) / n);
      if (beta && !r.stats.rms) {
        const covZP = s.zp[j] / n - ez * ep;
        const varP = s.pp[j] / n - ep * ep;
        // A width cut to one channel normalizes to a constant: the best is its mean output.
        const g2 = varP > 1e-12 ? (g * covZP) / varP : 0;
        beta[j] = beta[j] + g * ez - g2 * ep;
        gamma[j] = g2;
        after += g * g * Math.max(0, varZ - (varP > 1e-12 ? (covZP * covZP) / varP : 0));
      } else {
        const [ezz, epp, ezp] = [s.zz[j] / n, s.pp[j] / n, s.zp[j] / n];
        const g2 = epp > 1e-12 ? (g * ezp) / epp : 0;
        gamma[j] = g2;
        after += g * g * Math.max(0, ezz - (epp > 1e-12 ? ezp ** 2 / epp : 0));
      }
    }
    model.setConstant(scaleName, fromFloat32(gamma, scaleT.dtype, scaleT.dims));
    if (biasName && beta && biasT) model.setConstant(biasName, fromFloat32(beta, biasT.dtype, biasT.dims));
    const pct = (v: number) => `${((100 * v) / Math.max(variance, 1e-30)).toFixed(2)} %`;
    notes.push(`${nodeLabel(r.node)}: statistics over ${r.keep.reduce((a, b) => a + b, 0)} of ${r.keep.length} channels; kept outputs moved by ${pct(before)} of their variance, ${pct(after)} after refitting its scale${beta ? ' and bias' : ''}`);
  });
  return notes;
}
