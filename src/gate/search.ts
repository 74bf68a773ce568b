import type { OnnxModel } from '../onnx/model';
import type { AllocationResult, PassEntry, PruneResult, PrunedEntry, SkippedEntry } from '../prune/types';
import { MetricResult, Verdict, brokenBounds, passesQuality, verdictOf } from './gate';
import { clock } from '../util/progress';
import { UserError } from '../errors';

/**
 * The gradual search (docs/contracts.md). Candidates at cumulative ratios (fractions of the ORIGINAL
 * model's parameters) max/steps, 2 max/steps, ... max; each is pruned from the previous one,
 * quantized if asked, and evaluated.
 * - target auto: a step that breaks a quality bound stops the search (quality only gets worse
 *   with the ratio); one that breaks only efficiency bounds does not (they only get better).
 *   The result is the largest step passing every bound; if none does, the verdict is fail and
 *   the result is the largest step passing the quality bounds, else the first step.
 * - fixed target: every step is evaluated and reported; the result and verdict are the last one's.
 */

export interface StepInfo {
  /** 1-based. */
  index: number;
  count: number;
  /** Cumulative fraction of the original model's parameters removed. */
  ratio: number;
}

export interface StepOutcome {
  /** The step's target: the cumulative fraction of the original model's parameters asked to go. */
  ratio: number;
  /** The cumulative fraction of the original model's parameters actually removed (counted). */
  removed: number;
  /** Why `removed` falls short of `ratio` by more than the plans' window, when it does. */
  short?: string;
  metrics: MetricResult[];
  /** Passes every bound. */
  pass: boolean;
  /** Passes every quality bound. */
  qualityPass: boolean;
  /** The step's passes over the calibration set, as its pruning listed them. */
  passes?: PassEntry[];
}

export interface CandidateEvaluation<A> {
  metrics: MetricResult[];
  /** What stands for this candidate outside the search (e.g. its written file), kept if chosen. */
  artifact: A;
  /** The model to prune the next step from, if not the pruned model in memory (e.g. re-read lazily). */
  next?: OnnxModel;
  /** Passes over the calibration set the evaluation made (none when it reused the pruning's). */
  passes?: PassEntry[];
}

export interface SearchDeps<A> {
  /** Removes `target` (a fraction of `model`'s own parameters) from `model`. */
  prune(model: OnnxModel, target: number, step: StepInfo): Promise<PruneResult>;
  /** Applied to each pruned model before it is evaluated (identity when quantize is none). */
  quantize(model: OnnxModel, step: StepInfo): Promise<OnnxModel>;
  evaluate(candidate: OnnxModel, step: StepInfo): Promise<CandidateEvaluation<A>>;
  /** Drops a candidate that can no longer be the result (its files, say). */
  discard(artifact: A): Promise<void> | void;
  log?(line: string): void;
  /** Seconds the search should still take after `done` steps (NaN when unknown): the progress lines' estimate. */
  remaining?(done: number): number;
}

export interface SearchResult<A> {
  steps: StepOutcome[];
  /** Index into steps of the result. */
  chosen: number;
  verdict: Verdict;
  artifact: A;
  /** What was removed, from the base model to the result (merged over its steps). */
  pruned: PrunedEntry[];
  skipped: SkippedEntry[];
  /** How the result's last pruning step allocated its removals. */
  allocation?: AllocationResult;
}

/** Cumulative ratios of the steps: auto goes to max-target, a fixed target to itself. */
export function stepRatios(target: number | 'auto', maxTarget: number, steps: number): number[] {
  const end = target === 'auto' ? maxTarget : target;
  if (end === 0) return [0]; // nothing pruned: one candidate, the (quantized) base
  const n = Math.max(1, Math.floor(steps));
  // Rounded so that 3 x 0.2 is reported as 0.6, not 0.6000000000000001.
  return Array.from({ length: n }, (_, i) => Math.round(((i + 1) * end * 1e9) / n) / 1e9);
}

/**
 * The fraction of the current model's parameters to remove so that `ratio` of the original's is
 * gone in total: from `current` left of `original`, keep original x (1 - ratio).
 */
export function incrementalTarget(original: number, current: number, ratio: number): number {
  if (current <= 0) return 0;
  return Math.max(0, 1 - (original * (1 - ratio)) / current);
}

export async function gradualSearch<A>(
  base: OnnxModel,
  baseParams: number,
  mode: 'auto' | 'fixed',
  ratios: readonly number[],
  deps: SearchDeps<A>,
): Promise<SearchResult<A>> {
  const steps: StepOutcome[] = [];
  const artifacts: A[] = [];
  // What the report needs of each step's pruning (not its model: a step's model is let go once the next step is pruned from it).
  const results: Pick<PruneResult, 'pruned' | 'skipped' | 'allocation'>[] = [];
  const alive = new Set<number>();
  let current = base;
  let currentParams = baseParams;
  for (const [i, ratio] of ratios.entries()) {
    const step: StepInfo = { index: i + 1, count: ratios.length, ratio };
    const left = deps.remaining?.(i) ?? NaN;
    deps.log?.(`step ${step.index} of ${step.count}: pruning towards ${percent(ratio)} of the parameters in total${Number.isFinite(left) ? ` (the search: about ${clock(left)} left)` : ''}`);
    const target = incrementalTarget(baseParams, currentParams, ratio);
    const result = target > 1e-9 ? await deps.prune(current, target, step) : unchanged(current, currentParams);
    const removed = baseParams > 0 ? (baseParams - result.paramsAfter) / baseParams : 0;
    const short = removed < ratio - SHORT_OF_TARGET || (ratio > 0 && removed <= 0) ? (result.short ?? steps[i - 1]?.short ?? 'the engine removed less than asked') : undefined;
    deps.log?.(`step ${step.index} of ${step.count}: ${removedText(removed, ratio)} of the parameters removed${short ? `, short of the target: ${short}` : ''}`);
    const candidate = await deps.quantize(result.model, step);
    deps.log?.(`step ${step.index} of ${step.count}: evaluating`);
    const evaluation = await deps.evaluate(candidate, step);
    const outcome: StepOutcome = {
      ratio,
      removed,
      ...(short ? { short } : {}),
      metrics: evaluation.metrics,
      pass: verdictOf(evaluation.metrics) === 'pass',
      qualityPass: passesQuality(evaluation.metrics),
      ...(result.passes || evaluation.passes ? { passes: [...(result.passes ?? []), ...(evaluation.passes ?? [])] } : {}),
    };
    steps.push(outcome);
    artifacts.push(evaluation.artifact);
    alive.add(i);
    results.push({ pruned: result.pruned, skipped: result.skipped, allocation: result.allocation });
    const verdict = outcome.pass ? 'passes' : `${outcome.qualityPass ? 'fails an efficiency bound' : 'fails a quality bound'}: ${brokenBounds(outcome.metrics).join('; ')}`;
    deps.log?.(`step ${step.index} of ${step.count}: ${verdict}`);
    await keepOnly(candidatesToKeep(steps, mode), alive, artifacts, deps);
    if (mode === 'auto' && !outcome.qualityPass) break;
    current = evaluation.next ?? result.model;
    currentParams = result.paramsAfter;
  }
  const chosen = chooseStep(steps, mode);
  await keepOnly(new Set([chosen]), alive, artifacts, deps);
  const kept = steps[chosen];
  // A gate asked to prune that removed nothing has nothing to judge: never a pass.
  if (kept.ratio > 0 && kept.removed <= 0) {
    const later = steps.length > chosen + 1 ? '; the steps after it failed their bounds' : '';
    throw new UserError(`nothing was removed: step ${chosen + 1} (target ${percent(kept.ratio)}) removed no parameters: ${kept.short ?? 'the engine removed nothing'}${later}`);
  }
  return {
    steps,
    chosen,
    verdict: steps[chosen].pass ? 'pass' : 'fail',
    artifact: artifacts[chosen],
    pruned: mergePruned(results.slice(0, chosen + 1).map((r) => r.pruned)),
    skipped: mergeSkipped(results.slice(0, chosen + 1).map((r) => r.skipped)),
    allocation: results[chosen]?.allocation,
  };
}

/** The step that is the result (see the module comment). */
export function chooseStep(steps: readonly StepOutcome[], mode: 'auto' | 'fixed'): number {
  if (mode === 'fixed') return steps.length - 1;
  const lastIndex = (f: (s: StepOutcome) => boolean) => steps.map(f).lastIndexOf(true);
  const passing = lastIndex((s) => s.pass);
  if (passing >= 0) return passing;
  const quality = lastIndex((s) => s.qualityPass);
  return quality >= 0 ? quality : 0;
}

/** The steps that could still become the result, so the others' artifacts can go now. */
function candidatesToKeep(steps: readonly StepOutcome[], mode: 'auto' | 'fixed'): Set<number> {
  if (mode === 'fixed') return new Set([steps.length - 1]);
  const keep = new Set<number>([0, steps.length - 1]);
  const passing = steps.map((s) => s.pass).lastIndexOf(true);
  const quality = steps.map((s) => s.qualityPass).lastIndexOf(true);
  if (passing >= 0) keep.add(passing);
  if (quality >= 0) keep.add(quality);
  return keep;
}

/** Discards the artifact of every live step not in `keep`. */
async function keepOnly<A>(keep: Set<number>, alive: Set<number>, artifacts: A[], deps: SearchDeps<A>): Promise<void> {
  for (const i of [...alive]) {
    if (keep.has(i)) continue;
    alive.delete(i);
    await deps.discard(artifacts[i]);
  }
}

function unchanged(model: OnnxModel, params: number): PruneResult {
  return { model, pruned: [], skipped: [], paramsBefore: params, paramsAfter: params };
}

/** Units removed at each place over several steps: first `before`, last `after`, params summed. */
export function mergePruned(steps: readonly PrunedEntry[][]): PrunedEntry[] {
  const merged = new Map<string, PrunedEntry>();
  for (const entries of steps) {
    for (const e of entries) {
      const key = `${e.kind}\u0000${e.where}`;
      const seen = merged.get(key);
      if (seen) merged.set(key, { ...seen, after: e.after, params: seen.params + e.params });
      else merged.set(key, { ...e });
    }
  }
  return [...merged.values()];
}

export function mergeSkipped(steps: readonly SkippedEntry[][]): SkippedEntry[] {
  const seen = new Map<string, SkippedEntry>();
  // A later step may name a place with more ops ("... and 36 more" where the first said 34: the
  // biases compensation added); the latest description of the same place wins.
  const place = (where: string) => where.replace(/ and \d+ more\)?$/, '');
  for (const entries of steps) for (const e of entries) seen.set(`${place(e.where)}\u0000${e.reason}`, e);
  return [...seen.values()];
}

function percent(r: number): string {
  return `${Math.round(r * 1000) / 10} %`;
}

/**
 * How far a step may land below its target without being called short: two of the plans'
 * windows (0.25 % of the model each, prune/index.ts), as the candidates of a step may differ.
 */
export const SHORT_OF_TARGET = 0.005;

/** The share removed, with the target beside it where the two differ as shown: "24.1 % (target 30 %)". */
export function removedText(removed: number, target: number): string {
  return percent(removed) === percent(target) ? percent(removed) : `${percent(removed)} (target ${percent(target)})`;
}
