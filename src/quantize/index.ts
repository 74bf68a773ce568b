/**
 * Weight quantization after pruning: the last step before the gate evaluates a candidate, so the
 * gate judges the artifact that ships.
 *
 * What is quantized (weights only; activations stay float):
 * - **MatMul** with a constant 2-D float weight B [K, N] (float32 or float16) becomes onnxruntime's
 *   `com.microsoft` `MatMulNBits` (bits 8 or 4, symmetric per-block scales along K, no zero points,
 *   `accuracy_level` 4 so the CPU kernel computes in int8: without it the 8-bit kernel is about
 *   100x slower than float). The layout is described in ./pack.ts. This is where a transformer's
 *   weights are, the LM head included.
 * - **Gemm** weights (classifier heads, BERT's pooler): int8 per output channel behind a
 *   `DequantizeLinear` by default, whatever `bits` (same latency as float on the fixtures; 4 bits
 *   cost the MLP fixture 3 points of accuracy); `gemm: 'nbits'` makes a plain Gemm (alpha 1, no
 *   transA, a [N] bias or none) a MatMulNBits at `bits`; `gemm: 'float'` leaves them.
 * - **Conv** weights: float by default. `conv: 'int8'` stores them int8 per output channel
 *   behind a DequantizeLinear: 2.7x smaller, but onnxruntime 1.30 then cannot prepack the
 *   weight and the CNN fixture ran 4-15x slower.
 * - **ConvTranspose** and **Einsum** weights stay float, and the result lists them with why.
 * - **Embeddings** (Gather on a constant [V, D] table, axis 0): `com.microsoft`
 *   `GatherBlockQuantized` with the same block-wise codes along D, so only the gathered rows
 *   are dequantized at run time. 8 bits by default (4 on request): on small language models the
 *   token table is one of the largest tensors; at 4 bits it cost the LM fixtures another 1-2
 *   points of top-1 agreement and 0.5-1.8 % of perplexity, for a file 4-6 % smaller.
 *
 * With calibration data, the output error of every quantized layer is measured on the real
 * activations (the float layer and its quantized twin read the same input in one run), and up
 * to `keepFloat` layers with the largest relative error ||Y - Ŷ|| / ||Y|| are exceptions, those
 * whose error stands out (`keepFloatRatio` times the median layer's) and is at least 2 %. At 4
 * bits an exception is stored at 8 bits when that brings its error under 2 % (a quarter of the
 * float bytes, and below the error at which a layer would be kept float); otherwise, and at 8
 * bits, it stays float.
 *
 * The files: ./options.ts (what can be asked), ./registry.ts (which op is quantized how),
 * ./formats.ts (the quantized forms), ./pack.ts (the codes), ./calibration.ts (the exceptions),
 * ./rewrite.ts (the graph rewrite and the check that it runs).
 *
 * The input model is not changed. The result always loads in onnxruntime-node and keeps its
 * output names and shapes (checked by running it once before returning).
 */
import { onnx } from 'onnx-proto';
import { nodeLabel } from '../graph/graph';
import { OnnxModel } from '../onnx/model';
import { KeptFloatLayer, chooseExceptions } from './calibration';
import { Cache, Candidate, LayerKind, QuantFormat } from './formats';
import { MethodChoice, chooseMethod } from './method';
import { QuantizeOptions, checkOptions } from './options';
import { quantRuleOf } from './registry';
import { applyCandidates, verifyQuantized } from './rewrite';

export { blockSizeFor, dequantizeBlocks, quantizeBlocks } from './pack';
export type { QuantizeOptions } from './options';
export { methodUsed } from './method';
export type { MethodChoice } from './method';

export interface QuantizedLayer {
  /** The node's name, else its op and first output. */
  node: string;
  kind: LayerKind;
  format: QuantFormat;
  bits: number;
  /** Block length along K (block-wise formats). */
  blockSize?: number;
  /** Bytes of the float weight, and of what replaces it (codes and scales). */
  bytesBefore: number;
  bytesAfter: number;
  /** Relative output error on the calibration data, when measured. */
  error?: number;
  /** Why this layer has more bits than asked (a calibration exception stored at 8 bits). */
  exception?: string;
  /** How its MatMulNBits codes were chosen. */
  method?: 'rtn' | 'gptq';
}

export interface QuantizeResult {
  model: OnnxModel;
  quantized: QuantizedLayer[];
  keptFloat: KeptFloatLayer[];
  /** The quantized layers' weights: float bytes, and bytes of what replaced them. */
  weightBytesBefore: number;
  weightBytesAfter: number;
  /** With calibration and method gptq or auto: what the method chose, and its error against round-to-nearest's. */
  method?: MethodChoice;
}

/**
 * Quantizes the weights of `model` (see the module comment). Returns the quantized copy, what was
 * quantized (bytes before and after per layer) and what stayed float, and why.
 */
export async function quantizeModel(model: OnnxModel, options: QuantizeOptions): Promise<QuantizeResult> {
  const opts = checkOptions(options);
  const work = model.clone();
  const log = options.log ?? (() => {});
  const keptFloat: KeptFloatLayer[] = [];
  const candidates = planCandidates(work, opts, keptFloat);
  log(`quantize: ${candidates.length} layers to quantize (${opts.bits} bits, blocks up to ${opts.blockSize})`);
  const method = opts.calibration && opts.method !== 'rtn' ? await chooseMethod(work, candidates, opts, opts.calibration, log) : undefined;
  if (opts.calibration && candidates.length > 0) keptFloat.push(...(await chooseExceptions(work, candidates, opts, opts.calibration, log)));

  const original = new Set(model.constantNames());
  const weights = new Set(candidates.map((c) => c.weight));
  applyCandidates(work, candidates, (name) => weights.has(name) || !original.has(name));
  await verifyQuantized(model, work);
  const quantized = candidates.map(
    (c): QuantizedLayer => ({
      node: c.label,
      kind: c.kind,
      format: c.format,
      bits: c.bits,
      ...(c.blockSize ? { blockSize: c.blockSize } : {}),
      bytesBefore: c.bytesBefore,
      bytesAfter: c.bytesAfter,
      ...(c.error !== undefined ? { error: c.error } : {}),
      ...(c.exception ? { exception: c.exception } : {}),
      ...(c.method ? { method: c.method } : {}),
    }),
  );
  const weightBytesBefore = quantized.reduce((s, q) => s + q.bytesBefore, 0);
  const weightBytesAfter = quantized.reduce((s, q) => s + q.bytesAfter, 0);
  log(`quantize: ${quantized.length} layers quantized, weights ${weightBytesBefore} -> ${weightBytesAfter} bytes; ${keptFloat.length} kept float`);
  return { model: work, quantized, keptFloat, weightBytesBefore, weightBytesAfter, ...(method ? { method } : {}) };
}

/**
 * Asks the registry about every node of the top-level graph, in graph order. Quantized
 * initializers are added to `work` right away (shared by every op that reads the same weight);
 * the ops themselves are only rewritten by applyCandidates, so the float graph can still be
 * probed for calibration errors.
 */
function planCandidates(work: OnnxModel, opts: ReturnType<typeof checkOptions>, keptFloat: KeptFloatLayer[]): Candidate[] {
  const ctx = { work, opts, cache: new Map() as Cache, opset: work.defaultOpset ?? 1 };
  const candidates: Candidate[] = [];
  for (const node of work.graph.node as onnx.NodeProto[]) {
    const answer = quantRuleOf(node)?.candidate(node, ctx);
    if (!answer) continue;
    if ('keptFloat' in answer) keptFloat.push({ node: nodeLabel(node), reason: answer.keptFloat });
    else candidates.push(answer);
  }
  // A layer whose codes and scales are not smaller than its float weight (tiny K padded to a
  // whole block) gains nothing.
  return candidates.filter((c) => {
    if (c.bytesAfter < c.bytesBefore) return true;
    keptFloat.push({ node: c.label, reason: `too small to gain from quantization (${c.bytesBefore} bytes float, ${c.bytesAfter} quantized)` });
    return false;
  });
}
