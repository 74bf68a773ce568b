// device.memory: a model whose weights, as onnxruntime holds them, do not fit the device is
// evaluated (and its statistics collected) in a weight-only int8 form; the report says so with
// that form's gap to float on the first batch, and the pruned model is still written from the
// float weights. A model that fits never takes the form. (The llama fixture: ~0.5 MB of float32
// weights, ~0.2 MB in the form.)
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { runMain as cli } from './helpers/in-process';
import { OnnxModel } from '../src/onnx/model';
import { runInPieces } from '../src/onnx/pieces';
import { writeModel } from '../src/onnx/write';
import { createSession, ort } from '../src/onnx/runtime';
import { Int8Form } from '../src/quantize/eval-form';
import { ReportSchema } from '../src/report/schema';

const ROOT = path.resolve(__dirname, '..');
const MODEL = path.join(ROOT, 'test/fixtures/llama.onnx');

let tmp: string;
beforeAll(() => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'prune-gate-device-memory-'));
});
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

function config(name: string, device: string): string {
  const file = path.join(tmp, `${name}.yml`);
  fs.writeFileSync(
    file,
    `model: ${MODEL}\ncalibration: ${path.join(ROOT, 'calibration/llama')}\nlatency: { warmup: 0, runs: 1 }\nprune: { target: 0.2, steps: 1, structures: [ffn], allocation: uniform, compensate: bias }\ngate:\n  agreement: { min: 0 }\n${device}`,
  );
  return file;
}

const readJson = (file: string) => JSON.parse(fs.readFileSync(file, 'utf8'));
const opTypes = (file: string) => OnnxModel.read(file).graph.node.map((n) => n.opType);

test('below the model\'s need, the gate runs on the int8 form, says so with its gap to float, and writes the pruned model from the float weights', async () => {
  const out = path.join(tmp, 'small');
  const r = await cli(['run', '--config', config('small', 'device: { memory: 400KB }\n'), '--out', out]);
  expect(r.status).toBe(0);
  expect(r.stderr).toMatch(/more than 75 % of device\.memory .*: evaluating it and collecting statistics in a weight-only int8 form \(MatMulNBits, 8 bits, block 32/);
  expect(r.stderr).toMatch(/the int8 form against float on 16 samples: agreement/);
  const report = readJson(path.join(out, 'report.json'));
  expect(ReportSchema.safeParse(report).success).toBe(true);
  const form = report.evaluation_form;
  expect(form).toMatchObject({ form: 'int8', bits: 8, block_size: 32, device_memory_bytes: 400e3 });
  expect(form.form_bytes).toBeLessThan(0.75 * 400e3);
  expect(form.model_bytes).toBeGreaterThan(0.75 * 400e3);
  expect(form.gap.samples).toBe(16);
  expect(form.gap.agreement).toBeGreaterThan(0.5);
  expect(form.gap.agreement).toBeLessThanOrEqual(1);
  expect(form.gap.kl_divergence).toBeGreaterThanOrEqual(0);
  expect(form.gap.float.perplexity).toBeGreaterThan(1);
  expect(form.gap.int8.perplexity).toBeGreaterThan(1);
  const md = fs.readFileSync(path.join(out, 'report.md'), 'utf8');
  expect(md).toMatch(/\*\*Evaluated in a weight-only int8 form\*\*/);
  expect(md).toMatch(/That form against the float model on the first 16 samples: top-1 agreement [\d.]+ %, KL divergence [\d.e-]+, perplexity [\d.]+ \(float\) and [\d.]+ \(int8\)/);
  // The written model is float, pruned from the real weights: no MatMulNBits, float32 MatMul weights.
  const pruned = OnnxModel.read(path.join(out, 'pruned.onnx'));
  expect(opTypes(path.join(out, 'pruned.onnx'))).not.toContain('MatMulNBits');
  expect(opTypes(path.join(out, 'pruned.onnx')).filter((t) => t === 'MatMul').length).toBe(opTypes(MODEL).filter((t) => t === 'MatMul').length);
  expect(pruned.initializers.every((t) => t.dataType === 1 || t.dataType === 7)).toBe(true);
  expect(report.candidate.params).toBeLessThan(report.base.params);
  // Base and candidate never open together: latency timed apart, and said so.
  expect(report.latency.warnings.join('\n')).toMatch(/base and candidate timed apart, one session at a time/);
  expect(fs.readdirSync(out).sort()).toEqual(['pruned.onnx', 'report.json', 'report.md']);
}, 120_000);

test('a model with external data: the form\'s codes wait in a file beside it, removed when the run ends', async () => {
  const dir = path.join(tmp, 'external');
  fs.mkdirSync(dir);
  writeModel(OnnxModel.read(MODEL), path.join(dir, 'model.onnx'), { externalData: 'always' });
  const file = path.join(tmp, 'external.yml');
  fs.writeFileSync(file, fs.readFileSync(config('base', 'device: { memory: 400KB }\n'), 'utf8').replace(MODEL, path.join(dir, 'model.onnx')));
  const r = await cli(['run', '--config', file, '--out', path.join(tmp, 'external-out')]);
  expect(r.status).toBe(0);
  expect(readJson(path.join(tmp, 'external-out', 'report.json')).evaluation_form.gap.samples).toBe(16);
  expect(fs.readdirSync(dir).sort()).toEqual(['model.onnx', 'model.onnx.data']);
}, 120_000);

test('quantize: int4 under the form: the output is int4 made from the float weights, its layers\' errors measured on the first batch', async () => {
  const out = path.join(tmp, 'int4');
  const r = await cli(['run', '--config', config('int4', 'device: { memory: 400KB }\nquantize: int4\n'), '--out', out]);
  expect(r.status).toBe(0);
  expect(r.stderr).toMatch(/quantizing the candidate to int4 \(the layers' errors measured on the first 1 calibration batch, in float, one piece of the model at a time: each of their passes is one of the whole model\)/);
  const bits = OnnxModel.read(path.join(out, 'pruned.onnx'))
    .graph.node.filter((n) => n.opType === 'MatMulNBits')
    .map((n) => Number(n.attribute!.find((a) => a.name === 'bits')!.i));
  expect(bits.length).toBeGreaterThan(0);
  expect(bits.filter((b) => b === 4).length).toBeGreaterThan(bits.length / 2);
  expect(readJson(path.join(out, 'report.json')).evaluation_form.form).toBe('int8');
}, 120_000);

test('a model that fits is evaluated as written: no int8 form, in the logs or the reports', async () => {
  const out = path.join(tmp, 'fits');
  const r = await cli(['run', '--config', config('fits', 'device: { memory: 1GB }\n'), '--out', out]);
  expect(r.status).toBe(0);
  expect(r.stderr).not.toMatch(/int8 form/);
  const report = readJson(path.join(out, 'report.json'));
  expect(report.evaluation_form).toBeUndefined();
  expect(report.latency.warnings.join('\n')).not.toMatch(/timed apart/);
  expect(fs.readFileSync(path.join(out, 'report.md'), 'utf8')).not.toMatch(/int8 form/);
}, 120_000);

test('a device too small even for the int8 form is refused in one line', async () => {
  const r = await cli(['run', '--config', config('tiny', 'device: { memory: 100KB }\n'), '--out', path.join(tmp, 'tiny')]);
  expect(r.status).toBe(2);
  expect(r.stderr.trim().split('\n').pop()).toMatch(/llama\.onnx: its weights need .* and .* even in int8, more than 75 % of device\.memory .*: give the gate a machine with more memory/);
});

test('the int8 form replaces every float MatMul weight by MatMulNBits (8 bits, block 32); the float model run in pieces equals it run whole', async () => {
  const model = OnnxModel.read(MODEL);
  const form = new Int8Form();
  const proto = form.apply(model, model.proto);
  const nodes = proto.graph!.node!;
  // Weights of fewer than 4096 values stay float (they cost nothing); all others are quantized.
  const large = (n: { opType?: string | null; input?: string[] | null }) => n.opType === 'MatMul' && model.isInitializer(n.input![1]) && model.constantInfo(n.input![1])!.dims.reduce((a, b) => a * b, 1) >= 4096;
  expect(nodes.filter(large).length).toBe(0);
  const nbits = nodes.filter((n) => n.opType === 'MatMulNBits');
  expect(nbits.length).toBe(model.graph.node.filter(large).length);
  expect(nbits.length).toBeGreaterThan(0);
  for (const n of nbits) expect(Object.fromEntries(n.attribute!.map((a) => [a.name, Number(a.i)]))).toMatchObject({ bits: 8, block_size: 32, accuracy_level: 4 });
  const ids = new ort.Tensor('int64', BigInt64Array.from({ length: 2 * 16 }, (_, i) => BigInt((i * 7) % 50)), [2, 16]);
  const whole = await createSession(model);
  const expected = (await whole.run({ input_ids: ids }, ['logits'])).logits.data as Float32Array;
  await whole.release();
  const pieces = await runInPieces(model, { input_ids: ids }, ['logits'], 60_000);
  expect(Array.from(pieces.logits.data as Float32Array)).toEqual(Array.from(expected));
  form.close();
});
