import { UserError } from '../errors';
import { halfToFloat } from '../onnx/dtype';
import type { ort } from '../onnx/runtime';
import type { MetricValues } from './metric-names';
import type { Batch, CalibrationSet } from './calibration';

/**
 * The quality metrics, computed row by row over the output's last axis (a row = one vector of
 * logits: one sample for a classifier, one position for a language model). Sums are float64.
 */

/** An output as float32 rows: `rows` vectors of `width` values each. */
export interface Rows {
  data: Float32Array;
  rows: number;
  width: number;
  dims: number[];
}

export function outputRows(t: ort.Tensor): Rows {
  const dims = [...t.dims];
  const width = dims.length ? dims[dims.length - 1] : 1;
  let data: Float32Array;
  if (t.type === 'float32') data = t.data as Float32Array;
  else if (t.type === 'float16') data = Float32Array.from(t.data as Uint16Array, halfToFloat);
  else if (t.type === 'float64') data = Float32Array.from(t.data as Float64Array);
  else throw new UserError(`the model's output is ${t.type}; the metrics need floating-point scores (logits)`);
  return { data, rows: width ? data.length / width : 0, width, dims };
}

/** log softmax of `x[off, off+n)` into `out[0, n)`. */
export function logSoftmax(x: Float32Array, off: number, n: number, out: Float64Array): void {
  let max = -Infinity;
  for (let i = 0; i < n; i++) if (x[off + i] > max) max = x[off + i];
  let sum = 0;
  for (let i = 0; i < n; i++) sum += Math.exp(x[off + i] - max);
  const lse = max + Math.log(sum);
  for (let i = 0; i < n; i++) out[i] = x[off + i] - lse;
}

/** log Σ exp(x[off, off+n)), shifted by the maximum. */
function logSumExp(x: Float32Array, off: number, n: number, max: number): number {
  let sum = 0;
  for (let i = 0; i < n; i++) sum += Math.exp(x[off + i] - max);
  return max + Math.log(sum);
}

/** Each row's log-sum-exp (its log softmax is x − lse) and argmax. */
interface RowSummary {
  lse: Float64Array;
  top: Int32Array;
}

/**
 * The rows' summaries, computed once per output array: a base's cached outputs are compared
 * with every candidate's, and a candidate's rows serve its task metrics and its comparison.
 */
const summaries = new WeakMap<Float32Array, RowSummary>();

function rowSummary(out: Rows): RowSummary {
  let s = summaries.get(out.data);
  if (!s) {
    s = { lse: new Float64Array(out.rows), top: new Int32Array(out.rows) };
    for (let r = 0; r < out.rows; r++) {
      const off = r * out.width;
      const top = argmax(out.data, off, out.width);
      s.top[r] = top;
      s.lse[r] = logSumExp(out.data, off, out.width, out.data[off + top]);
    }
    summaries.set(out.data, s);
  }
  return s;
}

/** Index of the largest value (the first one on ties, as numpy.argmax). */
export function argmax(x: Float32Array, off: number, n: number): number {
  let best = 0;
  for (let i = 1; i < n; i++) if (x[off + i] > x[off + best]) best = i;
  return best;
}

/** KL(p || q) = sum p (log p - log q), from log-probabilities. */
export function klFromLog(logP: Float64Array, logQ: Float64Array, n: number): number {
  let kl = 0;
  for (let i = 0; i < n; i++) {
    const p = Math.exp(logP[i]);
    if (p > 0) kl += p * (logP[i] - logQ[i]);
  }
  return Math.max(0, kl); // rounding can make identical distributions a hair negative
}

/** Cosine similarity; two zero vectors are identical (1), one zero vector is unrelated (0). */
export function cosine(a: Float32Array, aOff: number, b: Float32Array, bOff: number, n: number): number {
  let dot = 0;
  let na = 0;
  let nb = 0;
  for (let i = 0; i < n; i++) {
    dot += a[aOff + i] * b[bOff + i];
    na += a[aOff + i] * a[aOff + i];
    nb += b[bOff + i] * b[bOff + i];
  }
  if (na === 0 && nb === 0) return 1;
  if (na === 0 || nb === 0) return 0;
  return dot / Math.sqrt(na * nb);
}

/**
 * Which rows of a batch's output count, and what each row should predict.
 * - classification: one row per sample, target = its label.
 * - language-model: output [batch, sequence, vocabulary]; the row at position t predicts the
 *   token at t+1, counted when both positions are real (attention_mask 1); every position with
 *   attention_mask 1 counts for the comparison metrics.
 * - generic (and the comparisons of every task): every row, except rows of padding when the
 *   output's leading axes are the attention mask's [batch, sequence].
 */
export interface RowPlan {
  width: number;
  /** 1 where the row counts for agreement, KL and cosine; undefined = every row. */
  compare?: Uint8Array;
  /** Target class per row, -1 where the row does not count for accuracy / perplexity. */
  targets?: Int32Array;
}

function intValues(t: ort.Tensor): ArrayLike<number | bigint> {
  return t.data as ArrayLike<number | bigint>;
}

export function planRows(set: CalibrationSet, batch: Batch, out: Rows): RowPlan {
  const mask = set.mask ? batch.feeds[set.mask] : undefined;
  const sameAsMask = mask !== undefined && out.dims.length === mask.dims.length + 1 && mask.dims.every((d, i) => d === out.dims[i]);
  const compare = sameAsMask ? Uint8Array.from(intValues(mask), (v) => (Number(v) !== 0 ? 1 : 0)) : undefined;
  if (set.positions) return { width: out.width, ...positionRows(set, batch, out) };
  if (set.task === 'classification') return { width: out.width, compare, targets: classificationTargets(set, batch, out) };
  if (set.task === 'language-model') return { width: out.width, ...languageModelRows(set, batch, out) };
  return { width: out.width, compare };
}

/** A sequence set's own rows that count (generation: the generated positions, or the reference's). */
function positionRows(set: CalibrationSet, batch: Batch, out: Rows): { compare: Uint8Array; targets?: Int32Array } {
  const positions = set.positions as NonNullable<CalibrationSet['positions']>;
  const { length } = positions;
  if (out.dims.length !== 3 || out.dims[0] !== batch.size || out.dims[1] !== length) {
    throw new UserError(
      `${set.source}: task ${set.task} needs output '${set.output}' of shape [batch, sequence, vocabulary] ([${batch.size}, ${length}, ...] here); the model gives [${out.dims.join(', ')}]`,
    );
  }
  const from = batch.start * length;
  const to = from + batch.size * length;
  const targets = positions.targets?.subarray(from, to);
  const outside = targets?.findIndex((t) => t >= out.width) ?? -1;
  if (targets && outside >= 0) {
    throw new UserError(`${set.source}: token ${targets[outside]} (sample ${batch.start + Math.floor(outside / length)}) is outside the vocabulary of output '${set.output}' (${out.width} logits)`);
  }
  return { compare: positions.compare.subarray(from, to), targets };
}

function classificationTargets(set: CalibrationSet, batch: Batch, out: Rows): Int32Array {
  const labels = batch.labels as Int32Array;
  if (out.rows !== batch.size) {
    throw new UserError(
      `${set.source}: task classification needs output '${set.output}' of shape [batch, classes]; the model gives [${out.dims.join(', ')}] for ${batch.size} samples`,
    );
  }
  labels.forEach((label, i) => {
    if (label >= out.width) {
      throw new UserError(
        `${set.source}: label ${label} of sample ${batch.start + i} is not a class of output '${set.output}' (${out.width} classes: 0..${out.width - 1})`,
      );
    }
  });
  return labels;
}

function languageModelRows(set: CalibrationSet, batch: Batch, out: Rows): { compare: Uint8Array; targets: Int32Array } {
  const tokens = batch.feeds[set.tokens as string];
  const [b, s] = tokens.dims;
  if (out.dims.length !== 3 || out.dims[0] !== b || out.dims[1] !== s) {
    throw new UserError(
      `${set.source}: task language-model needs output '${set.output}' of shape [batch, sequence, vocabulary] matching '${set.tokens}' [${b}, ${s}]; the model gives [${out.dims.join(', ')}]`,
    );
  }
  const ids = intValues(tokens);
  const mask = set.mask ? intValues(batch.feeds[set.mask]) : undefined;
  const real = (i: number) => !mask || Number(mask[i]) !== 0;
  const compare = new Uint8Array(b * s);
  const targets = new Int32Array(b * s).fill(-1);
  for (let r = 0; r < b; r++) {
    for (let t = 0; t < s; t++) {
      const i = r * s + t;
      compare[i] = real(i) ? 1 : 0;
      if (t + 1 < s && real(i) && real(i + 1)) {
        const next = Number(ids[i + 1]);
        if (next < 0 || next >= out.width) {
          throw new UserError(
            `${set.source}: token ${next} (sample ${batch.start + r}, position ${t + 1}) is outside the vocabulary of output '${set.output}' (${out.width} logits)`,
          );
        }
        targets[i] = next;
      }
    }
  }
  return { compare, targets };
}

/**
 * The exact sums a metric is a ratio of (negative log-likelihood and token counts, hits and
 * counts, KL and cosine sums): sums from disjoint parts of a calibration set add up to the whole
 * set's, so its metrics can be computed from parts evaluated apart.
 */
export type MetricSums = Partial<Record<SumName, number>>;
export type SumName =
  | 'nll'
  | 'correct'
  | 'count'
  | 'agree'
  | 'kl'
  | 'cos'
  | 'compared'
  // generation: per-sample scores summed over `samples`
  | 'exact'
  | 'f1'
  | 'rouge'
  | 'sequence'
  | 'samples';

/** Key-wise sum of parts' sums. */
export function addSums(...parts: MetricSums[]): MetricSums {
  const total: MetricSums = {};
  for (const part of parts) for (const [k, v] of Object.entries(part) as [SumName, number][]) total[k] = (total[k] ?? 0) + v;
  return total;
}

/** The task's own metrics from its sums: accuracy (classification), perplexity and next-token accuracy (language model), perplexity (a generation set's references). */
export function taskValues(task: CalibrationSet['task'], sums: MetricSums): MetricValues {
  const count = sums.count ?? 0;
  const nll = sums.nll ?? 0;
  const correct = sums.correct ?? 0;
  if (task === 'classification') return { accuracy: count ? correct / count : 0 };
  if (task === 'language-model') return { perplexity: count ? Math.exp(nll / count) : NaN, 'next-token-accuracy': count ? correct / count : 0 };
  if (task === 'generation' && count) return { perplexity: Math.exp(nll / count) };
  return {};
}

/** agreement, kl-divergence and cosine from their sums. */
export function comparisonValues(sums: MetricSums): MetricValues {
  const c = sums.compared || 1;
  return { agreement: (sums.agree ?? 0) / c, 'kl-divergence': (sums.kl ?? 0) / c, cosine: (sums.cos ?? 0) / c };
}

/** accuracy (classification) or perplexity and next-token-accuracy (language-model) of one model. */
export class TaskAccumulator {
  private nll = 0;
  private correct = 0;
  private count = 0;

  constructor(private readonly task: CalibrationSet['task']) {}

  add(out: Rows, plan: RowPlan): void {
    if (!plan.targets) return;
    const { lse, top } = rowSummary(out);
    for (let r = 0; r < out.rows; r++) {
      const target = plan.targets[r];
      if (target < 0) continue;
      if (top[r] === target) this.correct++;
      if (this.task === 'language-model' || this.task === 'generation') this.nll += lse[r] - out.data[r * out.width + target];
      this.count++;
    }
  }

  sums(): MetricSums {
    return { nll: this.nll, correct: this.correct, count: this.count };
  }

  values(): MetricValues {
    return taskValues(this.task, this.sums());
  }

  /** Rows that counted (tokens predicted, samples classified). */
  get counted(): number {
    return this.count;
  }
}

/** agreement, kl-divergence and cosine of a candidate's outputs with the base model's. */
export class ComparisonAccumulator {
  private agree = 0;
  private kl = 0;
  private cos = 0;
  private count = 0;

  /** Rows [from, to) of the outputs (default all): one sample's, say. */
  add(base: Rows, cand: Rows, plan: RowPlan, from = 0, to = base.rows): void {
    if (base.data.length !== cand.data.length || base.width !== cand.width) {
      throw new Error(
        `the candidate's output has shape [${cand.dims.join(', ')}], the base model's [${base.dims.join(', ')}]: pruning must not change the output shape`,
      );
    }
    const n = base.width;
    const [b, c] = [rowSummary(base), rowSummary(cand)];
    const [x, y] = [base.data, cand.data];
    for (let r = from; r < to; r++) {
      if (plan.compare && !plan.compare[r]) continue;
      const off = r * n;
      if (b.top[r] === c.top[r]) this.agree++;
      // KL(p‖q) = Σ p (log p − log q) = Σ p (x − y) − lse(x) + lse(y), as Σ p = 1.
      const lse = b.lse[r];
      let kl = 0;
      for (let i = off; i < off + n; i++) kl += Math.exp(x[i] - lse) * (x[i] - y[i]);
      this.kl += Math.max(0, kl - lse + c.lse[r]); // rounding can make identical rows a hair negative
      this.cos += cosine(x, off, y, off, n);
      this.count++;
    }
  }

  sums(): MetricSums {
    return { agree: this.agree, kl: this.kl, cos: this.cos, compared: this.count };
  }

  values(): MetricValues {
    return comparisonValues(this.sums());
  }
}

/** What the comparison metrics are for the base model compared with itself. */
export const SELF_COMPARISON: MetricValues = { agreement: 1, 'kl-divergence': 0, cosine: 1 };
