// Latency as a measurement with its uncertainty: how many runs are made (by time, with an
// injected clock: no test here waits for anything), the 95 % interval of the speedup, and a
// latency bound judged pass, fail or inconclusive by where the whole interval lies.
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { main } from '../src/cli/main';
import type { ort } from '../src/onnx/runtime';
import { renderMarkdown } from '../src/report/markdown';
import type { Report } from '../src/report/schema';
import { pairedBootstrap, percentile, percentileInPlace, seededRandom } from '../src/eval/bootstrap';
import { LatencyOptions, LatencyResult, MIN_RUNS, STEADY_RUNS, latencyIntervals, latencyValues, measureLatency, measureLatencyApart, summarize } from '../src/eval/latency';
import { parseRule } from '../src/config/config';
import { GateRule, OnInconclusive, judge, latencySettled } from '../src/gate/gate';
import type { MetricName } from '../src/eval/metric-names';

const rule = (metric: MetricName, bound: GateRule['bound'], value: number | string): GateRule => parseRule(metric, bound, value, 'test');

/**
 * Two fake sessions on one fake clock: each run moves the clock by its model's next duration
 * (`times(model, i)` for the i-th run of that model, warm-up runs included).
 */
function fakeModels(times: (model: 'base' | 'candidate', i: number) => number) {
  let now = 0;
  const counts = { base: 0, candidate: 0 };
  const model = (name: 'base' | 'candidate'): Pick<ort.InferenceSession, 'run'> => ({
    run: async () => {
      now += times(name, counts[name]++);
      return {} as ort.InferenceSession.ReturnType;
    },
  });
  return { base: model('base'), candidate: model('candidate'), clock: () => now, counts };
}

/** Times around `ms` with a relative jitter from a seeded generator: one draw per run. */
function jittered(ms: { base: number; candidate: number }, jitter: number, seed = 1) {
  const random = { base: seededRandom(seed), candidate: seededRandom(seed + 1) };
  return (model: 'base' | 'candidate') => ms[model] * (1 + jitter * (2 * random[model]() - 1));
}

function time(times: (model: 'base' | 'candidate', i: number) => number, options: LatencyOptions): Promise<LatencyResult & { clock: number }> {
  const m = fakeModels(times);
  return measureLatency(m.base, m.candidate, {}, options, m.clock).then((r) => ({ ...r, clock: m.clock() }));
}

/** The latency rows of the gate for `rules`, as judge gives them from a timing. */
function judged(latency: LatencyResult, rules: GateRule[], onInconclusive: OnInconclusive = 'fail') {
  const values = { base: latencyValues(latency.base), candidate: latencyValues(latency.candidate), intervals: latencyIntervals(latency) };
  return judge(values, rules, 'generic', onInconclusive).filter((m) => m.rule !== null);
}

describe('percentiles and the bootstrap', () => {
  test('selection gives the percentiles a sort gives (numpy linear interpolation)', () => {
    const random = seededRandom(5);
    for (let k = 0; k < 200; k++) {
      const values = Array.from({ length: 1 + Math.floor(random() * 40) }, () => Math.floor(random() * 8));
      const sorted = [...values].sort((a, b) => a - b);
      for (const p of [0, 2.5, 50, 95, 97.5, 100]) {
        const pos = (p / 100) * (values.length - 1);
        const want = sorted[Math.floor(pos)] + (sorted[Math.ceil(pos)] - sorted[Math.floor(pos)]) * (pos - Math.floor(pos));
        expect(percentileInPlace(Float64Array.from(values), p)).toBeCloseTo(want, 12);
      }
    }
    expect(percentile([], 50)).toBeNaN();
  });

  test('the same times give the same interval, and it holds the ratio the times were drawn around', () => {
    const draw = jittered({ base: 3, candidate: 2 }, 0.2);
    const base = Float64Array.from({ length: 400 }, () => draw('base'));
    const candidate = Float64Array.from({ length: 400 }, () => draw('candidate'));
    const ratio = ([b, c]: Float64Array[]) => [percentileInPlace(b, 50) / percentileInPlace(c, 50)];
    const [first] = pairedBootstrap([base, candidate], ratio);
    const [again] = pairedBootstrap([Float64Array.from(base), Float64Array.from(candidate)], ratio);
    expect(again).toEqual(first);
    expect(first[0]).toBeLessThan(1.5);
    expect(first[1]).toBeGreaterThan(1.5);
    expect(first[1] - first[0]).toBeLessThan(0.15);
  });

  test('a shift of the machine during the measurement widens the interval (consecutive runs are resampled together)', () => {
    // The candidate's runs are 10 % slower in the second half (a neighbour started working):
    // the interval spans both halves' ratios instead of pretending to one of them.
    const n = 400;
    const draw = jittered({ base: 3, candidate: 2 }, 0.05);
    const base = Float64Array.from({ length: n }, () => draw('base'));
    const candidate = Float64Array.from({ length: n }, (_, i) => draw('candidate') * (i < n / 2 ? 1 : 1.1));
    const ratio = ([b, c]: Float64Array[]) => [percentileInPlace(b, 50) / percentileInPlace(c, 50)];
    const [[low, high]] = pairedBootstrap([base, candidate], ratio);
    const [[iidLow, iidHigh]] = pairedBootstrap([base, candidate], ratio, n);
    expect(high - low).toBeGreaterThan(2 * (iidHigh - iidLow));
  });
});

describe('how many runs: by time', () => {
  test('steady times: the first look, after a fifth of the time, stops it; the interval holds the ratio and is the noise floor wide', async () => {
    const draw = jittered({ base: 2, candidate: 1 }, 0.01);
    const r = await time((m) => draw(m), { warmup: 3, time: 10 });
    // 2 s is 20 % of 10 s: 666 pairs of 3 ms, plus the last pair that crossed it.
    expect(r.seconds).toBeGreaterThanOrEqual(2);
    expect(r.seconds).toBeLessThan(2.01);
    expect(r.runs).toBe(667);
    expect(r.speedup).toBeCloseTo(2, 1);
    expect(r.intervals!.p50.speedup[0]).toBeCloseTo(r.speedup * 0.97, 10);
    expect(r.intervals!.p50.speedup[1]).toBeCloseTo(r.speedup * 1.03, 10);
    expect(r.noise).toBe(0.03);
    expect(r.warnings).toEqual([]);
  });

  test('without a noise floor the interval is the bootstrap\'s, narrower, still holding the ratio', async () => {
    const draw = jittered({ base: 2, candidate: 1 }, 0.01);
    const r = await time((m) => draw(m), { warmup: 0, time: 10, noise: 0 });
    const [low, high] = r.intervals!.p50.speedup;
    expect(low).toBeLessThan(2);
    expect(high).toBeGreaterThan(2);
    expect(high - low).toBeLessThan(0.02);
  });

  test('noisy times run until the time allowed, and say why the interval is wide', async () => {
    const draw = jittered({ base: 2, candidate: 1 }, 0.9);
    const r = await time((m) => draw(m), { warmup: 0, time: 1, noise: 0 });
    expect(r.seconds).toBeGreaterThanOrEqual(1);
    expect(r.seconds).toBeLessThan(1.01);
    expect(r.warnings).toContain('the interval is wider than ±1 % of the speedup: no more fit in latency.time (1 s)');
    expect(r.warnings.some((w) => /^the runs varied by \d+ % around their median/.test(w))).toBe(true);
  });

  test('latency.runs caps the runs; too few for an interval gives none, and says so', async () => {
    const draw = jittered({ base: 2, candidate: 1 }, 0.01);
    const capped = await time((m) => draw(m), { warmup: 0, time: 10, runs: 50, noise: 0 });
    expect(capped.runs).toBe(50);
    const few = await time((m) => draw(m), { warmup: 0, time: 10, runs: MIN_RUNS - 1 });
    expect(few.intervals).toBeNull();
    expect(few.warnings).toEqual([`${MIN_RUNS - 1} runs of each model, too few for an interval (${MIN_RUNS} at least): latency.runs (${MIN_RUNS - 1}) allows no more`]);
    const rough = await time((m) => draw(m), { warmup: 0, time: 10, runs: STEADY_RUNS - 1 });
    expect(rough.warnings).toEqual([`only ${STEADY_RUNS - 1} runs of each model, so the interval is rough: latency.runs (${STEADY_RUNS - 1}) allows no more`]);
  });

  test('runs interrupted by other work are counted as outliers and named', async () => {
    // Every 20th candidate run waits 30 ms for the CPU.
    const draw = jittered({ base: 2, candidate: 1 }, 0.01);
    const r = await time((m, i) => draw(m) + (m === 'candidate' && i % 20 === 0 ? 30 : 0), { warmup: 0, time: 10 });
    expect(r.warnings.find((w) => w.includes('outliers'))).toMatch(/^\d+ of \d+ runs were outliers \(over 10 standard deviations from the median\): other work interrupted them$/);
    // The medians are not moved by them.
    expect(r.speedup).toBeCloseTo(2, 1);
  });

  test('the same times give the same figures', async () => {
    const once = await time(jittered({ base: 2, candidate: 1 }, 0.3, 9), { warmup: 0, time: 3 });
    const twice = await time(jittered({ base: 2, candidate: 1 }, 0.3, 9), { warmup: 0, time: 3 });
    expect(twice).toEqual(once);
  });
});

describe('a latency bound: pass, fail or inconclusive by the whole interval', () => {
  const steady = jittered({ base: 2, candidate: 1 }, 0.01);

  test.each([
    ['min-speedup 1.5: the interval is wholly above', rule('latency-p50', 'min-speedup', 1.5), 'pass'],
    ['min-speedup 2.5: the interval is wholly below', rule('latency-p50', 'min-speedup', 2.5), 'fail'],
    ['min-speedup 2: the interval holds it', rule('latency-p50', 'min-speedup', 2), 'inconclusive'],
    ['max-ratio 0.6 (candidate / base)', rule('latency-p50', 'max-ratio', 0.6), 'pass'],
    ['max-ratio 0.4', rule('latency-p50', 'max-ratio', 0.4), 'fail'],
    ['max-ratio 50%', rule('latency-p50', 'max-ratio', '50%'), 'inconclusive'],
    ['max 1.2 ms on the candidate itself', rule('latency-p50', 'max', 1.2), 'pass'],
    ['max 0.8 ms', rule('latency-p50', 'max', 0.8), 'fail'],
    ['max 1 ms', rule('latency-p50', 'max', 1), 'inconclusive'],
    ['p95, min-speedup 1.5', rule('latency-p95', 'min-speedup', 1.5), 'pass'],
  ])('%s', async (_, bound, outcome) => {
    const r = await time((m) => steady(m), { warmup: 0, time: 10, settled: latencySettled([bound]) });
    const [row] = judged(r, [bound]);
    expect(row.inconclusive ? 'inconclusive' : row.pass ? 'pass' : 'fail').toBe(outcome);
    expect(row.interval).toBeDefined();
  });

  test('a decided bound stops at the first look; an undecided one measures for all the time allowed', async () => {
    const decided = await time((m) => steady(m), { warmup: 0, time: 10, settled: latencySettled([rule('latency-p50', 'min-speedup', 1.5)]) });
    expect(decided.seconds).toBeLessThan(2.01);
    const undecided = await time((m) => steady(m), { warmup: 0, time: 10, settled: latencySettled([rule('latency-p50', 'min-speedup', 2)]) });
    expect(undecided.seconds).toBeGreaterThanOrEqual(10);
  });

  test('inconclusive counts as a fail by default, as a pass with on-inconclusive: pass, and says so either way', async () => {
    const bound = rule('latency-p50', 'min-speedup', 2);
    const r = await time((m) => steady(m), { warmup: 0, time: 10, settled: latencySettled([bound]) });
    expect(judged(r, [bound])[0]).toMatchObject({ pass: false, inconclusive: true, rule: 'min-speedup 2' });
    expect(judged(r, [bound], 'pass')[0]).toMatchObject({ pass: true, inconclusive: true });
  });

  test('the interval judged is in the metric\'s unit: the speedup\'s put on the base\'s time for a relative bound', () => {
    const { result } = summarize([4, 4, 4, 4, 4, 4], [2, 2, 2, 2, 2, 2], 1, 0.1);
    const [row] = judged(result, [rule('latency-p50', 'min-speedup', 1.5)]);
    // speedup 2 +-10 %: the candidate's time as the base's 4 ms over 2.2 and over 1.8.
    expect(row.interval![0]).toBeCloseTo(4 / 2.2, 10);
    expect(row.interval![1]).toBeCloseTo(4 / 1.8, 10);
    expect(row).toMatchObject({ pass: true, bound: 4 / 1.5 });
  });

  test('too few runs for an interval decide no bound', () => {
    const { result } = summarize([4, 4, 4], [2, 2, 2], 1, 0.03);
    expect(result.intervals).toBeNull();
    const [row] = judged(result, [rule('latency-p50', 'min-speedup', 1.1)]);
    expect(row).toMatchObject({ pass: false, inconclusive: true });
    expect(row.interval).toBeUndefined();
  });

  test('a value with no interval (measured exactly) is judged by itself, as before', () => {
    const rows = judge({ base: { 'latency-p50': 4 }, candidate: { 'latency-p50': 2 } }, [rule('latency-p50', 'min-speedup', 1.9)], 'generic').filter((m) => m.rule);
    expect(rows[0]).toMatchObject({ pass: true });
    expect(rows[0].inconclusive).toBeUndefined();
  });
});

describe('on-inconclusive, through `prune-gate eval`', () => {
  // Three runs of each model give no interval, so a latency bound is inconclusive whatever the
  // machine does: the config alone decides the verdict, and the report says which way.
  const ROOT = path.resolve(__dirname, '..');
  let tmp: string;
  beforeAll(() => {
    tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'prune-gate-latency-'));
  });
  afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

  test.each([
    ['', 'fail', 1, /^### ❌ prune-gate failed: .* — over the bound: latency-p50 \(min-speedup 1, inconclusive\)$/],
    ['on-inconclusive: pass, ', 'pass', 0, /^### ✅ prune-gate passed: .* — inconclusive, counted as passing: latency-p50 \(min-speedup 1\)$/],
  ])('latency: { %sruns: 3 }', async (setting, verdict, status, headline) => {
    const file = path.join(tmp, `${verdict}.yml`);
    fs.writeFileSync(file, `gate:\n  latency-p50: { min-speedup: 1 }\nlatency: { ${setting}runs: 3, warmup: 0 }\n`);
    const model = path.join(ROOT, 'test', 'fixtures', 'mlp.onnx');
    let stdout = '';
    const code = await main(['eval', '--base', model, '--candidate', model, '--calibration', path.join(ROOT, 'calibration', 'mlp'), '--config', file, '--json'], {
      stdout: (s) => void (stdout += s),
      stderr: () => undefined,
    });
    const report = JSON.parse(stdout) as Report;
    expect([code, report.verdict]).toEqual([status, verdict]);
    expect(report.latency).toMatchObject({ runs: 3, interval: null });
    expect(report.latency.warnings![0]).toBe('3 runs of each model, too few for an interval (6 at least): latency.runs (3) allows no more');
    expect(report.metrics.find((m) => m.name === 'latency-p50')).toMatchObject({ rule: 'min-speedup 1', inconclusive: true, pass: verdict === 'pass' });
    expect(renderMarkdown(report).split('\n')[0]).toMatch(headline);
  });
});

test('timed apart (models that do not fit together): one session open at a time, the same runs of each, and a warning that drift is not cancelled', async () => {
  const m = fakeModels((model) => (model === 'base' ? 100 : 50));
  const events: string[] = [];
  const opener = (name: 'base' | 'candidate') => async () => {
    events.push(`open ${name}`);
    return { run: (feeds: Record<string, never>) => (events.push(`run ${name}`), m[name].run(feeds)), release: async () => void events.push(`release ${name}`) } as never;
  };
  const r = await measureLatencyApart(opener('base'), opener('candidate'), {}, { warmup: 1, time: 1 }, m.clock);
  // Each model's block: opened, warmed up, timed, let go before the other opens.
  expect(events.indexOf('release base')).toBeLessThan(events.indexOf('open candidate'));
  expect(events.filter((e) => e === 'run base').length).toBe(events.filter((e) => e === 'run candidate').length);
  expect(r.runs).toBeGreaterThanOrEqual(MIN_RUNS);
  expect(r.speedup).toBeCloseTo(2, 5);
  expect(r.warnings.join('\n')).toMatch(/timed apart, one session at a time .*drift between the two blocks is not cancelled/);
});
