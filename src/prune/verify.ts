import { kvCacheTensors } from '../graph/analysis';
import { Trace } from '../graph/trace';
import { OnnxModel } from '../onnx/model';
import { createSession, dummyFeeds, sessionForProto } from '../onnx/runtime';
import { floatWeightBytes, shapeOnlyProto } from '../onnx/skeleton';

/** Above this, the pruned model is checked without loading its weights. */
const FULL_CHECK_MAX_BYTES = 256 * 2 ** 20;

/**
 * Runs the pruned model at both traced input sizes and checks that it loads and that every
 * output keeps the shape the base model had (a KV cache's present outputs: the heads it declares). Returns what went wrong, or undefined.
 */
export async function verifyPruned(model: OnnxModel, baseTraces: [Trace, Trace]): Promise<string | undefined> {
  let session;
  try {
    // A big model is checked through its shape-only copy: same graph, same shapes, no weights held.
    session =
      floatWeightBytes(model) > FULL_CHECK_MAX_BYTES
        ? await sessionForProto(model, shapeOnlyProto(model).proto, { graphOptimizationLevel: 'disabled', enableCpuMemArena: false })
        : await createSession(model);
  } catch (e) {
    return `onnxruntime rejects the pruned model: ${firstLine(e)}`;
  }
  const cache = kvCacheTensors(model);
  try {
    for (const k of [0, 1] as const) {
      let out;
      try {
        out = await session.run(dummyFeeds(model, ...(baseTraces[k].sizes as [number, number])));
      } catch (e) {
        return `the pruned model fails to run: ${firstLine(e)}`;
      }
      for (const name of session.outputNames) {
        // As the base had it, except the fixed sizes a KV cache's present output declares anew (its heads).
        const declared = (cache.has(name) && model.graph.output.find((v) => v.name === name)?.type?.tensorType?.shape?.dim) || [];
        const want = baseTraces[k].get(name)?.dims.map((d, i) => (declared[i]?.dimValue ? Number(declared[i].dimValue) : d));
        const got = out[name]?.dims;
        if (want && JSON.stringify(want) !== JSON.stringify(got)) {
          return `output ${name} has shape [${got}] instead of [${want}]`;
        }
      }
    }
    return undefined;
  } finally {
    await session.release();
  }
}

function firstLine(e: unknown): string {
  return String((e as Error)?.message ?? e).split('\n')[0];
}
