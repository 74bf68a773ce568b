import type { Structure } from '../graph/analysis';
import type { OnnxModel } from '../onnx/model';
import type { Feeds } from '../onnx/runtime';
import type { SlicedEntries } from './apply';

export type { Structure } from '../graph/analysis';
export const IMPORTANCES = ['magnitude', 'activation'] as const;
export type Importance = (typeof IMPORTANCES)[number];
export const COMPENSATIONS = ['none', 'bias', 'reconstruct'] as const;
export type Compensation = (typeof COMPENSATIONS)[number];

export interface PruneOptions {
  /** Fraction of the model's parameters to remove, 0..1. */
  target: number;
  structures: Structure[];
  importance: Importance;
  compensate: Compensation;
  /**
   * Keep a multiple of this many neurons/channels in every FFN and conv layer wide enough
   * (at least four times as many units): odd widths can make a pruned model slower, not faster, on
   * runtimes that vectorize by 8 or 16. 1 (the default) leaves widths as the ranking makes them.
   */
  align?: number;
  /** Reach the target in this many increments, statistics re-collected before each (default 1). */
  steps?: number;
  /** Calibration batches, needed for activation importance and compensation. */
  calibration?: () => AsyncIterable<Feeds> | Iterable<Feeds>;
  /**
   * Kept by a caller that prunes in steps (one object for the whole search): each group's score
   * scale from its first measurement, so a layer that already lost units is not cut again just
   * because its weakest remaining unit is, relative to its neighbours, still the weakest.
   */
  memory?: PruneMemory;
  /** Progress lines (to stderr in the CLI). */
  log?: (line: string) => void;
}

/** One place where structures were removed. */
export interface PrunedEntry {
  kind: Structure;
  /** Where, in model terms: the weights involved, e.g. "/h.0/attn/c_attn/MatMul -> /h.0/attn/c_proj". */
  where: string;
  /** Units (heads, neurons, channels) before and after. */
  before: number;
  after: number;
  /** Parameters removed at this place. */
  params: number;
}

/** A place the engine left alone, and why. */
export interface SkippedEntry {
  where: string;
  reason: string;
}

export interface PruneResult {
  model: OnnxModel;
  pruned: PrunedEntry[];
  skipped: SkippedEntry[];
  paramsBefore: number;
  paramsAfter: number;
  /**
   * What was sliced out of each constant, by the last step (with one step: indices of the input
   * model's constants). Zeroing these entries in the input gives what the pruned model computes
   * wherever no normalization's statistics span a pruned width.
   */
  sliced?: SlicedEntries[];
}

/** State carried from one pruning step to the next (see PruneOptions.memory). */
export interface PruneMemory {
  scales: Map<string, { mean: number; std: number }>;
}

export function newPruneMemory(): PruneMemory {
  return { scales: new Map() };
}
