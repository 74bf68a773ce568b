import type { Feeds, ort } from '../onnx/runtime';
import { DecoderInputs, emptyCache, nextCache, rowFeeds } from './generate';
import { Clock, DEFAULT_LATENCY, LatencyOptions, LatencyResult, PercentileIntervals, Trial, measureTrials, timedRun } from './latency';
import type { MetricInterval, MetricIntervals, MetricValues } from './metric-names';

/**
 * A generation set's decode speed (docs/contracts.md, "Decode speed"): how an edge user feels an
 * LLM, at batch 1. Time to first token is the prompt's run; decode speed the steps after it, on
 * the KV cache when the model has one, else re-running the growing sequence (as decoding it
 * does). Base and candidate are timed alternately with the statistics of latency (latency.ts),
 * each of the two on its own `time`; tokens per second is 1000 over the median step's ms.
 */

type Session = Pick<ort.InferenceSession, 'run'>;

/** What is timed: one prompt, and the tokens fed after it, one per step. */
export interface DecodeInput {
  decoder: DecoderInputs;
  prompt: readonly number[];
  tokens: readonly number[];
}

export interface DecodeSpeed {
  /** The steps ran on the model's KV cache (else each re-ran the whole sequence). */
  cache: boolean;
  promptTokens: number;
  /** Tokens decoded after the first, each one step (a cycle of the decode timing). */
  steps: number;
  /** The prompt's run, in ms. */
  firstToken: LatencyResult;
  /** One step after the first token, in ms (runs: the steps timed). */
  decode: LatencyResult;
}

/** Whether a timing decides the gate's bounds on what it measures (gate.ts's decodeSettled). */
export interface DecodeSettled {
  firstToken?: (timing: LatencyResult) => boolean;
  decode?: (timing: LatencyResult) => boolean;
}

/** The timing of the prompt's run, then that of the steps after it, base and candidate alternated. */
export async function measureDecodeSpeed(
  base: Session,
  candidate: Session,
  input: DecodeInput,
  options: LatencyOptions = DEFAULT_LATENCY,
  settled: DecodeSettled = {},
  clock?: Clock,
): Promise<DecodeSpeed> {
  const { decoder, prompt, tokens } = input;
  const cache = decoder.cache.length > 0;
  const promptFeeds = rowFeeds(decoder, [...prompt], cache ? emptyCache(decoder, 1) : undefined);
  const firstToken = await measureTrials(timedRun(base, promptFeeds), timedRun(candidate, promptFeeds), { ...options, settled: settled.firstToken }, clock);
  // Warming up goes through a whole cycle of steps, so every step's shapes have run once.
  const warmup = options.warmup > 0 ? Math.max(options.warmup, tokens.length) : 0;
  const decode = await measureTrials(decodingStep(base, input), decodingStep(candidate, input), { ...options, warmup, settled: settled.decode }, clock);
  return { cache, promptTokens: prompt.length, steps: tokens.length, firstToken, decode };
}

/**
 * A trial of one decoding step (ms), the trials cycling through the steps after the prompt; a
 * cycle starts with the prompt's run, untimed, which fills the cache. One step a trial, base and
 * candidate at the same step in each pair: many pairs in little time, each of equal work.
 */
function decodingStep(session: Session, { decoder, prompt, tokens }: DecodeInput): Trial {
  let row: number[] = [];
  let past: Feeds | undefined;
  return async (clock) => {
    if (row.length === 0 || row.length === prompt.length + tokens.length) {
      row = [...prompt];
      past = decoder.cache.length ? nextCache(decoder, await session.run(rowFeeds(decoder, row, emptyCache(decoder, 1)))) : undefined;
    }
    row.push(tokens[row.length - prompt.length]);
    const start = clock();
    const result = await session.run(rowFeeds(decoder, row, past, row.length - 1));
    const ms = clock() - start;
    if (past) past = nextCache(decoder, result);
    return ms;
  };
}

/**
 * The decode speed metrics of both models, and their intervals as the gate judges them: the
 * candidate's own value and its ratio to the base's (candidate / base). Too few runs for an
 * interval bound nothing: every value is in it.
 */
export function decodeSpeedValues(d: DecodeSpeed): { base: MetricValues; candidate: MetricValues; intervals: MetricIntervals } {
  return {
    base: { ...firstTokenValues(d.firstToken, 'base'), ...tokensPerSecondValues(d.decode, 'base') },
    candidate: { ...firstTokenValues(d.firstToken, 'candidate'), ...tokensPerSecondValues(d.decode, 'candidate') },
    intervals: { ...firstTokenIntervals(d.firstToken), ...tokensPerSecondIntervals(d.decode) },
  };
}

const anything: MetricInterval = { candidate: [0, Infinity], ratio: [0, Infinity] };

export function firstTokenValues(t: LatencyResult, model: 'base' | 'candidate'): MetricValues {
  return { 'time-to-first-token': t[model].p50_ms };
}

/** The candidate's time, and candidate / base (the speedup's reciprocal). */
export function firstTokenIntervals(t: LatencyResult): MetricIntervals {
  const i: PercentileIntervals | undefined = t.intervals?.p50;
  return { 'time-to-first-token': i ? { candidate: i.candidate, ratio: [1 / i.speedup[1], 1 / i.speedup[0]] } : anything };
}

/** Tokens per second from the median step's ms. */
export function tokensPerSecondValues(t: LatencyResult, model: 'base' | 'candidate'): MetricValues {
  return { 'decode-tokens-per-second': 1000 / t[model].p50_ms };
}

/** The candidate's tokens per second, and candidate / base: the speedup itself (base ms / candidate ms). */
export function tokensPerSecondIntervals(t: LatencyResult): MetricIntervals {
  const i = t.intervals?.p50;
  return { 'decode-tokens-per-second': i ? { candidate: [1000 / i.candidate[1], 1000 / i.candidate[0]], ratio: i.speedup } : anything };
}

/** A progress line: "decode speed (batch 1, KV cache; 12-token prompt, 31 steps): 412 → 530 tokens/s, speedup 1.29x (95 % 1.25x to 1.33x); time to first token 2.61 → 2.18 ms, speedup 1.20x (…)". */
export function decodeSpeedLine(d: DecodeSpeed): string {
  const x = (v: number) => `${v.toFixed(2)}x`;
  const speedup = (t: LatencyResult) => `speedup ${x(t.speedup)}${t.intervals ? ` (95 % ${x(t.intervals.p50.speedup[0])} to ${x(t.intervals.p50.speedup[1])})` : ''}`;
  const tps = (m: 'base' | 'candidate') => (1000 / d.decode[m].p50_ms).toPrecision(3);
  const ms = (m: 'base' | 'candidate') => d.firstToken[m].p50_ms.toPrecision(3);
  const warned = [...d.firstToken.warnings.map((w) => `first token: ${w}`), ...d.decode.warnings.map((w) => `decode: ${w}`)];
  return (
    `decode speed (batch 1, ${d.cache ? 'KV cache' : 'no KV cache: each step re-runs the sequence'}; ${d.promptTokens}-token prompt, ${d.steps} steps): ` +
    `${tps('base')} → ${tps('candidate')} tokens/s, ${speedup(d.decode)}; time to first token ${ms('base')} → ${ms('candidate')} ms, ${speedup(d.firstToken)}` +
    (warned.length ? `; ${warned.join('; ')}` : '')
  );
}
