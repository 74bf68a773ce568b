import { Analysis, Group, analyze, traceTwice } from '../graph/analysis';
import { countParams } from '../graph/cost';

import { OnnxModel } from '../onnx/model';
import { UserError } from '../errors';
import { FixFailure, applyRemoval } from './apply';
import { Removal, planRemoval } from './plan';
import { AxisNorms, magnitudeScores, standardize } from './score';
import { verifyPruned } from './verify';
import { PruneOptions, PruneResult, PrunedEntry, SkippedEntry, Structure } from './types';

export * from './types';

/** Attempts before giving up on a group that keeps breaking shapes. */
const MAX_ATTEMPTS = 4;

/**
 * Removes `options.target` of the model's parameters as whole structures. The input model is
 * not changed. Groups whose removal cannot be made consistent are frozen and reported in
 * `skipped`; the returned model always loads and keeps its output shapes.
 */
export async function pruneModel(model: OnnxModel, options: PruneOptions): Promise<PruneResult> {
  const log = options.log ?? (() => undefined);
  if (!(options.target >= 0 && options.target < 1)) {
    throw new UserError(`target must be a fraction of parameters between 0 and 1 (got ${options.target})`);
  }
  if (options.importance === 'activation' && !options.calibration) {
    throw new UserError('importance "activation" needs calibration data: give --calibration DIR, or use --importance magnitude');
  }
  const paramsBefore = countParams(model);
  const traces = await traceTwice(model);
  const frozen: { tensor: string; axis: number; reason: string }[] = [];
  const extraSkipped: SkippedEntry[] = [];

  for (let attempt = 1; ; attempt++) {
    log(`analyzing the graph${attempt > 1 ? ` (attempt ${attempt})` : ''}`);
    const analysis = await analyze(model, { traces, frozen });
    const groups = analysis.groups.filter((g) => options.structures.includes(g.kind));
    const skipped = [...describeSkipped(analysis, options.structures), ...extraSkipped];
    const scores = scoreGroups(analysis, groups);
    const targetParams = options.target * paramsBefore;
    const { removals } = planRemoval({
      groups,
      scores,
      targetParams,
      slack: 0.01 * paramsBefore,
      slots: analysis.space.slots,
      paramDims: (t) => analysis.model.constantInfo(t)?.dims,
    });
    if (removals.length === 0) {
      return { model: model.clone(), pruned: [], skipped, paramsBefore, paramsAfter: paramsBefore };
    }
    log(`removing ${removals.reduce((n, r) => n + r.units.length, 0)} units from ${removals.length} groups`);
    let failure: { message: string; groups: Group[] } | undefined;
    let applied;
    try {
      applied = applyRemoval(analysis, removals);
    } catch (e) {
      if (!(e instanceof FixFailure)) throw e;
      failure = { message: e.message, groups: groupsTouching(analysis, removals, e.tensors) };
    }
    if (applied) {
      const problem = await verifyPruned(applied.model, traces);
      if (!problem) {
        const paramsAfter = countParams(applied.model);
        return { model: applied.model, pruned: describePruned(removals), skipped, paramsBefore, paramsAfter };
      }
      failure = { message: problem, groups: await culprits(analysis, removals, traces) };
    }
    if (attempt >= MAX_ATTEMPTS || failure!.groups.length === 0) {
      throw new Error(`pruning produced an invalid model and no culprit could be isolated: ${failure!.message}`);
    }
    for (const g of failure!.groups) {
      log(`leaving ${g.where} alone: ${failure!.message}`);
      extraSkipped.push({ where: g.where, reason: failure!.message });
      for (const s of g.slots) frozen.push({ tensor: s.tensor, axis: s.axis, reason: failure!.message });
    }
  }
}

function scoreGroups(analysis: Analysis, groups: Group[]): Map<Group, Float64Array> {
  const norms = new AxisNorms(analysis);
  return new Map(groups.map((g) => [g, standardize(magnitudeScores(g, norms))]));
}

function groupsTouching(analysis: Analysis, removals: Removal[], tensors: string[]): Group[] {
  const names = new Set(tensors);
  return removals.filter((r) => r.group.slots.some((s) => names.has(s.tensor))).map((r) => r.group);
}

/** Applies each group's removal alone to find the ones that break the model. */
async function culprits(analysis: Analysis, removals: Removal[], traces: Analysis['traces']): Promise<Group[]> {
  const bad: Group[] = [];
  for (const r of removals) {
    try {
      const one = applyRemoval(analysis, [r]);
      if (await verifyPruned(one.model, traces)) bad.push(r.group);
    } catch (e) {
      if (!(e instanceof FixFailure)) throw e;
      bad.push(r.group);
    }
  }
  return bad;
}

function describePruned(removals: Removal[]): PrunedEntry[] {
  return removals.map(({ group, units, params }) => ({
    kind: group.kind,
    where: group.where,
    before: group.units.length,
    after: group.units.length - units.length,
    params,
  }));
}

/** Skipped places, merged by place and reason, plus groups of structures not asked for. */
function describeSkipped(analysis: Analysis, structures: Structure[]): SkippedEntry[] {
  const merged = new Map<string, SkippedEntry>();
  for (const s of analysis.skipped) {
    const key = `${s.where}\u0000${s.reason}`;
    if (!merged.has(key)) merged.set(key, { where: s.where, reason: s.reason });
  }
  for (const g of analysis.groups) {
    if (!structures.includes(g.kind)) merged.set(g.where, { where: g.where, reason: `${g.kind} not in the structures asked for` });
  }
  return [...merged.values()];
}

