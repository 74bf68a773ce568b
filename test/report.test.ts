// Report.json follows its schema; report.md has why this ratio, the verdict, the metrics table,
// compression and latency not said twice, the search chart, and escapes every string from the
// model or report (the CLI's plain text undoes the escapes).
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { MetricResult } from '../src/gate/gate';
import { buildReport, parseReport, readReport } from '../src/report/build';
import { pullRequestOfRun } from '../src/github/event';
import { allocationLine, escapeMarkdown, plainText, renderMarkdown, stickyMarker } from '../src/report/markdown';
import { Report, ReportSchema } from '../src/report/schema';

const HOSTILE = '<img src=x onerror=alert(1)>|**x**';

function metrics(ppl: number, pass = true): MetricResult[] {
  return [
    { name: 'perplexity', base: 20, candidate: ppl, bound: 21, rule: 'max-increase 5%', pass },
    { name: 'next-token-accuracy', base: 0.4, candidate: 0.38, bound: null, rule: null, pass: true },
    { name: 'agreement', base: 1, candidate: 0.9, bound: null, rule: null, pass: true },
    { name: 'kl-divergence', base: 0, candidate: NaN, bound: null, rule: null, pass: true },
    { name: 'size', base: 2000, candidate: 1200, bound: 1000, rule: 'max-ratio 0.5', pass: false },
  ];
}

function sample(extra: Partial<Parameters<typeof buildReport>[0]> = {}): Report {
  return buildReport({
    verdict: 'fail',
    task: 'language-model',
    target: 'auto',
    quantize: 'none',
    base: { path: 'models/lm.onnx', params: 1000, bytes: 2000, macs: 5000 },
    candidate: { path: 'out/pruned.onnx', params: 600, bytes: 1200, macs: null },
    metrics: metrics(20.5, true),
    latency: { base: { p50_ms: 4, p95_ms: 5 }, candidate: { p50_ms: 2, p95_ms: 2.5 }, speedup: 2 },
    steps: [
      { ratio: 0.2, removed: 0.2, metrics: metrics(20.2), pass: false, qualityPass: true },
      { ratio: 0.4, removed: 0.4, metrics: metrics(20.5), pass: false, qualityPass: true },
      { ratio: 0.6, removed: 0.52, short: 'alignment: widths kept at multiples of 64 (align: 64)', metrics: metrics(30, false), pass: false, qualityPass: false },
    ],
    chosenStep: 1,
    pruned: [{ kind: 'heads', where: HOSTILE, before: 4, after: 2, params: 200 }],
    skipped: [{ where: `/h.0/${HOSTILE}`, reason: 'LayerNormalization normalizes over it (the residual stream)' }],
    ...extra,
  });
}

describe('report.json', () => {
  test('has the stable fields and validates against the exported schema', () => {
    const r = sample();
    const json = JSON.parse(JSON.stringify(r));
    expect(ReportSchema.safeParse(json).success).toBe(true);
    expect(Object.keys(json)).toEqual(
      expect.arrayContaining(['verdict', 'base', 'candidate', 'metrics', 'latency', 'steps', 'pruned', 'skipped']),
    );
    expect(json.base).toEqual({ path: 'models/lm.onnx', params: 1000, bytes: 2000, macs: 5000 });
    expect(json.metrics[0]).toEqual({ name: 'perplexity', base: 20, candidate: 20.5, bound: 21, rule: 'max-increase 5%', pass: true });
    expect(json.metrics.find((m: MetricResult) => m.name === 'kl-divergence').candidate).toBeNull(); // NaN has no JSON form
    expect(json.latency).toEqual({ base: { p50_ms: 4, p95_ms: 5 }, candidate: { p50_ms: 2, p95_ms: 2.5 }, speedup: 2 });
    expect(json.steps[2]).toMatchObject({ ratio: 0.6, pass: false, quality_pass: false });
    expect(json.pull_request).toBeUndefined();
  });

  test('records the pull request of a pull_request event', () => {
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'prune-gate-event-'));
    const event = path.join(dir, 'event.json');
    const sha = 'a'.repeat(40);
    fs.writeFileSync(event, JSON.stringify({ pull_request: { number: 42, head: { sha } } }));
    const pr = pullRequestOfRun({ GITHUB_EVENT_NAME: 'pull_request', GITHUB_EVENT_PATH: event });
    expect(pr).toEqual({ number: 42, head_sha: sha });
    expect(sample({ pullRequest: pr }).pull_request).toEqual({ number: 42, head_sha: sha });
    expect(pullRequestOfRun({ GITHUB_EVENT_NAME: 'push', GITHUB_EVENT_PATH: event })).toBeUndefined();
    expect(pullRequestOfRun({ GITHUB_EVENT_NAME: 'pull_request', GITHUB_EVENT_PATH: path.join(dir, 'none.json') })).toBeUndefined();
    fs.writeFileSync(event, JSON.stringify({ pull_request: { number: 42, head: { sha: 'not-a-sha' } } }));
    expect(pullRequestOfRun({ GITHUB_EVENT_NAME: 'pull_request', GITHUB_EVENT_PATH: event })).toBeUndefined();
    fs.rmSync(dir, { recursive: true, force: true });
  });

  test('an untrusted report that does not fit the schema is refused, naming the field', () => {
    const good = JSON.parse(JSON.stringify(sample()));
    expect(parseReport(good, 'r.json').verdict).toBe('fail');
    expect(() => parseReport({ ...good, verdict: 'maybe' }, 'r.json')).toThrow(/^r\.json: not a prune-gate report: verdict: /);
    const bigName = { ...good, pruned: [{ ...good.pruned[0], where: 'x'.repeat(5000) }] };
    expect(() => parseReport(bigName, 'r.json')).toThrow(/pruned\.0\.where/);
    const badMetric = { ...good, metrics: [{ ...good.metrics[0], name: 'evil<script>' }] };
    expect(() => parseReport(badMetric, 'r.json')).toThrow(/metrics\.0\.name/);
    const badSha = { ...good, pull_request: { number: 1, head_sha: 'HEAD; rm -rf /' } };
    expect(() => parseReport(badSha, 'r.json')).toThrow(/pull_request\.head_sha/);
    const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'prune-gate-report-'));
    fs.writeFileSync(path.join(dir, 'r.json'), '{not json');
    expect(() => readReport(path.join(dir, 'r.json'))).toThrow(/r\.json: not a readable JSON report: /);
    fs.rmSync(dir, { recursive: true, force: true });
  });
});

describe('report.md', () => {
  const md = renderMarkdown(sample());

  test('why this ratio, verdict line, metrics table with change / bound / pass, compression and latency', () => {
    expect(md.split('\n')[0]).toBe('### ❌ No step kept every bound: 40% broke size (max-ratio 0.5); 52% broke perplexity (max-increase 5%), size (max-ratio 0.5).');
    expect(md.split('\n')[2]).toMatch(/^prune-gate failed: \*\*models\/lm\.onnx\*\* pruned 40% of the parameters — over the bound: size \(max-ratio 0\.5\)$/);
    expect(md).toContain('| metric | base | candidate | change | bound | pass |');
    expect(md).toContain('| perplexity | 20 | 20.5 | +2.5 % | ≤ 21 (max-increase 5%) | ✅ |');
    expect(md).toContain('| next-token-accuracy | 40.00 % | 38.00 % | −2.00 pts |  |  |');
    expect(md).toContain('| size | 1.95 KiB | 1.17 KiB | −40.0 % | ≤ 1000 B (max-ratio 0.5) | ❌ |');
    expect(md).toContain('| params | 1.00 K | 600 | 1.67x smaller (−40.0 %) |');
    expect(md).toContain('| MACs per sample | 5.00 K | – | – |');
    // The size row of the metrics table is the bytes on disk: not said twice.
    expect(md).not.toContain('| bytes on disk |');
    expect(md).toContain('| candidate | 2.00 ms | 2.50 ms |');
    expect(md).toContain('Speedup (base p50 / candidate p50): **2.00x**');
  });

  test('the steps give the share removed, counted, with the target and the reason where they differ', () => {
    expect(md).toContain('| 2 ⬅ | 40% |');
    expect(md).toContain('| 3 | 52% (target 60%) |');
    expect(md).toMatch(/\n- Step 3 removed 52% of the 60% asked: alignment.*widths kept at multiples of 64/);
    expect(sample().steps[2]).toMatchObject({ ratio: 0.6, removed: 0.52, short: expect.stringContaining('alignment') });
    expect(sample().removed).toBeCloseTo(0.4);
  });

  test('a Mermaid xychart of the main metric over the search steps, with its bound', () => {
    const block = md.slice(md.indexOf('```mermaid'), md.indexOf('```', md.indexOf('```mermaid') + 3) + 3);
    expect(block).toBe(
      [
        '```mermaid',
        'xychart-beta',
        '    title "perplexity by parameters removed; 2nd line: the bound ≤ 21 (max-increase 5%)"',
        '    x-axis "parameters removed" ["20%", "40%", "52%"]',
        '    y-axis "perplexity"',
        '    line [20.2, 20.5, 30]',
        '    line [21, 21, 21]',
        '```',
      ].join('\n'),
    );
  });

  test('the steps table shows every gated metric and names the bounds a failing step broke', () => {
    expect(md).toContain('| step | params removed | perplexity | size | pass |');
    expect(md).toContain('| 2 ⬅ | 40% | 20.5 | 1.17 KiB | ❌ size (max-ratio 0.5) |');
    expect(md).toContain('| 3 | 52% (target 60%) | 30 | 1.17 KiB | ❌ perplexity (max-increase 5%), size (max-ratio 0.5) |');
  });

  test('what was pruned and what was skipped are in collapsed sections', () => {
    expect(md).toMatch(/<details>\n<summary>What was pruned \(1 place\)<\/summary>\n\n\| kind \| where \| before \| after \| params removed \|/);
    expect(md).toMatch(/<details>\n<summary>Left alone \(1 place\)<\/summary>/);
  });

  test('a quantized candidate: the headline says so, and a section gives the weight bytes and the exceptions', () => {
    const q = renderMarkdown(
      sample({
        quantize: 'int4',
        quantization: {
          layers: 30,
          weight_bytes_before: 2_209_792,
          weight_bytes_after: 362_112,
          exceptions: [{ where: HOSTILE, stored: 'int8', reason: 'largest output error on the calibration data (1 of 30: relative error 0.0717)' }],
          names_bytes_saved: 118_502,
        },
      }),
    );
    expect(q.split('\n')[2]).toMatch(/ pruned 40% of the parameters and quantized to int4 — over the bound/);
    expect(q).toContain('#### Quantization (int4)\n\nWeights of 30 layers quantized: 2.11 MiB → 354 KiB, 6.10x smaller (−83.6 %). Intermediate tensor names shortened: 116 KiB fewer.');
    expect(q).toMatch(/<summary>Stored with more bits than int4 \(1 layer\)<\/summary>\n\n\| where \| stored \| why \|/);
    expect(q).not.toContain('<img');
    expect(md).not.toContain('#### Quantization');
    expect(ReportSchema.safeParse(JSON.parse(JSON.stringify(sample({ quantize: 'int8', quantization: { layers: 1, weight_bytes_before: 4, weight_bytes_after: 1, exceptions: [], names_bytes_saved: 0 } })))).success).toBe(true);
  });

  test('a hostile tensor name cannot inject HTML, Markdown or table cells', () => {
    expect(md).not.toContain('<img');
    expect(md).not.toContain('**x**');
    expect(md).toContain('&lt;img src&#61;x onerror&#61;alert(1)&gt;&#124;&#42;&#42;x&#42;&#42;');
    // every table row of the pruned section still has exactly its 5 cells
    const row = md.split('\n').find((l) => l.startsWith('| heads |')) as string;
    expect(row.split('|').length - 2).toBe(5);
  });

  test('escapeMarkdown: mentions, links, code, newlines, length', () => {
    expect(escapeMarkdown('@octocat')).toBe('@\u200boctocat');
    // With the brackets escaped the parentheses cannot make a link: they stay as they are.
    expect(escapeMarkdown('[a](javascript:x)')).toBe('&#91;a&#93;(javascript&#58;x)');
    expect(escapeMarkdown('_a_b')).toBe('\\_a\\_b');
    expect(escapeMarkdown('see www.evil.com')).toBe('see www&#46;evil.com');
    expect(escapeMarkdown('`x`\n# h')).toBe('&#96;x&#96; &#35; h');
    expect(escapeMarkdown('a'.repeat(400))).toHaveLength(300);
    expect(stickyMarker('models/a --> <b>.onnx', 'c --> d.yml')).toBe('<!-- prune-gate:model=models/a_-___b_.onnx config=c_-__d.yml -->');
  });

  test('a report of eval (no search) has no search section', () => {
    const r = sample({ target: null, steps: [], chosenStep: null, pruned: [], skipped: [], verdict: 'pass' });
    const text = renderMarkdown(r);
    expect(text.split('\n')[0]).toBe('### ✅ prune-gate passed: **models/lm.onnx** compared with out/pruned.onnx');
    expect(text).not.toContain('```mermaid');
    expect(text).not.toContain('<details>');
  });
});

describe('latency in the report: the interval, the runs, and rows only where they say something', () => {
  /** A timing of `runs` runs each with the speedup's interval `interval` (the candidate at 2 ms, the base at 2 x speedup). */
  const timing = (speedup: number, interval: [number, number], warnings: string[] = []) => ({
    base: { p50_ms: 2 * speedup, p95_ms: 2.5 * speedup },
    candidate: { p50_ms: 2, p95_ms: 2.5 },
    speedup,
    runs: 412,
    seconds: 2.04,
    noise: 0.03,
    intervals: { p50: { speedup: interval, candidate: [1.9, 2.1] as [number, number] }, p95: { speedup: interval, candidate: [2.4, 2.6] as [number, number] } },
    warnings,
  });
  const latencyRow = (over: Partial<MetricResult> = {}): MetricResult => ({ name: 'latency-p50', base: 2.02, candidate: 2, bound: null, rule: null, pass: true, ...over });
  const withLatency = (latency: ReturnType<typeof timing>, rows: MetricResult[], verdict: 'pass' | 'fail' = 'pass') =>
    sample({ verdict, latency, metrics: [metrics(20.5)[0], ...rows, { name: 'latency-p95', base: 2.6, candidate: 2.5, bound: null, rule: null, pass: true }] });

  test('report.json: latency.ratio, latency.interval and latency.runs beside the medians; a judged row keeps its interval and says inconclusive', () => {
    const bounded = latencyRow({ bound: 1.68, rule: 'min-speedup 1.2', pass: false, interval: [1.94, 2.06], inconclusive: true });
    const json = JSON.parse(JSON.stringify(withLatency(timing(1.01, [0.98, 1.04], ['the machine was busy']), [bounded], 'fail')));
    expect(ReportSchema.safeParse(json).success).toBe(true);
    expect(json.latency).toEqual({
      base: { p50_ms: 2.02, p95_ms: 2.525 },
      candidate: { p50_ms: 2, p95_ms: 2.5 },
      speedup: 1.01,
      ratio: 1.01,
      interval: [0.98, 1.04],
      runs: 412,
      seconds: 2.04,
      noise: 0.03,
      warnings: ['the machine was busy'],
    });
    expect(json.metrics[1]).toEqual({ name: 'latency-p50', base: 2.02, candidate: 2, bound: 1.68, rule: 'min-speedup 1.2', pass: false, interval: [1.94, 2.06], inconclusive: true });
  });

  test('no latency bound and an interval holding 1: no latency rows, one line saying the two were not told apart', () => {
    const md = renderMarkdown(withLatency(timing(1.01, [0.98, 1.04]), [latencyRow()]));
    expect(md).not.toMatch(/^\| latency-p/m);
    expect(md).not.toContain('#### Latency');
    expect(md).toContain("Latency: not told apart from the base's on this machine (95 % interval 0.98x to 1.04x, 412 runs of each model in 2 s).");
  });

  test('an interval excluding 1: the rows and the latency section, with the interval and the run count', () => {
    const md = renderMarkdown(withLatency(timing(1.4, [1.33, 1.47], ['the runs varied by 23 % around their median (robust standard deviation): the machine was busy']), [latencyRow({ base: 2.8 })]));
    expect(md).toMatch(/^\| latency-p50 \| 2\.80 ms \| 2\.00 ms \|/m);
    expect(md).toMatch(/^\| latency-p95 \|/m);
    // The medians are the metrics table's rows: the latency section is the speedup, not a second table.
    expect(md).toContain('Latency speedup (base p50 / candidate p50): **1.40x** (95 % interval 1.33x to 1.47x, 412 runs of each model in 2 s)');
    expect(md).not.toContain('| base | 2.80 ms |');
    expect(md).toContain('> ⚠️ the runs varied by 23 % around their median (robust standard deviation)&#58; the machine was busy');
  });

  test("of several latency warnings the comment gives the first and points to report.json for the rest", () => {
    const md = renderMarkdown(withLatency(timing(1.4, [1.2, 1.6], ['the interval is wider than ±3 % of the speedup: no more fit in latency.time (2 s)', 'the runs varied by 23 % around their median']), [latencyRow({ base: 2.8 })]));
    expect(md).toContain("> ⚠️ the interval is wider than ±3 % of the speedup&#58; no more fit in latency.time (2 s) (1 more in report.json's latency.warnings)");
    expect(md).not.toContain('the runs varied by 23 %');
  });

  test('a latency bound the interval straddles: inconclusive in the verdict line and the row, counted as the config says', () => {
    const row = latencyRow({ bound: 1.68, rule: 'min-speedup 1.2', pass: false, interval: [1.6, 1.75], inconclusive: true });
    const failed = renderMarkdown(withLatency(timing(1.2, [1.15, 1.26]), [row], 'fail'));
    expect(failed.split('\n')[2]).toMatch(/ — over the bound: latency-p50 \(min-speedup 1\.2, inconclusive\)$/);
    expect(failed).toContain('| latency-p50 | 2.02 ms | 2.00 ms (95 % 1.60 ms to 1.75 ms) | −1.0 % | ≤ 1.68 ms (min-speedup 1.2) | ❔ inconclusive (counted as a fail) |');
    const passed = renderMarkdown(withLatency(timing(1.2, [1.15, 1.26]), [{ ...row, pass: true }], 'pass'));
    expect(passed.split('\n')[2]).toMatch(/^prune-gate passed: .* — inconclusive, counted as passing: latency-p50 \(min-speedup 1\.2\)$/);
    expect(passed).toContain('❔ inconclusive (counted as a pass) |');
  });
});

describe('a report that reads at a glance', () => {
  const pass = (ppl: number) => metrics(ppl).map((m) => (m.name === 'size' ? { ...m, bound: 1500, rule: 'max-ratio 0.75', pass: true } : m));
  const step = (ratio: number, ppl: number, ok: boolean) => ({ ratio, removed: ratio, metrics: ok ? pass(ppl) : metrics(ppl, false).map((m) => (m.name === 'size' ? { ...m, pass: true, bound: 1500, rule: 'max-ratio 0.75' } : m)), pass: ok, qualityPass: ok });
  const first = (r: Report) => renderMarkdown(r).split('\n')[0];

  test('why this ratio: the largest step within every bound, and what broke the next one', () => {
    const r = sample({ verdict: 'pass', metrics: pass(20.5), steps: [step(0.2, 20.2, true), step(0.4, 20.5, true), step(0.6, 30, false)], chosenStep: 1 });
    expect(first(r)).toBe('### ✅ Kept 40%: the largest step within every bound; 60% broke perplexity (max-increase 5%).');
  });

  test('why this ratio: the last step tried, and a fixed target kept or broken', () => {
    const last = sample({ verdict: 'pass', metrics: pass(20.5), steps: [step(0.2, 20.2, true), step(0.4, 20.5, true)], chosenStep: 1 });
    expect(first(last)).toBe('### ✅ Kept 40%: the last step tried, within every bound.');
    const fixed = sample({ target: 0.4, verdict: 'pass', metrics: pass(20.5), steps: [step(0.4, 20.5, true)], chosenStep: 0 });
    expect(first(fixed)).toBe('### ✅ Kept 40% (the target): within every bound.');
    const broken = sample({ target: 0.6, verdict: 'fail', metrics: metrics(30, false), steps: [step(0.6, 30, false)], chosenStep: 0 });
    expect(first(broken)).toBe('### ❌ Failed at 60% (the target): it broke perplexity (max-increase 5%).');
    expect(renderMarkdown(broken).split('\n')[2]).toMatch(/^prune-gate failed: \*\*models\/lm\.onnx\*\* pruned 60% of the parameters — over the bound: perplexity/);
  });

  test('the commit is a link to its page when the report knows the repository (from its run), plain otherwise', () => {
    const sha = 'a'.repeat(40);
    const linked = renderMarkdown(sample({ run: { sha, url: 'https://github.com/octo/repo/actions/runs/42' } }));
    expect(linked).toContain(`Judged: [commit \`${sha.slice(0, 12)}\`](https://github.com/octo/repo/commit/${sha}) · [the run](https://github.com/octo/repo/actions/runs/42)`);
    expect(renderMarkdown(sample({ run: { sha } }))).toContain(`Judged: commit \`${sha.slice(0, 12)}\`.`);
  });

  test('the allocation in words, its alternatives counted (report.json lists them)', () => {
    const allocation = {
      strategy: 'measured' as const,
      compensate: 'reconstruct' as const,
      measure: 'KL divergence from the base',
      align: 1,
      tried: [
        { strategy: 'measured' as const, compensate: 'reconstruct' as const, loss: 0.11, params: 400 },
        { strategy: 'measured' as const, compensate: 'bias' as const, loss: 0.13, params: 400 },
        { strategy: 'global' as const, compensate: 'reconstruct' as const, loss: 0.17, params: 400, note: "FLAP's global ranking" },
      ],
    };
    const md = renderMarkdown(sample({ allocation }));
    expect(md).toContain('\nAllocation by measured damage, reconstructed; 2 alternatives tried, see report.json\n');
    expect(md).not.toContain('0.1300');
    // The prune command's terminal keeps the loss it was chosen on.
    expect(allocationLine(allocation)).toBe('Allocation by measured damage, reconstructed: KL divergence from the base 0.1100 on the calibration set; 2 alternatives tried');
  });

  test('left alone: one row per reason, the places that fit and how many more', () => {
    const reason = 'heads not in the structures asked for';
    const skipped = [0, 1, 2, 3].map((i) => ({ where: `/model/layers.${i}/self_attn (q_proj/MatMul, k_proj/MatMul, v_proj/MatMul, o_proj/MatMul)`, reason }));
    const cut = { where: '/a/Gather, /b/Mul, /c/MatMul and 38 more', reason: 'ReduceMean reduces over it' };
    const md = renderMarkdown(sample({ skipped: [...skipped, cut] }));
    expect(md).toContain('<summary>Left alone (5 places)</summary>');
    expect(md).toContain(`| /model/layers.0/self\\_attn (q\\_proj/MatMul, k\\_proj/MatMul, v\\_proj/MatMul, o\\_proj/MatMul) and 3 more | ${reason} |`);
    expect(md).toContain('| /a/Gather, /b/Mul, /c/MatMul and 38 more | ReduceMean reduces over it |');
  });

  test("plain text for the terminal: names as they are, no character references or HTML tags, and no terminal control", () => {
    const r = sample({ skipped: [{ where: '/m/gate_proj (x:y) \u001b[31mred', reason: 'a & b <c>' }] });
    const md = renderMarkdown(r);
    expect(md).toContain('/m/gate\\_proj (x&#58;y)');
    const text = plainText(md);
    expect(text).toContain('| /m/gate_proj (x:y) [31mred | a & b <c> |');
    expect(text).toContain(`| heads | ${HOSTILE} |`);
    expect(text).not.toMatch(/&#\d+;|&(amp|lt|gt|quot);|<\/?(sub|details|summary)>|\\_|\u001b/);
    expect(text).toContain('#### Left alone (1 place)');
  });
});
