import * as path from 'path';
import { Analysis, Group, analyze, traceTwice } from '../graph/analysis';
import { GraphIndex, Node, nodeLabel } from '../graph/graph';
import { nodeReads } from '../onnx/reads';
import { countParams } from '../graph/cost';
import { ruleOf } from '../graph/rules';
import { NOT_LIFTED_FORMAT, QUANTIZED_NOT_PRUNABLE, QuantizedWeight, liftBlocker, quantizedWeights } from '../graph/quantized';
import { isFloatDType } from '../onnx/dtype';
import { OnnxModel } from '../onnx/model';
import { UserError } from '../errors';
import { FixFailure, SlicedEntries, applyRemoval } from './apply';
import type { BuiltCandidate } from './allocate';
import { CompensationEdits, applyCompensation } from './compensate';
import { InverseCovariances, consumerKey, dampingKind, kindHasDamping, refittable } from './obs';
import { DenseMath } from '../onnx/linalg';
import { chooseAllocation } from './allocate';
import { ParamLedger, Removal } from './plan';
import { AxisNorms, magnitudeScores, scoreScale, standardize } from './score';
import { applyNormRefits, measureNorms, normsToRefit } from './renorm';
import { RUN_PASSES } from '../util/passes';
import { PassLedger } from './ledger';
import type { Feeds } from '../onnx/runtime';
import { ChannelStats, CollectedStats, Consumer, StatsRequest, StatsTap, channelVariance, collectStats, findConsumers, requestedTensors, statsRequests } from './stats';
import { verifyPruned } from './verify';
import { pruneWithBlocks } from './depth';
import { findBlocks } from '../graph/blocks';
import { PassProgress } from '../util/progress';
import { Compensation, PruneMemory, PruneOptions, PruneResult, PrunedEntry, SkippedEntry, Structure, newPruneMemory } from './types';

export * from './types';
export { PassRecording, PassReplay, RUN_PASSES, type PassRecord } from '../util/passes';

/** How far a plan may land from its target: 0.25 % of the model's parameters (two candidates within 0.5 % of each other). */
const PLAN_SLACK = 0.0025;

/** Plans tried before giving up on making a valid pruned model (each failure freezes something). */
const MAX_ATTEMPTS = 8;

/**
 * Removes `options.target` of the model's parameters as whole structures, in `options.steps`
 * increments (statistics re-collected on the partly pruned model before each). The input model
 * is not changed. Groups whose removal cannot be made consistent are frozen and reported in
 * `skipped`; the returned model always loads and keeps its output shapes.
 */
export async function pruneModel(model: OnnxModel, options: PruneOptions): Promise<PruneResult> {
  if (!(options.target >= 0 && options.target < 1)) {
    throw new UserError(`target must be a fraction of parameters between 0 and 1 (got ${options.target})`);
  }
  const needsData = options.importance === 'activation' || (options.compensate !== 'none' && options.compensate !== 'auto');
  if (needsData && !options.calibration) {
    throw new UserError(
      `importance "${options.importance}" with compensation "${options.compensate}" needs calibration data: give a calibration set, or use magnitude importance without compensation`,
    );
  }
  const nothing = options.target > 0 ? noFloatWeights(model) : undefined;
  if (nothing) throw new UserError(`${modelName(model)}: nothing to prune: ${nothing}`);
  // Whole blocks first (depth.ts), then the widths asked for, by this same function.
  if (options.structures.includes('blocks')) return pruneWithBlocks(model, options, pruneModel);
  const steps = Math.max(1, Math.floor(options.steps ?? 1));
  options = { ...options, memory: options.memory ?? newPruneMemory() };
  const paramsBefore = countParams(model);
  let current = model;
  let result: PruneResult | undefined;
  const pruned: PrunedEntry[] = [];
  const compensations: Compensation[] = [];
  let sliced: SlicedEntries[] = [];
  for (let k = 1; k <= steps; k++) {
    // Each step removes its share of the base's parameters from what is left.
    const goal = (options.target * k) / steps;
    const have = countParams(current);
    const stepTarget = have > 0 ? Math.max(0, (have - paramsBefore * (1 - goal)) / have) : 0;
    if (steps > 1) options.log?.(`pruning step ${k} of ${steps}: towards ${(goal * 100).toFixed(1)} % of the parameters`);
    result = await pruneOnce(current, { ...options, target: stepTarget });
    pruned.push(...result.pruned);
    if (result.pruned.length > 0 && result.allocation) compensations.push(result.allocation.compensate);
    sliced = composeSliced(sliced, result.sliced ?? [], model);
    current = result.model;
  }
  return { ...result!, pruned: mergePruned(pruned), compensations, sliced, paramsBefore, paramsAfter: countParams(current) };
}

/**
 * What the steps sliced out of the input model's constants: a later step's indices (of its own
 * input, what the earlier steps kept) mapped back to the input's.
 */
function composeSliced(earlier: SlicedEntries[], step: SlicedEntries[], input: OnnxModel): SlicedEntries[] {
  const byKey = new Map(earlier.map((e) => [`${e.tensor}\0${e.axis}`, e]));
  for (const e of step) {
    const key = `${e.tensor}\0${e.axis}`;
    const before = byKey.get(key);
    const size = input.constantInfo(e.tensor)?.dims[e.axis];
    if (!before || size === undefined) {
      byKey.set(key, e);
      continue;
    }
    const gone = new Set(before.indices);
    const kept: number[] = [];
    for (let i = 0; i < size; i++) if (!gone.has(i)) kept.push(i);
    byKey.set(key, { ...e, indices: [...before.indices, ...e.indices.map((i) => kept[i])].sort((a, b) => a - b) });
  }
  return [...byKey.values()];
}

/** Whether a step reads activation statistics: for activation importance, or to compensate. */
const readsStatistics = (options: PruneOptions) => !!options.calibration && (options.importance === 'activation' || options.compensate !== 'none');

/**
 * What a step's statistics pass reads of `model`: each group's consumers, the inputs of the
 * normalizations over a width that may shrink (their scale and bias are refit from them,
 * renorm.ts, so the pass keeps them whole), and `requestsFor(removed)`: every consumer's input,
 * with its covariance where it can be refit (and every other batch's sums, for consumers whose
 * damping is still to be chosen), channels as `removed` leaves them.
 */
function statisticsPlan(model: OnnxModel, analysis: Analysis, groups: Group[], options: PruneOptions) {
  const consumers = new Map(groups.map((g) => [g, findConsumers(analysis, g)]));
  const renorms = !!options.calibration && options.compensate !== 'none';
  const normInputs = renorms ? [...new Set(normsToRefit(analysis, groups.map((g) => ({ group: g, units: g.units, params: 0 }))).map((r) => r.stats.input))] : [];
  const refits = options.compensate === 'auto' || options.compensate === 'reconstruct';
  const readers = (t: string) => analysis.index.consumersOf(t).length;
  const dampings = options.memory?.dampings;
  const requestsFor = (removed: Removal[]): StatsRequest[] => {
    const gone = new Map<number, number>();
    for (const r of removed) for (const u of r.units) for (const [slot, indices] of u.indices) gone.set(slot, (gone.get(slot) ?? 0) + indices.length);
    // Every other batch's sums (a second C x C covariance) only for the consumer whose damping
    // its kind will take (obs.ts dampingOf): on BERT-base the other eleven FFN projections' would
    // hold 440 MB through the pass for nothing.
    const kinds = new Set<string>();
    return [...consumers.values()].flat().map((c) => {
      const channels = c.inputSlot.size - (gone.get(c.inputSlot.id) ?? 0);
      const outputs = Number(model.constantInfo(c.weight)?.dims[c.use.weightOut] ?? 0);
      const kind = dampingKind(c.node.opType, channels, outputs);
      const gram = refits && refittable(c, model, readers);
      const chooses = gram && !dampings?.has(consumerKey(c)) && !kinds.has(kind) && !(dampings && kindHasDamping(dampings, kind));
      if (gram) kinds.add(kind);
      const [r] = statsRequests([c], gram, () => chooses);
      return { ...r, channels };
    });
  };
  return { consumers, normInputs, requestsFor };
}

/**
 * The first step's statistics, collected by a pass the caller makes anyway over the same
 * batches of `options.calibration`, in order (the gate's evaluation of the base model): a tap for
 * that pass, whose collection the first step then reads instead of a pass of its own
 * (`options.memory.ready`). Undefined when the step reads no statistics. `runs`: the model that
 * pass runs, when it is not `model` itself but computes the same activations under the same
 * names (a quantized model, whose weights `model` holds as float); undefined too when it lacks
 * one of the tensors the step reads.
 */
export async function firstStatisticsTap(model: OnnxModel, options: PruneOptions, runs: OnnxModel = model): Promise<StatsTap | undefined> {
  if (!readsStatistics(options) || !options.memory) return undefined;
  const analysis = await analyze(model, { traces: await traceTwice(model) });
  options.memory.analysed = { model, analysis };
  const groups = analysis.groups.filter((g) => options.structures.includes(g.kind));
  if (groups.length === 0) return undefined;
  const { normInputs, requestsFor } = statisticsPlan(model, analysis, groups, options);
  const requests = requestsFor([]);
  if (runs !== model) {
    const computed = new Set([...runs.graph.input.map((v) => v.name), ...runs.graph.node.flatMap((n) => n.output ?? [])]);
    if (![...requests.map((r) => r.tensor), ...normInputs].every((t) => computed.has(t))) return undefined;
  }
  return new StatsTap(runs, requests, normInputs);
}

async function pruneOnce(model: OnnxModel, options: PruneOptions): Promise<PruneResult> {
  const log = options.log ?? (() => undefined);
  const effort = options.effort ?? { alternative: true, probe: true, share: 1 };
  const paramsBefore = countParams(model);
  const traces = await traceTwice(model);
  const frozen: { tensor: string; axis: number; reason: string }[] = [];
  const frozenNodes = new Set<Node>();
  const extraSkipped: SkippedEntry[] = [];

  for (let attempt = 1; ; attempt++) {
    log(`analyzing the graph${attempt > 1 ? ` (attempt ${attempt})` : ''}`);
    const known = options.memory?.analysed;
    const analysis = attempt === 1 && known?.model === model ? known.analysis : await analyze(model, { traces, frozen });
    if (options.memory) options.memory.analysed = undefined;
    const groups = analysis.groups.filter((g) => options.structures.includes(g.kind));
    // One line per place and reason, however many attempts reached it.
    const skipped = [...new Map([...describeSkipped(analysis, options.structures), ...extraSkipped].map((e) => [`${e.where}\n${e.reason}`, e])).values()];
    if (groups.length === 0 && attempt === 1 && options.target > 0 && options.memory?.scales.size === 0) {
      throw new UserError(nothingToPrune(model, skipped, options.structures));
    }
    const { consumers, normInputs, requestsFor } = statisticsPlan(model, analysis, groups, options);
    const passes = new PassLedger(options.passes ?? RUN_PASSES);
    const samples = options.calibrationSamples ?? 0;
    let collected: CollectedStats = { stats: new Map(), rows: new Map() };
    const measured = !!options.calibration && options.importance === 'activation';
    const renorms = !!options.calibration && options.compensate !== 'none';
    if (options.calibration && readsStatistics(options)) {
      // One pass: means and variances, with the covariances a least-squares refit needs. What
      // is known already (collected while the last step confirmed this model, or left as it was
      // by the last step's pruning) is not collected again.
      const ready = options.memory?.ready ?? { stats: new Map(), rows: new Map() };
      const reused = new Map<string, ChannelStats>();
      const requests = requestsFor([]).filter((r) => {
        const known = ready.stats.get(r.tensor);
        if (!known || known.sum.length !== r.channels || (r.gram && !known.gram) || (r.half && !known.half)) return true;
        reused.set(r.tensor, known);
        return false;
      });
      const keep = normInputs.filter((t) => !ready.rows.has(t));
      // The budget may have this step read part of the set (its first batches).
      const batches = options.calibrationBatches;
      const read = effort.share < 1 && batches ? Math.max(1, Math.ceil(effort.share * batches)) : undefined;
      const calibration = read ? firstBatches(options.calibration, read) : options.calibration;
      const why = `means and variances${requests.some((r) => r.gram) ? ', and the covariances of the damage curves and the least-squares refits' : ''}${keep.length ? ', and the inputs of normalizations whose width shrinks' : ''}`;
      if (requests.length > 0 || keep.length > 0) {
        const sharePart = read ? `, first ${read} batches` : '';
        collected = await passes.pass('statistics', why, read && batches ? Math.round((samples * read) / batches) : samples, `activation statistics of ${requestedTensors(requests)}${keep.length ? `, kept whole: ${keep.join(', ')}` : ''}${sharePart}`, () => {
          log(`collecting activation statistics on the calibration set${read ? ` (its first ${read} of ${batches} batches, to keep to the budget)` : ''}${reused.size ? ` (${reused.size} of ${reused.size + new Set(requests.map((r) => r.tensor)).size} tensors known already)` : ''}`);
          const progress = (read ?? batches) ? new PassProgress('activation statistics', (read ?? batches)!, log) : undefined;
          return collectStats(model, requests, calibration, progress, keep);
        });
      } else log('activation statistics: collected by an earlier pass over this model (the base model\'s evaluation, or the last step\'s confirmation); no pass');
      for (const [tensor, s] of reused) collected.stats.set(tensor, s);
      for (const t of normInputs) if (!collected.rows.has(t) && ready.rows.has(t)) collected.rows.set(t, ready.rows.get(t)!);
    }
    const stats = collected.stats;
    /** A candidate: compensated as `edits` say, its normalizations refit, sliced (throws FixFailure). */
    const build = async (removals: Removal[], edits: CompensationEdits): Promise<BuiltCandidate> => {
      const refits = renorms ? normsToRefit(analysis, removals) : [];
      const normSums = refits.length
        ? await measureNorms(model, refits, options.calibration!, collected.rows, (run) =>
            passes.pass('normalization sums', 'the refit of normalizations whose width shrinks (their inputs did not fit in memory)', samples, `normalization sums of ${refits.map((r) => nodeLabel(r.node)).join(', ')}`, () => {
              log('measuring how the pruned widths change their normalizations');
              return run();
            }),
          )
        : [];
      const notes = [...edits.notes];
      const applied = applyRemoval(analysis, removals, (copy) => {
        applyCompensation(copy, analysis, edits.edits);
        notes.push(...applyNormRefits(copy, refits, normSums));
      });
      const changed = [...edits.edits.map((e) => e.consumer.node.output[0]), ...refits.flatMap((r) => [r.stats.scale, r.stats.bias ?? ''])];
      return { applied, notes, changed };
    };
    const scores = scoreGroups(analysis, groups, options.memory, options.importance === 'activation' ? { consumers, stats } : undefined);
    const choice = await chooseAllocation({
      model,
      analysis,
      plan: {
        groups,
        scores,
        targetParams: options.target * paramsBefore,
        slack: PLAN_SLACK * paramsBefore,
        slots: analysis.space.slots,
        paramDims: (t) => analysis.model.constantInfo(t)?.dims,
        align: typeof options.align === 'number' ? options.align : 1,
        alignAuto: (options.align ?? 'auto') === 'auto',
      },
      consumers,
      stats,
      allocation: options.allocation ?? 'auto',
      compensate: options.compensate,
      damage: options.damage,
      measured,
      passes,
      inverses: new InverseCovariances(DenseMath.shared()),
      dampings: options.memory?.dampings ?? new Map(),
      choosing: options.memory?.choosing,
      sensitivities: options.memory?.sensitivities ?? new Map(),
      probed: options.memory?.probed ?? {},
      effort,
      build,
      // The next step's statistics, collected while the planned candidate is confirmed: on the
      // very model the next step prunes, when that candidate is kept.
      nextStatistics: options.calibration && options.memory && !options.final ? (removed) => ({ requests: requestsFor(removed).map((r) => ({ ...r, half: false })), keep: normInputs }) : undefined,
      log,
    });
    const { removals } = choice;
    const targetParams = options.target * paramsBefore;
    // Short by more than two plans' windows (`always`: short of any target, however small).
    const short = (removed: number, always = false) =>
      always || removed < targetParams - 2 * PLAN_SLACK * paramsBefore ? { short: shortfall(analysis, groups, { removed, target: targetParams, of: paramsBefore }, options.align, choice.short) } : {};
    if (removals.length === 0) {
      // Nothing at all is short of any target.
      return { model: model.clone(), pruned: [], skipped, paramsBefore, paramsAfter: paramsBefore, ...(targetParams > 0 ? short(0, true) : {}) };
    }
    log(`removing ${removals.reduce((n, r) => n + r.units.length, 0)} units from ${removals.length} groups`);
    let failure: { message: string; groups: Group[] } | undefined;
    let built = choice.built;
    try {
      built ??= await build(removals, choice.compensation);
    } catch (e) {
      if (!(e instanceof FixFailure)) throw e;
      failure = { message: e.message, groups: groupsTouching(removals, e.tensors) };
    }
    if (built) {
      for (const note of built.notes) log(note);
      const applied = built.applied;
      const problem = await verifyPruned(applied.model, traces, built === choice.built);
      if (!problem) {
        if (options.memory) options.memory.ready = choice.next ?? { stats: unchangedStats(analysis, removals, built.changed, stats), rows: new Map() };
        const paramsAfter = countParams(applied.model);
        const allocation = choice.allocation && { ...choice.allocation, passes: passes.entries };
        return { model: applied.model, pruned: describePruned(removals), skipped, paramsBefore, paramsAfter, sliced: applied.sliced, allocation, passes: passes.entries, ...short(paramsBefore - paramsAfter) };
      }
      // The node onnxruntime names is where the engine's understanding failed: leave that node
      // alone (one place, one reason), not every group that happens to pass through it.
      const node = failingNode(analysis, problem);
      if (node && !frozenNodes.has(node)) {
        frozenNodes.add(node);
        const reason = `onnxruntime rejected the pruned model at ${nodeLabel(node)} (${node.opType}): ${problem}`;
        // The groups through it are then reported, each with this reason, by the next analysis.
        log(`leaving ${nodeLabel(node)} alone: ${problem}`);
        for (const name of [...nodeReads(node), ...node.output]) for (const s of name ? analysis.space.slotsOf(name) : []) frozen.push({ tensor: s.tensor, axis: s.axis, reason });
        continue;
      }
      failure = { message: problem, groups: await culprits(analysis, removals, traces) };
    }
    if (attempt >= MAX_ATTEMPTS || failure!.groups.length === 0) {
      // A valid model is the promise: give up pruning this model rather than write a broken one.
      log(`no valid pruned model after ${attempt} plans: leaving the model as it is (${failure!.message})`);
      return {
        model: model.clone(),
        pruned: [],
        skipped: [...skipped, { where: 'the whole model', reason: `no pruning plan gave a model onnxruntime accepts: ${failure!.message}` }],
        paramsBefore,
        paramsAfter: paramsBefore,
        short: `no valid model: no pruning plan gave a model onnxruntime accepts (${failure!.message})`,
      };
    }
    for (const g of failure!.groups) {
      log(`leaving ${g.where} alone: ${failure!.message}`);
      extraSkipped.push({ where: g.where, reason: failure!.message });
      for (const s of g.slots) frozen.push({ tensor: s.tensor, axis: s.axis, reason: failure!.message });
    }
  }
}

/** The first `count` batches of a calibration set. */
function firstBatches(calibration: () => AsyncIterable<Feeds> | Iterable<Feeds>, count: number): () => AsyncIterable<Feeds> {
  return async function* () {
    let n = 0;
    for await (const feeds of calibration()) {
      if (n++ >= count) return;
      yield feeds;
    }
  };
}

/**
 * The statistics of tensors this step's pruning leaves exactly as they were: none of the nodes
 * that compute them reads a tensor that lost channels or a constant whose values changed
 * (`changed`: refit weights, biases, normalization parameters, and the outputs of the ops
 * whose bias changed).
 */
function unchangedStats(analysis: Analysis, removals: Removal[], changed: string[], stats: Map<string, ChannelStats>): Map<string, ChannelStats> {
  const touched = new Set<string>(changed.filter(Boolean));
  for (const r of removals) for (const u of r.units) for (const slot of u.indices.keys()) touched.add(analysis.space.slots[slot].tensor);
  for (const node of analysis.index.nodes) {
    if (nodeReads(node).some((t) => touched.has(t))) for (const o of node.output) if (o) touched.add(o);
  }
  return new Map([...stats].filter(([tensor]) => !touched.has(tensor)));
}

/** The node an onnxruntime error names ("... running Add node. Name:'p2o.Add.252' ..."), if it is in the graph. */
function failingNode(analysis: Analysis, message: string): Node | undefined {
  const name = /Name:'([^']+)'/.exec(message)?.[1] ?? /Node \(([^)]+)\)/.exec(message)?.[1];
  return name ? analysis.index.nodes.find((n) => n.name === name) : undefined;
}

const CONTROL_FLOW_ONLY = 'its weights are all inside If/Loop/Scan bodies, which the engine leaves alone as a unit';

/** Ops a float weight passes through on its way to its op (a float16 model's Cast, a transposed copy). */
const WEIGHT_PATH = new Set(['Cast', 'Identity', 'Transpose', 'Reshape']);

/**
 * The weights of the top-level graph, outside If/Loop/Scan bodies: whether some weight op
 * (MatMul, Gemm, Conv, ...) reads a float constant, directly or through a Cast or the like, and
 * the quantized weights (MatMulNBits, DequantizeLinear, ...: src/graph/quantized.ts).
 */
function topLevelWeights(model: OnnxModel): { float: boolean; quantized: QuantizedWeight[] } {
  const index = new GraphIndex(model);
  const isWeight = (name: string, depth = 0): boolean => {
    const info = model.constantInfo(name);
    if (info) return info.dims.length >= 2 && isFloatDType(info.dtype);
    const p = index.producer.get(name);
    return !!p && depth < 4 && WEIGHT_PATH.has(p.opType) && !!p.input[0] && isWeight(p.input[0], depth + 1);
  };
  const float = index.nodes.some((n) => ruleOf(n)?.weight && n.input.slice(1).some((i) => i && isWeight(i)));
  return { float, quantized: quantizedWeights(model) };
}

/**
 * Why the engine can prune nothing of `model` without looking further, or undefined when it has
 * a float weight outside control flow to analyse: its weights are all quantized, or all inside
 * If/Loop/Scan bodies, or it has none.
 */
function noFloatWeights(model: OnnxModel): string | undefined {
  const { float, quantized } = topLevelWeights(model);
  if (float) return undefined;
  if (quantized.length > 0) {
    const formats = [...new Set(quantized.map((q) => q.format))];
    const mode = quantized.some((q) => q.bits <= 4) ? 'int4' : 'int8';
    return `the weights are ${formats.join(' and ')}: ${QUANTIZED_NOT_PRUNABLE}; prune the float model, then quantize (quantize: ${mode})`;
  }
  const controlFlow = model.graph.node.some((n) => (n.attribute ?? []).some((a) => a.g || (a.graphs?.length ?? 0) > 0));
  return controlFlow ? CONTROL_FLOW_ONLY : 'it has no weights: no MatMul, Gemm, Conv or other weight op reads a constant';
}

/** What in a quantized weight's form the engine does not lift, before the general reason. */
function whyLeft(model: OnnxModel, q: QuantizedWeight): string {
  const why = liftBlocker(model, q.node);
  return why && why !== NOT_LIFTED_FORMAT ? `${why}: ` : '';
}

const modelName = (model: OnnxModel) => (model.origin ? path.basename(model.origin) : 'the model');

/**
 * Why a step removed `removed` parameters where `target` were asked, in a few words for the
 * report: what the allocation knows (widths kept blocked), else the groups' capacity (each keeps
 * one unit at least; the rest of the model is left alone, and skipped says why), else the
 * multiple asked for, else the size of the units left.
 */
function shortfall(analysis: Analysis, groups: Group[], { removed, target, of }: { removed: number; target: number; of: number }, align: PruneOptions['align'], known: string | undefined): string {
  const ledger = new ParamLedger(analysis.space.slots, (t) => analysis.model.constantInfo(t)?.dims);
  let capacity = 0;
  for (const g of groups) for (const u of g.units.slice(1)) capacity += ledger.take(u);
  // Counts, not shares: a later step's target is a share of what the earlier ones left.
  const n = (v: number) => Math.round(v).toLocaleString('en-US');
  if (capacity < target - PLAN_SLACK * of) {
    return capacity <= 0
      ? 'nothing more to remove: every prunable group is down to one unit'
      : `nothing more to remove: the prunable groups can lose ${n(capacity)} parameters (one unit each kept), ${n(target)} were asked; skipped says why the rest is left alone`;
  }
  if (known) return known;
  if (typeof align === 'number' && align > 1) return `alignment: widths kept at multiples of ${align} (align: ${align})`;
  return `granularity: ${n(removed)} parameters removed of ${n(target)} asked; the next unit would overshoot the target`;
}

/** Why a model asked to lose parameters has nothing the engine can remove: the places left alone and their reasons (the first few). */
function nothingToPrune(model: OnnxModel, skipped: SkippedEntry[], structures: Structure[]): string {
  const reasons = [...new Map(skipped.map((s) => [s.reason, s])).values()].slice(0, 3).map((s) => `${s.where}: ${s.reason}`);
  return `${modelName(model)}: nothing to prune: no ${structures.join(', ')} the engine can remove${reasons.length ? ` (${reasons.join('; ')})` : ''}; \`prune-gate inspect\` lists every place and why`;
}

/** Below this many units a group's own mean and spread say little: its kind's pooled ones are used. */
const MIN_UNITS_FOR_OWN_SCALE = 8;

/**
 * Magnitude: the L2 norm of each unit's weights. Activation (FLAP's fluctuation): for every
 * weight op that reads the unit's channels, Var(X_j) · ||W_j||² summed over the channels j of the
 * unit: how much the output moves when the channel is replaced by its mean. Groups without a
 * consumer whose input was measured fall back to magnitude. Both are standardized per group.
 */
function scoreGroups(
  analysis: Analysis,
  groups: Group[],
  memory: PruneMemory | undefined,
  activation?: { consumers: Map<Group, Consumer[]>; stats: Map<string, ChannelStats> },
): Map<Group, Float64Array> {
  const norms = new AxisNorms(analysis);
  const raw = new Map(groups.map((g) => [g, rawScores(g, norms, activation)]));
  // Few-unit groups (4 heads, or 2 KV groups under GQA) would always give their weaker unit a
  // z-score near -1 whatever it is worth; pool them per kind across layers instead.
  const pooled = new Map<string, { mean: number; std: number }>();
  for (const kind of new Set(groups.map((g) => g.kind))) {
    const small = groups.filter((g) => g.kind === kind && g.units.length < MIN_UNITS_FOR_OWN_SCALE);
    if (small.length > 1) pooled.set(kind, scoreScale(Float64Array.from(small.flatMap((g) => [...raw.get(g)!]))));
  }
  return new Map(
    groups.map((g) => {
      const key = `${g.kind} ${g.where}`;
      let scale = memory?.scales.get(key);
      if (!scale) {
        scale = (g.units.length < MIN_UNITS_FOR_OWN_SCALE ? pooled.get(g.kind) : undefined) ?? scoreScale(raw.get(g)!);
        memory?.scales.set(key, scale);
      }
      return [g, standardize(raw.get(g)!, scale)];
    }),
  );
}

function rawScores(
  g: Group,
  norms: AxisNorms,
  activation?: { consumers: Map<Group, Consumer[]>; stats: Map<string, ChannelStats> },
): Float64Array {
  const measured = (activation?.consumers.get(g) ?? []).filter((c) => activation!.stats.has(c.input));
  if (measured.length === 0) return magnitudeScores(g, norms);
  const scores = new Float64Array(g.units.length);
  for (const c of measured) {
    const variance = channelVariance(activation!.stats.get(c.input)!);
    const w2 = norms.sumSquares(c.weightSlot);
    g.units.forEach((u, k) => {
      for (const j of u.indices.get(c.inputSlot.id) ?? []) scores[k] += variance[j] * w2[j];
    });
  }
  return scores;
}

function groupsTouching(removals: Removal[], tensors: string[]): Group[] {
  const names = new Set(tensors);
  return removals.filter((r) => r.group.slots.some((s) => names.has(s.tensor))).map((r) => r.group);
}

/**
 * A group whose removal breaks the model, found by bisection: at most about 2·log2(groups)
 * verification runs. When neither half breaks it alone (the failure needs groups from both),
 * the smaller half is returned whole.
 */
async function culprits(analysis: Analysis, removals: Removal[], traces: Analysis['traces']): Promise<Group[]> {
  const breaks = async (subset: Removal[]): Promise<boolean> => {
    try {
      return (await verifyPruned(applyRemoval(analysis, subset).model, traces)) !== undefined;
    } catch (e) {
      if (!(e instanceof FixFailure)) throw e;
      return true;
    }
  };
  let suspects = removals;
  while (suspects.length > 1) {
    const half = suspects.slice(0, suspects.length >> 1);
    const rest = suspects.slice(half.length);
    if (await breaks(half)) suspects = half;
    else if (await breaks(rest)) suspects = rest;
    else return (half.length <= rest.length ? half : rest).map((r) => r.group);
  }
  return suspects.length === 1 && (await breaks(suspects)) ? [suspects[0].group] : [];
}

function describePruned(removals: Removal[]): PrunedEntry[] {
  return [...removals]
    .sort((a, b) => a.group.id - b.group.id)
    .map(({ group, units, params }) => ({
      kind: group.kind,
      where: group.where,
      before: group.units.length,
      after: group.units.length - units.length,
      params,
    }));
}

/** Steps prune the same places again: one entry per place, from the first count to the last. */
function mergePruned(entries: PrunedEntry[]): PrunedEntry[] {
  const byPlace = new Map<string, PrunedEntry>();
  for (const e of entries) {
    const prev = byPlace.get(e.where);
    if (prev) byPlace.set(e.where, { ...prev, after: e.after, params: prev.params + e.params });
    else byPlace.set(e.where, { ...e });
  }
  return [...byPlace.values()];
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

/** A group as `inspect` lists it. */
export interface PrunableGroup {
  kind: Structure;
  where: string;
  /** Heads (KV groups under grouped-query attention), neurons or channels. */
  units: number;
  /** Parameters that go with one unit. */
  unitParams: number;
}

/** Whole residual blocks `structures: blocks` could remove (graph/blocks.ts), and those it would leave, with why. */
export interface PrunableBlocks {
  removable: { where: string; params: number }[];
  leftAlone: SkippedEntry[];
}

/** Every prunable group of the model and every place left alone, with why; and its removable residual blocks. */
export async function findPrunable(model: OnnxModel): Promise<{ prunable: PrunableGroup[]; skipped: SkippedEntry[]; blocks?: PrunableBlocks }> {
  // Said before tracing: a model of control flow often runs only on real inputs (a sample rate,
  // a state). A quantized model's places are the ops that read its quantized weights.
  const nothing = noFloatWeights(model);
  if (nothing) {
    const places = [...new Map(quantizedWeights(model).map((q) => [nodeLabel(q.node), `${q.format}: ${whyLeft(model, q)}${QUANTIZED_NOT_PRUNABLE}`])).entries()];
    return { prunable: [], skipped: [{ where: 'the whole model', reason: nothing }, ...places.map(([where, reason]) => ({ where, reason }))] };
  }
  const analysis = await analyze(model);
  const blocks = await findBlocks(model, analysis.traces[0]);
  return {
    prunable: analysis.groups.map((g) => ({
      kind: g.kind,
      where: g.where,
      units: g.units.length,
      unitParams: Math.round(g.units[0].params),
    })),
    skipped: describeSkipped(analysis, ['ffn', 'heads', 'channels']),
    blocks: { removable: blocks.blocks.map((b) => ({ where: b.where, params: b.params })), leftAlone: blocks.skipped },
  };
}
