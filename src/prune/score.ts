import { Analysis, Group } from '../graph/analysis';
import { Slot } from '../graph/atoms';

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
    // One streamed pass over the tensor fills every axis of it that is a slot.
    const { model, space } = this.analysis;
    const dims = model.constantInfo(slot.tensor)!.dims;
    const slots = space.slotsOf(slot.tensor);
    const sums = slots.map((s) => new Float64Array(s.size));
    const inner = slots.map((s) => dims.slice(s.axis + 1).reduce((a, b) => a * b, 1));
    const rowElements = dims[dims.length - 1] ?? 1;
    const lastAxis = dims.length - 1;
    const lastK = slots.findIndex((s) => s.axis === lastAxis);
    let perRow = new Float64Array(0); // squares per row of the current chunk, reused
    model.forEachChunk(slot.tensor, rowElements, (values, first) => {
      // One pass: squares summed per row (for the outer axes) and per column (the last axis).
      const rows = values.length / rowElements;
      const firstRow = first / rowElements;
      if (perRow.length < rows) perRow = new Float64Array(rows);
      const col = lastK >= 0 ? sums[lastK] : undefined;
      if (col && slots.length === 1) {
        // Only the columns are a slot: no row sums needed.
        for (let r = 0, i = 0; r < rows; r++, i += rowElements) {
          for (let j = 0; j < rowElements; j++) {
            const v = values[i + j];
            col[j] += v * v;
          }
        }
        return;
      }
      for (let r = 0, i = 0; r < rows; r++) {
        let acc = 0;
        if (col) {
          for (let j = 0; j < rowElements; j++, i++) {
            const v = values[i];
            const v2 = v * v;
            col[j] += v2;
            acc += v2;
          }
        } else {
          for (let j = 0; j < rowElements; j++, i++) {
            const v = values[i];
            acc += v * v;
          }
        }
        perRow[r] = acc;
      }
      slots.forEach((s, k) => {
        if (k === lastK) return;
        const rowsPerIndex = inner[k] / rowElements; // rows that share one index of this axis
        const out = sums[k];
        for (let r = 0; r < rows; r++) out[Math.floor((firstRow + r) / rowsPerIndex) % s.size] += perRow[r];
      });
    });
    slots.forEach((s, k) => this.cache.set(s.id, sums[k]));
    return this.cache.get(slot.id)!;
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
 * one ranking and each layer ends up with its own ratio. With `scale` (from an earlier step),
 * that group's first mean and std are used instead of the current ones.
 */
export function standardize(scores: Float64Array, scale?: { mean: number; std: number }): Float64Array {
  const { mean, std } = scale ?? scoreScale(scores);
  return scores.map((s) => (std > 0 ? (s - mean) / std : 0));
}

export function scoreScale(scores: Float64Array): { mean: number; std: number } {
  const n = scores.length;
  const mean = scores.reduce((a, b) => a + b, 0) / n;
  const variance = scores.reduce((a, b) => a + (b - mean) ** 2, 0) / n;
  return { mean, std: Math.sqrt(variance) };
}
