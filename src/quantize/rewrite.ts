/** Rewriting the graph with the chosen candidates, and checking the result runs. */
import { onnx } from 'onnx-proto';
import { OnnxModel } from '../onnx/model';
import { createSession, dummyFeeds, graphOutputs, ort } from '../onnx/runtime';
import { TRACE_SIZES } from '../graph/analysis';
import { Candidate, MS_DOMAIN } from './formats';

export function addMsOpset(model: OnnxModel): void {
  const uses = model.graph.node.some((n) => n.domain === MS_DOMAIN);
  if (uses && !model.proto.opsetImport.some((o) => o.domain === MS_DOMAIN)) {
    model.proto.opsetImport.push(onnx.OperatorSetIdProto.create({ domain: MS_DOMAIN, version: 1 }));
  }
}

/**
 * Replaces every candidate's op by its quantized form, places shared DequantizeLinear nodes
 * first (they read initializers only), drops the float weights nothing reads any more, and the
 * quantized initializers of layers that were kept float (`removable` says which names are
 * those). Other unread tensors of the model are left as they were.
 */
export function applyCandidates(work: OnnxModel, candidates: Candidate[], removable: (name: string) => boolean): void {
  const graph = work.graph;
  const byNode = new Map(candidates.map((c) => [c.node, c]));
  const shared = new Set<onnx.NodeProto>();
  const nodes: onnx.NodeProto[] = [];
  for (const node of graph.node as onnx.NodeProto[]) {
    const c = byNode.get(node);
    if (!c) {
      nodes.push(node);
      continue;
    }
    for (const s of c.shared) shared.add(s);
    nodes.push(...c.build([...node.output]));
  }
  graph.node = [...shared, ...nodes];
  addMsOpset(work);
  work.dropUnread(removable);
}

/**
 * Runs the quantized model once and checks its outputs keep the float model's names, element
 * types and ranks, and every fixed size. The dummy inputs take the first of the engine's trace
 * sizes the model runs at (some models only run on long inputs).
 */
export async function verifyQuantized(original: OnnxModel, quantized: OnnxModel): Promise<void> {
  const expected = graphOutputs(original);
  let session: ort.InferenceSession;
  try {
    session = await createSession(quantized);
  } catch (e) {
    throw new Error(`internal: the quantized model does not load in onnxruntime: ${(e as Error).message}`);
  }
  try {
    let out: ort.InferenceSession.ReturnType | undefined;
    let lastError: unknown;
    for (const sizes of [[1, 4] as [number, number], ...TRACE_SIZES.map((pair) => pair[0])]) {
      try {
        out = await session.run(dummyFeeds(quantized, ...sizes));
        break;
      } catch (e) {
        lastError = e;
      }
    }
    if (!out) throw new Error(`internal: the quantized model does not run at any size tried: ${String((lastError as Error)?.message ?? lastError).split('\n')[0]}`);
    for (const spec of expected) {
      const t = out[spec.name];
      const fits = t && t.dims.length === spec.dims.length && spec.dims.every((d, i) => typeof d !== 'number' || t.dims[i] === d);
      if (!fits) {
        throw new Error(
          `internal: the quantized model's output '${spec.name}' has shape [${t ? t.dims.join(', ') : 'missing'}], expected [${spec.dims.map((d) => d ?? '?').join(', ')}]`,
        );
      }
    }
  } finally {
    await session.release();
  }
}
