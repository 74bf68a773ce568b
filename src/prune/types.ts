import type { Analysis, Structure } from '../graph/analysis';
import type { OnnxModel } from '../onnx/model';
import type { Feeds } from '../onnx/runtime';
import type { SlicedEntries } from './apply';
import type { PassRecord } from '../util/passes';
import type { CollectedStats } from './stats';
import type { ort } from '../onnx/runtime';

export type { Structure } from '../graph/analysis';
export const IMPORTANCES = ['magnitude', 'activation'] as const;
export type Importance = (typeof IMPORTANCES)[number];
export const COMPENSATIONS = ['none', 'bias', 'reconstruct'] as const;
export type Compensation = (typeof COMPENSATIONS)[number];
/** `auto`: bias or reconstruct, whichever damages the calibration loss less (bias without a damage measure). */
export type CompensationChoice = Compensation | 'auto';
/**
 * How the removals are shared between groups (layers × kinds). `global`: one standardized
 * ranking of all units (FLAP); `uniform`: the same fraction of every group; `ffn-only`: FFN
 * neurons only, one ranking; `measured`: by each group's measured damage at a few ratios;
 * `auto`: every applicable one, the least damaging kept (with a damage measure; else global).
 */
export const ALLOCATIONS = ['auto', 'global', 'uniform', 'ffn-only', 'measured'] as const;
export type Allocation = (typeof ALLOCATIONS)[number];

/**
 * The loss of a candidate on calibration data, lower is better (prune-gate's evaluator: the KL
 * divergence from the base model's outputs). `share` (0..1] is the part of the calibration set
 * to use (its first batches, rounded down, at least one), so a search on a large model stays
 * within a few passes over it.
 */
export interface DamageMeasure {
  /** What the loss is, for the report ("cross-entropy on the labels", "KL to the base"). */
  name: string;
  /** `tap`: a copy of the candidate with outputs of its own, run instead, each batch's outputs handed to it. */
  loss(candidate: OnnxModel, share: number, tap?: PassTap): Promise<number>;
  /** The loss on the first `shares[i]` of the set's batches, each, from one pass as far as the largest. */
  losses?(candidate: OnnxModel, shares: number[], tap?: PassTap): Promise<number[]>;
  /** The batches the set is run in (what a share of it is rounded to). */
  batches?: number;
  /**
   * The loss of each sample of the set, the candidate run with `extra` feeds for each batch of
   * samples (the sensitivity probe's masks, one value per sample) and the per-sample values of
   * `outputs`: one pass, in batches when `batched`, else one sample at a time.
   */
  sampleLosses?(
    candidate: OnnxModel,
    extra: (start: number, size: number) => Feeds,
    outputs: string[],
    batched: boolean,
  ): Promise<{ losses: Float64Array; outputs: Float64Array[] }>;
  /** The samples `sampleLosses` runs. */
  samples?: number;
  /**
   * The step's evaluation reuses the pass that confirmed the kept candidate (the candidate is
   * evaluated as built, not quantized): a lone candidate is then confirmed too, for free, and its
   * pass collects the next step's statistics.
   */
  confirmationEvaluates?: boolean;
  /**
   * The candidate's latency over the base's (median of alternated runs, the worse of batch 1
   * and a calibration batch) on this machine: with `align: auto`, a pruned model slower than its
   * base here is not kept.
   */
  latency?(candidate: OnnxModel): Promise<number>;
}

/** Outputs a pass also fetches, and what takes them: statistics riding along a confirmation (stats.ts StatsTap). */
export interface PassTap {
  model: OnnxModel;
  outputs: string[];
  add(result: Record<string, ort.Tensor>): void;
}

/** What the allocation search tried, with each candidate's calibration loss, and what it kept. */
export interface AllocationResult {
  strategy: Exclude<Allocation, 'auto'>;
  compensate: Compensation;
  /** The damage measure the losses are in, or why nothing was measured. */
  measure: string;
  /** What the losses were measured on, when not the whole calibration set (a race's first batches). */
  on?: string;
  tried: { strategy: Exclude<Allocation, 'auto'>; compensate: Compensation; loss: number | null; params: number; align?: number; latency?: number; note?: string }[];
  /** Widths kept as multiples of this (1: as the allocation made them). */
  align: number;
  /** The kept candidate's latency over the base's, when measured. */
  latency?: number;
  /** The passes over the calibration set the step made, in order. */
  passes?: PassEntry[];
}

export interface PruneOptions {
  /** Fraction of the model's parameters to remove, 0..1. */
  target: number;
  structures: Structure[];
  importance: Importance;
  compensate: CompensationChoice;
  /** How removals are shared between layers and kinds (default auto). */
  allocation?: Allocation;
  /** Measures candidates on calibration data: with it, allocation and compensation are chosen by measurement. */
  damage?: DamageMeasure;
  /**
   * Keep a multiple of this many neurons/channels in every FFN and conv layer wide enough
   * (at least four times as many units): odd widths can make a pruned model slower, not faster, on
   * runtimes that vectorize by 8 or 16. `auto` (the default): with a damage measure that times
   * candidates, the least damaging one not slower than the base, widths rounded to 8 and 16
   * tried too; without one, widths as the ranking makes them.
   */
  align?: number | 'auto';
  /** Reach the target in this many increments, statistics re-collected before each (default 1). */
  steps?: number;
  /** Calibration batches, needed for activation importance and compensation. */
  calibration?: () => AsyncIterable<Feeds> | Iterable<Feeds>;
  /** How many batches `calibration` yields, when known: passes over them report progress. */
  calibrationBatches?: number;
  /** How many samples they hold (for the report's list of passes). */
  calibrationSamples?: number;
  /**
   * Kept by a caller that prunes in steps (one object for the whole search): each group's score
   * scale from its first measurement, so a layer that already lost units is not cut again just
   * because its weakest remaining unit is, relative to its neighbours, still the weakest.
   */
  memory?: PruneMemory;
  /** No step follows this one: nothing is collected for a next one. */
  final?: boolean;
  /** Runs the passes over `calibration`, or gives back recorded results (default: runs them). */
  passes?: PassRecord;
  /** What this step may spend (default: everything; see SearchEffort). */
  effort?: SearchEffort;
  /** Progress lines (to stderr in the CLI). */
  log?: (line: string) => void;
}

/** What a step may spend (the budget's plan, src/gate/budget.ts): passes it may leave out. */
export interface SearchEffort {
  /** Confirm a second candidate beside the one planned. */
  alternative: boolean;
  /** Probe the groups' sensitivity (else each group's last probed one is reused). */
  probe: boolean;
  /** The share of the calibration batches the statistics pass reads. */
  share: number;
}

/** One pass over the calibration set a step made: what it was, why, and what it cost. */
export interface PassEntry {
  what: 'statistics' | 'probe' | 'confirmation' | 'normalization sums' | 'evaluation' | 'quantization';
  /** Why it ran: what its result was for. */
  why: string;
  /** The samples it read. */
  samples: number;
  seconds: number;
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
   * What was sliced out of each of the input model's constants, by all the steps (indices of the
   * input's). Zeroing these entries in the input gives what the pruned model computes wherever
   * no normalization's statistics span a pruned width.
   */
  sliced?: SlicedEntries[];
  /** How the last step's removals were allocated (when anything was removed). */
  allocation?: AllocationResult;
  /** The compensation each step that removed units applied, in step order. */
  compensations?: Compensation[];
  /** The passes over the calibration set the last step made. */
  passes?: PassEntry[];
  /** Why the last step removed less than its target, when it did (alignment, nothing more to remove, …). */
  short?: string;
  /** With `blocks` among the structures: each removable block's influence, and which went (depth.ts). */
  depth?: DepthSearch;
}

/** The depth search: the removable residual blocks by influence, lowest first, and the candidates tried. */
export interface DepthSearch {
  measure: string;
  blocks: { where: string; influence: number; params: number; removed: boolean }[];
  /** Each candidate: how many blocks went before width pruning and their parameters, its calibration loss (when measured) and all the parameters it removed. */
  tried: { blocks: number; blockParams: number; loss: number | null; params: number }[];
  /** Blocks removed in the kept candidate. */
  removed: number;
}

/** State carried from one pruning step to the next (see PruneOptions.memory). */
export interface PruneMemory {
  scales: Map<string, { mean: number; std: number }>;
  /** Each consumer's damping, chosen the first time it is refit (obs.ts). */
  dampings: Map<string, number | null>;
  /** Seconds spent choosing dampings so far: work done once per consumer, which later steps do not repeat (the budget leaves it out of their estimates). */
  choosing: { seconds: number };
  /**
   * Statistics of the next step's model known already, by tensor: collected while the last step
   * confirmed the candidate it kept, or, for tensors its pruning left exactly as they were, the
   * last step's own. The next step reads them instead of collecting them again.
   */
  ready: CollectedStats;
  /** Each group's measured loss for its curve's error (loss = a·E^p), by group, for a step that does not probe. */
  sensitivities: Map<string, { a: number; p: number }>;
  /** Steps since the last sensitivity probe (undefined: none yet): a probe is due every PROBE_EVERY steps (allocate.ts). */
  probed: { stepsAgo?: number };
  /** The analysis firstStatisticsTap made, which the first step takes if it prunes that very model. */
  analysed?: { model: OnnxModel; analysis: Analysis };
}

export function newPruneMemory(): PruneMemory {
  return { scales: new Map(), dampings: new Map(), choosing: { seconds: 0 }, ready: { stats: new Map(), rows: new Map() }, sensitivities: new Map(), probed: {} };
}
