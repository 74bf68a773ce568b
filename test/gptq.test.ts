// Calibrated int4 (issue 29, docs/quantization.md "How the codes are chosen"): GPTQ's error
// feedback on a hand-worked matrix, `quantize-method` parsing, auto keeping each layer's lower
// calibration error, and a GPTQ MatMulNBits that onnxruntime loads and computes with the weights
// the algorithm gives.
import * as path from 'path';
import { UserError } from '../src/errors';
import { parseConfig } from '../src/config/config';
import { calibrationFeeds, loadCalibration } from '../src/eval/calibration';
import { OnnxModel } from '../src/onnx/model';
import { createSession, ort } from '../src/onnx/runtime';
import { toFloat32 } from '../src/onnx/tensor';
import { dequantizeBlocks, quantizeBlocks, quantizeModel } from '../src/quantize';
import { GPTQ_DAMP, GptqSettings, gptqBlocks } from '../src/quantize/gptq';
import { FIXTURES_DIR } from './helpers/fixtures';
import { T, floatTensor, model, node, valueInfo } from './helpers/onnx-builders';

const ROOT = path.resolve(__dirname, '..');

/** tr((W − Q)ᵀ H (W − Q)) for one column. */
const outputError = (w: number[], q: ArrayLike<number>, h: number[][]) =>
  w.reduce((s, _, i) => s + w.reduce((t, __, j) => t + (w[i] - q[i]) * h[i][j] * (w[j] - q[j]), 0), 0);

describe('GPTQ', () => {
  test('a hand-worked step: the first row’s rounding error moves the second row onto another code, and the scale is refit', async () => {
    // W = [0.26, 0.36, -0.8] (K = 3 rows, one output), one block of 4 (the 4th row is padding);
    // inputs 0 and 1 are correlated: H = [[2, 1, 0], [1, 2, 0], [0, 0, 1]]. Rows 0 and 1 tie on
    // H's diagonal, so act-order keeps them in order, and the block's scale is the same either way.
    const w = [0.26, 0.36, -0.8];
    const h = [
      [2, 1, 0],
      [1, 2, 0],
      [0, 0, 1],
    ];
    const q = await gptqBlocks(Float32Array.from(w), 3, 1, Float64Array.from(h.flat()), { bits: 4, blockSize: 4, search: false, damp: 0 });
    // The block's scale: its extreme, -0.8, on code -8: s = 0.1. Row 0: 0.26 -> code 3 (0.3), error
    // -0.04. H⁻¹ = [[2, -1], [-1, 2]] / 3 on the first two rows, so row 1 takes
    // -(-0.04) · H⁻¹₀₁ / H⁻¹₀₀ = -0.02: 0.36 -> 0.34 -> code 3, where rounding 0.36 gives 4.
    // Row 2 is uncorrelated: -0.8 -> code -8. With codes c = [3, 3, -8] fixed, the scale is refit
    // to cᵀHw / cᵀHc = 11.98 / 118.
    const s = 11.98 / 118;
    const got = dequantizeBlocks(q);
    expect(Array.from(got)).toEqual([3, 3, -8].map((c) => expect.closeTo(c * s, 6)));
    const rtn = dequantizeBlocks(quantizeBlocks(Float32Array.from(w), 3, 1, { bits: 4, blockSize: 4, search: false }));
    expect(Array.from(rtn)).toEqual([0.3, 0.4, -0.8].map((v) => expect.closeTo(v, 6)));
    // The output error GPTQ minimizes: round-to-nearest's errors [-0.04, -0.04, 0] cost
    // dᵀHd = 0.0096; GPTQ's codes and scale about 0.0053.
    expect(outputError(w, rtn, h)).toBeCloseTo(0.0096, 6);
    expect(outputError(w, got, h)).toBeLessThan(0.0056);
  });
});

describe('GPTQ act-order with static groups', () => {
  const quantize = (w: number[], h: number[][], order: 'activation' | 'rows', groups: 'static' | 'dynamic') =>
    gptqBlocks(Float32Array.from(w), w.length, 1, Float64Array.from(h.flat()), { bits: 4, blockSize: 4, search: false, damp: 0, order, groups });

  test('a hand-worked step: the input with the largest H diagonal goes first, and its error moves an earlier row onto another code', async () => {
    // W = [0.36, 0.27, -0.8], one block of 4; inputs 0 and 1 correlated, input 1 the strongest:
    // H = [[1, 0.5, 0], [0.5, 2, 0], [0, 0, 1]], so act-order takes the rows as 1, 0, 2.
    const w = [0.36, 0.27, -0.8];
    const h = [
      [1, 0.5, 0],
      [0.5, 2, 0],
      [0, 0, 1],
    ];
    // The block's scale from the original weights: -0.8 on code -8, s = 0.1. Row 1: 0.27 -> code 3,
    // error -0.03. Permuted, H's first two rows are [[2, 0.5], [0.5, 1]], H⁻¹ ∝ [[1, -0.5], [-0.5, 2]]:
    // row 0 takes -0.5 · 0.03 = -0.015: 0.36 -> 0.345 -> code 3, where rounding gives 4. Row 2:
    // code -8. Codes [3, 3, -8]; the scale refit to cᵀHw / cᵀHc = 10.045 / 100.
    const act = dequantizeBlocks(await quantize(w, h, 'activation', 'static'));
    expect(Array.from(act)).toEqual([3, 3, -8].map((c) => expect.closeTo(c * 0.10045, 6)));
    // In row order, row 0 goes first: 0.36 -> code 4, and row 1 (0.27 - 0.01) stays on 3:
    // codes [4, 3, -8], scale 10.54 / 110.
    const rows = dequantizeBlocks(await quantize(w, h, 'rows', 'dynamic'));
    expect(Array.from(rows)).toEqual([4, 3, -8].map((c) => expect.closeTo((c * 10.54) / 110, 6)));
  });

  test('with uncorrelated inputs nothing is fed back: the codes are round-to-nearest’s, each in its own row’s block, whatever the order', async () => {
    const [k, n, blockSize] = [64, 8, 16];
    let seed = 11;
    const random = () => ((seed = (seed * 1103515245 + 12345) % 2 ** 31) / 2 ** 31) * 2 - 1;
    const w = Float32Array.from({ length: k * n }, random);
    // A diagonal H whose order interleaves the blocks (act-order takes rows from all four in turn).
    const diagonal = Array.from({ length: k }, () => Math.exp(3 * random()));
    const h = new Float64Array(k * k);
    diagonal.forEach((v, i) => (h[i * k + i] = v));
    const q = await gptqBlocks(w, k, n, h, { bits: 4, blockSize, damp: 0 });
    const rtn = quantizeBlocks(w, k, n, { bits: 4, blockSize });
    expect(Array.from(q.packed)).toEqual(Array.from(rtn.packed));
    // Each block's scale refit by least squares with its codes c, H diagonal: Σ hcw / Σ hc².
    const codes = dequantizeBlocks({ ...rtn, scales: new Float32Array(rtn.scales.length).fill(1) });
    for (let col = 0; col < n; col++) {
      for (let b = 0; b < k / blockSize; b++) {
        let [hcw, hcc] = [0, 0];
        for (let i = b * blockSize; i < (b + 1) * blockSize; i++) {
          const c = codes[i * n + col];
          hcw += diagonal[i] * c * w[i * n + col];
          hcc += diagonal[i] * c * c;
        }
        expect(q.scales[col * q.blocks + b]).toBeCloseTo(hcw / hcc, 6);
      }
    }
  });

  test('on a layer whose inputs differ in strength, act-order’s output error is lower than in row order', async () => {
    const [k, n, rows] = [128, 16, 256];
    let seed = 3;
    const random = () => ((seed = (seed * 1103515245 + 12345) % 2 ** 31) / 2 ** 31) * 2 - 1;
    const w = Float32Array.from({ length: k * n }, random);
    // Each input the sum of two neighbours' noise (correlated), scaled by a gain from 1/e² to e².
    const gain = Array.from({ length: k }, () => Math.exp(2 * random()));
    const noise = Array.from({ length: rows * (k + 1) }, random);
    const x = Float64Array.from({ length: rows * k }, (_, i) => gain[i % k] * (noise[i + Math.floor(i / k)] + noise[i + Math.floor(i / k) + 1]));
    const h = new Float64Array(k * k);
    for (let r = 0; r < rows; r++) for (let i = 0; i < k; i++) for (let j = 0; j < k; j++) h[i * k + j] += x[r * k + i] * x[r * k + j];
    const error = async (settings: Partial<GptqSettings>) => {
      const q = dequantizeBlocks(await gptqBlocks(w, k, n, h, { bits: 4, blockSize: 32, ...settings }));
      let total = 0;
      for (let col = 0; col < n; col++) total += outputError(Array.from({ length: k }, (_, i) => w[i * n + col]), Array.from({ length: k }, (_, i) => q[i * n + col]), Array.from({ length: k }, (_, i) => Array.from(h.subarray(i * k, (i + 1) * k))));
      return total;
    };
    const [byDefault, act, inOrder] = [await error({}), await error({ order: 'activation', groups: 'static' }), await error({ order: 'rows', groups: 'dynamic' })];
    expect(byDefault).toBe(act);
    expect(act).toBeLessThan(0.9 * inOrder);
  });
});

describe('quantize-method', () => {
  const parse = (text: string) => parseConfig(text, path.resolve('prune-gate.yml'));
  test('parses rtn, gptq and auto; absent means auto; anything else is a one-line error naming the key', () => {
    expect(parse('quantize: int4\n').quantizeMethod).toBeUndefined();
    for (const m of ['rtn', 'gptq', 'auto']) expect(parse(`quantize: int4\nquantize-method: ${m}\n`).quantizeMethod).toBe(m);
    expect(() => parse('quantize: int4\nquantize-method: awq\n')).toThrow(UserError);
    expect(() => parse('quantize: int4\nquantize-method: awq\n')).toThrow("prune-gate.yml: quantize-method: 'awq' is not one of auto, rtn, gptq");
  });

  test('from code, an unknown method is refused', async () => {
    const m = OnnxModel.fromProto(
      model({ nodes: [node('MatMul', ['x', 'w'], ['y'])], inputs: [valueInfo('x', T.FLOAT, [1, 32])], outputs: [valueInfo('y', T.FLOAT, [1, 8])], initializers: [floatTensor('w', [32, 8])] }),
    );
    await expect(quantizeModel(m, { bits: 4, method: 'best' as never })).rejects.toThrow('quantize: method must be one of auto, rtn, gptq (got best)');
  });
});

describe('auto', () => {
  test('llama: each MatMulNBits layer keeps the method with the lower calibration error, and the report’s means are those errors', async () => {
    const float = OnnxModel.read(path.join(FIXTURES_DIR, 'llama.onnx'));
    const batches = calibrationFeeds(loadCalibration(path.join(ROOT, 'calibration', 'llama'), float));
    const calibration = function* () {
      let n = 0;
      for (const feeds of batches()) if (n++ < 2) yield feeds;
    };
    const options = { bits: 4 as const, calibration, keepFloat: 0 };
    const [rtn, gptq, auto] = [await quantizeModel(float, { ...options, method: 'rtn' }), await quantizeModel(float, { ...options, method: 'gptq' }), await quantizeModel(float, options)];
    const nbits = auto.quantized.filter((q) => q.format === 'MatMulNBits');
    expect(nbits.length).toBeGreaterThan(10);
    const errorOf = (r: typeof rtn, node: string) => r.quantized.find((q) => q.node === node)!.error!;
    for (const layer of nbits) {
      const [e1, e2] = [errorOf(rtn, layer.node), errorOf(gptq, layer.node)];
      expect(layer.method).toBe(e2 < e1 ? 'gptq' : 'rtn');
      expect(layer.error).toBeCloseTo(Math.min(e1, e2), 6);
    }
    expect(rtn.method).toBeUndefined();
    expect(gptq.method).toMatchObject({ asked: 'gptq', gptqLayers: nbits.length, layers: nbits.length });
    const mean = (f: (node: string) => number) => nbits.reduce((s, q) => s + f(q.node), 0) / nbits.length;
    expect(auto.method!.error).toBeCloseTo(mean((n) => Math.min(errorOf(rtn, n), errorOf(gptq, n))), 6);
    expect(auto.method!.rtnError).toBeCloseTo(mean((n) => errorOf(rtn, n)), 6);
    // On this model GPTQ wins on most layers, by a margin.
    expect(auto.method!.gptqLayers).toBeGreaterThan(nbits.length / 2);
    expect(auto.method!.error).toBeLessThan(0.8 * auto.method!.rtnError);
    // The same bytes as round-to-nearest: GPTQ changes the codes, not the format.
    expect(auto.weightBytesAfter).toBe(rtn.weightBytesAfter);
  }, 60000);
});

describe('a GPTQ MatMulNBits in onnxruntime', () => {
  test('loads, and computes x · W with W the weights GPTQ gives for the calibration inputs’ Hessian', async () => {
    const [k, n, rows] = [64, 8, 48];
    let seed = 7;
    const random = () => ((seed = (seed * 1103515245 + 12345) % 2 ** 31) / 2 ** 31) * 2 - 1;
    const w = Float32Array.from({ length: k * n }, random);
    // Correlated inputs (each the sum of two neighbours' noise), so the feedback matters, of
    // different strengths, so act-order takes the rows out of order, across both blocks.
    const noise = Array.from({ length: rows * (k + 1) }, random);
    const gain = Array.from({ length: k }, () => Math.exp(random()));
    const x = Float32Array.from({ length: rows * k }, (_, i) => gain[i % k] * (noise[i + Math.floor(i / k)] + noise[i + Math.floor(i / k) + 1]));
    const float = OnnxModel.fromProto(
      model({ nodes: [node('MatMul', ['x', 'w'], ['y'])], inputs: [valueInfo('x', T.FLOAT, ['rows', k])], outputs: [valueInfo('y', T.FLOAT, ['rows', n])], initializers: [floatTensor('w', [k, n], w)] }),
    );
    const feeds = { x: new ort.Tensor('float32', x, [rows, k]) };
    // One batch: the dampening cannot be checked on halves, and is the paper's 1 %.
    // accuracy_level 0: the kernel computes in float, so its output is x · W to float rounding.
    const result = await quantizeModel(float, { bits: 4, method: 'gptq', calibration: () => [feeds], keepFloat: 0, accuracyLevel: 0 });
    expect(result.quantized).toMatchObject([{ format: 'MatMulNBits', bits: 4, blockSize: 32, method: 'gptq' }]);

    const hessian = new Float64Array(k * k);
    for (let r = 0; r < rows; r++) for (let i = 0; i < k; i++) for (let j = 0; j < k; j++) hessian[i * k + j] += x[r * k + i] * x[r * k + j];
    const expected = dequantizeBlocks(await gptqBlocks(w, k, n, hessian, { bits: 4, blockSize: 32, damp: GPTQ_DAMP }));
    const mm = result.model.graph.node.find((nd) => nd.opType === 'MatMulNBits')!;
    const [codes, scales] = [mm.input![1], mm.input![2]];
    const stored = dequantizeBlocks({
      packed: result.model.constant(codes)!.data as Uint8Array,
      scales: toFloat32(result.model.constant(scales)!),
      n,
      k,
      blocks: 2,
      blockSize: 32,
      bits: 4,
    });
    // The same codes; scales equal but for the last bits (onnxruntime sums each batch's XᵀX in float32).
    expect(Array.from(stored)).toEqual(Array.from(expected, (v) => expect.closeTo(v, 6)));

    const session = await createSession(result.model);
    try {
      const y = (await session.run(feeds)).y.data as Float32Array;
      let worst = 0;
      for (let r = 0; r < rows; r++) {
        for (let c = 0; c < n; c++) {
          let want = 0;
          for (let i = 0; i < k; i++) want += x[r * k + i] * expected[i * n + c];
          worst = Math.max(worst, Math.abs(y[r * n + c] - want));
        }
      }
      expect(worst).toBeLessThan(1e-4);
    } finally {
      await session.release();
    }
  });
});
