// A written model says what it is (docs/contracts.md, "What a written model says"): producer
// prune-gate at the package's version, and metadata_props naming the base by its bytes, the share
// of parameters actually removed, how, and a hash of the settings, beside the input's own
// metadata. Read back from the files `run` and `prune` write.
import * as crypto from 'crypto';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { runMain as cli } from './helpers/in-process';
import { countParams } from '../src/graph/cost';
import { OnnxModel } from '../src/onnx/model';
import { writeModel } from '../src/onnx/write';
import { checkModel, checkerAvailable } from '../tools/onnx-checker';

const ROOT = path.resolve(__dirname, '..');
const VERSION = (JSON.parse(fs.readFileSync(path.join(ROOT, 'package.json'), 'utf8')) as { version: string }).version;
const KEYS = ['base-sha256', 'removed', 'structures', 'compensation', 'config-sha256', 'source-producer'].map((k) => `prune-gate.${k}`);

let tmp: string;
/** The MLP fixture with metadata of its own, one key of which looks like ours (a stale one must be replaced, not repeated). */
let base: string;
beforeAll(() => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'prune-gate-provenance-'));
  const model = OnnxModel.read(path.join(ROOT, 'test', 'fixtures', 'mlp.onnx'));
  model.proto.metadataProps = [
    { key: 'author', value: 'the exporter' },
    { key: 'prune-gate.removed', value: '0.9999' },
  ];
  base = path.join(tmp, 'mlp-with-metadata.onnx');
  writeModel(model, base);
});
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));


const sha256 = (...files: string[]) => {
  const hash = crypto.createHash('sha256');
  for (const f of files) hash.update(fs.readFileSync(f));
  return hash.digest('hex');
};

function metadataOf(file: string): { producer: string; props: [string, string][]; meta: Record<string, string> } {
  const proto = OnnxModel.read(file).proto;
  const props = (proto.metadataProps ?? []).map((p) => [p.key ?? '', p.value ?? ''] as [string, string]);
  return { producer: `${proto.producerName} ${proto.producerVersion}`, props, meta: Object.fromEntries(props) };
}

/** A gate on `base` writing to OUT; `prune` and `gate` are YAML. */
async function gate(name: string, prune: string, gateRules = 'agreement: { min: 0 }', extra = ''): Promise<{ out: string; report: { base: { params: number }; candidate: { params: number } } }> {
  const config = path.join(tmp, `${name}.yml`);
  fs.writeFileSync(config, `model: ${base}\ncalibration: ${path.join(ROOT, 'calibration', 'mlp')}\nlatency: { warmup: 0, runs: 1 }\nprune: ${prune}\ngate:\n  ${gateRules}\n${extra}`);
  const out = path.join(tmp, name);
  const r = await cli(['run', '--config', config, '--out', out]);
  expect([name, r.status, r.status ? r.stderr : '']).toEqual([name, 0, '']);
  return { out, report: JSON.parse(fs.readFileSync(path.join(out, 'report.json'), 'utf8')) };
}

test("run's pruned.onnx names prune-gate, its base by sha256, the share removed as counted, how, and the settings; the input's metadata stays", async () => {
  const prune = '{ target: 0.3, steps: 2, importance: activation, compensate: bias, allocation: global, align: 1 }';
  const { out, report } = await gate('bias', prune);
  const file = path.join(out, 'pruned.onnx');
  const { producer, props, meta } = metadataOf(file);
  expect(producer).toBe(`prune-gate ${VERSION}`);
  // The input's own key first, then exactly ours, once each (the stale prune-gate.removed replaced).
  expect(props.map(([k]) => k)).toEqual(['author', ...KEYS]);
  expect(meta.author).toBe('the exporter');
  expect(meta['prune-gate.base-sha256']).toBe(sha256(base));
  // The share removed as the parameter counts give it, of the base and of this file.
  const counted = 1 - countParams(OnnxModel.read(file)) / countParams(OnnxModel.read(base));
  expect(meta['prune-gate.removed']).toBe(counted.toFixed(4));
  expect(meta['prune-gate.removed']).toBe((1 - report.candidate.params / report.base.params).toFixed(4));
  expect(Math.abs(counted - 0.3)).toBeLessThan(0.03);
  // The MLP has only FFN neurons to remove; both steps compensated with biases.
  expect([meta['prune-gate.structures'], meta['prune-gate.compensation']]).toEqual(['ffn', 'bias']);
  expect(meta['prune-gate.source-producer']).toBe('pytorch 1.13.0');
  expect(meta['prune-gate.config-sha256']).toMatch(/^[0-9a-f]{64}$/);
  if (checkerAvailable()) expect(checkModel(file)).toEqual({ status: 'ok' });

  // The settings hash follows what builds the model: not the gate's rules nor the output folder,
  // but the pruning settings.
  const judgedOtherwise = await gate('bias-other-gate', prune, 'cosine: { min: 0 }');
  expect(metadataOf(path.join(judgedOtherwise.out, 'pruned.onnx')).meta['prune-gate.config-sha256']).toBe(meta['prune-gate.config-sha256']);
  const builtOtherwise = await gate('none', '{ target: 0.3, steps: 2, importance: activation, compensate: none, allocation: global, align: 1 }');
  const other = metadataOf(path.join(builtOtherwise.out, 'pruned.onnx')).meta;
  expect(other['prune-gate.config-sha256']).not.toBe(meta['prune-gate.config-sha256']);
  expect(other['prune-gate.compensation']).toBe('none');
}, 120_000);

test('a quantized base says nothing was removed: the share is measured, not the target', async () => {
  const { out } = await gate('int8', '{ target: 0 }', 'agreement: { min: 0 }', 'quantize: int8\n');
  const { producer, meta } = metadataOf(path.join(out, 'pruned.onnx'));
  expect(producer).toBe(`prune-gate ${VERSION}`);
  expect([meta['prune-gate.removed'], meta['prune-gate.structures'], meta['prune-gate.compensation']]).toEqual(['0.0000', 'none', 'none']);
}, 120_000);

test('prune: a base with external data is hashed as its files one after another; a pruned model pruned again names the first as its source', async () => {
  const external = path.join(tmp, 'external', 'gpt2.onnx');
  writeModel(OnnxModel.read(path.join(ROOT, 'test', 'fixtures', 'gpt2.onnx')), external, { externalData: 'always' });
  const once = path.join(tmp, 'once', 'gpt2.onnx');
  expect((await cli(['prune', '--model', external, '--out', once, '--target', '0.2'])).status).toBe(0);
  const first = metadataOf(once);
  expect(first.producer).toBe(`prune-gate ${VERSION}`);
  expect(first.props.map(([k]) => k)).toEqual(KEYS);
  expect(first.meta['prune-gate.base-sha256']).toBe(sha256(external, `${external}.data`));
  expect(first.meta['prune-gate.removed']).toBe((1 - countParams(OnnxModel.read(once)) / countParams(OnnxModel.read(external))).toFixed(4));
  expect([first.meta['prune-gate.structures'], first.meta['prune-gate.compensation']]).toEqual(['ffn,heads', 'none']);

  const twice = path.join(tmp, 'twice.onnx');
  expect((await cli(['prune', '--model', once, '--out', twice, '--target', '0.2'])).status).toBe(0);
  const second = metadataOf(twice);
  expect(second.props.map(([k]) => k)).toEqual(KEYS);
  expect(second.meta['prune-gate.base-sha256']).toBe(sha256(once, `${once}.data`));
  expect(second.meta['prune-gate.source-producer']).toBe(`prune-gate ${VERSION}`);
  // The same flags: the same settings hash.
  expect(second.meta['prune-gate.config-sha256']).toBe(first.meta['prune-gate.config-sha256']);
}, 120_000);
