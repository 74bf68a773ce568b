// Decode speed of generation sets: decode-tokens-per-second and time-to-first-token as gate
// metrics (config, bounds judged on their intervals as latency's are), timed at batch 1 on the
// KV cache when the model has one, and reported with their intervals. No test here asserts a
// timing: runs are capped (latency.runs) and verdicts come from given times or far bounds.
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { parseConfig, parseRule } from '../src/config/config';
import { measureDecodeSpeed } from '../src/eval/decode-speed';
import { DecodeSpeed, decodeSpeedValues } from '../src/eval/decode-values';
import { loadCalibration } from '../src/eval/calibration';
import { summarize } from '../src/eval/latency';
import type { MetricName } from '../src/eval/metric-names';
import { UserError } from '../src/errors';
import { GateRule, checkRulesFitTask, judge } from '../src/gate/gate';
import { OnnxModel } from '../src/onnx/model';
import { createSession, ort } from '../src/onnx/runtime';
import { compareModels } from '../src/pipeline/run';
import { renderMarkdown } from '../src/report/markdown';
import { FIXTURES_DIR } from './helpers/fixtures';
import { errorOf } from './helpers/user-error';

const KV_DIR = path.join(FIXTURES_DIR, 'kv');
const KV = path.join(KV_DIR, 'llama-kv.onnx');
const NOCACHE = path.join(KV_DIR, 'llama-kv-nocache.onnx');
const reference = JSON.parse(fs.readFileSync(path.join(KV_DIR, 'llama-kv.json'), 'utf8')) as { eos: number[]; prompts: number[][]; generations: number[][] };

let tmp: string;
beforeAll(() => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'prune-gate-decode-'));
});
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

/** The fixture's prompts as a generation set folder (max-new-tokens 10, its end-of-sequence id). */
function generationSet(name: string): string {
  const dir = path.join(tmp, name);
  fs.mkdirSync(dir);
  fs.writeFileSync(path.join(dir, 'calibration.json'), JSON.stringify({ task: 'generation', samples: 'prompts.jsonl', 'max-new-tokens': 10, 'eos-token-id': reference.eos }));
  fs.writeFileSync(path.join(dir, 'prompts.jsonl'), reference.prompts.map((prompt) => JSON.stringify({ prompt })).join('\n') + '\n');
  return dir;
}

const rule = (metric: MetricName, bound: GateRule['bound'], value: number | string): GateRule => parseRule(metric, bound, value, 'pg.yml: gate');

describe('config: the decode speed bounds', () => {
  test('decode-tokens-per-second takes min-speedup and min; time-to-first-token max-ratio, min-speedup and max', () => {
    const config = parseConfig(['gate:', '  decode-tokens-per-second: { min-speedup: 1.2 }', '  time-to-first-token: { max-ratio: 90% }'].join('\n'), path.join(tmp, 'pg.yml'));
    expect(config.gate.map((r) => [r.metric, r.text])).toEqual([
      ['decode-tokens-per-second', 'min-speedup 1.2'],
      ['time-to-first-token', 'max-ratio 90%'],
    ]);
    expect(errorOf(() => parseConfig('gate:\n  decode-tokens-per-second: { max-ratio: 0.9 }\n', path.join(tmp, 'pg.yml')))).toMatch(
      /pg\.yml: gate\.decode-tokens-per-second.max-ratio: is not a bound of this metric; decode-tokens-per-second takes min-speedup or min$/,
    );
  });

  test('a factor that cannot be meant is refused with the likely spelling, on latency too', () => {
    expect(errorOf(() => rule('decode-tokens-per-second', 'min-speedup', 20))).toBe(
      'pg.yml: gate: 20 asks the candidate to be 20x as fast as the base, which pruning and quantization do not reach, so it always fails; write 1.2 for 20 % faster',
    );
    expect(errorOf(() => rule('time-to-first-token', 'max-ratio', 90))).toBe("pg.yml: gate: 90 lets the candidate take 90x the base's time, so it never fails; write 0.9 or 90% (of the base model's)");
    expect(errorOf(() => rule('latency-p50', 'max-ratio', 80))).toContain('write 0.8 or 80%');
    expect(errorOf(() => rule('decode-tokens-per-second', 'min-speedup', '20%'))).toContain('takes a factor such as 1.2');
    // Factors a pruned model can meet, or a slower one be allowed, stay.
    expect(rule('time-to-first-token', 'max-ratio', 1.1).value).toBe(1.1);
    expect(rule('decode-tokens-per-second', 'min-speedup', 0.95).value).toBe(0.95);
    expect(rule('decode-tokens-per-second', 'min', 500).value).toBe(500); // tokens per second
  });

  test('a decode speed bound on a set that does not decode is refused up front', () => {
    expect(errorOf(() => checkRulesFitTask([rule('time-to-first-token', 'max-ratio', 0.9)], { task: 'language-model' }, 'pg.yml'))).toBe(
      'pg.yml: gate.time-to-first-token: the calibration task is language-model, which has no time-to-first-token; it needs a generation set',
    );
  });
});

describe('verdicts: judged on the interval, as latency is', () => {
  // 20 steps of each model at a steady 10 ms (base) and 8 ms (candidate) per token: 100 and 125
  // tokens per second, a speedup of 1.25 widened by the 3 % noise floor to 1.2125..1.2875. The
  // first token: 4 ms and 5 ms, the candidate slower (ratio 1.25, 1.214..1.289).
  const steady = (ms: number) => new Array<number>(20).fill(ms);
  const decode: DecodeSpeed = {
    cache: true,
    promptTokens: 3,
    steps: 9,
    firstToken: summarize(steady(4), steady(5), 1, 0.03).result,
    decode: summarize(steady(10), steady(8), 1, 0.03).result,
  };
  const verdict = (r: GateRule) => {
    const [row] = judge(decodeSpeedValues(decode), [r], 'generation').filter((m) => m.rule !== null);
    return row.inconclusive ? 'inconclusive' : row.pass ? 'pass' : 'fail';
  };

  test.each([
    ['min-speedup 1.2: the whole interval is above 120 tokens/s', rule('decode-tokens-per-second', 'min-speedup', 1.2), 'pass'],
    ['min-speedup 1.25: the interval holds it', rule('decode-tokens-per-second', 'min-speedup', 1.25), 'inconclusive'],
    ['min-speedup 1.3: the whole interval is below', rule('decode-tokens-per-second', 'min-speedup', 1.3), 'fail'],
    ['min 110 tokens/s: the candidate its own interval', rule('decode-tokens-per-second', 'min', 110), 'pass'],
    ['time to first token max-ratio 1.1: 1.25x the base', rule('time-to-first-token', 'max-ratio', 1.1), 'fail'],
    ['time to first token max 6 ms', rule('time-to-first-token', 'max', 6), 'pass'],
  ])('%s', (_, r, outcome) => {
    expect(verdict(r)).toBe(outcome);
  });

  test('the values are tokens per second and the first token in ms, for both models', () => {
    const values = decodeSpeedValues(decode);
    expect(values.base).toEqual({ 'decode-tokens-per-second': 100, 'time-to-first-token': 4 });
    expect(values.candidate).toEqual({ 'decode-tokens-per-second': 125, 'time-to-first-token': 5 });
    expect(values.intervals['decode-tokens-per-second']!.ratio[0]).toBeCloseTo(1.2125, 10);
  });
});

/** A session that records the token ids' shape and the inputs of every run. */
function recorded(session: ort.InferenceSession) {
  const runs: { ids: readonly number[]; inputs: string[] }[] = [];
  return {
    runs,
    run: (feeds: Record<string, ort.Tensor>) => {
      runs.push({ ids: feeds.input_ids.dims, inputs: Object.keys(feeds) });
      return session.run(feeds);
    },
  };
}

describe('what is timed', () => {
  test.each([
    ['with its KV cache: the prompt, then one token a step on the cache', KV, true],
    ['without a cache: the prompt, then the growing sequence re-run', NOCACHE, false],
  ])('%s', async (_, file, cached) => {
    const model = OnnxModel.read(file);
    const set = loadCalibration(generationSet(`timed-${cached}`), model);
    const session = await createSession(file);
    try {
      const base = recorded(session);
      const candidate = recorded(session);
      const prompt = reference.prompts[1];
      const tokens = reference.generations[1].slice(0, 4);
      const d = await measureDecodeSpeed(base, candidate, { decoder: set.generation!.decoder, prompt, tokens }, { warmup: 0, runs: 6 });
      expect(d).toMatchObject({ cache: cached, promptTokens: prompt.length, steps: 4 });
      expect([d.firstToken.runs, d.decode.runs]).toEqual([6, 6]);
      // Six prompt runs (time to first token), then six steps cycling through the four after the
      // prompt; with a cache each cycle starts with the prompt's run that fills it (untimed).
      const shapes = candidate.runs.map((r) => r.ids[1]);
      const p = prompt.length;
      const prompts = new Array<number>(6).fill(p);
      expect(shapes).toEqual(cached ? [...prompts, p, 1, 1, 1, 1, p, 1, 1] : [...prompts, p + 1, p + 2, p + 3, p + 4, p + 1, p + 2]);
      expect(candidate.runs.every((r) => r.inputs.some((i) => i.startsWith('past_key_values')) === cached)).toBe(true);
      expect(base.runs.map((r) => r.ids[1])).toEqual(shapes); // the base does the same work
    } finally {
      await session.release();
    }
  });
});

describe('a generation gate reports decode speed with its intervals', () => {
  const config = (name: string) =>
    parseConfig(
      ['gate:', '  decode-tokens-per-second: { min-speedup: 5 }', '  time-to-first-token: { max-ratio: 9 }', 'latency: { warmup: 0, runs: 6, on-inconclusive: fail }'].join('\n'),
      path.join(tmp, `${name}.yml`),
    );

  test('a KV-cache model against itself: both metrics with intervals, verdicts from far bounds', async () => {
    const { report, markdown } = await compareModels({ base: KV, candidate: KV, calibration: generationSet('gate-kv'), config: config('gate-kv') });
    const decode = report.decode!;
    expect(decode).toMatchObject({ cache: true, prompt_tokens: reference.prompts[0].length, steps: 9 });
    for (const timing of [decode.tokens_per_second, decode.time_to_first_token]) {
      expect(timing.runs).toBe(6);
      expect(timing.interval![0]).toBeLessThanOrEqual(timing.speedup!);
      expect(timing.interval![1]).toBeGreaterThanOrEqual(timing.speedup!);
      expect(timing.candidate_interval![0]).toBeLessThanOrEqual(timing.candidate!);
    }
    const row = (name: MetricName) => report.metrics.find((m) => m.name === name)!;
    // The same model: no five-fold speedup, and a first token nowhere near nine times as slow. Six
    // runs on a loaded machine may leave the interval wide enough to be inconclusive: counted as a
    // fail here (on-inconclusive), so the verdict is the same either way.
    expect(row('decode-tokens-per-second')).toMatchObject({ base: decode.tokens_per_second.base, candidate: decode.tokens_per_second.candidate, pass: false, rule: 'min-speedup 5' });
    expect(row('decode-tokens-per-second').interval).toHaveLength(2);
    expect(row('time-to-first-token')).toMatchObject({ pass: true, rule: 'max-ratio 9' });
    expect(report.verdict).toBe('fail');
    expect(markdown).toContain('#### Decode speed (batch 1, a 1-token prompt then 9 steps; each step one token on the KV cache)');
    expect(markdown).toMatch(/\| decode-tokens-per-second \| [\d.]+ tokens\/s \| [\d.]+ tokens\/s \(95 % [\d.]+ tokens\/s to [\d.]+ tokens\/s\) \|/);
    expect(markdown).toMatch(/Decode speedup \(candidate \/ base tokens per second\): \*\*[\d.]+x \(95 % [\d.]+x to [\d.]+x, 6 steps of each model in [\d.e-]+ s\)\*\*; time to first token, base \/ candidate: [\d.]+x \(95 % [\d.]+x to [\d.]+x, 6 runs of each model/);
    expect(markdown).toContain('### ❌ prune-gate failed: **');
    expect(markdown).toMatch(/over the bound: decode-tokens-per-second \(min-speedup 5(, inconclusive)?\)/);
  });

  test('a model without a cache says so, and unbounded rows show the interval too', async () => {
    const plain = parseConfig('latency: { warmup: 0, runs: 6 }\n', path.join(tmp, 'plain.yml'));
    const { report, markdown } = await compareModels({ base: NOCACHE, candidate: NOCACHE, calibration: generationSet('gate-nocache'), config: plain });
    expect(report.decode!.cache).toBe(false);
    expect(markdown).toContain('the model has no KV cache: each step re-runs the whole sequence, as decoding it does');
    expect(markdown).toMatch(/\| time-to-first-token \| [\d.]+ ms \| [\d.]+ ms \(95 % [\d.]+ ms to [\d.]+ ms\) \|/);
    expect(renderMarkdown(report)).toBe(markdown);
  });
});
