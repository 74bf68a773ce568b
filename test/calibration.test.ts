// Calibration sets are checked against the model, and every bad input is one
// line naming the file and what to do.
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { batches, calibrationFeeds, loadCalibration } from '../src/eval/calibration';
import { encodeNpy } from '../src/eval/npy';
import { UserError } from '../src/errors';
import { DataType } from '../src/onnx/dtype';
import { OnnxModel } from '../src/onnx/model';
import { Tensor } from '../src/onnx/tensor';
import { FIXTURES_DIR } from './helpers/fixtures';
import { T, model, node, valueInfo } from './helpers/onnx-builders';

// mlp: features float32 [batch, 64] -> logits [batch, 10]; bert: input_ids and attention_mask
// int64 [batch, sequence] -> logits [batch, 3]; gpt2: input_ids int64 -> logits [b, s, 256].
const mlp = OnnxModel.read(path.join(FIXTURES_DIR, 'mlp.onnx'));
const bert = OnnxModel.read(path.join(FIXTURES_DIR, 'bert.onnx'));
const gpt2 = OnnxModel.read(path.join(FIXTURES_DIR, 'gpt2.onnx'));

let tmp: string;
let cwd: string;
beforeAll(() => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'prune-gate-calib-'));
  cwd = process.cwd();
  process.chdir(tmp); // messages show paths relative to the working folder
});
afterAll(() => {
  process.chdir(cwd);
  fs.rmSync(tmp, { recursive: true, force: true });
});

const f32 = (dims: number[], f = (i: number) => Math.sin(i)): Tensor => {
  const n = dims.reduce((a, b) => a * b, 1);
  return { dtype: DataType.FLOAT, dims, data: Float32Array.from({ length: n }, (_, i) => f(i)) };
};
const i64 = (dims: number[], f = (i: number) => i % 7): Tensor => {
  const n = dims.reduce((a, b) => a * b, 1);
  return { dtype: DataType.INT64, dims, data: BigInt64Array.from({ length: n }, (_, i) => BigInt(f(i))) };
};
const i32 = (dims: number[], f = (i: number) => i % 7): Tensor => {
  const n = dims.reduce((a, b) => a * b, 1);
  return { dtype: DataType.INT32, dims, data: Int32Array.from({ length: n }, (_, i) => f(i)) };
};
const f64 = (dims: number[]): Tensor => {
  const n = dims.reduce((a, b) => a * b, 1);
  return { dtype: DataType.DOUBLE, dims, data: Float64Array.from({ length: n }, (_, i) => i / 8) };
};

let counter = 0;
/** A calibration folder with `spec` as calibration.json and the given .npy files. */
function calibDir(spec: unknown, files: Record<string, Tensor> = {}, specName = 'calibration.json'): string {
  const dir = `set-${++counter}`;
  fs.mkdirSync(dir);
  for (const [name, t] of Object.entries(files)) fs.writeFileSync(path.join(dir, name), encodeNpy(t));
  if (spec !== undefined) fs.writeFileSync(path.join(dir, specName), typeof spec === 'string' ? spec : JSON.stringify(spec));
  return dir;
}

function expectError(fn: () => unknown, message: string | RegExp): void {
  let error: unknown;
  try {
    fn();
  } catch (e) {
    error = e;
  }
  expect(error).toBeInstanceOf(UserError);
  const text = (error as Error).message;
  expect(text).not.toContain('\n');
  if (typeof message === 'string') expect(text).toBe(message);
  else expect(text).toMatch(message);
}

const classification = (extra: object = {}) => ({ task: 'classification', inputs: { features: 'x.npy' }, labels: 'y.npy', ...extra });

describe('valid sets', () => {
  test('a classification set loads, batches over axis 0 and feeds the engine', () => {
    const dir = calibDir(classification({ batch_size: 4 }), { 'x.npy': f32([10, 64]), 'y.npy': i64([10], (i) => i % 10) });
    const set = loadCalibration(dir, mlp);
    expect(set).toMatchObject({ task: 'classification', count: 10, batchSize: 4, output: 'logits', source: `${dir}/calibration.json` });
    const list = [...batches(set)];
    expect(list.map((b) => [b.start, b.size])).toEqual([
      [0, 4],
      [4, 4],
      [8, 2],
    ]);
    expect(list[2].feeds.features.dims).toEqual([2, 64]);
    expect((list[2].feeds.features.data as Float32Array)[0]).toBeCloseTo(Math.sin(8 * 64), 5);
    expect(Array.from(list[1].labels as Int32Array)).toEqual([4, 5, 6, 7]);
    expect([...calibrationFeeds(set)()].map((f) => f.features.dims[0])).toEqual([4, 4, 2]);
  });

  test('calibration.yml works too, and batch_size defaults to 16', () => {
    const dir = calibDir('task: generic\ninputs:\n  features: x.npy\n', { 'x.npy': f32([20, 64]) }, 'calibration.yml');
    const set = loadCalibration(dir, mlp);
    expect(set.task).toBe('generic');
    expect(set.batchSize).toBe(16);
    expect([...batches(set)].map((b) => b.size)).toEqual([16, 4]);
  });

  test('float64 data for a float32 input and int32 data for an int64 input are converted', () => {
    const dir = calibDir(
      { task: 'classification', inputs: { input_ids: 'ids.npy', attention_mask: 'mask.npy' }, labels: 'y.npy' },
      { 'ids.npy': i32([3, 5]), 'mask.npy': i32([3, 5], () => 1), 'y.npy': i32([3], () => 2) },
    );
    const set = loadCalibration(dir, bert);
    expect(set.inputs.input_ids.dtype).toBe(DataType.INT64);
    expect(Array.from(set.inputs.input_ids.data as BigInt64Array).slice(0, 8)).toEqual([0n, 1n, 2n, 3n, 4n, 5n, 6n, 0n]);
    const dir2 = calibDir({ task: 'generic', inputs: { features: 'x.npy' } }, { 'x.npy': f64([2, 64]) });
    const set2 = loadCalibration(dir2, mlp);
    expect(set2.inputs.features.dtype).toBe(DataType.FLOAT);
    expect((set2.inputs.features.data as Float32Array)[3]).toBeCloseTo(3 / 8);
  });

  test('a language-model set finds the token input; a missing attention_mask is all ones', () => {
    const dir = calibDir({ task: 'language-model', inputs: { input_ids: 'ids.npy' } }, { 'ids.npy': i64([4, 6]) });
    expect(loadCalibration(dir, gpt2)).toMatchObject({ tokens: 'input_ids', mask: undefined, count: 4 });
    const set = loadCalibration(dir, bert); // bert has input_ids + attention_mask
    expect(set.tokens).toBe('input_ids');
    expect(set.inputs.attention_mask.dims).toEqual([4, 6]);
    expect(Array.from(set.inputs.attention_mask.data as BigInt64Array).every((v) => v === 1n)).toBe(true);
  });

  test('samples.jsonl: one sample a line, dtypes from the model, labels make it classification', () => {
    const dir = calibDir(undefined);
    const row = (k: number) => Array.from({ length: 64 }, (_, i) => (i + k) / 64);
    fs.writeFileSync(
      path.join(dir, 'samples.jsonl'),
      [0, 1, 2].map((k) => JSON.stringify({ inputs: { features: row(k) }, label: k })).join('\n') + '\n\n',
    );
    const set = loadCalibration(dir, mlp);
    expect(set).toMatchObject({ task: 'classification', count: 3, source: `${dir}/samples.jsonl` });
    expect(set.inputs.features.dims).toEqual([3, 64]);
    expect((set.inputs.features.data as Float32Array)[64]).toBeCloseTo(1 / 64);
    expect(Array.from(set.labels as Int32Array)).toEqual([0, 1, 2]);
  });
});

describe('each bad input has a clear one-line message', () => {
  test('a missing calibration folder', () => {
    expectError(() => loadCalibration('nowhere', mlp), 'calibration not found: nowhere (give a folder holding calibration.json or samples.jsonl)');
  });

  test('a folder without calibration.json', () => {
    const dir = calibDir(undefined, { 'x.npy': f32([2, 64]) });
    expectError(() => loadCalibration(dir, mlp), `${dir}: no calibration.json, calibration.yml or samples.jsonl in this folder; add one (see the README, "Calibration data")`);
  });

  test('a missing .npy file names the key and the file', () => {
    const dir = calibDir(classification(), { 'y.npy': i64([2]) });
    expectError(() => loadCalibration(dir, mlp), `${dir}/calibration.json: inputs.features: file not found: ${dir}/x.npy`);
  });

  test('a dtype that does not fit the input names the input, both dtypes and the file', () => {
    const dir = calibDir(classification(), { 'x.npy': i64([2, 64]), 'y.npy': i64([2]) });
    expectError(
      () => loadCalibration(dir, mlp),
      `${dir}/calibration.json: input 'features' (x.npy): dtype int64 does not fit the model's float32 input; save it as float32`,
    );
  });

  test('token ids beyond the vocabulary are named, with their sample, before onnxruntime sees them', () => {
    // gpt2's embedding table has 256 rows; sample 2 holds id 300.
    const dir = calibDir({ task: 'language-model', inputs: { input_ids: 'ids.npy' } }, { 'ids.npy': i64([4, 8], (i) => (i === 19 ? 300 : i % 200)) });
    expectError(
      () => loadCalibration(dir, gpt2),
      new RegExp(`^${dir}/calibration\\.json: inputs\\.input_ids: value 300 \\(sample 2\\) is outside the model's 256 rows of '.*' that .* picks from \\(ids 0 to 255\\)`),
    );
  });

  test('float token ids for an int64 input are refused', () => {
    const dir = calibDir({ task: 'language-model', inputs: { input_ids: 'ids.npy' } }, { 'ids.npy': f32([2, 8]) });
    expectError(() => loadCalibration(dir, gpt2), /input 'input_ids' \(ids\.npy\): dtype float32 does not fit the model's int64 input; save it as int64/);
  });

  test('a shape that does not fit names the expected and the found shape', () => {
    const dir = calibDir(classification(), { 'x.npy': f32([2, 63]), 'y.npy': i64([2]) });
    expectError(
      () => loadCalibration(dir, mlp),
      `${dir}/calibration.json: input 'features' (x.npy): expected shape [N, 64] (axis 0 = samples), found [2, 63]`,
    );
    const dir2 = calibDir(classification(), { 'x.npy': f32([64]), 'y.npy': i64([1]) });
    expectError(() => loadCalibration(dir2, mlp), /expected shape \[N, 64\] \(axis 0 = samples\), found \[64\]/);
  });

  test('inputs whose shared axis differs (sequence)', () => {
    const dir = calibDir(
      { task: 'generic', inputs: { input_ids: 'ids.npy', attention_mask: 'mask.npy' } },
      { 'ids.npy': i64([3, 8]), 'mask.npy': i64([3, 6]) },
    );
    expectError(() => loadCalibration(dir, bert), /input 'attention_mask' \(mask\.npy\) has sequence = 6 \(axis 1\) but input 'input_ids' has sequence = 8; they must match/);
  });

  test('labels whose count differs from the samples', () => {
    const dir = calibDir(classification(), { 'x.npy': f32([5, 64]), 'y.npy': i64([4]) });
    expectError(() => loadCalibration(dir, mlp), `${dir}/calibration.json: labels (y.npy) has 4 labels but the inputs have 5 samples; give one label per sample`);
  });

  test('a classification set without labels', () => {
    const dir = calibDir({ task: 'classification', inputs: { features: 'x.npy' } }, { 'x.npy': f32([5, 64]) });
    expectError(() => loadCalibration(dir, mlp), `${dir}/calibration.json: task classification needs "labels" (an .npy file with one class index per sample)`);
  });

  test('an unknown task', () => {
    const dir = calibDir({ task: 'regression', inputs: { features: 'x.npy' } }, { 'x.npy': f32([5, 64]) });
    expectError(() => loadCalibration(dir, mlp), `${dir}/calibration.json: task: unknown task 'regression' (expected language-model, classification, generic, generation)`);
  });

  test('an unknown key in calibration.json', () => {
    const dir = calibDir({ task: 'generic', inputs: { features: 'x.npy' }, batchsize: 4 }, { 'x.npy': f32([5, 64]) });
    expectError(() => loadCalibration(dir, mlp), `${dir}/calibration.json: batchsize: unknown key (did you mean batch_size?)`);
  });

  test('a batch_size that is not a positive whole number', () => {
    const dir = calibDir({ task: 'generic', inputs: { features: 'x.npy' }, batch_size: 0 }, { 'x.npy': f32([5, 64]) });
    expectError(() => loadCalibration(dir, mlp), /calibration\.json: batch_size: a positive whole number/);
  });

  test('an empty set', () => {
    const dir = calibDir({ task: 'generic', inputs: { features: 'x.npy' } }, { 'x.npy': f32([0, 64]) });
    expectError(() => loadCalibration(dir, mlp), `${dir}/calibration.json: the calibration set is empty (input 'features' (x.npy) has 0 samples on axis 0)`);
    const dir2 = calibDir(undefined);
    fs.writeFileSync(path.join(dir2, 'samples.jsonl'), '\n');
    expectError(() => loadCalibration(dir2, mlp), `${dir2}/samples.jsonl: the calibration set is empty: add one JSON sample a line`);
  });

  test('inputs with different sample counts', () => {
    const dir = calibDir(
      { task: 'generic', inputs: { input_ids: 'ids.npy', attention_mask: 'mask.npy' } },
      { 'ids.npy': i64([4, 8]), 'mask.npy': i64([3, 8]) },
    );
    expectError(
      () => loadCalibration(dir, bert),
      `${dir}/calibration.json: inputs have different sample counts (axis 0): input 'input_ids' (ids.npy) has 4, input 'attention_mask' (mask.npy) has 3`,
    );
  });

  test('an input the model does not have, and a model input without data', () => {
    const dir = calibDir({ task: 'generic', inputs: { pixels: 'x.npy' } }, { 'x.npy': f32([2, 64]) });
    expectError(() => loadCalibration(dir, mlp), `${dir}/calibration.json: inputs.pixels: the model has no input 'pixels' (its inputs: features)`);
    const dir2 = calibDir({ task: 'generic', inputs: { attention_mask: 'm.npy' } }, { 'm.npy': i64([2, 8]) });
    expectError(() => loadCalibration(dir2, bert), `${dir2}/calibration.json: inputs: no data for the model input 'input_ids'; add "input_ids": "<file>.npy" to inputs`);
  });

  test('an output the model does not have', () => {
    const dir = calibDir({ task: 'generic', inputs: { features: 'x.npy' }, output: 'probs' }, { 'x.npy': f32([2, 64]) });
    expectError(() => loadCalibration(dir, mlp), `${dir}/calibration.json: output: the model has no output 'probs' (its outputs: logits)`);
  });

  test('a language model without a single integer input must name "tokens"', () => {
    const twoIds = OnnxModel.fromProto(
      model({
        nodes: [node('Add', ['a', 'b'], ['c'])],
        inputs: [valueInfo('a', T.INT64, ['batch', 'seq']), valueInfo('b', T.INT64, ['batch', 'seq'])],
        outputs: [valueInfo('c', T.INT64, ['batch', 'seq'])],
      }),
    );
    const dir = calibDir({ task: 'language-model', inputs: { a: 'a.npy', b: 'b.npy' } }, { 'a.npy': i64([2, 4]), 'b.npy': i64([2, 4]) });
    expectError(() => loadCalibration(dir, twoIds), `${dir}/calibration.json: the model has several integer inputs (a, b); name the token input with "tokens"`);
    const dir2 = calibDir({ task: 'language-model', inputs: { features: 'x.npy' } }, { 'x.npy': f32([2, 64]) });
    expectError(() => loadCalibration(dir2, mlp), `${dir2}/calibration.json: task language-model needs an integer token input, and the model has none`);
  });

  test('int64 values that do not fit an int32 input', () => {
    const int32Model = OnnxModel.fromProto(
      model({
        nodes: [node('Identity', ['ids'], ['out'])],
        inputs: [valueInfo('ids', T.INT32, ['batch', 4])],
        outputs: [valueInfo('out', T.INT32, ['batch', 4])],
      }),
    );
    const ok = calibDir({ task: 'generic', inputs: { ids: 'ids.npy' } }, { 'ids.npy': i64([2, 4]) });
    expect(loadCalibration(ok, int32Model).inputs.ids.dtype).toBe(DataType.INT32);
    const bad = calibDir({ task: 'generic', inputs: { ids: 'ids.npy' } }, { 'ids.npy': i64([2, 4], (i) => (i === 5 ? 2 ** 40 : 1)) });
    expectError(() => loadCalibration(bad, int32Model), /input 'ids' \(ids\.npy\): dtype int64 does not fit the model's int32 input \(value 1099511627776 at index 5 does not fit\); save it as int32/);
  });

  test('samples.jsonl: bad JSON, ragged arrays, shapes that change, labels on some lines only', () => {
    const write = (lines: string[]) => {
      const dir = calibDir(undefined);
      fs.writeFileSync(path.join(dir, 'samples.jsonl'), lines.join('\n'));
      return dir;
    };
    const row = (n = 64) => Array.from({ length: n }, () => 0.5);
    let dir = write([JSON.stringify({ inputs: { features: row() } }), '{"inputs": ']);
    expectError(() => loadCalibration(dir, mlp), new RegExp(`^${dir}/samples\\.jsonl line 2: not valid JSON`));
    dir = write([JSON.stringify({ inputs: { features: [row(), row(3)] } })]);
    expectError(() => loadCalibration(dir, mlp), `${dir}/samples.jsonl line 1: inputs.features: not a rectangular array (rows of different lengths at depth 1)`);
    dir = write([JSON.stringify({ inputs: { features: row() } }), JSON.stringify({ inputs: { features: row(32) } })]);
    expectError(() => loadCalibration(dir, mlp), /line 2: inputs\.features has shape \[32\] but line 1 has \[64\]; every sample must have the same shape/);
    dir = write([JSON.stringify({ inputs: { features: row() }, label: 1 }), JSON.stringify({ inputs: { features: row() } })]);
    expectError(() => loadCalibration(dir, mlp), `${dir}/samples.jsonl line 2: no "label" but line 1 has one; label every sample or none`);
    dir = write([JSON.stringify({ inputs: { features: row() }, lable: 1 })]);
    expectError(() => loadCalibration(dir, mlp), `${dir}/samples.jsonl line 1: lable: unknown key (did you mean label?)`);
    dir = write([JSON.stringify({ inputs: { features: row() }, label: 1 })]);
    fs.writeFileSync(path.join(dir, 'calibration.json'), JSON.stringify({ task: 'classification', samples: 'samples.jsonl', labels: 'y.npy' }));
    expectError(() => loadCalibration(dir, mlp), `${dir}/calibration.json: labels come from the "label" of each sample in samples.jsonl; remove "labels"`);
  });

  test('not JSON at all', () => {
    const dir = calibDir('{ "task": ');
    expectError(() => loadCalibration(dir, mlp), new RegExp(`^${dir}/calibration\\.json: not valid JSON: `));
  });
});
