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
  /** Groups narrower than this many times `align` keep their width as planned (default 4). */
  alignMinFactor?: number;
}

/**
 * Exact parameter accounting: a weight whose two axes both lose units (the middle matrix of an
 * MLP) loses (r - a)(c - b) - r·c, not the sum of its rows and columns.
 */
export class ParamLedger {
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
  const { targetParams, slack } = input;
  const ranked = globalRanking(input);
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

/** Any plan with its FFN and channel widths rounded to `input.align` (see alignWidths). */
export function alignRemovals(input: PlanInput, removals: Removal[]): { removals: Removal[]; params: number } {
  const align = input.align ?? 1;
  if (align <= 1) return { removals, params: removals.reduce((sum, r) => sum + r.params, 0) };
  return alignWidths(input, globalRanking(input), new Map(removals.map((r) => [r.group, { ...r, units: [...r.units] }])), align);
}

/** Every unit of every group, lowest standardized score first. */
function globalRanking(input: PlanInput): { group: Group; unit: Unit; score: number }[] {
  const ranked: { group: Group; unit: Unit; score: number }[] = [];
  for (const g of input.groups) {
    const s = input.scores.get(g)!;
    g.units.forEach((unit, k) => ranked.push({ group: g, unit, score: s[k] }));
  }
  return ranked.sort((a, b) => a.score - b.score);
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
    if (group.kind === 'heads' || n < (input.alignMinFactor ?? 4) * align) continue; // narrow layers would jump too far
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

/** Each group's units, lowest standardized score first: the order any allocation takes them in. */
export function rankedUnits(groups: Group[], scores: Map<Group, Float64Array>): Map<Group, Unit[]> {
  return new Map(
    groups.map((g) => {
      const s = scores.get(g)!;
      return [g, g.units.map((u, k) => ({ u, s: s[k] })).sort((a, b) => a.s - b.s).map((x) => x.u)];
    }),
  );
}

/** The `count` lowest-ranked units of each group (never all of them), with exact parameters. */
export function planCounts(input: PlanInput, ranked: Map<Group, Unit[]>, counts: Map<Group, number>): { removals: Removal[]; params: number } {
  const ledger = new ParamLedger(input.slots, input.paramDims);
  const removals: Removal[] = [];
  let params = 0;
  for (const g of input.groups) {
    const n = Math.min(counts.get(g) ?? 0, g.units.length - 1);
    if (n <= 0) continue;
    const units = ranked.get(g)!.slice(0, n);
    const removal = { group: g, units, params: units.reduce((sum, u) => sum + ledger.take(u), 0) };
    params += removal.params;
    removals.push(removal);
  }
  return { removals, params };
}

/**
 * Uniform allocation: every group loses the same fraction of its units (rounded; at least one
 * kept): the largest fraction that stays within the slack of the target, then, if short of it,
 * the lowest-scored remaining units of any group (a few units of coarse layers cannot all
 * round the same way). Undefined when the target cannot be reached.
 */
export function planUniform(input: PlanInput, ranked: Map<Group, Unit[]>): { removals: Removal[]; params: number } | undefined {
  const counts = (f: number) => new Map(input.groups.map((g) => [g, Math.round(f * g.units.length)]));
  const limit = input.targetParams + input.slack;
  let [lo, hi] = [0, 1];
  for (let i = 0; i < 40 && hi - lo > 1e-6; i++) {
    const mid = (lo + hi) / 2;
    if (planCounts(input, ranked, counts(mid)).params <= limit) lo = mid;
    else hi = mid;
  }
  // Top up from one ranking of what is left, as planRemoval takes units.
  const chosen = counts(lo);
  const ledger = new ParamLedger(input.slots, input.paramDims);
  let removed = 0;
  for (const g of input.groups) {
    const n = Math.min(chosen.get(g)!, g.units.length - 1);
    chosen.set(g, n);
    for (const u of ranked.get(g)!.slice(0, n)) removed += ledger.take(u);
  }
  const rest: { g: Group; score: number }[] = [];
  for (const g of input.groups) {
    const s = input.scores.get(g)!;
    const order = ranked.get(g)!;
    for (const u of order.slice(chosen.get(g)!)) rest.push({ g, score: s[g.units.indexOf(u)] });
  }
  rest.sort((a, b) => a.score - b.score);
  for (const { g } of rest) {
    if (removed >= input.targetParams) break;
    const n = chosen.get(g)!;
    if (n >= g.units.length - 1) continue;
    const unit = ranked.get(g)![n];
    if (removed + ledger.delta(unit) > limit) continue;
    removed += ledger.take(unit);
    chosen.set(g, n + 1);
  }
  if (removed < input.targetParams - input.slack) return undefined;
  return planCounts(input, ranked, chosen);
}

/** How much a group's removal costs, measured at a few unit counts (count 0: nothing removed). */
export interface DamageCurve {
  counts: number[];
  losses: number[];
}

/**
 * Allocation by measured damage: units are taken one at a time from the group whose curve
 * rises least per parameter at its current count (piecewise linear between the measured
 * counts), each group's lowest-ranked units first, until the target is met.
 */
export function planByCurves(input: PlanInput, ranked: Map<Group, Unit[]>, curves: Map<Group, DamageCurve>): { removals: Removal[]; params: number } {
  const ledger = new ParamLedger(input.slots, input.paramDims);
  const taken = new Map<Group, Removal>();
  let removed = 0;
  const slope = (g: Group, c: number): number => {
    const curve = curves.get(g);
    if (!curve) return Infinity;
    // The segment holding c; past the last measured count, the last segment continued.
    const found = curve.counts.findIndex((k) => k > c);
    const i = found < 0 ? curve.counts.length - 1 : found;
    if (i <= 0) return Infinity;
    const perUnit = (curve.losses[i] - curve.losses[i - 1]) / (curve.counts[i] - curve.counts[i - 1]);
    return perUnit / Math.max(1e-12, g.units[0].params);
  };
  // A group whose next unit would overshoot the target by more than the slack (a head of a
  // small model) is passed over from then on, as in planRemoval.
  const closed = new Set<Group>();
  while (removed < input.targetParams) {
    let best: Group | undefined;
    let bestSlope = Infinity;
    for (const g of input.groups) {
      const c = taken.get(g)?.units.length ?? 0;
      if (c >= g.units.length - 1 || closed.has(g)) continue;
      const s = slope(g, c);
      if (s < bestSlope) [best, bestSlope] = [g, s];
    }
    if (!best) break;
    const entry = taken.get(best) ?? { group: best, units: [], params: 0 };
    const unit = ranked.get(best)![entry.units.length];
    if (removed + ledger.delta(unit) > input.targetParams + input.slack) {
      closed.add(best);
      continue;
    }
    const delta = ledger.take(unit);
    entry.units.push(unit);
    entry.params += delta;
    removed += delta;
    taken.set(best, entry);
  }
  return { removals: [...taken.values()], params: removed };
}

/**
 * A plan whose FFN and channel widths are multiples of `align` (heads, and groups narrower than
 * `align`, as planned), still meeting the target within the slack:
 * widths are rounded to the nearest multiple, then whole blocks of `align` units are taken from
 * (or given back to) the groups where they score lowest (highest) until the parameters fit.
 * Undefined when no such plan fits the target.
 */
export function alignedPlan(input: PlanInput, ranked: Map<Group, Unit[]>, removals: Removal[], align: number): { removals: Removal[]; params: number } | undefined {
  const counts = new Map(input.groups.map((g) => [g, 0]));
  for (const r of removals) counts.set(r.group, r.units.length);
  const eligible = input.groups.filter((g) => g.kind !== 'heads' && g.units.length >= align);
  for (const g of eligible) {
    const n = g.units.length;
    const kept = Math.max(align, Math.round((n - counts.get(g)!) / align) * align);
    counts.set(g, n - Math.min(n, kept));
  }
  const scoreOf = (g: Group, u: Unit) => input.scores.get(g)![g.units.indexOf(u)];
  const blockScore = (g: Group, from: number) => ranked.get(g)!.slice(from, from + align).reduce((sum, u) => sum + scoreOf(g, u), 0);
  let plan = planCounts(input, ranked, counts);
  for (let guard = 0; guard < 4 * input.groups.length + 16; guard++) {
    if (plan.params < input.targetParams - input.slack) {
      // One more block from the group whose next block scores lowest (a kept multiple of align remains).
      const open = eligible.filter((g) => g.units.length - counts.get(g)! - align >= align);
      if (open.length === 0) return undefined;
      const g = open.reduce((a, b) => (blockScore(b, counts.get(b)!) < blockScore(a, counts.get(a)!) ? b : a));
      counts.set(g, counts.get(g)! + align);
    } else if (plan.params > input.targetParams + input.slack) {
      // One block back to the group whose last removed block scores highest.
      const open = eligible.filter((g) => counts.get(g)! >= align);
      if (open.length === 0) return undefined;
      const g = open.reduce((a, b) => (blockScore(b, counts.get(b)! - align) > blockScore(a, counts.get(a)! - align) ? b : a));
      counts.set(g, counts.get(g)! - align);
    } else return plan;
    plan = planCounts(input, ranked, counts);
  }
  return undefined;
}
