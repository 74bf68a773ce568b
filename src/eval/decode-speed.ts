import type { Feeds, ort } from '../onnx/runtime';
import { DecoderInputs, emptyCache, nextCache, rowFeeds } from './generate';
import { Clock, DEFAULT_LATENCY, LatencyOptions, Trial, measureTrials, timedRun } from './latency';
import type { DecodeSettled, DecodeSpeed } from './decode-values';

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
