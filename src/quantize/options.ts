import { UserError } from '../errors';
import { PassRecord, RUN_PASSES } from '../util/passes';
import type { Feeds } from '../onnx/runtime';
import type { Bits } from './pack';

/** What `quantize:` in the config asks of every candidate: nothing, or weights in 8 or 4 bits. */
export const QUANTIZE_MODES = ['none', 'int8', 'int4'] as const;
export type QuantizeMode = (typeof QUANTIZE_MODES)[number];

/**
 * How MatMulNBits codes are chosen: round to nearest, GPTQ (./gptq.ts: error feedback over the
 * calibration inputs' Hessian), or auto (the default): per layer, whichever of the two has the
 * lower output error on the calibration data, measured. Without calibration data: round to nearest.
 */
export const QUANTIZE_METHODS = ['auto', 'rtn', 'gptq'] as const;
export type QuantizeMethod = (typeof QUANTIZE_METHODS)[number];

/**
 * Block length along K when none is given: 128 for 8 bits (scales cost 3 % of the codes, and the
 * error is already small), 32 for 4 bits (the usual Q4 block: 4-bit error grows quickly with the
 * block). Measured on the fixtures: see docs/quantization.md.
 */
export const DEFAULT_BLOCK_SIZE: Record<Bits, number> = { 8: 128, 4: 32 };
/** At most this many layers are kept float by calibration error when none is given... */
export const DEFAULT_KEEP_FLOAT = 2;
/** ...and only those whose error is at least this many times the median layer's error... */
export const DEFAULT_KEEP_FLOAT_RATIO = 1.5;
/** ...and at least this relative output error (below it, quantization costs too little to matter). */
export const KEEP_FLOAT_MIN_ERROR = 0.02;
/** Embedding tables are 8-bit unless asked (see docs/quantization.md). */
export const DEFAULT_EMBEDDING_BITS: Bits = 8;

export interface QuantizeOptions {
  bits: 8 | 4;
  /**
   * Longest block along K (16..256, a power of two; default 128 for 8 bits, 32 for 4). A layer
   * may take a shorter one when that stores it in fewer bytes (K not a multiple of the block).
   */
  blockSize?: number;
  /** How MatMulNBits codes are chosen (default auto; round to nearest without calibration). */
  method?: QuantizeMethod;
  /** Calibration batches: enables calibration-aware exceptions (`keepFloat`) and GPTQ. */
  calibration?: () => Iterable<Feeds> | AsyncIterable<Feeds>;
  /** With calibration: at most this many layers, those with the largest output error, stay float (default 2). */
  keepFloat?: number;
  /**
   * With calibration: a layer stays float only if its error is at least this multiple of the
   * median layer's error (default 1.5), so a model whose layers all quantize alike keeps none.
   * 0 keeps exactly `keepFloat` layers.
   */
  keepFloatRatio?: number;
  /** Embedding tables (Gather): false leaves them float; 8 or 4 sets their bits (default 8; true = 8). */
  embeddings?: boolean | Bits;
  /**
   * Gemm weights: int8 per output channel behind DequantizeLinear (the default, whatever `bits`:
   * Gemms are small classifier heads, where 4 bits cost the most agreement), MatMulNBits at
   * `bits` ('nbits'), or float.
   */
  gemm?: 'float' | 'int8' | 'nbits';
  /**
   * Conv weights: float (the default: with a DequantizeLinear in front, onnxruntime 1.30 cannot
   * prepack the weight and the CNN fixture ran 4-15x slower) or int8 per output channel.
   */
  conv?: 'float' | 'int8';
  /**
   * How a 4-bit exception is stored: at 8 bits when its 8-bit error is under 2 % (the default),
   * else float; 'float' always keeps it float.
   */
  exceptions?: 'int8' | 'float';
  /** MatMulNBits accuracy_level: 4 (int8 compute, the default) or 0 (compute in A's type). */
  accuracyLevel?: 0 | 4;
  /** Runs the calibration passes, or gives back recorded results (default: runs them). */
  passes?: PassRecord;
  /**
   * The layers' errors measured with the model run in float one piece at a time, pieces of at
   * most this many bytes of weights (a model too large for the device: a session of all of it
   * with the layers' quantized twins would not fit). Default: one session of the whole model.
   */
  pieceBytes?: number;
  log?: (line: string) => void;
}

export type CheckedOptions = Required<Omit<QuantizeOptions, 'calibration' | 'log' | 'embeddings' | 'pieceBytes'>> & {
  pieceBytes?: number;
  calibration?: QuantizeOptions['calibration'];
  embeddings: Bits | false;
  /** Longest block of the embedding tables (their bits may differ from `bits`). */
  embeddingBlockSize: number;
};

export function checkOptions(o: QuantizeOptions): CheckedOptions {
  if (o.bits !== 8 && o.bits !== 4) throw new UserError(`quantize: bits must be 8 or 4 (got ${String(o.bits)})`);
  const blockSize = o.blockSize ?? DEFAULT_BLOCK_SIZE[o.bits];
  if (!Number.isInteger(blockSize) || blockSize < 16 || blockSize > 256 || (blockSize & (blockSize - 1)) !== 0) {
    throw new UserError(`quantize: block size must be a power of two from 16 to 256 (got ${blockSize})`);
  }
  const method = o.method ?? 'auto';
  if (!QUANTIZE_METHODS.includes(method)) throw new UserError(`quantize: method must be one of ${QUANTIZE_METHODS.join(', ')} (got ${String(o.method)})`);
  const keepFloat = o.keepFloat ?? DEFAULT_KEEP_FLOAT;
  if (!Number.isInteger(keepFloat) || keepFloat < 0) throw new UserError(`quantize: keepFloat must be a whole number >= 0 (got ${keepFloat})`);
  const keepFloatRatio = o.keepFloatRatio ?? DEFAULT_KEEP_FLOAT_RATIO;
  if (!(keepFloatRatio >= 0)) throw new UserError(`quantize: keepFloatRatio must be a number >= 0 (got ${keepFloatRatio})`);
  const embeddings = o.embeddings === undefined || o.embeddings === true ? DEFAULT_EMBEDDING_BITS : o.embeddings;
  if (embeddings !== false && embeddings !== 8 && embeddings !== 4) {
    throw new UserError(`quantize: embeddings must be true, false, 8 or 4 (got ${String(o.embeddings)})`);
  }
  return {
    bits: o.bits,
    method,
    blockSize,
    keepFloat,
    keepFloatRatio,
    embeddings,
    embeddingBlockSize: o.blockSize ?? DEFAULT_BLOCK_SIZE[embeddings || o.bits],
    gemm: o.gemm ?? 'int8',
    conv: o.conv ?? 'float',
    accuracyLevel: o.accuracyLevel ?? 4,
    exceptions: o.exceptions ?? 'int8',
    calibration: o.calibration,
    passes: o.passes ?? RUN_PASSES,
    pieceBytes: o.pieceBytes,
  };
}
