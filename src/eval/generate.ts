import { Feeds, ort } from '../onnx/runtime';
import { argmax } from './metrics';

/** How a generation set is decoded (docs/contracts.md; shared product contract "Generation tasks"). */
export interface GreedyOptions {
  maxNewTokens: number;
  /** End-of-sequence ids: generation stops at the first, which is not part of the output. */
  eos: readonly number[];
}

/**
 * Greedy decoding by re-running the growing sequence, for models without a KV cache: each step
 * runs the whole sequence and appends the argmax of the last position's logits. Prompts of the
 * same length are decoded together as one batch (no padding, so no attention mask is needed);
 * a sequence that has reached an end-of-sequence id stops growing, and the batch stops when all
 * have. The model's inputs are `input_ids` and optionally `attention_mask` (all ones) and
 * `position_ids` (0..length-1); its first output is the logits [batch, sequence, vocabulary].
 */
export async function greedyWithoutCache(session: ort.InferenceSession, prompts: readonly (readonly number[])[], options: GreedyOptions): Promise<number[][]> {
  const unknown = session.inputNames.filter((n) => !['input_ids', 'attention_mask', 'position_ids'].includes(n));
  if (!session.inputNames.includes('input_ids') || unknown.length) {
    throw new Error(`internal: greedy decoding needs input_ids (and optionally attention_mask, position_ids), the model takes ${session.inputNames.join(', ')}`);
  }
  const out: number[][] = prompts.map(() => []);
  const byLength = new Map<number, number[]>();
  prompts.forEach((p, i) => byLength.set(p.length, [...(byLength.get(p.length) ?? []), i]));
  for (const [length, members] of byLength) {
    const sequences = members.map((i) => [...prompts[i]]);
    const done = members.map(() => false);
    for (let step = 0; step < options.maxNewTokens && done.some((d) => !d); step++) {
      const total = length + step;
      const logits = (await session.run(feedsFor(session, sequences, total)))[session.outputNames[0]];
      const vocab = logits.dims[2];
      const data = logits.data as Float32Array;
      members.forEach((i, b) => {
        if (done[b]) {
          sequences[b].push(0); // keeps the batch rectangular; never read
          return;
        }
        const next = argmax(data, (b * total + total - 1) * vocab, vocab);
        sequences[b].push(next);
        if (options.eos.includes(next)) done[b] = true;
        else out[i].push(next);
      });
    }
  }
  return out;
}

function feedsFor(session: ort.InferenceSession, sequences: number[][], length: number): Feeds {
  const batch = sequences.length;
  const ids = new BigInt64Array(batch * length);
  sequences.forEach((s, b) => s.forEach((t, j) => (ids[b * length + j] = BigInt(t))));
  const feeds: Feeds = { input_ids: new ort.Tensor('int64', ids, [batch, length]) };
  if (session.inputNames.includes('attention_mask')) feeds.attention_mask = new ort.Tensor('int64', new BigInt64Array(batch * length).fill(1n), [batch, length]);
  if (session.inputNames.includes('position_ids')) {
    const positions = new BigInt64Array(batch * length);
    for (let b = 0; b < batch; b++) for (let j = 0; j < length; j++) positions[b * length + j] = BigInt(j);
    feeds.position_ids = new ort.Tensor('int64', positions, [batch, length]);
  }
  return feeds;
}
