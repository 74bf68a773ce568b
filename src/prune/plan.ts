import { Group, Unit } from '../graph/analysis';
import { Slot } from '../graph/atoms';
import { convolutionBlock } from '../onnx/runtime';

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
  /**
   * Widths from the kernel table instead (align: auto): convolution channels that are a multiple
   * of the runtime's convolution block (16 with AVX-512, else 8) keep one (its blocked kernels
   * run a 16-channel convolution faster than the same one cut to 12, or to 8 where the block is
   * 16), FFN widths and heads as planned (matrix products run as fast at any width:
   * docs/pruning.md).
   */
  alignAuto?: boolean;
}

/** With a multiple asked for (align: 8), groups narrower than this many times it keep their width as planned. */
const ALIGN_MIN_FACTOR = 4;

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
    if (group.kind === 'heads' || n < ALIGN_MIN_FACTOR * align) continue; // narrow layers would jump too far
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

/** A group's units in the order they go, and the cost (damage) after each count of them: cost[c], cost[0] = 0. */
export interface CostCurve {
  order: Unit[];
  cost: Float64Array;
}

/**
 * The kernel table (align: auto): the multiple kept per kind of group. Convolution channels keep
 * a multiple of the runtime's convolution block (blocked convolutions); a matrix product runs as
 * fast at any width (docs/pruning.md, "Widths").
 */
const kernelWidth = (kind: Group['kind']): number => (kind === 'channels' ? convolutionBlock() : 1);

/** The multiple a group's kept width keeps: 1 for heads, and for groups too narrow to round without jumping far (an align asked for). */
export function groupAlign(input: PlanInput, group: Group): number {
  if (group.kind === 'heads') return 1;
  if (input.alignAuto) {
    // A width already a multiple of the block keeps one, however narrow: leaving the blocked
    // kernels costs more than the units save (a 16-channel convolution cut to 12, or to 8 where
    // the block is 16, runs slower than at 16).
    const kernel = kernelWidth(group.kind);
    return kernel > 1 && group.units.length % kernel === 0 ? kernel : 1;
  }
  const align = input.align ?? 1;
  return align > 1 && group.units.length >= ALIGN_MIN_FACTOR * align ? align : 1;
}

/** Whether keeping `kept` of a group's units respects its alignment. */
export function alignedWidth(input: PlanInput, group: Group, kept: number): boolean {
  const align = groupAlign(input, group);
  return align <= 1 || (kept >= align && kept % align === 0);
}

/**
 * Allocation by damage curves: how many units each group loses so that the summed cost is least
 * for the parameters removed. Each group's curve is reduced to its lower convex hull over the
 * counts it may stop at (aligned widths only), the hull's segments are taken cheapest per
 * parameter first across groups until the target is met, and the counts are then moved, one
 * group or two at a time (a coarse step down here, a fine one up there), to the cheapest
 * combination within the slack of the target, parameters counted exactly (a weight both of
 * whose axes lose units counts once). Units go in each curve's order. Undefined when the target
 * cannot be reached; with widths from the kernel table (or `mayStopShort`), the most they reach,
 * marked `short`.
 */
export function planByCurves(input: PlanInput, curves: Map<Group, CostCurve>, mayStopShort = input.alignAuto && input.groups.some((g) => curves.has(g) && groupAlign(input, g) > 1)): { removals: Removal[]; params: number; short?: boolean } | undefined {
  const groups = input.groups.filter((g) => curves.has(g));
  const ranked = new Map(groups.map((g) => [g, curves.get(g)!.order]));
  // Each group alone: parameters after each count, and the counts it may stop at.
  const table = groups.map((g) => {
    const curve = curves.get(g)!;
    const ledger = new ParamLedger(input.slots, input.paramDims);
    const params = [0];
    for (const u of curve.order) params.push(params[params.length - 1] + ledger.take(u));
    const allowed = [...Array(curve.order.length + 1).keys()].filter((c) => c === 0 || alignedWidth(input, g, g.units.length - c));
    return { g, cost: curve.cost, params, allowed };
  });
  // Segments of every group's lower convex hull, cheapest per parameter first.
  const segments: { k: number; to: number; slope: number }[] = [];
  table.forEach(({ cost, params, allowed }, k) => {
    let at = 0;
    for (;;) {
      let best: { to: number; slope: number } | undefined;
      for (const c of allowed) {
        if (c <= at || params[c] <= params[at]) continue;
        const slope = (cost[c] - cost[at]) / (params[c] - params[at]);
        if (!best || slope < best.slope || (slope === best.slope && c > best.to)) best = { to: c, slope };
      }
      if (!best) break;
      segments.push({ k, ...best });
      at = best.to;
    }
  });
  segments.sort((a, b) => a.slope - b.slope);
  // Index into each group's allowed counts.
  const at = table.map(() => 0);
  let approx = 0;
  for (const s of segments) {
    if (approx >= input.targetParams) break;
    const t = table[s.k];
    approx += t.params[s.to] - t.params[t.allowed[at[s.k]]];
    at[s.k] = t.allowed.indexOf(s.to);
  }
  const countsOf = () => new Map(table.map((t, k) => [t.g, t.allowed[at[k]]]));
  // Windows are judged by the exact count: a weight both of whose axes lose units counts once.
  const exact = new ExactParams(table.map((t) => curves.get(t.g)!.order), input.slots, input.paramDims);
  const removed = (counts: number[]) => exact.of(counts.map((i, k) => table[k].allowed[i]));
  const [low, high] = [input.targetParams - input.slack, input.targetParams + input.slack];
  if (!intoWindow(table, at, low, high, removed) && !fillWindow(table, at, low, high, removed)) {
    // Aligned widths cannot land in the window (coarse blocks of a small model): one group, the
    // one that gets there cheapest, keeps any width. Not a width the kernel table keeps (align:
    // auto): that one is for speed, which a width off the table loses.
    let best: { k: number; at: number[]; cost: number } | undefined;
    table.forEach((t, k) => {
      if (groupAlign(input, t.g) <= 1 || input.alignAuto) return;
      const tables = table.map((x, q) => (q === k ? { ...t, allowed: [...Array(t.params.length).keys()] } : x));
      const moved = at.map((i, q) => (q === k ? t.allowed[i] : i));
      const freed = (counts: number[]) => exact.of(counts.map((i, q) => tables[q].allowed[i]));
      if (!intoWindow(tables, moved, low, high, freed) && !fillWindow(tables, moved, low, high, freed)) return;
      const cost = totalCost(tables, moved);
      if (!best || cost < best.cost) best = { k, at: moved, cost };
    });
    if (best) {
      const { k, at: moved } = best;
      table[k] = { ...table[k], allowed: [...Array(table[k].params.length).keys()] };
      moved.forEach((i, q) => (at[q] = i));
    }
  }
  const plan = planCounts(input, ranked, countsOf());
  // As close as the units allow; a plan further than four slacks from the target is no plan.
  const miss = plan.params < low ? low - plan.params : plan.params > high ? plan.params - high : 0;
  if (miss <= 3 * input.slack) return plan;
  // Widths from the kernel table that cannot reach the target stop short of it: a model slower
  // than its base is no use on the edge. The hull's segments, cheapest per parameter first, each
  // taken if it stays at or below the window and costs less in all than a combination that
  // passes it: a plan that removes fewer parameters for more damage than one that removes more
  // is not worth making (a block that overshoots cheaply is a later step's).
  if (!mayStopShort) return undefined;
  const within = table.map(() => 0);
  let passing = Infinity;
  for (const s of segments) {
    const moved = [...within];
    moved[s.k] = Math.max(moved[s.k], table[s.k].allowed.indexOf(s.to));
    if (removed(moved) > high) passing = Math.min(passing, totalCost(table, moved));
    else if (totalCost(table, moved) < passing) moved.forEach((i, k) => (within[k] = i));
  }
  const short = planCounts(input, ranked, new Map(table.map((t, k) => [t.g, t.allowed[within[k]]])));
  if (short.params >= low) return short;
  return short.params > 0 ? { ...short, short: true } : undefined;
}

/**
 * The parameters a combination of counts removes (each group's first units in its order), as
 * planCounts counts them: every weight once, whichever groups cut its axes. From each group's
 * removed indices per weight axis by count; weights one group cuts alone are summed per count
 * ahead.
 */
class ExactParams {
  /** [group][count]: parameters of the weights only that group cuts. */
  private readonly solo: Float64Array[];
  /** Weights several groups cut: their dims, and per group and axis the indices removed by count. */
  private readonly shared: { dims: number[]; cuts: { k: number; axis: number; removed: Int32Array }[] }[] = [];

  constructor(orders: Unit[][], slots: Slot[], paramDims: (tensor: string) => number[] | undefined) {
    // Per tensor, per group: the indices removed on each axis after each count.
    const cuts = new Map<string, Map<number, Map<number, Int32Array>>>();
    orders.forEach((order, k) => {
      order.forEach((u, c) => {
        for (const [slotId, indices] of u.indices) {
          const slot = slots[slotId];
          if (!slot.constant || !paramDims(slot.tensor)) continue;
          const byGroup = cuts.get(slot.tensor) ?? new Map<number, Map<number, Int32Array>>();
          cuts.set(slot.tensor, byGroup);
          const byAxis = byGroup.get(k) ?? new Map<number, Int32Array>();
          byGroup.set(k, byAxis);
          const removed = byAxis.get(slot.axis) ?? new Int32Array(order.length + 1);
          byAxis.set(slot.axis, removed);
          removed[c + 1] += indices.length;
        }
      });
    });
    this.solo = orders.map((order) => new Float64Array(order.length + 1));
    for (const [tensor, byGroup] of cuts) {
      const dims = paramDims(tensor)!;
      for (const byAxis of byGroup.values()) for (const removed of byAxis.values()) for (let c = 1; c < removed.length; c++) removed[c] += removed[c - 1];
      if (byGroup.size === 1) {
        const [[k, byAxis]] = [...byGroup];
        for (let c = 0; c < this.solo[k].length; c++) this.solo[k][c] = this.solo[k][c] + product(dims) - product(dims.map((d, axis) => d - (byAxis.get(axis)?.[c] ?? 0)));
      } else {
        this.shared.push({ dims, cuts: [...byGroup].flatMap(([k, byAxis]) => [...byAxis].map(([axis, removed]) => ({ k, axis, removed }))) });
      }
    }
  }

  /** Parameters removed when group k loses its first counts[k] units. */
  of(counts: number[]): number {
    let total = 0;
    counts.forEach((c, k) => (total += this.solo[k][c]));
    for (const { dims, cuts } of this.shared) {
      const kept = [...dims];
      for (const { k, axis, removed } of cuts) kept[axis] -= removed[counts[k]];
      total += product(dims) - product(kept);
    }
    return total;
  }
}

/** The cost of group k stopping at its i-th allowed count, and of every group at `at`. */
const stopCost = (table: { cost: Float64Array; allowed: number[] }[], k: number, i: number) => table[k].cost[table[k].allowed[i]];
const totalCost = (table: { cost: Float64Array; allowed: number[] }[], at: number[]) => at.reduce((t, i, k) => t + stopCost(table, k, i), 0);

/**
 * Lands the counts in [low, high] when stepping one group at a time does not (coarse groups
 * overshoot both ways): one group fills the gap, at the count that lands cheapest, the others as
 * they are or with one of them a step up or down. Of these, the cheapest; false when none lands.
 */
function fillWindow(table: { cost: Float64Array; allowed: number[] }[], at: number[], low: number, high: number, removed: (at: number[]) => number): boolean {
  const cost = (k: number, i: number) => stopCost(table, k, i);
  const spent = totalCost(table, at);
  let best: { at: number[]; cost: number } | undefined;
  for (let f = 0; f < table.length; f++) {
    // One other group moved a step (or none), then the filler's count that lands cheapest.
    const moves: [number, number][] = [[-1, 0]];
    for (let j = 0; j < table.length; j++) if (j !== f) for (const d of [-1, 1]) if (at[j] + d >= 0 && at[j] + d < table[j].allowed.length) moves.push([j, d]);
    for (const [j, d] of moves) {
      const next = [...at];
      if (j >= 0) next[j] += d;
      const movedCost = j < 0 ? 0 : cost(j, at[j] + d) - cost(j, at[j]);
      for (let i = 0; i < table[f].allowed.length; i++) {
        const c = spent + movedCost - cost(f, at[f]) + cost(f, i);
        if (best && c >= best.cost) continue;
        next[f] = i;
        const sum = removed(next);
        if (sum >= low && sum <= high) best = { at: [...next], cost: c };
      }
    }
  }
  if (best) best.at.forEach((i, k) => (at[k] = i));
  return !!best;
}

/**
 * Moves the counts (indices into each group's allowed counts) until their summed parameters lie
 * in [low, high] (true when they do), a step of one group at a time: while above the window, the
 * step down that saves most per parameter given back (one that stays at or above the window
 * first); while below it, the step up that costs least per parameter. Of the counts that land in
 * the window on the way, the cheapest is kept.
 */
function intoWindow(table: { cost: Float64Array; allowed: number[] }[], at: number[], low: number, high: number, removed: (at: number[]) => number): boolean {
  const costOf = (k: number, i: number) => stopCost(table, k, i);
  const sum = () => removed(at);
  const cost = () => totalCost(table, at);
  let best: { at: number[]; cost: number } | undefined;
  const seen = new Set<string>();
  for (let guard = 0; guard < 4096; guard++) {
    const total = sum();
    if (total >= low && total <= high) {
      const c = cost();
      if (!best || c < best.cost) best = { at: [...at], cost: c };
    }
    const key = at.join(',');
    if (seen.has(key)) break;
    seen.add(key);
    if (total >= low && total <= high) break;
    const down = total > high;
    let pick: { k: number; slope: number; stays: boolean } | undefined;
    for (let k = 0; k < table.length; k++) {
      const i = at[k] + (down ? -1 : 1);
      if (i < 0 || i >= table[k].allowed.length) continue;
      const moved = [...at];
      moved[k] = i;
      const dp = removed(moved) - total;
      if (dp === 0) continue;
      const slope = (costOf(k, i) - costOf(k, at[k])) / dp;
      const stays = !down || total + dp >= low;
      // Down: prefer staying at or above the window, then the most saved per parameter; up: the least cost per parameter.
      const better = !pick || (down ? (stays !== pick.stays ? stays : slope > pick.slope) : slope < pick.slope);
      if (better) pick = { k, slope, stays };
    }
    if (!pick) break;
    at[pick.k] += down ? -1 : 1;
  }
  if (best) best.at.forEach((i, k) => (at[k] = i));
  return !!best;
}
