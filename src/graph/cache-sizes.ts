import { onnx } from 'onnx-proto';
import { isPastInput, isSizedPastAxis, pastWithDeclaredSizes, presentOf } from '../onnx/kv-cache';
import { OnnxModel } from '../onnx/model';
import { FixedSizes, RuntimeFailure, dummyFeeds, graphInputs, sessionForProto } from '../onnx/runtime';
import { shapeOnlyProto } from '../onnx/skeleton';

/**
 * The sizes of the KV-cache axes that nothing in the model declares (onnxruntime-genai's recent
 * builders leave the head size `kv_cache_dim` symbolic on past and present alike), found by
 * running the model once without them: an empty past is no past (a Concat joins nothing to the
 * step's keys, an attention op takes its past as optional), so the present outputs then have the
 * step's true sizes. An attention op checks the past's head size even when the past is empty, so
 * the dummy inputs must have it. By input and axis, for dummyFeeds; empty when the declarations
 * fix every size, or when the model does not run without its pasts (the dummy inputs then size
 * those axes as any other).
 */
export async function cacheSizes(model: OnnxModel): Promise<FixedSizes> {
  // By past input: its present output, its rank and the axes to size.
  const unsized = new Map<string, { present: string; rank: number; axes: number[] }>();
  for (const spec of graphInputs(model)) {
    if (!isPastInput(spec.name) || spec.dims.length < 3) continue;
    const { dims } = pastWithDeclaredSizes(model, spec, new Map());
    const axes = dims.flatMap((d, axis) => (isSizedPastAxis(axis, dims.length) && typeof d !== 'number' ? [axis] : []));
    const present = presentOf(model, spec.name);
    if (axes.length && present) unsized.set(spec.name, { present, rank: dims.length, axes });
  }
  if (unsized.size === 0) return {};
  const { proto } = shapeOnlyProto(model);
  const graph = proto.graph as onnx.GraphProto;
  graph.input = graph.input.filter((v) => !unsized.has(v.name ?? ''));
  for (const node of graph.node) {
    // A Concat's inputs are all required: the past leaves the list; elsewhere it is an absent optional input.
    const inputs = node.input ?? [];
    node.input = node.opType === 'Concat' ? inputs.filter((i) => !unsized.has(i)) : inputs.map((i) => (unsized.has(i) ? '' : i));
  }
  const feeds = dummyFeeds(model);
  for (const name of unsized.keys()) delete feeds[name];
  let out;
  try {
    const session = await sessionForProto(model, proto, { graphOptimizationLevel: 'disabled', enableCpuMemArena: false });
    try {
      out = await session.run(feeds);
    } finally {
      await session.release();
    }
  } catch (e) {
    if (!(e instanceof RuntimeFailure)) throw e;
    return {}; // something reads the past itself (its Shape, say): the declarations were all there was
  }
  const sizes: Record<string, Record<number, number>> = {};
  for (const [past, { present, rank, axes }] of unsized) {
    const value = out[present];
    if (value?.dims.length !== rank) continue;
    sizes[past] = Object.fromEntries(axes.map((axis) => [axis, value.dims[axis]]));
  }
  return sizes;
}
