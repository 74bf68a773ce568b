import { UserError } from '../errors';
import { countParams, measureMacs } from '../graph/cost';
import type { MetricValues } from './metric-names';
import { OnnxModel } from '../onnx/model';
import { createSession, ort, sessionThreads } from '../onnx/runtime';
import { measureMemory } from './memory';
import type { Feeds } from '../onnx/runtime';
import { Batch, CalibrationSet, batchCount, batches } from './calibration';
import { PassProgress } from '../util/progress';
import { DEFAULT_LATENCY, LatencyOptions, LatencyResult, measureLatency } from './latency';
import { GenerationExample, GenerationRun, InterfaceChange, generationValues, interfaceChanges } from './generation';
import { ComparisonAccumulator, MetricSums, Rows, SELF_COMPARISON, TaskAccumulator, outputRows, planRows } from './metrics';

/** What report.json says about each model. */
export interface ModelStats {
  path: string;
  params: number;
  /** The .onnx file plus its external data. */
  bytes: number;
  /** Multiply-accumulates per sample at the calibration set's input shape; null if unknown. */
  macs: number | null;
}

export interface EvaluatorOptions {
  latency?: LatencyOptions;
  log?: (line: string) => void;
  /** Base outputs up to this size are kept in memory instead of recomputed for each candidate. */
  cacheBytes?: number;
}

/** One candidate compared with the base model. */
export interface Evaluation {
  base: ModelStats;
  candidate: ModelStats;
  /** Every metric the task has, for both models (latency re-measured with each candidate). */
  values: { base: MetricValues; candidate: MetricValues };
  latency: LatencyResult;
  /** Generation sets with a tokenizer: a few samples decoded, base and candidate side by side. */
  examples?: GenerationExample[];
  /** Inputs and outputs whose declared shape the candidate changed; empty when none did. */
  interface: InterfaceChange[];
  /** The exact sums the quality metrics are ratios of: parts of the set evaluated apart add up (metrics.ts). */
  sums: { base: MetricSums; candidate: MetricSums };
}

const DEFAULT_CACHE_BYTES = 256 * 2 ** 20;

/** What Evaluator.loss measures. */
export const LOSS_NAME = 'KL divergence from the base';

/**
 * Runs the base model and candidates on the same calibration batches. The base session is
 * created once and reused for every candidate (onnxruntime-node leaks memory across session
 * create/release cycles); each candidate gets one session, released after its evaluation.
 */
export class Evaluator {
  private constructor(
    /** The set every pass runs: the calibration set, or for generation the prompts followed by the base's generations. */
    readonly set: CalibrationSet,
    private readonly baseSession: ort.InferenceSession,
    readonly base: ModelStats,
    /** The base model's own task metrics (accuracy, perplexity, ...). */
    readonly baseTask: MetricValues,
    /** Their sums. */
    private readonly baseSums: MetricSums,
    /** The base outputs per batch when they fit in memory, else undefined (recomputed). */
    private readonly cached: Rows[] | undefined,
    private readonly options: Required<Omit<EvaluatorOptions, 'log'>> & Pick<EvaluatorOptions, 'log'>,
    private readonly baseModel: OnnxModel,
    private readonly generation: GenerationRun | undefined,
  ) {}

  static async create(model: OnnxModel, loaded: CalibrationSet, options: EvaluatorOptions = {}): Promise<Evaluator> {
    const opts = { latency: options.latency ?? DEFAULT_LATENCY, cacheBytes: options.cacheBytes ?? DEFAULT_CACHE_BYTES, log: options.log };
    const session = await sessionFor(model);
    try {
      let set = loaded;
      let generation: GenerationRun | undefined;
      if (loaded.generation) {
        opts.log?.(`generating up to ${loaded.generation.maxNewTokens} tokens for each of ${loaded.generation.prompts.length} prompts with the base model`);
        generation = await GenerationRun.start(session, loaded, opts.log).catch((e: unknown) => {
          throw baseFails(loaded, e, 'decoding the prompts');
        });
        set = generation.forward;
      }
      const stats = await modelStats(model, set, opts.log);
      const task = new TaskAccumulator(set.task);
      let cached: Rows[] | undefined = [];
      let cachedBytes = 0;
      const progress = new PassProgress('evaluating the base model', batchCount(set), opts.log);
      for (const batch of batches(set)) {
        let out: Rows;
        try {
          out = await runOutput(session, batch.feeds, set);
        } catch (e) {
          throw baseFails(set, e, `samples ${batch.start} to ${batch.start + batch.size - 1}`);
        }
        task.add(out, planRows(set, batch, out));
        cachedBytes += out.data.byteLength;
        if (cached && cachedBytes <= opts.cacheBytes) cached.push(out);
        else cached = undefined;
        progress.tick();
      }
      const baseSums = generation ? (await generation.measure(session, true)).sums : task.sums();
      const baseTask = generation ? generationValues(baseSums) : task.values();
      return new Evaluator(set, session, stats, baseTask, baseSums, cached, opts, model, generation);
    } catch (e) {
      await session.release();
      throw e;
    }
  }

  /** The base model's values of the quality metrics (comparisons with itself are exact). */
  get baseQuality(): MetricValues {
    return { ...this.baseTask, ...SELF_COMPARISON, ...(this.generation ? { 'sequence-agreement': 1 } : {}) };
  }

  async evaluate(candidate: OnnxModel): Promise<Evaluation> {
    const session = await sessionFor(candidate);
    try {
      const task = new TaskAccumulator(this.set.task);
      const comparison = new ComparisonAccumulator();
      let index = 0;
      let latencyFeeds: Feeds | undefined;
      const progress = new PassProgress('evaluating the candidate', batchCount(this.set), this.options.log);
      for (const batch of batches(this.set)) {
        latencyFeeds ??= batch.feeds;
        const base = this.cached?.[index] ?? (await runOutput(this.baseSession, batch.feeds, this.set));
        const out = await runOutput(session, batch.feeds, this.set);
        const plan = planRows(this.set, batch, out);
        task.add(out, plan);
        comparison.add(base, out, plan);
        index++;
        progress.tick();
      }
      const generated = await this.generation?.measure(session, false, this.options.log);
      const latency = await measureLatency(this.baseSession, session, latencyFeeds as Feeds, this.options.latency);
      const stats = await modelStats(candidate, this.set, this.options.log);
      return {
        base: this.base,
        candidate: stats,
        values: {
          base: { ...this.baseQuality, ...efficiencyValues(this.base, latency.base) },
          candidate: { ...(generated?.values ?? task.values()), ...comparison.values(), ...efficiencyValues(stats, latency.candidate) },
        },
        latency,
        examples: generated && this.generation?.examples(generated.generations),
        interface: interfaceChanges(this.baseModel, candidate),
        sums: { base: this.baseSums, candidate: { ...(generated?.sums ?? task.sums()), ...comparison.sums() } },
      };
    } finally {
      await session.release();
    }
  }

  /** What `loss` measures. */
  readonly lossName = LOSS_NAME;

  /**
   * The loss a pruning search minimizes, on the first `share` of the calibration batches: the
   * mean KL divergence from the base's outputs to the candidate's (the `kl-divergence` metric).
   * It uses each row's whole distribution, not one label, so it separates candidates on small
   * calibration sets where the labels' cross-entropy keeps the one that happens to fit them
   * (docs/pruning.md).
   */
  async loss(candidate: OnnxModel, share = 1): Promise<number> {
    const session = await sessionFor(candidate);
    try {
      const acc = new ComparisonAccumulator();
      const take = Math.max(1, Math.floor(share * Math.ceil(this.set.count / this.set.batchSize)));
      let index = 0;
      for (const batch of batches(this.set)) {
        if (index >= take) break;
        const base = this.cached?.[index] ?? (await runOutput(this.baseSession, batch.feeds, this.set));
        const out = await runOutput(session, batch.feeds, this.set);
        acc.add(base, out, planRows(this.set, batch, out));
        index++;
      }
      return acc.values()['kl-divergence'] as number;
    } finally {
      await session.release();
    }
  }

  /**
   * The candidate's latency over the base's on this machine: medians of runs alternated with the
   * base's, at batch 1 and at a calibration batch; the worse of the two.
   */
  async latencyRatio(candidate: OnnxModel, options: LatencyOptions = { warmup: 10, runs: 21 }): Promise<number> {
    const session = await sessionFor(candidate);
    try {
      let worst = 0;
      for (const size of [...new Set([1, this.set.batchSize])]) {
        const first = batches(this.set, size).next();
        if (first.done) continue;
        const l = await measureLatency(this.baseSession, session, first.value.feeds, options);
        worst = Math.max(worst, l.candidate.p50_ms / l.base.p50_ms);
      }
      return worst;
    } finally {
      await session.release();
    }
  }

  /**
   * The memory metric of the model in `file`: peak RSS (MiB) of a fresh process that loads it and
   * runs one calibration batch, on the device's threads.
   */
  async memory(file: string): Promise<number> {
    const first = batches(this.set, this.set.batchSize).next();
    return measureMemory(file, (first.value as Batch).feeds, sessionThreads());
  }

  async close(): Promise<void> {
    await this.baseSession.release();
  }
}

/** The base model is the reference: if it cannot run on the data, the data does not fit it. */
function baseFails(set: CalibrationSet, e: unknown, where: string): Error {
  if (e instanceof UserError) return e;
  const why = String((e as Error)?.message ?? e).split('\n')[0];
  return new UserError(`${set.source}: the base model fails on this calibration data (${where}): ${why}`);
}

function efficiencyValues(stats: ModelStats, latency: { p50_ms: number; p95_ms: number }): MetricValues {
  return { ...latencyValues(latency), ...sizeValues(stats) };
}

/** One model's side of a timing as the latency metrics. */
export function latencyValues(latency: { p50_ms: number; p95_ms: number }): MetricValues {
  return { 'latency-p50': latency.p50_ms, 'latency-p95': latency.p95_ms };
}

/** The efficiency values a model's stats give (size on disk, params, MACs when measured). */
export function sizeValues(stats: ModelStats): MetricValues {
  return { size: stats.bytes, params: stats.params, ...(stats.macs !== null ? { macs: stats.macs } : {}) };
}

/** From the file when there is one, so onnxruntime maps external data itself. */
function sessionFor(model: OnnxModel): Promise<ort.InferenceSession> {
  return model.path ? createSession(model.path) : createSession(model);
}

async function runOutput(session: ort.InferenceSession, feeds: Feeds, set: CalibrationSet): Promise<Rows> {
  const result = await session.run(feeds, [set.output]);
  return outputRows(result[set.output]);
}

/** Parameters, bytes on disk and MACs per sample (measured on the set's first sample). */
export async function modelStats(model: OnnxModel, set: CalibrationSet, log?: (line: string) => void): Promise<ModelStats> {
  let macs: number | null = null;
  try {
    macs = (await measureMacs(model, firstSample(set))).total;
  } catch (e) {
    log?.(`MACs of ${model.path || 'the model'} not measured: ${String((e as Error).message ?? e).split('\n')[0]}`);
  }
  return { path: model.path, params: countParams(model), bytes: model.bytesOnDisk(), macs };
}

/** One sample (a batch of 1): MACs are per sample, and tracing every intermediate of a whole batch costs memory. */
function firstSample(set: CalibrationSet): Feeds {
  return (batches(set, 1).next().value as Batch).feeds;
}
