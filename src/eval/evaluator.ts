import { UserError } from '../errors';
import { countParams, measureMacs } from '../graph/cost';
import type { MetricIntervals, MetricValues } from './metric-names';
import { OnnxModel } from '../onnx/model';
import type { DamageMeasure, PassTap } from '../prune/types';
import { RuntimeFailure, createSession, ort, sessionThreads } from '../onnx/runtime';
import { ModelMemory, measureMemory } from './memory';
import type { Feeds } from '../onnx/runtime';
import { Batch, CalibrationSet, batchCount, batches } from './calibration';
import { PassProgress } from '../util/progress';
import { runFolding } from '../prune/stats';
import { DEFAULT_LATENCY, LatencyOptions, LatencyResult, latencyIntervals, latencyLine, latencyValues, measureLatency, measureLatencyApart } from './latency';
import { measureDecodeSpeed } from './decode-speed';
import { DecodeSettled, DecodeSpeed, decodeSpeedLine, decodeSpeedValues } from './decode-values';
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
  /** Whether a decode speed timing decides the gate's bounds on it (generation sets; `latency`'s other settings time it). */
  decode?: DecodeSettled;
  log?: (line: string) => void;
  /** Base outputs up to this size are kept in memory instead of recomputed for each candidate. */
  cacheBytes?: number;
  /**
   * Outputs the base model's pass also fetches, and what takes them (the pruning's first
   * statistics): its copy with those outputs is run instead of the base. Not for generation sets,
   * whose pass follows the decoding.
   */
  tap?: PassTap;
  /** Base and candidate sessions one at a time, never both open (they do not fit device.memory together): latency is timed apart. */
  apart?: boolean;
}

/** One candidate compared with the base model. */
export interface Evaluation {
  base: ModelStats;
  candidate: ModelStats;
  /** Every metric the task has, for both models (latency re-measured with each candidate, when measured), and the timed ones' intervals. */
  values: { base: MetricValues; candidate: MetricValues; intervals?: MetricIntervals };
  /** Latency timed against the base; absent until measured (Evaluator.evaluate without efficiency). */
  latency?: LatencyResult;
  /** Generation sets: decode speed at batch 1 timed against the base, measured with latency. */
  decode?: DecodeSpeed;
  /** Generation sets with a tokenizer: a few samples decoded, base and candidate side by side. */
  examples?: GenerationExample[];
  /** Inputs and outputs whose declared shape the candidate changed; empty when none did. */
  interface: InterfaceChange[];
  /** The exact sums the quality metrics are ratios of: parts of the set evaluated apart add up (metrics.ts). */
  sums: { base: MetricSums; candidate: MetricSums };
}

const DEFAULT_CACHE_BYTES = 256 * 2 ** 20;
/** A base model smaller than this keeps its session open for the whole run (opening one costs more than it holds). */
const KEEP_BASE_BYTES = 256 * 2 ** 20;

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
    private baseSessionOpen: ort.InferenceSession | undefined,
    readonly base: ModelStats,
    /** The base model's own task metrics (accuracy, perplexity, ...). */
    readonly baseTask: MetricValues,
    /** Their sums. */
    private readonly baseSums: MetricSums,
    /** The base outputs per batch when they fit in memory, else undefined (recomputed). */
    private readonly cached: Rows[] | undefined,
    private readonly options: Required<Omit<EvaluatorOptions, 'log' | 'tap' | 'decode'>> & Pick<EvaluatorOptions, 'log' | 'decode'>,
    private readonly baseModel: OnnxModel,
    private readonly generation: GenerationRun | undefined,
    /** Whether the output's first axis holds the batch's samples (so a batch's rows split by sample). */
    private readonly samplesLead: boolean,
  ) {}

  static async create(model: OnnxModel, loaded: CalibrationSet, options: EvaluatorOptions = {}): Promise<Evaluator> {
    const opts = { latency: options.latency ?? DEFAULT_LATENCY, cacheBytes: options.cacheBytes ?? DEFAULT_CACHE_BYTES, log: options.log, decode: options.decode, apart: options.apart ?? false };
    const tap = loaded.generation ? undefined : options.tap;
    // MACs are traced (every intermediate of one sample, 8.6 GB for a 7B model at 128 tokens)
    // before the base's session exists, so the two never add up (docs/measured.md, "A 7B gate on
    // a 16 GB runner"). A generation set's forward samples exist only after decoding.
    const early = loaded.generation ? undefined : await modelStats(model, loaded, opts.log);
    const session = await sessionFor(tap?.model ?? model);
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
      const stats = early ?? (await modelStats(model, set, opts.log));
      const task = new TaskAccumulator(set.task);
      let cached: Rows[] | undefined = [];
      let cachedBytes = 0;
      let samplesLead = true;
      const progress = new PassProgress('evaluating the base model', batchCount(set), opts.log);
      for (const batch of batches(set)) {
        let out: Rows;
        try {
          out = tap ? await runTapped(session, batch.feeds, set, tap) : await runOutput(session, batch.feeds, set);
        } catch (e) {
          throw baseFails(set, e, `samples ${batch.start} to ${batch.start + batch.size - 1}`);
        }
        task.add(out, planRows(set, batch, out));
        samplesLead &&= out.dims[0] === batch.size && out.rows % batch.size === 0;
        cachedBytes += out.data.byteLength;
        if (cached && cachedBytes <= opts.cacheBytes) cached.push(out);
        else cached = undefined;
        progress.tick();
      }
      const baseSums = generation ? (await generation.measure(session, true)).sums : task.sums();
      const baseTask = generation ? generationValues(baseSums) : task.values();
      // With every base output kept, a large base model's session is not needed until something
      // is timed against it: let it go, so the search does not hold a second copy of the model.
      // A tapped copy is not the base: the base's own session is opened when something needs it.
      const keep = !tap && (!cached || generation || model.bytesOnDisk() < KEEP_BASE_BYTES);
      if (!keep) await session.release();
      return new Evaluator(set, keep ? session : undefined, stats, baseTask, baseSums, cached, opts, model, generation, samplesLead);
    } catch (e) {
      await session.release();
      throw e;
    }
  }

  /** The base model's session, opened again if it was let go. */
  private async baseSession(): Promise<ort.InferenceSession> {
    this.baseSessionOpen ??= await sessionFor(this.baseModel);
    return this.baseSessionOpen;
  }

  /** `fn` with the base model's session; one opened again for it is let go after. */
  private async withBase<R>(fn: (base: ort.InferenceSession) => Promise<R>): Promise<R> {
    const open = !!this.baseSessionOpen;
    try {
      return await fn(await this.baseSession());
    } finally {
      if (!open) {
        await this.baseSessionOpen?.release();
        this.baseSessionOpen = undefined;
      }
    }
  }

  /** The base model's values of the quality metrics (comparisons with itself are exact). */
  get baseQuality(): MetricValues {
    return { ...this.baseTask, ...SELF_COMPARISON, ...(this.generation ? { 'sequence-agreement': 1 } : {}) };
  }

  /**
   * Every metric of `candidate` against the base. `sameAs`: a model with the same weights whose
   * pass over the whole set `loss` already made (the pruning engine's confirmation of the
   * candidate it kept); its sums are taken instead of a second pass. Without `efficiency`, the
   * metrics that cost runs of their own (latency, timed; MACs, traced) are left out, to be
   * measured by `withEfficiency` if this candidate is kept.
   */
  async evaluate(candidate: OnnxModel, options: { sameAs?: OnnxModel; efficiency?: boolean } = {}): Promise<Evaluation> {
    // A session only when something runs: the pass (not made already), decoding, or timing.
    let session: ort.InferenceSession | undefined;
    const open = async () => (session ??= await sessionFor(candidate));
    let evaluation: Evaluation;
    try {
      const forward = (options.sameAs && this.forward.get(options.sameAs)) ?? (await this.forwardPass(await open(), 'evaluating the candidate'));
      const { task, comparison } = forward;
      const generated = this.generation ? await this.generation.measure(await open(), false, this.options.log) : undefined;
      evaluation = {
        base: this.base,
        candidate: { path: candidate.path, params: countParams(candidate), bytes: candidate.bytesOnDisk(), macs: null },
        values: {
          base: { ...this.baseQuality, ...sizeValues(this.base) },
          candidate: { ...(generated?.values ?? task.values()), ...comparison.values(), params: countParams(candidate), size: candidate.bytesOnDisk() },
        },
        examples: generated && this.generation?.examples(generated.generations),
        interface: interfaceChanges(this.baseModel, candidate),
        sums: { base: this.baseSums, candidate: { ...(generated?.sums ?? task.sums()), ...comparison.sums() } },
      };
      if (options.efficiency === false) return evaluation;
      if (this.options.apart) {
        await (session as ort.InferenceSession | undefined)?.release();
        session = undefined;
        return await this.measureEfficiency(candidate, evaluation);
      }
      // Decode speed is timed on fresh sessions (timeGeneration): this one has run the set.
      if (!this.generation) return await this.measureEfficiency(candidate, evaluation, await open());
    } finally {
      await (session as ort.InferenceSession | undefined)?.release();
    }
    return this.withEfficiency(candidate, evaluation);
  }

  /** `evaluation` of `candidate` with latency (and on a generation set decode speed), timed against the base, and MACs, if it lacks them. */
  async withEfficiency(candidate: OnnxModel, evaluation: Evaluation): Promise<Evaluation> {
    if (evaluation.latency) return evaluation;
    if (this.options.apart) return this.measureEfficiency(candidate, evaluation);
    const session = await sessionFor(candidate);
    try {
      return await this.measureEfficiency(candidate, evaluation, session);
    } finally {
      await session.release();
    }
  }

  /** Latency and MACs of `candidate`; without `session`, latency is timed apart (options.apart), each model's session opened for its own runs. */
  private async measureEfficiency(candidate: OnnxModel, evaluation: Evaluation, session?: ort.InferenceSession): Promise<Evaluation> {
    const latencyFeeds = (batches(this.set).next().value as Batch).feeds;
    if (!session) await this.close(); // the base's session, if it was kept, is opened again for its own block
    // Apart (one model's session at a time), decode speed is not timed: it alternates the two.
    const { latency, decode } = !session
      ? { latency: await measureLatencyApart(() => sessionFor(this.baseModel), () => sessionFor(candidate), latencyFeeds, this.options.latency), decode: undefined }
      : this.generation
        ? await this.timeGeneration(this.generation, session, latencyFeeds)
        : { latency: await this.withBase((base) => measureLatency(base, session, latencyFeeds, this.options.latency)), decode: undefined };
    this.options.log?.(latencyLine(latency));
    if (decode) this.options.log?.(decodeSpeedLine(decode));
    const decoded = decode && decodeSpeedValues(decode);
    const stats = await modelStats(candidate, this.set, this.options.log);
    return {
      ...evaluation,
      candidate: stats,
      values: {
        base: { ...evaluation.values.base, ...efficiencyValues(this.base, latency.base), ...decoded?.base },
        candidate: { ...evaluation.values.candidate, ...efficiencyValues(stats, latency.candidate), ...decoded?.candidate },
        intervals: { ...evaluation.values.intervals, ...latencyIntervals(latency), ...decoded?.intervals },
      },
      latency,
      ...(decode ? { decode } : {}),
    };
  }

  /**
   * Decode speed, then latency, of a generation set's candidate in `session`, opened for this and
   * not run yet, against a base session opened likewise. Sessions that have run the set's batches
   * (and latency's) time the small runs of decoding unlike an app that only decodes, by as much as
   * 1.9x where fresh ones measure 1.2x (docs/measured.md, "Decode speed"); the base's kept
   * session is let go first, so each model is loaded once.
   */
  private async timeGeneration(generation: GenerationRun, session: ort.InferenceSession, latencyFeeds: Feeds): Promise<{ latency: LatencyResult; decode: DecodeSpeed }> {
    await this.close();
    const base = await sessionFor(this.baseModel);
    try {
      const decode = await measureDecodeSpeed(base, session, generation.decodeInput(), this.options.latency, this.options.decode);
      return { latency: await measureLatency(base, session, latencyFeeds, this.options.latency), decode };
    } finally {
      await base.release();
    }
  }

  /** What `loss` measures. */
  readonly lossName = LOSS_NAME;

  /** This evaluator as the pruning engine's damage measure: losses on its set, latency on this machine. */
  damageMeasure(): DamageMeasure {
    return {
      name: this.lossName,
      samples: this.set.count,
      loss: (candidate, share, tap) => this.loss(candidate, share, tap),
      losses: (candidate, shares, tap) => this.losses(candidate, shares, tap),
      batches: batchCount(this.set),
      sampleLosses: (candidate, extra, outputs, batched) => this.sampleLosses(candidate, extra, outputs, batched),
      latency: (candidate) => this.latencyRatio(candidate),
    };
  }

  /**
   * The loss a pruning search minimizes, on the first `share` of the calibration batches: the
   * mean KL divergence from the base's outputs to the candidate's (the `kl-divergence` metric).
   * It uses each row's whole distribution, not one label, so it separates candidates on small
   * calibration sets where the labels' cross-entropy keeps the one that happens to fit them
   * (docs/pruning.md).
   */
  async loss(candidate: OnnxModel, share = 1, tap?: PassTap): Promise<number> {
    return (await this.losses(candidate, [share], tap))[0];
  }

  /** The loss on the first `shares[i]` of the batches, each, from one pass (as far as the largest share). */
  async losses(candidate: OnnxModel, shares: number[], tap?: PassTap): Promise<number[]> {
    const session = await sessionFor(tap?.model ?? candidate, PASS_ONLY);
    try {
      const total = batchCount(this.set);
      const takes = shares.map((share) => Math.max(1, Math.floor(share * total)));
      const values = takes.map(() => NaN);
      const forward = await this.forwardPass(session, undefined, Math.max(...takes), tap, (done, comparison) => {
        takes.forEach((take, i) => {
          if (take === done) values[i] = comparison.values()['kl-divergence'] as number;
        });
      });
      // A pass over the whole set is the candidate's evaluation too, if it is the one kept.
      if (Math.max(...takes) >= total) this.forward.set(candidate, forward);
      return values;
    } finally {
      await session.release();
    }
  }

  /** Whether `loss` made a pass of `candidate` over the whole set, which `evaluate` with `sameAs` reuses. */
  hasPassOf(candidate: OnnxModel): boolean {
    return this.forward.has(candidate);
  }

  /** Candidates' passes over the whole set, by the model measured (see `evaluate`). */
  private readonly forward = new WeakMap<OnnxModel, { task: TaskAccumulator; comparison: ComparisonAccumulator }>();

  /** The candidate's task metrics and its comparison with the base over the set's first `take` batches. */
  private async forwardPass(
    session: ort.InferenceSession,
    what?: string,
    take = batchCount(this.set),
    tap?: PassTap,
    after?: (done: number, comparison: ComparisonAccumulator) => void,
  ): Promise<{ task: TaskAccumulator; comparison: ComparisonAccumulator }> {
    const task = new TaskAccumulator(this.set.task);
    const comparison = new ComparisonAccumulator();
    let index = 0;
    const progress = what ? new PassProgress(what, take, this.options.log) : undefined;
    for (const batch of batches(this.set)) {
      if (index >= take) break;
      const base = this.cached?.[index] ?? (await runOutput(await this.baseSession(), batch.feeds, this.set));
      let out: Rows;
      if (tap) out = await runTapped(session, batch.feeds, this.set, tap);
      else out = await runOutput(session, batch.feeds, this.set);
      const plan = planRows(this.set, batch, out);
      task.add(out, plan);
      comparison.add(base, out, plan);
      index++;
      after?.(index, comparison);
      progress?.tick();
    }
    return { task, comparison };
  }

  /**
   * The KL divergence from the base's outputs of each sample of the set, the candidate run with
   * `extra` feeds for each batch of samples (the sensitivity probe's masks: `extra(start, size)`)
   * and the per-sample values of the `outputs` (one value per sample of a batch). One pass, in
   * the set's batches, or one sample at a time when not `batched` or when the output does not
   * lead with the samples; the base's outputs are the cached ones when they were kept.
   */
  async sampleLosses(
    candidate: OnnxModel,
    extra: (start: number, size: number) => Feeds,
    outputs: string[] = [],
    batched = true,
  ): Promise<{ losses: Float64Array; outputs: Float64Array[] }> {
    const session = await sessionFor(candidate, PASS_ONLY);
    const losses = new Float64Array(this.set.count);
    const values = outputs.map(() => new Float64Array(this.set.count));
    const size = batched && this.samplesLead ? this.set.batchSize : 1;
    try {
      const progress = new PassProgress('the sensitivity probe', batchCount(this.set, size), this.options.log);
      let index = 0;
      for (const batch of batches(this.set, size)) {
        const base = (size === this.set.batchSize ? this.cached?.[index] : this.cachedSample(batch.start)) ?? (await runOutput(await this.baseSession(), batch.feeds, this.set));
        const result = await session.run({ ...batch.feeds, ...extra(batch.start, batch.size) }, [this.set.output, ...outputs]);
        const out = outputRows(result[this.set.output]);
        const plan = planRows(this.set, batch, out);
        const rows = out.rows / batch.size;
        for (let i = 0; i < batch.size; i++) {
          const acc = new ComparisonAccumulator();
          acc.add(base, out, plan, i * rows, (i + 1) * rows);
          losses[batch.start + i] = acc.values()['kl-divergence'] as number;
        }
        outputs.forEach((name, k) => {
          const data = result[name].data as Float32Array;
          for (let i = 0; i < batch.size; i++) values[k][batch.start + i] = Number(data[data.length === batch.size ? i : 0]);
        });
        index++;
        progress.tick();
      }
      return { losses, outputs: values };
    } finally {
      await session.release();
    }
  }

  /** The base's cached output rows of one sample, when the batch holding it was kept and its output's axis 0 is the batch. */
  private cachedSample(sample: number): Rows | undefined {
    const batch = this.cached?.[Math.floor(sample / this.set.batchSize)];
    if (!batch) return undefined;
    const size = Math.min(this.set.batchSize, this.set.count - Math.floor(sample / this.set.batchSize) * this.set.batchSize);
    if (batch.dims[0] !== size || batch.rows % size !== 0) return undefined;
    const per = batch.rows / size;
    const at = sample % this.set.batchSize;
    return { data: batch.data.subarray(at * per * batch.width, (at + 1) * per * batch.width), rows: per, width: batch.width, dims: [1, ...batch.dims.slice(1)] };
  }

  /**
   * The candidate's latency over the base's on this machine: the median of runs of one sample
   * alternated with the base's, for about a quarter of a second (at least 5 of each): where a
   * width runs slower (a convolution's channel count off its kernel's block) it shows most.
   */
  async latencyRatio(candidate: OnnxModel): Promise<number> {
    const session = await sessionFor(candidate);
    try {
      const first = batches(this.set, 1).next().value as Batch;
      return await this.withBase(async (base) => {
        const l = await measureLatency(base, session, first.feeds, { warmup: 2, runs: 201, time: 0.25, settled: () => false });
        return l.candidate.p50_ms / l.base.p50_ms;
      });
    } finally {
      await session.release();
    }
  }

  /**
   * The memory metric of the model in `file`: the peak RSS (MiB) of a fresh process that loads it
   * and runs one calibration batch on the device's threads, net of the same process without it.
   */
  async memory(file: string): Promise<ModelMemory> {
    const first = batches(this.set, this.set.batchSize).next();
    return measureMemory(file, (first.value as Batch).feeds, sessionThreads());
  }

  async close(): Promise<void> {
    await this.baseSessionOpen?.release();
    this.baseSessionOpen = undefined;
  }
}

/** The base model is the reference: if it cannot run on the data, the data does not fit it. */
function baseFails(set: CalibrationSet, e: unknown, where: string): Error {
  // Only onnxruntime's refusal is the data's fault; an error of our own code is a bug (exit 3).
  if (!(e instanceof RuntimeFailure)) return e as Error;
  const why = String((e as Error)?.message ?? e).split('\n')[0];
  return new UserError(`${set.source}: the base model fails on this calibration data (${where}): ${why}`);
}

function efficiencyValues(stats: ModelStats, latency: { p50_ms: number; p95_ms: number }): MetricValues {
  return { ...latencyValues(latency), ...sizeValues(stats) };
}

/** The efficiency values a model's stats give (size on disk, params, MACs when measured). */
export function sizeValues(stats: ModelStats): MetricValues {
  return { size: stats.bytes, params: stats.params, ...(stats.macs !== null ? { macs: stats.macs } : {}) };
}

/** From the file when there is one, so onnxruntime maps external data itself. */
function sessionFor(model: OnnxModel, options: ort.InferenceSession.SessionOptions = {}): Promise<ort.InferenceSession> {
  return model.path ? createSession(model.path, options) : createSession(model, options);
}

/**
 * A session for one pass over the set, not timed: without a memory arena, which would keep its
 * peak (a probe's added outputs, a candidate's activations) for the session's life.
 */
const PASS_ONLY: ort.InferenceSession.SessionOptions = { enableCpuMemArena: false };

async function runOutput(session: ort.InferenceSession, feeds: Feeds, set: CalibrationSet): Promise<Rows> {
  const result = await session.run(feeds, [set.output]);
  return outputRows(result[set.output]);
}

/** One run that also feeds `tap`: the model's output rows. */
async function runTapped(session: ort.InferenceSession, feeds: Feeds, set: CalibrationSet, tap: PassTap): Promise<Rows> {
  return outputRows((await runFolding(session, feeds, tap, [set.output]))[set.output]);
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
