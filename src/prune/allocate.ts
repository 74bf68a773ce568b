import { Analysis, Group, Unit } from '../graph/analysis';
import { OnnxModel } from '../onnx/model';
import { Applied, FixFailure } from './apply';
import { CompensationEdits, compensation } from './compensate';
import { DamageCurve, Dampings, InverseCovariances, damageCurves } from './obs';
import { CostCurve, PlanInput, alignedWidth, groupAlign, Removal, alignRemovals, planByCurves, planCounts, planRemoval, planUniform, rankedUnits } from './plan';
import { ProbeCell, probeAssignment, probeFeeds, probeModel } from './probe';
import type { PassLedger } from './ledger';
import { AxisNorms } from './score';
import { ChannelStats, CollectedStats, Consumer, StatsRequest, StatsTap, requestedTensors } from './stats';
import { Allocation, AllocationResult, Compensation, CompensationChoice, DamageMeasure, SearchEffort } from './types';

type Strategy = Exclude<Allocation, 'auto'>;

export interface AllocationInput {
  model: OnnxModel;
  analysis: Analysis;
  plan: PlanInput;
  consumers: ReadonlyMap<Group, Consumer[]>;
  /** Channel means and variances of every consumer's input, with covariances when compensation may refit. */
  stats: Map<string, ChannelStats>;
  allocation: Allocation;
  compensate: CompensationChoice;
  damage?: DamageMeasure;
  /** Whether activation statistics were collected (the curves need them). */
  measured: boolean;
  passes: PassLedger;
  inverses: InverseCovariances;
  dampings: Dampings;
  /** Seconds spent choosing dampings, added to (PruneMemory.choosing). */
  choosing?: { seconds: number };
  /** Each group's last measured sensitivity (loss = a·E^p), by group: read when the step does not probe, written when it does. */
  sensitivities: Map<string, { a: number; p: number }>;
  /** Steps since the last probe (PruneMemory.probed), counted here. */
  probed: { stepsAgo?: number };
  /** What the step may spend. */
  effort: SearchEffort;
  /** Builds a candidate: compensated, its normalizations refit, sliced (throws FixFailure when it cannot). */
  build(removals: Removal[], edits: CompensationEdits): Promise<BuiltCandidate>;
  /** What the next step's statistics pass would read of the model these removals make (collected while the planned candidate is confirmed). */
  nextStatistics?: (removals: Removal[]) => { requests: StatsRequest[]; keep: string[] };
  log: (line: string) => void;
}

/** A candidate built, with what its building said. */
export interface BuiltCandidate {
  applied: Applied;
  notes: string[];
  /** Constants whose values the building changed (refit weights, biases, normalization parameters), by name in the analysed model. */
  changed: string[];
}

export interface AllocationChoice {
  removals: Removal[];
  /** How the consumers of the removed channels are repaired. */
  compensation: CompensationEdits;
  /** The chosen candidate, when it was built: this very model was loaded and run (confirmed or timed). */
  built?: BuiltCandidate;
  allocation?: AllocationResult;
  /** The chosen candidate's statistics for the next step, when its confirmation collected them. */
  next?: CollectedStats;
  /** Why the plan may fall short of the target, when the allocation itself knows (widths kept blocked, convolutions kept whole). */
  short?: string;
}

/** The reasons chooseAllocation gives for a plan short of its target. */
const BLOCKED_SHORT = "alignment: convolution widths kept at multiples of the processor's kernel block (align: auto)";
const SLOWER_SHORT = 'convolutions kept whole: the candidate that reached the target ran slower than the base (align: auto)';

/**
 * Decides which units go (docs/pruning.md, "Allocation"). `measured` (and `auto`): each group's
 * damage curve in closed form (obs.ts), made comparable across groups by one pass that probes
 * each group's sensitivity (probe.ts), and the cheapest counts for the target planned from the
 * curves (plan.ts). `auto` then confirms: the planned candidate and FLAP's global ranking are
 * built and run on the calibration set, and the one whose outputs stay closer to the base's is
 * kept. A strategy asked for (global, uniform, ffn-only) is built as it is.
 */
export async function chooseAllocation(input: AllocationInput): Promise<AllocationChoice> {
  const { plan, damage, log } = input;
  const ranked = rankedUnits(plan.groups, plan.scores);
  const resolved = resolvedCompensation(input);
  const compensate = (removals: Removal[]) => compensation(input.analysis, removals, input.consumers, input.stats, input.compensate, input.dampings, input.inverses);
  const tried: AllocationResult['tried'] = [];
  const result = (strategy: Strategy, removals: Removal[], edits: CompensationEdits, measure: string): AllocationChoice => ({
    removals,
    compensation: edits,
    allocation: { strategy, compensate: resolved(edits), measure, tried, align: keptMultiple(plan, removals) },
  });

  if (plan.targetParams <= 0) return result('global', [], { edits: [], notes: [] }, 'nothing to remove');
  // The curves need the statistics, and a loss to put them in one unit.
  const byCurves = input.measured && !!damage && (input.allocation === 'auto' || input.allocation === 'measured');
  if (!byCurves) {
    const strategy: Strategy = input.allocation === 'auto' || input.allocation === 'measured' ? 'global' : input.allocation;
    const asked = buildStrategy(plan, ranked, strategy);
    const { removals } = asked ?? planRemoval(plan);
    const measure = !damage
      ? 'nothing measured: no calibration data to measure damage on'
      : !input.measured
        ? 'not measured: magnitude importance reads no activations, so there are no damage curves'
        : `as asked (allocation: ${input.allocation})`;
    if (!asked) tried.push({ strategy, compensate: 'none', loss: null, params: 0, note: 'cannot reach the target' });
    return result(asked ? strategy : 'global', removals, await compensate(removals), measure);
  }

  const costs = await estimatedLosses(input, ranked);
  const planned = planByCurves(plan, costs);
  const candidates: Candidate[] = [];
  // A runner-up estimated too far behind to race (listed, with the compensation the others got).
  let notRun: Omit<AllocationResult['tried'][number], 'compensate'> | undefined;
  const listNotRun = (edits: CompensationEdits) => notRun && tried.push({ ...notRun, compensate: resolved(edits) });
  if (planned?.short) log(`the target is out of reach at widths that keep the convolutions blocked: ${planned.params} parameters removed of the ${Math.round(plan.targetParams)} asked`);
  if (planned) candidates.push({ strategy: 'measured', removals: planned.removals, params: planned.params, note: planned.short ? 'planned from the damage curves, as far as blocked convolution widths reach' : 'planned from the damage curves' });
  else tried.push({ strategy: 'measured', compensate: 'bias', loss: null, params: 0, note: 'cannot reach the target' });
  // One alternative is confirmed beside it: the next best plan by the same estimate.
  if (planned && input.allocation === 'auto' && damage && input.effort.alternative) {
    const { candidate, left } = runnerUp(plan, costs, planned.removals);
    if (candidate) candidates.push(candidate);
    if (left) notRun = { strategy: left.strategy, loss: null, params: left.params, note: `${left.note}: estimated to lose ${left.ratio.toFixed(1)}x what the plan loses, not run` };
  }
  if (candidates.length === 0) {
    const fallback = planRemoval(plan);
    return result('global', fallback.removals, await compensate(fallback.removals), 'no plan by the curves reaches the target');
  }
  if (candidates.length === 1 && !damage.confirmationEvaluates) {
    const only = candidates[0];
    const edits = await compensate(only.removals);
    tried.push({ strategy: only.strategy, compensate: resolved(edits), loss: null, params: only.params, note: `${only.note}; not run before the step's evaluation` });
    listNotRun(edits);
    return notSlower(input, costs, { ...result(only.strategy, only.removals, edits, damage?.name ?? 'damage curves'), ...(planned?.short ? { short: BLOCKED_SHORT } : {}) });
  }
  // Confirmation: each candidate built and run on the calibration set. The first (the plan) is
  // usually kept: its pass over the whole set is the step's evaluation and collects the next
  // step's statistics on it. A race is decided on the first half of the batches, which the
  // runner-up reads alone (the plan's loss there comes from its own pass); a runner-up that wins
  // then runs over the whole set.
  const batches = damage.batches ?? 1;
  const raceBatches = candidates.length > 1 && damage.losses ? Math.max(1, Math.floor(RACE_SHARE * batches)) : batches;
  const race = raceBatches / batches;
  const raceSamples = Math.round(((damage.samples ?? 0) * raceBatches) / batches);
  const on = race < 1 ? `the first ${raceBatches} of ${batches} calibration batches (the race)` : undefined;
  // The next step's statistics, collected on a candidate's pass over the whole set (the tap),
  // and what the pass reads for them.
  const nextStatisticsOn = (c: Candidate, built: BuiltCandidate) => {
    const next = input.nextStatistics?.(c.removals);
    return next
      ? { tap: new StatsTap(built.applied.model, next.requests, next.keep), reads: `, with statistics of ${requestedTensors(next.requests)}${next.keep.length ? `, kept whole: ${next.keep.join(', ')}` : ''}` }
      : { tap: undefined, reads: '' };
  };
  let best: { c: Candidate; edits: CompensationEdits; loss: number; built?: BuiltCandidate; next?: CollectedStats } | undefined;
  for (const [k, c] of candidates.entries()) {
    const edits = await compensate(c.removals);
    const built = await buildOrNot(input, c.removals, edits);
    const { tap, reads } = k === 0 && built ? nextStatisticsOn(c, built) : { tap: undefined, reads: '' };
    const whole = k === 0 || race >= 1;
    const why = `${candidates.length > 1 ? `which of ${candidates.length} candidates to keep (${c.note})${whole ? "; the one kept is the step's evaluation too" : ', on the batches the race reads'}` : "the step's evaluation"}${tap ? "; and the next step's statistics, on this candidate" : ''}`;
    const what = `${damage.name} of the ${c.strategy} candidate (${c.params} parameters)${whole ? '' : `, first ${raceBatches} of ${batches} batches`}${reads}`;
    const measured = built
      ? await input.passes.pass('confirmation', why, whole ? (damage.samples ?? 0) : raceSamples, what, async () => {
          const model = built.applied.model;
          // The plan's pass goes on over the whole set; the loss compared is the race's.
          const loss = race < 1 && whole ? (await damage.losses!(model, [race, 1], tap))[0] : await damage.loss(model, whole ? 1 : race, tap);
          return { loss, next: tap?.collected() };
        })
      : { loss: Infinity, next: undefined };
    const loss = measured.loss;
    tried.push({ strategy: c.strategy, compensate: resolved(edits), loss: Number.isFinite(loss) ? loss : null, params: c.params, note: c.note });
    log(`allocation ${c.strategy} (${c.note}), compensation ${resolved(edits)}: ${damage.name} ${Number.isFinite(loss) ? loss.toPrecision(4) : 'not measurable'}${on ? ` on ${on}` : ''} (${c.params} parameters)`);
    if (!best || loss < best.loss) best = { c, edits, loss, built, next: measured.next };
  }
  // A runner-up that won the race on part of the set runs over the whole of it: the step's
  // evaluation, and the next step's statistics on it, as the plan's pass would have been.
  if (race < 1 && best!.c !== candidates[0] && best!.built) {
    const winner = best!;
    const { tap, reads } = nextStatisticsOn(winner.c, winner.built!);
    const why = `the race's winner over the whole set: the step's evaluation${tap ? ", and the next step's statistics, on this candidate" : ''}`;
    const what = `${damage.name} of the ${winner.c.strategy} candidate (${winner.c.params} parameters), the whole set${reads}`;
    winner.next = await input.passes.pass('confirmation', why, damage.samples ?? 0, what, async () => {
      await damage.loss(winner.built!.applied.model, 1, tap);
      return tap?.collected();
    });
  }
  listNotRun(best!.edits);
  log(`allocation: ${best!.c.strategy} (least ${damage.name} on the calibration set)`);
  const raced = result(best!.c.strategy, best!.c.removals, best!.edits, damage.name);
  if (on) raced.allocation!.on = on;
  if (planned?.short) raced.short = BLOCKED_SHORT;
  const chosen = await notSlower(input, costs, { ...raced, built: best!.built });
  // Statistics of the candidate confirmed, if that is still the one kept.
  return chosen.built === best!.built && best!.next ? { ...chosen, next: best!.next } : chosen;
}

/** Above this ratio of its time to the base's (timed here), a candidate is slower than its base. */
const SLOWER = 1.02;

/**
 * With widths from the kernel table (align: auto), "not slower than the base" is checked once,
 * on the kept candidate, timed against the base on this machine, where a convolution lost
 * channels (a matrix product runs as fast at any width: docs/pruning.md): if it is slower, the
 * same curves are planned again with every convolution as it is, and that plan is kept if it
 * is not slower (the report gives the time over the base of the one kept).
 */
async function notSlower(input: AllocationInput, costs: Map<Group, CostCurve>, choice: AllocationChoice): Promise<AllocationChoice> {
  const timer = input.damage?.latency;
  const convolutions = choice.removals.some((r) => r.group.kind === 'channels');
  if (!input.plan.alignAuto || !timer || !convolutions || !choice.allocation || choice.removals.length === 0) return choice;
  const built = choice.built ?? (await buildOrNot(input, choice.removals, choice.compensation));
  if (!built) return choice;
  const ratio = await timer(built.applied.model);
  const timed = { ...choice, built, allocation: { ...choice.allocation, latency: ratio } };
  if (ratio <= SLOWER) return timed;
  input.log(`the kept candidate takes ${ratio.toFixed(3)}x the base's time here: planning it again with every convolution as it is`);
  // Short of the target if it must be (the report says what was removed): slower is no use.
  const plain = planByCurves({ ...input.plan, groups: input.plan.groups.filter((g) => g.kind !== 'channels') }, costs, true);
  if (!plain) {
    input.log('without convolution channels nothing can be removed: keeping the first');
    return timed;
  }
  const edits = await compensation(input.analysis, plain.removals, input.consumers, input.stats, input.compensate, input.dampings, input.inverses);
  const other = await buildOrNot(input, plain.removals, edits);
  const otherRatio = other ? await timer(other.applied.model) : Infinity;
  input.log(`with every convolution as it is: ${otherRatio.toFixed(3)}x the base's time; keeping the ${otherRatio < ratio ? 'second' : 'first'} one`);
  if (otherRatio >= ratio) return timed;
  const allocation = { ...choice.allocation, latency: otherRatio };
  allocation.tried = [...allocation.tried, { strategy: 'measured', compensate: allocation.compensate, loss: null, params: plain.params, latency: otherRatio, note: `every convolution as it is${plain.short ? ' (short of the target)' : ''}: the kept candidate was slower than the base` }];
  return { removals: plain.removals, compensation: edits, built: other, allocation, short: SLOWER_SHORT };
}

/**
 * Each group's estimated loss at every unit count it may lose this step, units in the order they
 * go: its damage curve in closed form (obs.ts), put in the units of the loss by one probe pass
 * (calibratedCosts). What chooseAllocation plans from; `npm run bench -- quality` checks it
 * against losses measured by running the model.
 */
export async function estimatedLosses(input: AllocationInput, ranked = rankedUnits(input.plan.groups, input.plan.scores)): Promise<Map<Group, CostCurve>> {
  const { plan } = input;
  input.log(`damage curves of ${plan.groups.length} groups from the statistics (closed form)`);
  const share = stepShare(plan, ranked);
  const curves = await damageCurves(input.model, new AxisNorms(input.analysis), plan.groups, input.consumers, input.stats, input.inverses, {
    compensate: input.compensate,
    dampings: input.dampings,
    choosing: input.choosing,
    checkShare: share,
    maxShare: reach(plan, ranked, share),
    // An aligned group's first stop is one multiple away, whatever the step's share.
    minReach: (g) => groupAlign(plan, g),
  }, (w) => input.analysis.index.consumersOf(w).length > 1);
  // Every consumer's damping is chosen and the inverses the candidates read are made: the
  // covariances are not read again.
  input.inverses.releaseCovariances(input.stats.values());
  // One pass: each group's damage in the units of the loss.
  return calibratedCosts(input, curves, share);
}

/** The candidate built, or undefined when the engine cannot make it (never chosen; verification reports it). */
async function buildOrNot(input: AllocationInput, removals: Removal[], edits: CompensationEdits): Promise<BuiltCandidate | undefined> {
  try {
    return await input.build(removals, edits);
  } catch (e) {
    if (e instanceof FixFailure) return undefined;
    throw e;
  }
}

/** A plan to build and confirm, and how it was made. */
interface Candidate {
  strategy: Strategy;
  removals: Removal[];
  params: number;
  note: string;
}

/** A runner-up estimated to lose more than this many times what the plan loses is not worth a pass. */
const RACE_WITHIN = 1.5;
/** The share of the calibration batches a race between the plan and its runner-up is decided on. */
const RACE_SHARE = 0.5;

/**
 * The next best plan by the curves' own estimate, the one a confirmation is worth most for: the
 * plan that gives one coarse group (at most COARSE_UNITS units, a layer's heads) one unit more
 * or fewer than planned, the rest planned again around it, whose estimated loss is lowest (a
 * coarse group's step is where the probe's few samples per count decide most); in a model
 * without coarse groups, FLAP's global ranking (what remains when the estimate misses what it
 * does not see, such as normalizations over a pruned width; its estimate, from the curves'
 * cheapest units, is a lower bound). Raced only when estimated within RACE_WITHIN of the plan.
 */
function runnerUp(plan: PlanInput, costs: Map<Group, CostCurve>, planned: Removal[]): { candidate?: Candidate; left?: Candidate & { ratio: number } } {
  const estimate = (removals: Removal[]) => removals.reduce((t, r) => t + (costs.get(r.group)?.cost[r.units.length] ?? 0), 0);
  const options: (Candidate & { estimate: number })[] = [];
  for (const g of plan.groups) {
    if (g.units.length > COARSE_UNITS || !costs.has(g)) continue;
    const count = planned.find((r) => r.group === g)?.units.length ?? 0;
    // One step of its width either way: a unit, or a block where the group keeps a multiple.
    const step = groupAlign(plan, g);
    for (const pin of [count - step, count + step]) {
      if (pin < 0 || pin > costs.get(g)!.order.length || (pin > 0 && !alignedWidth(plan, g, g.units.length - pin))) continue;
      const pinned = planCounts({ ...plan, groups: [g] }, new Map([[g, costs.get(g)!.order]]), new Map([[g, pin]]));
      const rest = planByCurves({ ...plan, groups: plan.groups.filter((x) => x !== g), targetParams: plan.targetParams - pinned.params }, costs);
      if (!rest) continue;
      const removals = [...rest.removals, ...pinned.removals];
      const what = g.kind === 'heads' ? 'heads' : 'units';
      options.push({ strategy: 'measured', removals, params: rest.params + pinned.params, note: `${step === 1 ? 'one' : step} ${pin > count ? 'more' : 'fewer'} of ${g.where}'s ${what} removed`, estimate: estimate(removals) });
    }
  }
  if (options.length === 0) {
    const global = planRemoval(plan);
    // With widths from the kernel table, a ranking that leaves a blocked width is no rival: it
    // would be planned again for speed if it won.
    const blocked = !plan.alignAuto || global.removals.every((r) => alignedWidth(plan, r.group, r.group.units.length - r.units.length));
    if (blocked && global.params >= plan.targetParams - plan.slack) options.push({ strategy: 'global', ...global, note: "FLAP's global ranking", estimate: estimate(global.removals) });
  }
  if (options.length === 0) return {};
  const { estimate: cost, ...best } = options.reduce((a, b) => (b.estimate < a.estimate ? b : a));
  const ratio = cost / Math.max(estimate(planned), Number.MIN_VALUE);
  return ratio > RACE_WITHIN ? { left: { ...best, ratio } } : { candidate: best };
}

/** The multiple every aligned group's kept width is (1 when no group was aligned). */
function keptMultiple(plan: PlanInput, removals: Removal[]): number {
  const aligns = removals.map((r) => groupAlign(plan, r.group)).filter((a) => a > 1);
  return aligns.length ? Math.min(...aligns) : 1;
}

function buildStrategy(input: PlanInput, ranked: Map<Group, Unit[]>, strategy: Strategy): { removals: Removal[]; params: number } | undefined {
  // A strategy asked for is held to 1 % of the model, not the window candidates share: uniform
  // shares of coarse layers cannot land closer.
  const plan = { ...input, slack: 4 * input.slack };
  const reached = (p: { removals: Removal[]; params: number }) => (p.params >= plan.targetParams - plan.slack ? p : undefined);
  switch (strategy) {
    case 'global':
    case 'measured':
      return planRemoval(plan);
    case 'uniform': {
      const p = planUniform(plan, ranked);
      return p && reached(alignRemovals(plan, p.removals));
    }
    case 'ffn-only': {
      const ffn = plan.groups.filter((g) => g.kind === 'ffn');
      if (ffn.length === 0 || ffn.length === plan.groups.length) return undefined;
      return reached(planRemoval({ ...plan, groups: ffn }));
    }
  }
}

/** The share of its units a group loses when every group loses the same share of the step's parameters (at least 5 %, at most half). */
function stepShare(plan: PlanInput, ranked: Map<Group, Unit[]>): number {
  const all = planCounts(plan, ranked, new Map(plan.groups.map((g) => [g, g.units.length - 1]))).params;
  return Math.min(0.5, Math.max(0.05, all > 0 ? plan.targetParams / all : 0.5));
}

/** The compensation the report names: reconstruct when any consumer was refit, else bias (none when asked). */
function resolvedCompensation(input: AllocationInput): (edits: CompensationEdits) => Compensation {
  return (edits) => (input.compensate === 'none' || edits.edits.length === 0 ? 'none' : edits.edits.some((e) => e.refit) ? 'reconstruct' : 'bias');
}

/**
 * A search probes at its first step and then every PROBE_EVERY steps; the steps between plan
 * with each group's sensitivity as the last probe measured it (docs/pruning.md, "Making layers
 * comparable": on the trained fixtures a probe every step gave no better models).
 */
export const PROBE_EVERY = 2;

/** Whether the step after the one `probed` (PruneMemory.probed) counts to is due a probe. */
export const probeDue = (probed: { stepsAgo?: number }) => probed.stepsAgo === undefined || probed.stepsAgo + 1 >= PROBE_EVERY;

/** The largest power a group's loss may grow with its consumers' error (a convolution stack's damage compounds). */
const MAX_POWER = 4;
/** Groups of at most this many units (heads, a small block) are probed at every count up to twice the step's share. */
const COARSE_UNITS = 8;

/**
 * The share of its units a step may take from a group: twice the step's share (at most 90 %),
 * so that every count planned lies where the probe measured; more when the groups' units up to
 * that do not hold the target.
 */
function reach(plan: PlanInput, ranked: Map<Group, Unit[]>, share: number): number {
  let r = Math.min(0.9, 2 * share);
  const capped = (f: number) => planCounts(plan, ranked, new Map(plan.groups.map((g) => [g, Math.max(1, Math.round(f * g.units.length))]))).params;
  while (r < 1 && capped(r) < plan.targetParams + plan.slack) r = Math.min(1, r + 0.1);
  return r;
}

/** The counts at which a group is probed: its step share and the most it may lose (every count for a coarse group). */
function probeCounts(n: number, available: number, share: number): number[] {
  const top = available;
  if (n <= COARSE_UNITS) return [...Array(top).keys()].map((c) => c + 1);
  const first = Math.min(available, Math.max(1, Math.round(share * n)));
  return [...new Set([first, Math.max(first, top)])];
}

/**
 * Each group's damage in the units of the model's loss: from one pass in which every sample sees
 * one removal of one group and no other (a cell: some count of the group's cheapest units by its
 * curve, compensated; probeCounts), the loss per unit of its consumers' output error is read,
 * each sample's loss divided by the error its own removal made on it (the probe measures that
 * error on every sample, so each cell's mean error is the whole set's). Between the measured
 * counts the loss is interpolated as a power of the curve's error E, before the first as a·E,
 * past the last with the last segment's power (between 1 and MAX_POWER): a convolution stack's
 * damage compounds faster than its error. Groups the probe cannot reach weigh as the median of
 * the others; without a per-sample loss, the curves are taken as they are.
 */
async function calibratedCosts(input: AllocationInput, curves: Map<Group, DamageCurve>, share: number): Promise<Map<Group, CostCurve>> {
  const plain = new Map<Group, CostCurve>([...curves].map(([g, c]) => [g, { order: c.order, cost: c.errors }]));
  const damage = input.damage;
  if (!damage?.sampleLosses || !damage.samples || curves.size < 2) return plain;
  const remembered = [...curves.keys()].map((g) => input.sensitivities.get(sensitivityKey(g)));
  const { probed } = input;
  const due = probeDue(probed);
  if ((!due || !input.effort.probe) && remembered.every(Boolean)) {
    probed.stepsAgo = (probed.stepsAgo ?? 0) + 1;
    input.log(`sensitivity: each group as the last probe measured it (${due ? 'no probe at this step, to keep to the budget' : `a probe runs every ${PROBE_EVERY} steps`})`);
    return new Map([...curves].map(([g, c], i) => [g, { order: c.order, cost: c.errors.map((e) => remembered[i]!.a * e ** remembered[i]!.p) }]));
  }
  const planned = new Map([...curves].map(([g, c]) => [g, probeCounts(g.units.length, c.order.length, share).filter((count) => c.errors[count] > 0)]));
  const cells: ProbeCell[] = [];
  // Cells listed count by count, so that with few samples every group gets its first count first.
  for (let round = 0; round < Math.max(0, ...[...planned.values()].map((l) => l.length)); round++) {
    for (const [g, counts] of planned) {
      const count = counts[round];
      if (count === undefined) continue;
      const removal = planCounts({ ...input.plan, groups: [g] }, new Map([[g, curves.get(g)!.order]]), new Map([[g, count]])).removals;
      const e = await compensation(input.analysis, removal, input.consumers, input.stats, input.compensate === 'none' ? 'bias' : input.compensate, input.dampings, input.inverses);
      if (e.edits.length) cells.push({ group: g, count, edits: e.edits });
    }
  }
  if (cells.length === 0) return plain;
  const probe = probeModel(input.analysis, cells);
  // Each cell's refit weights (a dense matrix per removal, in float64) are in the probe model
  // now: they go before its session is made, which on a large model is the step's peak memory.
  for (const cell of cells) cell.edits = [];
  const assignment = probeAssignment(damage.samples, cells.length);
  probed.stepsAgo = 0;
  const measured = await input.passes.pass('probe', "each group's loss for its damage curve's error, so that the curves of all groups are in one unit", damage.samples, `the sensitivity probe of ${cells.length} removals in ${new Set(cells.map((c) => c.group)).size} groups`, () =>
    damage.sampleLosses!(probe.model, (start, size) => probeFeeds(probe, assignment, start, size), probe.errors, probe.batched),
  );
  // Per cell: the loss per unit of error on its samples, times its mean error over the set.
  const points = new Map<Group, { error: number; loss: number }[]>();
  cells.forEach((cell, k) => {
    const samples = assignment.flatMap((cellsOf, i) => (cellsOf.includes(k) ? [i] : []));
    const errors = measured.outputs[k];
    let [loss, error] = [0, 0];
    for (const i of samples) {
      // A sample probing several cells shares its loss by their errors on it.
      const together = assignment[i].reduce((t, c) => t + measured.outputs[c][i], 0);
      loss += together > 0 ? (measured.losses[i] * errors[i]) / together : 0;
      error += errors[i];
    }
    const mean = errors.reduce((a, b) => a + b, 0) / errors.length;
    if (error > 0 && samples.length > 0 && loss > 0) {
      const list = points.get(cell.group) ?? [];
      list.push({ error: curves.get(cell.group)!.errors[cell.count], loss: (loss / error) * mean });
      points.set(cell.group, list);
    }
  });
  // Per group: loss = a·E^p through its cells, least squares in log-log (p between 1 and MAX_POWER).
  const fits = new Map<Group, { a: number; p: number }>();
  for (const [g, list] of points) fits.set(g, powerFit(list));
  for (const [g, fit] of fits) input.sensitivities.set(sensitivityKey(g), fit);
  const linear = [...fits.values()].filter((f) => f.p === 1).map((f) => f.a).sort((a, b) => a - b);
  const median = linear.length ? linear[Math.floor(linear.length / 2)] : 1;
  input.log(`sensitivity of ${points.size} groups probed in one pass (${cells.length} removals)`);
  return new Map(
    [...curves].map(([g, c]) => {
      const f = fits.get(g) ?? { a: median, p: 1 };
      return [g, { order: c.order, cost: c.errors.map((e) => f.a * e ** f.p) }];
    }),
  );
}

/** A group's key across steps: its kind and a weight it slices (names stay; the Group object is each step's own). */
const sensitivityKey = (g: Group) => `${g.kind} ${g.constantSlots.map((s) => s.tensor).sort()[0] ?? g.where}`;

/** loss = a·E^p by least squares on logarithms; p clamped to [1, MAX_POWER] (one point: p = 1). */
function powerFit(points: { error: number; loss: number }[]): { a: number; p: number } {
  const xs = points.map((q) => Math.log(q.error));
  const ys = points.map((q) => Math.log(q.loss));
  const n = points.length;
  const [mx, my] = [xs.reduce((a, b) => a + b, 0) / n, ys.reduce((a, b) => a + b, 0) / n];
  const sxx = xs.reduce((t, x) => t + (x - mx) ** 2, 0);
  const sxy = xs.reduce((t, x, i) => t + (x - mx) * (ys[i] - my), 0);
  const p = n > 1 && sxx > 0 ? Math.min(MAX_POWER, Math.max(1, sxy / sxx)) : 1;
  return { a: Math.exp(my - p * mx), p };
}
