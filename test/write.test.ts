// The streaming writer: what it writes is what protobufjs would encode from the whole message,
// external data keeps one page-aligned file, inline output over 2 GiB is refused, and each
// weight is read once for scoring and once for writing.
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { onnx } from 'onnx-proto';
import { UserError } from '../src/errors';
import { externalLocation, isExternal } from '../src/onnx/external';
import { OnnxModel, decodeModelProto } from '../src/onnx/model';
import { setSpillMinBytes } from '../src/onnx/spill';
import { writeModel } from '../src/onnx/write';
import { WIDTH_STRUCTURES } from '../src/graph/analysis';
import { pruneModel } from '../src/prune';
import { quantizeModel } from '../src/quantize';
import { expectSameOutputs, fixtureFiles, runFile } from './helpers/fixtures';
import { ort } from '../src/onnx/runtime';
import { T, encode, model, node, valueInfo } from './helpers/onnx-builders';

// Reads are counted for scoring alone: the check of a small pruned model writes a copy of it
// for onnxruntime (a large one is checked without its weights), which would read them again.
jest.mock('../src/prune/verify', () => ({ verifyPruned: async () => undefined }));

const FIXTURES = path.join(__dirname, 'fixtures');
let tmp: string;
beforeAll(() => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'prune-gate-write-'));
});
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

const prune = (m: OnnxModel) => pruneModel(m, { target: 0.3, structures: [...WIDTH_STRUCTURES], importance: 'magnitude', compensate: 'none' });

/** Runs `fn` with the spill threshold so low that every weight is sliced by streaming. */
async function streaming<R>(fn: () => Promise<R>): Promise<R> {
  setSpillMinBytes(1);
  try {
    return await fn();
  } finally {
    setSpillMinBytes(8 * 2 ** 20);
  }
}

describe.each(fixtureFiles().map((f) => [path.basename(f), f]))('%s', (name, file) => {
  test('written unchanged, it is byte for byte what protobufjs encodes', () => {
    const m = OnnxModel.read(file);
    const out = path.join(tmp, `same-${name}`);
    writeModel(m, out);
    expect(Buffer.compare(fs.readFileSync(out), Buffer.from(encode(m.proto)))).toBe(0);
  });

  test('pruned by streaming slices and written inline, it is byte for byte the model pruned in memory', async () => {
    const inMemory = await prune(OnnxModel.read(file));
    const streamed = await streaming(() => prune(OnnxModel.read(file)));
    const out = path.join(tmp, `streamed-${name}`);
    writeModel(streamed.model, out);
    expect(Buffer.compare(fs.readFileSync(out), Buffer.from(encode(inMemory.model.proto)))).toBe(0);
  });
});

test('quantized after streaming slices (int8 per channel, int4 MatMulNBits), it is byte for byte the in-memory result', async () => {
  for (const [name, bits] of [['cnn.onnx', 8], ['llama.onnx', 4], ['gpt2.onnx', 8]] as const) {
    const file = path.join(FIXTURES, name);
    const inMemory = await quantizeModel((await prune(OnnxModel.read(file))).model, { bits });
    const streamed = await streaming(async () => quantizeModel((await prune(OnnxModel.read(file))).model, { bits }));
    expect(streamed.quantized.length).toBeGreaterThan(0);
    const out = path.join(tmp, `quantized-${bits}-${name}`);
    writeModel(streamed.model, out);
    expect([name, Buffer.compare(fs.readFileSync(out), Buffer.from(encode(inMemory.model.proto)))]).toEqual([name, 0]);
  }
});

test('external data: one <file>.data, tensors page-aligned in it, small ones inline; the same outputs', async () => {
  const m = OnnxModel.read(path.join(FIXTURES, 'gpt2.onnx'));
  const out = path.join(tmp, 'gpt2-ext.onnx');
  writeModel(m, out, { externalData: 'always' });
  const written = OnnxModel.read(out);
  const external = written.initializers.filter(isExternal);
  expect(external.length).toBeGreaterThan(0);
  for (const t of written.initializers) {
    const bytes = m.readTensorProto(m.initializerProto(t.name)!).data.byteLength;
    if (!isExternal(t)) {
      expect(bytes < 1024 || m.initializerProto(t.name)!.dataType === T.STRING).toBe(true);
      continue;
    }
    const loc = externalLocation(t, written.dir, out);
    expect(loc.location).toBe('gpt2-ext.onnx.data');
    expect(loc.offset % 4096).toBe(0);
    expect(loc.length).toBe(bytes);
  }
  expect(fs.readdirSync(tmp).filter((f) => f.startsWith('gpt2-ext'))).toEqual(['gpt2-ext.onnx', 'gpt2-ext.onnx.data']);
  await expectSameOutputs(path.join(FIXTURES, 'gpt2.onnx'), out, m);
});

test('a Constant value or an If branch initializer in external data is written inline, so the output does not need the input\'s data file', async () => {
  const dir = path.join(tmp, 'nested');
  fs.mkdirSync(dir, { recursive: true });
  const values = Float32Array.from({ length: 512 }, (_, i) => Math.sin(i));
  fs.writeFileSync(path.join(dir, 'nested.onnx.bin'), Buffer.from(values.buffer));
  const external = (name: string, offset: number) =>
    onnx.TensorProto.create({
      name,
      dataType: T.FLOAT,
      dims: [256],
      dataLocation: onnx.TensorProto.DataLocation.EXTERNAL,
      externalData: [
        { key: 'location', value: 'nested.onnx.bin' },
        { key: 'offset', value: String(offset) },
        { key: 'length', value: '1024' },
      ],
    });
  const branch = (name: string, t: onnx.TensorProto) =>
    onnx.GraphProto.create({ name, node: [node('Add', ['c', t.name], [`${name}_out`])], initializer: [t], output: [valueInfo(`${name}_out`, T.FLOAT, [256])] });
  const constant = onnx.NodeProto.create({ opType: 'Constant', output: ['c'], attribute: [{ name: 'value', type: onnx.AttributeProto.AttributeType.TENSOR, t: external('', 0) }] });
  const choose = onnx.NodeProto.create({
    opType: 'If',
    input: ['cond'],
    output: ['y'],
    attribute: [
      { name: 'then_branch', type: onnx.AttributeProto.AttributeType.GRAPH, g: branch('then', external('a', 1024)) },
      { name: 'else_branch', type: onnx.AttributeProto.AttributeType.GRAPH, g: branch('else', external('b', 0)) },
    ],
  });
  const file = path.join(dir, 'nested.onnx');
  fs.writeFileSync(file, encode(model({ nodes: [constant, choose], inputs: [valueInfo('cond', T.BOOL, [])], outputs: [valueInfo('y', T.FLOAT, [256])] })));
  const out = path.join(tmp, 'elsewhere', 'nested.onnx');
  writeModel(OnnxModel.read(file), out);
  expect(fs.readdirSync(path.dirname(out))).toEqual(['nested.onnx']);
  for (const cond of [true, false]) {
    const feeds = { cond: new ort.Tensor('bool', Uint8Array.of(cond ? 1 : 0), []) };
    const [a, b] = [await runFile(file, feeds), await runFile(out, feeds)];
    expect(b.y.bytes.equals(a.y.bytes)).toBe(true);
  }
});

test('never: a model whose weights would pass 2 GiB inline is refused, and nothing is written', () => {
  const data = path.join(tmp, 'huge.onnx.bin');
  const elements = 2 ** 29 + 2 ** 20; // 2.004 GiB of float32
  fs.writeFileSync(data, '');
  fs.truncateSync(data, elements * 4); // sparse: no disk space used
  const w = onnx.TensorProto.create({
    name: 'w',
    dataType: T.FLOAT,
    dims: [elements],
    dataLocation: onnx.TensorProto.DataLocation.EXTERNAL,
    externalData: [{ key: 'location', value: 'huge.onnx.bin' }],
  });
  const file = path.join(tmp, 'huge.onnx');
  fs.writeFileSync(file, encode(model({ nodes: [node('Identity', ['w'], ['y'])], inputs: [], outputs: [valueInfo('y', T.FLOAT, [elements])], initializers: [w] })));
  const out = path.join(tmp, 'huge-inline.onnx');
  const attempt = () => writeModel(OnnxModel.read(file), out, { externalData: 'never' });
  expect(attempt).toThrow(UserError);
  expect(attempt).toThrow(/huge-inline\.onnx: with its weights inline the model would be 2\.00 GiB, above protobuf's 2 GiB limit; write it with external data/);
  expect(fs.readdirSync(tmp).filter((f) => f.startsWith('huge-inline'))).toEqual([]);
});

/** Bytes read from `file` by fs.readSync while `fn` runs, as [position, length] ranges. */
async function readsOf(file: string, fn: () => unknown): Promise<[number, number][]> {
  // The module object itself (the import above is a read-only namespace copy of it).
  const nodeFs = jest.requireActual<typeof fs>('fs');
  const realOpen = nodeFs.openSync;
  const realRead = nodeFs.readSync;
  const files = new Map<number, string>();
  const reads: [number, number][] = [];
  const open = jest.spyOn(nodeFs, 'openSync').mockImplementation((p: fs.PathLike, ...rest: unknown[]) => {
    const fd = (realOpen as (...a: unknown[]) => number)(p, ...rest);
    files.set(fd, path.resolve(String(p)));
    return fd;
  });
  const read = jest.spyOn(nodeFs, 'readSync').mockImplementation((fd: number, ...rest: unknown[]) => {
    const n = (realRead as (...a: unknown[]) => number)(fd, ...rest);
    if (files.get(fd) === file) reads.push([Number(rest[3]), n]);
    return n;
  });
  try {
    await fn();
  } finally {
    open.mockRestore();
    read.mockRestore();
  }
  return reads;
}

/** How many times each external tensor's bytes were read, by name. */
function timesRead(m: OnnxModel, reads: [number, number][]): Map<string, number> {
  const times = new Map<string, number>();
  for (const t of m.initializers.filter(isExternal)) {
    const loc = externalLocation(t, m.dir, m.origin);
    const length = loc.length!;
    let bytes = 0;
    for (const [at, n] of reads) bytes += Math.max(0, Math.min(at + n, loc.offset + length) - Math.max(at, loc.offset));
    times.set(t.name, bytes / length);
  }
  return times;
}

test('pruning with magnitude reads each weight once for scoring, and writing reads it once more', async () => {
  const file = path.join(tmp, 'llama-ext.onnx');
  writeModel(OnnxModel.read(path.join(FIXTURES, 'llama.onnx')), file, { externalData: 'always' });
  const base = OnnxModel.read(file);
  const data = path.resolve(`${file}.data`);
  let result: Awaited<ReturnType<typeof prune>> | undefined;
  const scoring = timesRead(base, await readsOf(data, async () => (result = await streaming(() => prune(base)))));
  expect(Math.max(...scoring.values())).toBe(1);
  for (const times of scoring.values()) expect(times === 0 || times === 1).toBe(true);

  const out = path.join(tmp, 'llama-pruned.onnx');
  const writing = timesRead(base, await readsOf(data, () => writeModel(result!.model, out)));
  const kept = new Set(decodeModelProto(fs.readFileSync(out)).graph!.initializer!.map((t) => t.name));
  for (const [name, times] of writing) expect([name, times]).toEqual([name, kept.has(name) ? 1 : 0]);
});
