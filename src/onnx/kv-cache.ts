import { dtypeInfo } from './dtype';
import { OnnxModel } from './model';
import { InputSpec, graphOutputs, valueDims } from './runtime';
import { Tensor } from './tensor';

/**
 * A Hugging Face KV cache as a model declares it (docs/contracts.md, "Calibration data":
 * `past_key_values.*` in, `present.*` out): which inputs are pasts, which output carries each to
 * the next step, and the sizes the declarations give a past's axes. Every run that feeds an empty
 * past (the tasks' sets, the analysis's dummy inputs) sizes it from here.
 */

export const PAST_PREFIX = 'past_key_values';
export const PRESENT_PREFIX = 'present';

/** Whether a graph input is a cache's past, by the name Hugging Face exports give it. */
export function isPastInput(name: string): boolean {
  return name.startsWith(PAST_PREFIX);
}

/** The present output carrying a past input's cache to the next step, when the model has one. */
export function presentOf(model: OnnxModel, past: string): string | undefined {
  const outputs = graphOutputs(model).map((o) => o.name);
  const named = PRESENT_PREFIX + past.slice(PAST_PREFIX.length);
  if (outputs.includes(named)) return named;
  // Otherwise the graph output a Concat makes of this past and the step's new keys or values.
  return model.graph.node.find((n) => n.opType === 'Concat' && n.input?.includes(past) && outputs.includes(n.output?.[0] ?? ''))?.output?.[0] ?? undefined;
}

/**
 * The axes of a past (rank 3 or more) whose size an empty past must be given: every axis but the
 * batch (0) and the past sequence (second to last).
 */
export function isSizedPastAxis(axis: number, rank: number): boolean {
  return axis !== 0 && axis !== rank - 2;
}

/**
 * `past` with the sizes its model's declarations give the axes it leaves symbolic (isSizedPastAxis):
 * the size `named` gives that axis name (the sizes of the other inputs), else the present
 * output's declared size on that axis, else a value_info of the present or of the Concat's other
 * inputs (the step's new keys or values). An axis none of these fixes stays as declared.
 */
export function pastWithDeclaredSizes(model: OnnxModel, past: InputSpec, named: ReadonlyMap<string, number>): InputSpec {
  const rank = past.dims.length;
  const present = presentOf(model, past.name);
  const others = [present, ...(model.graph.node.find((n) => n.opType === 'Concat' && n.output?.[0] === present)?.input ?? []).filter((i) => i && i !== past.name)];
  const infos = [...graphOutputs(model).filter((o) => o.name === present).map((o) => o.dims), ...(model.graph.valueInfo ?? []).filter((v) => others.includes(v.name ?? '')).map(valueDims)];
  const dims = past.dims.map((d, axis) => {
    if (!isSizedPastAxis(axis, rank) || typeof d === 'number') return d;
    return (d !== null ? named.get(d) : undefined) ?? infos.map((dims) => (dims.length === rank ? dims[axis] : null)).find((s): s is number => typeof s === 'number') ?? d;
  });
  return { ...past, dims };
}

/** A past of length 0 for `batch` rows; `past` has its sizes (pastWithDeclaredSizes). */
export function emptyPast(past: InputSpec, batch: number): Tensor {
  const dims = past.dims.map((d, axis) => (axis === 0 ? batch : axis === past.dims.length - 2 ? 0 : (d as number)));
  return { dtype: past.dtype, dims, data: new (dtypeInfo(past.dtype).array)(0) };
}
