import { kvCacheTensors } from '../graph/analysis';
import { Trace, traceModelAt } from '../graph/trace';
import { OnnxModel } from '../onnx/model';
import { RuntimeFailure, createSession, dummyFeeds, ort } from '../onnx/runtime';
import { floatWeightBytes } from '../onnx/skeleton';

/** Above this, the pruned model is checked without loading its weights. */
const FULL_CHECK_MAX_BYTES = 256 * 2 ** 20;

/**
 * Runs the pruned model at both traced input sizes and checks that it loads and that every
 * output keeps the shape the base model had (a KV cache's present outputs: the heads it declares). Returns what went wrong, or undefined.
 * `ran`: this very model was already loaded and run on the calibration set (a confirmation), so
 * only its shapes at the traced sizes are left to check.
 */
export async function verifyPruned(model: OnnxModel, baseTraces: [Trace, Trace], ran = false): Promise<string | undefined> {
  const feeds = baseTraces.map((t) => dummyFeeds(model, ...(t.sizes as [number, number]), t.fixed));
  // A big model, or one already run with its weights, is checked through its shape-only copy
  // (same graph, same shapes, no weights held), traced: the next step analyses this very graph
  // at these sizes, and takes the trace from here (trace.ts).
  if (ran || floatWeightBytes(model) > FULL_CHECK_MAX_BYTES) {
    let traces: Trace[];
    try {
      traces = await traceModelAt(model, feeds);
    } catch (e) {
      if (!(e instanceof RuntimeFailure)) throw e;
      return `the pruned model fails to run: ${firstLine(e)}`;
    }
    return traces.map((t, k) => wrongOutput(model, baseTraces[k], (name) => t.get(name)?.dims)).find((p) => p);
  }
  let session;
  try {
    session = await createSession(model);
  } catch (e) {
    return `onnxruntime rejects the pruned model: ${firstLine(e)}`;
  }
  try {
    for (const k of [0, 1] as const) {
      let out: Record<string, ort.Tensor>;
      try {
        out = await session.run(feeds[k]);
      } catch (e) {
        return `the pruned model fails to run: ${firstLine(e)}`;
      }
      const problem = wrongOutput(model, baseTraces[k], (name) => out[name]?.dims);
      if (problem) return problem;
    }
    return undefined;
  } finally {
    await session.release();
  }
}

/** The first output whose shape is not the base's (a KV cache's present output: the heads it declares), described. */
function wrongOutput(model: OnnxModel, base: Trace, dimsOf: (name: string) => readonly number[] | undefined): string | undefined {
  const cache = kvCacheTensors(model);
  for (const output of model.graph.output) {
    const name = output.name ?? '';
    const declared = (cache.has(name) && output.type?.tensorType?.shape?.dim) || [];
    const want = base.get(name)?.dims.map((d, i) => (declared[i]?.dimValue ? Number(declared[i].dimValue) : d));
    const got = dimsOf(name);
    if (want && JSON.stringify(want) !== JSON.stringify(got)) return `output ${name} has shape [${got}] instead of [${want}]`;
  }
  return undefined;
}

function firstLine(e: unknown): string {
  return String((e as Error)?.message ?? e).split('\n')[0];
}
