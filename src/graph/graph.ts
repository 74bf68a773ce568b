import { onnx } from 'onnx-proto';
import { OnnxModel } from '../onnx/model';
import { nodeReads } from '../onnx/reads';
import { toNumber } from '../onnx/tensor';


export type Node = onnx.NodeProto;

/** Reads a node attribute by name, with typed accessors. */
export function attr(node: onnx.INodeProto, name: string): onnx.IAttributeProto | undefined {
  return node.attribute?.find((a) => a.name === name);
}
export function attrInt(node: onnx.INodeProto, name: string, fallback: number): number {
  const a = attr(node, name);
  return a ? toNumber(a.i) : fallback;
}
export function attrInts(node: onnx.INodeProto, name: string): number[] | undefined {
  const a = attr(node, name);
  return a ? (a.ints ?? []).map(toNumber) : undefined;
}
export function attrFloat(node: onnx.INodeProto, name: string, fallback: number): number {
  const a = attr(node, name);
  return a ? (a.f ?? fallback) : fallback;
}
export function attrString(node: onnx.INodeProto, name: string): string | undefined {
  const a = attr(node, name);
  return a?.s ? Buffer.from(a.s).toString('utf8') : undefined;
}
export function setAttrInts(node: onnx.INodeProto, name: string, values: number[]): void {
  const a = attr(node, name);
  if (a) a.ints = values;
  else
    (node.attribute ??= []).push(
      onnx.AttributeProto.create({ name, type: onnx.AttributeProto.AttributeType.INTS, ints: values }),
    );
}
export function setAttrInt(node: onnx.INodeProto, name: string, value: number): void {
  const a = attr(node, name);
  if (a) a.i = value;
  else
    (node.attribute ??= []).push(onnx.AttributeProto.create({ name, type: onnx.AttributeProto.AttributeType.INT, i: value }));
}

/** A short, human name for a node in reports: its name, else its op and first output. */
export function nodeLabel(node: onnx.INodeProto): string {
  return node.name || `${node.opType}(${node.output?.[0] ?? ''})`;
}

/**
 * Who produces and who consumes each tensor of the top-level graph, in topological order.
 * Subgraphs (If/Loop/Scan bodies) are opaque: their outer-scope reads count as consumers of
 * the node that owns them, so nothing they touch is considered understood.
 */
export class GraphIndex {
  readonly nodes: Node[];
  readonly producer = new Map<string, Node>();
  readonly consumers = new Map<string, Node[]>();
  readonly graphInputs: Set<string>;
  readonly graphOutputs: Set<string>;

  constructor(readonly model: OnnxModel) {
    const graph = model.graph;
    this.graphInputs = new Set(graph.input.map((v) => v.name ?? '').filter((n) => !model.isInitializer(n)));
    this.graphOutputs = new Set(graph.output.map((v) => v.name ?? ''));
    const nodes = graph.node as Node[];
    for (const node of nodes) {
      for (const o of node.output) if (o) this.producer.set(o, node);
      for (const i of nodeReads(node)) {
        if (!i) continue;
        const list = this.consumers.get(i);
        if (list) {
          if (!list.includes(node)) list.push(node);
        } else this.consumers.set(i, [node]);
      }
    }
    this.nodes = topologicalOrder(nodes, this.producer);
  }

  consumersOf(name: string): Node[] {
    return this.consumers.get(name) ?? [];
  }

  producerOf(name: string): Node | undefined {
    return this.producer.get(name);
  }

  isConstant(name: string): boolean {
    return this.model.isConstant(name);
  }
}

function topologicalOrder(nodes: Node[], producer: Map<string, Node>): Node[] {
  const order: Node[] = [];
  const state = new Map<Node, 1 | 2>();
  for (const start of nodes) {
    if (state.has(start)) continue;
    // Iterative DFS: graphs of large models are deep enough to overflow the call stack.
    const stack: [Node, number][] = [[start, 0]];
    state.set(start, 1);
    while (stack.length) {
      const top = stack[stack.length - 1];
      const reads = nodeReads(top[0]);
      if (top[1] < reads.length) {
        const dep = producer.get(reads[top[1]++]);
        if (dep && !state.has(dep)) {
          state.set(dep, 1);
          stack.push([dep, 0]);
        }
      } else {
        state.set(top[0], 2);
        order.push(top[0]);
        stack.pop();
      }
    }
  }
  return order;
}
