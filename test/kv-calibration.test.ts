// Language-model, classification and generic sets on a model with a KV cache: every task feeds
// an empty past of the model's declared sizes (docs/contracts.md, "Calibration data"), so a
// cache model is measured as its twin exported without a cache (test/fixtures/kv, same weights).
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { runMain } from './helpers/in-process';
import { batches, loadCalibration } from '../src/eval/calibration';
import { encodeNpy } from '../src/eval/npy';
import { DataType } from '../src/onnx/dtype';
import { OnnxModel } from '../src/onnx/model';
import type { Tensor } from '../src/onnx/tensor';
import { createSession, ort } from '../src/onnx/runtime';
import { writeModel } from '../src/onnx/write';
import type { Report } from '../src/report/schema';
import { FIXTURES_DIR } from './helpers/fixtures';

const KV = path.join(FIXTURES_DIR, 'kv', 'llama-kv.onnx');
const NO_CACHE = path.join(FIXTURES_DIR, 'kv', 'llama-kv-nocache.onnx');
const SAMPLES = 5;
const LENGTH = 9;

let tmp = '';
beforeAll(() => (tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'prune-gate-kvcal-'))));
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

// The fixture's prompts followed by the base's own greedy generations: text the model predicts in part.
const reference = JSON.parse(fs.readFileSync(path.join(FIXTURES_DIR, 'kv', 'llama-kv.json'), 'utf8')) as { prompts: number[][]; generations: number[][] };
const ids = reference.prompts
  .map((p, i) => [...p, ...reference.generations[i]])
  .filter((s) => s.length >= LENGTH)
  .slice(0, SAMPLES)
  .flatMap((s) => s.slice(0, LENGTH));
const int64 = (values: number[], dims: number[]): Tensor => ({ dtype: DataType.INT64, dims, data: BigInt64Array.from(values.map(BigInt)) });
const positions = Array.from({ length: SAMPLES * LENGTH }, (_, i) => i % LENGTH);

/** A set of .npy files in its own folder: input_ids and position_ids, plus `extra` inputs. */
function npySet(name: string, task: string, extra: Record<string, Tensor> = {}, keys: Record<string, unknown> = {}): string {
  const dir = path.join(tmp, name);
  fs.mkdirSync(dir);
  const tensors: Record<string, Tensor> = { input_ids: int64(ids, [SAMPLES, LENGTH]), position_ids: int64(positions, [SAMPLES, LENGTH]), ...extra };
  for (const [input, t] of Object.entries(tensors)) fs.writeFileSync(path.join(dir, `${input}.npy`), encodeNpy(t));
  const inputs = Object.fromEntries(Object.keys(tensors).map((input) => [input, `${input}.npy`]));
  fs.writeFileSync(path.join(dir, 'calibration.json'), JSON.stringify({ task, inputs, batch_size: 2, ...keys }));
  return dir;
}

/** `prune-gate eval` in-process, as the command line runs it: exit status, report.json, stderr. */
async function evalCli(base: string, candidate: string, calibration: string): Promise<{ code: number; report?: Report; stderr: string }> {
  // One timed run: latency is not what these test (a config without bounds only reports).
  const config = path.join(tmp, 'one-timed-run.yml');
  fs.writeFileSync(config, 'latency: { warmup: 0, runs: 1 }\n');
  const { status, stdout, stderr } = await runMain(['eval', '--base', base, '--candidate', candidate, '--calibration', calibration, '--config', config, '--json']);
  return { code: status, report: status === 0 ? (JSON.parse(stdout) as Report) : undefined, stderr };
}

const metric = (report: Report | undefined, name: string) => report?.metrics.find((m) => m.name === name)?.base as number;

/** A copy of the cache model whose past inputs (and, with `present`, present outputs) declare `dims`. */
function withCacheDims(name: string, dims: (number | string)[], present?: (number | string)[]): string {
  const model = OnnxModel.read(KV);
  const declare = (v: { type?: { tensorType?: { shape?: { dim?: unknown[] | null } | null } | null } | null }, d: (number | string)[]) =>
    (v.type!.tensorType!.shape!.dim = d.map((x) => (typeof x === 'number' ? { dimValue: x } : { dimParam: x })));
  for (const v of model.graph.input) if (v.name?.startsWith('past_key_values')) declare(v, dims);
  if (present) for (const v of model.graph.output) if (v.name?.startsWith('present')) declare(v, present);
  const file = path.join(tmp, `${name}.onnx`);
  writeModel(model, file);
  return file;
}

test("a language-model set gives a cache model the perplexity of its twin without a cache", async () => {
  const dir = npySet('lm', 'language-model');
  const cached = await evalCli(KV, KV, dir);
  const plain = await evalCli(NO_CACHE, NO_CACHE, dir);
  expect([cached.code, cached.stderr.split('\n').filter((l) => /prune-gate:/.test(l))]).toEqual([0, []]);
  expect(plain.code).toBe(0);
  const perplexity = metric(cached.report, 'perplexity');
  expect(perplexity).toBeGreaterThan(1);
  expect(perplexity).toBeCloseTo(metric(plain.report, 'perplexity'), 4);
  const accuracy = metric(cached.report, 'next-token-accuracy');
  expect(accuracy).toBeGreaterThan(0.2);
  expect(accuracy).toBe(metric(plain.report, 'next-token-accuracy'));
});

test('the set is fed an empty past of the declared sizes and a mask as long as the tokens; outputs equal the plain run', async () => {
  const set = loadCalibration(npySet('generic', 'generic'), OnnxModel.read(KV));
  expect(set.inputs['past_key_values.1.value'].dims).toEqual([SAMPLES, 2, 0, 8]);
  expect(set.inputs.attention_mask.dims).toEqual([SAMPLES, LENGTH]);
  const batch = batches(set).next().value!;
  const [withCache, without] = await Promise.all([createSession(KV), createSession(NO_CACHE)]);
  const { logits } = await withCache.run(batch.feeds);
  const plain = await without.run({ input_ids: batch.feeds.input_ids, attention_mask: batch.feeds.attention_mask, position_ids: batch.feeds.position_ids });
  expect(logits.dims).toEqual([2, LENGTH, 64]);
  const gap = Math.max(...(logits.data as Float32Array).map((v, i) => Math.abs(v - (plain.logits.data as Float32Array)[i])));
  expect(gap).toBeLessThan(1e-4);
  await Promise.all([withCache.release(), without.release()]);
});

test('generic and classification sets run through eval on a cache model, classified as the plain model classifies', async () => {
  const generic = await evalCli(KV, KV, npySet('generic-cli', 'generic'));
  expect([generic.code, metric(generic.report, 'agreement')]).toEqual([0, 1]);
  // One token a sample: logits [batch, 1, 64] are one row of 64 class scores per sample.
  const tokens = [5, 17, 42, 60];
  const plain = await createSession(NO_CACHE);
  const one = (v: number) => new ort.Tensor('int64', BigInt64Array.from([BigInt(v)]), [1, 1]);
  const predicted: number[] = [];
  for (const t of tokens) {
    const row = (await plain.run({ input_ids: one(t), attention_mask: one(1), position_ids: one(0) })).logits.data as Float32Array;
    predicted.push(row.indexOf(Math.max(...row)));
  }
  await plain.release();
  // The first two labelled as the plain model predicts, the other two not: accuracy 0.5.
  const labels = predicted.map((p, i) => (i < 2 ? p : (p + 1) % 64));
  const dir = path.join(tmp, 'classify');
  fs.mkdirSync(dir);
  fs.writeFileSync(path.join(dir, 'samples.jsonl'), tokens.map((t, i) => JSON.stringify({ inputs: { input_ids: [t], position_ids: [0] }, label: labels[i] })).join('\n') + '\n');
  const classified = await evalCli(KV, KV, dir);
  expect([classified.code, metric(classified.report, 'accuracy')]).toEqual([0, 0.5]);
});

test('a mask the set gives must cover the empty past plus the tokens', async () => {
  const ones = (n: number) => int64(new Array<number>(SAMPLES * n).fill(1), [SAMPLES, n]);
  const right = await evalCli(KV, KV, npySet('mask-ok', 'language-model', { attention_mask: ones(LENGTH) }));
  expect(right.code).toBe(0);
  const wrong = await evalCli(KV, KV, npySet('mask-long', 'language-model', { attention_mask: ones(LENGTH + 3) }));
  expect(wrong.code).toBe(2);
  expect(wrong.stderr.trim().split('\n').at(-1)).toBe(
    `prune-gate: ${path.join(tmp, 'mask-long', 'calibration.json')}: input 'attention_mask' (attention_mask.npy) has past_sequence + sequence = ${LENGTH + 3} (axis 1) but past_sequence = 0 (input 'past_key_values.0.key') + sequence = ${LENGTH} (input 'input_ids') is ${LENGTH}; they must match`,
  );
});

test("a symbolic head size is taken from the present output's declaration, and refused with one line when nothing fixes it", async () => {
  const fromPresent = withCacheDims('present-fixed', ['batch', 'kv_heads', 'past_sequence', 'kv_cache_dim'], ['batch', 2, 'past_sequence + sequence', 8]);
  const set = loadCalibration(npySet('lm-present', 'language-model'), OnnxModel.read(fromPresent));
  expect(set.inputs['past_key_values.0.key'].dims).toEqual([SAMPLES, 2, 0, 8]);
  const resolved = await evalCli(fromPresent, fromPresent, path.join(tmp, 'lm-present'));
  expect(resolved.code).toBe(0);
  expect(metric(resolved.report, 'perplexity')).toBeCloseTo(metric((await evalCli(NO_CACHE, NO_CACHE, path.join(tmp, 'lm-present'))).report, 'perplexity'), 4);

  const symbolic = withCacheDims('symbolic', ['batch', 2, 'past_sequence', 'kv_cache_dim'], ['batch', 2, 'past_sequence + sequence', 'kv_cache_dim']);
  const refused = await evalCli(symbolic, symbolic, npySet('lm-symbolic', 'language-model'));
  expect(refused.code).toBe(2);
  expect(refused.stderr.trim().split('\n').at(-1)).toBe(
    `prune-gate: ${path.join(tmp, 'lm-symbolic', 'calibration.json')}: cache input 'past_key_values.0.key' is [batch, 2, past_sequence, kv_cache_dim]: the size of 'kv_cache_dim' (axis 3) is fixed neither by the model's declarations, its output 'present.0.key', another input nor a run of the model without its pasts; give the empty past in the set ("past_key_values.0.key": an .npy of shape [N, 2, 0, <size>]) or export the model with that size fixed`,
  );
  // As the line says: the set gives the empty past itself, and the model is measured as the plain one.
  const empty: Tensor = { dtype: DataType.FLOAT, dims: [SAMPLES, 2, 0, 8], data: new Float32Array(0) };
  const pasts = Object.fromEntries([0, 1].flatMap((l) => ['key', 'value'].map((kv) => [`past_key_values.${l}.${kv}`, empty])));
  const given = await evalCli(symbolic, symbolic, npySet('lm-given-past', 'language-model', pasts));
  expect(given.code).toBe(0);
  expect(metric(given.report, 'perplexity')).toBeCloseTo(metric(resolved.report, 'perplexity'), 6);
});

test("run: a language-model set gates a cache model whose heads are pruned, each candidate fed an empty past of its own shape", async () => {
  const dir = npySet('lm-run', 'language-model');
  const config = path.join(tmp, 'pg.yml');
  fs.writeFileSync(config, ['prune: { target: 0.2, steps: 1, structures: [heads], allocation: global, compensate: none }', 'gate:', '  perplexity: { max-increase: 1000% }', 'latency: { runs: 1, warmup: 0 }'].join('\n'));
  const out = path.join(tmp, 'run-out');
  const { status: code, stderr } = await runMain(['run', '--config', config, '--model', KV, '--calibration', dir, '--out', out]);
  expect([code, stderr.split('\n').filter((l) => l.startsWith('prune-gate:'))]).toEqual([0, []]);
  const report = JSON.parse(fs.readFileSync(path.join(out, 'report.json'), 'utf8')) as Report;
  const perplexity = report.metrics.find((m) => m.name === 'perplexity')!;
  expect(perplexity.base).toBeCloseTo(metric((await evalCli(NO_CACHE, NO_CACHE, dir)).report, 'perplexity'), 4);
  expect(perplexity.candidate).not.toBe(perplexity.base);
  // The pruned cache is smaller: the candidate ran with a past of fewer heads than the set's.
  expect(report.interface?.map((c) => c.name)).toContain('past_key_values.0.key');
});

// onnxruntime-genai's recent builders declare the cache's head size as 'kv_cache_dim' on past and
// present alike: nothing declares it, so it is found by running the model once without its pasts
// (graph/cache-sizes.ts). llama-genai-qkv.onnx is the same model with the size declared.
describe("the builder's kv_cache_dim model (test/fixtures/genai)", () => {
  const genai = (file: string) => path.join(FIXTURES_DIR, 'genai', file);
  const bytes = Array.from(Buffer.from('Q: What is the square root of 4b^2? A: 2b. Q: Who wrote it? A: a monk.'));

  test('a language-model set gives it the perplexity of the declared model', async () => {
    const dir = path.join(tmp, 'genai-lm');
    fs.mkdirSync(dir);
    const rows = 4;
    const length = 16;
    fs.writeFileSync(path.join(dir, 'input_ids.npy'), encodeNpy(int64(bytes.slice(0, rows * length), [rows, length])));
    fs.writeFileSync(path.join(dir, 'calibration.json'), JSON.stringify({ task: 'language-model', inputs: { input_ids: 'input_ids.npy' }, batch_size: 2 }));
    const symbolic = await evalCli(genai('llama-genai-kvdim.onnx'), genai('llama-genai-kvdim.onnx'), dir);
    expect([symbolic.code, symbolic.stderr.split('\n').filter((l) => l.startsWith('prune-gate:'))]).toEqual([0, []]);
    const declared = await evalCli(genai('llama-genai-qkv.onnx'), genai('llama-genai-qkv.onnx'), dir);
    expect(metric(symbolic.report, 'perplexity')).toBeGreaterThan(1);
    expect(metric(symbolic.report, 'perplexity')).toBeCloseTo(metric(declared.report, 'perplexity'), 4);
  });

  test('a generation set decodes on its cache the tokens the declared model decodes', async () => {
    const dir = path.join(tmp, 'genai-generation');
    fs.mkdirSync(dir);
    const prompts = [bytes.slice(0, 12), bytes.slice(20, 27), bytes.slice(40, 50)];
    fs.writeFileSync(path.join(dir, 'prompts.jsonl'), prompts.map((prompt) => JSON.stringify({ prompt })).join('\n') + '\n');
    fs.writeFileSync(path.join(dir, 'calibration.json'), JSON.stringify({ task: 'generation', samples: 'prompts.jsonl', 'max-new-tokens': 6, tokenizer: 'bytes' }));
    const symbolic = await evalCli(genai('llama-genai-kvdim.onnx'), genai('llama-genai-qkv.onnx'), dir);
    expect([symbolic.code, symbolic.stderr.split('\n').filter((l) => l.startsWith('prune-gate:'))]).toEqual([0, []]);
    // The same weights: every generation agrees with the declared model's, token for token.
    expect(symbolic.report?.metrics.find((m) => m.name === 'sequence-agreement')?.candidate).toBe(1);
  });
});
