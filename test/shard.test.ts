// The ground the Actions matrix (issue 19) stands on: a calibration set split into shards
// evaluated apart gives, once the shards' exact sums are added, the metrics one evaluation of
// the whole set gives, for a classifier, a language model and a generation set.
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { loadCalibration, shardOf } from '../src/eval/calibration';
import { Evaluator } from '../src/eval/evaluator';
import { generationValues } from '../src/eval/generation';
import type { MetricName } from '../src/eval/metric-names';
import { addSums, comparisonValues, taskValues } from '../src/eval/metrics';
import { OnnxModel } from '../src/onnx/model';
import { writeModel } from '../src/onnx/write';
import { pruneModel } from '../src/prune';
import { FIXTURES_DIR } from './helpers/fixtures';

const ROOT = path.resolve(__dirname, '..');
let tmp: string;
beforeAll(() => (tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'prune-gate-shard-'))));
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

/** A magnitude-pruned copy of the model, written (the candidate every shard compares). */
async function candidateOf(file: string, name: string): Promise<OnnxModel> {
  const result = await pruneModel(OnnxModel.read(file), { target: 0.3, structures: ['ffn'], importance: 'magnitude', compensate: 'none', allocation: 'global' });
  const out = path.join(tmp, `${name}.onnx`);
  writeModel(result.model, out);
  return OnnxModel.read(out);
}

const QUALITY: MetricName[] = ['accuracy', 'perplexity', 'next-token-accuracy', 'exact-match', 'token-f1', 'rouge-l', 'sequence-agreement', 'agreement', 'kl-divergence', 'cosine'];

test.each([
  ['mlp (classification)', path.join(FIXTURES_DIR, 'mlp.onnx'), path.join(ROOT, 'calibration', 'mlp')],
  ['llama (language model)', path.join(FIXTURES_DIR, 'llama.onnx'), path.join(ROOT, 'calibration', 'llama')],
])('%s: 4 shards add up to the whole set within 1e-6', async (name, file, calibration) => {
  const base = OnnxModel.read(file);
  const set = loadCalibration(calibration, base);
  const candidate = await candidateOf(file, name.split(' ')[0]);
  const whole = await Evaluator.create(base, set, { latency: { warmup: 0, runs: 1 } });
  const reference = await whole.evaluate(candidate);
  await whole.close();
  const parts = [];
  let samples = 0;
  for (let k = 1; k <= 4; k++) {
    const shard = shardOf(set, k, 4);
    samples += shard.count;
    expect(shard.count).toBeLessThanOrEqual(Math.ceil(set.count / 4));
    const ev = await Evaluator.create(base, shard, { latency: { warmup: 0, runs: 1 } });
    parts.push((await ev.evaluate(candidate)).sums);
    await ev.close();
  }
  expect(samples).toBe(set.count);
  const merged = {
    base: taskValues(set.task, addSums(...parts.map((p) => p.base))),
    candidate: { ...taskValues(set.task, addSums(...parts.map((p) => p.candidate))), ...comparisonValues(addSums(...parts.map((p) => p.candidate))) },
  };
  for (const m of QUALITY) {
    for (const side of ['base', 'candidate'] as const) {
      const want = reference.values[side][m];
      if (want === undefined || (side === 'base' && ['agreement', 'kl-divergence', 'cosine'].includes(m))) continue;
      expect([m, side, Math.abs((merged[side][m] as number) - want) <= 1e-6 * Math.max(1, Math.abs(want))]).toEqual([m, side, true]);
    }
  }
}, 120_000);

test('a generation set split by prompts: the shards decode and score what the whole set does', async () => {
  const kv = path.join(FIXTURES_DIR, 'kv', 'llama-kv.onnx');
  const reference = JSON.parse(fs.readFileSync(path.join(FIXTURES_DIR, 'kv', 'llama-kv.json'), 'utf8')) as { eos: number[]; prompts: number[][]; generations: number[][] };
  const dir = path.join(tmp, 'gen');
  fs.mkdirSync(dir);
  fs.writeFileSync(path.join(dir, 'calibration.json'), JSON.stringify({ task: 'generation', samples: 'p.jsonl', 'max-new-tokens': 10, 'eos-token-id': reference.eos }));
  fs.writeFileSync(path.join(dir, 'p.jsonl'), [...reference.prompts, ...reference.prompts].map((p, i) => JSON.stringify({ prompt: p, reference: reference.generations[i % 8].slice(0, 3) })).join('\n'));
  const base = OnnxModel.read(kv);
  const set = loadCalibration(dir, base);
  const candidate = await candidateOf(kv, 'kv');
  const whole = await Evaluator.create(base, set, { latency: { warmup: 0, runs: 1 } });
  const want = (await whole.evaluate(candidate)).values.candidate;
  await whole.close();
  const parts = [];
  for (let k = 1; k <= 4; k++) {
    const ev = await Evaluator.create(base, shardOf(set, k, 4), { latency: { warmup: 0, runs: 1 } });
    parts.push((await ev.evaluate(candidate)).sums.candidate);
    await ev.close();
  }
  const sums = addSums(...parts);
  const got = { ...generationValues(sums), ...comparisonValues(sums) };
  for (const m of ['exact-match', 'token-f1', 'rouge-l', 'sequence-agreement', 'perplexity', 'agreement', 'kl-divergence', 'cosine'] as MetricName[]) {
    expect([m, Math.abs((got[m] as number) - (want[m] as number)) <= 1e-6 * Math.max(1, Math.abs(want[m] as number))]).toEqual([m, true]);
  }
}, 120_000);
