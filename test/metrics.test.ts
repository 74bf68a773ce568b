// The metrics agree with an independent computation. The models are built by
// hand so that their outputs are known exactly: a "bigram" language model whose logits at each
// position are ln P[token] (a fixed table, so softmax gives P back), and a classifier whose
// logits are its input.
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { onnx } from 'onnx-proto';
import { loadCalibration } from '../src/eval/calibration';
import { encodeNpy } from '../src/eval/npy';
import { Evaluator } from '../src/eval/evaluator';
import { measureLatency } from '../src/eval/latency';
import { percentile } from '../src/eval/bootstrap';
import { DataType } from '../src/onnx/dtype';
import { OnnxModel } from '../src/onnx/model';
import { ort } from '../src/onnx/runtime';
import { T, floatTensor, model, node, valueInfo } from './helpers/onnx-builders';

const P = [
  [0.5, 0.25, 0.125, 0.125],
  [0.25, 0.5, 0.125, 0.125],
  [0.1, 0.2, 0.3, 0.4],
  [0.25, 0.25, 0.25, 0.25],
];
const Q = [
  [0.25, 0.5, 0.125, 0.125],
  [0.25, 0.5, 0.125, 0.125],
  [0.4, 0.3, 0.2, 0.1],
  [0.25, 0.25, 0.25, 0.25],
];
const SEQUENCES = [
  [0, 1, 2, 3],
  [3, 3, 0, 0],
];

/** logits[b, t, :] = ln table[tokens[b, t], :]; optionally declares an (unused) attention_mask. */
function bigramModel(table: number[][], withMask: boolean): onnx.ModelProto {
  const V = table.length;
  const inputs = [valueInfo('input_ids', T.INT64, ['batch', 'sequence'])];
  if (withMask) inputs.push(valueInfo('attention_mask', T.INT64, ['batch', 'sequence']));
  return model({
    nodes: [node('Gather', ['table', 'input_ids'], ['logits'])],
    inputs,
    outputs: [valueInfo('logits', T.FLOAT, ['batch', 'sequence', V])],
    initializers: [floatTensor('table', [V, V], table.flat().map(Math.log))],
  });
}

/** logits = x + bias: with a zero bias the logits are the input itself. */
function passThrough(bias: number[]): onnx.ModelProto {
  return model({
    nodes: [node('Add', ['x', 'bias'], ['logits'])],
    inputs: [valueInfo('x', T.FLOAT, ['batch', 3])],
    outputs: [valueInfo('logits', T.FLOAT, ['batch', 3])],
    initializers: [floatTensor('bias', [3], bias)],
  });
}

let tmp: string;
beforeAll(() => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'prune-gate-metrics-'));
});
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

function save(name: string, proto: onnx.ModelProto): OnnxModel {
  const file = path.join(tmp, name);
  fs.writeFileSync(file, onnx.ModelProto.encode(proto).finish());
  return OnnxModel.read(file);
}

function lmSet(name: string, mask?: number[][], batchSize = 16): string {
  const dir = path.join(tmp, name);
  fs.mkdirSync(dir);
  const ids = { dtype: DataType.INT64, dims: [2, 4], data: BigInt64Array.from(SEQUENCES.flat(), BigInt) };
  fs.writeFileSync(path.join(dir, 'ids.npy'), encodeNpy(ids));
  const inputs: Record<string, string> = { input_ids: 'ids.npy' };
  if (mask) {
    fs.writeFileSync(path.join(dir, 'mask.npy'), encodeNpy({ dtype: DataType.INT64, dims: [2, 4], data: BigInt64Array.from(mask.flat(), BigInt) }));
    inputs.attention_mask = 'mask.npy';
  }
  fs.writeFileSync(path.join(dir, 'calibration.json'), JSON.stringify({ task: 'language-model', inputs, batch_size: batchSize }));
  return dir;
}

const FAST = { latency: { warmup: 0, runs: 1 } };

describe('language-model metrics on a bigram model', () => {
  test('perplexity and next-token accuracy by hand, agreement / KL / cosine by a direct loop', async () => {
    const base = save('p.onnx', bigramModel(P, false));
    const cand = save('q.onnx', bigramModel(Q, false));
    const set = loadCalibration(lmSet('lm'), base);
    const evaluator = await Evaluator.create(base, set, FAST);
    try {
      // Transitions 0>1 1>2 2>3 and 3>3 3>0 0>0 have P = .25 .125 .4 .25 .25 .5: product 1/2560.
      expect(evaluator.baseTask.perplexity).toBeCloseTo(Math.pow(2560, 1 / 6), 5);
      // argmax of rows 0,1,2,3 is 0,1,3,0: right for 2>3, 3>0, 0>0.
      expect(evaluator.baseTask['next-token-accuracy']).toBeCloseTo(3 / 6, 10);

      const e = await evaluator.evaluate(cand);
      // Q: .5 .125 .1 .25 .25 .25 -> product 1/10240.
      expect(e.values.candidate.perplexity).toBeCloseTo(Math.pow(10240, 1 / 6), 5);
      // argmax of Q rows 0,1,2,3 is 1,1,0,0: right for 0>1, 3>0, (0>0 no: argmax 1).
      expect(e.values.candidate['next-token-accuracy']).toBeCloseTo(2 / 6, 10);
      // Every position counts for the comparison: rows used 0,1,2,3,3,3,0,0; argmax agree on 1 and 3.
      expect(e.values.candidate.agreement).toBeCloseTo(4 / 8, 10);
      let kl = 0;
      let cos = 0;
      const rows = SEQUENCES.flat();
      for (const r of rows) {
        for (let j = 0; j < 4; j++) kl += P[r][j] * Math.log(P[r][j] / Q[r][j]);
        const a = P[r].map(Math.log);
        const b = Q[r].map(Math.log);
        const dot = a.reduce((s, v, j) => s + v * b[j], 0);
        cos += dot / Math.sqrt(a.reduce((s, v) => s + v * v, 0) * b.reduce((s, v) => s + v * v, 0));
      }
      expect(e.values.candidate['kl-divergence']).toBeCloseTo(kl / rows.length, 6);
      expect(e.values.candidate.cosine).toBeCloseTo(cos / rows.length, 6);
      // The base compared with itself, and sizes from the files.
      expect(e.values.base).toMatchObject({ agreement: 1, 'kl-divergence': 0, cosine: 1 });
      expect(e.base.bytes).toBe(fs.statSync(base.path).size);
      expect(e.base.params).toBe(16);
    } finally {
      await evaluator.close();
    }
  });

  test('positions where attention_mask is 0 are not counted; batches of 1 give the same numbers', async () => {
    const base = save('pm.onnx', bigramModel(P, true));
    const cand = save('qm.onnx', bigramModel(Q, true));
    const mask = [
      [1, 1, 1, 0],
      [1, 1, 1, 1],
    ];
    for (const batchSize of [16, 1]) {
      const set = loadCalibration(lmSet(`lm-mask-${batchSize}`, mask, batchSize), base);
      // cacheBytes 0: the base is re-run for each candidate batch instead of cached.
      const evaluator = await Evaluator.create(base, set, { ...FAST, cacheBytes: 0 });
      try {
        // 2>3 drops out (position 3 is padding): .25 .125 .25 .25 .5 -> product 1/1024, 5 predictions.
        expect(evaluator.baseTask.perplexity).toBeCloseTo(4, 6);
        expect(evaluator.baseTask['next-token-accuracy']).toBeCloseTo(2 / 5, 10);
        const e = await evaluator.evaluate(cand);
        // 7 real positions: rows 0,1,2 and 3,3,0,0; agree on 1,3,3.
        expect(e.values.candidate.agreement).toBeCloseTo(3 / 7, 10);
      } finally {
        await evaluator.close();
      }
    }
  });
});

test('classification accuracy and agreement by hand', async () => {
  const base = save('c0.onnx', passThrough([0, 0, 0]));
  const cand = save('c1.onnx', passThrough([0, 0, 2.5]));
  const dir = path.join(tmp, 'cls');
  fs.mkdirSync(dir);
  const x = [1, 0, 0, 0, 2, 1, 0, 0, 3, 5, 1, 0];
  fs.writeFileSync(path.join(dir, 'x.npy'), encodeNpy({ dtype: DataType.FLOAT, dims: [4, 3], data: Float32Array.from(x) }));
  fs.writeFileSync(path.join(dir, 'y.npy'), encodeNpy({ dtype: DataType.INT64, dims: [4], data: BigInt64Array.from([0n, 2n, 2n, 1n]) }));
  fs.writeFileSync(path.join(dir, 'calibration.json'), JSON.stringify({ task: 'classification', inputs: { x: 'x.npy' }, labels: 'y.npy', batch_size: 3 }));
  const set = loadCalibration(dir, base);
  const evaluator = await Evaluator.create(base, set, FAST);
  try {
    // argmax per row 0,1,2,0 against labels 0,2,2,1.
    expect(evaluator.baseTask.accuracy).toBe(0.5);
    const e = await evaluator.evaluate(cand);
    // + [0,0,2.5]: argmax 2,2,2,0 -> labels right on rows 1,2; agrees with base on rows 2,3.
    expect(e.values.candidate.accuracy).toBe(0.5);
    expect(e.values.candidate.agreement).toBe(0.5);
    expect(e.values.candidate.params).toBe(3);
  } finally {
    await evaluator.close();
  }
});

test('a label outside the output classes is named', async () => {
  const base = save('c2.onnx', passThrough([0, 0, 0]));
  const dir = path.join(tmp, 'cls-bad');
  fs.mkdirSync(dir);
  fs.writeFileSync(path.join(dir, 'x.npy'), encodeNpy({ dtype: DataType.FLOAT, dims: [2, 3], data: new Float32Array(6) }));
  fs.writeFileSync(path.join(dir, 'y.npy'), encodeNpy({ dtype: DataType.INT64, dims: [2], data: BigInt64Array.from([0n, 7n]) }));
  fs.writeFileSync(path.join(dir, 'calibration.json'), JSON.stringify({ task: 'classification', inputs: { x: 'x.npy' }, labels: 'y.npy' }));
  const set = loadCalibration(dir, base);
  await expect(Evaluator.create(base, set, FAST)).rejects.toThrow(/label 7 of sample 1 is not a class of output 'logits' \(3 classes: 0\.\.2\)/);
});

describe('latency', () => {
  test('percentiles interpolate like numpy', () => {
    const v = [10, 1, 9, 2, 8, 3, 7, 4, 6, 5];
    expect(percentile(v, 50)).toBe(5.5); // numpy.percentile(range(1, 11), 50)
    expect(percentile(v, 95)).toBeCloseTo(9.55, 10);
    expect(percentile([4], 95)).toBe(4);
  });

  test('base and candidate alternate, warm-up runs are not timed, speedup = base p50 / candidate p50', async () => {
    // A clock that only the runs move: each run takes its model's duration, and the warm-up
    // run a much longer one, which must not reach the percentiles.
    let now = 0;
    const calls: string[] = [];
    const model = (name: string, ms: number[]) => ({
      run: async () => {
        const i = calls.filter((c) => c === name).length;
        calls.push(name);
        now += ms[Math.min(i, ms.length - 1)];
        return {} as ort.InferenceSession.ReturnType;
      },
    });
    const base = model('b', [1000, 40, 44, 40, 42]);
    const candidate = model('c', [1000, 10, 10, 12, 10]);
    const result = await measureLatency(base, candidate, {}, { warmup: 1, runs: 4 }, () => now);
    expect(calls.join('')).toBe('bc' + 'bc' + 'cb' + 'bc' + 'cb');
    expect(result.base).toEqual({ p50_ms: 41, p95_ms: 43.7 });
    expect(result.candidate).toEqual({ p50_ms: 10, p95_ms: 11.7 });
    expect(result.speedup).toBe(4.1);
  });
});
