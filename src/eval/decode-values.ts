import type { LatencyResult, PercentileIntervals } from './latency';
import type { MetricInterval, MetricIntervals, MetricValues } from './metric-names';

// What a decode speed timing (decode-speed.ts) is, as values and lines: apart from the timing
// itself, which runs sessions, so that the report and the gate (the action's entry point) do not
// load onnxruntime before the action has installed it (src/github/onnxruntime.ts).

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
