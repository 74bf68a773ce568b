import { Analysis, Group } from '../graph/analysis';
import { Slot } from '../graph/atoms';
import { toFloat32 } from '../onnx/tensor';

/**
 * Sum of squares of a constant's entries for each index along one axis, so a unit's L2 norm is
 * a sum over its indices. Cached per slot: a weight is read once however many groups use it.
 */
export class AxisNorms {
  private cache = new Map<number, Float64Array>();
  constructor(private readonly analysis: Analysis) {}

  sumSquares(slot: Slot): Float64Array {
    const hit = this.cache.get(slot.id);
    if (hit) return hit;
    const t = this.analysis.model.constant(slot.tensor)!;
    const data = toFloat32(t);
    const inner = t.dims.slice(slot.axis + 1).reduce((a, b) => a * b, 1);
    const size = t.dims[slot.axis];
    const out = new Float64Array(size);
    for (let i = 0; i < data.length; i++) {
      const idx = Math.floor(i / inner) % size;
      out[idx] += data[i] * data[i];
    }
    this.cache.set(slot.id, out);
    return out;
  }
}

/** L2 norm of every unit's slices across all the group's weights. */
export function magnitudeScores(group: Group, norms: AxisNorms): Float64Array {
  const scores = new Float64Array(group.units.length);
  for (const slot of group.constantSlots) {
    const sq = norms.sumSquares(slot);
    group.units.forEach((u, k) => {
      for (const i of u.indices.get(slot.id) ?? []) scores[k] += sq[i];
    });
  }
  return scores.map(Math.sqrt);
}

/**
 * (s - mean) / std within a group, so heads, neurons and channels of different layers compete in
 * one ranking and each layer ends up with its own ratio.
 */
export function standardize(scores: Float64Array): Float64Array {
  const n = scores.length;
  const mean = scores.reduce((a, b) => a + b, 0) / n;
  const variance = scores.reduce((a, b) => a + (b - mean) ** 2, 0) / n;
  const std = Math.sqrt(variance);
  return scores.map((s) => (std > 0 ? (s - mean) / std : 0));
}
