// A model whose weights are already quantized is pruned and stays in its format
// (docs/quantization.md, "Pruning a quantized model"): com.microsoft MatMulNBits (4 or 8 bits,
// with or without zero points: the builder-style fixtures of tools/fixtures/export_genai.py) and
// DequantizeLinear (int8 per axis as src/quantize writes it, uint8 per tensor with a zero point).
// Output rows keep their original bytes; weights that lost input columns are requantized in the
// same scheme and the error is reported; formats the engine cannot lift keep an honest reason.
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { onnx } from 'onnx-proto';
import { runMain as cli } from './helpers/in-process';
import { countParams } from '../src/graph/cost';
import { attrInt as readAttr } from '../src/graph/graph';
import { OnnxModel } from '../src/onnx/model';
import { createSession, ort } from '../src/onnx/runtime';
import { writeModel } from '../src/onnx/write';
import { findPrunable, pruneModel } from '../src/prune';
import { findPrunableInFormat, pruneInFormat } from '../src/pipeline/quantized-inputs';
import { liftQuantized } from '../src/quantize/inputs';
import { quantizeModel } from '../src/quantize';
import { quantizeBlocks } from '../src/quantize/pack';
import { floatToHalf, halfToFloat } from '../src/onnx/dtype';
import { T, attrInt, encode, floatTensor, model, node, valueInfo } from './helpers/onnx-builders';

const ROOT = path.resolve(__dirname, '..');
const GENAI = path.join(ROOT, 'test/fixtures/genai');
const LLAMA_CALIBRATION = path.join(ROOT, 'calibration', 'llama');
const MAGNITUDE = { importance: 'magnitude' as const, compensate: 'none' as const };
const LAYERS = 2;
const KV_HEADS = 2;
const HEAD_SIZE = 16;
const VOCAB = 256;

let tmp: string;
beforeAll(() => (tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'prune-gate-quantized-input-'))));
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

const nodesOf = (m: OnnxModel) => m.graph.node as onnx.NodeProto[];
const bytesOf = (m: OnnxModel, name: string) => {
  const d = m.constant(name)!.data;
  return new Uint8Array(d.buffer, d.byteOffset, d.byteLength);
};

/** Whether each of `pruned`'s rows of `rowBytes` is one of `original`'s, in order, skipping some: rows dropped, none changed. */
function rowsKeptExactly(original: Uint8Array, pruned: Uint8Array, rowBytes: number): boolean {
  const row = (a: Uint8Array, i: number) => Buffer.from(a.subarray(i * rowBytes, (i + 1) * rowBytes));
  let at = 0;
  for (let i = 0; i < pruned.length / rowBytes; i++) {
    while (at < original.length / rowBytes && !row(original, at).equals(row(pruned, i))) at++;
    if (at++ >= original.length / rowBytes) return false;
  }
  return true;
}

/** Deterministic token ids spread over the vocabulary. */
function tokens(batch: number, length: number, seed: number): number[][] {
  let state = seed;
  const next = () => (state = (state * 16807) % 2147483647);
  return Array.from({ length: batch }, () => Array.from({ length }, () => next() % VOCAB));
}
const int64 = (rows: number[][]) => new ort.Tensor('int64', BigInt64Array.from(rows.flat().map(BigInt)), [rows.length, rows[0].length]);
type Cache = Record<string, ort.Tensor>;

/** One run of a builder-style model on `ids` after `past` (or an empty cache of `kvHeads` heads per layer). */
async function runGenai(session: ort.InferenceSession, ids: number[][], kvHeads: number[], past?: Cache) {
  const pastLength = past ? past['present.0.key'].dims[2] : 0;
  const feeds: Cache = { input_ids: int64(ids), attention_mask: int64(ids.map(() => new Array(pastLength + ids[0].length).fill(1))) };
  for (let i = 0; i < LAYERS; i++) {
    for (const kind of ['key', 'value']) feeds[`past_key_values.${i}.${kind}`] = past?.[`present.${i}.${kind}`] ?? new ort.Tensor('float32', new Float32Array(0), [ids.length, kvHeads[i], 0, HEAD_SIZE]);
  }
  const out = await session.run(feeds);
  const present: Cache = {};
  for (const [name, t] of Object.entries(out)) if (name.startsWith('present.')) present[name] = t;
  return { logits: out.logits.data as Float32Array, dims: out.logits.dims, present };
}

function maxDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  expect(a.length).toBe(b.length);
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i] - b[i]));
  return m;
}

function cacheHeads(m: OnnxModel): number[] {
  return Array.from({ length: LAYERS }, (_, i) => Number(m.graph.input.find((v) => v.name === `past_key_values.${i}.key`)!.type!.tensorType!.shape!.dim![1].dimValue));
}

describe.each([
  ['llama-genai-int4.onnx', 4, 32, false],
  ['llama-genai-int8-zp.onnx', 8, 16, true],
  ['llama-genai-int4-zp.onnx', 4, 16, true],
])('%s (MatMulNBits, %i bits, block %i, zero points: %s)', (file, bits, block, zeroPoints) => {
  const base = OnnxModel.read(path.join(GENAI, file));
  const nbits = nodesOf(base).filter((n) => n.opType === 'MatMulNBits');
  const out = () => path.join(tmp, `pruned-${file}`);
  let stdout = '';
  let report: { quantized_inputs: { exact: number; requantized: { where: string; how: string; error: number }[]; worst: number }; pruned: { kind: string; before: number; after: number }[] };

  test('the fixture is what it says: every weight a MatMulNBits of its bits and block, with zero points or without', () => {
    expect(nbits.length).toBeGreaterThanOrEqual(11);
    for (const n of nbits) expect([readAttr(n, 'bits', 0), readAttr(n, 'block_size', 0), !!n.input[3]]).toEqual([bits, block, zeroPoints]);
  });

  test('lifted to float, it computes what onnxruntime computes with its MatMulNBits (the codes are read as the kernel reads them)', async () => {
    const lifted = liftQuantized(base)!;
    expect(nodesOf(lifted.model).some((n) => n.opType === 'MatMulNBits')).toBe(false);
    expect(countParams(lifted.model)).toBe(countParams(base));
    const [a, b] = [await createSession(base), await createSession(lifted.model)];
    try {
      const ids = tokens(2, 7, 17);
      expect(maxDiff((await runGenai(a, ids, [KV_HEADS, KV_HEADS])).logits, (await runGenai(b, ids, [KV_HEADS, KV_HEADS])).logits)).toBeLessThan(1e-4);
    } finally {
      await a.release();
      await b.release();
    }
  });

  test('prune at 30 % removes heads and FFN neurons and writes MatMulNBits with the new K and N', async () => {
    const r = await cli(['prune', '-m', path.join(GENAI, file), '--target', '0.3', '--structures', 'heads,ffn', '-o', out(), '--report', `${out()}.json`]);
    expect([r.status, r.stderr.split('\n').filter((l) => l.startsWith('prune-gate'))]).toEqual([0, []]);
    stdout = r.stdout;
    report = JSON.parse(fs.readFileSync(`${out()}.json`, 'utf8'));
    const kinds = new Set(report.pruned.filter((p) => p.after < p.before).map((p) => p.kind));
    expect([...kinds].sort()).toEqual(['ffn', 'heads']);
    const pruned = OnnxModel.read(out());
    expect(nodesOf(pruned).filter((n) => n.opType === 'MatMul')).toEqual([]);
    const written = nodesOf(pruned).filter((n) => n.opType === 'MatMulNBits');
    expect(written.map((n) => n.name)).toEqual(nbits.map((n) => n.name));
    for (const n of written) {
      const [k, nOut] = [readAttr(n, 'K', 0), readAttr(n, 'N', 0)];
      expect([readAttr(n, 'bits', 0), readAttr(n, 'block_size', 0), n.domain]).toEqual([bits, block, 'com.microsoft']);
      expect(pruned.constantInfo(n.input[1])!.dims).toEqual([nOut, Math.ceil(k / block), (block * bits) / 8]);
    }
    expect(countParams(pruned) / countParams(base)).toBeCloseTo(0.7, 1);
  });

  test("the weights that lost output rows, or input columns as whole blocks (heads), keep their codes, scales and zero points byte for byte; the others are requantized and reported", () => {
    const pruned = OnnxModel.read(out());
    const byName = new Map(nodesOf(pruned).map((n) => [n.name, n]));
    const requantized = new Set(report.quantized_inputs.requantized.map((w) => w.where));
    let rowsOnly = 0;
    let wholeBlocks = 0;
    for (const before of nbits) {
      const after = byName.get(before.name)!;
      const [k, n] = [readAttr(after, 'K', 0), readAttr(after, 'N', 0)];
      const [blocks, blocksBefore] = [Math.ceil(k / block), Math.ceil(readAttr(before, 'K', 0) / block)];
      const blob = (block * bits) / 8;
      if (k === readAttr(before, 'K', 0)) {
        expect(requantized.has(before.name)).toBe(false);
        expect(rowsKeptExactly(bytesOf(base, before.input[1]), bytesOf(pruned, after.input[1]), blocks * blob)).toBe(true);
        expect(rowsKeptExactly(bytesOf(base, before.input[2]), bytesOf(pruned, after.input[2]), blocks * 4)).toBe(true);
        if (zeroPoints) expect(rowsKeptExactly(bytesOf(base, before.input[3]), bytesOf(pruned, after.input[3]), Math.ceil((blocks * bits) / 8))).toBe(true);
        if (n < readAttr(before, 'N', 0)) rowsOnly++;
      } else if (!requantized.has(before.name)) {
        // Every output row's blocks are some of its original blocks, in order, unchanged.
        const [codes, original] = [bytesOf(pruned, after.input[1]), bytesOf(base, before.input[1])];
        expect(n).toBe(readAttr(before, 'N', 0));
        for (let r = 0; r < n; r++) expect(rowsKeptExactly(original.subarray(r * blocksBefore * blob, (r + 1) * blocksBefore * blob), codes.subarray(r * blocks * blob, (r + 1) * blocks * blob), blob)).toBe(true);
        wholeBlocks++;
      }
    }
    expect(rowsOnly).toBeGreaterThan(0); // q/k/v (or qkv), gate and up lost rows
    // A KV group is two query heads of 16: 32 input columns of o_proj, whole blocks of 16 or 32.
    expect(wholeBlocks).toBe(report.pruned.filter((p) => p.kind === 'heads' && p.after < p.before).length);
    const q = report.quantized_inputs;
    expect([...requantized].sort()).toEqual(nbits.filter((n) => /down_proj/.test(n.name)).map((n) => n.name).sort());
    expect(q.requantized.every((w) => w.how === 'input columns removed' && w.error > 0 && w.error < (bits === 4 ? 0.1 : 0.01))).toBe(true);
    expect(q.worst).toBe(Math.max(...q.requantized.map((w) => w.error)));
    expect(q.exact + q.requantized.length).toBe(nbits.length);
    expect(stdout).toMatch(new RegExp(`Quantized weights: ${q.exact} of ${nbits.length} kept their original codes .*; ${q.requantized.length} requantized in the same scheme, worst relative weight error ${q.worst.toPrecision(3)}`));
  });

  test('onnxruntime runs it: logits of the same shape, a smaller cache, and one decode step equals re-running the sequence', async () => {
    const pruned = OnnxModel.read(out());
    const heads = cacheHeads(pruned);
    expect(heads.some((h) => h < KV_HEADS)).toBe(true);
    const session = await ort.InferenceSession.create(out(), { logSeverityLevel: 3 });
    try {
      const prompt = tokens(2, 6, 41);
      const next = tokens(2, 1, 43);
      const first = await runGenai(session, prompt, heads);
      expect(first.dims).toEqual([2, 6, VOCAB]);
      const step = await runGenai(session, next, heads, first.present);
      const rerun = await runGenai(session, prompt.map((row, b) => [...row, ...next[b]]), heads);
      const last = new Float32Array(2 * VOCAB);
      for (let b = 0; b < 2; b++) last.set(rerun.logits.subarray((b * 7 + 6) * VOCAB, (b * 7 + 7) * VOCAB), b * VOCAB);
      expect(maxDiff(step.logits, last)).toBeLessThan(1e-4);
    } finally {
      await session.release();
    }
  });
});

test('--quantized float writes the pruned weights as float MatMuls instead (what quantize: int8 would then requantize); a wrong value is refused', async () => {
  const out = path.join(tmp, 'int4-as-float.onnx');
  const r = await cli(['prune', '-m', path.join(GENAI, 'llama-genai-int4.onnx'), '--target', '0.3', '--structures', 'heads,ffn', '--quantized', 'float', '-o', out]);
  expect(r.status).toBe(0);
  expect(r.stdout).not.toContain('Quantized weights');
  const m = OnnxModel.read(out);
  expect(nodesOf(m).filter((n) => n.opType === 'MatMulNBits')).toEqual([]);
  expect(nodesOf(m).filter((n) => n.opType === 'MatMul' && m.isConstant(n.input[1]))).toHaveLength(11);
  const bad = await cli(['prune', '-m', path.join(GENAI, 'llama-genai-int4.onnx'), '--quantized', 'int8', '-o', path.join(tmp, 'bad.onnx')]);
  expect([bad.status, bad.stderr.trim()]).toEqual([2, "prune-gate: --quantized must be keep or float (got 'int8')"]);
});

/**
 * x [batch, 32] float16 -> MatMulNBits (K 32, N 24, 4 bits, block 16, float16 scales, a bias) -> Relu
 * -> MatMulNBits (K 24, N 8, 8 bits, block 16) -> y: codes made by our quantizer from fixed weights.
 */
function float16Nbits(): OnnxModel {
  const layer = (name: string, k: number, n: number, bits: 4 | 8, seed: number) => {
    const w = Float32Array.from({ length: k * n }, (_, i) => Math.sin(i * seed) * (1 + (i % 7) / 7));
    const q = quantizeBlocks(w, k, n, { bits, blockSize: 16 });
    return [
      onnx.TensorProto.create({ name: `${name}_Q`, dataType: T.UINT8, dims: [n, q.blocks, (16 * bits) / 8], rawData: q.packed }),
      onnx.TensorProto.create({ name: `${name}_scales`, dataType: T.FLOAT16, dims: [n * q.blocks], rawData: new Uint8Array(Uint16Array.from(q.scales, floatToHalf).buffer) }),
    ];
  };
  const nbits = (name: string, inputs: string[], output: string, k: number, n: number, bits: number) =>
    Object.assign(node('MatMulNBits', inputs, [output], [attrInt('K', k), attrInt('N', n), attrInt('bits', bits), attrInt('block_size', 16)]), { domain: 'com.microsoft', name });
  const proto = model({
    nodes: [nbits('up', ['x', 'up_Q', 'up_scales', '', '', 'up_bias'], 'h', 32, 24, 4), node('Relu', ['h'], ['r']), nbits('down', ['r', 'down_Q', 'down_scales'], 'y', 24, 8, 8)],
    inputs: [valueInfo('x', T.FLOAT16, ['batch', 32])],
    outputs: [valueInfo('y', T.FLOAT16, ['batch', 8])],
    initializers: [
      ...layer('up', 32, 24, 4, 0.7),
      onnx.TensorProto.create({ name: 'up_bias', dataType: T.FLOAT16, dims: [24], rawData: new Uint8Array(Uint16Array.from({ length: 24 }, (_, i) => floatToHalf(0.1 * (i % 5) - 0.2)).buffer) }),
      ...layer('down', 24, 8, 8, 1.3),
    ],
  });
  proto.opsetImport.push({ domain: 'com.microsoft', version: 1 });
  return OnnxModel.fromBytes(encode(proto), 'float16-nbits.onnx');
}

test('float16 scales and a bias: lifted as float16, lowered with float16 scales and the bias back in its input, and onnxruntime runs it', async () => {
  const base = float16Nbits();
  const x = new ort.Tensor('float16', Uint16Array.from({ length: 3 * 32 }, (_, i) => floatToHalf(Math.cos(i))), [3, 32]);
  const lifted = liftQuantized(base)!;
  expect(lifted.weights.map((w) => w.dtype)).toEqual([T.FLOAT16, T.FLOAT16]);
  const run = async (m: OnnxModel) => {
    const session = await createSession(m);
    try {
      const y = (await session.run({ x })).y;
      return { dims: y.dims, values: Array.from(y.data as Uint16Array, halfToFloat) };
    } finally {
      await session.release();
    }
  };
  expect(maxDiff((await run(lifted.model)).values, (await run(base)).values)).toBeLessThan(0.05);
  const result = await pruneInFormat(base, { target: 0.3, structures: ['ffn'], ...MAGNITUDE });
  const m = result.model;
  const up = nodesOf(m).find((n) => n.name === 'up')!;
  const kept = readAttr(up, 'N', 0);
  expect(kept).toBeLessThan(24);
  expect([up.opType, up.input[5], m.constantInfo('up_bias')!.dims, m.constantInfo('up_scales')!.dtype]).toEqual(['MatMulNBits', 'up_bias', [kept], T.FLOAT16]);
  expect(nodesOf(m).some((n) => n.opType === 'Add')).toBe(false);
  expect(rowsKeptExactly(bytesOf(base, 'up_scales'), bytesOf(m, 'up_scales'), 2 * 2)).toBe(true);
  expect(result.quantizedInputs!.requantized.map((w) => [w.where, w.format])).toEqual([['down', 'MatMulNBits (8-bit, block 16)']]);
  expect((await run(m)).dims).toEqual([3, 8]);
});

test("our own int4 output (quantize: int4: MatMulNBits with accuracy_level 4, the embedding GatherBlockQuantized) is pruned again in its format", async () => {
  const q = (await quantizeModel(OnnxModel.read(path.join(ROOT, 'test/fixtures/llama.onnx')), { bits: 4, blockSize: 32 })).model;
  const before = nodesOf(q).filter((n) => n.opType === 'MatMulNBits');
  const result = await pruneInFormat(q, { target: 0.2, structures: ['heads', 'ffn'], ...MAGNITUDE });
  expect(result.pruned.some((p) => p.after < p.before)).toBe(true);
  const m = result.model;
  expect(nodesOf(m).filter((n) => n.opType === 'MatMulNBits').map((n) => [n.name, readAttr(n, 'accuracy_level', 0)])).toEqual(before.map((n) => [n.name, 4]));
  expect(nodesOf(m).filter((n) => n.opType === 'GatherBlockQuantized')).toHaveLength(1);
  // The embedding table is not lifted, and says so where it stops the analysis.
  for (const s of result.skipped.filter((s) => /GatherBlockQuantized/.test(s.reason))) expect(s.reason).toContain('pruning this quantized form is not supported');
  const session = await createSession(m);
  const out = await session.run({ input_ids: int64(tokens(2, 5, 7)) });
  await session.release();
  expect(out.logits.dims).toEqual([2, 5, VOCAB]);
});

describe('with calibration data (activation importance, compensation and allocation chosen by measurement)', () => {
  test('the int4 model is pruned on its statistics; refit weights are requantized and say so', async () => {
    const out = path.join(tmp, 'int4-calibrated.onnx');
    const r = await cli(['prune', '-m', path.join(GENAI, 'llama-genai-int4.onnx'), '--calibration', LLAMA_CALIBRATION, '--compensate', 'reconstruct', '--target', '0.3', '-o', out, '--report', `${out}.json`]);
    expect(r.status).toBe(0);
    const report = JSON.parse(fs.readFileSync(`${out}.json`, 'utf8'));
    expect(report.allocation.compensate).toBe('reconstruct');
    const hows = new Set(report.quantized_inputs.requantized.map((w: { how: string }) => w.how));
    expect(hows.has('values refit by compensation')).toBe(true);
    const pruned = OnnxModel.read(out);
    expect(nodesOf(pruned).filter((n) => n.opType === 'MatMulNBits')).toHaveLength(11);
    const session = await createSession(pruned);
    const logits = await runGenai(session, tokens(1, 4, 3), cacheHeads(pruned));
    await session.release();
    expect(logits.dims).toEqual([1, 4, VOCAB]);
  }, 120_000);
});

/** Perplexity of a builder-style model on calibration/llama (64 rows of 32 byte tokens), empty cache: exp of the mean next-token NLL. */
async function perplexity(file: string): Promise<number> {
  const ids = npyInt64(path.join(LLAMA_CALIBRATION, 'input_ids.npy'));
  const m = OnnxModel.read(file);
  const session = await ort.InferenceSession.create(file, { logSeverityLevel: 3 });
  let nll = 0;
  let count = 0;
  try {
    for (let at = 0; at < ids.length; at += 16) {
      const rows = ids.slice(at, at + 16);
      const { logits } = await runGenai(session, rows, cacheHeads(m));
      const length = rows[0].length;
      rows.forEach((row, b) => {
        for (let t = 0; t + 1 < length; t++) {
          const z = logits.subarray((b * length + t) * VOCAB, (b * length + t + 1) * VOCAB);
          const max = Math.max(...z);
          const logSum = Math.log(z.reduce((a, v) => a + Math.exp(v - max), 0)) + max;
          nll += logSum - z[row[t + 1]];
          count++;
        }
      });
    }
  } finally {
    await session.release();
  }
  return Math.exp(nll / count);
}

/** The rows of a 2-D int64 .npy file. */
function npyInt64(file: string): number[][] {
  const bytes = fs.readFileSync(file);
  const headerLength = bytes.readUInt16LE(8);
  const header = bytes.subarray(10, 10 + headerLength).toString('latin1');
  const [rows, cols] = /'shape': \((\d+), (\d+)\)/.exec(header)!.slice(1).map(Number);
  const data = new BigInt64Array(bytes.buffer.slice(bytes.byteOffset + 10 + headerLength, bytes.byteOffset + 10 + headerLength + rows * cols * 8));
  return Array.from({ length: rows }, (_, r) => Array.from(data.subarray(r * cols, (r + 1) * cols), Number));
}

// docs/quantization.md, "Pruning a quantized model": the int4 model pruned in its format against
// its float form pruned with the same settings, then quantized to int4 (block 32, symmetric).
test('a builder-style int4 model pruned at 30 % with calibration data stays MatMulNBits, its perplexity within 2 % of its float form pruned, then quantized', async () => {
  const int4 = path.join(tmp, 'ppl-int4.onnx');
  const float = path.join(tmp, 'ppl-float.onnx');
  for (const [input, out] of [
    ['llama-genai-int4.onnx', int4],
    ['llama-genai-qkv.onnx', float],
  ]) {
    const r = await cli(['prune', '-m', path.join(GENAI, input), '--calibration', LLAMA_CALIBRATION, '--target', '0.3', '--structures', 'heads,ffn', '-o', out]);
    expect(r.status).toBe(0);
  }
  const quantized = path.join(tmp, 'ppl-float-int4.onnx');
  writeModel((await quantizeModel(OnnxModel.read(float), { bits: 4, blockSize: 32, embeddings: false })).model, quantized);
  expect(nodesOf(OnnxModel.read(int4)).filter((n) => n.opType === 'MatMulNBits')).toHaveLength(11);
  const [got, want, unpruned] = [await perplexity(int4), await perplexity(quantized), await perplexity(path.join(GENAI, 'llama-genai-int4.onnx'))];
  // Pruning cost something (so the comparison is about the pruned models), and the two agree.
  expect(got).toBeGreaterThan(unpruned * 1.05);
  expect(Math.abs(got / want - 1)).toBeLessThan(0.02);
}, 120_000);

/** x [batch, 16] -> MatMul(DequantizeLinear(W1 uint8 [16, 32], one scale, zero point)) -> Relu -> MatMul(DequantizeLinear(W2)) -> y [batch, 8]. */
function uint8Mlp(): OnnxModel {
  const codes = (name: string, dims: number[], seed: number) => {
    const data = Uint8Array.from({ length: dims[0] * dims[1] }, (_, i) => (i * seed + 7 * Math.floor(i / 3)) % 256);
    return onnx.TensorProto.create({ name, dataType: T.UINT8, dims, rawData: data });
  };
  const scalar = (name: string, dataType: number, raw: Uint8Array) => onnx.TensorProto.create({ name, dataType, dims: [], rawData: raw });
  const proto = model({
    nodes: [
      node('DequantizeLinear', ['W1_q', 'W1_scale', 'W1_zp'], ['W1']),
      node('MatMul', ['x', 'W1'], ['h']),
      node('Relu', ['h'], ['r']),
      node('DequantizeLinear', ['W2_q', 'W2_scale', 'W2_zp'], ['W2']),
      node('MatMul', ['r', 'W2'], ['y']),
    ],
    inputs: [valueInfo('x', T.FLOAT, ['batch', 16])],
    outputs: [valueInfo('y', T.FLOAT, ['batch', 8])],
    initializers: [
      codes('W1_q', [16, 32], 37),
      scalar('W1_scale', T.FLOAT, new Uint8Array(new Float32Array([0.02]).buffer)),
      scalar('W1_zp', T.UINT8, new Uint8Array([128])),
      codes('W2_q', [32, 8], 53),
      scalar('W2_scale', T.FLOAT, new Uint8Array(new Float32Array([0.03]).buffer)),
      scalar('W2_zp', T.UINT8, new Uint8Array([120])),
    ],
  });
  return OnnxModel.fromBytes(encode(proto), 'uint8-mlp.onnx');
}

describe('DequantizeLinear weights', () => {
  test('uint8 per tensor with a zero point: the kept codes are the original bytes, the scale and zero point unchanged', async () => {
    const base = uint8Mlp();
    const result = await pruneInFormat(base, { target: 0.3, structures: ['ffn'], ...MAGNITUDE });
    const m = result.model;
    expect(result.pruned).toEqual([expect.objectContaining({ kind: 'ffn', before: 32 })]);
    const kept = result.pruned[0].after;
    expect(nodesOf(m).filter((n) => n.opType === 'DequantizeLinear').map((n) => n.input)).toEqual([
      ['W1_q', 'W1_scale', 'W1_zp'],
      ['W2_q', 'W2_scale', 'W2_zp'],
    ]);
    expect(m.constantInfo('W1_q')!.dims).toEqual([16, kept]);
    expect(m.constantInfo('W2_q')!.dims).toEqual([kept, 8]);
    // W2 lost rows: each is one of the original's. W1 lost columns: its transpose's rows are.
    expect(rowsKeptExactly(bytesOf(base, 'W2_q'), bytesOf(m, 'W2_q'), 8)).toBe(true);
    const transpose = (b: Uint8Array, rows: number, cols: number) => Uint8Array.from({ length: b.length }, (_, i) => b[(i % rows) * cols + Math.floor(i / rows)]);
    expect(rowsKeptExactly(transpose(bytesOf(base, 'W1_q'), 16, 32), transpose(bytesOf(m, 'W1_q'), 16, kept), 16)).toBe(true);
    for (const name of ['W1_scale', 'W1_zp', 'W2_scale', 'W2_zp']) expect(Buffer.from(bytesOf(m, name)).equals(Buffer.from(bytesOf(base, name)))).toBe(true);
    expect(result.quantizedInputs).toEqual({ exact: 2, requantized: [], worst: 0 });
    const session = await createSession(m);
    const y = await session.run({ x: new ort.Tensor('float32', new Float32Array(3 * 16).fill(0.5), [3, 16]) });
    await session.release();
    expect(y.y.dims).toEqual([3, 8]);
  });

  test('refit by compensation, a per-tensor uint8 weight is requantized with its own scheme (uint8, one scale, a zero point) and the error reported', async () => {
    const base = uint8Mlp();
    const feeds = Array.from({ length: 4 }, (_, b) => ({ x: new ort.Tensor('float32', Float32Array.from({ length: 8 * 16 }, (_, i) => Math.sin(i * 0.37 + b)), [8, 16]) }));
    const result = await pruneInFormat(base, { target: 0.3, structures: ['ffn'], importance: 'activation', compensate: 'reconstruct', calibration: () => feeds });
    const q = result.quantizedInputs!;
    expect(q.requantized).toEqual([{ where: 'DequantizeLinear_W2', format: 'DequantizeLinear (uint8, per tensor)', how: 'values refit by compensation', error: expect.any(Number) }]);
    expect(q.worst).toBeGreaterThan(0);
    expect(q.worst).toBeLessThan(0.05);
    const m = result.model;
    expect([m.constantInfo('W2_q')!.dtype, m.constantInfo('W2_scale')!.dims, m.constantInfo('W2_zp')!.dims]).toEqual([T.UINT8, [], []]);
  });

  test('int8 per output channel, as our quantizer writes Conv and Gemm weights: channels pruned, the DequantizeLinear kept, its scales a subset of the original', async () => {
    const cnn = (await quantizeModel(OnnxModel.read(path.join(ROOT, 'test/fixtures/cnn.onnx')), { bits: 8, conv: 'int8' })).model;
    const before = nodesOf(cnn).filter((n) => n.opType === 'DequantizeLinear');
    expect(before.length).toBeGreaterThan(4);
    const found = await findPrunableInFormat(cnn);
    expect(found.prunable.filter((g) => g.kind === 'channels').length).toBeGreaterThan(0);
    const result = await pruneInFormat(cnn, { target: 0.3, structures: ['channels'], ...MAGNITUDE });
    expect(result.pruned.some((p) => p.after < p.before)).toBe(true);
    const m = result.model;
    const after = nodesOf(m).filter((n) => n.opType === 'DequantizeLinear');
    expect(after.map((n) => n.output[0])).toEqual(before.map((n) => n.output[0]));
    expect(nodesOf(m).filter((n) => ['Conv', 'Gemm'].includes(n.opType) && m.isConstant(n.input[1]))).toEqual([]);
    let shrunk = 0;
    for (const n of after) {
      const [original, pruned] = [new Float32Array(bytesOf(cnn, n.input[1]).slice().buffer), new Float32Array(bytesOf(m, n.input[1]).slice().buffer)];
      let at = 0;
      for (const s of pruned) while (original[at++] !== s) expect(at).toBeLessThan(original.length);
      if (pruned.length < original.length) shrunk++;
    }
    expect(shrunk).toBeGreaterThan(0);
    expect(result.quantizedInputs!.requantized).toEqual([]);
    const file = path.join(tmp, 'cnn-int8-pruned.onnx');
    writeModel(m, file);
    const session = await ort.InferenceSession.create(file, { logSeverityLevel: 3 });
    const input = cnn.graph.input[0];
    const dims = input.type!.tensorType!.shape!.dim!.map((d) => Number(d.dimValue) || 2);
    const y = await session.run({ [input.name!]: new ort.Tensor('float32', new Float32Array(dims.reduce((a, b) => a * b, 1)).fill(0.1), dims) });
    await session.release();
    expect(Object.values(y)[0].dims[0]).toBe(dims[0]);
  });
});

describe('what is left alone, and why', () => {
  test('MatMulInteger (int8) is named with the forms the engine does prune', async () => {
    const proto = model({
      nodes: [node('MatMulInteger', ['x', 'B', 'x_zero', 'B_zero'], ['y'])],
      inputs: [valueInfo('x', T.UINT8, ['batch', 16])],
      outputs: [valueInfo('y', T.INT32, ['batch', 8])],
      initializers: [
        onnx.TensorProto.create({ name: 'B', dataType: T.INT8, dims: [16, 8], rawData: new Uint8Array(128).fill(3) }),
        onnx.TensorProto.create({ name: 'x_zero', dataType: T.UINT8, dims: [], rawData: new Uint8Array([128]) }),
        onnx.TensorProto.create({ name: 'B_zero', dataType: T.INT8, dims: [], rawData: new Uint8Array([0]) }),
      ],
    });
    const m = OnnxModel.fromBytes(encode(proto), 'integer.onnx');
    expect(countParams(m)).toBe(16 * 8);
    const reason = 'pruning this quantized form is not supported (MatMulNBits of 4 or 8 bits and DequantizeLinear of int8/uint8 weights are)';
    expect((await findPrunableInFormat(m)).skipped).toEqual([
      { where: 'the whole model', reason: `the weights are MatMulInteger (int8): ${reason}; prune the float model, then quantize (quantize: int8)` },
      { where: 'MatMulInteger_y', reason: `MatMulInteger (int8): ${reason}` },
    ]);
    await expect(pruneInFormat(m, { target: 0.3, structures: ['ffn'], ...MAGNITUDE })).rejects.toThrow(`integer.onnx: nothing to prune: the weights are MatMulInteger (int8): ${reason}`);
  });

  test('a MatMulNBits with an act-order g_idx is not lifted: the float layer it reads from is left alone, naming the g_idx', async () => {
    const codes = onnx.TensorProto.create({ name: 'B_Q4', dataType: T.UINT8, dims: [16, 1, 16], rawData: new Uint8Array(256).fill(0x98) });
    const gIdx = onnx.TensorProto.create({ name: 'g_idx', dataType: T.INT32, dims: [32], rawData: new Uint8Array(128) });
    const proto = model({
      nodes: [
        node('MatMul', ['x', 'A'], ['a']),
        node('Relu', ['a'], ['r']),
        Object.assign(node('MatMulNBits', ['r', 'B_Q4', 'B_scales', '', 'g_idx'], ['y'], [attrInt('K', 32), attrInt('N', 16), attrInt('bits', 4), attrInt('block_size', 32)]), {
          domain: 'com.microsoft',
          name: 'down_proj_Q4',
        }),
      ],
      inputs: [valueInfo('x', T.FLOAT, ['batch', 16])],
      outputs: [valueInfo('y', T.FLOAT, ['batch', 16])],
      initializers: [floatTensor('A', [16, 32]), codes, floatTensor('B_scales', [16, 1]), gIdx],
    });
    proto.opsetImport.push({ domain: 'com.microsoft', version: 1 });
    const m = OnnxModel.fromBytes(encode(proto), 'g-idx.onnx');
    expect(liftQuantized(m)).toBeUndefined();
    const found = await findPrunableInFormat(m);
    expect(found.prunable).toEqual([]);
    expect(found.skipped).toContainEqual({
      where: 'MatMul_a',
      reason: 'com.microsoft.MatMulNBits down_proj_Q4 reads a quantized weight (4-bit, block 32): it has a g_idx (act-order) input: pruning this quantized form is not supported (MatMulNBits of 4 or 8 bits and DequantizeLinear of int8/uint8 weights are)',
    });
  });

  test('a model whose weights are all inside an If body still gets the control-flow reason', async () => {
    const branch = (name: string, op: string) =>
      onnx.GraphProto.create({ name, node: [node('MatMul', ['x', 'W'], ['m']), node(op, ['m'], [`${name}_out`])], output: [valueInfo(`${name}_out`, T.FLOAT, ['batch', 8])] });
    const proto = model({
      nodes: [
        node('If', ['flag'], ['y'], [
          onnx.AttributeProto.create({ name: 'then_branch', type: onnx.AttributeProto.AttributeType.GRAPH, g: branch('then', 'Relu') }),
          onnx.AttributeProto.create({ name: 'else_branch', type: onnx.AttributeProto.AttributeType.GRAPH, g: branch('else', 'Neg') }),
        ]),
      ],
      inputs: [valueInfo('x', T.FLOAT, ['batch', 16]), valueInfo('flag', T.BOOL, [])],
      outputs: [valueInfo('y', T.FLOAT, ['batch', 8])],
      initializers: [floatTensor('W', [16, 8])],
    });
    const m = OnnxModel.fromBytes(encode(proto), 'branches.onnx');
    const found = await findPrunable(m);
    expect(found).toEqual({ prunable: [], skipped: [{ where: 'the whole model', reason: expect.stringContaining('its weights are all inside If/Loop/Scan bodies') }] });
    await expect(pruneModel(m, { target: 0.3, structures: ['ffn'], ...MAGNITUDE })).rejects.toThrow('branches.onnx: nothing to prune: its weights are all inside If/Loop/Scan bodies');
  });

  test('inspect on the builder-style int4 model lists heads and FFN groups; only the normalized residual stream and the model output are left alone', async () => {
    const r = await cli(['inspect', '--model', path.join(GENAI, 'llama-genai-int4.onnx'), '--json']);
    expect(r.status).toBe(0);
    const json = JSON.parse(r.stdout);
    expect(new Set(json.prunable.map((g: { kind: string }) => g.kind))).toEqual(new Set(['heads', 'ffn']));
    for (const s of json.skipped as { reason: string }[]) expect(s.reason).not.toMatch(/quantized|If\/Loop\/Scan/);
    expect(json.quantized).toBe(
      '11 MatMulNBits (4-bit, block 32): pruned in their format; output rows and whole blocks removed keep their bytes, other input columns are requantized (report: quantized_inputs)',
    );
    const text = await cli(['inspect', '--model', path.join(GENAI, 'llama-genai-int4.onnx')]);
    expect(text.stdout).toContain(`\nQuantized weights\n  ${json.quantized}\n`);
  });
});

describe('prune-gate run on the int4 model', () => {
  test('the gate prunes it, writes MatMulNBits, and report.json and report.md give the requantization error', async () => {
    const config = path.join(tmp, 'run.yml');
    fs.writeFileSync(config, `model: ${path.join(GENAI, 'llama-genai-int4.onnx')}\ncalibration: ${LLAMA_CALIBRATION}\nlatency: { warmup: 0, runs: 1 }\nprune:\n  target: 0.2\n  structures: [heads, ffn]\n  allocation: uniform\n  align: 1\n`);
    const out = path.join(tmp, 'run');
    const r = await cli(['run', '--config', config, '--out', out]);
    expect([r.status, r.stderr.split('\n').filter((l) => l.startsWith('prune-gate'))]).toEqual([0, []]);
    const report = JSON.parse(fs.readFileSync(path.join(out, 'report.json'), 'utf8'));
    const q = report.quantized_inputs;
    expect(q.exact + q.requantized.length).toBe(11);
    expect(q.requantized.length).toBeGreaterThan(0);
    expect(q.worst).toBe(q.requantized[0].error);
    expect(q.worst).toBeGreaterThan(0);
    const markdown = fs.readFileSync(path.join(out, 'report.md'), 'utf8');
    expect(markdown).toContain(`Quantized weights: ${q.exact} of 11 kept their original codes`);
    expect(markdown).toContain(`worst relative weight error ${q.worst.toPrecision(3)}`);
    const written = OnnxModel.read(path.join(out, 'pruned.onnx'));
    expect(nodesOf(written).filter((n) => n.opType === 'MatMulNBits')).toHaveLength(11);
    expect(report.removed).toBeGreaterThan(0.15);
    // What it costs (docs/quantization.md): the statistics still ride along the base's
    // evaluation, and the step's candidate as written is evaluated by a pass of its own.
    const passes = report.steps[0].passes.map((p: { what: string }) => p.what);
    expect(passes).not.toContain('statistics');
    expect(passes[passes.length - 1]).toBe('evaluation');
  }, 120_000);
});
