// Greedy decoding without a KV cache: batching prompts of one length changes nothing, generation
// stops at an end-of-sequence id (left out) or after max-new-tokens, and each token is the
// argmax of a plain run of the sequence so far.
import * as path from 'path';
import { createSession, ort } from '../src/onnx/runtime';
import { greedyWithoutCache } from '../src/eval/generate';

const MODEL = path.join(__dirname, 'fixtures', 'llama.onnx');
let session: ort.InferenceSession;
beforeAll(async () => {
  session = await createSession(MODEL);
});
afterAll(() => session.release());

const prompts = [
  [5, 17, 42, 8],
  [9, 3, 100, 77],
  [1, 2],
  [200, 13, 13, 56],
];

/** The next token of one sequence, from a plain run of it. */
async function nextToken(sequence: number[]): Promise<number> {
  const ids = new ort.Tensor('int64', BigInt64Array.from(sequence.map(BigInt)), [1, sequence.length]);
  const logits = (await session.run({ input_ids: ids })).logits;
  const vocab = logits.dims[2];
  const last = (logits.data as Float32Array).subarray((sequence.length - 1) * vocab, sequence.length * vocab);
  return last.indexOf(Math.max(...last));
}

test('each generated token is the argmax after the sequence so far; batched equals one by one', async () => {
  const batched = await greedyWithoutCache(session, prompts, { maxNewTokens: 6, eos: [] });
  expect(batched.map((g) => g.length)).toEqual([6, 6, 6, 6]);
  for (const [i, prompt] of prompts.entries()) {
    const sequence = [...prompt];
    for (let k = 0; k < 6; k++) sequence.push(await nextToken(sequence));
    expect(batched[i]).toEqual(sequence.slice(prompt.length));
    expect(await greedyWithoutCache(session, [prompt], { maxNewTokens: 6, eos: [] })).toEqual([batched[i]]);
  }
});

test('generation stops at an end-of-sequence id, which is left out, for that prompt only', async () => {
  const free = await greedyWithoutCache(session, prompts, { maxNewTokens: 6, eos: [] });
  const eos = free[0][2]; // the first prompt's third token
  const stopped = await greedyWithoutCache(session, prompts, { maxNewTokens: 6, eos: [eos] });
  expect(stopped[0]).toEqual(free[0].slice(0, free[0].indexOf(eos)));
  for (let i = 1; i < prompts.length; i++) {
    const at = free[i].indexOf(eos);
    expect(stopped[i]).toEqual(at < 0 ? free[i] : free[i].slice(0, at));
  }
  expect(await greedyWithoutCache(session, [prompts[0]], { maxNewTokens: 0, eos: [] })).toEqual([[]]);
});
