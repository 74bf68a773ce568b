import { createHash } from 'crypto';
import { onnx } from 'onnx-proto';
import { OnnxModel } from '../onnx/model';
import { shapeOnlyProto } from '../onnx/skeleton';
import { FixedSizes, dummyFeeds, ort, sessionForProto } from '../onnx/runtime';
import { toNumbers } from '../onnx/tensor';
import { releaseGarbage } from '../util/gc';

/** What a run of the model showed about one tensor. */
export interface TracedValue {
  dims: number[];
  type: string;
  /** The values of small integer tensors (shapes, indices), which shape rewrites need. */
  ints?: number[];
}

/**
 * Every tensor's traced value, and the (axis 0, other dynamic axes) sizes of the dummy inputs
 * with the cache sizes they were given (dummyFeeds' `fixed`): dummyFeeds(model, ...sizes, fixed)
 * makes them again.
 */
export type Trace = Map<string, TracedValue> & { sizes?: [number, number]; fixed?: FixedSizes };

const MAX_TRACED_INTS = 64;

/**
 * Runs the model once with every intermediate tensor exposed as an output and records the
 * shape of each (and the values of small integer tensors). onnxruntime's own shape logic thus
 * follows the shapes through every op, including shapes computed at run time, so the analysis
 * needs no shape inference of its own. Graph optimizations are off so names survive.
 */
export async function traceModel(model: OnnxModel, feeds?: Record<string, ort.Tensor>): Promise<Trace> {
  return (await traceModelAt(model, [feeds ?? dummyFeeds(model)]))[0];
}

/**
 * The last traces made, by what determines them: the shape-only copy's graph and opsets, and the
 * inputs. A pruning step's check of the model it made traces it at the sizes the next step's
 * analysis traces it at (the same graph, read back from its file): the second is the first.
 * Two, as the base model is also traced for its cost on a calibration batch in between.
 */
const recentTraces: { key: string; traces: Trace[] }[] = [];
const RECENT_TRACES = 2;

function traceKey(proto: onnx.ModelProto, feedsList: Record<string, ort.Tensor>[]): string {
  const hash = createHash('sha256');
  hash.update(onnx.GraphProto.encode(proto.graph as onnx.GraphProto).finish());
  hash.update(JSON.stringify(proto.opsetImport));
  for (const feeds of feedsList) {
    for (const [name, t] of Object.entries(feeds)) {
      hash.update(`${name}:${t.type}:${t.dims.join(',')}`);
      const data = t.data as ArrayBufferView;
      hash.update(new Uint8Array(data.buffer, data.byteOffset, data.byteLength));
    }
  }
  return hash.digest('hex');
}

/** One run's shapes (and small integer values), and the bytes of the outputs it let go. */
async function traceOnce(session: ort.InferenceSession, inputs: Record<string, ort.Tensor>): Promise<{ trace: Trace; bytes: number }> {
  const results = await session.run(inputs);
  const trace: Trace = new Map();
  let bytes = 0;
  for (const [name, t] of Object.entries(results)) {
    const entry: TracedValue = { dims: [...t.dims], type: t.type };
    if ((t.type === 'int64' || t.type === 'int32') && t.size <= MAX_TRACED_INTS) {
      entry.ints = toNumbers(t);
    }
    bytes += (t.data as ArrayBufferView).byteLength ?? 0;
    trace.set(name, entry);
  }
  return { trace, bytes };
}

/** The model traced once for each set of inputs, by one session (see traceModel). */
export async function traceModelAt(model: OnnxModel, feedsList: Record<string, ort.Tensor>[]): Promise<Trace[]> {
  // Shapes do not depend on weight values: run a copy whose weights are made at run time.
  const { proto, replaced } = shapeOnlyProto(model);
  const key = traceKey(proto, feedsList);
  const known = recentTraces.find((r) => r.key === key);
  if (known) return known.traces.map((t) => new Map(t));
  const graph = proto.graph as onnx.GraphProto;
  const seen = new Set([...graph.output.map((o) => o.name), ...replaced.keys()]);
  for (const node of graph.node) {
    for (const out of node.output ?? []) {
      if (out && !seen.has(out)) {
        graph.output.push(onnx.ValueInfoProto.create({ name: out }));
        seen.add(out);
      }
    }
  }
  const session = await sessionForProto(model, proto, { graphOptimizationLevel: 'disabled', enableCpuMemArena: false });
  try {
    const traces: Trace[] = [];
    for (const inputs of feedsList) {
      const { trace, bytes } = await traceOnce(session, inputs);
      // Every intermediate came back as a buffer, and only shapes are kept: 8.9 GB for one
      // 128-token sample of a 7B model, freed now, not beside the session opened next.
      releaseGarbage(bytes);
      for (const [name, { dims }] of replaced) trace.set(name, { dims, type: 'float32' });
      for (const [name, t] of Object.entries(inputs)) {
        trace.set(name, { dims: [...t.dims], type: t.type });
      }
      traces.push(trace);
    }
    recentTraces.unshift({ key, traces });
    recentTraces.length = Math.min(recentTraces.length, RECENT_TRACES);
    return traces.map((t) => new Map(t));
  } finally {
    await session.release();
  }
}
