import { onnx } from 'onnx-proto';
import { OnnxModel } from '../onnx/model';
import { nodeReads } from '../onnx/reads';
import { isFloatDType } from '../onnx/dtype';
import { GraphIndex, Node, attrFloat, nodeLabel } from './graph';
import { Trace, traceModel } from './trace';
import { ruleOf } from './rules';

/**
 * Residual blocks (docs/pruning.md, "Depth"): a node that adds a block's output f(x) to its input
 * x, where f(x) is computed from x through weights, has the shape of x, and is read by that node
 * alone. Removing the block leaves the node fed by x alone: the model then computes exactly what
 * it computes with f(x) zeroed. The adding node is a plain Add, or onnxruntime's fused
 * SkipSimplifiedLayerNormalization / SkipLayerNormalization, whose skip input is the residual.
 */
export interface ResidualBlock {
  /** The node that adds f(x) to x. */
  node: Node;
  where: string;
  /** The residual input x and the block's output f(x). */
  input: string;
  output: string;
  /** Parameters that go with the block (weights nothing else reads). */
  params: number;
  /** The weight ops that go with it, for the report. */
  weights: string[];
  /** The axis of x holding its features (a token's hidden size, an image's channels): block influence compares x and x + f(x) along it. */
  featureAxis: number;
  /** Graph outputs (a KV cache's present tensors) still computed by part of the block, which is kept for them. */
  keptFor: string[];
}

export interface BlockSearch {
  blocks: ResidualBlock[];
  /** Residual adds that cannot be removed, and why. */
  skipped: { where: string; reason: string }[];
}

const SKIP_NORMS = new Set(['SkipSimplifiedLayerNormalization', 'SkipLayerNormalization']);

/** The model's removable residual blocks, in graph order (`trace`: shapes of a run, else one is made). */
export async function findBlocks(model: OnnxModel, trace?: Trace): Promise<BlockSearch> {
  const index = new GraphIndex(model);
  trace ??= await traceModel(model);
  const order = new Map(index.nodes.map((n, i) => [n, i]));
  const blocks: ResidualBlock[] = [];
  const skipped: BlockSearch['skipped'] = [];
  for (const node of index.nodes) {
    const skipNorm = node.domain === 'com.microsoft' && SKIP_NORMS.has(node.opType);
    if (!(node.opType === 'Add' && (node.domain ?? '') === '') && !skipNorm) continue;
    const [a, b] = node.input;
    if (!a || !b || model.isConstant(a) || model.isConstant(b)) continue;
    // x is the side whose producer is upstream of the other side: f(x) depends on x.
    const sides = upstreamOf(index, b, a, order) ? [a, b] : upstreamOf(index, a, b, order) ? [b, a] : undefined;
    if (!sides) continue;
    const [x, fx] = sides;
    const dims = (t: string) => trace.get(t)?.dims.join(',');
    if (dims(x) === undefined || dims(x) !== dims(fx)) continue;
    const cone = coneBetween(index, fx, x);
    const weighty = [...cone].filter((n) => nodeReads(n).some((i) => isParameter(model, i)));
    if (weighty.length === 0) continue;
    const where = `${nodeLabel(node)} (${x} + f(x))`;
    const otherReaders = index.consumersOf(fx).filter((n) => n !== node);
    if (otherReaders.length > 0) {
      skipped.push({ where, reason: `its output ${fx} is also read by ${nodeLabel(otherReaders[0])}: removing the block would change more than the residual sum` });
      continue;
    }
    if (index.graphOutputs.has(fx)) {
      skipped.push({ where, reason: `its output ${fx} is also a graph output` });
      continue;
    }
    if (skipNorm) {
      const why = skipNormBlocker(model, index, node);
      if (why) {
        skipped.push({ where, reason: why });
        continue;
      }
    }
    const freed = freedBy(model, index, new Map([[node, fx]]));
    if (freed.params === 0) {
      skipped.push({ where, reason: `removing it frees no weights: ${freed.keptFor.length ? `the graph outputs ${freed.keptFor.join(', ')} still need them` : 'other nodes read them'}` });
      continue;
    }
    // Convolutions keep channels on axis 1 (NCHW); everything else on the last axis.
    const featureAxis = weighty.some((n) => ruleOf(n)?.channels) ? 1 : trace.get(x)!.dims.length - 1;
    blocks.push({ node, where, input: x, output: fx, params: freed.params, weights: weighty.filter((n) => freed.nodes.has(n)).map(nodeLabel), featureAxis, keptFor: freed.keptFor });
  }
  return { blocks, skipped };
}

/** Whether `from`'s producer (or `from` itself, a graph input) is upstream of `to`. */
function upstreamOf(index: GraphIndex, to: string, from: string, order: Map<Node, number>): boolean {
  const source = index.producerOf(from);
  const seen = new Set<string>();
  const stack = [to];
  while (stack.length) {
    const t = stack.pop()!;
    if (t === from) return true;
    if (seen.has(t)) continue;
    seen.add(t);
    const p = index.producerOf(t);
    if (!p) continue;
    if (p === source) return true;
    // Nodes before the source cannot lead to it (topological order).
    if (source && order.get(p)! < order.get(source)!) continue;
    for (const i of nodeReads(p)) if (i) stack.push(i);
  }
  return false;
}

/** The nodes on paths from x (or its producer) to f(x): the block's computation. */
function coneBetween(index: GraphIndex, fx: string, x: string): Set<Node> {
  const source = index.producerOf(x);
  const cone = new Set<Node>();
  const stack = [fx];
  const seen = new Set<string>();
  while (stack.length) {
    const t = stack.pop()!;
    if (t === x || seen.has(t)) continue;
    seen.add(t);
    const p = index.producerOf(t);
    if (!p || p === source) continue;
    cone.add(p);
    for (const i of nodeReads(p)) if (i) stack.push(i);
  }
  return cone;
}

/** A float constant of rank 2 or more: a weight (a scalar is an op's operand). */
function isParameter(model: OnnxModel, name: string): boolean {
  const info = name ? model.constantInfo(name) : undefined;
  return !!info && info.dims.length >= 2 && isFloatDType(info.dtype);
}

/** Why a fused skip normalization's block cannot go, or undefined. */
function skipNormBlocker(model: OnnxModel, index: GraphIndex, node: Node): string | undefined {
  const simplified = node.opType === 'SkipSimplifiedLayerNormalization';
  const bias = simplified ? node.input[3] : node.input[4];
  if (bias) return `its bias input ${bias} is added with the block's output: removing the block would drop it`;
  if (node.output.slice(1, 3).some((o) => o && (index.consumersOf(o).length > 0 || index.graphOutputs.has(o)))) {
    return 'its mean or inverse standard deviation output is read: the plain normalization left in its place does not give them';
  }
  if (!simplified && !((model.proto.opsetImport ?? []).some((o) => (o.domain ?? '') === '' && Number(o.version) >= 17))) {
    return 'the model imports ONNX opset 16 or lower: the LayerNormalization left in its place needs opset 17';
  }
  return undefined;
}

/**
 * What removing the blocks of these adding nodes drops: the nodes no graph output needs any
 * more, the parameters only they read, and the graph outputs that keep part of a block alive.
 */
function freedBy(model: OnnxModel, index: GraphIndex, cut: Map<Node, string>): { params: number; nodes: Set<Node>; keptFor: string[] } {
  const live = new Set<Node>();
  const needed = new Set<string>();
  const stack = [...index.graphOutputs];
  while (stack.length) {
    const t = stack.pop()!;
    if (needed.has(t)) continue;
    needed.add(t);
    const p = index.producerOf(t);
    if (!p) continue;
    live.add(p);
    const dropped = cut.get(p);
    for (const i of nodeReads(p)) {
      if (!i || (dropped && i === dropped)) continue;
      stack.push(i);
    }
  }
  const removed = new Set(index.nodes.filter((n) => !live.has(n) && !cut.has(n)));
  const liveReads = new Set<string>();
  for (const n of live) for (const i of nodeReads(n)) liveReads.add(i);
  let params = 0;
  const counted = new Set<string>();
  for (const n of removed) {
    for (const i of nodeReads(n)) {
      if (!i || counted.has(i) || liveReads.has(i) || index.graphOutputs.has(i)) continue;
      const info = model.constantInfo(i);
      if (!info || !isFloatDType(info.dtype)) continue;
      counted.add(i);
      // A single number is an op's operand (an epsilon, a scale), not a parameter (as cost.ts counts).
      const elements = info.dims.reduce((a, b) => a * b, 1);
      if (elements > 1) params += elements;
    }
  }
  // Graph outputs computed inside a block (a KV cache's present tensors) keep their part of it.
  const keptFor = new Set<string>();
  for (const [add, fx] of cut) {
    for (const n of coneBetween(index, fx, add.input.find((i) => i && i !== fx)!)) {
      for (const o of n.output) if (o && index.graphOutputs.has(o)) keptFor.add(o);
    }
  }
  return { params, nodes: removed, keptFor: [...keptFor] };
}

/**
 * A copy of the model without these blocks: each adding node replaced by what it computes from
 * x alone (an Add by an Identity of x; a skip normalization by the plain one of x, its residual
 * output an Identity of x), then every node and weight nothing reads any more dropped. Blocks
 * are found on `model` itself (their nodes are matched by position in its graph).
 */
export function removeBlocks(model: OnnxModel, blocks: ResidualBlock[]): OnnxModel {
  const positions = blocks.map((b) => model.graph.node.indexOf(b.node as onnx.NodeProto));
  if (positions.some((p) => p < 0)) throw new Error('removeBlocks: a block is not in this model');
  const copy = model.clone();
  const graph = copy.graph;
  const replaced = new Map<number, onnx.NodeProto[]>();
  const name = copy.uniqueNames();
  blocks.forEach((b, k) => replaced.set(positions[k], replacement(graph.node[positions[k]], b.input, name)));
  graph.node = graph.node.flatMap((n, i) => replaced.get(i) ?? [n as onnx.NodeProto]);
  copy.dropUnread();
  return copy;
}

function replacement(node: onnx.INodeProto, x: string, name: (base: string) => string): onnx.NodeProto[] {
  const inputs = node.input ?? [];
  const outputs = node.output ?? [];
  const identity = (output: string) => onnx.NodeProto.create({ opType: 'Identity', name: name(`${node.name || 'residual'}_without_block`), input: [x], output: [output] });
  if (node.opType === 'Add') return [identity(outputs[0])];
  const simplified = node.opType === 'SkipSimplifiedLayerNormalization';
  const epsilon = onnx.AttributeProto.create({ name: 'epsilon', type: onnx.AttributeProto.AttributeType.FLOAT, f: attrFloat(node, 'epsilon', 1e-5) });
  const norm = onnx.NodeProto.create({
    opType: simplified ? 'SimplifiedLayerNormalization' : 'LayerNormalization',
    domain: '',
    name: node.name ?? '',
    input: simplified ? [x, inputs[2]] : [x, inputs[2], ...(inputs[3] ? [inputs[3]] : [])],
    output: [outputs[0]],
    attribute: [epsilon, onnx.AttributeProto.create({ name: 'axis', type: onnx.AttributeProto.AttributeType.INT, i: -1 })],
  });
  return outputs[3] ? [norm, identity(outputs[3])] : [norm];
}
