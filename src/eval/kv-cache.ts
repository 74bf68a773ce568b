import { UserError } from '../errors';
import { isSizedPastAxis, pastWithDeclaredSizes, presentOf } from '../onnx/kv-cache';
import { OnnxModel } from '../onnx/model';
import { FixedSizes, InputSpec } from '../onnx/runtime';

/**
 * `past` with a number on every axis but the batch (0) and the past sequence (second to last),
 * from the model's declarations and the sizes `named` gives (pastWithDeclaredSizes), then those
 * `found` by running the model (graph/cache-sizes.ts); an axis nothing fixes is refused, naming
 * the input and what to do.
 */
export function pastWithSizes(model: OnnxModel, past: InputSpec, named: ReadonlyMap<string, number>, shown: string, found: FixedSizes = {}): InputSpec {
  const rank = past.dims.length;
  const shape = `[${past.dims.map((d) => d ?? '?').join(', ')}]`;
  if (rank < 3) {
    throw new UserError(`${shown}: cache input '${past.name}' is ${shape}; a Hugging Face cache is [batch, heads, past_sequence, head_size]: give it in the set ("${past.name}": "<file>.npy")`);
  }
  const declared = pastWithDeclaredSizes(model, past, named);
  const sized = { ...declared, dims: declared.dims.map((d, axis) => found[past.name]?.[axis] ?? d) };
  const axis = sized.dims.findIndex((d, i) => isSizedPastAxis(i, rank) && typeof d !== 'number');
  if (axis >= 0) {
    const d = past.dims[axis];
    const present = presentOf(model, past.name);
    const what = d === null ? `axis ${axis}` : `'${d}' (axis ${axis})`;
    const example = past.dims.map((x, i) => (i === 0 ? 'N' : i === rank - 2 ? 0 : i === axis ? '<size>' : (x ?? '?'))).join(', ');
    throw new UserError(
      `${shown}: cache input '${past.name}' is ${shape}: the size of ${what} is fixed neither by the model's declarations${present ? `, its output '${present}'` : ''}, another input nor a run of the model without its pasts; give the empty past in the set ("${past.name}": an .npy of shape [${example}]) or export the model with that size fixed`,
    );
  }
  return sized;
}
