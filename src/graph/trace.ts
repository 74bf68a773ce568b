import { onnx } from 'onnx-proto';
import { OnnxModel } from '../onnx/model';
import { shapeOnlyProto } from '../onnx/skeleton';
import { dummyFeeds, ort, sessionForProto } from '../onnx/runtime';
import { toNumbers } from '../onnx/tensor';

/** What a run of the model showed about one tensor. */
export interface TracedValue {
  dims: number[];
  type: string;
  /** The values of small integer tensors (shapes, indices), which shape rewrites need. */
  ints?: number[];
}

/** Every tensor's traced value, and the (axis 0, other dynamic axes) sizes of the dummy inputs. */
export type Trace = Map<string, TracedValue> & { sizes?: [number, number] };

const MAX_TRACED_INTS = 64;

/**
 * Runs the model once with every intermediate tensor exposed as an output and records the
 * shape of each (and the values of small integer tensors). onnxruntime's own shape logic thus
 * follows the shapes through every op, including shapes computed at run time, so the analysis
 * needs no shape inference of its own. Graph optimizations are off so names survive.
 */
export async function traceModel(model: OnnxModel, feeds?: Record<string, ort.Tensor>): Promise<Trace> {
  // Shapes do not depend on weight values: run a copy whose weights are made at run time.
  const { proto, replaced } = shapeOnlyProto(model);
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
  const inputs = feeds ?? dummyFeeds(model);
  try {
    const results = await session.run(inputs);
    const trace: Trace = new Map();
    for (const [name, t] of Object.entries(results)) {
      const entry: TracedValue = { dims: [...t.dims], type: t.type };
      if ((t.type === 'int64' || t.type === 'int32') && t.size <= MAX_TRACED_INTS) {
        entry.ints = toNumbers(t);
      }
      trace.set(name, entry);
    }
    for (const [name, { dims }] of replaced) trace.set(name, { dims, type: 'float32' });
    for (const [name, t] of Object.entries(inputs)) {
      trace.set(name, { dims: [...t.dims], type: t.type });
    }
    return trace;
  } finally {
    await session.release();
  }
}
