/**
 * GPTQ (Frantar et al. 2022, "GPTQ: Accurate Post-Training Quantization for Generative
 * Pre-trained Transformers"): a weight's codes chosen one input row at a time, each row's
 * rounding error fed back into the rows not yet quantized so that the layer's output on the
 * calibration data, not its weights, stays close. H = Σ x xᵀ over the layer's calibration inputs
 * (./hessian.ts) is the Hessian of that output error; the feedback reads the upper triangular
 * Cholesky factor U of H⁻¹ (H⁻¹ = UᵀU) after dampening H by 1 % of its mean diagonal, as the
 * paper. The rows go in order of decreasing H diagonal, the inputs with the most energy first
 * (the paper's act-order, with "static groups" as AutoGPTQ's `static_groups`): every block's scale
 * is chosen up front from the original weights by the same symmetric rule as round-to-nearest
 * (./pack.ts), each row is quantized with the scale of the block it belongs to in storage, and its
 * codes go back to its own place. So the codes land in MatMulNBits' contiguous blocks with the same
 * bytes, and onnxruntime needs no `g_idx`. They go in lazy batches of 128 rows (in that order)
 * whose feedback to later rows is applied once per batch; once all codes are fixed, each column's
 * block scales are refit in the same output metric. docs/quantization.md says what act-order bought
 * and how GPTQ is chosen against round-to-nearest.
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
/**
 * Rows per lazy batch (the paper's 128), rounded up to whole blocks: a dynamic block's scale reads
 * its rows with all feedback so far applied (in row order, a block never straddles two batches).
 */
export const GPTQ_BATCH = 128;

export interface GptqSettings {
  bits: Bits;
  blockSize: number;
  /** Refine 4-bit scales by pack.ts's small search (default true, as round-to-nearest). */
  search?: boolean;
  damp?: number;
  /** Rows by decreasing H diagonal (act-order: default), or in their order (the paper's plain GPTQ). */
  order?: 'activation' | 'rows';
  /**
   * Each block's scales from the original weights up front (static: default), or when the block's
   * first row is reached, from its rows as the feedback has left them (dynamic: the paper's, in row
   * order). docs/quantization.md has both measured.
   */
  groups?: 'static' | 'dynamic';
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
  const original = Float64Array.from(w);
  const h = Float64Array.from(hessian);
  // An input never active on the calibration data: its rows do nothing there, and are zero (as the paper's code).
  for (let i = 0; i < k; i++) {
    if (h[i * k + i] !== 0) continue;
    h[i * k + i] = 1;
    original.fill(0, i * n, (i + 1) * n);
  }
  let mean = 0;
  for (let i = 0; i < k; i++) mean += h[i * k + i] / k;
  const damp = (settings.damp ?? GPTQ_DAMP) * mean;
  for (let i = 0; i < k; i++) h[i * k + i] += damp;

  const order = settings.order ?? 'activation';
  const groups = settings.groups ?? 'static';
  // perm[p]: the row quantized p-th. Act-order: by decreasing H diagonal, ties in row order.
  const perm = Int32Array.from({ length: k }, (_, i) => i);
  if (order === 'activation') perm.sort((a, b) => h[b * k + b] - h[a * k + a] || a - b);
  const hp = new Float64Array(k * k);
  for (let p = 0; p < k; p++) for (let t = 0; t < k; t++) hp[p * k + t] = h[perm[p] * k + perm[t]];
  const u = await DenseMath.shared().inverseUpperFactor(hp, k);
  if (!u || u.some((v) => !Number.isFinite(v))) throw new Error('internal: the dampened Hessian is not positive definite');
  // The weight in the order its rows are quantized.
  const weight = new Float64Array(k * n);
  for (let p = 0; p < k; p++) weight.set(original.subarray(perm[p] * n, (perm[p] + 1) * n), p * n);

  const q = emptyBlocks(k, n, bits, blockSize);
  const { blocks } = q;
  const all = new Int8Array(k * n);
  const scales = new Float32Array(blocks * n);
  const values = new Float32Array(blockSize);
  // position[i]: where storage row i is in `weight`.
  const position = new Int32Array(k);
  for (let p = 0; p < k; p++) position[perm[p]] = p;
  // Block b's scales, from its storage rows' values in `from` (rowOf: a storage row's place there).
  const scaled = new Uint8Array(blocks);
  const blockScales = (b: number, rowOf: (i: number) => number, from: Float64Array) => {
    for (let col = 0; col < n; col++) {
      for (let t = 0; t < blockSize; t++) {
        const i = b * blockSize + t;
        values[t] = i < k ? from[rowOf(i) * n + col] : 0;
      }
      scales[b * n + col] = symmetricScale(values, bits, search);
    }
    scaled[b] = 1;
  };
  // Static groups: every block's scales up front, from the weights before any feedback.
  if (groups === 'static') for (let b = 0; b < blocks; b++) blockScales(b, (i) => i, original);

  const batch = blockSize * Math.max(1, Math.ceil(GPTQ_BATCH / blockSize));
  const errors = new Float64Array(batch * n);
  const [lo, hi] = bits === 8 ? [-127, 127] : [-8, 7];
  for (let p1 = 0; p1 < k; p1 += batch) {
    const p2 = Math.min(k, p1 + batch);
    for (let p = p1; p < p2; p++) {
      const i = perm[p];
      const b = Math.floor(i / blockSize);
      // Dynamic groups: the block's scales when its first row is reached, from its rows (none
      // quantized yet) as the feedback so far has left them (out of order, rows past this batch
      // lack its lazy feedback).
      if (!scaled[b]) blockScales(b, (row) => position[row], weight);
      const d = u[p * k + p];
      const row = p * n;
      const err = (p - p1) * n;
      const s0 = b * n;
      for (let col = 0; col < n; col++) {
        const s = scales[s0 + col];
        const code = s === 0 ? 0 : Math.min(hi, Math.max(lo, roundCode(weight[row + col] / s)));
        all[i * n + col] = code;
        errors[err + col] = (weight[row + col] - code * s) / d;
      }
      // Feedback within the batch, row by row.
      for (let t = p + 1; t < p2; t++) {
        const f = u[p * k + t];
        if (f === 0) continue;
        const target = t * n;
        for (let col = 0; col < n; col++) weight[target + col] -= errors[err + col] * f;
      }
    }
    // The batch's feedback to every later row at once (the paper's lazy batch update).
    for (let t = p2; t < k; t++) {
      const target = t * n;
      for (let p = p1; p < p2; p++) {
        const f = u[p * k + t];
        if (f === 0) continue;
        const err = (p - p1) * n;
        for (let col = 0; col < n; col++) weight[target + col] -= errors[err + col] * f;
      }
    }
  }
  // Every code back in its row's storage block, with that block's scale.
  const zp = defaultZeroPoint(bits);
  const codes = new Int32Array(blockSize);
  for (let col = 0; col < n; col++) {
    for (let b = 0; b < blocks; b++) {
      for (let t = 0; t < blockSize; t++) {
        const i = b * blockSize + t;
        codes[t] = i < k ? all[i * n + col] : 0;
      }
      putBlock(q, col, b, codes, scales[b * n + col], zp);
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
