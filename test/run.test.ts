// `prune-gate run` on each fixture with its calibration set writes both
// reports and the pruned model and exits with the right status; a too strict bound fails naming
// the metric; target auto picks a ratio that passes. `eval` compares (exit 0) or gates. Run
// in-process through the CLI's main() (the bundled CLI is covered by the foundation's tests).
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { runMain as cli } from './helpers/in-process';
import { UserError } from '../src/errors';
import { countParams } from '../src/graph/cost';
import { OnnxModel } from '../src/onnx/model';
import { writeModel } from '../src/onnx/write';
import { pruneModel } from '../src/prune';
import { ReportSchema } from '../src/report/schema';
import { allocationLine, plainText } from '../src/report/markdown';

const ROOT = path.resolve(__dirname, '..');
const FIXTURES = ['mlp', 'cnn', 'gpt2', 'llama', 'bert'];

let tmp: string;
beforeAll(() => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'prune-gate-run-'));
});
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));


function config(name: string, body: string): string {
  const file = path.join(tmp, `${name}.yml`);
  fs.writeFileSync(
    file,
    `model: ${path.join(ROOT, 'test/fixtures', `${name}.onnx`)}\ncalibration: ${path.join(ROOT, 'calibration', name)}\nlatency: { warmup: 0, runs: 1 }\n${body}`,
  );
  return file;
}

function readJson(file: string) {
  return JSON.parse(fs.readFileSync(file, 'utf8'));
}

describe.each(FIXTURES)('prune-gate run on the %s fixture', (name) => {
  test('writes pruned.onnx, report.json and report.md and passes a lenient gate', async () => {
    const out = path.join(tmp, `out-${name}`);
    const file = config(name, 'prune:\n  target: 0.2\n  steps: 1\n  importance: magnitude\ngate:\n  agreement: { min: 0 }\n  params: { max-ratio: 0.95 }\n');
    const r = await cli(['run', '--config', file, '--out', out]);
    expect(r.stderr).toMatch(/step 1 of 1: evaluating/);
    expect(r.status).toBe(0);
    const report = readJson(path.join(out, 'report.json'));
    expect(ReportSchema.safeParse(report).success).toBe(true);
    expect(report.verdict).toBe('pass');
    expect(report.candidate.params).toBeLessThan(report.base.params);
    expect(countParams(OnnxModel.read(path.join(out, 'pruned.onnx')))).toBe(report.candidate.params);
    // report.md is Markdown for GitHub; the terminal gets the same report as plain text.
    expect(plainText(fs.readFileSync(path.join(out, 'report.md'), 'utf8'))).toBe(r.stdout);
    expect(r.stdout).not.toMatch(/&#\d+;|<\/?sub>/);
    expect(r.stdout).toMatch(/^### ✅ Kept [\d.]+% \(the target\): within every bound\.\n\nprune-gate passed/);
    // How the removals were allocated, and that magnitude importance measured nothing: said in both reports.
    expect(report.allocation.measure).toMatch(/magnitude importance reads no activations/);
    expect(r.stdout).toMatch(/^Allocation by (a global ranking|the same share in every layer|FFN widths only|measured damage), (not compensated|bias-compensated|reconstructed)/m);
    expect(r.stdout).toContain(allocationLine(report.allocation, true));
    expect(fs.readdirSync(out).sort()).toEqual(['pruned.onnx', 'report.json', 'report.md']); // no step leftovers
  });
});

test('a bound that is too strict fails (exit 1), naming the metric', async () => {
  const out = path.join(tmp, 'strict');
  const file = config('mlp', 'prune:\n  target: 0.3\n  steps: 2\n  importance: magnitude\ngate:\n  agreement: { min: 0.9999 }\n');
  const r = await cli(['run', '--config', file, '--out', out, '--json']);
  expect(r.status).toBe(1);
  expect(r.stderr).toMatch(/gate failed: agreement \(min 0\.9999\)/);
  const report = JSON.parse(r.stdout);
  expect(report.verdict).toBe('fail');
  expect(report.metrics.find((m: { name: string }) => m.name === 'agreement')).toMatchObject({ bound: 0.9999, pass: false });
  expect(report.steps).toHaveLength(2); // a fixed target evaluates every step
  expect(fs.existsSync(path.join(out, 'pruned.onnx'))).toBe(true);
});

test('target auto picks the largest ratio that passes; the step that broke the bound is reported', async () => {
  const out = path.join(tmp, 'auto');
  const file = config('mlp', 'prune:\n  target: auto\n  max-target: 0.6\n  steps: 3\n  importance: magnitude\ngate:\n  cosine: { min: 0.5 }\n');
  const r = await cli(['run', '--config', file, '--out', out, '--json']);
  const report = JSON.parse(r.stdout);
  const cosines = report.steps.map((s: { metrics: { name: string; candidate: number }[] }) => s.metrics.find((m) => m.name === 'cosine')?.candidate);
  // Whatever the engine achieves, the choice must follow the rule: the largest passing step, and
  // the search stops at the first step under the bound.
  const firstFail = cosines.findIndex((c: number) => c < 0.5);
  expect(report.steps).toHaveLength(firstFail === -1 ? 3 : firstFail + 1);
  if (firstFail === 0) {
    expect(report).toMatchObject({ verdict: 'fail', chosen_step: 0 });
    expect(r.status).toBe(1);
  } else {
    const chosen = firstFail === -1 ? 2 : firstFail - 1;
    expect(report).toMatchObject({ verdict: 'pass', chosen_step: chosen });
    expect(r.status).toBe(0);
    expect(report.candidate.params).toBeLessThan(report.base.params);
  }
});

test('the default search lists each step\'s passes (at most 4); the first step\'s statistics ride along the base model\'s evaluation', async () => {
  const out = path.join(tmp, 'passes');
  const r = await cli(['run', '--config', config('gpt2', 'prune:\n  target: 0.3\n  steps: 3\ngate:\n  agreement: { min: 0 }\n'), '--out', out, '--json']);
  expect(r.status).toBe(0);
  const report = JSON.parse(r.stdout);
  const passes: string[][] = report.steps.map((s: { passes: { what: string }[] }) => s.passes.map((p) => p.what));
  expect(passes).toHaveLength(3);
  for (const step of passes) expect(step.length).toBeLessThanOrEqual(4);
  // The base model's evaluation collected step 1's statistics, and each kept candidate's
  // confirmation the next step's: the only statistics pass is after a runner-up was kept.
  expect(passes[0]).not.toContain('statistics');
  expect(r.stderr).toMatch(/step 1 of 3: pruning[^\n]*\n[^\n]*analyzing the graph\n[^\n]*activation statistics: collected by an earlier pass over this model/);
  for (const step of passes) expect(step).toContain('confirmation'); // the step's evaluation is its candidate's confirmation
  expect(report.budget).toMatchObject({ seconds: 600, left_out: [] });
});

test('a budget too small for the search leaves passes out, says which and where, and still ends with a verdict', async () => {
  const out = path.join(tmp, 'budget');
  const r = await cli(['run', '--config', config('gpt2', 'prune:\n  target: 0.3\n  steps: 3\ngate:\n  agreement: { min: 0 }\n'), '--budget', '1s', '--out', out, '--json']);
  expect(r.status).toBe(0);
  const report = JSON.parse(r.stdout);
  expect(report.budget.seconds).toBe(1);
  expect(report.budget.spent).toBeGreaterThan(1);
  // The statistics of steps 2 and 3 came whole with the confirmations before them: the budget
  // left out the race and the probe only (the probe of step 3: step 2 had none due).
  expect(report.budget.left_out).toEqual([
    'the confirmation of a second candidate at steps 2, 3',
    "the sensitivity probe (each group's last measured sensitivity reused) at step 3",
  ]);
  const later = report.steps.slice(1).map((s: { passes: { what: string }[] }) => s.passes.map((p) => p.what));
  for (const step of later) expect(step).not.toContain('probe');
  expect(r.stdout).toBe(JSON.stringify(report, null, 2) + '\n');
});

test('external-data: the config key and --external-data choose where pruned.onnx keeps its weights', async () => {
  const body = 'prune:\n  target: 0.2\n  steps: 1\n  importance: magnitude\ngate:\n  agreement: { min: 0 }\n';
  const out = path.join(tmp, 'out-external');
  const r = await cli(['run', '--config', config('mlp', `external-data: always\n${body}`), '--out', out]);
  expect(r.status).toBe(0);
  expect(fs.readdirSync(out).sort()).toEqual(['pruned.onnx', 'pruned.onnx.data', 'report.json', 'report.md']);
  expect(readJson(path.join(out, 'report.json')).candidate.bytes).toBe(OnnxModel.read(path.join(out, 'pruned.onnx')).bytesOnDisk());
  // The flag overrides the key, and a stale data file of the earlier run is not left beside it.
  const again = await cli(['run', '--config', config('mlp', `external-data: always\n${body}`), '--external-data', 'never', '--out', out]);
  expect(again.status).toBe(0);
  expect(fs.readdirSync(out).sort()).toEqual(['pruned.onnx', 'report.json', 'report.md']);
  const bad = await cli(['run', '--config', config('mlp', body), '--external-data', 'inline', '--out', out]);
  expect(bad.status).toBe(2);
  expect(bad.stderr).toBe("prune-gate: --external-data: expected auto, always, never, found 'inline'\n");
});

test('device threads: every onnxruntime session of the run gets them, and the report says what it was measured on', async () => {
  const ort = jest.requireActual<typeof import('onnxruntime-node')>('onnxruntime-node');
  const create = jest.spyOn(ort.InferenceSession, 'create');
  const out = path.join(tmp, 'out-device');
  try {
    const body = 'device: { threads: 1 }\nprune:\n  target: 0.2\n  steps: 1\ngate:\n  agreement: { min: 0 }\n';
    const r = await cli(['run', '--config', config('mlp', body), '--out', out]);
    expect(r.status).toBe(0);
    // Tracing, statistics, the allocation search's candidates, evaluation and latency runs alike.
    expect(create.mock.calls.length).toBeGreaterThan(5);
    for (const call of create.mock.calls) expect(call[call.length - 1]).toMatchObject({ intraOpNumThreads: 1 });
    const report = readJson(path.join(out, 'report.json'));
    expect(report.environment).toMatchObject({ cores: os.cpus().length, threads: 1, onnxruntime: '1.30.0' });
    expect(r.stdout).toContain(`onnxruntime on 1 of ${os.cpus().length} cores; onnxruntime 1.30.0, prune-gate `);
    // Without the key, every core.
    create.mockClear();
    const all = await cli(['run', '--config', config('mlp', body.replace('device: { threads: 1 }\n', '')), '--out', out]);
    expect(all.status).toBe(0);
    for (const call of create.mock.calls) expect((call[call.length - 1] as { intraOpNumThreads?: number }).intraOpNumThreads).toBeUndefined();
    expect(readJson(path.join(out, 'report.json')).environment.threads).toBe(os.cpus().length);
  } finally {
    create.mockRestore();
  }
});

test('memory: each model\'s own peak RSS, net of the same process without a model, bounded in MiB or GiB; an efficiency bound that fails the gate but not the search', async () => {
  const out = path.join(tmp, 'out-memory');
  type Row = { name: string; base: number; candidate: number; bound: number; rule: string; pass: boolean };
  const memoryOf = (report: { metrics: Row[] }) => report.metrics.find((m) => m.name === 'memory')!;
  const tight = await cli(['run', '--config', config('cnn', 'device: { threads: 1 }\nprune:\n  target: 0.2\n  steps: 2\n  importance: magnitude\ngate:\n  memory: { max: 0.5 MiB }\n'), '--out', out]);
  expect(tight.status).toBe(1);
  expect(tight.stderr).toContain('measuring memory: fresh processes load each model and run one batch, and the same process without a model');
  expect(tight.stderr).toContain('gate failed: memory (max 0.5 MiB)');
  const report = readJson(path.join(out, 'report.json'));
  // The CNN's own memory (its weights, graph and activations: over a MiB) breaks 0.5 MiB; the
  // search still went to the last step.
  expect(memoryOf(report)).toMatchObject({ bound: 0.5, rule: 'max 0.5 MiB', pass: false });
  expect(report.steps.length).toBe(2);
  expect(tight.stdout).toMatch(/\| memory \| [\d.]+ MiB \| [\d.]+ MiB \|/);
  expect(tight.stdout).toContain("\nmemory: each model's own peak RSS, net of the ");
  // max-ratio: relative to the base's own memory, net of the process without a model, which
  // report.json gives with both peaks.
  const ratio = await cli(['run', '--config', config('cnn', 'prune:\n  target: 0.2\n  steps: 1\n  importance: magnitude\ngate:\n  memory: { max-ratio: 1.5 }\n'), '--out', out]);
  expect(ratio.status).toBe(0);
  const r = readJson(path.join(out, 'report.json'));
  const m = memoryOf(r);
  expect(m).toMatchObject({ rule: 'max-ratio 1.5', pass: true });
  expect(m.base).toBeCloseTo(r.memory.base_peak_mib - r.memory.runtime_mib, 9);
  expect(m.candidate).toBeCloseTo(r.memory.candidate_peak_mib - r.memory.runtime_mib, 9);
  expect(m.bound).toBeCloseTo(m.base * 1.5, 9);
  expect(m.base).toBeGreaterThan(r.memory.spread_mib);
  expect(m.base).toBeLessThan(r.memory.runtime_mib / 4);
});

test('bad input exits 2 with one line', async () => {
  const file = config('mlp', 'prune:\n  targt: 0.3\n');
  const r = await cli(['run', '--config', file, '--out', path.join(tmp, 'bad')]);
  expect(r.status).toBe(2);
  expect(r.stderr).toMatch(/^prune-gate: [^\n]*mlp\.yml: prune\.targt: unknown key \(did you mean target\?\)\n$/);
  const bound = config('mlp', 'gate:\n  perplexity: { max: 10 }\n');
  const r2 = await cli(['run', '--config', bound, '--out', path.join(tmp, 'bad')]);
  expect(r2.status).toBe(2);
  expect(r2.stderr).toMatch(/gate\.perplexity: the calibration task is classification, which has no perplexity/);
  const q = await cli(['run', '--config', config('mlp', ''), '--quantize', 'int3', '--out', path.join(tmp, 'bad')]);
  expect(q.status).toBe(2);
  expect(q.stderr).toMatch(/^prune-gate: --quantize: expected none, int8, int4, found 'int3'\n$/);
});

test('quantize: the gate judges the quantized candidate', async () => {
  const out = path.join(tmp, 'quantized');
  const r = await cli(['run', '--config', config('gpt2', 'prune:\n  steps: 1\ngate:\n  agreement: { min: 0.5 }\n'), '--target', '0.3', '--quantize', 'int4', '--out', out, '--json']);
  expect(r.stderr).not.toMatch(/internal error/);
  const report = JSON.parse(r.stdout);
  expect(report.quantize).toBe('int4');
  // 30 % pruned and 4-bit weights: the file is several times smaller, and it still runs.
  expect(report.base.bytes / report.candidate.bytes).toBeGreaterThan(3);
  expect(report.candidate.params).toBeLessThan(report.base.params * 0.72);
  expect(fs.readFileSync(path.join(out, 'pruned.onnx')).length).toBe(report.candidate.bytes);
  expect(r.status).toBe(report.verdict === 'pass' ? 0 : 1);
  // The shipped file has short intermediate names; its inputs, outputs and weights keep theirs.
  const base = OnnxModel.read(path.join(ROOT, 'test/fixtures/gpt2.onnx'));
  const shipped = OnnxModel.read(path.join(out, 'pruned.onnx'));
  expect(shipped.graph.input.map((v) => v.name)).toEqual(base.graph.input.map((v) => v.name));
  expect(shipped.graph.output.map((v) => v.name)).toEqual(base.graph.output.map((v) => v.name));
  expect(shipped.graph.node.some((n) => (n.output ?? []).some((o) => o.startsWith('/')))).toBe(false);
  expect(shipped.initializers.map((t) => t.name)).toEqual(expect.arrayContaining(['transformer.h.0.ln_1.weight']));
  expect(r.stderr).toMatch(/shortened \d+ intermediate names: \d+ bytes fewer/);
  // The report says what quantization did: weight bytes before and after, the names' bytes.
  expect(report.quantization.layers).toBeGreaterThan(5);
  expect(report.quantization.weight_bytes_after).toBeLessThan(report.quantization.weight_bytes_before / 3);
  expect(report.quantization.names_bytes_saved).toBeGreaterThan(10_000);
  const md = fs.readFileSync(path.join(out, 'report.md'), 'utf8');
  // The why line and the headline give the share counted in the written model, the target beside it where they differ.
  const counted = `${Number((((report.base.params - report.candidate.params) / report.base.params) * 100).toFixed(1))}%`;
  expect(md.split('\n')[0]).toBe(`### ✅ Kept ${counted} (the target): within every bound.`);
  expect(md.split('\n')[2]).toMatch(new RegExp(`pruned ${counted.replace('.', '\\.')}( \\(target 30%\\))? of the parameters and quantized to int4`));
  expect(md).toContain('#### Quantization (int4)');
  // The default method (auto) is named, with its calibration error against round-to-nearest's,
  // and the quantizer's passes are listed with the step's.
  expect(report.quantization.method).toMatchObject({ asked: 'auto', used: expect.any(String), layers: expect.any(Number) });
  expect(report.quantization.method.calibration_error).toBeLessThanOrEqual(report.quantization.method.rtn_calibration_error);
  expect(md).toMatch(/Codes chosen by .+ \(quantize-method auto\): mean relative output error on the calibration data [\d.]+, against [\d.]+ rounded to nearest\./);
  const passes = report.steps[report.steps.length - 1].passes.filter((p: { what: string }) => p.what === 'quantization');
  // The Hessians, both methods' output errors, and (when a layer stands out) its errors at 8 bits.
  expect(passes.length).toBeGreaterThanOrEqual(2);
  expect(passes.map((p: { why: string }) => p.why)).toEqual([expect.stringMatching(/^GPTQ's Hessians/), ...passes.slice(1).map(() => expect.stringMatching(/output errors/))]);
  expect(passes.every((p: { samples: number }) => p.samples > 0)).toBe(true);

  const kept = path.join(tmp, 'quantized-names-kept');
  const k = await cli(['run', '--config', config('gpt2', 'prune:\n  steps: 1\n'), '--target', '0.3', '--quantize', 'int4', '--keep-names', '--out', kept, '--json']);
  expect(k.status).toBe(0);
  const keptModel = OnnxModel.read(path.join(kept, 'pruned.onnx'));
  expect(keptModel.graph.node.some((n) => (n.output ?? []).some((o) => o.startsWith('/')))).toBe(true);
  expect(JSON.parse(k.stdout).candidate.bytes).toBeGreaterThan(report.candidate.bytes);
  expect(JSON.parse(k.stdout).quantization.names_bytes_saved).toBe(0);
});

test('target 0 with quantize: the gate judges the quantized base; without quantize there is nothing to gate', async () => {
  const out = path.join(tmp, 'quantize-only');
  const r = await cli(['run', '--config', config('gpt2', 'gate:\n  perplexity: { max-increase: 2% }\n'), '--target', '0', '--quantize', 'int8', '--out', out]);
  expect(r.stderr).not.toMatch(/internal error/);
  expect(r.status).toBe(0);
  expect(r.stdout.split('\n')[0]).toBe('### ✅ Kept the int8 model, nothing pruned: within every bound.');
  expect(r.stdout.split('\n')[2]).toMatch(/^prune-gate passed: \*\*[^*]*gpt2\.onnx\*\* quantized to int8, nothing pruned$/);
  const report = JSON.parse(fs.readFileSync(path.join(out, 'report.json'), 'utf8'));
  expect(report.steps).toHaveLength(1);
  expect(report.pruned).toEqual([]);
  expect(report.candidate.params).toBe(report.base.params);
  expect(report.base.bytes / report.candidate.bytes).toBeGreaterThan(3);

  const none = await cli(['run', '--config', config('gpt2', ''), '--target', '0', '--out', path.join(tmp, 'nothing')]);
  expect(none.status).toBe(2);
  expect(none.stderr).toMatch(/^prune-gate: [^\n]*gpt2\.yml: target 0 prunes nothing and quantize is none, so there is nothing to gate: set quantize to int8 or int4, or a target above 0\n$/);
});

describe('prune-gate eval', () => {
  const base = path.join(ROOT, 'test/fixtures/mlp.onnx');
  const calibration = path.join(ROOT, 'calibration/mlp');

  test('without a config it compares and exits 0; the same model agrees with itself', async () => {
    const r = await cli(['eval', '--base', base, '--candidate', base, '--calibration', calibration, '--json']);
    expect(r.status).toBe(0);
    const report = JSON.parse(r.stdout);
    expect(ReportSchema.safeParse(report).success).toBe(true);
    const get = (n: string) => report.metrics.find((m: { name: string }) => m.name === n);
    expect(get('agreement').candidate).toBe(1);
    expect(get('kl-divergence').candidate).toBeLessThan(1e-9);
    expect(get('accuracy').candidate).toBe(get('accuracy').base);
    expect(report.target).toBeNull();
  });

  test('with a config it gates like run', async () => {
    const pruned = path.join(tmp, 'eval-candidate.onnx');
    const result = await pruneModel(OnnxModel.read(base), { target: 0.3, structures: ['ffn'], importance: 'magnitude', compensate: 'none' });
    writeModel(result.model, pruned);
    const strict = path.join(tmp, 'strict-eval.yml');
    fs.writeFileSync(strict, 'gate:\n  agreement: { min: 1 }\n  params: { max-ratio: 0.99 }\nlatency: { warmup: 0, runs: 1 }\n');
    const r = await cli(['eval', '--base', base, '--candidate', pruned, '--calibration', calibration, '--config', strict]);
    expect(r.stdout).toMatch(/^### ❌ prune-gate failed: \*\*[^*]*mlp\.onnx\*\* compared with .*eval-candidate\.onnx — over the bound: agreement \(min 1\)/);
    expect(r.status).toBe(1);
  });
});

test('runGate with an injected engine and quantize hook: the hook sees every step; an engine that removed nothing fails the gate with one line, writing nothing', async () => {
  const { runGate } = await import('../src/pipeline/run');
  const { resolveConfig } = await import('../src/config/config');
  const file = config('mlp', 'prune:\n  target: 0.3\n  steps: 3\nquantize: int8\ngate:\n  agreement: { min: 1 }\n  kl-divergence: { max: 0 }\n');
  const targets: number[] = [];
  const modes: string[] = [];
  const out = path.join(tmp, 'injected');
  const outcome = runGate({
    config: resolveConfig(file, {}, (k) => `--${k}`),
    out,
    prune: async (model, options) => {
      targets.push(options.target);
      expect(options.calibration).toBeDefined(); // the engine gets the calibration batches
      const n = countParams(model);
      return { model, pruned: [], skipped: [], paramsBefore: n, paramsAfter: n, short: 'nothing more to remove: every prunable group is down to one unit' };
    },
    quantize: async (model, mode) => {
      modes.push(mode);
      return { model };
    },
  });
  // An unchanged model would agree with itself and pass every bound: it must not.
  await expect(outcome).rejects.toThrow(new UserError('nothing was removed: step 3 (target 30 %) removed no parameters: nothing more to remove: every prunable group is down to one unit'));
  expect(modes).toEqual(['int8', 'int8', 'int8']);
  // Nothing was removed, so each step asks again for the whole cumulative ratio of the original.
  expect(targets.map((t) => Number(t.toFixed(6)))).toEqual([0.1, 0.2, 0.3]);
  expect(fs.existsSync(path.join(out, 'pruned.onnx'))).toBe(false);
  expect(fs.existsSync(path.join(out, 'report.json'))).toBe(false);
});
