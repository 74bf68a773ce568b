import { onnx } from 'onnx-proto';
import { nodeReads } from '../onnx/reads';
import { OnnxModel } from '../onnx/model';

/**
 * What `compactNames` changed: the bytes the protobuf lost, and how many names it shortened.
 */
export interface CompactResult {
  model: OnnxModel;
  /** Encoded graph bytes before minus after (weights are not touched). */
  bytesSaved: number;
  renamed: number;
}

/**
 * A copy of `model` whose intermediate tensors carry short names ("0", "1", ... in base 36) and
 * whose nodes carry no name or doc string. Exporters name every intermediate after its module
 * path ("/model/layers.0/self_attn/Reshape_3_output_0") and repeat it at every use: on a model of
 * a few MB that is 4-10 % of the file, and more once the weights are quantized.
 *
 * Kept as they are: the graph's inputs and outputs (callers feed and fetch them), initializers
 * (weights keep the names that map them back to the training code), and every name a subgraph
 * (If/Loop/Scan body) reads from the outer scope, since those are bound by name. value_info and
 * quantization annotations follow their tensor's new name.
 */
export function compactNames(model: OnnxModel): CompactResult {
  const work = model.clone();
  const graph = work.graph;
  const before = graphBytes(graph);

  const kept = new Set<string>([
    ...graph.input.map((v) => v.name ?? ''),
    ...graph.output.map((v) => v.name ?? ''),
    ...graph.initializer.map((t) => t.name ?? ''),
    ...(graph.sparseInitializer ?? []).map((t) => t.values?.name ?? ''),
  ]);
  for (const node of graph.node) {
    const outer = nodeReads(node).slice(node.input?.length ?? 0);
    for (const name of outer) kept.add(name);
  }

  const renames = new Map<string, string>();
  let counter = 0;
  const shortName = (): string => {
    for (;;) {
      const name = (counter++).toString(36);
      if (!kept.has(name)) return name;
    }
  };
  for (const node of graph.node) {
    for (const out of node.output ?? []) {
      if (out && !kept.has(out) && !renames.has(out)) renames.set(out, shortName());
    }
  }
  const rename = (name: string): string => renames.get(name) ?? name;

  for (const node of graph.node) {
    node.input = (node.input ?? []).map(rename);
    node.output = (node.output ?? []).map(rename);
    node.name = '';
    node.docString = '';
  }
  for (const v of graph.valueInfo ?? []) v.name = rename(v.name ?? '');
  for (const a of graph.quantizationAnnotation ?? []) a.tensorName = rename(a.tensorName ?? '');
  work.reindexConstants();
  return { model: work, bytesSaved: before - graphBytes(graph), renamed: renames.size };
}

/** Encoded size of everything in the graph but the initializers' data, which names do not touch. */
function graphBytes(graph: onnx.GraphProto): number {
  const initializers = graph.initializer;
  graph.initializer = [];
  try {
    return onnx.GraphProto.encode(graph).finish().byteLength;
  } finally {
    graph.initializer = initializers;
  }
}
