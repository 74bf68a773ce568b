import { onnx } from 'onnx-proto';

/** Every tensor a node reads: its inputs and the outer-scope names its subgraphs use. */
export function nodeReads(node: onnx.INodeProto): string[] {
  const reads = [...(node.input ?? [])];
  for (const a of node.attribute ?? []) {
    for (const g of [a.g, ...(a.graphs ?? [])]) if (g) reads.push(...subgraphOuterReads(g));
  }
  return reads;
}

function subgraphOuterReads(g: onnx.IGraphProto): string[] {
  const local = new Set<string>([
    ...(g.input ?? []).map((v) => v.name ?? ''),
    ...(g.initializer ?? []).map((t) => t.name ?? ''),
  ]);
  for (const n of g.node ?? []) for (const o of n.output ?? []) local.add(o);
  const reads: string[] = [];
  for (const n of g.node ?? []) for (const i of nodeReads(n)) if (i && !local.has(i)) reads.push(i);
  return reads;
}
