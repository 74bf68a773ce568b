// Bounds, the verdict, and the gradual search's stop rules.
import * as path from 'path';
import { parseRule } from '../src/config/config';
import { GateRule } from '../src/gate/gate';
import { UserError } from '../src/errors';
import { MetricResult, checkRulesFitTask, judge, passesQuality, resolveBound, verdictOf } from '../src/gate/gate';
import { MetricName, MetricValues } from '../src/eval/metric-names';
import { SearchDeps, chooseStep, gradualSearch, incrementalTarget, mergePruned, stepRatios } from '../src/gate/search';
import { OnnxModel } from '../src/onnx/model';
import { pruneModel } from '../src/prune';
import type { PruneResult } from '../src/prune/types';
import { FIXTURES_DIR } from './helpers/fixtures';

const rule = (metric: MetricName, bound: GateRule['bound'], value: number | string): GateRule => parseRule(metric, bound, value, 'test');

describe('bounds resolve to the number the candidate is held to', () => {
  test.each([
    ['accuracy', 'max-drop', 0.01, 0.9, 0.89],
    ['accuracy', 'max-drop', '10%', 0.9, 0.81],
    ['accuracy', 'min', 0.8, 0.9, 0.8],
    ['agreement', 'min', '95%', 1, 0.95],
    ['perplexity', 'max-increase', '5%', 20, 21],
    ['perplexity', 'max-increase', 2, 20, 22],
    ['perplexity', 'max', 25, 20, 25],
    ['kl-divergence', 'max', 0.05, 0, 0.05],
    ['size', 'max-ratio', 0.5, 1000, 500],
    ['size', 'max-ratio', '25%', 1000, 250],
    ['params', 'max', 1e6, 2e6, 1e6],
    ['latency-p50', 'min-speedup', 1.25, 10, 8],
  ] as const)('%s %s %s (base %s) -> %s', (metric, bound, value, base, expected) => {
    expect(resolveBound(rule(metric, bound, value), base)).toBeCloseTo(expected, 10);
  });
});

describe('judging a candidate', () => {
  const base: MetricValues = { accuracy: 0.9, agreement: 1, 'kl-divergence': 0, cosine: 1, 'latency-p50': 10, 'latency-p95': 12, size: 1000, params: 100, macs: 50 };

  test('each bounded metric passes or fails; unbounded ones are reported and pass', () => {
    const rules = [rule('accuracy', 'max-drop', 0.01), rule('size', 'max-ratio', 0.5), rule('agreement', 'min', 0.97)];
    const cand: MetricValues = { ...base, accuracy: 0.885, agreement: 0.97, size: 600, params: 60 };
    const results = judge({ base, candidate: cand }, rules, 'classification');
    const by = (n: string) => results.find((r) => r.name === n) as MetricResult;
    expect(results.map((r) => r.name)).toEqual(['accuracy', 'agreement', 'kl-divergence', 'cosine', 'latency-p50', 'latency-p95', 'size', 'params', 'macs']);
    expect(by('accuracy')).toMatchObject({ base: 0.9, candidate: 0.885, rule: 'max-drop 0.01', pass: false });
    expect(by('accuracy').bound).toBeCloseTo(0.89, 12);
    // exactly at the bound (0.97 vs 0.97 after float arithmetic) passes
    expect(by('agreement')).toMatchObject({ bound: 0.97, pass: true });
    expect(by('size')).toMatchObject({ bound: 500, candidate: 600, pass: false });
    expect(by('params')).toMatchObject({ bound: null, rule: null, pass: true });
    expect(verdictOf(results)).toBe('fail');
    expect(passesQuality(results)).toBe(false);
    const better = judge({ base, candidate: { ...cand, accuracy: 0.895 } }, rules, 'classification');
    expect(passesQuality(better)).toBe(true); // only size fails: an efficiency bound
    expect(verdictOf(better)).toBe('fail');
  });

  test('a bound on a value that could not be measured fails', () => {
    const { macs, ...noMacs } = base;
    void macs;
    const results = judge({ base: noMacs, candidate: noMacs }, [rule('macs', 'max-ratio', 0.9)], 'generic');
    expect(results.find((r) => r.name === 'macs')).toMatchObject({ base: null, candidate: null, bound: null, pass: false });
  });

  test('a bound the task cannot produce is a config error naming it', () => {
    expect(() => checkRulesFitTask([rule('perplexity', 'max', 10)], { task: 'classification' }, 'prune-gate.yml')).toThrow(
      'prune-gate.yml: gate.perplexity: the calibration task is classification, which has no perplexity; it needs a language-model or generation set',
    );
    expect(() => checkRulesFitTask([rule('accuracy', 'min', 0.5)], { task: 'generic' }, 'prune-gate.yml')).toThrow(/it needs a classification set with labels/);
    expect(() => checkRulesFitTask([rule('rouge-l', 'min', 0.5)], { task: 'language-model' }, 'x')).toThrow(/it needs a generation set/);
    expect(() => checkRulesFitTask([rule('agreement', 'min', 0.5)], { task: 'generic' }, 'x')).not.toThrow();
  });

  test('a generation set without references has no reference metrics to bound', () => {
    const set = { task: 'generation' as const, generation: {} };
    expect(() => checkRulesFitTask([rule('rouge-l', 'min', 0.5)], set, 'prune-gate.yml')).toThrow(
      'prune-gate.yml: gate.rouge-l: the generation set gives no "reference" per prompt, so there is no rouge-l; add references or bound agreement and sequence-agreement',
    );
    expect(() => checkRulesFitTask([rule('sequence-agreement', 'min', 0.5)], set, 'x')).not.toThrow();
    const listed = judge({ base: { 'sequence-agreement': 1 }, candidate: { 'sequence-agreement': 0.5 } }, [], 'generation').map((r) => r.name);
    expect(listed).toContain('sequence-agreement');
    expect(listed).not.toContain('rouge-l');
    expect(listed).not.toContain('perplexity');
  });
});

describe('gradual search', () => {
  test('ratios and incremental targets (cumulative ratios are of the ORIGINAL parameters)', () => {
    expect(stepRatios('auto', 0.6, 3)).toEqual([0.2, 0.4, 0.6]);
    expect(stepRatios(0.3, 0.9, 2)).toEqual([0.15, 0.3]);
    expect(stepRatios(0.3, 0.9, 1)).toEqual([0.3]);
    // 1000 params; after step 1 (0.2) 800 are left; reaching 0.4 of 1000 leaves 600 = 25 % of 800.
    expect(incrementalTarget(1000, 1000, 0.2)).toBeCloseTo(0.2, 12);
    expect(incrementalTarget(1000, 800, 0.4)).toBeCloseTo(0.25, 12);
    // the engine overshot: nothing more to remove
    expect(incrementalTarget(1000, 550, 0.4)).toBe(0);
  });

  const dummy = OnnxModel.fromProto({ irVersion: 8, graph: { node: [], input: [], output: [], initializer: [] } } as never);
  const metric = (name: MetricName, pass: boolean): MetricResult => ({ name, base: 1, candidate: pass ? 1 : 0, bound: 0.5, rule: 'min 0.5', pass });

  /** Runs the search with a prune that removes exactly what it is asked and scripted outcomes per step. */
  async function search(mode: 'auto' | 'fixed', outcomes: ('pass' | 'efficiency' | 'quality')[], lines: string[] = []) {
    const targets: number[] = [];
    const discarded: number[] = [];
    let params = 1000;
    const deps: SearchDeps<number> = {
      prune: async (model, target) => {
        targets.push(target);
        const before = params;
        params = Math.round(params * (1 - target));
        return { model, pruned: [{ kind: 'ffn', where: 'fc1', before: 10, after: 10 - targets.length, params: before - params }], skipped: [{ where: 'head', reason: 'model output' }], paramsBefore: before, paramsAfter: params };
      },
      quantize: async (m) => m,
      evaluate: async (_candidate, step) => {
        const o = outcomes[step.index - 1];
        return { metrics: [metric('accuracy', o !== 'quality'), metric('size', o === 'pass')], artifact: step.index };
      },
      discard: (a) => void discarded.push(a),
      log: (line) => void lines.push(line),
    };
    const ratios = stepRatios('auto', 0.5, outcomes.length);
    const result = await gradualSearch(dummy, 1000, mode, ratios, deps);
    return { result, targets, discarded };
  }

  test('a quality failure stops the search; the result is the largest step passing every bound', async () => {
    const { result, targets, discarded } = await search('auto', ['pass', 'pass', 'quality', 'pass', 'pass']);
    expect(result.steps.map((s) => s.ratio)).toEqual([0.1, 0.2, 0.3]); // the stopping step is reported
    expect(result.chosen).toBe(1);
    expect(result.verdict).toBe('pass');
    expect(result.artifact).toBe(2);
    expect(discarded.sort()).toEqual([1, 3]);
    // step k prunes the previous candidate by what takes the total to k x 10 % of the original
    expect(targets.map((t) => Number(t.toFixed(4)))).toEqual([0.1, Number((1 - 800 / 900).toFixed(4)), Number((1 - 700 / 800).toFixed(4))]);
    expect(result.pruned).toEqual([{ kind: 'ffn', where: 'fc1', before: 10, after: 8, params: 200 }]);
    expect(result.skipped).toEqual([{ where: 'head', reason: 'model output' }]);
  });

  test('a step failing only an efficiency bound does not stop the search', async () => {
    const lines: string[] = [];
    const { result } = await search('auto', ['efficiency', 'efficiency', 'pass', 'pass', 'quality'], lines);
    // Each step's line names the bounds it broke, with the value and the bound.
    expect(lines.filter((l) => / (passes|fails)/.test(l))).toEqual([
      'step 1 of 5: fails an efficiency bound: size 0 B, bound ≤ 0.5 B (min 0.5)',
      'step 2 of 5: fails an efficiency bound: size 0 B, bound ≤ 0.5 B (min 0.5)',
      'step 3 of 5: passes',
      'step 4 of 5: passes',
      'step 5 of 5: fails a quality bound: accuracy 0.00 %, bound ≥ 50.00 % (min 0.5); size 0 B, bound ≤ 0.5 B (min 0.5)',
    ]);
    expect(result.steps).toHaveLength(5);
    expect(result.chosen).toBe(3);
    expect(result.verdict).toBe('pass');
  });

  test('no step passing every bound: fail, with the largest step that passed the quality bounds', async () => {
    const { result, discarded } = await search('auto', ['efficiency', 'efficiency', 'quality']);
    expect(result.verdict).toBe('fail');
    expect(result.chosen).toBe(1);
    expect(result.steps.map((s) => [s.pass, s.qualityPass])).toEqual([
      [false, true],
      [false, true],
      [false, false],
    ]);
    expect(discarded.sort()).toEqual([1, 3]);
  });

  test('the first step already breaks a quality bound: fail, and the first step is written', async () => {
    const { result } = await search('auto', ['quality', 'pass', 'pass']);
    expect(result.steps).toHaveLength(1);
    expect(result).toMatchObject({ chosen: 0, verdict: 'fail', artifact: 1 });
  });

  test('a fixed target evaluates every step; the verdict is the final model\'s', async () => {
    const failing = await search('fixed', ['pass', 'quality', 'pass']);
    expect(failing.result.steps).toHaveLength(3);
    expect(failing.result).toMatchObject({ chosen: 2, verdict: 'pass', artifact: 3 });
    expect(failing.discarded.sort()).toEqual([1, 2]);
    const last = await search('fixed', ['pass', 'pass', 'efficiency']);
    expect(last.result).toMatchObject({ chosen: 2, verdict: 'fail' });
  });

  test('each step records the share removed, counted, and why it fell short; a gate that removed nothing is refused', async () => {
    // An engine that can remove at most 250 of 1000 parameters, for the reason it gives.
    const engine = (limit: number): SearchDeps<number> => {
      let params = 1000;
      return {
        prune: async (model, target) => {
          const before = params;
          params = Math.max(1000 - limit, Math.round(params * (1 - target)));
          const short = 'nothing more to remove: every prunable group is down to one unit';
          return { model, pruned: [], skipped: [], paramsBefore: before, paramsAfter: params, ...(params > Math.round(before * (1 - target)) ? { short } : {}) };
        },
        quantize: async (m) => m,
        evaluate: async (_c, step) => ({ metrics: [metric('accuracy', true)], artifact: step.index }),
        discard: () => undefined,
      };
    };
    const lines: string[] = [];
    const result = await gradualSearch(dummy, 1000, 'fixed', [0.1, 0.2, 0.3], { ...engine(250), log: (l) => void lines.push(l) });
    expect(result.steps.map((s) => s.removed)).toEqual([0.1, 0.2, 0.25]);
    expect(result.steps.map((s) => s.short)).toEqual([undefined, undefined, 'nothing more to remove: every prunable group is down to one unit']);
    expect(lines).toContain('step 3 of 3: 25 % (target 30 %) of the parameters removed, short of the target: nothing more to remove: every prunable group is down to one unit');
    expect(lines).toContain('step 1 of 3: 10 % of the parameters removed');
    await expect(gradualSearch(dummy, 1000, 'fixed', [0.3], engine(0))).rejects.toThrow(
      new UserError('nothing was removed: step 1 (target 30 %) removed no parameters: nothing more to remove: every prunable group is down to one unit'),
    );
    // Target 0 with quantization prunes nothing by design.
    await expect(gradualSearch(dummy, 1000, 'fixed', [0], engine(0))).resolves.toMatchObject({ verdict: 'pass' });
  });

  test('chooseStep on its own', () => {
    const s = (pass: boolean, qualityPass: boolean) => ({ ratio: 0, removed: 0, metrics: [], pass, qualityPass });
    expect(chooseStep([s(true, true), s(false, true), s(true, true), s(false, false)], 'auto')).toBe(2);
    expect(chooseStep([s(false, false)], 'auto')).toBe(0);
    expect(chooseStep([s(true, true), s(false, false)], 'fixed')).toBe(1);
  });

  test('merging what several steps removed at one place', () => {
    expect(
      mergePruned([
        [{ kind: 'heads', where: 'h0', before: 4, after: 3, params: 10 }],
        [
          { kind: 'heads', where: 'h0', before: 3, after: 2, params: 10 },
          { kind: 'ffn', where: 'f0', before: 8, after: 6, params: 4 },
        ],
      ]),
    ).toEqual([
      { kind: 'heads', where: 'h0', before: 4, after: 2, params: 20 },
      { kind: 'ffn', where: 'f0', before: 8, after: 6, params: 4 },
    ]);
  });

  test('with the real engine on the mlp fixture: each step prunes the previous candidate toward the original ratio', async () => {
    const base = OnnxModel.read(path.join(FIXTURES_DIR, 'mlp.onnx'));
    const { countParams } = await import('../src/graph/cost');
    const original = countParams(base);
    const seen: number[] = [];
    const result = await gradualSearch<PruneResult['model']>(base, original, 'auto', stepRatios('auto', 0.4, 2), {
      prune: (model, target) => pruneModel(model, { target, structures: ['ffn'], importance: 'magnitude', compensate: 'none' }),
      quantize: async (m) => m,
      evaluate: async (candidate) => {
        seen.push(countParams(candidate));
        return { metrics: [metric('params', true)], artifact: candidate };
      },
      discard: () => undefined,
    });
    expect(result.steps).toHaveLength(2);
    // Within the engine's granularity (whole neurons) and its 1 % slack of the parameters.
    expect(1 - seen[0] / original).toBeGreaterThan(0.1);
    expect(1 - seen[0] / original).toBeLessThan(0.3);
    expect(1 - seen[1] / original).toBeGreaterThan(0.3);
    expect(1 - seen[1] / original).toBeLessThan(0.5);
    expect(countParams(result.artifact)).toBe(seen[1]);
    expect(result.pruned.every((p) => p.after < p.before)).toBe(true);
  });
});
