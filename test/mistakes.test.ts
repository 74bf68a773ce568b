// The mistakes a user makes, as a table, each run through the CLI's `main`, which
// bin/prune-gate.js runs (in this process, for speed; a handful also go through bin/prune-gate.js
// itself at the end): config typos, wrong units, missing paths, paths that are folders or files,
// a model and a calibration set that do not match, two models that do not match, bad flags and
// values, malformed YAML and JSON, an empty config. Every one exits 2 with exactly one line on
// stderr, naming the file, field or flag, and no stack; none gets as far as a search (tiny
// fixtures, latency pinned to one run where anything runs). Then the other side: a bug planted
// where a catch-all once turned every error into a mistake exits 3 with its stack.
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { execFile } from 'child_process';
import * as runtime from '../src/onnx/runtime';
import * as apply from '../src/prune/apply';
import * as trace from '../src/graph/trace';
import * as metrics from '../src/eval/metrics';
import { runMain } from './helpers/in-process';
import { CliResult, bundleInto } from './helpers/run-cli';

const ROOT = path.resolve(__dirname, '..');
const MLP = path.join(ROOT, 'test/fixtures/mlp.onnx');
const GPT2 = path.join(ROOT, 'test/fixtures/gpt2.onnx');
const CNN = path.join(ROOT, 'test/fixtures/cnn.onnx');
const MLP_SET = path.join(ROOT, 'calibration/mlp');
const GPT2_SET = path.join(ROOT, 'calibration/gpt2');

let tmp: string;
beforeAll(() => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'prune-gate-mistakes-'));
  fs.writeFileSync(path.join(tmp, 'a-file'), 'not a folder\n');
  fs.mkdirSync(path.join(tmp, 'a-folder.onnx'));
  fs.writeFileSync(path.join(tmp, 'notes.onnx'), 'name,accuracy\nresnet,0.76\n');
});
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

/** A config file in the scratch folder, its model and calibration absolute unless the text sets them. */
function config(name: string, text: string, base = `model: ${MLP}\ncalibration: ${MLP_SET}\nlatency: { warmup: 0, runs: 1 }\n`): string {
  const file = path.join(tmp, name);
  fs.writeFileSync(file, `${base}${text}`);
  return file;
}

/** A calibration folder in the scratch folder: calibration.json as given, beside the mlp set's .npy files. */
function calibration(name: string, json: string, files: string[] = ['features.npy', 'labels.npy']): string {
  const dir = path.join(tmp, name);
  fs.mkdirSync(dir);
  for (const f of files) fs.copyFileSync(path.join(MLP_SET, f), path.join(dir, f));
  fs.writeFileSync(path.join(dir, 'calibration.json'), json);
  return dir;
}

/** `run` with this config file, writing into the scratch folder. */
const gate = (file: string) => ['run', '--config', file, '--out', path.join(tmp, 'out')];
/** An .npy file (version 1.0, C order) of float32 values or int64 ones. */
function npy(file: string, dtype: '<f4' | '<i8', shape: number[]): string {
  const count = shape.reduce((a, b) => a * b, 1);
  let header = `{'descr': '${dtype}', 'fortran_order': False, 'shape': (${shape.join(', ')}${shape.length === 1 ? ',' : ''}), }`;
  header += ' '.repeat(64 - ((10 + header.length + 1) % 64)) + '\n';
  const data = dtype === '<f4' ? Buffer.from(new Float32Array(count).fill(0.5).buffer) : Buffer.from(new BigInt64Array(count).buffer);
  const prefix = Buffer.alloc(10);
  Buffer.from([0x93, ...Buffer.from('NUMPY'), 1, 0]).copy(prefix);
  prefix.writeUInt16LE(header.length, 8);
  fs.writeFileSync(file, Buffer.concat([prefix, Buffer.from(header, 'latin1'), data]));
  return file;
}

/** `run` on the mlp fixture (a config of its own: not the working folder's prune-gate.yml), then `extra`. */
const run = (extra: string[]) => ['run', '--config', config('mlp.yml', ''), '--out', path.join(tmp, 'out'), ...extra];

type Case = [string, () => string[], RegExp];

const CASES: Case[] = [
  // The config file: typos, wrong types and units.
  ['a typo in a config key', () => gate(config('typo.yml', 'prune: { targt: 0.3 }\n')), /typo\.yml: prune\.targt: unknown key \(did you mean target\?\)/],
  ['a typo in a top-level key', () => gate(config('top.yml', 'quantise: int8\n')), /top\.yml: quantise: unknown key/],
  ['a metric name misspelt', () => gate(config('metric.yml', 'gate: { acuracy: { max-drop: 0.01 } }\n')), /metric\.yml: gate\.acuracy/],
  ['a bound the metric does not take', () => gate(config('bound.yml', 'gate: { accuracy: { min-speedup: 2 } }\n')), /bound\.yml: gate\.accuracy/],
  ['a ratio given as a size', () => gate(config('ratio.yml', 'gate: { size: { max-ratio: 2 MiB } }\n')), /ratio\.yml: gate\.size/],
  ['a size in a unit that does not exist', () => gate(config('mb.yml', 'gate: { memory: { max: 512 MB/s } }\n')), /mb\.yml: gate\.memory/],
  ['a time without a unit', () => gate(config('time.yml', '', `model: ${MLP}\ncalibration: ${MLP_SET}\nlatency: { time: 10 minutes }\n`)), /time\.yml: latency\.time/],
  ['a budget in words', () => gate(config('budget.yml', 'budget: ten minutes\n')), /budget\.yml: budget/],
  ['a target above 1', () => gate(config('target.yml', 'prune: { target: 1.5 }\n')), /target\.yml: prune\.target/],
  ['a target in percent above 100', () => gate(config('pct.yml', 'prune: { target: 130% }\n')), /pct\.yml: prune\.target/],
  ['zero steps', () => gate(config('steps.yml', 'prune: { steps: 0 }\n')), /steps\.yml: prune\.steps/],
  ['a structure that does not exist', () => gate(config('structures.yml', 'prune: { structures: [ffn, neurons] }\n')), /structures\.yml: prune\.structures/],
  ['a quantize mode that does not exist', () => gate(config('quant.yml', 'quantize: int3\n')), /quant\.yml: quantize/],
  ['an external-data mode that does not exist', () => gate(config('ext.yml', 'external-data: sometimes\n')), /ext\.yml: external-data/],
  ['zero threads', () => gate(config('threads.yml', 'device: { threads: 0 }\n')), /threads\.yml: device\.threads/],
  ['a gate that is a list', () => gate(config('list.yml', 'gate: [accuracy]\n')), /list\.yml: gate/],
  // Config files that are not YAML, are empty, or are not there.
  ['malformed YAML', () => gate(config('broken.yml', 'prune: [target: 0.3\n')), /broken\.yml/],
  ['malformed JSON', () => gate(config('broken.json', '', '{"model": "m.onnx", "prune": {"target": 0.3,}')), /broken\.json/],
  ['an empty config', () => gate(config('empty.yml', '', '')), /empty\.yml/],
  ['a config that is a list', () => gate(config('seq.yml', '', '- model: m.onnx\n')), /seq\.yml/],
  ['a config that does not exist', () => gate(path.join(tmp, 'no-such.yml')), /no-such\.yml/],
  ['a config that is a folder', () => gate(tmp), /config file .*prune-gate-mistakes-\w+ is a folder: name the \.yml file in it/],
  // Paths: missing, folders, files.
  ["a config's model that does not exist", () => gate(config('nomodel.yml', '', `model: missing.onnx\ncalibration: ${MLP_SET}\n`)), /nomodel\.yml: model: .*missing\.onnx/],
  ["a config's calibration that does not exist", () => gate(config('nocal.yml', '', `model: ${MLP}\ncalibration: no-set\n`)), /nocal\.yml: calibration: .*no-set/],
  ['a model that is a folder', () => run(['--model', path.join(tmp, 'a-folder.onnx')]), /a-folder\.onnx/],
  ['a model that is not ONNX', () => ['inspect', '--model', path.join(tmp, 'notes.onnx')], /notes\.onnx is not an ONNX model/],
  ['a calibration set that is a file', () => run(['--calibration', path.join(tmp, 'a-file')]), /a-file: expected an object with "task" and "inputs"/],
  ['--out naming an existing file', () => run(['--out', path.join(tmp, 'a-file')]), /--out: .*a-file is a file, not a folder/],
  ['--out inside a file', () => run(['--out', path.join(tmp, 'a-file', 'out')]), /--out: .*a-file\/out cannot be made: .*a-file is a file/],
  ['eval --out naming an existing file', () => ['eval', '--base', MLP, '--candidate', MLP, '--calibration', MLP_SET, '--out', path.join(tmp, 'a-file')], /--out: .*a-file is a file/],
  ['prune --out naming a folder', () => ['prune', '--model', MLP, '--out', tmp, '--target', '0.2'], /--out: .* is a folder; name the file to write/],
  ['prune --report inside a file', () => ['prune', '--model', MLP, '--out', path.join(tmp, 'p.onnx'), '--report', path.join(tmp, 'a-file', 'r.json')], /--report: .*a-file is a file/],
  // Calibration sets that are broken or do not fit the model.
  ['calibration.json that is not JSON', () => run(['--calibration', calibration('badjson', '{"task": "classification",')]), /badjson.*calibration\.json/],
  ['an empty calibration.json', () => run(['--calibration', calibration('emptyjson', '')]), /emptyjson.*calibration\.json/],
  ['a task that does not exist', () => run(['--calibration', calibration('task', '{"task": "regression", "inputs": {"features": "features.npy"}}')]), /task/],
  ['a .npy file that is not there', () => run(['--calibration', calibration('nonpy', '{"task": "generic", "inputs": {"features": "feature.npy"}}')]), /feature\.npy/],
  ['a classification set without labels', () => run(['--calibration', calibration('nolabels', '{"task": "classification", "inputs": {"features": "features.npy"}}')]), /labels/],
  ['a calibration folder without calibration.json', () => run(['--calibration', path.join(tmp, 'a-folder.onnx')]), /a-folder\.onnx/],
  ['float data for token ids', () => {
    const dir = calibration('floats', '{"task": "language-model", "inputs": {"input_ids": "ids.npy"}}', []);
    npy(path.join(dir, 'ids.npy'), '<f4', [4, 8]);
    return ['run', '--model', GPT2, '--calibration', dir, '--out', path.join(tmp, 'out')];
  }, /floats.*input_ids.*ids\.npy.*float32/],
  ['labels for fewer samples than the inputs', () => {
    const dir = calibration('fewlabels', '{"task": "classification", "inputs": {"features": "features.npy"}, "labels": "few.npy"}', ['features.npy']);
    npy(path.join(dir, 'few.npy'), '<i8', [3]);
    return run(['--calibration', dir]);
  }, /fewlabels.*labels/],
  ['a model and a calibration set that do not match (language model, tabular data)', () => ['run', '--model', GPT2, '--calibration', MLP_SET, '--out', path.join(tmp, 'out')], /input_ids|features/],
  ['a model and a calibration set that do not match (CNN, token ids)', () => ['run', '--model', CNN, '--calibration', GPT2_SET, '--out', path.join(tmp, 'out')], /pixels|input_ids|input/],
  ['an accuracy bound on a language model', () => ['eval', '--base', GPT2, '--candidate', GPT2, '--calibration', GPT2_SET, '--config', config('lm.yml', 'gate: { accuracy: { max-drop: 0.01 } }\n', '')], /lm\.yml.*accuracy/],
  // Two models that do not match.
  ['eval of two models with different inputs', () => ['eval', '--base', MLP, '--candidate', GPT2, '--calibration', MLP_SET], /--candidate .*gpt2\.onnx: lacks input 'features' and has input 'input_ids'/],
  ['eval with a candidate that does not exist', () => ['eval', '--base', MLP, '--candidate', path.join(tmp, 'pruned.onnx'), '--calibration', MLP_SET], /--candidate: file not found: .*pruned\.onnx/],
  // Flags and their values.
  ['--target above 1', () => run(['--target', '1.5']), /--target/],
  ['--target that is not a number', () => run(['--target', 'half']), /--target/],
  ['--quantize that does not exist', () => run(['--quantize', 'int3']), /--quantize/],
  ['--external-data that does not exist', () => run(['--external-data', 'sometimes']), /--external-data/],
  ['prune --steps 0', () => ['prune', '--model', MLP, '--out', path.join(tmp, 'p.onnx'), '--steps', '0'], /--steps/],
  ['prune --structures with a typo', () => ['prune', '--model', MLP, '--out', path.join(tmp, 'p.onnx'), '--structures', 'ffn,chanels'], /--structures|chanels/],
  ['prune --importance that does not exist', () => ['prune', '--model', MLP, '--out', path.join(tmp, 'p.onnx'), '--importance', 'random'], /--importance/],
  ['plan --jobs 0', () => ['plan', '--model', MLP, '--calibration', MLP_SET, '--jobs', '0'], /--jobs/],
  ['run --job 5/4', () => run(['--job', '5/4']), /--job/],
  ['merge of a folder no job wrote', () => ['merge', path.join(tmp, 'a-folder.onnx'), '--model', MLP, '--calibration', MLP_SET, '--out', path.join(tmp, 'merged')], /a-folder\.onnx.*partial/],
  ['target 0 without quantize', () => run(['--target', '0']), /mlp\.yml: target 0 prunes nothing/],
  ["a config's model that is not a path", () => gate(config('num.yml', '', `model: 3\ncalibration: ${MLP_SET}\n`)), /num\.yml: model/],
  ['merge without folders', () => ['merge', '--model', MLP, '--calibration', MLP_SET, '--out', path.join(tmp, 'merged')], /missing required argument 'dirs'/],
  ['an unknown option', () => run(['--targe', '0.3']), /unknown option '--targe'/],
  ['an unknown command', () => ['prun', '--model', MLP], /unknown command 'prun'/],
  ['a missing required option', () => ['eval', '--base', MLP, '--calibration', MLP_SET], /--candidate/],
];

function expectOneLine(r: CliResult, message: RegExp): void {
  expect({ status: r.status, stderr: r.stderr }).toEqual({ status: 2, stderr: expect.stringMatching(/^prune-gate: [^\n]+\n$/) });
  expect(r.stderr).toMatch(message);
  expect(r.stdout).toBe('');
}

test('at least 40 mistakes, each different', () => {
  expect(CASES.length).toBeGreaterThanOrEqual(40);
  expect(new Set(CASES.map((c) => c[0])).size).toBe(CASES.length);
});

test.each(CASES)('%s: exit 2, one line naming it', async (_name, args, message) => {
  expectOneLine(await runMain(args()), message);
});

describe('through bin/prune-gate.js, as users run it (the sources bundled as for dist/)', () => {
  let bundle = '';
  beforeAll(() => {
    // bin/prune-gate.js requires ../dist/cli.js: beside a copy of it, dist/ is this bundle.
    bundle = bundleInto('mistakes');
    fs.mkdirSync(path.join(bundle, 'bin'));
    fs.copyFileSync(path.join(ROOT, 'bin', 'prune-gate.js'), path.join(bundle, 'bin', 'prune-gate.js'));
    fs.symlinkSync(bundle, path.join(bundle, 'dist'));
  });
  afterAll(() => fs.rmSync(bundle, { recursive: true, force: true }));

  const bin = (args: string[]): Promise<CliResult> =>
    new Promise((resolve) => {
      execFile(process.execPath, [path.join(bundle, 'bin', 'prune-gate.js'), ...args], { cwd: ROOT, encoding: 'utf8' }, (err, stdout, stderr) => {
        resolve({ status: err ? Number((err as { code?: unknown }).code) : 0, stdout, stderr });
      });
    });
  const THROUGH_BIN = ['malformed YAML', '--out naming an existing file', 'eval of two models with different inputs', 'a model and a calibration set that do not match (CNN, token ids)', 'an unknown option'];

  test.each(CASES.filter((c) => THROUGH_BIN.includes(c[0])))('%s', async (_name, args, message) => {
    expectOneLine(await bin(args()), message);
  });
});

describe('a bug is not a mistake: exit 3 with its stack, where a catch-all once made it exit 2', () => {
  afterEach(() => jest.restoreAllMocks());
  const bug = () => {
    throw new TypeError("planted: Cannot read properties of undefined (reading 'dims')");
  };
  /** Exit 3, the message and the stack, which passes through `frame` (the catch-all in question). */
  const expectBug = (r: CliResult, frame: string) => {
    expect(r.status).toBe(3);
    expect(r.stderr).toMatch(/(^|\n)prune-gate: internal error \(a bug in prune-gate, please report it\):\nTypeError: planted: /);
    expect(r.stderr).toMatch(new RegExp(`\\n\\s+at ${frame} \\(.+:\\d+:\\d+\\)`));
  };
  const prune = (out: string) => ['prune', '--model', MLP, '--target', '0.2', '--out', path.join(tmp, out)];

  test("the graph's trace (traceTwice): a TypeError in building its inputs is a bug, not \"onnxruntime does not run it\"", async () => {
    jest.spyOn(runtime, 'dummyFeeds').mockImplementation(bug);
    expectBug(await runMain(prune('bug1.onnx')), 'traceTwice');
  });

  test("the graph's trace (traceTwice): onnxruntime's own refusal at every size is still the user's (exit 2, one line)", async () => {
    jest.spyOn(trace, 'traceModelAt').mockRejectedValue(new runtime.RuntimeFailure(new Error("input 'features' is missing in 'feeds'")));
    expectOneLine(await runMain(prune('refused.onnx')), /mlp\.onnx: onnxruntime does not run it on dummy inputs at any size tried .*: input 'features' is missing in 'feeds'/);
  });

  test('the base model\'s evaluation: a TypeError reading its outputs is a bug, not "the base model fails on this calibration data"', async () => {
    jest.spyOn(metrics, 'outputRows').mockImplementation(bug);
    expectBug(await runMain(['eval', '--base', MLP, '--candidate', MLP, '--calibration', MLP_SET]), 'runOutput');
  });

  test('the allocation: a TypeError while building a candidate is a bug, not a candidate "not measurable"', async () => {
    jest.spyOn(apply, 'applyRemoval').mockImplementation(bug);
    const config = path.join(tmp, 'allocation.yml');
    fs.writeFileSync(config, `model: ${MLP}\ncalibration: ${MLP_SET}\nprune: { target: 0.2, steps: 1 }\nlatency: { warmup: 0, runs: 1 }\n`);
    expectBug(await runMain(['run', '--config', config, '--out', path.join(tmp, 'bug-out')]), 'buildOrNot');
  });
});
