// `prune-gate inspect` prints the figures of every fixture.
import * as fs from 'fs';
import * as path from 'path';
import { countParams } from '../src/graph/cost';
import { OnnxModel } from '../src/onnx/model';
import { graphInputs, graphOutputs } from '../src/onnx/runtime';
import { writeModel } from '../src/onnx/write';
import type { Inspection } from '../src/cli/commands/inspect';
import { grouped } from '../src/util/format';
import { fixtureFiles } from './helpers/fixtures';
import { T, encode, floatTensor, model, node, valueInfo } from './helpers/onnx-builders';
import { useBuiltCli } from './helpers/run-cli';

const built = useBuiltCli('inspect');
const cli = built.cli;

const fixtures = fixtureFiles();

test.each(fixtures.map((f) => [path.basename(f), f]))('%s: text output names every figure', async (_name, file) => {
  const r = await cli(['inspect', '--model', file]);
  expect(r.stderr).toBe('');
  expect(r.status).toBe(0);
  const m = OnnxModel.read(file);
  const line = (key: string) => r.stdout.split('\n').find((l) => l.startsWith(key)) ?? '';
  for (const v of [...graphInputs(m), ...graphOutputs(m)]) expect(r.stdout).toContain(v.name);
  expect(line('Format')).toMatch(/ONNX IR \d+, opsets ai\.onnx \d+/);
  expect(line('Parameters')).toContain(grouped(countParams(m)));
  expect(line('Size')).toContain(`${grouped(fs.statSync(file).size)} bytes`);
  // MACs per sample and the input shape they were measured at (batch 1, length 16).
  expect(line('MACs')).toMatch(/^MACs\s+[\d,]+ per sample .*, at .*\[1, /);
  expect(line('Nodes')).toContain(String(m.graph.node.length));
  expect(line('Ops')).toMatch(/\w+ \d+/);
});

test.each(fixtures.map((f) => [path.basename(f), f]))('%s: --json has the same figures', async (_name, file) => {
  const r = await cli(['inspect', '--model', file, '--json']);
  expect(r.status).toBe(0);
  const ins = JSON.parse(r.stdout) as Inspection;
  const m = OnnxModel.read(file);
  expect(ins.params).toBe(countParams(m));
  expect(ins.bytes).toBe(fs.statSync(file).size);
  expect(ins.macs).toBeGreaterThan(0);
  expect(ins.macsNote).toBeUndefined();
  expect(ins.externalData).toEqual([]);
  expect(ins.inputs.map((i) => i.name)).toEqual(graphInputs(m).map((i) => i.name));
  expect(ins.outputs.map((o) => o.name)).toEqual(graphOutputs(m).map((o) => o.name));
  expect(Object.values(ins.ops).reduce((a, b) => a + b, 0)).toBe(ins.nodes);
  for (const dims of Object.values(ins.macsInputShapes)) expect(dims[0]).toBe(1);
});

test('dynamic axes are shown by name, and the mlp figures are exact', async () => {
  const file = fixtures.find((f) => f.endsWith('mlp.onnx'))!;
  const ins = JSON.parse((await cli(['inspect', '--model', file, '--json'])).stdout) as Inspection;
  expect(ins.inputs).toEqual([{ name: 'features', dtype: 'float32', shape: ['batch', 64] }]);
  expect(ins.outputs).toEqual([{ name: 'logits', dtype: 'float32', shape: ['batch', 10] }]);
  expect(ins.params).toBe(2778);
  expect(ins.macs).toBe(2720);
  expect(ins.macsInputShapes).toEqual({ features: [1, 64] });
  expect(ins.ops).toEqual({ Gemm: 3, Relu: 2 });
});

test('a model with external data: bytes include the data file, MACs are measured', async () => {
  const source = fixtures.find((f) => f.endsWith('gpt2.onnx'))!;
  const dir = path.join(built.tmp, 'ext');
  const out = path.join(dir, 'model.onnx');
  writeModel(OnnxModel.read(source), out, { externalData: 'always' });
  const inline = JSON.parse((await cli(['inspect', '--model', source, '--json'])).stdout) as Inspection;
  const r = await cli(['inspect', '--model', out, '--json']);
  expect(r.stderr).toBe('');
  const ins = JSON.parse(r.stdout) as Inspection;
  expect(ins.bytes).toBe(fs.statSync(out).size + fs.statSync(`${out}.data`).size);
  expect(ins.externalData).toEqual(['model.onnx.data']);
  const text = await cli(['inspect', '--model', out]);
  expect(text.stdout).toMatch(/^Size\s+[\d,]+ bytes on disk \(.*\), with external data in model\.onnx\.data$/m);
  expect(ins.params).toBe(inline.params);
  expect(ins.macs).toBe(inline.macs);
  // The temporary model written beside it for onnxruntime is gone.
  expect(fs.readdirSync(dir).sort()).toEqual(['model.onnx', 'model.onnx.data']);
});

test('a model onnxruntime cannot run still gets the other figures, and says why MACs are missing', async () => {
  const custom = node('Frobnicate', ['h'], ['y']);
  custom.domain = 'com.example';
  const proto = model({
    nodes: [node('MatMul', ['x', 'w'], ['h']), custom],
    inputs: [valueInfo('x', T.FLOAT, ['batch', 4])],
    outputs: [valueInfo('y', T.FLOAT, ['batch', 3])],
    initializers: [floatTensor('w', [4, 3])],
  });
  proto.opsetImport.push({ domain: 'com.example', version: 1 });
  const file = path.join(built.tmp, 'custom-op.onnx');
  fs.writeFileSync(file, encode(proto));
  const r = await cli(['inspect', '--model', file]);
  expect(r.status).toBe(0);
  expect(r.stdout).toMatch(/^Parameters\s+12 /m);
  expect(r.stdout).toMatch(/^MACs\s+not measured \(onnxruntime could not run the model with dummy inputs: .*Frobnicate/m);
  expect(r.stdout).toMatch(/^Ops\s+.*com\.example::Frobnicate 1/m);
});

// Inspect lists every group (kind, where, size) and every place left alone, with why.
const EXPECTED_KINDS: Record<string, string[]> = {
  'mlp.onnx': ['ffn'],
  'cnn.onnx': ['channels', 'ffn'],
  'gpt2.onnx': ['ffn', 'heads'],
  'llama.onnx': ['ffn', 'heads'],
  'bert.onnx': ['ffn', 'heads'],
  'bert-attention.onnx': ['ffn', 'heads'],
  'bert-mha.onnx': ['ffn', 'heads'],
};

test.each(fixtures.map((f) => [path.basename(f), f]))('%s: prunable groups and what is left alone', async (name, file) => {
  const r = await cli(['inspect', '--model', file, '--json']);
  const ins = JSON.parse(r.stdout) as Inspection;
  expect(ins.prunableNote).toBeUndefined();
  expect([...new Set(ins.prunable.map((g) => g.kind))].sort()).toEqual(EXPECTED_KINDS[name]);
  for (const g of ins.prunable) {
    expect(g.units).toBeGreaterThan(1);
    expect(g.unitParams).toBeGreaterThan(0);
    expect(g.where).not.toBe('');
  }
  for (const s of ins.skipped) expect(s.reason).not.toBe('');
  const text = (await cli(['inspect', '--model', file])).stdout;
  expect(text).toContain('Prunable groups');
  expect(text).toContain('Left alone (widths kept whole; the weights listed may still lose other axes above)');
  if (name === 'llama.onnx') {
    // Grouped-query attention: the unit is a KV group (2 per layer), with its query heads.
    expect(ins.prunable.filter((g) => g.kind === 'heads').map((g) => g.units)).toEqual([2, 2]);
  }
  if (name !== 'mlp.onnx' && name !== 'cnn.onnx') {
    expect(ins.skipped.some((s) => /normaliz|reduces over/.test(s.reason))).toBe(true); // the residual stream
  }
});
