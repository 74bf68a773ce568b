import { intTensor } from '../onnx/tensor';
import { Feeds, InputSpec, ort, toOrtTensor } from '../onnx/runtime';
import { argmax, outputRows } from './metrics';
import { emptyPast } from '../onnx/kv-cache';

/**
 * Greedy decoding for `task: generation` (docs/contracts.md, "Generation sets"). A model with
 * past key/value inputs (Hugging Face layout: `past_key_values.*` in, `present.*` out) is
 * decoded with its cache; one without is decoded by re-running the growing sequence. Prompts of
 * different lengths share a batch:
 * - left-padded, when the model takes both an attention mask and position ids (the mask hides
 *   the pads, the positions keep each prompt's numbering from 0);
 * - right-padded, without a cache, when a probe shows the model causal (a position's scores do
 *   not depend on later tokens), so the pads after a sequence never reach its last position;
 * - otherwise only prompts of the same length share a batch, since a model that numbers
 *   positions itself would count left pads.
 */

/** How a decoder model is fed: its inputs by role, as the calibration loader found them. */
export interface DecoderInputs {
  tokens: InputSpec;
  mask?: InputSpec;
  positions?: InputSpec;
  /** One entry per cache tensor: the past input (its sizes resolved: kv-cache.ts), the present output that feeds it next step. */
  cache: { past: InputSpec; present: string }[];
  /** The output of next-token scores [batch, sequence, vocabulary]. */
  logits: string;
}

export interface GreedyOptions {
  maxNewTokens: number;
  /** End-of-sequence ids: generation stops at the first, which is not part of the output. */
  eos: readonly number[];
  /** Prompts decoded together at most. */
  batchSize: number;
  /** Called after each batch of prompts is decoded, with the number of batches (progress lines). */
  onBatch?: (total: number) => void;
}

/** Decodes every prompt greedily; the result lists each prompt's new tokens, without the end-of-sequence id. */
export async function greedyDecode(session: ort.InferenceSession, decoder: DecoderInputs, prompts: readonly (readonly number[])[], options: GreedyOptions): Promise<number[][]> {
  const out: number[][] = prompts.map(() => []);
  const layout = padsLeft(decoder) ? 'left' : decoder.cache.length === 0 && (await isCausal(session, decoder, prompts[0])) ? 'right' : 'equal';
  const all = decodingBatches(prompts, options.batchSize, layout !== 'equal');
  for (const members of all) {
    const batch = members.map((i) => prompts[i]);
    const generated = layout === 'right' ? await decodeRightPadded(session, decoder, batch, options) : await decodeBatch(session, decoder, batch, options);
    members.forEach((i, b) => (out[i] = generated[b]));
    options.onBatch?.(all.length);
  }
  return out;
}

/** Whether prompts of different lengths may share a batch (left-padded). */
export function padsLeft(decoder: DecoderInputs): boolean {
  return decoder.mask !== undefined && decoder.positions !== undefined;
}

/** Prompt indices per batch: sorted by length so that padding is short, or grouped by equal length. */
function decodingBatches(prompts: readonly (readonly number[])[], batchSize: number, mixed: boolean): number[][] {
  const order = prompts.map((_, i) => i).sort((a, b) => prompts[a].length - prompts[b].length || a - b);
  const batches: number[][] = [];
  for (const i of order) {
    const last = batches[batches.length - 1];
    const fits = last && last.length < batchSize && (mixed || prompts[last[0]].length === prompts[i].length);
    if (fits) last.push(i);
    else batches.push([i]);
  }
  return batches;
}

const PROBE_TAIL = 4;

/**
 * Whether the model is causal, measured: the prompt followed by two different tails of the same
 * length must give bit-identical scores at the prompt's positions (same shapes, so the same
 * kernels; only a dependence on later tokens could change them).
 */
async function isCausal(session: ort.InferenceSession, decoder: DecoderInputs, prompt: readonly number[]): Promise<boolean> {
  const scores = async (filler: number) => {
    const row = [...prompt, ...new Array<number>(PROBE_TAIL).fill(filler)];
    const result = await session.run(sequenceFeeds(decoder, [row], [0], 0, row.length));
    return outputRows(result[decoder.logits]);
  };
  const a = await scores(0);
  const b = await scores(1);
  const n = prompt.length * a.width;
  for (let i = 0; i < n; i++) if (a.data[i] !== b.data[i]) return false;
  return true;
}

/** Decoding without a cache, each row right-padded: every row reads the scores at its own last token. */
async function decodeRightPadded(session: ort.InferenceSession, decoder: DecoderInputs, prompts: readonly (readonly number[])[], options: GreedyOptions): Promise<number[][]> {
  const rows = prompts.map((p) => [...p]);
  const out: number[][] = prompts.map(() => []);
  const done = prompts.map(() => false);
  for (let step = 0; step < options.maxNewTokens && done.some((d) => !d); step++) {
    const live = rows.filter((_, b) => !done[b]);
    const liveIndex = rows.map((_, b) => b).filter((b) => !done[b]);
    const width = Math.max(...live.map((r) => r.length));
    const padded = live.map((r) => [...r, ...new Array<number>(width - r.length).fill(r[r.length - 1])]);
    const feeds = sequenceFeeds(decoder, padded, padded.map(() => 0), 0, width, live.map((r) => r.length));
    const logits = outputRows((await session.run(feeds))[decoder.logits]);
    liveIndex.forEach((b, k) => {
      const next = argmax(logits.data, (k * width + rows[b].length - 1) * logits.width, logits.width);
      rows[b].push(next);
      if (options.eos.includes(next)) done[b] = true;
      else out[b].push(next);
    });
  }
  return out;
}

async function decodeBatch(session: ort.InferenceSession, decoder: DecoderInputs, prompts: readonly (readonly number[])[], options: GreedyOptions): Promise<number[][]> {
  const batch = prompts.length;
  const width = Math.max(...prompts.map((p) => p.length));
  const pads = prompts.map((p) => width - p.length);
  // Rows: pads (any id: the mask hides them), the prompt, then the tokens chosen so far.
  const rows = prompts.map((p, b) => [...new Array<number>(pads[b]).fill(p[0]), ...p]);
  const out: number[][] = prompts.map(() => []);
  const done = prompts.map(() => false);
  let past: Feeds | undefined = decoder.cache.length ? emptyCache(decoder, batch) : undefined;
  for (let step = 0; step < options.maxNewTokens && done.some((d) => !d); step++) {
    const total = width + step;
    // With a cache, the first run reads the prompts and each later one only the newest token.
    const start = past && step > 0 ? total - 1 : 0;
    const feeds: Feeds = { ...past, ...sequenceFeeds(decoder, rows, pads, start, total) };
    const result = await session.run(feeds);
    const logits = outputRows(result[decoder.logits]);
    const length = total - start;
    if (past) past = nextCache(decoder, result);
    for (let b = 0; b < batch; b++) {
      const next = done[b] ? rows[b][total - 1] : argmax(logits.data, (b * length + length - 1) * logits.width, logits.width);
      rows[b].push(next); // a finished row keeps the batch rectangular; never read
      if (done[b]) continue;
      if (options.eos.includes(next)) done[b] = true;
      else out[b].push(next);
    }
  }
  return out;
}

/**
 * Token ids [start, end) of each row, with the mask over [0, end) and the positions of [start,
 * end). `pads` are each row's left pads; `lengths`, when given, each row's real length (right pads after it).
 */
function sequenceFeeds(decoder: DecoderInputs, rows: number[][], pads: number[], start: number, end: number, lengths?: number[]): Feeds {
  const batch = rows.length;
  const length = end - start;
  const ids: number[] = [];
  for (const row of rows) for (let j = start; j < end; j++) ids.push(row[j]);
  const feeds: Feeds = { [decoder.tokens.name]: integerTensor(decoder.tokens, ids, [batch, length]) };
  if (decoder.mask) {
    const mask: number[] = [];
    for (let b = 0; b < batch; b++) for (let j = 0; j < end; j++) mask.push(j < pads[b] || (lengths !== undefined && j >= lengths[b]) ? 0 : 1);
    feeds[decoder.mask.name] = integerTensor(decoder.mask, mask, [batch, end]);
  }
  if (decoder.positions) {
    // Hugging Face's numbering: cumsum(mask) - 1, and 1 on pads (they are masked anyway).
    const positions: number[] = [];
    for (let b = 0; b < batch; b++) for (let j = start; j < end; j++) positions.push(j < pads[b] ? 1 : j - pads[b]);
    feeds[decoder.positions.name] = integerTensor(decoder.positions, positions, [batch, length]);
  }
  return feeds;
}

/** Integer ids in the input's element type (int64 in most exports, int32 in some). */
function integerTensor(spec: InputSpec, values: number[], dims: number[]): ort.Tensor {
  return toOrtTensor(intTensor(values, spec.dtype, dims));
}

/**
 * One row's feeds at batch 1, as decoding makes them: with `past` (the cache of the row's first
 * `pastLength` tokens, or an empty one at 0), the tokens after those; without, the whole row.
 */
export function rowFeeds(decoder: DecoderInputs, row: number[], past?: Feeds, pastLength = 0): Feeds {
  return { ...past, ...sequenceFeeds(decoder, [row], [0], past ? pastLength : 0, row.length) };
}

/** The empty cache of the first step. */
export function emptyCache(decoder: DecoderInputs, batch: number): Feeds {
  const feeds: Feeds = {};
  for (const { past } of decoder.cache) feeds[past.name] = toOrtTensor(emptyPast(past, batch));
  return feeds;
}

/** The cache a run's present outputs carry to the next step. */
export function nextCache(decoder: DecoderInputs, result: ort.InferenceSession.OnnxValueMapType): Feeds {
  const feeds: Feeds = {};
  for (const { past, present } of decoder.cache) feeds[past.name] = result[present] as ort.Tensor;
  return feeds;
}
