// The SlimGPT baseline of `npm run bench -- quality` (tools/bench/slimgpt.ts), pinned to steps
// worked by hand: the OBS removal and update with dampening, the grouped-Cholesky head score,
// the Incremental Pruning Ratio, and a pruned model written by the engine's slicing.
import * as path from 'path';
import { calibrationFeeds, loadCalibration } from '../src/eval/calibration';
import { OnnxModel } from '../src/onnx/model';
import { createSession } from '../src/onnx/runtime';
import { incrementalRatios, slimgptLayer, slimgptPrune } from '../tools/bench/slimgpt';
import { FIXTURES_DIR } from './helpers/fixtures';

const f64 = (v: number[]) => Float64Array.from(v);

describe('SlimGPT, as its paper defines it', () => {
  test('one OBS step: the cheaper column goes (||W_j||² / [H⁻¹]_jj) and the kept one takes its part (W_k − W_j·[H⁻¹]_kj / [H⁻¹]_jj)', () => {
    // H = [[2, 1], [1, 2]], H⁻¹ = [[2, −1], [−1, 2]] / 3; y = x₀ + 2·x₁.
    // Scores 1² / (2/3) = 1.5 and 2² / (2/3) = 6: column 0 goes; w₁ = 2 − 1·(−1/3)/(2/3) = 2.5,
    // the least-squares fit of y on x₁ alone (E[y·x₁] / E[x₁²] = 5 / 2).
    const { removed, weights } = slimgptLayer([{ w: f64([1, 2]), k: 2, n: 1, h: f64([2, 1, 1, 2]), units: [[0], [1]] }], 1, 0);
    expect(removed).toEqual([0]);
    expect(weights[0][0]).toBe(0);
    expect(weights[0][1]).toBeCloseTo(2.5, 12);
  });

  test('dampening: percdamp × the mean diagonal is added to H before it is inverted', () => {
    // percdamp 0.5 of mean diag 2: H = [[3, 1], [1, 3]], H⁻¹ = [[3, −1], [−1, 3]] / 8:
    // w₁ = 2 − 1·(−1/8)/(3/8) = 2 + 1/3, for each of two outputs (the second twice the first).
    const { removed, weights } = slimgptLayer([{ w: f64([1, 2, 2, 4]), k: 2, n: 2, h: f64([2, 1, 1, 2]), units: [[0], [1]] }], 1, 0.5);
    expect(removed).toEqual([0]);
    expect([...weights[0]].map((v) => +v.toFixed(12))).toEqual([0, 0, +(7 / 3).toFixed(12), +(14 / 3).toFixed(12)]);
  });

  test('heads: scored by the grouped Cholesky of their block of H⁻¹ (Σ ||W_j||² / L_jj²), one head a round', () => {
    // Head A (channels 0, 1): H_A = [[2, 1], [1, 2]], H_A⁻¹ = [[2, −1], [−1, 2]] / 3, whose
    // Cholesky factor has L₀₀² = 2/3 and L₁₁² = 2/3 − (1/9)/(2/3) = 1/2: score 1.5 + 2 = 3.5.
    // Head B (channels 2, 3): H_B = I, score 1 + 1 = 2 (its weights are 1 each): B goes first; with
    // H block-diagonal, head A's weights are left as they were.
    const h = f64([2, 1, 0, 0, 1, 2, 0, 0, 0, 0, 1, 0, 0, 0, 0, 1]);
    const w = f64([1, 1, 1, 1]);
    const one = slimgptLayer([{ w, k: 4, n: 1, h, units: [[0, 1], [2, 3]] }], 1, 0);
    expect(one.removed).toEqual([1]);
    expect([...one.weights[0]]).toEqual([1, 1, 0, 0]);
    // Weights 1.3 on head B: score 3.38 < 3.5, B still goes (H⁻¹'s plain diagonal, 1.5 + 1.5 = 3 for A,
    // would take A); weights 1.5: score 4.5 > 3.5, A goes.
    expect(slimgptLayer([{ w: f64([1, 1, 1.5, 1.5]), k: 4, n: 1, h, units: [[0, 1], [2, 3]] }], 1, 0).removed).toEqual([0]);
    expect(slimgptLayer([{ w: f64([1, 1, 1.3, 1.3]), k: 4, n: 1, h, units: [[0, 1], [2, 3]] }], 1, 0).removed).toEqual([1]);
  });

  test('the incremental pruning ratio grows with ln(1 + layer), the last layer five times the first', () => {
    // 4 layers from 0.1: 0.1·(1 + 4·ln(1 + i)/ln 4) = 0.1, 0.3, 0.1·(1 + 4·ln 3/ln 4), 0.5.
    const r = incrementalRatios(4, 0.1);
    expect(r[0]).toBeCloseTo(0.1, 12);
    expect(r[1]).toBeCloseTo(0.3, 12);
    expect(r[2]).toBeCloseTo(0.1 * (1 + (4 * Math.log(3)) / Math.log(4)), 12);
    expect(r[3]).toBeCloseTo(0.5, 12);
  });

  test('a pruned model is written by the engine: it loads, runs, and lost the parameters asked (MLP, 20 %)', async () => {
    const base = OnnxModel.read(path.join(FIXTURES_DIR, 'mlp.onnx'));
    const set = loadCalibration(path.join(__dirname, '..', 'calibration', 'mlp'), base);
    const result = await slimgptPrune(base, 0.2, ['ffn', 'heads', 'channels'], calibrationFeeds(set));
    expect(Math.abs(1 - result.paramsAfter / result.paramsBefore - 0.2)).toBeLessThan(0.01);
    // Deeper layers lose a larger share.
    const shares = result.layers.map((l) => l.removed / l.before);
    expect(shares[shares.length - 1]).toBeGreaterThan(shares[0]);
    const session = await createSession(result.model);
    await session.release();
  });
});
