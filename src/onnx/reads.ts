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

/**
 * What makes a graph invalid before any work: a node (or a body of If/Loop/Scan, through the
 * outer scope) reading a tensor that no node, graph input or initializer provides, or a cycle.
 * Undefined when there is neither. (A node list out of order is valid: runtimes sort it.)
 */
export function graphDefect(graph: onnx.IGraphProto): string | undefined {
  const nodes = graph.node ?? [];
  const provided = new Set<string>([...(graph.input ?? []).map((v) => v.name ?? ''), ...(graph.initializer ?? []).map((t) => t.name ?? '')]);
  const producer = new Map<string, number>();
  nodes.forEach((n, i) => (n.output ?? []).forEach((o) => o && producer.set(o, i)));
  const label = (n: onnx.INodeProto) => `node '${n.name || n.output?.[0] || '?'}' (${n.opType})`;
  for (const n of nodes) {
    for (const i of nodeReads(n)) {
      if (i && !provided.has(i) && !producer.has(i)) return `${label(n)} reads '${i}', which no node, graph input or initializer provides`;
    }
  }
  // Kahn's algorithm: nodes left over sit on a cycle.
  const waiting = nodes.map((n) => new Set(nodeReads(n).filter((i) => i && !provided.has(i)).map((i) => producer.get(i)!)));
  const readers = new Map<number, number[]>();
  waiting.forEach((deps, i) => deps.forEach((d) => readers.set(d, [...(readers.get(d) ?? []), i])));
  const ready = waiting.flatMap((deps, i) => (deps.size === 0 ? [i] : []));
  let done = 0;
  while (ready.length) {
    const i = ready.pop()!;
    done++;
    for (const r of readers.get(i) ?? []) {
      waiting[r].delete(i);
      if (waiting[r].size === 0) ready.push(r);
    }
  }
  if (done < nodes.length) return `the graph has a cycle through ${label(nodes[waiting.findIndex((w) => w.size > 0)])}`;
  return undefined;
}
