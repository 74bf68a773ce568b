import type { ort } from '../onnx/runtime';
import type { Feeds } from '../onnx/runtime';
import { Interval, pairedBootstrap, percentileInPlace } from './bootstrap';
import type { MetricInterval, MetricIntervals, MetricValues } from './metric-names';

/**
 * Latency as a measurement with its uncertainty (docs/contracts.md, "Latency"): base and
 * candidate runs alternated, as many as a stable median needs within the time allowed, and 95 %
 * bootstrap intervals of the medians' ratio, so a bound is judged only where the runs decide it.
 */

export interface LatencyOptions {
  /** Untimed runs of each model first (allocations, caches, thread pools). */
  warmup: number;
  /** Seconds the timed runs may take (default 10): fewer when the interval is narrow, and decides `settled`, before. */
  time?: number;
  /** At most this many timed runs of each model (undefined: as many as `time` allows). */
  runs?: number;
  /**
   * The least half-width of every interval, as a share of its figure (default 0.03): how far
   * separate measurements on one machine differ, which one measurement's runs cannot show (a
   * neighbour's load changes between them). Criterion's noise threshold, as a floor.
   */
  noise?: number;
  /**
   * Whether the figures so far decide what they are measured for (the gate's latency bounds:
   * each interval wholly on one side of its bound). Runs go on, within `time`, until they do.
   */
  settled?: (latency: LatencyResult) => boolean;
}

/**
 * Ten seconds at most per candidate: a small model is done when its interval is narrow (well
 * before), a large one gets what fits. Noise 3 %: gates repeated minutes apart on a shared
 * 2-core machine measured the same models' speedup about that far apart (docs/measured.md,
 * "Latency, repeated").
 */
export const DEFAULT_LATENCY = { warmup: 3, time: 10, noise: 0.03 } satisfies LatencyOptions;

/**
 * Fewer runs than this give no interval: with 5 or fewer, all of them fall on one side of the
 * true median more often than once in 20 (2 x 0.5^5 > 0.05), so no 95 % interval of a median exists.
 */
export const MIN_RUNS = 6;

/** The bootstrap interval's half-width, as a share of the ratio, past which more runs are not worth their time (or the noise floor, if wider). */
const PRECISION = 0.01;

/**
 * The figures are first looked at (to stop early) after this share of `time`, and after
 * STEADY_RUNS runs: runs made within a fraction of a second share one state of a busy machine (a
 * neighbour's burst), so an interval from them alone is narrower than the next such stretch
 * would agree with.
 */
const FIRST_LOOK = 0.2;
/** Fewer runs than this make a bootstrap interval of a median too coarse to stop on (it takes few distinct values). */
export const STEADY_RUNS = 20;
/** After a look at the figures, the next comes when the runs have grown by this factor (few looks: each bootstraps every run). */
const LOOK_GROWTH = 1.5;

export interface LatencyStats {
  p50_ms: number;
  p95_ms: number;
}

/** 95 % intervals of one percentile: of the ratio base / candidate (the speedup), and of the candidate's own time. */
export interface PercentileIntervals {
  speedup: Interval;
  candidate: Interval;
}

export interface LatencyResult {
  base: LatencyStats;
  candidate: LatencyStats;
  /** base p50 / candidate p50. */
  speedup: number;
  /** Timed runs of each model. */
  runs: number;
  /** Seconds the timed runs took. */
  seconds: number;
  /** 95 % intervals of the medians and 95th percentiles, at least `noise` wide each side; null with fewer than MIN_RUNS runs. */
  intervals: { p50: PercentileIntervals; p95: PercentileIntervals } | null;
  /** The intervals' least half-width, as a share of their figure (LatencyOptions.noise). */
  noise: number;
  /** What makes the figures less sure than usual (a busy machine, too little time), in words for the report. */
  warnings: string[];
}

/** A monotonic clock in milliseconds. */
export type Clock = () => number;
const wallClock: Clock = () => Number(process.hrtime.bigint()) / 1e6;

/** One timed run of a model: its time in ms by `clock` (what the run needs first, untimed, inside). */
export type Trial = (clock: Clock) => Promise<number>;

/** A trial that times one run of `session` on `feeds`. */
export function timedRun(session: Pick<ort.InferenceSession, 'run'>, feeds: Feeds): Trial {
  return async (clock) => {
    const start = clock();
    await session.run(feeds);
    return clock() - start;
  };
}

/** Times base and candidate on the same batch (measureTrials of one run each). */
export function measureLatency(
  base: Pick<ort.InferenceSession, 'run'>,
  candidate: Pick<ort.InferenceSession, 'run'>,
  feeds: Feeds,
  options: LatencyOptions = DEFAULT_LATENCY,
  clock: Clock = wallClock,
): Promise<LatencyResult> {
  return measureTrials(timedRun(base, feeds), timedRun(candidate, feeds), options, clock);
}

/**
 * Times base and candidate trials alternately, run by run (and which goes first), so that drift
 * of the machine (frequency scaling, a noisy neighbour) hits both alike. Runs go on until the
 * speedup's bootstrap interval is within PRECISION (or the noise floor) of it and `settled`
 * agrees, or `time` is up (at least MIN_RUNS of each, unless `runs` allows fewer); the figures
 * are looked at once a fifth of `time` has passed and STEADY_RUNS are made, then each time the
 * runs have grown by half.
 */
export async function measureTrials(base: Trial, candidate: Trial, options: LatencyOptions = DEFAULT_LATENCY, clock: Clock = wallClock): Promise<LatencyResult> {
  for (let i = 0; i < options.warmup; i++) {
    await base(clock);
    await candidate(clock);
  }
  const baseTimes: number[] = [];
  const candTimes: number[] = [];
  const most = Math.max(1, options.runs ?? Infinity);
  const time = options.time ?? DEFAULT_LATENCY.time;
  const noise = options.noise ?? DEFAULT_LATENCY.noise;
  const start = clock();
  let look = STEADY_RUNS;
  for (let n = 1; ; n++) {
    if (n % 2 === 1) {
      baseTimes.push(await base(clock));
      candTimes.push(await candidate(clock));
    } else {
      candTimes.push(await candidate(clock));
      baseTimes.push(await base(clock));
    }
    const seconds = (clock() - start) / 1000;
    const timeUp = n >= most || (n >= MIN_RUNS && seconds >= time);
    if (!timeUp && (n < look || seconds < FIRST_LOOK * time)) continue;
    const { result, halfWidth } = summarize(baseTimes, candTimes, seconds, noise);
    const stable = halfWidth <= Math.max(PRECISION, noise);
    if (timeUp || (stable && (options.settled?.(result) ?? true))) {
      return { ...result, warnings: warnings(baseTimes, candTimes, result, stable, { ...options, noise }) };
    }
    look = Math.ceil(n * LOOK_GROWTH);
  }
}

/** A session opened for a block of timed runs, and let go after. */
export type SessionOpener = () => Promise<Pick<ort.InferenceSession, 'run' | 'release'>>;

/**
 * Latency when base and candidate do not fit in memory together (a model evaluated in the int8
 * form, docs/contracts.md, "The target device's memory"): each model's runs in a block of their
 * own, its session opened for them and let go, the candidate's block as many runs as the base's
 * (half of `time`, at least MIN_RUNS unless `runs` allows fewer). Drift between the two blocks is
 * not cancelled as alternation cancels it; a warning says so.
 */
export async function measureLatencyApart(base: SessionOpener, candidate: SessionOpener, feeds: Feeds, options: LatencyOptions = DEFAULT_LATENCY, clock: Clock = wallClock): Promise<LatencyResult> {
  const most = Math.max(1, options.runs ?? Infinity);
  const time = options.time ?? DEFAULT_LATENCY.time;
  const noise = options.noise ?? DEFAULT_LATENCY.noise;
  const start = clock();
  const block = async (open: SessionOpener, count?: number): Promise<number[]> => {
    const session = await open();
    try {
      for (let i = 0; i < options.warmup; i++) await session.run(feeds);
      const times: number[] = [];
      const began = clock();
      while (count !== undefined ? times.length < count : times.length < most && (times.length < Math.min(MIN_RUNS, most) || (clock() - began) / 1000 < time / 2)) {
        const t = clock();
        await session.run(feeds);
        times.push(clock() - t);
      }
      return times;
    } finally {
      await session.release();
    }
  };
  const baseTimes = await block(base);
  const candTimes = await block(candidate, baseTimes.length);
  const { result, halfWidth } = summarize(baseTimes, candTimes, (clock() - start) / 1000, noise);
  const stable = halfWidth <= Math.max(PRECISION, noise);
  return {
    ...result,
    warnings: [...warnings(baseTimes, candTimes, result, stable, { ...options, noise }), 'base and candidate timed apart, one session at a time (together they do not fit device.memory): drift between the two blocks is not cancelled'],
  };
}

/**
 * The figures of alternated runs (base and candidate times in ms, the i-th of each made
 * together), with intervals at least `noise` wide on each side, and the speedup's bootstrap
 * half-width before that floor (relative to it; Infinity without an interval).
 */
export function summarize(baseTimes: readonly number[], candTimes: readonly number[], seconds: number, noise: number): { result: LatencyResult; halfWidth: number } {
  const b = Float64Array.from(baseTimes);
  const c = Float64Array.from(candTimes);
  const base = stats(b);
  const candidate = stats(c);
  const speedup = candidate.p50_ms > 0 ? base.p50_ms / candidate.p50_ms : NaN;
  const measured = b.length >= MIN_RUNS ? bootstrapIntervals(b, c) : null;
  const halfWidth = measured ? (measured.p50.speedup[1] - measured.p50.speedup[0]) / 2 / speedup : Infinity;
  const floor = (i: Interval, v: number): Interval => [Math.min(i[0], v * (1 - noise)), Math.max(i[1], v * (1 + noise))];
  const intervals = measured && {
    p50: { speedup: floor(measured.p50.speedup, speedup), candidate: floor(measured.p50.candidate, candidate.p50_ms) },
    p95: { speedup: floor(measured.p95.speedup, base.p95_ms / candidate.p95_ms), candidate: floor(measured.p95.candidate, candidate.p95_ms) },
  };
  return { result: { base, candidate, speedup, runs: b.length, seconds, intervals, noise, warnings: [] }, halfWidth };
}

/** Reorders `times`. */
function stats(times: Float64Array): LatencyStats {
  return { p50_ms: percentileInPlace(times, 50), p95_ms: percentileInPlace(times, 95) };
}

function bootstrapIntervals(base: Float64Array, candidate: Float64Array): LatencyResult['intervals'] {
  const [p50, p95, c50, c95] = pairedBootstrap([base, candidate], ([b, c]) => {
    const cand = stats(c);
    const own = stats(b);
    return [own.p50_ms / cand.p50_ms, own.p95_ms / cand.p95_ms, cand.p50_ms, cand.p95_ms];
  });
  return { p50: { speedup: p50, candidate: c50 }, p95: { speedup: p95, candidate: c95 } };
}

/** Spread past this (robust standard deviation over the median) makes a run of timings unstable, as pyperf warns at 10 % (docs/contracts.md, "Latency"). */
const UNSTABLE_SPREAD = 0.1;
/** hyperfine's outliers: over 10 standard deviations, estimated robustly (1.4826 x the median absolute deviation), from the median. */
const OUTLIER_SCORE = 10 * 1.4826;
/** A share of outlying runs worth a word (a few on a shared machine are its ordinary life). */
const OUTLIER_SHARE = 0.01;

/** Why the figures may be less sure than the interval alone says, or why the interval is wide. */
function warnings(baseTimes: readonly number[], candTimes: readonly number[], result: LatencyResult, stable: boolean, options: LatencyOptions): string[] {
  const out: string[] = [];
  const limit = options.runs !== undefined && result.runs >= options.runs ? `latency.runs (${options.runs}) allows no more` : `no more fit in latency.time (${seconds(options.time ?? DEFAULT_LATENCY.time)})`;
  if (!result.intervals) {
    out.push(`${result.runs} ${result.runs === 1 ? 'run' : 'runs'} of each model, too few for an interval (${MIN_RUNS} at least): ${limit}`);
  } else if (result.runs < STEADY_RUNS) {
    out.push(`only ${result.runs} runs of each model, so the interval is rough: ${limit}`);
  } else if (!stable) {
    out.push(`the interval is wider than ±${Number((Math.max(PRECISION, options.noise ?? 0) * 100).toPrecision(3))} % of the speedup: ${limit}`);
  }
  const spread = Math.max(robustSpread(baseTimes), robustSpread(candTimes));
  if (spread > UNSTABLE_SPREAD) out.push(`the runs varied by ${Math.round(spread * 100)} % around their median (robust standard deviation): the machine was busy`);
  const outliers = outlierCount(baseTimes) + outlierCount(candTimes);
  if (outliers > OUTLIER_SHARE * 2 * result.runs) {
    out.push(`${outliers} of ${2 * result.runs} runs were outliers (over 10 standard deviations from the median): other work interrupted them`);
  }
  return out;
}

function seconds(s: number): string {
  return `${Number(s.toPrecision(3))} s`;
}

/** Median absolute deviation, scaled to a standard deviation for normal data, over the median. */
function robustSpread(times: readonly number[]): number {
  const { median, mad } = medianAndMad(times);
  return median > 0 ? (1.4826 * mad) / median : 0;
}

function outlierCount(times: readonly number[]): number {
  const { median, mad } = medianAndMad(times);
  if (!(mad > 0)) return 0;
  return times.filter((t) => Math.abs(t - median) / mad > OUTLIER_SCORE).length;
}

function medianAndMad(times: readonly number[]): { median: number; mad: number } {
  const median = percentileInPlace(Float64Array.from(times), 50);
  return { median, mad: percentileInPlace(Float64Array.from(times, (t) => Math.abs(t - median)), 50) };
}

/** A timing in one line, for progress: "latency: 812 runs of each model in 1.4 s, speedup 1.08x (95 % 1.06x to 1.10x)". */
export function latencyLine(latency: LatencyResult): string {
  const x = (v: number) => `${v.toFixed(2)}x`;
  const interval = latency.intervals ? ` (95 % ${x(latency.intervals.p50.speedup[0])} to ${x(latency.intervals.p50.speedup[1])})` : '';
  const warned = latency.warnings.length ? `; ${latency.warnings.join('; ')}` : '';
  return `latency: ${latency.runs} runs of each model in ${seconds(latency.seconds)}, speedup ${x(latency.speedup)}${interval}${warned}`;
}

/** One model's side of a timing as the latency metrics. */
export function latencyValues(latency: LatencyStats): MetricValues {
  return { 'latency-p50': latency.p50_ms, 'latency-p95': latency.p95_ms };
}

/**
 * The latency metrics' intervals, as the gate judges them: the candidate's own time, and its
 * ratio to the base's (candidate / base, the speedup's reciprocal). Too few runs for an interval
 * bound nothing: every value is in it.
 */
export function latencyIntervals(latency: LatencyResult): MetricIntervals {
  const anything: MetricInterval = { candidate: [0, Infinity], ratio: [0, Infinity] };
  const of = (i: PercentileIntervals | undefined): MetricInterval => (i ? { candidate: i.candidate, ratio: [1 / i.speedup[1], 1 / i.speedup[0]] } : anything);
  return { 'latency-p50': of(latency.intervals?.p50), 'latency-p95': of(latency.intervals?.p95) };
}
