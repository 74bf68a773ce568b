// task: generation. Bad sets are refused with one line naming the file and the line; the
// example's generations equal those of the independent reference decoder committed with it; a
// gate on a KV-cache model runs end to end with the generation metrics, decoded examples and
// the model's interface in the report.
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { loadCalibration } from '../src/eval/calibration';
import { greedyDecode } from '../src/eval/generate';
import { interfaceChanges } from '../src/eval/generation';
import { teacherForcedSet } from '../src/eval/generation-set';
import { UserError } from '../src/errors';
import { OnnxModel } from '../src/onnx/model';
import { createSession, ort } from '../src/onnx/runtime';
import { writeModel } from '../src/onnx/write';
import { pruneModel } from '../src/prune';
import { parseConfig } from '../src/config/config';
import { compareModels, runGate } from '../src/pipeline/run';
import { buildReport } from '../src/report/build';
import { renderMarkdown } from '../src/report/markdown';
import { FIXTURES_DIR } from './helpers/fixtures';
import { errorOf } from './helpers/user-error';

const ROOT = path.resolve(__dirname, '..');
const KV_DIR = path.join(FIXTURES_DIR, 'kv');
const KV = path.join(KV_DIR, 'llama-kv.onnx');
const kvModel = OnnxModel.read(KV); // vocabulary 64, no position limit
const gpt2 = OnnxModel.read(path.join(FIXTURES_DIR, 'gpt2.onnx')); // a 64-row position table
const kvReference = JSON.parse(fs.readFileSync(path.join(KV_DIR, 'llama-kv.json'), 'utf8')) as { eos: number[]; prompts: number[][]; generations: number[][] };

let tmp: string;
let cwd: string;
beforeAll(() => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'prune-gate-generation-'));
  cwd = process.cwd();
  process.chdir(tmp); // messages show paths relative to the working folder
});
afterAll(() => {
  process.chdir(cwd);
  fs.rmSync(tmp, { recursive: true, force: true });
});

/** One timed run of each model: latency and decode speed are not what these test (test/decode-speed.test.ts). */
const oneRun = () => parseConfig('latency: { warmup: 0, runs: 1 }\n', path.join(tmp, 'one-run.yml'));

let counter = 0;
/** A generation set folder: calibration.json with `spec`, prompts.jsonl with `lines` (objects or raw text). */
function generationSet(lines: (object | string)[], spec: object = {}): string {
  const dir = `gen-${++counter}`;
  fs.mkdirSync(dir);
  fs.writeFileSync(path.join(dir, 'calibration.json'), JSON.stringify({ task: 'generation', samples: 'prompts.jsonl', 'max-new-tokens': 4, ...spec }));
  fs.writeFileSync(path.join(dir, 'prompts.jsonl'), lines.map((l) => (typeof l === 'string' ? l : JSON.stringify(l))).join('\n') + '\n');
  return dir;
}

describe('bad generation sets are refused with the file and the line', () => {
  const ok = { prompt: [1, 2, 3], reference: [4, 5] };

  test('a token id outside the vocabulary', () => {
    const dir = generationSet([ok, ok, { prompt: [1, 64], reference: [3] }]);
    expect(errorOf(() => loadCalibration(dir, kvModel))).toBe(
      `${dir}/prompts.jsonl line 3: prompt token 64 is outside the model's vocabulary (ids 0 to 63, the rows of 'model.embed_tokens.weight'); was the set made for another tokenizer?`,
    );
    const reference = generationSet([ok, { prompt: [1], reference: [2, 70] }]);
    expect(errorOf(() => loadCalibration(reference, kvModel))).toMatch(new RegExp(`^${reference}/prompts.jsonl line 2: reference token 70 is outside`));
  });

  test('an empty prompt, a malformed line, references on some lines only', () => {
    const empty = generationSet([ok, '', { prompt: [], reference: [1] }]);
    expect(errorOf(() => loadCalibration(empty, kvModel))).toBe(`${empty}/prompts.jsonl line 3: prompt is empty; every prompt needs at least one token id`);
    const text = generationSet([ok, '{"prompt": [1, 2'], {});
    expect(errorOf(() => loadCalibration(text, kvModel))).toMatch(new RegExp(`^${text}/prompts.jsonl line 2: not valid JSON`));
    const strings = generationSet([{ prompt: 'hello' }]);
    expect(errorOf(() => loadCalibration(strings, kvModel))).toMatch(new RegExp(`^${strings}/prompts.jsonl line 1: prompt: expected a list of token ids`));
    const mixed = generationSet([ok, { prompt: [1] }]);
    expect(errorOf(() => loadCalibration(mixed, kvModel))).toBe(
      `${mixed}/prompts.jsonl line 2: has no "reference" but line 1 has one; give a reference on every line or on none`,
    );
  });

  test('a prompt plus max-new-tokens longer than the position table, or than max-length', () => {
    const long = { prompt: Array.from({ length: 40 }, (_, i) => i + 1) };
    const dir = generationSet([{ prompt: [1, 2] }, long], { 'max-new-tokens': 32 });
    expect(errorOf(() => loadCalibration(dir, gpt2))).toBe(
      `${dir}/prompts.jsonl line 2: the prompt (40 tokens) plus 32 new tokens is longer than the 64 the model accepts (its position table 'transformer.wpe.weight' has 64 rows); shorten the prompt or lower max-new-tokens`,
    );
    expect(() => loadCalibration(generationSet([long], { 'max-new-tokens': 24 }), gpt2)).not.toThrow();
    const limited = generationSet([ok, ok], { 'max-length': 6 });
    expect(errorOf(() => loadCalibration(limited, kvModel))).toBe(
      `${limited}/prompts.jsonl line 1: the prompt (3 tokens) plus 4 new tokens is longer than the 6 the model accepts (${limited}/calibration.json gives max-length 6); shorten the prompt or lower max-new-tokens`,
    );
  });

  test('calibration.json: missing max-new-tokens, npy inputs, generation keys on another task, a bad tokenizer', () => {
    const dir = generationSet([ok]);
    const spec = (s: object) => fs.writeFileSync(path.join(dir, 'calibration.json'), JSON.stringify(s));
    spec({ task: 'generation', samples: 'prompts.jsonl' });
    expect(errorOf(() => loadCalibration(dir, kvModel))).toBe(`${dir}/calibration.json: max-new-tokens: missing: the most tokens to generate per prompt (e.g. 32)`);
    spec({ task: 'generation', inputs: { input_ids: 'x.npy' }, 'max-new-tokens': 4 });
    expect(errorOf(() => loadCalibration(dir, kvModel))).toBe(`${dir}/calibration.json: task generation reads "samples" (a .jsonl file of prompts); remove "inputs"`);
    spec({ task: 'language-model', samples: 'prompts.jsonl', 'eos-token-id': 2 });
    expect(errorOf(() => loadCalibration(dir, kvModel))).toBe(`${dir}/calibration.json: eos-token-id: used by task generation only, this set's task is language-model; remove it`);
    spec({ task: 'generation', samples: 'prompts.jsonl', 'max-new-tokens': 4, 'eos-token-id': 'two' });
    expect(errorOf(() => loadCalibration(dir, kvModel))).toMatch(/eos-token-id: a token id, or a list of token ids/);
    fs.writeFileSync(path.join(dir, 'tok.json'), '{"model": ');
    spec({ task: 'generation', samples: 'prompts.jsonl', 'max-new-tokens': 4, tokenizer: 'tok.json' });
    expect(errorOf(() => loadCalibration(dir, kvModel))).toMatch(new RegExp(`^${dir}/calibration.json: tokenizer: .*tok.json: not valid JSON`));
  });

  test('eos-token-id takes one id or a list; the loader finds the cache and the inputs by role', () => {
    const one = loadCalibration(generationSet([ok], { 'eos-token-id': 7 }), kvModel).generation!;
    const list = loadCalibration(generationSet([ok], { 'eos-token-id': [7, 9] }), kvModel).generation!;
    expect([one.eos, list.eos]).toEqual([[7], [7, 9]]);
    expect(one.decoder.cache.map((c) => `${c.past.name}->${c.present}`)).toEqual([0, 1].flatMap((l) => ['key', 'value'].map((k) => `past_key_values.${l}.${k}->present.${l}.${k}`)));
    expect([one.decoder.tokens.name, one.decoder.mask?.name, one.decoder.positions?.name, one.decoder.logits]).toEqual(['input_ids', 'attention_mask', 'position_ids', 'logits']);
  });
});

test("the example's generations equal those of the reference decoder committed with it", async () => {
  const dir = path.join(ROOT, 'examples', 'fortunes-llama', 'generation');
  const modelFile = path.join(ROOT, 'examples', 'fortunes-llama', 'model.onnx');
  const set = loadCalibration(dir, OnnxModel.read(modelFile));
  const g = set.generation!;
  expect(g.prompts.length).toBeGreaterThanOrEqual(100);
  const expected = fs
    .readFileSync(path.join(dir, 'reference-generations.jsonl'), 'utf8')
    .split('\n')
    .filter((l) => l.trim())
    .map((l) => (JSON.parse(l) as { generation: number[] }).generation);
  const session = await createSession(modelFile);
  try {
    expect(await greedyDecode(session, g.decoder, g.prompts, { maxNewTokens: g.maxNewTokens, eos: g.eos, batchSize: set.batchSize })).toEqual(expected);
  } finally {
    await session.release();
  }
});

describe('a generation gate on a KV-cache model', () => {
  const lines = kvReference.prompts.map((prompt, i) => ({ prompt, reference: kvReference.generations[i].slice(0, 4) }));

  test('eval of the model against itself: every comparison exact, decoded examples from tokenizer.json', async () => {
    const dir = generationSet(lines, { 'max-new-tokens': 10, 'eos-token-id': kvReference.eos, tokenizer: path.join(KV_DIR, 'tokenizer.json') });
    const { report, markdown } = await compareModels({ base: KV, candidate: KV, calibration: dir, config: oneRun() });
    const values = Object.fromEntries(report.metrics.map((m) => [m.name, [m.base, m.candidate]]));
    expect(report.task).toBe('generation');
    expect(values['sequence-agreement']).toEqual([1, 1]);
    expect(values.agreement).toEqual([1, 1]);
    // The references are the first 4 tokens of each generation: exact only where it had at most 4.
    const exact = kvReference.generations.filter((g) => g.length <= 4).length / lines.length;
    expect(values['exact-match']).toEqual([exact, exact]);
    expect(values['rouge-l'][0]).toBe(values['rouge-l'][1]);
    expect(values.perplexity[0]).toBeCloseTo(values.perplexity[1] as number, 10);
    expect(report.examples).toHaveLength(3);
    expect(report.examples![0]).toMatchObject({ line: 1, base: report.examples![0].candidate });
    expect(report.examples![0].prompt).toMatch(/^[a-zA-Z ]+$/); // words of the fixture's vocabulary
    expect(markdown).toContain('Generations, base vs candidate (3 samples)');
    expect(report.interface).toBeUndefined();
  });

  test('run: prunes, decodes each candidate and gates on rouge-l and agreement', async () => {
    // The references are the base's own generations: its rouge-l is 1.
    const dir = generationSet(kvReference.prompts.map((prompt, i) => ({ prompt, reference: kvReference.generations[i] })), { 'max-new-tokens': 10, 'eos-token-id': kvReference.eos });
    const config = parseConfig(
      [`model: ${KV}`, `calibration: ${path.resolve(dir)}`, 'prune: { target: 0.3, steps: 1, structures: [ffn], allocation: uniform, compensate: reconstruct }', 'gate:', '  rouge-l: { min: 0.99 }', '  agreement: { min: 0.1 }', 'latency: { warmup: 0, runs: 1 }'].join('\n'),
      path.join(tmp, 'pg.yml'),
    );
    const outcome = await runGate({ config, out: path.join(tmp, 'run-out') });
    const report = outcome.report;
    expect(report.task).toBe('generation');
    const rouge = report.metrics.find((m) => m.name === 'rouge-l')!;
    expect(rouge.base).toBe(1);
    expect(rouge.candidate).toBeLessThan(rouge.base!);
    expect(rouge.pass).toBe(rouge.candidate! >= 0.99);
    expect(report.metrics.map((m) => m.name)).toEqual(expect.arrayContaining(['exact-match', 'token-f1', 'rouge-l', 'sequence-agreement', 'perplexity', 'agreement', 'kl-divergence', 'cosine']));
    expect(report.pruned.length).toBeGreaterThan(0);
    const written = await createSession(outcome.files.model);
    expect(written.outputNames).toContain('present.1.value');
    await written.release();
  });
});

test('teacher forcing compares the rows that chose each generated token, and the one that chose the end', () => {
  const dir = generationSet([{ prompt: [5, 6, 7] }, { prompt: [8] }, { prompt: [9, 10] }], { 'max-new-tokens': 3 });
  const set = loadCalibration(dir, kvModel);
  // Prompt 0 stopped on the end id after 2 tokens; prompt 1 ran to max-new-tokens; prompt 2 chose the end id first.
  const forward = teacherForcedSet(set.generation!, set, [[1, 2], [3, 4, 5], []]);
  const rows = forward.positions!;
  expect(rows.length).toBe(5);
  const compared = [0, 1, 2].map((i) => [...rows.compare.subarray(i * 5, i * 5 + 5)]);
  expect(compared).toEqual([
    [0, 0, 1, 1, 1], // positions 2, 3, 4 chose 1, 2 and the end id
    [1, 1, 1, 0, 0], // positions 0, 1, 2 chose 3, 4, 5; nothing after
    [0, 1, 0, 0, 0], // position 1 chose the end id
  ]);
  const ids = [...(forward.inputs.input_ids.data as BigInt64Array)].map(Number);
  expect(ids.slice(0, 5)).toEqual([5, 6, 7, 1, 2]);
  expect([...(forward.inputs.attention_mask.data as BigInt64Array)].map(Number).slice(10, 15)).toEqual([1, 1, 0, 0, 0]);
});

test("the references' perplexity is the one a plain run of the same weights without a cache gives", async () => {
  const lines = kvReference.prompts.map((prompt, i) => ({ prompt, reference: [...kvReference.generations[i]].reverse().slice(0, 5) }));
  const dir = generationSet(lines, { 'max-new-tokens': 3 });
  const { report } = await compareModels({ base: KV, candidate: KV, calibration: dir, config: oneRun() });
  const measured = report.metrics.find((m) => m.name === 'perplexity')!.base as number;
  // By hand, one sequence at a time, on the model exported without a cache.
  const session = await createSession(path.join(KV_DIR, 'llama-kv-nocache.onnx'));
  let nll = 0;
  let count = 0;
  for (const { prompt, reference } of lines) {
    const sequence = [...prompt, ...reference];
    const n = sequence.length;
    const out = await session.run({
      input_ids: new ort.Tensor('int64', BigInt64Array.from(sequence.map(BigInt)), [1, n]),
      attention_mask: new ort.Tensor('int64', new BigInt64Array(n).fill(1n), [1, n]),
      position_ids: new ort.Tensor('int64', BigInt64Array.from(sequence.map((_, j) => BigInt(j))), [1, n]),
    });
    const logits = out.logits.data as Float32Array;
    reference.forEach((token, k) => {
      const row = logits.subarray((prompt.length - 1 + k) * 64, (prompt.length + k) * 64);
      const max = Math.max(...row);
      const lse = max + Math.log(row.reduce((s, v) => s + Math.exp(v - max), 0));
      nll += lse - row[token];
      count++;
    });
  }
  await session.release();
  expect(measured).toBeCloseTo(Math.exp(nll / count), 4);
});

test("pruning a KV-cache model's heads shrinks its past and present, and it decodes with its cache as by re-running", async () => {
  const base = OnnxModel.read(KV);
  const set = loadCalibration(generationSet(kvReference.prompts.map((prompt) => ({ prompt })), { 'max-new-tokens': 10 }), base);
  const result = await pruneModel(base, { target: 0.2, structures: ['heads'], importance: 'magnitude', compensate: 'none', allocation: 'global' });
  expect(result.pruned.map((p) => p.kind)).toContain('heads');
  const file = path.join(tmp, 'kv-heads.onnx');
  writeModel(result.model, file);
  const pruned = OnnxModel.read(file);
  const changes = interfaceChanges(base, pruned);
  expect(changes.length).toBeGreaterThan(0);
  for (const c of changes) {
    expect(c.name).toMatch(/^(past_key_values|present)\.\d\.(key|value)$/);
    expect(c.candidate[1]).toBe(1); // one of the layer's 2 KV heads left
  }
  const session = await createSession(file);
  try {
    const g = set.generation!;
    const cached = await greedyDecode(session, g.decoder, g.prompts, { maxNewTokens: 10, eos: [], batchSize: 8 });
    // Re-running: each step feeds the whole sequence with an empty cache of the pruned model's own shape.
    for (const [i, prompt] of g.prompts.entries()) {
      const sequence = [...prompt];
      for (let step = 0; step < 10; step++) {
        const n = sequence.length;
        const feeds: Record<string, ort.Tensor> = {
          input_ids: new ort.Tensor('int64', BigInt64Array.from(sequence.map(BigInt)), [1, n]),
          attention_mask: new ort.Tensor('int64', new BigInt64Array(n).fill(1n), [1, n]),
          position_ids: new ort.Tensor('int64', BigInt64Array.from(sequence.map((_, j) => BigInt(j))), [1, n]),
        };
        for (const name of session.inputNames.filter((x) => x.startsWith('past_key_values'))) {
          const heads = changes.some((c) => c.name === name) ? 1 : 2;
          feeds[name] = new ort.Tensor('float32', new Float32Array(0), [1, heads, 0, 8]);
        }
        const logits = (await session.run(feeds)).logits;
        const last = (logits.data as Float32Array).subarray((n - 1) * 64, n * 64);
        sequence.push(last.indexOf(Math.max(...last)));
      }
      expect(cached[i]).toEqual(sequence.slice(prompt.length));
    }
  } finally {
    await session.release();
  }
});

test("a candidate whose inputs or outputs changed shape is recorded in report.json's interface and leads the report", () => {
  const candidate = OnnxModel.read(KV);
  for (const v of [...candidate.graph.input, ...candidate.graph.output]) {
    if (/^(past_key_values|present)\.0\.key$/.test(v.name ?? '')) v.type!.tensorType!.shape!.dim![1].dimValue = 1;
  }
  const changes = interfaceChanges(kvModel, candidate);
  expect(changes).toEqual([
    { name: 'past_key_values.0.key', kind: 'input', base: ['batch', 2, 'past_sequence', 8], candidate: ['batch', 1, 'past_sequence', 8] },
    { name: 'present.0.key', kind: 'output', base: ['batch', 2, 'past_sequence + sequence', 8], candidate: ['batch', 1, 'past_sequence + sequence', 8] },
  ]);
  const stats = { path: 'm.onnx', params: 1, bytes: 1, macs: null };
  const report = buildReport({
    verdict: 'pass',
    task: 'generation',
    target: 0.3,
    quantize: 'none',
    base: stats,
    candidate: stats,
    metrics: [],
    latency: { base: { p50_ms: 1, p95_ms: 1 }, candidate: { p50_ms: 1, p95_ms: 1 }, speedup: 1 },
    steps: [],
    chosenStep: null,
    pruned: [],
    skipped: [],
    interface: changes,
  });
  expect(report.interface).toEqual(changes);
  expect(renderMarkdown(report)).toContain("**The model's interface changed**: 2 inputs and outputs have a new shape");
  expect(renderMarkdown(report)).toContain('| output | `present.0.key` | [batch, 2, past\\_sequence + sequence, 8] | [batch, 1, past\\_sequence + sequence, 8] |');
});
