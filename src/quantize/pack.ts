/**
 * Weight quantization arithmetic, free of any graph: symmetric block-wise codes in the layout of
 * onnxruntime's `com.microsoft` `MatMulNBits` (and `GatherBlockQuantized`), and symmetric int8
 * per output channel for `DequantizeLinear`.
 *
 * MatMulNBits layout (docs/quantization.md, "The stored formats"): for a weight B of K rows (input
 * features) and N columns (outputs), `B` is uint8 [N, ceil(K/block), block·bits/8] holding each
 * column's K values in blocks along K, packed low bits first (for 4 bits: the first value in the
 * low nibble); `scales` is [N, ceil(K/block)]; a value is `(code - zero_point) · scale`, and with
 * no `zero_points` input the zero point is 2^(bits-1) (8 for 4 bits, 128 for 8 bits). K is padded
 * with zeros to a whole number of blocks.
 *
 * With `zeroPoints` (asymmetric, as onnxruntime's quantizer writes a weight with zero points), each
 * block spans [min(0, min w), max(0, max w)]: scale = span / (2^bits - 1), zero point
 * round(-low / scale), code = round(w / scale) + zero point, clamped to [0, 2^bits - 1].
 *
 * Otherwise codes are symmetric around that default zero point, so no zero points are stored:
 * - 8 bits: q = round(w / s) in [-127, 127] with s = max|w| / 127, stored as q + 128.
 * - 4 bits: q in [-8, 7] with s = m / -8, m the block's value of largest magnitude (the sign
 *   trick of llama.cpp's Q4_0: the extreme value lands exactly on -8, so all 16 codes are used;
 *   the scale may be negative). Then the scale is refined by a small search that minimizes the
 *   block's squared error (clipping the extreme a little often lowers the error of all others).
 */

export type Bits = 4 | 8;

export interface BlockQuantized {
  /** [N, blocks, block·bits/8], low bits first. */
  packed: Uint8Array;
  /** [N, blocks], row-major. */
  scales: Float32Array;
  /** [N, blocks], one code per block (unpacked), when asymmetric; else the default zero point. */
  zeroPoints?: Uint8Array;
  n: number;
  k: number;
  blocks: number;
  blockSize: number;
  bits: Bits;
}

/**
 * Math.round for a code: halves up like it, and the same integer except where x + 0.5 itself
 * rounds up (x = 0.49999999999999994), about three times faster in V8, which calls out for
 * Math.round of a double. The 4-bit scale search rounds each value of
 * a 7B model eight times.
 */
export function roundCode(x: number): number {
  return Math.floor(x + 0.5);
}

/** The zero point onnxruntime assumes when `zero_points` is absent. */
export function defaultZeroPoint(bits: Bits): number {
  return 1 << (bits - 1);
}

/**
 * Quantizes the weight `w`, given row-major as `rows` x `cols`, along the contraction axis.
 * `transposed` false: w is [K, N] (MatMul's B; K = rows); true: w is [N, K] (Gemm transB=1, an
 * embedding table [V, D] quantized along D; K = cols).
 */
export function quantizeBlocks(w: Float32Array, rows: number, cols: number, options: BlockOptions): BlockQuantized {
  const q = new BlockQuantizer(rows, cols, options);
  q.add(w);
  return q.finish();
}

export interface BlockOptions {
  bits: Bits;
  blockSize: number;
  transposed?: boolean;
  /** Refine 4-bit symmetric scales by a small search (default true). */
  search?: boolean;
  /** Asymmetric codes with a zero point per block. */
  zeroPoints?: boolean;
}

/**
 * The same codes as quantizeBlocks, fed with the weight's rows in order, a chunk at a time (as
 * they stream from the model's file): memory is the codes plus one block of rows, not the
 * weight. A [K, N] weight's rows wait until a block of `blockSize` of them is complete; a
 * transposed one's rows are whole columns, encoded as they come.
 */
export class BlockQuantizer {
  private readonly result: BlockQuantized;
  private readonly pending: Float32Array;
  private pendingRows = 0;
  private row = 0;
  private readonly values: Float32Array;
  private readonly codes: Int32Array;

  constructor(
    private readonly rows: number,
    private readonly cols: number,
    private readonly options: BlockOptions,
  ) {
    const { bits, blockSize } = options;
    const [k, n] = options.transposed ? [cols, rows] : [rows, cols];
    this.result = emptyBlocks(k, n, bits, blockSize);
    if (options.zeroPoints) this.result.zeroPoints = new Uint8Array(n * this.result.blocks);
    this.pending = new Float32Array(options.transposed ? 0 : blockSize * cols);
    this.values = new Float32Array(blockSize);
    this.codes = new Int32Array(blockSize);
  }

  /** The next whole rows of the weight. */
  add(chunk: Float32Array): void {
    const { cols } = this;
    const { blockSize } = this.options;
    const { k, blocks } = this.result;
    for (let at = 0; at < chunk.length; at += cols, this.row++) {
      if (this.options.transposed) {
        // Row `row` is column `row` of the [K, N] view: all its blocks at once.
        for (let b = 0; b < blocks; b++) {
          const start = at + b * blockSize;
          const end = at + Math.min(k, (b + 1) * blockSize);
          this.encodeBlock(this.row, b, (i) => (start + i < end ? chunk[start + i] : 0));
        }
      } else {
        this.pending.set(chunk.subarray(at, at + cols), this.pendingRows * cols);
        if (++this.pendingRows === blockSize) this.flushBlock();
      }
    }
  }

  finish(): BlockQuantized {
    if (this.row !== this.rows) throw new Error(`internal: quantized ${this.row} of ${this.rows} rows`);
    if (this.pendingRows > 0) this.flushBlock();
    return this.result;
  }

  /** Encodes the block of rows gathered so far (zeros past the last row, K's padding) for every column. */
  private flushBlock(): void {
    const { cols, pending, pendingRows } = this;
    const b = Math.floor((this.row - 1) / this.options.blockSize);
    if (this.options.bits === 8 && !this.result.zeroPoints) this.flushBlock8(b);
    else {
      // One column's block gathered by plain loops, not a call per value: the 4-bit codes of a
      // 7B model are 5 G values (docs/measured.md).
      const { values } = this;
      values.fill(0);
      for (let col = 0; col < cols; col++) {
        for (let i = 0; i < pendingRows; i++) values[i] = pending[i * cols + col];
        this.encodeValues(col, b);
      }
    }
    this.pendingRows = 0;
  }

  /**
   * encodeBlock's symmetric 8-bit codes (scale8, encode) for every column of the pending rows, without a
   * call per value: a 7B model's int8 evaluation form quantizes 6.5 G values with it.
   */
  private flushBlock8(b: number): void {
    const { cols, pending, pendingRows } = this;
    const { blockSize } = this.options;
    const { blocks, packed, scales } = this.result;
    for (let col = 0; col < cols; col++) {
      let max = 0;
      for (let i = 0; i < pendingRows; i++) max = Math.max(max, Math.abs(pending[i * cols + col]));
      const scale = Math.fround(max / 127);
      scales[col * blocks + b] = scale;
      const out = (col * blocks + b) * blockSize;
      for (let i = 0; i < blockSize; i++) {
        const v = i < pendingRows ? pending[i * cols + col] : 0;
        packed[out + i] = (scale === 0 ? 0 : Math.min(127, Math.max(-127, roundCode(v / scale)))) + 128;
      }
    }
  }

  /** Block `b` of column `col`, whose i-th value is `at(i)`. */
  private encodeBlock(col: number, b: number, at: (i: number) => number): void {
    const { blockSize } = this.options;
    const values = this.values;
    for (let i = 0; i < blockSize; i++) values[i] = at(i);
    this.encodeValues(col, b);
  }

  /** Block `b` of column `col` from `this.values`. */
  private encodeValues(col: number, b: number): void {
    const { bits } = this.options;
    const values = this.values;
    const { blocks, zeroPoints } = this.result;
    const codes = this.codes;
    let scale: number;
    let zp = defaultZeroPoint(bits);
    if (zeroPoints) {
      let [low, high] = [0, 0];
      for (const v of values) [low, high] = [Math.min(low, v), Math.max(high, v)];
      ({ scale, zeroPoint: zp } = affine(low, high, 0, (1 << bits) - 1));
      zeroPoints[col * blocks + b] = zp;
      encodeAffine(values, scale, zp, 0, (1 << bits) - 1, codes);
      zp = 0; // the codes are stored as they are
    } else {
      scale = symmetricScale(values, bits, this.options.search ?? true);
      encodeSymmetric(values, scale, bits, codes);
    }
    putBlock(this.result, col, b, codes, scale, zp);
  }
}

/** Codes of K x N all zero, to be filled block by block (putBlock). */
export function emptyBlocks(k: number, n: number, bits: Bits, blockSize: number): BlockQuantized {
  const blocks = Math.ceil(k / blockSize);
  return { packed: new Uint8Array((n * blocks * blockSize * bits) / 8), scales: new Float32Array(n * blocks), n, k, blocks, blockSize, bits };
}

/** Writes block `b` of column `col`: its scale and its `codes` plus `offset` (the zero point of symmetric codes, 0 for stored ones). */
export function putBlock(q: BlockQuantized, col: number, b: number, codes: ArrayLike<number>, scale: number, offset: number): void {
  const { blocks, blockSize, bits, packed } = q;
  q.scales[col * blocks + b] = scale;
  const out = (col * blocks + b) * ((blockSize * bits) / 8);
  if (bits === 8) for (let i = 0; i < blockSize; i++) packed[out + i] = codes[i] + offset;
  else for (let i = 0; i < blockSize; i += 2) packed[out + i / 2] = (codes[i] + offset) | ((codes[i + 1] + offset) << 4);
}

/** The symmetric scale of one block (8 bits: max|w| / 127; 4 bits: the extreme on −8, refined by `search`). */
export function symmetricScale(values: Float32Array, bits: Bits, search: boolean): number {
  return bits === 8 ? scale8(values) : scale4(values, search);
}

function scale8(values: Float32Array): number {
  let max = 0;
  for (const v of values) max = Math.max(max, Math.abs(v));
  return Math.fround(max / 127);
}

/** Candidate fractions of the extreme value tried by the 4-bit scale search. */
const SEARCH = [1, 0.97, 0.94, 0.91, 0.88, 0.85, 0.82, 0.79];

function scale4(values: Float32Array, search: boolean): number {
  // Indexed loops and no destructuring: this runs once per block of a 7B model's weights.
  const n = values.length;
  let m = 0;
  for (let i = 0; i < n; i++) if (Math.abs(values[i]) > Math.abs(m)) m = values[i];
  if (m === 0) return 0;
  const base = m / -8;
  if (!search) return Math.fround(base);
  let best = Math.fround(base);
  let bestError = Infinity;
  for (let c = 0; c < SEARCH.length; c++) {
    const s = Math.fround(base * SEARCH[c]);
    let err = 0;
    for (let i = 0; i < n; i++) {
      const v = values[i];
      const r = roundCode(v / s);
      const q = r > 7 ? 7 : r < -8 ? -8 : r;
      const d = v - q * s;
      err += d * d;
    }
    if (err < bestError) {
      best = s;
      bestError = err;
    }
  }
  return best;
}

/**
 * The scale and zero point that map [low, high] (low <= 0 <= high) onto the codes [qmin, qmax]
 * with 0 exact: the affine scheme of asymmetric weights (blocks with zero points, and
 * DequantizeLinear with a zero point).
 */
function affine(low: number, high: number, qmin: number, qmax: number): { scale: number; zeroPoint: number } {
  const scale = Math.fround((high - low) / (qmax - qmin));
  if (!(scale > 0)) return { scale: 1, zeroPoint: Math.min(qmax, Math.max(qmin, 0)) };
  return { scale, zeroPoint: Math.min(qmax, Math.max(qmin, Math.round(qmin - low / scale))) };
}

function encodeAffine(values: ArrayLike<number>, scale: number, zeroPoint: number, qmin: number, qmax: number, out: Int32Array): void {
  for (let i = 0; i < values.length; i++) out[i] = Math.min(qmax, Math.max(qmin, roundCode(values[i] / scale) + zeroPoint));
}

/** Symmetric codes of `values` at `scale`: [−127, 127] at 8 bits, [−8, 7] at 4. */
export function encodeSymmetric(values: ArrayLike<number>, scale: number, bits: Bits, out: Int32Array): void {
  const [lo, hi] = bits === 8 ? [-127, 127] : [-8, 7];
  for (let i = 0; i < values.length; i++) out[i] = scale === 0 ? 0 : Math.min(hi, Math.max(lo, roundCode(values[i] / scale)));
}

/**
 * The weight as onnxruntime will see it, [K, N] row-major: for checking, and for measuring the
 * quantization error of a weight without running anything.
 */
export function dequantizeBlocks(q: BlockQuantized): Float32Array {
  const { n, k, blocks, blockSize, bits } = q;
  const blob = (blockSize * bits) / 8;
  const out = new Float32Array(k * n);
  for (let col = 0; col < n; col++) {
    for (let b = 0; b < blocks; b++) {
      const scale = q.scales[col * blocks + b];
      const zp = q.zeroPoints ? q.zeroPoints[col * blocks + b] : defaultZeroPoint(bits);
      const base = (col * blocks + b) * blob;
      for (let i = 0; i < blockSize; i++) {
        const kk = b * blockSize + i;
        if (kk >= k) break;
        const code = bits === 8 ? q.packed[base + i] : (q.packed[base + (i >> 1)] >> ((i & 1) * 4)) & 0xf;
        out[kk * n + col] = (code - zp) * scale;
      }
    }
  }
  return out;
}

/** Symmetric int8 codes with one scale per slice along `axis` (the output channel). */
export interface ChannelQuantized {
  codes: Int8Array;
  scales: Float32Array;
}

/** Quantizes `w` of shape `dims` to int8 in [-127, 127] with one scale per index along `axis`. */
export function quantizePerChannel(w: Float32Array, dims: readonly number[], axis: number): ChannelQuantized {
  const channels = dims[axis];
  const inner = dims.slice(axis + 1).reduce((a, b) => a * b, 1);
  const outer = dims.slice(0, axis).reduce((a, b) => a * b, 1);
  const max = new Float32Array(channels);
  const channelOf = (i: number) => Math.floor(i / inner) % channels;
  for (let i = 0; i < w.length; i++) max[channelOf(i)] = Math.max(max[channelOf(i)], Math.abs(w[i]));
  const scales = max.map((m) => m / 127);
  const codes = new Int8Array(w.length);
  for (let o = 0; o < outer; o++) {
    for (let c = 0; c < channels; c++) {
      const s = scales[c];
      const base = (o * channels + c) * inner;
      for (let i = 0; i < inner; i++) codes[base + i] = s === 0 ? 0 : Math.max(-127, Math.min(127, roundCode(w[base + i] / s)));
    }
  }
  return { codes, scales };
}

/** Codes with a scale and a zero point per slice along `axis`, in [qmin, qmax]. */
export interface AffineQuantized {
  codes: Int32Array;
  scales: Float32Array;
  zeroPoints: Int32Array;
}

/**
 * Quantizes `w` of shape `dims` to codes in [qmin, qmax] with one scale and zero point per index
 * along `axis` (the affine scheme: see `affine`); `axis` undefined: one for the whole tensor.
 */
export function quantizeAffine(w: Float32Array, dims: readonly number[], axis: number | undefined, qmin: number, qmax: number): AffineQuantized {
  const channels = axis === undefined ? 1 : dims[axis];
  const inner = axis === undefined ? w.length : dims.slice(axis + 1).reduce((a, b) => a * b, 1);
  const channelOf = (i: number) => Math.floor(i / inner) % channels;
  const low = new Float64Array(channels);
  const high = new Float64Array(channels);
  for (let i = 0; i < w.length; i++) {
    const c = channelOf(i);
    low[c] = Math.min(low[c], w[i]);
    high[c] = Math.max(high[c], w[i]);
  }
  const scales = new Float32Array(channels);
  const zeroPoints = new Int32Array(channels);
  for (let c = 0; c < channels; c++) ({ scale: scales[c], zeroPoint: zeroPoints[c] } = affine(low[c], high[c], qmin, qmax));
  const codes = new Int32Array(w.length);
  for (let i = 0; i < w.length; i++) {
    const c = channelOf(i);
    codes[i] = Math.min(qmax, Math.max(qmin, roundCode(w[i] / scales[c]) + zeroPoints[c]));
  }
  return { codes, scales, zeroPoints };
}

/**
 * The block length for a weight with `k` rows along the contraction axis: a power of two from 16
 * up to `wanted`, the one that stores the weight in the fewest bytes (codes of K padded to whole
 * blocks, plus a `scaleBytes` scale per block); on a tie the longer block. So K = 64 takes one
 * block of 64 rather than a padded 128, and K = 176 takes blocks of 64 (3 blocks, 16 rows of
 * padding) rather than 128 (2 blocks, 80 rows of padding).
 */
export function blockSizeFor(k: number, wanted: number, bits: Bits = 4, scaleBytes = 4): number {
  let best = 16;
  let bestBytes = Infinity;
  for (let block = 16; block <= Math.min(wanted, 256); block *= 2) {
    const bytes = Math.ceil(k / block) * ((block * bits) / 8 + scaleBytes);
    if (bytes <= bestBytes) [best, bestBytes] = [block, bytes];
  }
  return best;
}
