import * as fs from 'fs';
import * as path from 'path';
import type { Config } from '../config/config';
import type { QuantizeMode } from '../quantize/options';
import { checkOutputFolder, checkedPath, displayPath } from '../util/paths';
import { PassRecord, RUN_PASSES } from '../util/passes';
import { writeFileAtomic, writeJsonAtomic } from '../util/files';
import { CalibrationSet, batchCount, calibrationFeeds, readCalibration, tokenCount } from '../eval/calibration';
import { Evaluation, Evaluator } from '../eval/evaluator';
import { GateRule, MetricResult, checkRulesAgainstBase, checkRulesFitTask, decodeSettled, failures, judge, latencySettled, verdictOf } from '../gate/gate';
import { isTimed } from '../gate/metrics';
import { SearchDeps, StepInfo, gradualSearch, removedText, stepRatios } from '../gate/search';
import { SearchBudget, StepCost } from '../gate/budget';
import { countParams } from '../graph/cost';
import { OnnxModel } from '../onnx/model';
import { graphInputs, withSessionThreads } from '../onnx/runtime';
import { currentEnvironment } from '../eval/environment';
import { MemoryPeaks, ModelMemory, checkRatioMeasurable } from '../eval/memory';
import { writeModel } from '../onnx/write';
import { PruneMemory, newPruneMemory } from '../prune';
import { probeDue } from '../prune/allocate';
import { PruneInFormatResult, mergeQuantizedInputs, pruneInFormat, statisticsTapInFormat } from './quantized-inputs';
import type { QuantizedInputsReport } from '../quantize/inputs';
import { QuantizeOptions, methodUsed, quantizeModel } from '../quantize';
import { compactNames } from '../graph/compact';
import type { PassEntry, PruneOptions, PruneResult } from '../prune/types';
import { buildReport } from '../report/build';
import { renderMarkdown } from '../report/markdown';
import type { Report, ReportEvaluationForm, ReportPullRequest, ReportQuantization, ReportRun } from '../report/schema';
import { UserError } from '../errors';
import { withDeviceMemory } from './device-memory';
import { BaseOrigin, PruningSteps, baseOrigin, gateModelSettings, producerStamp } from './provenance';

export type PruneFn = (model: OnnxModel, options: PruneOptions) => Promise<PruneResult>;
/** A candidate after the quantize step, with what quantization did (for the report). */
export interface QuantizedCandidate {
  model: OnnxModel;
  quantization?: ReportQuantization;
  /** The quantizer's passes over the calibration set (what: quantization), as the step lists them. */
  passes?: PassEntry[];
}
/** Turns a pruned model into its quantized form (quantize: int8 / int4); 'none' is the identity. */
export type QuantizeFn = (model: OnnxModel, mode: QuantizeMode) => Promise<QuantizedCandidate>;

export const PRUNED_NAME = 'pruned.onnx';
export const REPORT_JSON = 'report.json';
export const REPORT_MD = 'report.md';
export const STEPS_DIR = '.prune-gate-steps';

export interface RunOptions {
  /** Resolved: model and calibration set (see resolveConfig). */
  config: Config;
  out: string;
  /** The pruning engine (tests inject a fake). */
  prune?: PruneFn;
  quantize?: QuantizeFn;
  /** Progress lines (stderr in the CLI). */
  log?: (line: string) => void;
  /** The pull request the run is for, recorded in report.json. */
  pullRequest?: ReportPullRequest;
  /** The commit and the Actions run, recorded in report.json (the action sets it). */
  run?: ReportRun;
}

export interface RunOutcome {
  report: Report;
  markdown: string;
  files: { model: string; data?: string; json: string; markdown: string };
}

/**
 * The artifact `quantize: int8 | int4` ships: weights quantized, calibration-aware when
 * calibration feeds are given (the layers that suffer most stay float), and, unless keepNames,
 * the exporter's long intermediate tensor and node names shortened (see compactNames).
 */
export async function quantizeArtifact(
  model: OnnxModel,
  mode: Exclude<QuantizeMode, 'none'>,
  options: {
    calibration?: QuantizeOptions['calibration'];
    method?: QuantizeOptions['method'];
    keepNames?: boolean;
    passes?: QuantizeOptions['passes'];
    /** Calibration samples each pass reads (for the passes listed). */
    samples?: number;
    /** The layers' errors measured with the model run in float pieces of at most this many bytes of weights. */
    pieceBytes?: number;
    log?: (line: string) => void;
  } = {},
): Promise<Required<QuantizedCandidate>> {
  const log = options.log ?? (() => undefined);
  const passes: PassEntry[] = [];
  const recorded = options.passes ?? RUN_PASSES;
  // Each pass that runs (not one given back from a record) is listed, timed.
  const timed: PassRecord = {
    pass: (what, run) =>
      recorded.pass(what, async () => {
        const started = Date.now();
        const result = await run();
        const why = what.startsWith('gptq hessians') ? "GPTQ's Hessians: Σ x xᵀ of the quantized layers' inputs" : "the quantized layers' output errors (the method per layer, the exceptions)";
        passes.push({ what: 'quantization', why, samples: options.samples ?? 0, seconds: (Date.now() - started) / 1000 });
        return result;
      }),
  };
  const result = await quantizeModel(model, { bits: mode === 'int8' ? 8 : 4, method: options.method, calibration: options.calibration, passes: timed, pieceBytes: options.pieceBytes, log });
  const m = result.method;
  for (const k of result.keptFloat) log(`kept in float: ${k.node} (${k.reason})`);
  for (const q of result.quantized) if (q.exception) log(`kept at ${q.bits} bits: ${q.node} (${q.exception})`);
  const compact = options.keepNames ? undefined : compactNames(result.model);
  if (compact) log(`shortened ${compact.renamed} intermediate names: ${compact.bytesSaved} bytes fewer`);
  const quantization: ReportQuantization = {
    layers: result.quantized.length,
    weight_bytes_before: result.weightBytesBefore,
    weight_bytes_after: result.weightBytesAfter,
    exceptions: [
      ...result.quantized.flatMap((q) => (q.exception ? [{ where: q.node, stored: 'int8' as const, reason: q.exception }] : [])),
      ...result.keptFloat.map((k) => ({ where: k.node, stored: 'float' as const, reason: k.reason })),
    ],
    names_bytes_saved: compact?.bytesSaved ?? 0,
    ...(m
      ? { method: { asked: m.asked, used: methodUsed(m), layers: m.layers, gptq_layers: m.gptqLayers, calibration_error: m.error, rtn_calibration_error: m.rtnError } }
      : {}),
  };
  return { model: compact?.model ?? result.model, quantization, passes };
}

/**
 * `method`: how int4's codes are chosen (quantization.md); `limited` (a model too large for the
 * device): the layers' quantization errors are measured on the set's first `batches` only, the
 * model run one piece of at most `pieceBytes` of weights at a time.
 */
export function quantizeWith(
  set: CalibrationSet,
  keepNames: boolean,
  log: (line: string) => void,
  passes?: QuantizeOptions['passes'],
  method?: QuantizeOptions['method'],
  limited?: { batches: number; pieceBytes?: number },
): QuantizeFn {
  const calibration = calibrationFeeds(set, limited?.batches);
  const samples = limited === undefined ? set.count : Math.min(set.count, limited.batches * set.batchSize);
  return async (model, mode) => {
    if (mode === 'none') return { model };
    log(
      `quantizing the candidate to ${mode}${limited === undefined ? '' : ` (the layers' errors measured on the first ${limited.batches} calibration batch${limited.batches === 1 ? '' : 'es'}${limited.pieceBytes ? ', in float, one piece of the model at a time' : ''}: each of their passes is one of the whole model)`}`,
    );
    return quantizeArtifact(model, mode, { calibration, method, keepNames, passes, samples, log, pieceBytes: limited?.pieceBytes });
  };
}

/** A written candidate: its folder (one per step), its files, and how it was quantized. */
export interface WrittenCandidate {
  dir: string;
  file: string;
  dataFile?: string;
  quantization?: ReportQuantization;
  /** What the steps up to this one did to the input's quantized weights. */
  quantizedInputs?: QuantizedInputsReport;
}

/** A candidate of `run`: written, and evaluated against the base. */
interface StepArtifact extends WrittenCandidate {
  evaluation: Evaluation;
}

/**
 * `prune-gate run`: prune the model step by step, evaluate each candidate against the base on
 * the calibration set, gate it, and write OUT/pruned.onnx, OUT/report.json and OUT/report.md.
 */
export async function runGate(options: RunOptions): Promise<RunOutcome> {
  return withSessionThreads(options.config.device.threads, () => runOnDevice(options));
}

async function runOnDevice(options: RunOptions): Promise<RunOutcome> {
  const { config } = options;
  const log = options.log ?? (() => undefined);
  const out = path.resolve(options.out);
  checkOutputFolder(options.out, '--out');
  if (path.resolve(config.model as string) === path.join(out, PRUNED_NAME)) {
    throw new UserError(`--out ${options.out}: ${PRUNED_NAME} there is the input model itself; choose another output folder`);
  }
  if (config.prune.target === 0 && config.quantize === 'none') {
    throw new UserError(
      `${config.file ? `${displayPath(config.file)}: ` : ''}target 0 prunes nothing and quantize is none, so there is nothing to gate: set quantize to int8 or int4, or a target above 0`,
    );
  }
  const base = OnnxModel.read(config.model as string);
  const set = await readCalibration(config.calibration as string, base);
  checkRulesFitTask(config.gate, set, config.file ? displayPath(config.file) : 'the gate');
  // Logged once what the user gave is known to fit: a mistake stays one line on stderr.
  log(`read ${displayPath(config.model as string)} and its calibration set ${displayPath(config.calibration as string)}`);
  const origin = baseOrigin(base, gateModelSettings(config));
  return withDeviceMemory(base, set, config.device.memory, config.prune.compensate, log, ({ form, outputBytes, compensate, pieceBytes }) =>
    gateOnDevice({ ...options, config: { ...config, prune: { ...config.prune, compensate } } }, base, set, origin, { evaluationForm: form, outputBytes, pieceBytes }),
  );
}

/** The gate past reading its inputs, in the form the device's memory allows (device-memory.ts). */
async function gateOnDevice(
  options: RunOptions,
  base: OnnxModel,
  set: CalibrationSet,
  origin: BaseOrigin,
  device: { evaluationForm?: ReportEvaluationForm; outputBytes?: number; pieceBytes?: number },
): Promise<RunOutcome> {
  const { config } = options;
  const log = options.log ?? (() => undefined);
  const prune = options.prune ?? ((model: OnnxModel, settings: PruneOptions) => pruneInFormat(model, settings, config.prune.quantized));
  const out = path.resolve(options.out);
  // The budget counts from here: the base model's evaluation is part of what a gate costs.
  const budget = new SearchBudget(config.budget, stepRatios(config.prune.target, config.prune.maxTarget, config.prune.steps).length);
  log(`evaluating the base model on ${set.count} calibration samples (${set.task})`);
  // The first step's statistics ride along the base model's evaluation (the same batches).
  const memory = newPruneMemory();
  const firstTarget = stepRatios(config.prune.target, config.prune.maxTarget, config.prune.steps)[0];
  const tap = !set.generation && firstTarget > 0 && !options.prune ? await statisticsTapInFormat(base, pruneSettings(config, set, firstTarget, memory, log)) : undefined;
  const evaluator = await Evaluator.create(base, set, {
    latency: { ...config.latency, settled: latencySettled(config.gate) },
    decode: decodeSettled(config.gate),
    log,
    tap,
    cacheBytes: device.outputBytes,
    apart: !!device.evaluationForm,
  });
  if (tap) memory.ready = tap.collected();
  // Generation: the passes run the prompts followed by the base's generations (evaluator.set).
  // In the int8 form (a model too large for the device) a pass costs a pass of the whole model,
  // and the quantizer makes one per 32 layers: their errors are measured on the first batch, in
  // float, one piece of the model at a time (a session of the whole candidate with the layers'
  // twins held 14.9 GB on a 7B, docs/measured.md).
  const quantize = options.quantize ?? quantizeWith(evaluator.set, config.keepNames, log, undefined, config.quantizeMethod, device.evaluationForm ? { batches: 1, pieceBytes: device.pieceBytes } : undefined);
  const stepsDir = path.join(out, STEPS_DIR);
  try {
    checkRulesAgainstBase(config.gate, evaluator.baseQuality, config.file ? displayPath(config.file) : 'the gate');
    // A memory max-ratio the base model cannot support is refused before the search, not after it.
    const baseMemory = config.gate.some((r) => boundsMemory(r) && r.bound === 'max-ratio') ? await baseMemoryFor((file) => evaluator.memory(file), config.gate, config.model as string) : undefined;
    const mode = config.prune.target === 'auto' ? 'auto' : 'fixed';
    const ratios = stepRatios(config.prune.target, config.prune.maxTarget, config.prune.steps);
    // Each step's cost, by part, tells the budget what the next ones may spend.
    let step: { start: number; passes: PassEntry[]; share: number; once: number } | undefined;
    const deps = candidateSteps<StepArtifact>(
      config,
      origin,
      stepsDir,
      async (model, target, memory, info) => {
        const effort = budget.effortFor(info.index, probeDue(memory?.probed ?? {}));
        step = { start: Date.now(), passes: [], share: effort.share, once: -(memory?.choosing.seconds ?? 0) };
        const result = await prune(model, {
          ...pruneSettings(config, evaluator.set, target, memory, log),
          // Unquantized, the step's evaluation is the pass that confirmed its candidate.
          damage: { ...evaluator.damageMeasure(), confirmationEvaluates: config.quantize === 'none' },
          effort,
          final: info.index === info.count,
        });
        step.passes = result.passes ?? [];
        step.once += memory?.choosing.seconds ?? 0;
        return result;
      },
      quantize,
      async (model, written, _step, candidate) => {
        // The engine's confirmation already ran this candidate over the set: its sums are reused.
        // Latency and MACs cost runs of their own: measured for every step only when a bound
        // needs them, else for the step kept, after the search.
        const confirmed = evaluator.hasPassOf(candidate);
        const started = Date.now();
        const evaluation = await evaluator.evaluate(model, { sameAs: candidate, efficiency: config.gate.some(boundsEfficiencyRuns) });
        const metrics = judge(evaluation.values, config.gate.filter((r) => !boundsMemory(r)), set.task, config.latency.onInconclusive);
        const passes: PassEntry[] = confirmed
          ? []
          : [{ what: 'evaluation', why: "the step's metrics (its candidate, as written, was not run before)", samples: set.count, seconds: (Date.now() - started) / 1000 }];
        if (step) budget.stepDone(stepCost({ ...step, passes: [...step.passes, ...passes] }));
        return { metrics, artifact: { ...written, evaluation }, passes };
      },
      log,
      (done) => budget.remaining(done),
      memory,
    );
    const result = await gradualSearch(base, countParams(base), mode, ratios, deps);
    const chosen = result.artifact;
    const evaluation = await evaluator.withEfficiency(OnnxModel.read(chosen.file), chosen.evaluation);
    // Memory takes a fresh process per model: measured for the base and the chosen candidate
    // only, after the search (an efficiency bound, it never stops it).
    const memoryPeaks = await measureMemoryIfBounded((file) => evaluator.memory(file), config.gate, evaluation.values, [config.model as string, chosen.file], log, baseMemory);
    const metrics = judge(evaluation.values, config.gate, set.task, config.latency.onInconclusive);
    const verdict = verdictOf(metrics);
    result.steps[result.chosen] = { ...result.steps[result.chosen], metrics, pass: verdict === 'pass' };
    const files = promote(chosen, out);
    const report = buildReport({
      verdict,
      task: set.task,
      configFile: config.file ?? null,
      calibration: { path: config.calibration as string, samples: set.count, tokens: tokenCount(set) },
      target: config.prune.target,
      quantize: config.quantize,
      quantization: chosen.quantization,
      base: evaluation.base,
      candidate: { ...evaluation.candidate, path: files.model },
      metrics,
      latency: evaluation.latency!,
      decode: evaluation.decode,
      steps: result.steps,
      chosenStep: result.chosen,
      pruned: result.pruned,
      skipped: result.skipped,
      quantizedInputs: chosen.quantizedInputs,
      allocation: result.allocation,
      budget: budget.summary(),
      pullRequest: options.pullRequest,
      run: options.run,
      environment: currentEnvironment(),
      memory: memoryPeaks,
      evaluationForm: device.evaluationForm,
      interface: evaluation.interface,
      examples: evaluation.examples,
    });
    const outcome = writeReports(report, out, files);
    const failed = failures(metrics);
    log(
      verdict === 'pass'
        ? `gate passed at ${removedText(result.steps[result.chosen].removed, result.steps[result.chosen].ratio)} of the parameters removed`
        : `gate failed: ${failed.join(', ')}`,
    );
    return outcome;
  } finally {
    await evaluator.close();
    fs.rmSync(stepsDir, { recursive: true, force: true });
  }
}


/** A step's cost by part, from its start and the engine's passes. */
function stepCost(step: { start: number; passes: PassEntry[]; share: number; once: number }): StepCost {
  const seconds = (what: PassEntry['what']) => step.passes.filter((p) => p.what === what).reduce((t, p) => t + p.seconds, 0);
  const confirmations = step.passes.filter((p) => p.what === 'confirmation');
  return {
    total: (Date.now() - step.start) / 1000,
    // Of two confirmations, the one not kept is the alternative; they cost about the same.
    alternative: confirmations.length > 1 ? Math.min(...confirmations.map((p) => p.seconds)) : 0,
    probe: seconds('probe'),
    statistics: seconds('statistics'),
    share: step.share,
    once: step.once,
  };
}

export const boundsMemory = (r: GateRule) => r.metric === 'memory';
/** A bound on a metric measured by runs of its own (latency and decode speed timed, MACs traced). */
const boundsEfficiencyRuns = (r: GateRule) => isTimed(r.metric) || r.metric === 'macs';

/**
 * The memory metric takes fresh processes per model, so it is measured only when a bound asks
 * for it: for the base and the candidate files, one after the other, into `values` (each model's
 * own memory, net of the process without a model). Returns the peaks they are net of, for the
 * report, or undefined when nothing bounds memory.
 */
export async function measureMemoryIfBounded(
  memoryOf: (file: string) => Promise<ModelMemory>,
  rules: readonly GateRule[],
  values: Evaluation['values'],
  [base, candidate]: [string, string],
  log: (line: string) => void,
  measuredBase?: ModelMemory,
): Promise<MemoryPeaks | undefined> {
  if (!rules.some(boundsMemory)) return undefined;
  log('measuring memory: fresh processes load each model and run one batch, and the same process without a model');
  const b = measuredBase ?? (await baseMemoryFor(memoryOf, rules, base));
  const c = await memoryOf(candidate);
  values.base.memory = b.net;
  values.candidate.memory = c.net;
  return { runtime: b.runtime, spread: b.spread, base: b.peak, candidate: c.peak };
}

/** The base model's memory, refused in one line when a max-ratio bound on it would be a ratio of noise. */
export async function baseMemoryFor(memoryOf: (file: string) => Promise<ModelMemory>, rules: readonly GateRule[], base: string): Promise<ModelMemory> {
  const b = await memoryOf(base);
  if (rules.some((r) => boundsMemory(r) && r.bound === 'max-ratio')) checkRatioMeasurable(b, base);
  return b;
}

/** The engine's options for one step of the config's search, with statistics on `set`. */
export function pruneSettings(config: Config, set: CalibrationSet, target: number, memory: PruneOptions['memory'], log: (line: string) => void): PruneOptions {
  return {
    target,
    structures: config.prune.structures,
    importance: config.prune.importance,
    compensate: config.prune.compensate,
    allocation: config.prune.allocation,
    align: config.prune.align,
    calibration: calibrationFeeds(set),
    calibrationBatches: batchCount(set),
    calibrationSamples: set.count,
    memory,
    log,
  };
}

/**
 * The search's steps made real: prune with `prune` (one memory for the whole search: steps
 * share each group's score scale), quantize as the config asks, write each candidate (its size
 * on disk is a metric, and onnxruntime then maps its weights from the file), saying what it is
 * and that it came from `origin`, and read it back lazily, which is also what the next step
 * prunes; `score` judges it. `run`, a matrix job and the merge differ only in `prune`'s damage
 * measure and in `score`.
 */
export function candidateSteps<A extends WrittenCandidate>(
  config: Config,
  origin: BaseOrigin,
  stepsDir: string,
  prune: (model: OnnxModel, target: number, memory: PruneOptions['memory'], step: StepInfo) => Promise<PruneInFormatResult>,
  quantize: QuantizeFn,
  score: (model: OnnxModel, written: WrittenCandidate, step: StepInfo, candidate: OnnxModel) => Promise<{ metrics: MetricResult[]; artifact: A; passes?: PassEntry[] }>,
  log: (line: string) => void,
  remaining?: (done: number) => number,
  memory: PruneMemory = newPruneMemory(),
): SearchDeps<A> {
  const quantization = new Map<number, ReportQuantization | undefined>(); // by step, for its artifact
  const quantizerPasses = new Map<number, PassEntry[]>(); // by step: listed with its passes
  const pruning = new Map<number, PruningSteps[number]>(); // by step: what its pruning did, for the candidates' metadata
  const requantized = new Map<number, QuantizedInputsReport | undefined>(); // by step: its quantized weights' lowering
  return {
    prune: async (model, target, step) => {
      const result = await prune(model, target, memory, step);
      pruning.set(step.index, { pruned: result.pruned, compensations: result.compensations }); // not its model, which the search lets go
      requantized.set(step.index, result.quantizedInputs);
      return result;
    },
    quantize: async (model, step) => {
      const quantized = await quantize(model, config.quantize);
      quantization.set(step.index, quantized.quantization);
      quantizerPasses.set(step.index, quantized.passes ?? []);
      return quantized.model;
    },
    evaluate: async (candidate, step) => {
      const dir = path.join(stepsDir, `step-${step.index}`);
      fs.rmSync(dir, { recursive: true, force: true });
      // A step's candidate is pruned from the step before's: what it is comes from every step up to it.
      const steps = [...pruning].filter(([index]) => index <= step.index).map(([, done]) => done);
      const written = writeModel(candidate, path.join(dir, PRUNED_NAME), { externalData: config.externalData, producer: producerStamp(origin, candidate, steps) });
      const model = OnnxModel.read(written.path);
      const quantizedInputs = mergeQuantizedInputs([...requantized].filter(([index]) => index <= step.index).map(([, r]) => r));
      const { metrics, artifact, passes } = await score(model, { dir, file: written.path, dataFile: written.dataPath, quantization: quantization.get(step.index), ...(quantizedInputs ? { quantizedInputs } : {}) }, step, candidate);
      const listed = [...(quantizerPasses.get(step.index) ?? []), ...(passes ?? [])];
      return { metrics, artifact, passes: listed.length ? listed : undefined, next: config.quantize === 'none' ? model : undefined };
    },
    discard: (artifact) => fs.rmSync(artifact.dir, { recursive: true, force: true }),
    log,
    remaining,
  };
}

/**
 * Moves the chosen candidate's files to OUT/pruned.onnx (+ OUT/pruned.onnx.data). The external
 * data location inside the model is the file's base name, which stays the same.
 */
export function promote(artifact: WrittenCandidate, out: string): { model: string; data?: string } {
  const model = path.join(out, PRUNED_NAME);
  const data = `${model}.data`;
  fs.mkdirSync(out, { recursive: true });
  if (artifact.dataFile) fs.renameSync(artifact.dataFile, data);
  else fs.rmSync(data, { force: true }); // a stale data file of an earlier run would mislead
  fs.renameSync(artifact.file, model);
  return { model, data: artifact.dataFile ? data : undefined };
}

/** Writes report.json and report.md next to the model (each atomically). */
export function writeReports(report: Report, out: string, files: { model: string; data?: string }): RunOutcome {
  const markdown = renderMarkdown(report);
  const json = path.join(out, REPORT_JSON);
  const md = path.join(out, REPORT_MD);
  writeJsonAtomic(json, report);
  writeFileAtomic(md, markdown);
  return { report, markdown, files: { ...files, json, markdown: md } };
}

/** `prune-gate eval`: two given models compared on the calibration set, gated when rules are given. */
export async function compareModels(options: {
  base: string;
  candidate: string;
  calibration: string;
  config?: Config;
  out?: string;
  log?: (line: string) => void;
  pullRequest?: ReportPullRequest;
  run?: ReportRun;
}): Promise<{ report: Report; markdown: string }> {
  return withSessionThreads(options.config?.device.threads, () => compareOnDevice(options));
}

/**
 * The candidate is fed the base's calibration inputs and read at the same output: two models
 * whose inputs differ (another export, another model) cannot be compared, which is the user's to
 * fix, named here before any work (onnxruntime would refuse the run with its own words).
 */
function checkSameInterface(base: OnnxModel, candidate: OnnxModel, output: string): void {
  const names = (m: OnnxModel) => new Set(graphInputs(m).map((i) => i.name));
  const [b, c] = [names(base), names(candidate)];
  const quoted = (xs: string[]) => xs.map((x) => `'${x}'`).join(', ');
  const lacks = [...b].filter((n) => !c.has(n));
  const extra = [...c].filter((n) => !b.has(n));
  const what = base.origin ? displayPath(base.origin) : 'the base';
  const cand = candidate.origin ? displayPath(candidate.origin) : 'the candidate';
  if (lacks.length || extra.length) {
    const diff = [lacks.length ? `lacks input ${quoted(lacks)}` : '', extra.length ? `has input ${quoted(extra)} that ${what} lacks` : ''].filter(Boolean).join(' and ');
    throw new UserError(`--candidate ${cand}: ${diff}; eval compares two models with the same inputs (a pruned copy of --base ${what})`);
  }
  const outputs = candidate.graph.output.map((o) => o.name);
  if (!outputs.includes(output)) throw new UserError(`--candidate ${cand}: has no output '${output}', the one compared (outputs: ${quoted(outputs.map((o) => o ?? ''))}); eval compares two models with the same outputs`);
}

async function compareOnDevice(options: Parameters<typeof compareModels>[0]): Promise<{ report: Report; markdown: string }> {
  const log = options.log ?? (() => undefined);
  if (options.out !== undefined) checkOutputFolder(options.out, '--out');
  checkedPath(options.base, '--base', 'file');
  checkedPath(options.candidate, '--candidate', 'file');
  const base = OnnxModel.read(options.base);
  const candidate = OnnxModel.read(options.candidate);
  const set = await readCalibration(options.calibration, base);
  checkSameInterface(base, candidate, set.output);
  const rules = options.config?.gate ?? [];
  checkRulesFitTask(rules, set, options.config?.file ? displayPath(options.config.file) : 'the gate');
  log(`evaluating the base model on ${set.count} calibration samples (${set.task})`);
  const latency = options.config ? { ...options.config.latency, settled: latencySettled(rules) } : undefined;
  const evaluator = await Evaluator.create(base, set, { latency, decode: decodeSettled(rules), log });
  try {
    checkRulesAgainstBase(rules, evaluator.baseQuality, options.config?.file ? displayPath(options.config.file) : 'the gate');
    log('evaluating the candidate');
    const evaluation = await evaluator.evaluate(candidate);
    const memoryPeaks = await measureMemoryIfBounded((file) => evaluator.memory(file), rules, evaluation.values, [options.base, options.candidate], log);
    const metrics = judge(evaluation.values, rules, set.task, options.config?.latency.onInconclusive);
    const report = buildReport({
      verdict: verdictOf(metrics),
      task: set.task,
      configFile: options.config?.file ?? null,
      calibration: { path: options.calibration, samples: set.count, tokens: tokenCount(set) },
      target: null,
      quantize: 'none',
      base: evaluation.base,
      candidate: evaluation.candidate,
      metrics,
      latency: evaluation.latency!,
      decode: evaluation.decode,
      steps: [],
      chosenStep: null,
      pruned: [],
      skipped: [],
      pullRequest: options.pullRequest,
      run: options.run,
      environment: currentEnvironment(),
      memory: memoryPeaks,
      interface: evaluation.interface,
      examples: evaluation.examples,
    });
    const markdown = renderMarkdown(report);
    if (options.out) {
      const out = path.resolve(options.out);
      writeJsonAtomic(path.join(out, REPORT_JSON), report);
      writeFileAtomic(path.join(out, REPORT_MD), markdown);
    }
    return { report, markdown };
  } finally {
    await evaluator.close();
  }
}
