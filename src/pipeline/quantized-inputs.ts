import { OnnxModel } from '../onnx/model';
import { PrunableBlocks, PrunableGroup, PruneOptions, PruneResult, SkippedEntry, findPrunable, firstStatisticsTap, pruneModel } from '../prune';
import type { StatsTap } from '../prune/stats';
import { QuantizedInputsReport, liftQuantized, lowerQuantized } from '../quantize/inputs';

/** A pruning result, with what became of the model's quantized weights when it had some. */
export type PruneInFormatResult = PruneResult & { quantizedInputs?: QuantizedInputsReport };

/**
 * Prunes `model` and gives it back in its own format: its MatMulNBits and DequantizeLinear
 * weights are lifted to float for the engine (statistics, scores, compensation and candidates
 * all see the dequantized weights) and each surviving weight is lowered back into its format
 * (src/quantize/inputs.ts), or, with `written: 'float'` (the config's `prune.quantized: float`),
 * left float. A model without such weights is pruned as it is.
 */
export async function pruneInFormat(model: OnnxModel, options: PruneOptions, written: 'keep' | 'float' = 'keep'): Promise<PruneInFormatResult> {
  const lifted = liftQuantized(model);
  if (!lifted) return pruneModel(model, options);
  const formats = [...new Set(lifted.weights.map((w) => w.format))].join(', ');
  options.log?.(`pruning ${lifted.weights.length} quantized weights (${formats}) as float; ${written === 'float' ? 'they stay float (prune.quantized: float)' : 'each is written back in its format'}`);
  const result = await pruneModel(lifted.model, options);
  const liftedNames = new Set(lifted.weights.map((w) => w.name));
  if (written === 'float') return { ...result, sliced: result.sliced?.filter((e) => !liftedNames.has(e.tensor)) };
  const removed = new Map((result.sliced ?? []).map((e) => [`${e.tensor}\0${e.axis}`, e.indices]));
  const { model: lowered, report } = lowerQuantized(lifted, result.model, (name, axis) => removed.get(`${name}\0${axis}`));
  if (report.requantized.length > 0) {
    options.log?.(`requantized ${report.requantized.length} weights (input columns removed or refit), worst relative weight error ${report.worst.toPrecision(3)}; ${report.exact} kept their bytes`);
  }
  // `sliced` speaks of the input model's constants: the lifted weights are not among them.
  return { ...result, model: lowered, sliced: result.sliced?.filter((e) => !liftedNames.has(e.tensor)), quantizedInputs: report };
}

/**
 * The first step's statistics tap on the gate's evaluation of `base` (prune's firstStatisticsTap):
 * for a quantized model, planned on its lifted form and run on the model as given, whose
 * activations have the same names.
 */
export async function statisticsTapInFormat(base: OnnxModel, options: PruneOptions): Promise<StatsTap | undefined> {
  const lifted = liftQuantized(base);
  return lifted ? firstStatisticsTap(lifted.model, options, base) : firstStatisticsTap(base, options);
}

/**
 * `inspect`'s prunable groups of `model` as pruneInFormat prunes it: quantized weights lifted,
 * and `quantized` saying so, when it has such weights.
 */
export async function findPrunableInFormat(model: OnnxModel): Promise<{ prunable: PrunableGroup[]; skipped: SkippedEntry[]; blocks?: PrunableBlocks; quantized?: string }> {
  const lifted = liftQuantized(model);
  if (!lifted) return findPrunable(model);
  const counts = new Map<string, number>();
  for (const w of lifted.weights) counts.set(w.format, (counts.get(w.format) ?? 0) + 1);
  const formats = [...counts].map(([format, n]) => `${n} ${format}`).join(', ');
  const quantized = `${formats}: pruned in their format; output rows and whole blocks removed keep their bytes, other input columns are requantized (report: quantized_inputs)`;
  return { ...(await findPrunable(lifted.model)), quantized };
}

/**
 * One report of what a gate's steps up to the chosen one did to the quantized weights: a weight
 * requantized by any step is listed with its worst error.
 */
export function mergeQuantizedInputs(reports: (QuantizedInputsReport | undefined)[]): QuantizedInputsReport | undefined {
  const given = reports.filter((r): r is QuantizedInputsReport => !!r);
  if (given.length === 0) return undefined;
  const byWhere = new Map<string, QuantizedInputsReport['requantized'][number]>();
  for (const r of given) {
    for (const w of r.requantized) {
      const prev = byWhere.get(w.where);
      if (!prev || w.error > prev.error) byWhere.set(w.where, w);
    }
  }
  const requantized = [...byWhere.values()].sort((a, b) => b.error - a.error);
  const weights = given[given.length - 1].exact + given[given.length - 1].requantized.length;
  return { exact: weights - requantized.length, requantized, worst: requantized[0]?.error ?? 0 };
}
