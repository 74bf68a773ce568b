import type { ort } from '../onnx/runtime';
import type { Feeds } from '../onnx/runtime';

export interface LatencyOptions {
  /** Untimed runs of each model first (allocations, caches, thread pools). */
  warmup: number;
  /** Timed runs of each model. */
  runs: number;
  /** With this, runs stop once these seconds have passed (at least 5 of each model are timed). */
  seconds?: number;
}

/** Olive's defaults are 10 and 20; a run here is a whole calibration batch, so fewer. */
export const DEFAULT_LATENCY: LatencyOptions = { warmup: 3, runs: 10 };

export interface LatencyStats {
  p50_ms: number;
  p95_ms: number;
}

export interface LatencyResult {
  base: LatencyStats;
  candidate: LatencyStats;
  /** base p50 / candidate p50. */
  speedup: number;
}

/** Percentile with linear interpolation between closest ranks (numpy's default). */
export function percentile(values: readonly number[], p: number): number {
  if (values.length === 0) return NaN;
  const sorted = [...values].sort((a, b) => a - b);
  const pos = (p / 100) * (sorted.length - 1);
  const lo = Math.floor(pos);
  const hi = Math.ceil(pos);
  return sorted[lo] + (sorted[hi] - sorted[lo]) * (pos - lo);
}

export function latencyStats(times: readonly number[]): LatencyStats {
  return { p50_ms: percentile(times, 50), p95_ms: percentile(times, 95) };
}

/** A monotonic clock in milliseconds. */
export type Clock = () => number;
const wallClock: Clock = () => Number(process.hrtime.bigint()) / 1e6;

/**
 * Times base and candidate on the same batch, alternating them run by run (and which goes first)
 * so that drift of the machine (frequency scaling, a noisy neighbour) hits both alike.
 */
export async function measureLatency(
  base: Pick<ort.InferenceSession, 'run'>,
  candidate: Pick<ort.InferenceSession, 'run'>,
  feeds: Feeds,
  options: LatencyOptions = DEFAULT_LATENCY,
  clock: Clock = wallClock,
): Promise<LatencyResult> {
  const timed = async (fn: () => Promise<unknown>): Promise<number> => {
    const start = clock();
    await fn();
    return clock() - start;
  };
  for (let i = 0; i < options.warmup; i++) {
    await base.run(feeds);
    await candidate.run(feeds);
  }
  const baseTimes: number[] = [];
  const candTimes: number[] = [];
  const start = clock();
  const timeUp = (i: number) => options.seconds !== undefined && i >= 5 && clock() - start > options.seconds * 1000;
  for (let i = 0; i < Math.max(1, options.runs) && !timeUp(i); i++) {
    if (i % 2 === 0) {
      baseTimes.push(await timed(() => base.run(feeds)));
      candTimes.push(await timed(() => candidate.run(feeds)));
    } else {
      candTimes.push(await timed(() => candidate.run(feeds)));
      baseTimes.push(await timed(() => base.run(feeds)));
    }
  }
  const b = latencyStats(baseTimes);
  const c = latencyStats(candTimes);
  return { base: b, candidate: c, speedup: c.p50_ms > 0 ? b.p50_ms / c.p50_ms : NaN };
}
