// Greedy decoding: with a KV cache (Hugging Face layout) and without one, batched with left
// padding or by equal length, it gives the tokens a plain run of each growing sequence gives and
// those of torch's reference decoder (test/fixtures/kv/llama-kv.json, tools/fixtures/export_kv.py).
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { OnnxModel } from '../src/onnx/model';
import { createSession, ort } from '../src/onnx/runtime';
import { DecoderInputs, greedyDecode } from '../src/eval/generate';
import { loadCalibration } from '../src/eval/calibration';

const FIXTURES = path.join(__dirname, 'fixtures');
const KV = path.join(FIXTURES, 'kv');
const reference = JSON.parse(fs.readFileSync(path.join(KV, 'llama-kv.json'), 'utf8')) as { eos: number[]; max_new_tokens: number; prompts: number[][]; generations: number[][] };

/** How the loader says to feed `model`: through a one-line generation set written to a temporary folder. */
function decoderOf(model: string): DecoderInputs {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'gen-'));
  fs.writeFileSync(path.join(dir, 'calibration.json'), JSON.stringify({ task: 'generation', samples: 'p.jsonl', 'max-new-tokens': 4 }));
  fs.writeFileSync(path.join(dir, 'p.jsonl'), '{"prompt": [1, 2]}\n');
  const set = loadCalibration(dir, OnnxModel.read(model));
  fs.rmSync(dir, { recursive: true });
  return set.generation!.decoder;
}

describe('one model exported with and without a KV cache', () => {
  const options = { maxNewTokens: reference.max_new_tokens, eos: reference.eos };
  test.each([
    ['with its cache', 'llama-kv.onnx'],
    ['re-running the sequence', 'llama-kv-nocache.onnx'],
  ])('%s, one prompt at a time and in left-padded batches, gives the reference decoder tokens', async (_, file) => {
    const session = await createSession(path.join(KV, file));
    try {
      const decoder = decoderOf(path.join(KV, file));
      expect(decoder.cache.length).toBe(file === 'llama-kv.onnx' ? 4 : 0);
      for (const batchSize of [1, 3, 8]) {
        expect(await greedyDecode(session, decoder, reference.prompts, { ...options, batchSize })).toEqual(reference.generations);
      }
    } finally {
      await session.release();
    }
  });
});

describe('a model without attention mask or positions (llama.onnx)', () => {
  const model = path.join(FIXTURES, 'llama.onnx');
  let session: ort.InferenceSession;
  let decoder: DecoderInputs;
  beforeAll(async () => {
    session = await createSession(model);
    decoder = decoderOf(model);
  });
  afterAll(() => session.release());
  const prompts = [[5, 17, 42, 8], [9, 3], [9, 3, 100, 77], [1, 2], [200, 13, 13, 56]];

  /** The next token of one sequence, from a plain run of it. */
  async function nextToken(sequence: number[]): Promise<number> {
    const ids = new ort.Tensor('int64', BigInt64Array.from(sequence.map(BigInt)), [1, sequence.length]);
    const logits = (await session.run({ input_ids: ids })).logits;
    const vocab = logits.dims[2];
    const last = (logits.data as Float32Array).subarray((sequence.length - 1) * vocab, sequence.length * vocab);
    return last.indexOf(Math.max(...last));
  }

  test('each token is the argmax after the sequence so far; prompts of one length batched equal one by one', async () => {
    expect(decoder).toMatchObject({ mask: undefined, positions: undefined, cache: [] });
    const batched = await greedyDecode(session, decoder, prompts, { maxNewTokens: 6, eos: [], batchSize: 16 });
    expect(batched.map((g) => g.length)).toEqual([6, 6, 6, 6, 6]);
    for (const [i, prompt] of prompts.entries()) {
      const sequence = [...prompt];
      for (let k = 0; k < 6; k++) sequence.push(await nextToken(sequence));
      expect(batched[i]).toEqual(sequence.slice(prompt.length));
      expect(await greedyDecode(session, decoder, [prompt], { maxNewTokens: 6, eos: [], batchSize: 1 })).toEqual([batched[i]]);
    }
  });

  test('generation stops at any of the end-of-sequence ids, which is left out, for that prompt only', async () => {
    const free = await greedyDecode(session, decoder, prompts, { maxNewTokens: 6, eos: [], batchSize: 16 });
    const eos = [free[0][2], free[1][4]]; // the first prompt's third token, the second's fifth
    const stopped = await greedyDecode(session, decoder, prompts, { maxNewTokens: 6, eos, batchSize: 16 });
    for (const [i, g] of free.entries()) {
      const at = g.findIndex((t) => eos.includes(t));
      expect(stopped[i]).toEqual(at < 0 ? g : g.slice(0, at));
    }
    expect(stopped[0]).toHaveLength(2);
    expect(await greedyDecode(session, decoder, [prompts[0]], { maxNewTokens: 0, eos: [], batchSize: 1 })).toEqual([[]]);
  });
});
