import { Group, Unit } from '../graph/analysis';
import { Slot } from '../graph/atoms';

export interface Removal {
  group: Group;
  units: Unit[];
  /** Parameters this removal takes out (exact, given the order units were taken in). */
  params: number;
}

export interface PlanInput {
  groups: Group[];
  /** Standardized score of every unit, per group (lower goes first). */
  scores: Map<Group, Float64Array>;
  /** Parameters to remove. */
  targetParams: number;
  /** How far past the target one unit may take us. */
  slack: number;
  /** Every slot, by id, and the dims of the parameter tensors. */
  slots: Slot[];
  paramDims: (tensor: string) => number[] | undefined;
  /** Keep a multiple of this many units in FFN and channel groups of at least 4·align units. */
  align?: number;
}

/**
 * Exact parameter accounting: a weight whose two axes both lose units (the middle matrix of an
 * MLP) loses (r - a)(c - b) - r·c, not the sum of its rows and columns.
 */
class ParamLedger {
  private kept = new Map<string, number[]>();
  constructor(
    private readonly slots: Slot[],
    private readonly paramDims: (tensor: string) => number[] | undefined,
  ) {}

  /** Parameters that removing `unit` would remove now. */
  delta(unit: Unit): number {
    return this.apply(unit, false);
  }

  take(unit: Unit): number {
    return this.apply(unit, true);
  }

  private apply(unit: Unit, commit: boolean): number {
    const changes = new Map<string, number[]>();
    for (const [slotId, indices] of unit.indices) {
      const slot = this.slots[slotId];
      if (!slot.constant) continue;
      const current = changes.get(slot.tensor) ?? [...(this.kept.get(slot.tensor) ?? this.paramDims(slot.tensor) ?? [])];
      if (current.length === 0) continue;
      current[slot.axis] -= indices.length;
      changes.set(slot.tensor, current);
    }
    let delta = 0;
    for (const [tensor, dims] of changes) {
      const before = this.kept.get(tensor) ?? this.paramDims(tensor)!;
      delta += product(before) - product(dims);
      if (commit) this.kept.set(tensor, dims);
    }
    return delta;
  }
}

const product = (d: number[]) => d.reduce((a, b) => a * b, 1);

/**
 * One global ranking of all units by standardized score; units are taken lowest first until the
 * target is met, skipping any that would overshoot it by more than `slack`, and always leaving
 * at least one unit in every group (never an empty layer).
 */
export function planRemoval(input: PlanInput): { removals: Removal[]; params: number } {
  const { groups, scores, targetParams, slack } = input;
  const ranked: { group: Group; unit: Unit; score: number }[] = [];
  for (const g of groups) {
    const s = scores.get(g)!;
    g.units.forEach((unit, k) => ranked.push({ group: g, unit, score: s[k] }));
  }
  ranked.sort((a, b) => a.score - b.score);
  const ledger = new ParamLedger(input.slots, input.paramDims);
  const taken = new Map<Group, Removal>();
  let removed = 0;
  for (const { group, unit } of ranked) {
    if (removed >= targetParams) break;
    const entry = taken.get(group) ?? { group, units: [], params: 0 };
    if (entry.units.length >= group.units.length - 1) continue;
    if (removed + ledger.delta(unit) > targetParams + slack) continue;
    const delta = ledger.take(unit);
    removed += delta;
    entry.params += delta;
    entry.units.push(unit);
    taken.set(group, entry);
  }
  const align = input.align ?? 1;
  if (align <= 1) return { removals: [...taken.values()], params: removed };
  return alignWidths(input, ranked, taken, align);
}

/**
 * Rounds each wide FFN/channel group's kept count to the nearest multiple of `align` (taking more
 * of its lowest-ranked units, or giving back its best removed ones), then recounts parameters.
 */
function alignWidths(
  input: PlanInput,
  ranked: { group: Group; unit: Unit; score: number }[],
  taken: Map<Group, Removal>,
  align: number,
): { removals: Removal[]; params: number } {
  const order = new Map(ranked.map((r, i) => [r.unit, i]));
  for (const group of input.groups) {
    const n = group.units.length;
    if (group.kind === 'heads' || n < 4 * align) continue; // narrow layers would jump too far
    const entry = taken.get(group) ?? { group, units: [], params: 0 };
    const kept = n - entry.units.length;
    const goal = Math.max(align, Math.round(kept / align) * align);
    if (goal === kept) continue;
    const removedSet = new Set(entry.units);
    if (goal < kept) {
      const more = group.units.filter((u) => !removedSet.has(u)).sort((a, b) => order.get(a)! - order.get(b)!);
      entry.units.push(...more.slice(0, kept - goal));
    } else {
      entry.units.sort((a, b) => order.get(a)! - order.get(b)!);
      entry.units.splice(entry.units.length - (goal - kept));
    }
    taken.set(group, entry);
  }
  const ledger = new ParamLedger(input.slots, input.paramDims);
  let params = 0;
  const removals = [...taken.values()].filter((r) => r.units.length > 0);
  for (const r of removals) {
    r.params = 0;
    for (const u of r.units) r.params += ledger.take(u);
    params += r.params;
  }
  return { removals, params };
}
