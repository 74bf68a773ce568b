import { Analysis, Group } from '../graph/analysis';
import { OnnxModel } from '../onnx/model';
import { countParams } from '../graph/cost';
import { Feeds } from '../onnx/runtime';
import { FixFailure, applyRemoval } from './apply';
import { compensate } from './compensate';
import { DamageCurve, PlanInput, Removal, alignRemovals, alignedPlan, planByCurves, planCounts, planRemoval, planUniform, rankedUnits } from './plan';
import type { PassRecord } from '../util/passes';
import { ChannelStats, Consumer, collectStats, requestedTensors, statsRequests } from './stats';
import { PassProgress } from '../util/progress';
import { Allocation, AllocationResult, Compensation, CompensationChoice, DamageMeasure } from './types';

type Strategy = Exclude<Allocation, 'auto'>;

/**
 * Above this many parameters a search measures only the whole candidates (no per-group damage
 * profile), each on a share of the calibration set, and does not try reconstruction in `auto`:
 * with the statistics pass, the search then costs at most 3 passes over the calibration set.
 */
export const SEARCH_MAX_PARAMS = 50e6;
/** Widths tried with `align: auto` (the vector widths of common CPU kernels). */
const ALIGN_STEPS = [8, 16];
/** Candidates timed at most (by increasing loss) before keeping the fastest one. */
const MAX_TIMED = 6;
/** Ratios of a group's units at which its damage is measured for the `measured` allocation. */
const PROFILE_RATIOS = [0.25, 0.5, 0.75];

export interface AllocationInput {
  model: OnnxModel;
  analysis: Analysis;
  plan: PlanInput;
  consumers: ReadonlyMap<Group, Consumer[]>;
  /** Channel means and variances of every consumer's input (bias compensation's statistics). */
  stats: Map<string, ChannelStats>;
  params: number;
  allocation: Allocation;
  compensate: CompensationChoice;
  /** Keep only a candidate not slower than the base on this machine, trying aligned widths (align: auto). */
  alignAuto?: boolean;
  damage?: DamageMeasure;
  calibration?: () => AsyncIterable<Feeds> | Iterable<Feeds>;
  calibrationBatches?: number;
  passes: PassRecord;
  log: (line: string) => void;
}

export interface AllocationChoice {
  removals: Removal[];
  compensate: Compensation;
  /** Statistics the chosen compensation needs (with covariances for reconstruction). */
  stats: Map<string, ChannelStats>;
  allocation?: AllocationResult;
}

/**
 * Decides which units go, and which compensation repairs the rest. With a damage measure and
 * `auto`, every applicable allocation is built, compensated and measured on the calibration
 * data, and the least damaging kept, so the result is never worse there than the simple
 * strategies (uniform, FFN-only) or FLAP's global ranking; `auto` compensation then also tries
 * least-squares reconstruction on the winner. Without a measure, the allocation asked for (global
 * when auto) and bias compensation for `auto`.
 */
export async function chooseAllocation(input: AllocationInput): Promise<AllocationChoice> {
  const { plan, damage, log } = input;
  const ranked = rankedUnits(plan.groups, plan.scores);
  const fixedMode: Compensation = input.compensate === 'auto' ? (input.calibration ? 'bias' : 'none') : input.compensate;
  const buildPlan = (strategy: Strategy): { removals: Removal[]; params: number } | undefined => {
    const reached = (p: { removals: Removal[]; params: number }) => (p.params >= plan.targetParams - plan.slack ? p : undefined);
    switch (strategy) {
      case 'global':
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
      case 'measured':
        return undefined; // built from measurements below
    }
  };

  /**
   * The strategy asked for (global for auto or measured), as it is, with `fixedMode`: what is
   * built when nothing is measured. `collected`: statistics already collected for every group.
   */
  const asAsked = async (measure: string, tried: AllocationResult['tried'], collected?: Map<string, ChannelStats>): Promise<AllocationChoice> => {
    const strategy: Strategy = input.allocation === 'auto' || input.allocation === 'measured' ? 'global' : input.allocation;
    const chosen = buildPlan(strategy);
    const fallback = chosen ?? planRemoval(plan);
    return {
      removals: fallback.removals,
      compensate: fixedMode,
      stats: collected ?? (await statsFor(input, fixedMode, fallback.removals)),
      allocation: { strategy: chosen ? strategy : 'global', compensate: fixedMode, measure, tried, align: plan.align ?? 1 },
    };
  };

  // Without a measure nothing is searched.
  if (!damage || plan.targetParams <= 0) {
    return asAsked(damage ? 'nothing to remove' : 'nothing measured: no calibration data to measure damage on', []);
  }

  const large = input.params > SEARCH_MAX_PARAMS;
  const candidates: { strategy: Strategy; removals: Removal[]; params: number; note?: string; align?: number }[] = [];
  const tried: AllocationResult['tried'] = [];
  // auto: every strategy; a strategy asked for: that one alone (still measured for compensation
  // and widths).
  const wanted = (s: Strategy) => input.allocation === 'auto' || input.allocation === s;
  for (const strategy of (['global', 'uniform', 'ffn-only'] as const).filter(wanted)) {
    const p = buildPlan(strategy);
    if (p) candidates.push({ strategy, ...p });
    else if (strategy !== 'ffn-only' || plan.groups.some((g) => g.kind === 'ffn')) tried.push({ strategy, compensate: fixedMode, loss: null, params: 0, note: 'cannot reach the target' });
  }
  // The compensations each candidate is measured with: `auto` tries both on models small enough
  // (reconstruction's covariances for every group's consumers, collected once for all).
  const allGroups = plan.groups.map((group) => ({ group, units: [], params: 0 }));
  const modes: Compensation[] = input.compensate === 'auto' ? (input.calibration && !large ? ['bias', 'reconstruct'] : [fixedMode]) : [fixedMode];
  const statsByMode = new Map<Compensation, Map<string, ChannelStats>>();
  for (const m of modes) statsByMode.set(m, await statsFor(input, m, allGroups));
  const build = (removals: Removal[], mode: Compensation, stats: Map<string, ChannelStats>): OnnxModel | undefined => {
    try {
      return applyRemoval(input.analysis, removals, (copy) => void compensate(copy, input.analysis, removals, input.consumers, stats, mode)).model;
    } catch (e) {
      if (e instanceof FixFailure) return undefined;
      throw e;
    }
  };
  /** A candidate's loss; Infinity for one onnxruntime rejects (never chosen; verification reports it). */
  const measure = async (removals: Removal[], mode: Compensation, stats: Map<string, ChannelStats>, share: number): Promise<number> => {
    const candidate = build(removals, mode, stats);
    if (!candidate) return Infinity;
    // A pass like the statistics: recorded and replayed with them (util/passes.ts).
    return input.passes.pass(`${damage.name} of a candidate of ${countParams(candidate)} parameters (${mode}) on ${share} of the set`, () => damage.loss(candidate, share).catch(() => Infinity));
  };
  if (large && input.allocation === 'measured') {
    tried.push({ strategy: 'measured', compensate: fixedMode, loss: null, params: 0, note: `not profiled: above ${SEARCH_MAX_PARAMS / 1e6} M parameters` });
  }
  if (!large && wanted('measured')) {
    // Damage profile: each group alone at a few ratios, then the cheapest units first; once per
    // compensation, since what a compensation repairs well differs from group to group.
    log(`measuring each of ${plan.groups.length} groups' damage at ${PROFILE_RATIOS.length} ratios (${damage.name})`);
    const baseLoss = await input.passes.pass(`${damage.name} of the model before this step`, () => damage.loss(input.model, 1));
    for (const mode of modes) {
      const curves = new Map<Group, DamageCurve>();
      for (const g of plan.groups) {
        const counts = [...new Set(PROFILE_RATIOS.map((r) => Math.min(g.units.length - 1, Math.max(1, Math.round(r * g.units.length)))))];
        const curve: DamageCurve = { counts: [0], losses: [baseLoss] };
        for (const count of counts) {
          const { removals } = planCounts({ ...plan, groups: [g] }, ranked, new Map([[g, count]]));
          curve.counts.push(count);
          curve.losses.push(await measure(removals, mode, statsByMode.get(mode)!, 1));
        }
        curves.set(g, curve);
      }
      const byCurves = alignRemovals(plan, planByCurves(plan, ranked, curves).removals);
      if (byCurves.params >= plan.targetParams - plan.slack) candidates.push({ strategy: 'measured', ...byCurves, note: `damage profiled with ${mode} compensation` });
    }
  }

  // Widths that run fast: each candidate also rounded to multiples of 8 and of 16 (narrow
  // groups of 16 included), when those still meet the target.
  // Large models are not timed (each run costs seconds; FFN and head widths do not leave fast
  // matrix kernels the way odd convolution channel counts do).
  const speed = !!input.alignAuto && !!damage.latency && !large;
  if (speed) {
    for (const c of [...candidates]) {
      for (const align of ALIGN_STEPS) {
        const aligned = alignedPlan(plan, ranked, c.removals, align);
        if (aligned) candidates.push({ ...c, ...aligned, align });
      }
    }
  }

  // Each distinct plan is measured once per compensation (global and uniform can coincide).
  const share = large ? Math.min(1, 2 / Math.max(1, candidates.length)) : 1;
  const signature = (removals: Removal[]) =>
    removals
      .map((r) => `${r.group.id}:${r.units.map((u) => r.group.units.indexOf(u)).join(',')}`)
      .sort()
      .join('|');
  const label = (c: (typeof candidates)[number]) => `${c.strategy}${c.align ? ` aligned to ${c.align}` : ''}`;
  const seen = new Map<string, number>();
  const measured: { c: (typeof candidates)[number]; mode: Compensation; loss: number; entry: AllocationResult['tried'][number] }[] = [];
  for (const c of candidates) {
    for (const mode of modes) {
      const key = `${mode} ${signature(c.removals)}`;
      if (seen.has(key)) continue;
      const loss = await measure(c.removals, mode, statsByMode.get(mode)!, share);
      seen.set(key, loss);
      const entry = { strategy: c.strategy, compensate: mode, loss: Number.isFinite(loss) ? loss : null, params: c.params, ...(c.align ? { align: c.align } : {}), ...(c.note ? { note: c.note } : {}) };
      tried.push(entry);
      measured.push({ c, mode, loss, entry });
      log(`allocation ${label(c)}, compensation ${mode}: ${damage.name}${Number.isNaN(loss) ? '' : Number.isFinite(loss) ? ` ${loss.toPrecision(4)}` : ' not measurable'} (${c.params} parameters)`);
    }
  }
  measured.sort((a, b) => a.loss - b.loss);
  if (measured.length === 0 || !Number.isFinite(measured[0].loss)) {
    // Nothing measurable: as without a measure, with the statistics already collected (one pass, as when measured).
    return asAsked(damage.name, tried, statsByMode.get(fixedMode));
  }
  // The least damaging candidate that is not slower than the base here (align: auto), else the
  // fastest of those timed.
  let best = measured[0];
  let latency: number | undefined;
  if (speed) {
    let fastest: { m: (typeof measured)[number]; ratio: number } | undefined;
    let fast: (typeof measured)[number] | undefined;
    for (const m of measured.slice(0, MAX_TIMED).filter((x) => Number.isFinite(x.loss))) {
      const model = build(m.c.removals, m.mode, statsByMode.get(m.mode)!);
      const ratio = model ? await damage.latency!(model) : Infinity;
      m.entry.latency = ratio;
      log(`latency of ${label(m.c)}/${m.mode}: ${ratio.toFixed(3)}x the base's`);
      if (!fastest || ratio < fastest.ratio) fastest = { m, ratio };
      if (ratio <= 1) {
        fast = m;
        break;
      }
    }
    if (!fast && fastest) log(`no candidate timed ran as fast as the base here; keeping the fastest (${fastest.ratio.toFixed(3)}x)`);
    best = fast ?? fastest?.m ?? best;
    latency = best.entry.latency;
  }
  const align = best.c.align ?? plan.align ?? 1;
  const why = latency === undefined ? `least ${damage.name} on the calibration set` : latency <= 1 ? `least ${damage.name} on the calibration set, not slower than the base` : 'the fastest timed';
  log(`allocation: ${best.c.strategy}, compensation ${best.mode}${align > 1 ? `, widths multiples of ${align}` : ''} (${why})`);
  return {
    removals: best.c.removals,
    compensate: best.mode,
    stats: statsByMode.get(best.mode)!,
    allocation: { strategy: best.c.strategy, compensate: best.mode, measure: damage.name, tried, align, ...(latency !== undefined ? { latency } : {}) },
  };
}

/** The statistics a compensation needs: reconstruction collects its consumers' covariances (one pass). */
async function statsFor(input: AllocationInput, mode: Compensation, removals: Removal[]): Promise<Map<string, ChannelStats>> {
  if (mode !== 'reconstruct' || !input.calibration) return input.stats;
  const chosen = removals.flatMap((r) => input.consumers.get(r.group) ?? []);
  const requests = statsRequests(chosen, true);
  const calibration = input.calibration;
  return input.passes.pass(`activation covariances of ${requestedTensors(requests)}`, () => {
    input.log('collecting activation covariances for least-squares reconstruction');
    const progress = input.calibrationBatches ? new PassProgress('activation covariances', input.calibrationBatches, input.log) : undefined;
    return collectStats(input.model, requests, calibration, progress);
  });
}
