import { UserError } from '../errors';
import { dtypeInfo } from '../onnx/dtype';
import { OnnxModel } from '../onnx/model';
import { InputSpec, graphOutputs, valueDims } from '../onnx/runtime';
import { Tensor } from '../onnx/tensor';

/**
 * The empty past every task feeds a model with a Hugging Face KV cache (docs/contracts.md,
 * "Calibration data": `past_key_values.*` in, `present.*` out): the batch axis from the batch,
 * the past-sequence axis (second to last) 0, every other axis the size the model declares.
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
 * `past` with a number on every axis but the batch (0) and the past sequence (second to last).
 * An axis the declaration leaves symbolic takes the size `named` gives that name (the sizes of
 * the inputs the set gives), else the present output's declared size on that axis, else a
 * value_info of the present or of the Concat's other inputs (the step's new keys or values);
 * with none of these it is refused, naming the input and what to do.
 */
export function pastWithSizes(model: OnnxModel, past: InputSpec, named: ReadonlyMap<string, number>, shown: string): InputSpec {
  const rank = past.dims.length;
  const shape = `[${past.dims.map((d) => d ?? '?').join(', ')}]`;
  if (rank < 3) {
    throw new UserError(`${shown}: cache input '${past.name}' is ${shape}; a Hugging Face cache is [batch, heads, past_sequence, head_size]: give it in the set ("${past.name}": "<file>.npy")`);
  }
  const present = presentOf(model, past.name);
  const others = [present, ...(model.graph.node.find((n) => n.opType === 'Concat' && n.output?.[0] === present)?.input ?? []).filter((i) => i && i !== past.name)];
  const infos = [...graphOutputs(model).filter((o) => o.name === present).map((o) => o.dims), ...(model.graph.valueInfo ?? []).filter((v) => others.includes(v.name ?? '')).map(valueDims)];
  const dims = past.dims.map((d, axis) => {
    if (axis === 0 || axis === rank - 2 || typeof d === 'number') return d;
    const size = (d !== null ? named.get(d) : undefined) ?? infos.map((dims) => (dims.length === rank ? dims[axis] : null)).find((s): s is number => typeof s === 'number');
    if (size === undefined) {
      const what = d === null ? `axis ${axis}` : `'${d}' (axis ${axis})`;
      const example = past.dims.map((x, i) => (i === 0 ? 'N' : i === rank - 2 ? 0 : i === axis ? '<size>' : (x ?? '?'))).join(', ');
      throw new UserError(
        `${shown}: cache input '${past.name}' is ${shape}: the size of ${what} is fixed neither by the model's declarations${present ? `, its output '${present}'` : ''} nor another input; give the empty past in the set ("${past.name}": an .npy of shape [${example}]) or export the model with that size fixed`,
      );
    }
    return size;
  });
  return { ...past, dims };
}

/** A past of length 0 for `batch` rows; `past` has its sizes (pastWithSizes). */
export function emptyPast(past: InputSpec, batch: number): Tensor {
  const dims = past.dims.map((d, axis) => (axis === 0 ? batch : axis === past.dims.length - 2 ? 0 : (d as number)));
  return { dtype: past.dtype, dims, data: new (dtypeInfo(past.dtype).array)(0) };
}
