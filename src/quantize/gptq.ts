/**
 * GPTQ (Frantar et al. 2022, "GPTQ: Accurate Post-Training Quantization for Generative
 * Pre-trained Transformers"): a weight's codes chosen one input row at a time, each row's
 * rounding error fed back into the rows not yet quantized so that the layer's output on the
 * calibration data, not its weights, stays close. H = Σ x xᵀ over the layer's calibration inputs
 * (./hessian.ts) is the Hessian of that output error; the feedback reads the upper triangular
 * Cholesky factor U of H⁻¹ (H⁻¹ = UᵀU) after dampening H by 1 % of its mean diagonal, as the
 * paper. The rows go in their order (no act-order: onnxruntime's MatMulNBits would need a
 * `g_idx`), in lazy batches of 128 rows whose feedback to later rows is applied once per batch.
 * Each block's scale is chosen when the block's first row is reached, from the weights as the
 * feedback has left them, by the same symmetric rule as round-to-nearest (./pack.ts), so the
 * codes land in the same MatMulNBits layout with the same bytes. docs/quantization.md describes
 * how it is chosen against round-to-nearest.
 */
import { DenseMath } from '../onnx/linalg';
import type { Hessian } from './hessian';
import { Bits, BlockQuantized, defaultZeroPoint, dequantizeBlocks, emptyBlocks, putBlock, roundCode, symmetricScale } from './pack';

/** Dampening: this fraction of H's mean diagonal is added to its diagonal (the paper's 1 %)... */
export const GPTQ_DAMP = 0.01;
/**
 * ...where it cannot be checked (one calibration batch); else the one of these whose codes, made
 * from every other batch, have the lowest output error on the batches they did not see (as the
 * pruning engine chooses its dampings: src/prune/obs.ts). A small calibration set overfits at 1 %.
 */
export const GPTQ_DAMPINGS = [0.01, 0.1, 1];
/** Rows per lazy batch (the paper's 128), rounded up to whole blocks. */
export const GPTQ_BATCH = 128;

export interface GptqSettings {
  bits: Bits;
  blockSize: number;
  /** Refine 4-bit scales by pack.ts's small search (default true, as round-to-nearest). */
  search?: boolean;
  damp?: number;
}

/**
 * GPTQ's codes of `w` ([K, N] row-major) from the layer's Hessian, at the dampening of
 * GPTQ_DAMPINGS that generalizes best between the two halves of the calibration batches.
 */
export async function gptqWithDampening(w: Float32Array, k: number, n: number, hessian: Hessian, settings: GptqSettings): Promise<BlockQuantized> {
  const fit = hessian.full.map((v, i) => v - hessian.half[i]);
  let damp = GPTQ_DAMP;
  if (hessian.half.some((v) => v !== 0) && fit.some((v) => v !== 0)) {
    let best = Infinity;
    for (const d of GPTQ_DAMPINGS) {
      const error = outputError(dequantizeBlocks(await gptqBlocks(w, k, n, fit, { ...settings, damp: d })), w, hessian.half, k, n);
      if (error < best) [best, damp] = [error, d];
    }
  }
  return gptqBlocks(w, k, n, hessian.full, { ...settings, damp });
}

/** tr((W − Q)ᵀ H (W − Q)): the squared output error of codes Q on inputs whose Σ x xᵀ is H. */
function outputError(q: Float32Array, w: Float32Array, h: Float64Array, k: number, n: number): number {
  const d = new Float64Array(k * n);
  for (let i = 0; i < d.length; i++) d[i] = w[i] - q[i];
  let total = 0;
  const hd = new Float64Array(n);
  for (let i = 0; i < k; i++) {
    hd.fill(0);
    for (let j = 0; j < k; j++) {
      const f = h[i * k + j];
      if (f === 0) continue;
      for (let col = 0; col < n; col++) hd[col] += f * d[j * n + col];
    }
    for (let col = 0; col < n; col++) total += d[i * n + col] * hd[col];
  }
  return total;
}

/**
 * The codes of `w` ([K, N] row-major: K input rows, N outputs) that GPTQ chooses for the
 * Hessian `hessian` (K x K, Σ x xᵀ of the layer's inputs), in MatMulNBits' layout.
 */
export async function gptqBlocks(w: Float32Array, k: number, n: number, hessian: ArrayLike<number>, settings: GptqSettings): Promise<BlockQuantized> {
  const { bits, blockSize } = settings;
  const search = settings.search ?? true;
  const weight = Float64Array.from(w);
  const original = Float64Array.from(w);
  const h = Float64Array.from(hessian);
  // An input never active on the calibration data: its rows do nothing there, and are zero (as the paper's code).
  for (let i = 0; i < k; i++) {
    if (h[i * k + i] !== 0) continue;
    h[i * k + i] = 1;
    weight.fill(0, i * n, (i + 1) * n);
    original.fill(0, i * n, (i + 1) * n);
  }
  let mean = 0;
  for (let i = 0; i < k; i++) mean += h[i * k + i] / k;
  const damp = (settings.damp ?? GPTQ_DAMP) * mean;
  for (let i = 0; i < k; i++) h[i * k + i] += damp;
  const u = await DenseMath.shared().inverseUpperFactor(h, k);
  if (!u || u.some((v) => !Number.isFinite(v))) throw new Error('internal: the dampened Hessian is not positive definite');

  const q = emptyBlocks(k, n, bits, blockSize);
  const all = new Int8Array(k * n);
  const batch = blockSize * Math.max(1, Math.ceil(GPTQ_BATCH / blockSize));
  const errors = new Float64Array(batch * n);
  const scales = new Float32Array(n);
  const codes = new Int32Array(n * blockSize);
  const values = new Float32Array(blockSize);
  const [lo, hi] = bits === 8 ? [-127, 127] : [-8, 7];
  const zp = defaultZeroPoint(bits);
  for (let i1 = 0; i1 < k; i1 += batch) {
    const i2 = Math.min(k, i1 + batch);
    for (let i = i1; i < i2; i++) {
      const b = Math.floor(i / blockSize);
      const r = i - b * blockSize;
      if (r === 0) {
        // The block's scales, from its rows as the feedback so far has left them.
        codes.fill(0);
        for (let col = 0; col < n; col++) {
          for (let t = 0; t < blockSize; t++) values[t] = i + t < k ? weight[(i + t) * n + col] : 0;
          scales[col] = symmetricScale(values, bits, search);
        }
      }
      const d = u[i * k + i];
      const row = i * n;
      const err = (i - i1) * n;
      for (let col = 0; col < n; col++) {
        const s = scales[col];
        const code = s === 0 ? 0 : Math.min(hi, Math.max(lo, roundCode(weight[row + col] / s)));
        codes[col * blockSize + r] = code;
        all[i * n + col] = code;
        errors[err + col] = (weight[row + col] - code * s) / d;
      }
      // Feedback within the batch, row by row.
      for (let j = i + 1; j < i2; j++) {
        const f = u[i * k + j];
        if (f === 0) continue;
        const target = j * n;
        for (let col = 0; col < n; col++) weight[target + col] -= errors[err + col] * f;
      }
      if (r === blockSize - 1 || i === k - 1) {
        for (let col = 0; col < n; col++) putBlock(q, col, b, codes.subarray(col * blockSize, (col + 1) * blockSize), scales[col], zp);
      }
    }
    // The batch's feedback to every later row at once (the paper's lazy batch update).
    for (let j = i2; j < k; j++) {
      const target = j * n;
      for (let i = i1; i < i2; i++) {
        const f = u[i * k + j];
        if (f === 0) continue;
        const err = (i - i1) * n;
        for (let col = 0; col < n; col++) weight[target + col] -= errors[err + col] * f;
      }
    }
  }
  refitScales(q, all, original, h, k, n);
  return q;
}

/**
 * With the codes fixed, each column's block scales s minimizing its output error
 * (w − Ds)ᵀH(w − Ds), D the K x blocks matrix of the column's codes: s = (DᵀHD)⁻¹DᵀHw.
 */
function refitScales(q: BlockQuantized, codes: Int8Array, w: Float64Array, h: Float64Array, k: number, n: number): void {
  const { blocks, blockSize } = q;
  const hw = new Float64Array(k);
  const m = new Float64Array(blocks * blocks);
  const r = new Float64Array(blocks);
  for (let col = 0; col < n; col++) {
    for (let i = 0; i < k; i++) {
      let s = 0;
      for (let j = 0; j < k; j++) s += h[i * k + j] * w[j * n + col];
      hw[i] = s;
    }
    m.fill(0);
    r.fill(0);
    for (let i = 0; i < k; i++) {
      const ci = codes[i * n + col];
      if (ci === 0) continue;
      const bi = Math.floor(i / blockSize);
      r[bi] += ci * hw[i];
      for (let j = 0; j < k; j++) {
        const cj = codes[j * n + col];
        if (cj !== 0) m[bi * blocks + Math.floor(j / blockSize)] += ci * h[i * k + j] * cj;
      }
    }
    const s = solve(m, r, blocks);
    if (!s) continue;
    for (let b = 0; b < blocks; b++) if (m[b * blocks + b] > 0 && Number.isFinite(s[b])) q.scales[col * blocks + b] = Math.fround(s[b]);
  }
}

/** Solves the small symmetric system a x = b by Gaussian elimination; undefined when singular. */
function solve(a: Float64Array, b: Float64Array, n: number): Float64Array | undefined {
  const m = Float64Array.from(a);
  const x = Float64Array.from(b);
  // Blocks with no code (all zero) have an empty row: pin their scale (unused) to 0.
  for (let i = 0; i < n; i++) if (m[i * n + i] === 0) m[i * n + i] = 1;
  for (let c = 0; c < n; c++) {
    let p = c;
    for (let i = c + 1; i < n; i++) if (Math.abs(m[i * n + c]) > Math.abs(m[p * n + c])) p = i;
    if (m[p * n + c] === 0) return undefined;
    if (p !== c) {
      for (let j = 0; j < n; j++) [m[c * n + j], m[p * n + j]] = [m[p * n + j], m[c * n + j]];
      [x[c], x[p]] = [x[p], x[c]];
    }
    for (let i = c + 1; i < n; i++) {
      const f = m[i * n + c] / m[c * n + c];
      if (f === 0) continue;
      for (let j = c; j < n; j++) m[i * n + j] -= f * m[c * n + j];
      x[i] -= f * x[c];
    }
  }
  for (let i = n - 1; i >= 0; i--) {
    let s = x[i];
    for (let j = i + 1; j < n; j++) s -= m[i * n + j] * x[j];
    x[i] = s / m[i * n + i];
  }
  return x;
}
