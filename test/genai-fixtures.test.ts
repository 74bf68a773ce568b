// The onnxruntime-genai builder-style fixtures (test/fixtures/genai/, tools/fixtures/export_genai.py):
// each computes what test/fixtures/llama.onnx computes, with an empty cache and one decode step
// later, and `prune-gate inspect` reads each without crashing.
import * as fs from 'fs';
import * as path from 'path';
import type { Inspection } from '../src/cli/commands/inspect';
import { interfaceChanges } from '../src/eval/generation';
import { attrInt, setAttrInt } from '../src/graph/graph';
import { DataType, halfToFloat, isFloatDType } from '../src/onnx/dtype';
import { encodeNpy } from '../src/eval/npy';
import type { Report } from '../src/report/schema';
import { runMain } from './helpers/in-process';
import { cacheSizes } from '../src/graph/cache-sizes';
import { analyze, traceTwice } from '../src/graph/analysis';
import { OnnxModel } from '../src/onnx/model';
import { createSession, ort } from '../src/onnx/runtime';
import { pruneModel } from '../src/prune';
import { useBuiltCli } from './helpers/run-cli';
import { zeroedCopy } from './helpers/zeroed';

const FIXTURES = path.join(__dirname, 'fixtures');
const GENAI = path.join(FIXTURES, 'genai');
const LAYERS = 2;
const KV_HEADS = 2;
const HEAD_SIZE = 16;
const VOCAB = 256;

interface Variant {
  file: string;
  fp16: boolean;
  /** The past inputs' last dim as declared: head_size, or the recent builder's symbol. */
  cacheDim: number | string;
  /** Largest |logit - llama.onnx logit| allowed: float noise, or float16's resolution at |logit| ~ 20. */
  tolerance: number;
}

const VARIANTS: Variant[] = [
  { file: 'llama-genai-qkv.onnx', fp16: false, cacheDim: HEAD_SIZE, tolerance: 1e-4 },
  { file: 'llama-genai-packed.onnx', fp16: false, cacheDim: HEAD_SIZE, tolerance: 1e-4 },
  { file: 'llama-genai-fp16.onnx', fp16: true, cacheDim: HEAD_SIZE, tolerance: 0.06 },
  { file: 'llama-genai-kvdim.onnx', fp16: false, cacheDim: 'kv_cache_dim', tolerance: 1e-4 },
  { file: 'external/model.onnx', fp16: false, cacheDim: 'kv_cache_dim', tolerance: 1e-4 },
];
const INT4 = 'llama-genai-int4.onnx';

/** Deterministic token ids spread over the whole vocabulary. */
function tokens(batch: number, length: number, seed: number): number[][] {
  let state = seed;
  const next = () => (state = (state * 16807) % 2147483647);
  return Array.from({ length: batch }, () => Array.from({ length }, () => next() % VOCAB));
}

const int64 = (rows: number[][]) => new ort.Tensor('int64', BigInt64Array.from(rows.flat().map(BigInt)), [rows.length, rows[0].length]);

function floats(t: ort.Tensor): Float32Array {
  return t.type === 'float16' ? Float32Array.from(t.data as Uint16Array, halfToFloat) : (t.data as Float32Array);
}

type Cache = Record<string, ort.Tensor>;

/**
 * One run of a builder-style model: `ids` after `past` (the previous run's present.* or empty
 * caches of `kvHeads[layer]` heads: fewer once heads are pruned).
 */
async function runGenai(session: ort.InferenceSession, fp16: boolean, ids: number[][], past?: Cache, kvHeads = [KV_HEADS, KV_HEADS]) {
  const batch = ids.length;
  const pastLength = past ? past['present.0.key'].dims[2] : 0;
  const feeds: Record<string, ort.Tensor> = {
    input_ids: int64(ids),
    attention_mask: int64(ids.map(() => new Array(pastLength + ids[0].length).fill(1))),
  };
  // The MultiHeadAttention form takes the rotary's positions as an input: those after the past.
  if (session.inputNames.includes('position_ids')) feeds.position_ids = int64(ids.map((row) => row.map((_, s) => pastLength + s)));
  for (let i = 0; i < LAYERS; i++) {
    for (const kind of ['key', 'value']) {
      feeds[`past_key_values.${i}.${kind}`] =
        past?.[`present.${i}.${kind}`] ?? new ort.Tensor(fp16 ? 'float16' : 'float32', fp16 ? new Uint16Array(0) : new Float32Array(0), [batch, kvHeads[i], 0, HEAD_SIZE]);
    }
  }
  const out = await session.run(feeds);
  const present: Cache = {};
  for (const [name, t] of Object.entries(out)) if (name.startsWith('present.')) present[name] = t;
  return { logits: floats(out.logits), dims: out.logits.dims, present };
}

function maxDiff(a: ArrayLike<number>, b: ArrayLike<number>): number {
  expect(a.length).toBe(b.length);
  let m = 0;
  for (let i = 0; i < a.length; i++) m = Math.max(m, Math.abs(a[i] - b[i]));
  return m;
}

/** The last position's logits of every row of [batch, sequence, vocab]. */
function lastPosition(logits: Float32Array, batch: number, sequence: number): Float32Array {
  const out = new Float32Array(batch * VOCAB);
  for (let b = 0; b < batch; b++) out.set(logits.subarray(((b + 1) * sequence - 1) * VOCAB, (b + 1) * sequence * VOCAB), b * VOCAB);
  return out;
}

let llama: ort.InferenceSession;
const sessions = new Map<string, ort.InferenceSession>();
async function sessionOf(file: string) {
  if (!sessions.has(file)) sessions.set(file, await ort.InferenceSession.create(path.join(GENAI, file), { logSeverityLevel: 3 }));
  return sessions.get(file)!;
}
async function llamaLogits(ids: number[][]) {
  return (await llama.run({ input_ids: int64(ids) })).logits.data as Float32Array;
}

beforeAll(async () => {
  llama = await ort.InferenceSession.create(path.join(FIXTURES, 'llama.onnx'), { logSeverityLevel: 3 });
});
afterAll(async () => {
  await llama.release();
  for (const s of sessions.values()) await s.release();
});

describe.each(VARIANTS.map((v) => [v.file, v]))('%s', (_name, v) => {
  test("is written as the builder writes it: GQA with rotary inside, SkipSimplifiedLayerNorm, the cache's declared shape", () => {
    const m = OnnxModel.read(path.join(GENAI, v.file));
    const ops = m.graph.node.map((n) => `${n.domain ? `${n.domain}::` : ''}${n.opType}`);
    expect(ops.filter((o) => o === 'com.microsoft::GroupQueryAttention')).toHaveLength(LAYERS);
    expect(ops.filter((o) => o === 'com.microsoft::SkipSimplifiedLayerNormalization')).toHaveLength(2 * LAYERS);
    expect(ops.filter((o) => o === 'SimplifiedLayerNormalization')).toHaveLength(1);
    const gqa = m.graph.node.find((n) => n.opType === 'GroupQueryAttention')!;
    const attr = (name: string) => gqa.attribute!.find((a) => a.name === name);
    expect([Number(attr('num_heads')!.i), Number(attr('kv_num_heads')!.i), Number(attr('do_rotary')!.i)]).toEqual([4, KV_HEADS, 1]);
    expect(attr('scale')!.f).toBeCloseTo(1 / Math.sqrt(HEAD_SIZE), 6);
    expect(gqa.input!.slice(3, 9)).toEqual(['past_key_values.0.key', 'past_key_values.0.value', '/model/attn_mask_reformat/attn_mask_subgraph/Sub/Cast/output_0', '/model/attn_mask_reformat/attn_mask_subgraph/Gather/Cast/output_0', 'cos_cache', 'sin_cache']);
    const past = m.graph.input!.find((i) => i.name === 'past_key_values.1.value')!;
    const dims = past.type!.tensorType!.shape!.dim!.map((d) => d.dimParam || Number(d.dimValue));
    expect(dims).toEqual(['batch_size', KV_HEADS, 'past_sequence_length', v.cacheDim]);
    expect(past.type!.tensorType!.elemType).toBe(v.fp16 ? 10 : 1);
  });

  test('gives the logits of llama.onnx on varied tokens with an empty cache', async () => {
    const session = await sessionOf(v.file);
    for (const [batch, length, seed] of [
      [1, 1, 7],
      [2, 9, 11],
      [3, 20, 13],
    ]) {
      const ids = tokens(batch, length, seed);
      const got = await runGenai(session, v.fp16, ids);
      expect(got.dims).toEqual([batch, length, VOCAB]);
      expect(got.present['present.1.key'].dims).toEqual([batch, KV_HEADS, length, HEAD_SIZE]);
      expect(maxDiff(got.logits, await llamaLogits(ids))).toBeLessThan(v.tolerance);
    }
  });

  test('one decode step on the present cache gives the next-token logits of re-running the whole sequence', async () => {
    const session = await sessionOf(v.file);
    const prompt = tokens(2, 8, 17);
    const next = tokens(2, 1, 19);
    const whole = prompt.map((row, b) => [...row, ...next[b]]);
    const first = await runGenai(session, v.fp16, prompt);
    const step = await runGenai(session, v.fp16, next, first.present);
    expect(step.dims).toEqual([2, 1, VOCAB]);
    expect(step.present['present.0.value'].dims).toEqual([2, KV_HEADS, 9, HEAD_SIZE]);
    const rerun = await runGenai(session, v.fp16, whole);
    expect(maxDiff(step.logits, lastPosition(rerun.logits, 2, 9))).toBeLessThan(v.tolerance);
    expect(maxDiff(step.logits, lastPosition(await llamaLogits(whole), 2, 9))).toBeLessThan(v.tolerance);
  });
});

test('the external-data layout keeps every weight in model.onnx.data, as the builder saves it', () => {
  const dir = path.join(GENAI, 'external');
  expect(fs.readdirSync(dir).sort()).toEqual(['model.onnx', 'model.onnx.data']);
  const m = OnnxModel.read(path.join(dir, 'model.onnx'));
  expect(m.graph.initializer!.length).toBe(19); // embeddings, cos/sin caches, 7 per layer, final norm, lm_head
  for (const t of m.graph.initializer!) {
    expect(t.dataLocation).toBe(1); // EXTERNAL
    expect(t.externalData!.find((e) => e.key === 'location')!.value).toBe('model.onnx.data');
  }
  expect(fs.statSync(path.join(dir, 'model.onnx')).size).toBeLessThan(20_000);
});

describe('int4 (MatMulNBits, 4 bits, block 32, symmetric)', () => {
  const reference = JSON.parse(fs.readFileSync(path.join(GENAI, 'llama-genai-int4.json'), 'utf8')) as { sequences: { input_ids: number[]; logits: number[][] }[] };

  test('every MatMul is a MatMulNBits and the logits are those of the dequantized weights', async () => {
    const m = OnnxModel.read(path.join(GENAI, INT4));
    expect(m.graph.node.filter((n) => n.opType === 'MatMul')).toHaveLength(0);
    const nbits = m.graph.node.filter((n) => n.opType === 'MatMulNBits');
    expect(nbits).toHaveLength(1 + LAYERS * 5); // qkv, o, gate, up, down per layer, and lm_head
    for (const n of nbits) expect([n.domain, Number(n.attribute!.find((a) => a.name === 'block_size')!.i), n.input!.length]).toEqual(['com.microsoft', 32, 3]);
    const session = await sessionOf(INT4);
    for (const seq of reference.sequences) {
      const got = await runGenai(session, false, [seq.input_ids]);
      expect(maxDiff(got.logits, seq.logits.flat())).toBeLessThan(1e-4);
      // Really quantized: the float model's logits are further away than float noise.
      expect(maxDiff(got.logits, await llamaLogits([seq.input_ids]))).toBeGreaterThan(0.1);
    }
  });

  test('one decode step on the present cache gives the logits of re-running the sequence', async () => {
    const session = await sessionOf(INT4);
    const ids = reference.sequences[0].input_ids;
    const first = await runGenai(session, false, [ids.slice(0, -1)]);
    const step = await runGenai(session, false, [ids.slice(-1)], first.present);
    expect(maxDiff(step.logits, reference.sequences[0].logits[ids.length - 1])).toBeLessThan(1e-4);
  });
});

const built = useBuiltCli('genai');

describe('prune-gate inspect', () => {
  const inspect = async (file: string) => {
    const r = await built.cli(['inspect', '--model', path.join(GENAI, file), '--json']);
    expect(r.stderr).toBe('');
    expect(r.status).toBe(0);
    return JSON.parse(r.stdout) as Inspection;
  };

  // Each layer's GroupQueryAttention is a heads group of kv_num_heads units (a KV group with its
  // query heads), and its FFN a group of 176 neurons. The kv_cache_dim variants declare the
  // cache's last dim nowhere: the dummy inputs take it from a run without the pasts
  // (src/graph/cache-sizes.ts), with the external layout like any other.
  test.each(['llama-genai-qkv.onnx', 'llama-genai-packed.onnx', 'llama-genai-fp16.onnx', 'llama-genai-kvdim.onnx', 'external/model.onnx'])('%s: both FFNs and both attentions (KV groups) are found', async (file) => {
    const ins = await inspect(file);
    expect(ins.ops['com.microsoft::GroupQueryAttention']).toBe(LAYERS);
    expect(ins.prunableNote).toBeUndefined();
    expect(ins.macs).toBeGreaterThan(0);
    // Measured on a first step: the past empty, the mask as long as the tokens.
    expect(ins.macsInputShapes['past_key_values.1.value']).toEqual([1, KV_HEADS, 0, HEAD_SIZE]);
    expect(ins.macsInputShapes.attention_mask).toEqual(ins.macsInputShapes.input_ids);
    const ffn = ins.prunable.filter((g) => g.kind === 'ffn');
    expect(ffn.map((g) => g.units)).toEqual([176, 176]);
    const heads = ins.prunable.filter((g) => g.kind === 'heads');
    expect(heads.map((g) => g.units)).toEqual([KV_HEADS, KV_HEADS]);
    expect(ins.skipped.filter((s) => s.reason.includes('GroupQueryAttention'))).toEqual([]);
  });

  test.each(['external/model.onnx', INT4])('%s: runs and describes the model', async (file) => {
    const ins = await inspect(file);
    expect(ins.ops['com.microsoft::GroupQueryAttention']).toBe(LAYERS);
    expect(ins.inputs.map((i) => i.name)).toEqual(['input_ids', 'attention_mask', 'past_key_values.0.key', 'past_key_values.0.value', 'past_key_values.1.key', 'past_key_values.1.value']);
    expect(ins.externalData).toEqual(file.startsWith('external/') ? ['model.onnx.data'] : []);
    if (ins.prunableNote !== undefined) expect(ins.prunableNote).toContain('GroupQueryAttention');
  });
});

describe("the analysis's dummy inputs size a cache axis nothing declares", () => {
  test('from the present outputs of a run without the pasts: the head size GQA checks', async () => {
    const kvdim = OnnxModel.read(path.join(GENAI, 'llama-genai-kvdim.onnx'));
    const sizes = Object.fromEntries(['key', 'value'].flatMap((kind) => [0, 1].map((i) => [`past_key_values.${i}.${kind}`, { 3: HEAD_SIZE }])));
    expect(await cacheSizes(kvdim)).toEqual(sizes);
    const [t1, t2] = await traceTwice(kvdim);
    expect([t1.sizes, t1.get('past_key_values.0.key')!.dims, t2.get('present.1.value')!.dims]).toEqual([[2, 7], [2, KV_HEADS, 0, HEAD_SIZE], [3, KV_HEADS, 5, HEAD_SIZE]]);
  });

  test('no run where the declarations fix every size', async () => {
    expect(await cacheSizes(OnnxModel.read(path.join(GENAI, 'llama-genai-packed.onnx')))).toEqual({});
    expect(await cacheSizes(OnnxModel.read(path.join(FIXTURES, 'kv', 'llama-kv.onnx')))).toEqual({});
  });
});

/** Each layer's kv heads as its past key input declares them. */
function cacheHeads(m: OnnxModel): number[] {
  return Array.from({ length: LAYERS }, (_, i) => {
    const past = m.graph.input!.find((v) => v.name === `past_key_values.${i}.key`)!;
    return Number(past.type!.tensorType!.shape!.dim![1].dimValue);
  });
}

// Pruned with magnitude importance and no compensation, removing a unit is zeroing it: the pruned
// model computes what the base computes with the removed entries zeroed, and decodes on its own
// (smaller) cache. A removed KV group takes its kv head's k and v columns and cache entry, and its
// query heads' q columns and o_proj rows; num_heads and kv_num_heads follow.
describe.each(['llama-genai-qkv.onnx', 'llama-genai-packed.onnx', 'llama-genai-fp16.onnx', 'llama-genai-kvdim.onnx', 'external/model.onnx'])('%s pruned (heads and ffn, 0.3, magnitude)', (file) => {
  const fp16 = file.includes('fp16');
  // float32: float noise; float16: its resolution at |logit| ~ 20, as for the fixtures themselves
  // (the zeroed base and the pruned model measured equal to the bit on all three).
  const tolerance = fp16 ? 0.06 : 1e-4;
  const base = OnnxModel.read(path.join(GENAI, file));
  let result: Awaited<ReturnType<typeof pruneModel>>;
  let pruned: ort.InferenceSession;
  let zeroed: ort.InferenceSession;
  let kvHeads: number[];
  beforeAll(async () => {
    result = await pruneModel(base, { target: 0.3, structures: ['heads', 'ffn'], importance: 'magnitude', compensate: 'none' });
    pruned = await createSession(result.model);
    zeroed = await createSession(zeroedCopy(base, result));
    kvHeads = cacheHeads(result.model);
  });
  afterAll(async () => {
    await pruned.release();
    await zeroed.release();
  });

  test('whole KV groups go; num_heads, kv_num_heads, the projections and the declared cache agree', () => {
    const heads = result.pruned.filter((p) => p.kind === 'heads');
    expect(heads.map((p) => p.before)).toEqual([KV_HEADS, KV_HEADS].slice(0, heads.length));
    expect(heads.some((p) => p.after < p.before)).toBe(true);
    expect(kvHeads.some((h) => h < KV_HEADS)).toBe(true);
    const nodes = result.model.graph.node!.filter((n) => n.opType === 'GroupQueryAttention');
    const width = (tensor: string) => result.model.constantInfo(tensor)!.dims;
    const weight = (name: string) => width(result.model.graph.node!.find((n) => n.name === name)!.input![1]);
    for (const [i, n] of nodes.entries()) {
      const [h, kv] = [attrInt(n, 'num_heads', 0), attrInt(n, 'kv_num_heads', 0)];
      expect([h, kv]).toEqual([2 * kvHeads[i], kvHeads[i]]); // 2 query heads per KV head, as before
      const layer = `/model/layers.${i}/attn`;
      if (file.includes('qkv')) {
        expect(weight(`${layer}/q_proj/MatMul`)).toEqual([64, h * HEAD_SIZE]);
        expect(weight(`${layer}/k_proj/MatMul`)).toEqual([64, kv * HEAD_SIZE]);
        expect(weight(`${layer}/v_proj/MatMul`)).toEqual([64, kv * HEAD_SIZE]);
      } else expect(weight(`${layer}/qkv_proj/MatMul`)).toEqual([64, (h + 2 * kv) * HEAD_SIZE]);
      expect(weight(`${layer}/o_proj/MatMul`)).toEqual([h * HEAD_SIZE, 64]);
    }
    // The cache's declared shape follows, and is what the app is told to feed (report.json's `interface`).
    const changes = interfaceChanges(base, result.model);
    const changed = kvHeads.flatMap((h, i) => (h < KV_HEADS ? [`past_key_values.${i}.key`, `past_key_values.${i}.value`, `present.${i}.key`, `present.${i}.value`] : []));
    expect(changes.map((c) => c.name).sort()).toEqual(changed.sort());
    for (const c of changes) expect(c.candidate[1]).toBeLessThan(c.base[1] as number);
  });

  test('the CLI writes a pruned model that onnxruntime loads: attributes, cache and a decode step agree', async () => {
    const out = path.join(built.tmp, `pruned-${path.basename(file)}`);
    const r = await built.cli(['prune', '--model', path.join(GENAI, file), '--out', out, '--structures', 'heads,ffn', '--target', '0.3']);
    expect([r.status, r.stderr]).toEqual([0, expect.stringContaining('removing')]);
    const written = OnnxModel.read(out);
    const heads = cacheHeads(written);
    expect(heads.some((h) => h < KV_HEADS)).toBe(true);
    const attrs = written.graph.node!.filter((n) => n.opType === 'GroupQueryAttention').map((n) => [attrInt(n, 'num_heads', 0), attrInt(n, 'kv_num_heads', 0)]);
    expect(attrs).toEqual(heads.map((h) => [2 * h, h]));
    const session = await ort.InferenceSession.create(out, { logSeverityLevel: 3 });
    try {
      const prompt = tokens(2, 5, 41);
      const next = tokens(2, 1, 43);
      const first = await runGenai(session, fp16, prompt, undefined, heads);
      expect(first.dims).toEqual([2, 5, VOCAB]);
      const step = await runGenai(session, fp16, next, first.present, heads);
      const rerun = await runGenai(session, fp16, prompt.map((row, b) => [...row, ...next[b]]), undefined, heads);
      expect(maxDiff(step.logits, lastPosition(rerun.logits, 2, 6))).toBeLessThan(tolerance);
    } finally {
      await session.release();
    }
  });

  test('computes what the base computes with the removed entries zeroed, at the logits', async () => {
    for (const [batch, length, seed] of [
      [1, 3, 23],
      [3, 12, 29],
    ]) {
      const ids = tokens(batch, length, seed);
      const got = await runGenai(pruned, fp16, ids, undefined, kvHeads);
      const want = await runGenai(zeroed, fp16, ids);
      expect(got.dims).toEqual(want.dims);
      // What was removed mattered: the base's logits are further away than the tolerance.
      expect(maxDiff(got.logits, (await runGenai(await sessionOf(file), fp16, ids)).logits)).toBeGreaterThan(10 * tolerance);
      for (let i = 0; i < LAYERS; i++) expect(got.present[`present.${i}.key`].dims).toEqual([batch, kvHeads[i], length, HEAD_SIZE]);
      expect(maxDiff(got.logits, want.logits)).toBeLessThan(tolerance);
    }
  });

  test('one decode step on its smaller cache gives the logits of re-running the whole sequence', async () => {
    const prompt = tokens(2, 8, 31);
    const next = tokens(2, 1, 37);
    const first = await runGenai(pruned, fp16, prompt, undefined, kvHeads);
    const step = await runGenai(pruned, fp16, next, first.present, kvHeads);
    expect(step.dims).toEqual([2, 1, VOCAB]);
    const rerun = await runGenai(pruned, fp16, prompt.map((row, b) => [...row, ...next[b]]), undefined, kvHeads);
    expect(maxDiff(step.logits, lastPosition(rerun.logits, 2, 9))).toBeLessThan(tolerance);
  });
});

// The builder's MultiHeadAttention form (llama-genai-mha.onnx): RotaryEmbedding nodes on q and k,
// then MultiHeadAttention with the cache, k and v widened to the 4 query heads (the function of
// the builder's repeat_kv). Each layer's attention is a heads group of 4 heads, through the
// rotaries; a removed head takes its q, k and v columns, its o_proj rows and its cache entry.
describe('llama-genai-mha.onnx (RotaryEmbedding, MultiHeadAttention)', () => {
  const MHA = 'llama-genai-mha.onnx';
  const HEADS = 4;
  const base = OnnxModel.read(path.join(GENAI, MHA));

  test('is written as the builder writes MultiHeadAttention: rotaries on q and k, position_ids an input, the cache through the attention', () => {
    const ops = base.graph.node.map((n) => `${n.domain ? `${n.domain}::` : ''}${n.opType}`);
    expect(ops.filter((o) => o === 'com.microsoft::RotaryEmbedding')).toHaveLength(2 * LAYERS);
    expect(ops.filter((o) => o === 'com.microsoft::MultiHeadAttention')).toHaveLength(LAYERS);
    expect(ops.filter((o) => o.includes('GroupQueryAttention'))).toEqual([]);
    const mha = base.graph.node.find((n) => n.opType === 'MultiHeadAttention')!;
    expect(mha.input).toEqual(['/model/layers.0/attn/q_rotary/RotaryEmbedding/output_0', '/model/layers.0/attn/k_rotary/RotaryEmbedding/output_0', '/model/layers.0/attn/v_proj/MatMul/output_0', '', '', '', 'past_key_values.0.key', 'past_key_values.0.value']);
    expect([attrInt(mha, 'num_heads', 0), attrInt(mha, 'unidirectional', 0)]).toEqual([HEADS, 1]);
    expect(base.graph.input!.map((i) => i.name).slice(0, 3)).toEqual(['input_ids', 'attention_mask', 'position_ids']);
    expect(cacheHeads(base)).toEqual([HEADS, HEADS]);
  });

  test('gives the logits of llama.onnx with an empty cache, and one decode step those of re-running the sequence', async () => {
    const session = await sessionOf(MHA);
    for (const [batch, length, seed] of [
      [1, 1, 7],
      [3, 20, 13],
    ]) {
      const ids = tokens(batch, length, seed);
      const got = await runGenai(session, false, ids, undefined, [HEADS, HEADS]);
      expect(got.present['present.1.value'].dims).toEqual([batch, HEADS, length, HEAD_SIZE]);
      expect(maxDiff(got.logits, await llamaLogits(ids))).toBeLessThan(1e-4);
    }
    const prompt = tokens(2, 8, 17);
    const next = tokens(2, 1, 19);
    const first = await runGenai(session, false, prompt, undefined, [HEADS, HEADS]);
    const step = await runGenai(session, false, next, first.present);
    expect(maxDiff(step.logits, lastPosition(await llamaLogits(prompt.map((row, b) => [...row, ...next[b]])), 2, 9))).toBeLessThan(1e-4);
  });

  test('prune-gate inspect finds both attentions (4 heads, through the rotaries) and both FFNs', async () => {
    const r = await built.cli(['inspect', '--model', path.join(GENAI, MHA), '--json']);
    expect([r.status, r.stderr]).toEqual([0, '']);
    const ins = JSON.parse(r.stdout) as Inspection;
    expect(ins.ops['com.microsoft::RotaryEmbedding']).toBe(2 * LAYERS);
    expect(ins.prunable.filter((g) => g.kind === 'heads').map((g) => g.units)).toEqual([HEADS, HEADS]);
    expect(ins.prunable.filter((g) => g.kind === 'ffn').map((g) => g.units)).toEqual([176, 176]);
    expect(ins.skipped.filter((s) => /RotaryEmbedding|MultiHeadAttention/.test(s.reason))).toEqual([]);
  });

  // For a full rotary the builder writes num_heads and rotary_embedding_dim 0, and the kernel
  // takes the head size from the caches [L, size / 2]: the same heads, and the attribute stays 0.
  test('with num_heads 0 on the rotaries (the builder for a full rotary) the head size comes from the caches', async () => {
    const full = base.clone();
    for (const n of full.graph.node) {
      if (n.opType !== 'RotaryEmbedding') continue;
      setAttrInt(n, 'num_heads', 0);
      setAttrInt(n, 'rotary_embedding_dim', 0);
    }
    const { groups } = await analyze(full);
    expect(groups.filter((g) => g.kind === 'heads').map((g) => g.units.length)).toEqual([HEADS, HEADS]);
    const result = await pruneModel(full, { target: 0.3, structures: ['heads'], importance: 'magnitude', compensate: 'none' });
    expect(result.model.graph.node.filter((n) => n.opType === 'RotaryEmbedding').map((n) => attrInt(n, 'num_heads', -1))).toEqual([0, 0, 0, 0]);
    const heads = cacheHeads(result.model);
    expect(heads.some((h) => h < HEADS)).toBe(true);
    const [pruned, zeroed] = [await createSession(result.model), await createSession(zeroedCopy(full, result))];
    try {
      const ids = tokens(2, 7, 47);
      const got = await runGenai(pruned, false, ids, undefined, heads);
      expect(maxDiff(got.logits, (await runGenai(zeroed, false, ids, undefined, [HEADS, HEADS])).logits)).toBeLessThan(1e-4);
    } finally {
      await pruned.release();
      await zeroed.release();
    }
  });

  describe('pruned (heads and ffn, 0.3, magnitude, no compensation)', () => {
    let result: Awaited<ReturnType<typeof pruneModel>>;
    let pruned: ort.InferenceSession;
    let zeroed: ort.InferenceSession;
    let heads: number[];
    beforeAll(async () => {
      result = await pruneModel(base, { target: 0.3, structures: ['heads', 'ffn'], importance: 'magnitude', compensate: 'none' });
      pruned = await createSession(result.model);
      zeroed = await createSession(zeroedCopy(base, result));
      heads = cacheHeads(result.model);
    });
    afterAll(async () => {
      await pruned.release();
      await zeroed.release();
    });

    test('whole heads go; num_heads of the attention and of both rotaries, the projections and the cache agree', () => {
      expect(heads.some((h) => h < HEADS)).toBe(true);
      const width = (name: string) => result.model.constantInfo(result.model.graph.node!.find((n) => n.name === name)!.input![1])!.dims;
      for (let i = 0; i < LAYERS; i++) {
        const layer = `/model/layers.${i}/attn`;
        const numHeads = (name: string) => attrInt(result.model.graph.node!.find((n) => n.name === name)!, 'num_heads', 0);
        expect([`${layer}/MultiHeadAttention`, `${layer}/q_rotary/RotaryEmbedding`, `${layer}/k_rotary/RotaryEmbedding`].map(numHeads)).toEqual([heads[i], heads[i], heads[i]]);
        for (const proj of ['q_proj', 'k_proj', 'v_proj']) expect(width(`${layer}/${proj}/MatMul`)).toEqual([64, heads[i] * HEAD_SIZE]);
        expect(width(`${layer}/o_proj/MatMul`)).toEqual([heads[i] * HEAD_SIZE, 64]);
      }
      // The cos/sin caches are per head size, which does not change.
      expect(result.model.constantInfo('cos_cache')!.dims).toEqual([128, HEAD_SIZE / 2]);
    });

    test('computes what the base computes with the removed entries zeroed, and decodes on its smaller cache', async () => {
      for (const [batch, length, seed] of [
        [1, 3, 23],
        [3, 12, 29],
      ]) {
        const ids = tokens(batch, length, seed);
        const got = await runGenai(pruned, false, ids, undefined, heads);
        const want = await runGenai(zeroed, false, ids, undefined, [HEADS, HEADS]);
        expect(maxDiff(got.logits, (await runGenai(await sessionOf(MHA), false, ids, undefined, [HEADS, HEADS])).logits)).toBeGreaterThan(1e-3);
        expect(maxDiff(got.logits, want.logits)).toBeLessThan(1e-4);
      }
      const prompt = tokens(2, 8, 31);
      const next = tokens(2, 1, 37);
      const first = await runGenai(pruned, false, prompt, undefined, heads);
      const step = await runGenai(pruned, false, next, first.present);
      const rerun = await runGenai(pruned, false, prompt.map((row, b) => [...row, ...next[b]]), undefined, heads);
      expect(maxDiff(step.logits, lastPosition(rerun.logits, 2, 9))).toBeLessThan(1e-4);
    });
  });
});

// The MultiHeadAttention form as the builder writes it for grouped KV heads (llama-genai-mha-repeat.onnx):
// the cache holds the 2 KV heads, made outside the attention (past Concat new = present) and repeated
// to the 4 query heads by make_repeat_kv's subgraph, whose shapes come from the present's Shape; the
// Reshapes to [0, 0, KV, -1] and [0, 0, N * H] read shared constants. A KV group (its kv head and its
// 2 query heads) goes whole: the constants are rewritten per layer, the rotaries' num_heads follow.
describe('llama-genai-mha-repeat.onnx (make_repeat_kv, the cache outside MultiHeadAttention)', () => {
  const REPEAT = 'llama-genai-mha-repeat.onnx';
  const base = OnnxModel.read(path.join(GENAI, REPEAT));

  test('gives the logits of llama.onnx with an empty cache, and one decode step those of re-running the sequence', async () => {
    const session = await sessionOf(REPEAT);
    expect(base.graph.node.filter((n) => n.opType === 'Expand')).toHaveLength(2 * LAYERS);
    expect(base.graph.node.find((n) => n.opType === 'MultiHeadAttention')!.input).toHaveLength(6); // no cache inside
    const ids = tokens(3, 20, 13);
    const got = await runGenai(session, false, ids);
    expect(got.present['present.1.value'].dims).toEqual([3, KV_HEADS, 20, HEAD_SIZE]);
    expect(maxDiff(got.logits, await llamaLogits(ids))).toBeLessThan(1e-4);
    const prompt = tokens(2, 8, 17);
    const next = tokens(2, 1, 19);
    const step = await runGenai(session, false, next, (await runGenai(session, false, prompt)).present);
    expect(maxDiff(step.logits, lastPosition(await llamaLogits(prompt.map((row, b) => [...row, ...next[b]])), 2, 9))).toBeLessThan(1e-4);
  });

  test('prune-gate inspect finds both attentions (2 KV groups, through the repeat) and both FFNs', async () => {
    const r = await built.cli(['inspect', '--model', path.join(GENAI, REPEAT), '--json']);
    expect([r.status, r.stderr]).toEqual([0, '']);
    const ins = JSON.parse(r.stdout) as Inspection;
    expect(ins.prunable.filter((g) => g.kind === 'heads').map((g) => g.units)).toEqual([KV_HEADS, KV_HEADS]);
    expect(ins.prunable.filter((g) => g.kind === 'ffn').map((g) => g.units)).toEqual([176, 176]);
  });

  test('pruned (heads and ffn, 0.3, magnitude): what the zeroed base computes, decoding on its smaller cache', async () => {
    const result = await pruneModel(base, { target: 0.3, structures: ['heads', 'ffn'], importance: 'magnitude', compensate: 'none' });
    const heads = cacheHeads(result.model);
    expect(heads.some((h) => h < KV_HEADS)).toBe(true);
    const numHeads = (name: string) => attrInt(result.model.graph.node.find((n) => n.name === name)!, 'num_heads', 0);
    for (const [i, kv] of heads.entries()) {
      const layer = `/model/layers.${i}/attn`;
      expect([`${layer}/MultiHeadAttention`, `${layer}/q_rotary/RotaryEmbedding`, `${layer}/k_rotary/RotaryEmbedding`].map(numHeads)).toEqual([2 * kv, 2 * kv, kv]);
    }
    const [pruned, zeroed] = [await createSession(result.model), await createSession(zeroedCopy(base, result))];
    try {
      const ids = tokens(3, 12, 29);
      const got = await runGenai(pruned, false, ids, undefined, heads);
      expect(maxDiff(got.logits, (await runGenai(await sessionOf(REPEAT), false, ids)).logits)).toBeGreaterThan(1e-3);
      expect(maxDiff(got.logits, (await runGenai(zeroed, false, ids)).logits)).toBeLessThan(1e-4);
      const prompt = tokens(2, 8, 31);
      const next = tokens(2, 1, 37);
      const step = await runGenai(pruned, false, next, (await runGenai(pruned, false, prompt, undefined, heads)).present);
      const rerun = await runGenai(pruned, false, prompt.map((row, b) => [...row, ...next[b]]), undefined, heads);
      expect(maxDiff(step.logits, lastPosition(rerun.logits, 2, 9))).toBeLessThan(1e-4);
    } finally {
      await pruned.release();
      await zeroed.release();
    }
  });
});

// A float16 model stays float16 through a whole gate with statistics: activations are read and
// accumulated in float32 (importance, the reconstruction's covariances), the compensated weights
// written back in float16, and the model evaluated as given. The float32 fixture of the same form
// and weights, gated the same way, removes the same units and lands at the same perplexity.
describe('a float16 gate with calibration data (activation importance, reconstruction)', () => {
  const run = async (file: string) => {
    const dir = path.join(built.tmp, `gate-${path.basename(file, '.onnx')}`);
    fs.mkdirSync(dir, { recursive: true });
    const set = path.join(dir, 'set');
    fs.mkdirSync(set, { recursive: true });
    const ids = tokens(8, 24, 53).flat();
    fs.writeFileSync(path.join(set, 'input_ids.npy'), encodeNpy({ dtype: DataType.INT64, dims: [8, 24], data: BigInt64Array.from(ids.map(BigInt)) }));
    fs.writeFileSync(path.join(set, 'calibration.json'), JSON.stringify({ task: 'language-model', inputs: { input_ids: 'input_ids.npy' }, batch_size: 4 }));
    const config = path.join(dir, 'pg.yml');
    const prune = '{ target: 0.3, steps: 1, structures: [heads, ffn], importance: activation, compensate: reconstruct, allocation: uniform, align: 1 }';
    fs.writeFileSync(config, [`prune: ${prune}`, 'gate:', '  perplexity: { max-increase: 1000% }', 'latency: { warmup: 0, runs: 1 }'].join('\n'));
    const out = path.join(dir, 'out');
    const r = await runMain(['run', '--config', config, '--model', path.join(GENAI, file), '--calibration', set, '--out', out]);
    expect([r.status, r.stderr.split('\n').filter((l) => l.startsWith('prune-gate:'))]).toEqual([0, []]);
    return { report: JSON.parse(fs.readFileSync(path.join(out, 'report.json'), 'utf8')) as Report, model: OnnxModel.read(path.join(out, 'pruned.onnx')) };
  };

  test('stays float16, removes what the float32 model removes, and lands at its perplexity', async () => {
    const [half, full] = [await run('llama-genai-fp16.onnx'), await run('llama-genai-packed.onnx')];
    const floatTypes = (m: OnnxModel) => [...new Set(m.graph.initializer!.filter((t) => isFloatDType(t.dataType!)).map((t) => t.dataType))];
    expect(floatTypes(half.model)).toEqual([DataType.FLOAT16]);
    expect(half.report.steps.map((s) => s.removed)).toEqual(full.report.steps.map((s) => s.removed));
    expect(half.report.pruned).toEqual(full.report.pruned);
    const perplexity = (r: Report, side: 'base' | 'candidate') => r.metrics.find((m) => m.name === 'perplexity')![side] as number;
    // Compensation changed the weights: the candidate is not the base with units zeroed.
    expect(perplexity(half.report, 'candidate')).not.toBeCloseTo(perplexity(half.report, 'base'), 2);
    expect(Math.abs(perplexity(half.report, 'candidate') / perplexity(full.report, 'candidate') - 1)).toBeLessThan(0.005);
  });
});
