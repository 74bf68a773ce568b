import { onnx } from 'onnx-proto';
import { Node, attr, attrFloat, attrInt, attrInts, attrString, nodeLabel, setAttrInt, setAttrInts } from './graph';
import { SmallValue, broadcastDims, resolveReshape } from './shape-eval';
import { OnnxModel } from '../onnx/model';
import { elementCount, intTensor, toNumbers } from '../onnx/tensor';
import type { Slot } from './atoms';

/**
 * What an op rule can see and declare. Axes may be negative (counted from the end).
 * `dims` come from a run of the model (so run-time shapes are known); `dims2` from a second run
 * with other batch and sequence sizes, which tells static axes from dynamic ones.
 */
export interface RuleContext {
  node: Node;
  opset: number;
  dims(name: string): number[] | undefined;
  dims2(name: string): number[] | undefined;
  /** Integer value of a constant (or traced small int tensor) input, if known. */
  ints(name: string): number[] | undefined;
  /** An initializer or Constant node output (so apply can rewrite it), not computed at run time. */
  isConstant(name: string): boolean;
  /** The nodes that read a tensor (for rules that must see how an axis is used downstream). */
  consumers(name: string): Node[];
  slot(name: string, axis: number): Slot | undefined;
  /** Atom i of one axis is atom i of the other. */
  same(a: string, axisA: number, b: string, axisB: number): void;
  /** Atom i of `part`'s axis is atom offset+i of `whole`'s axis. */
  offset(whole: string, axisW: number, part: string, axisP: number, offset: number): void;
  /**
   * Atom o*inner+k of `merged`'s axis belongs to atom o of `outer`'s axis; if `merged` is a
   * multiple of outer x inner, the leading factor is a selection (see atoms.ts).
   */
  outer(merged: string, axisM: number, outer: string, axisO: number, inner: number): void;
  /**
   * `count` heads laid out in blocks: in each part, atoms offset + h*size .. offset + (h+1)*size - 1
   * are head h (a fused attention op's packed Q, K and V columns, its output; size 1 for an
   * axis that holds one entry per head). Every part must be a static axis, or all are frozen.
   * `asHeads` false: the blocks are units but not attention heads (GroupNorm's groups).
   */
  heads(count: number, parts: HeadPart[], asHeads?: boolean): void;
  freeze(name: string, axis: number, reason: string): void;
  /**
   * A normalization computes its statistics over this axis: prunable with the norm's parameters
   * when the axis is a layer's own width, left alone when it is a residual stream.
   */
  normalizedOver(name: string, axis: number, reason: string): void;
  /** Marks an axis as handled without coupling it (e.g. Shape only reads it). */
  keep(name: string, axis: number): void;
}

/** One place heads are laid out in: see RuleContext.heads. */
export interface HeadPart {
  tensor: string;
  axis: number;
  /** Atoms per head. */
  size: number;
  /** Where head 0 starts (packed Q, K, V: 0, then Q's width, then Q's and K's). */
  offset?: number;
}

/**
 * How a weight op reads its input's channels through a constant weight (input 1): what scoring
 * (Var(X_j)·||W_j||²) and compensation need to know about the op.
 */
export interface WeightUse {
  /** The data input's (input 0's) axis holding the channels the weight contracts. */
  inputAxis: number;
  /** The weight's axis for those channels, and its axis for the output channels. */
  weightIn: number;
  weightOut: number;
  /** Output elements per input element and window tap, on average (a ConvTranspose's strides). */
  tapsPerOutput: number;
  /** The input that holds the bias (Gemm, Conv), or undefined when a following Add does (MatMul). */
  biasInput?: number;
  /** Factor for a change of the bias, so the op adds the change as is (Gemm: 1 / beta); default 1. */
  biasScale?: number;
}

/**
 * What an op's `resize` sees after pruning, in the pruned copy of the model: the sizes it must
 * write (group counts, split sizes, slice ranges, shape inputs) follow from these.
 */
export interface ResizeContext {
  node: Node;
  /** The pruned copy (its constants may be read and new ones added). */
  model: OnnxModel;
  opset: number;
  /** A tensor's dims after pruning, in traced run 0 or 1. */
  newDims(tensor: string, run: 0 | 1): number[] | undefined;
  /** Its dims before pruning (run 0). */
  oldDims(tensor: string): number[] | undefined;
  /** The indices removed from a static axis, and its size before; undefined for other axes. */
  removed(tensor: string, axis: number): { size: number; indices: ReadonlySet<number> } | undefined;
  /**
   * Makes the shape input `input` give the output's new shape (`result` turns its value into the
   * output's dims), rewriting the constants that hold old sizes; throws FixFailure if it cannot.
   */
  fixShapeInput(input: number, result: (value: SmallValue, run: 0 | 1) => number[]): void;
}

/** A tensor's dims in a traced run (or a constant's), undefined when unknown. */
export type ShapeOf = (name: string | undefined) => number[] | undefined;

/**
 * Per-op knowledge. `link` couples axes; every axis of the node it leaves alone is frozen (an op
 * without `link` is not understood by the engine: all it touches is frozen).
 * `resize`, for ops that write sizes of the axes they touch, rewrites them after pruning.
 * `weight`, for ops that read a constant weight, says how (undefined when this node's form is
 * not one the scorer and compensation handle, e.g. a grouped convolution).
 * `macs`, for ops whose multiply-accumulates are counted (src/graph/cost.ts): the node's MACs
 * over a traced run, from its shapes (undefined when one is unknown). Element-wise ops, norms
 * and softmax are cheap by comparison and not counted; neither are bias additions.
 */
export interface OpRule {
  link?(ctx: RuleContext): void;
  macs?(node: Node, shapeOf: ShapeOf): number | undefined;
  /**
   * The inputs the op adds together: when two computed ones carry the same channels, that
   * channel space is a residual stream (src/graph/analysis.ts).
   */
  sums?(node: Node): string[];
  resize?(ctx: ResizeContext): void;
  weight?(node: Node, inputRank: number, weightRank: number): WeightUse | undefined;
  /** Its weights hold convolution channels: the groups it reads are reported as `channels`. */
  channels?: boolean;
  /**
   * For a normalization over a width: what it normalizes, over which axis, whether it only
   * divides by the root mean square (RMSNorm) or also subtracts the mean, and the constants
   * holding its scale and bias; pruning refits those to the statistics of the channels that
   * remain (src/prune/renorm.ts).
   */
  statistics?(node: Node, graph: GraphView): NormStatistics | undefined;
}

/** What a rule's `statistics` may look at around its node. */
export interface GraphView {
  rank(tensor: string): number | undefined;
  consumers(tensor: string): Node[];
  producer(tensor: string): Node | undefined;
  /** The value of a constant holding one number. */
  scalar(tensor: string): number | undefined;
  isConstant(tensor: string): boolean;
}

export interface NormStatistics {
  input: string;
  axis: number;
  rms: boolean;
  epsilon: number;
  scale: string;
  bias?: string;
}

const inputs = (n: Node) => n.input;
const outputs = (n: Node) => n.output;
const rank = (ctx: RuleContext, name: string) => ctx.dims(name)?.length ?? -1;

/** Every axis of input 0 maps to the same axis of output 0. */
function linkAllAxes(ctx: RuleContext, from: string, to: string): void {
  const r = rank(ctx, from);
  if (r < 0 || r !== rank(ctx, to)) return;
  for (let a = 0; a < r; a++) ctx.same(from, a, to, a);
}

/** numpy broadcasting: each input axis equal to the output's (not 1) is the same axis. */
function linkBroadcast(ctx: RuleContext, ins: string[], out: string): void {
  const od = ctx.dims(out);
  if (!od) return;
  for (const name of ins) {
    const d = ctx.dims(name);
    if (!name || !d) continue;
    const shift = od.length - d.length;
    for (let a = 0; a < d.length; a++) if (d[a] === od[a + shift]) ctx.same(name, a, out, a + shift);
  }
}

const unary: OpRule = { link: (ctx) => linkAllAxes(ctx, inputs(ctx.node)[0], outputs(ctx.node)[0]) };
const broadcast: OpRule = { link: (ctx) => linkBroadcast(ctx, inputs(ctx.node), outputs(ctx.node)[0]) };
/** Add and Sum: broadcasting, and what they add may be a residual connection. */
const adds: OpRule = { ...broadcast, sums: inputs };

function normAxis(axis: number, r: number): number {
  return axis < 0 ? axis + r : axis;
}

/** Channel-wise affine normalization (BatchNorm, InstanceNorm): parameters follow axis 1. */
const perChannelNorm: OpRule = {
  link(ctx) {
    const [x, ...params] = inputs(ctx.node);
    const y = outputs(ctx.node)[0];
    linkAllAxes(ctx, x, y);
    for (const p of params) if (p && rank(ctx, p) === 1) ctx.same(p, 0, y, 1);
  },
};

function normalizesOver(reason: string, axesOf: (ctx: RuleContext, r: number) => number[] | undefined, hard = true): OpRule {
  return {
    link(ctx) {
      const n = ctx.node;
      const x = inputs(n)[0];
      const r = rank(ctx, x);
      if (r < 0) return;
      const axes = axesOf(ctx, r);
      if (!axes) return; // unknown axes: everything frozen by default
      linkAllAxes(ctx, x, outputs(n)[0]);
      for (const a of axes) {
        for (const t of [x, outputs(n)[0]]) {
          if (hard) ctx.freeze(t, a, reason);
          else ctx.normalizedOver(t, a, reason);
        }
      }
      // Scale and bias (LayerNorm) broadcast over the trailing axes: they share those atoms.
      for (const p of inputs(n).slice(1)) {
        const rp = rank(ctx, p);
        for (let a = 0; a < rp; a++) ctx.same(p, a, x, a + r - rp);
      }
      for (const o of outputs(n).slice(1)) for (let a = 0; a < rank(ctx, o); a++) ctx.keep(o, a);
    },
  };
}

/**
 * GroupNormalization: statistics per group of C / num_groups consecutive channels (and the
 * spatial axes), so a whole group can go with no other group's statistics changing: a group's
 * channels are one unit, num_groups is rewritten. Scale and bias are per channel (opset 21) or
 * per group (opset 18).
 */
const groupNorm: OpRule = {
  link(ctx) {
    const n = ctx.node;
    const [x, scale, bias] = inputs(n);
    const y = outputs(n)[0];
    const groups = attrInt(n, 'num_groups', 0);
    const [d, r] = [ctx.dims(x), rank(ctx, x)];
    if (!d || r < 2 || groups <= 0 || d[1] % groups !== 0) return;
    const size = d[1] / groups;
    ctx.same(x, 0, y, 0);
    for (let a = 2; a < r; a++) for (const t of [x, y]) ctx.freeze(t, a, `GroupNormalization ${nodeLabel(n)} normalizes over it`);
    const param = (p: string | undefined): HeadPart[] => (p ? [{ tensor: p, axis: 0, size: ctx.dims(p)?.[0] === d[1] ? size : 1 }] : []);
    ctx.heads(groups, [{ tensor: x, axis: 1, size }, { tensor: y, axis: 1, size }, ...param(scale), ...param(bias)], false);
  },
  resize({ node, newDims, oldDims }) {
    const [before, after] = [oldDims(node.input[0])?.[1], newDims(node.input[0], 0)?.[1]];
    const groups = attrInt(node, 'num_groups', 0);
    if (before && after && before !== after && groups > 0) setAttrInt(node, 'num_groups', after / (before / groups));
  },
};

/** LayerNormalization and its RMS twin: statistics over the axes from `axis` on. */
function layerNormRule(op: string, rms: boolean): OpRule {
  const rule = normalizesOver(
    `${op} normalizes over it (the residual stream)`,
    (ctx, r) => {
      const axis = normAxis(attrInt(ctx.node, 'axis', -1), r);
      return Array.from({ length: r - axis }, (_, i) => axis + i);
    },
    false,
  );
  return {
    ...rule,
    // Over the last axis only: statistics over several axes are not refit.
    statistics(node, graph) {
      const [x, scale, bias] = node.input;
      const r = graph.rank(x);
      if (r === undefined || normAxis(attrInt(node, 'axis', -1), r) !== r - 1 || !scale) return undefined;
      return { input: x, axis: r - 1, rms, epsilon: attrFloat(node, 'epsilon', 1e-5), scale, bias: rms ? undefined : bias || undefined };
    },
  };
}

function softmaxRule(op: string): OpRule {
  return normalizesOver(`${op} normalizes over it`, (ctx, r) => {
    const axis = normAxis(attrInt(ctx.node, 'axis', ctx.opset >= 13 ? -1 : 1), r);
    return ctx.opset >= 13 ? [axis] : Array.from({ length: r - axis }, (_, i) => axis + i);
  });
}

/** The only consumer of `tensor` with this op type, reading `tensor` as input `at`. */
function soleUser(graph: GraphView, tensor: string, op: string, at: number): Node | undefined {
  const users = graph.consumers(tensor);
  return users.length === 1 && users[0].opType === op && users[0].input[at] === tensor ? users[0] : undefined;
}

/** The other input of a two-input op, when it is a constant vector. */
function constantOperand(graph: GraphView, node: Node, tensor: string): string | undefined {
  const other = node.input.find((i) => i !== tensor);
  return other && graph.isConstant(other) && graph.rank(other) === 1 ? other : undefined;
}

/**
 * LayerNorm over the last axis as exporters write it out: m = ReduceMean(x), d = x - m,
 * z = d / Sqrt(ReduceMean(d²) + ε), then · γ and + β (constant vectors). Seen from its first
 * ReduceMean; any other form is not refit.
 */
function writtenOutLayerNorm(node: Node, graph: GraphView): NormStatistics | undefined {
  const x = node.input[0];
  const r = graph.rank(x);
  const axes = attrInts(node, 'axes');
  if (r === undefined || !axes || axes.length !== 1 || normAxis(axes[0], r) !== r - 1 || attrInt(node, 'keepdims', 1) !== 1) return undefined;
  const sub = soleUser(graph, node.output[0], 'Sub', 1);
  if (!sub || sub.input[0] !== x) return undefined;
  const d = sub.output[0];
  const div = graph.consumers(d).find((n) => n.opType === 'Div' && n.input[0] === d);
  const sqrt = div && graph.producer(div.input[1]);
  const add = sqrt?.opType === 'Sqrt' ? graph.producer(sqrt.input[0]) : undefined;
  const epsilon = add?.opType === 'Add' ? add.input.map((i) => graph.scalar(i)).find((v) => v !== undefined) : undefined;
  const z = div?.output[0];
  const users = z ? graph.consumers(z) : [];
  const mul = users.length === 1 && users[0].opType === 'Mul' ? users[0] : undefined;
  const scale = mul && constantOperand(graph, mul, z!);
  if (epsilon === undefined || !mul || !scale) return undefined;
  const biasAdd = graph.consumers(mul.output[0]);
  const bias = biasAdd.length === 1 && biasAdd[0].opType === 'Add' ? constantOperand(graph, biasAdd[0], mul.output[0]) : undefined;
  return { input: x, axis: r - 1, rms: false, epsilon, scale, bias };
}

/** Reduce ops: kept axes pass through; a reduced channel axis is a normalization or a sum. */
function reduceRule(op: string): OpRule {
  return {
    statistics: op === 'ReduceMean' ? writtenOutLayerNorm : undefined,
    link(ctx) {
      const n = ctx.node;
      const x = inputs(n)[0];
      const y = outputs(n)[0];
      const r = rank(ctx, x);
      if (r < 0) return;
      let axes = attrInts(n, 'axes') ?? (inputs(n)[1] ? ctx.ints(inputs(n)[1]) : undefined);
      if (inputs(n)[1] && !axes) return; // computed axes: leave frozen
      if (!axes || axes.length === 0) {
        if (attrInt(n, 'noop_with_empty_axes', 0)) return linkAllAxes(ctx, x, y);
        axes = Array.from({ length: r }, (_, i) => i);
      }
      const reduced = new Set(axes.map((a) => normAxis(a, r)));
      const keepdims = attrInt(n, 'keepdims', 1) === 1;
      let o = 0;
      for (let a = 0; a < r; a++) {
        if (reduced.has(a)) {
          // A mean over channels is how exporters write LayerNorm and RMSNorm out; other
          // reductions over channels are sums or maxima the model's output depends on whole.
          const reason = `${op} reduces over it (a normalization or sum over channels)`;
          if (op === 'ReduceMean') ctx.normalizedOver(x, a, reason);
          else ctx.freeze(x, a, reason);
          if (keepdims) o++;
        } else ctx.same(x, a, y, o++);
      }
    },
  };
}

/** Pooling keeps batch and channel; spatial axes are fixed by the window. */
const pool: OpRule = {
  link(ctx) {
    const x = inputs(ctx.node)[0];
    for (const y of outputs(ctx.node)) {
      if (!y) continue;
      ctx.same(x, 0, y, 0);
      ctx.same(x, 1, y, 1);
    }
  },
};

const transpose: OpRule = {
  link(ctx) {
    const x = inputs(ctx.node)[0];
    const y = outputs(ctx.node)[0];
    const r = rank(ctx, x);
    if (r < 0) return;
    const perm = attrInts(ctx.node, 'perm') ?? Array.from({ length: r }, (_, i) => r - 1 - i);
    perm.forEach((p, j) => ctx.same(x, p, y, j));
  },
};

/**
 * Groups the axes of a reshape into blocks whose sizes multiply to the same number on both
 * sides, e.g. [B, S, 768] -> [B, S, 12, 64] gives [0]-[0], [1]-[1], [2]-[2, 3].
 */
export function reshapeBlocks(a: number[], b: number[]): { from: number[]; to: number[] }[] | undefined {
  const blocks: { from: number[]; to: number[] }[] = [];
  let i = 0;
  let j = 0;
  while (i < a.length || j < b.length) {
    const from: number[] = [];
    const to: number[] = [];
    let pa = 1;
    let pb = 1;
    if (i < a.length) pa *= a[(from.push(i), i++)];
    if (j < b.length) pb *= b[(to.push(j), j++)];
    while (pa !== pb) {
      if (pa < pb && i < a.length) pa *= a[(from.push(i), i++)];
      else if (pb < pa && j < b.length) pb *= b[(to.push(j), j++)];
      else return undefined;
    }
    // Trailing size-1 axes join the block they follow, so blocks are the same in every run.
    while (i < a.length && a[i] === 1 && !(j < b.length && b[j] === 1)) from.push(i++);
    while (j < b.length && b[j] === 1 && !(i < a.length && a[i] === 1)) to.push(j++);
    blocks.push({ from, to });
  }
  return blocks;
}

/**
 * Whether every use of `tensor`'s `axis` picks single entries of it, through Transposes: Gather
 * of a constant scalar index (`qkv[0]`) or a Split into pieces of one (`qkv.unbind(0)`). Such an
 * axis selects among copies (q, k and v), it is not a channel.
 */
function isSelection(ctx: RuleContext, tensor: string, axis: number, depth = 0): boolean {
  const users = ctx.consumers(tensor);
  const r = rank(ctx, tensor);
  if (users.length === 0 || axis < 0 || depth > 8) return false;
  return users.every((u) => {
    if (u.opType === 'Transpose') {
      const perm = attrInts(u, 'perm') ?? Array.from({ length: r }, (_, i) => r - 1 - i);
      return isSelection(ctx, u.output[0], perm.indexOf(axis), depth + 1);
    }
    if (u.opType === 'Gather') {
      const index = u.input[1];
      return u.input[0] === tensor && normAxis(attrInt(u, 'axis', 0), r) === axis && rank(ctx, index) === 0 && ctx.ints(index)?.length === 1;
    }
    if (u.opType === 'Split') {
      return normAxis(attrInt(u, 'axis', 0), r) === axis && u.output.every((o) => ctx.dims(o)?.[axis] === 1);
    }
    return false;
  });
}

/**
 * Reshape, Flatten, Squeeze, Unsqueeze: a kept axis is the same axis; an axis split into
 * (outer, inner...) belongs to its outer part (heads), and the inner parts (head_dim) are fixed.
 * A split into (3, heads, head_dim) whose leading axis is only ever selected from (q, k, v of a
 * fused projection, as timm's ViT writes it) belongs to its heads axis instead.
 */
const reshape: OpRule = {
  link(ctx) {
    const x = inputs(ctx.node)[0];
    const y = outputs(ctx.node)[0];
    const [a, b, a2, b2] = [ctx.dims(x), ctx.dims(y), ctx.dims2(x), ctx.dims2(y)];
    if (!a || !b || !a2 || !b2) return;
    const blocks = reshapeBlocks(a, b);
    const blocks2 = reshapeBlocks(a2, b2);
    if (!blocks || JSON.stringify(blocks) !== JSON.stringify(blocks2)) return;
    for (const { from, to } of blocks) {
      const f = from.filter((k) => a[k] !== 1);
      const t = to.filter((k) => b[k] !== 1);
      if (f.length === 1 && t.length === 1) ctx.same(x, f[0], y, t[0]);
      else if (f.length === 1 && t.length > 2 && isSelection(ctx, y, t[0])) ctx.outer(x, f[0], y, t[1], a[f[0]] / (b[t[0]] * b[t[1]]));
      else if (f.length === 1 && t.length > 1) ctx.outer(x, f[0], y, t[0], a[f[0]] / b[t[0]]);
      else if (f.length > 1 && t.length === 1) ctx.outer(y, t[0], x, f[0], b[t[0]] / a[f[0]]);
      // [N, C, H, W] <-> [N, G, C/G·H·W] (GroupNorm written out): channel c is row c / (C/G).
      else if (f.length > 1 && t.length > 1 && a[f[0]] % b[t[0]] === 0) ctx.outer(x, f[0], y, t[0], a[f[0]] / b[t[0]]);
      else if (f.length > 1 && t.length > 1 && b[t[0]] % a[f[0]] === 0) ctx.outer(y, t[0], x, f[0], b[t[0]] / a[f[0]]);
    }
  },
};

/** Reshape proper: its shape input (often computed at run time) must give the new shape. */
const reshapeWithShape: OpRule = {
  link: reshape.link,
  resize: (ctx) =>
    ctx.fixShapeInput(1, (v, run) => resolveReshape(ctx.newDims(ctx.node.input[0], run)!, v.data, attrInt(ctx.node, 'allowzero', 0) === 1)),
};

/** [..., M, K] x [..., K, N] -> [..., M, N]: each output element is a K-long dot product. */
function matmulMacs(node: Node, shapeOf: ShapeOf): number | undefined {
  const a = shapeOf(node.input[0]);
  const out = shapeOf(node.output[0]);
  if (!a || !out || a.length === 0) return undefined;
  return elementCount(out) * a[a.length - 1];
}

/** MatMul with numpy semantics: A[..., M, K] x B[..., K, N] -> Y[..., M, N]. */
const matmul: OpRule = {
  macs: matmulMacs,
  weight: (_node, inputRank, weightRank) =>
    weightRank === 2 ? { inputAxis: inputRank - 1, weightIn: 0, weightOut: 1, tapsPerOutput: 1 } : undefined,
  link(ctx) {
    const [a, b] = inputs(ctx.node);
    const y = outputs(ctx.node)[0];
    const ra = rank(ctx, a);
    const rb = rank(ctx, b);
    const ry = rank(ctx, y);
    if (ra < 2 || rb < 2) return;
    ctx.same(a, ra - 2, y, ry - 2);
    ctx.same(b, rb - 1, y, ry - 1);
    ctx.same(a, ra - 1, b, rb - 2);
    const ya = ctx.dims(y)!;
    for (const [name, r] of [[a, ra], [b, rb]] as const) {
      const d = ctx.dims(name)!;
      for (let k = 0; k < r - 2; k++) if (d[k] === ya[k + ry - r]) ctx.same(name, k, y, k + ry - r);
    }
  },
};

const gemm: OpRule = {
  macs(node, shapeOf) {
    const a = shapeOf(node.input[0]);
    const out = shapeOf(node.output[0]);
    if (!a || !out || a.length !== 2) return undefined;
    return elementCount(out) * (attrInt(node, 'transA', 0) ? a[0] : a[1]);
  },
  weight(node) {
    if (attrInt(node, 'transA', 0)) return undefined;
    const transB = attrInt(node, 'transB', 0) === 1;
    const biasScale = 1 / attrFloat(node, 'beta', 1);
    return { inputAxis: 1, weightIn: transB ? 1 : 0, weightOut: transB ? 0 : 1, tapsPerOutput: 1, biasInput: 2, biasScale };
  },
  link(ctx) {
    const [a, b, c] = inputs(ctx.node);
    const y = outputs(ctx.node)[0];
    const ta = attrInt(ctx.node, 'transA', 0);
    const tb = attrInt(ctx.node, 'transB', 0);
    ctx.same(a, ta ? 1 : 0, y, 0);
    ctx.same(a, ta ? 0 : 1, b, tb ? 1 : 0);
    ctx.same(b, tb ? 0 : 1, y, 1);
    if (c) linkBroadcast(ctx, [c], y);
  },
};

/**
 * Conv: W[Cout, Cin/group, k...]; ConvTranspose: W[Cin, Cout/group, k...], the transposed
 * layout. Depthwise (group = Cin = Cout) passes channels through; other groupings are fixed.
 */
function convRule(transposed: boolean): OpRule {
  const [inAxis, outAxis] = transposed ? [0, 1] : [1, 0];
  return {
    // Conv: each output element reads Cin/group x k1 x k2 ... inputs. ConvTranspose: each input
    // element is scattered to Cout/group x k1 x k2 ... outputs.
    macs(node, shapeOf) {
      const w = shapeOf(node.input[1]);
      const counted = shapeOf(transposed ? node.input[0] : node.output[0]);
      if (!w || !counted || w.length < 2) return undefined;
      return elementCount(counted) * elementCount(w.slice(1));
    },
    weight(node) {
      if (attrInt(node, 'group', 1) !== 1) return undefined;
      // A transposed convolution scatters each input over a window, strides apart: an output
      // element receives window / ∏strides taps on average.
      const taps = transposed ? (attrInts(node, 'strides') ?? []).reduce((a, b) => a * b, 1) : 1;
      return { inputAxis: 1, weightIn: inAxis, weightOut: outAxis, tapsPerOutput: taps, biasInput: 2 };
    },
    channels: true,
    // Depthwise: group equals the channel count, which just shrank.
    resize(ctx) {
      const group = attrInt(ctx.node, 'group', 1);
      const cin = ctx.newDims(ctx.node.input[0], 0)?.[1];
      if (group !== 1 && cin !== undefined && cin !== group) setAttrInt(ctx.node, 'group', cin);
    },
    link(ctx) {
      const [x, w, bias] = inputs(ctx.node);
      const y = outputs(ctx.node)[0];
      const group = attrInt(ctx.node, 'group', 1);
      const cin = ctx.dims(x)?.[1];
      const cout = ctx.dims(y)?.[1];
      ctx.same(x, 0, y, 0);
      if (bias) ctx.same(bias, 0, y, 1);
      if (group === 1) {
        ctx.same(x, 1, w, inAxis);
        ctx.same(w, outAxis, y, 1);
      } else if (group === cin && group === cout) {
        ctx.same(x, 1, y, 1);
        ctx.same(w, 0, y, 1); // [C, 1, k...] either way
      } else {
        if (!transposed) ctx.same(w, 0, y, 1); // a transposed one holds Cout/group there
        ctx.freeze(y, 1, `grouped ${transposed ? 'transposed ' : ''}convolution ${ctx.node.name || ''} (group ${group})`.replace('  ', ' '));
      }
    },
  };
}

/**
 * An Einsum equation's axis labels per operand, with `...` expanded to labels counted from its
 * right end (so broadcast ellipsis axes line up) and the implicit output (`ij,jk` means `ij,jk->ik`:
 * the labels used once, in alphabetical order, after the ellipsis).
 */
export function einsumLabels(equation: string, ranks: number[]): { inputs: string[][]; output: string[] } | undefined {
  const eq = equation.replace(/\s+/g, '');
  const [lhs, rhs] = eq.split('->');
  const terms = lhs.split(',');
  if (terms.length !== ranks.length) return undefined;
  let ellipsis = 0;
  const expand = (term: string, rank: number): string[] | undefined => {
    const parts = term.split('...');
    if (parts.length > 2) return undefined;
    if (parts.length === 1) return term.length === rank ? [...term] : undefined;
    const n = rank - parts[0].length - parts[1].length;
    if (n < 0) return undefined;
    ellipsis = Math.max(ellipsis, n);
    return [...parts[0], ...Array.from({ length: n }, (_, i) => `.${n - i}`), ...parts[1]];
  };
  const inputs: string[][] = [];
  for (const [i, term] of terms.entries()) {
    const labels = expand(term, ranks[i]);
    if (!labels) return undefined;
    inputs.push(labels);
  }
  const dots = Array.from({ length: ellipsis }, (_, i) => `.${ellipsis - i}`);
  if (rhs === undefined) {
    const counts = new Map<string, number>();
    for (const l of inputs.flat()) if (!l.startsWith('.')) counts.set(l, (counts.get(l) ?? 0) + 1);
    return { inputs, output: [...dots, ...[...counts].filter(([, c]) => c === 1).map(([l]) => l).sort()] };
  }
  const parts = rhs.split('...');
  if (parts.length > 2) return undefined;
  return { inputs, output: parts.length === 1 ? [...rhs] : [...parts[0], ...dots, ...parts[1]] };
}

/**
 * Einsum: every axis carrying the same label is the same axis (where the sizes agree: an
 * ellipsis axis may broadcast). As a weight op (a constant 2-D weight, one label contracted with
 * the data, the other in the output, e.g. `bsd,df->bsf`) it reads channels like a MatMul.
 */
const einsum: OpRule = {
  // A contraction of two or more operands multiplies once per combination of its labels: the
  // product of every label's size (as a direct evaluation does; a 3-operand Einsum evaluated
  // pairwise can do fewer). One operand only permutes or sums: no multiply-accumulates.
  macs(node, shapeOf) {
    const shapes = node.input.map((i) => shapeOf(i));
    if (shapes.some((s) => !s)) return undefined;
    if (shapes.length < 2) return 0;
    const labels = einsumLabels(attrString(node, 'equation') ?? '', shapes.map((s) => s!.length));
    if (!labels) return undefined;
    const size = new Map<string, number>();
    labels.inputs.forEach((ls, t) => ls.forEach((l, axis) => size.set(l, Math.max(size.get(l) ?? 1, shapes[t]![axis]))));
    return [...size.values()].reduce((a, b) => a * b, 1);
  },
  link(ctx) {
    const names = [...inputs(ctx.node), outputs(ctx.node)[0]];
    const ranks = names.map((n) => rank(ctx, n));
    if (ranks.some((r) => r < 0)) return;
    const labels = einsumLabels(attrString(ctx.node, 'equation') ?? '', ranks.slice(0, -1));
    if (!labels || labels.output.length !== ranks[ranks.length - 1]) return;
    const first = new Map<string, [string, number]>();
    [...labels.inputs, labels.output].forEach((ls, t) =>
      ls.forEach((label, axis) => {
        const seen = first.get(label);
        if (!seen) first.set(label, [names[t], axis]);
        else if (ctx.dims(seen[0])![seen[1]] === ctx.dims(names[t])![axis]) ctx.same(seen[0], seen[1], names[t], axis);
      }),
    );
  },
  weight(node, inputRank, weightRank) {
    const labels = weightRank === 2 ? einsumLabels(attrString(node, 'equation') ?? '', [inputRank, 2]) : undefined;
    if (!labels || node.input.length !== 2) return undefined;
    const [x, w] = labels.inputs;
    const contracted = w.findIndex((l) => x.includes(l) && !labels.output.includes(l));
    const out = 1 - contracted;
    if (contracted < 0 || x.includes(w[out]) || !labels.output.includes(w[out]) || w[0] === w[1]) return undefined;
    return { inputAxis: x.indexOf(w[contracted]), weightIn: contracted, weightOut: out, tapsPerOutput: 1 };
  },
};

/**
 * com.microsoft FusedMatMul (what onnxruntime's optimizer makes of a MatMul with a Transpose or a
 * scale around it): alpha · op(A) · op(B), op a transpose of the last two axes when transA or
 * transB is set. Batched transposes (transBatchA/B) move axes further: left alone.
 */
const fusedMatmul: OpRule = {
  macs(node, shapeOf) {
    const a = shapeOf(node.input[0]);
    const out = shapeOf(node.output[0]);
    if (!a || !out || a.length < 2) return undefined;
    return elementCount(out) * a[a.length - (attrInt(node, 'transA', 0) ? 2 : 1)];
  },
  weight(node, inputRank, weightRank) {
    const plain = !attrInt(node, 'transA', 0) && !attrInt(node, 'transBatchA', 0) && !attrInt(node, 'transBatchB', 0) && attrFloat(node, 'alpha', 1) === 1;
    if (!plain || weightRank !== 2) return undefined;
    return attrInt(node, 'transB', 0)
      ? { inputAxis: inputRank - 1, weightIn: 1, weightOut: 0, tapsPerOutput: 1 }
      : { inputAxis: inputRank - 1, weightIn: 0, weightOut: 1, tapsPerOutput: 1 };
  },
  link(ctx) {
    if (attrInt(ctx.node, 'transBatchA', 0) || attrInt(ctx.node, 'transBatchB', 0)) return;
    const [a, b] = inputs(ctx.node);
    const y = outputs(ctx.node)[0];
    const [ra, rb, ry] = [rank(ctx, a), rank(ctx, b), rank(ctx, y)];
    if (ra < 2 || rb < 2) return;
    const [aM, aK] = attrInt(ctx.node, 'transA', 0) ? [ra - 1, ra - 2] : [ra - 2, ra - 1];
    const [bK, bN] = attrInt(ctx.node, 'transB', 0) ? [rb - 1, rb - 2] : [rb - 2, rb - 1];
    ctx.same(a, aM, y, ry - 2);
    ctx.same(b, bN, y, ry - 1);
    ctx.same(a, aK, b, bK);
    const ya = ctx.dims(y)!;
    for (const [name, r] of [[a, ra], [b, rb]] as const) {
      const d = ctx.dims(name)!;
      for (let k = 0; k < r - 2; k++) if (d[k] === ya[k + ry - r]) ctx.same(name, k, y, k + ry - r);
    }
  },
};

/** com.microsoft FusedConv: Conv with its activation, and an optional sum input Z added to the result. */
const conv = convRule(false);
const fusedConv: OpRule = {
  ...conv,
  link(ctx) {
    conv.link!(ctx);
    const z = inputs(ctx.node)[3];
    if (z) linkBroadcast(ctx, [z], outputs(ctx.node)[0]);
  },
};

/**
 * com.microsoft SkipLayerNormalization: LayerNorm over the last axis of input + skip (+ bias),
 * which is how onnxruntime's optimizer writes a residual Add followed by its LayerNorm.
 */
function skipNorm(op: string): OpRule {
  return {
    sums: (node) => node.input.slice(0, 2),
    link(ctx) {
      const n = ctx.node;
      const [x, skip, ...params] = inputs(n);
      const [y, , , sum] = outputs(n);
      const r = rank(ctx, x);
      if (r < 0) return;
      linkBroadcast(ctx, [x, skip], y);
      if (sum) linkAllAxes(ctx, y, sum);
      for (const p of params) if (p && rank(ctx, p) === 1) ctx.same(p, 0, y, r - 1);
      const reason = `${op} normalizes over it (the residual stream)`;
      for (const t of [x, skip, y, sum]) if (t) ctx.normalizedOver(t, rank(ctx, t) - 1, reason);
      for (const o of outputs(n).slice(1, 3)) for (let a = 0; o && a < rank(ctx, o); a++) ctx.keep(o, a);
    },
  };
}

/** An optional input or output of rank 4 or 5 holding one entry per head on `axis` (caches, biases). */
function perHead(ctx: RuleContext, tensor: string | undefined, axis: number, heads: number): HeadPart[] {
  const d = tensor ? ctx.dims(tensor) : undefined;
  return tensor && d && d.length > axis && d[axis] === heads ? [{ tensor, axis, size: 1 }] : [];
}

/** num_heads (and qkv_hidden_sizes) after heads went: the output is heads x head_size wide. */
function resizeHeads({ node, newDims, oldDims }: ResizeContext): void {
  const y = node.output[0];
  const [before, after] = [oldDims(y)?.[2], newDims(y, 0)?.[2]];
  const heads = attrInt(node, 'num_heads', 0);
  if (!before || !after || before === after || heads <= 0) return;
  const kept = after / (before / heads);
  setAttrInt(node, 'num_heads', kept);
  const sizes = attrInts(node, 'qkv_hidden_sizes');
  if (sizes) setAttrInts(node, 'qkv_hidden_sizes', sizes.map((s) => (s / heads) * kept));
}

/**
 * com.microsoft Attention, onnxruntime's fused self-attention: input [B, S, Hin] times one
 * packed weight [Hin, Q+K+V] (+ bias) gives Q, K and V, each num_heads heads wide; the output
 * [B, S, V] holds the heads' values side by side. A head is its columns of Q, K and V, its block
 * of the output, and its entry of a past/present cache [2, B, heads, S, size] or an attention
 * bias [B, heads, S, T].
 */
const attention: OpRule = {
  // The projection, then scores and weighted values over S keys (no past: T = S).
  macs(node, shapeOf) {
    const [x, w, y] = [shapeOf(node.input[0]), shapeOf(node.input[1]), shapeOf(node.output[0])];
    if (!x || !w || !y || x.length !== 3 || w.length !== 2) return undefined;
    const qk = (attrInts(node, 'qkv_hidden_sizes') ?? [w[1] / 3])[0];
    return x[0] * x[1] * w[0] * w[1] + x[0] * x[1] * x[1] * (qk + y[2]);
  },
  resize: resizeHeads,
  link(ctx) {
    const n = ctx.node;
    const [x, w, bias, , past, attentionBias] = inputs(n);
    const [y, present] = outputs(n);
    const heads = attrInt(n, 'num_heads', 0);
    const wd = ctx.dims(w);
    if (!wd || wd.length !== 2 || rank(ctx, x) !== 3 || rank(ctx, y) !== 3 || heads <= 0) return;
    const [q, k, v] = attrInts(n, 'qkv_hidden_sizes') ?? [wd[1] / 3, wd[1] / 3, wd[1] / 3];
    ctx.same(x, 2, w, 0);
    const packed = (tensor: string, axis: number): HeadPart[] => [
      { tensor, axis, size: q / heads },
      { tensor, axis, size: k / heads, offset: q },
      { tensor, axis, size: v / heads, offset: q + k },
    ];
    ctx.heads(heads, [
      ...packed(w, 1),
      ...(bias ? packed(bias, 0) : []),
      { tensor: y, axis: 2, size: v / heads },
      ...perHead(ctx, past, 2, heads),
      ...perHead(ctx, present, 2, heads),
      ...perHead(ctx, attentionBias, 1, heads),
    ]);
  },
};

/**
 * com.microsoft MultiHeadAttention: query [B, S, D], key [B, L, D] and value [B, L, Dv], each
 * num_heads heads wide (their projections are MatMuls before it; an optional bias [D+D+Dv]
 * is added inside); the output [B, S, Dv]. Packed forms (query [B, S, heads, 3, size], key
 * and value as [B, heads, L, size] caches) are left alone.
 */
const multiHeadAttention: OpRule = {
  macs(node, shapeOf) {
    const [q, k, v] = node.input.slice(0, 3).map((i) => (i ? shapeOf(i) : undefined));
    if (!q || !k || !v || q.length !== 3 || k.length !== 3 || v.length !== 3) return undefined;
    return q[0] * q[1] * k[1] * (q[2] + v[2]);
  },
  resize: resizeHeads,
  link(ctx) {
    const n = ctx.node;
    const [q, k, v, bias, , attentionBias, pastKey, pastValue] = inputs(n);
    const [y, presentKey, presentValue, qk] = outputs(n);
    const heads = attrInt(n, 'num_heads', 0);
    if (!k || !v || [q, k, v, y].some((t) => rank(ctx, t) !== 3) || heads <= 0) return;
    const [d, dv] = [ctx.dims(q)![2], ctx.dims(v)![2]];
    ctx.heads(heads, [
      { tensor: q, axis: 2, size: d / heads },
      { tensor: k, axis: 2, size: d / heads },
      { tensor: v, axis: 2, size: dv / heads },
      { tensor: y, axis: 2, size: dv / heads },
      ...(bias
        ? [
            { tensor: bias, axis: 0, size: d / heads },
            { tensor: bias, axis: 0, size: d / heads, offset: d },
            { tensor: bias, axis: 0, size: dv / heads, offset: 2 * d },
          ]
        : []),
      ...perHead(ctx, attentionBias, 1, heads),
      ...[pastKey, pastValue, presentKey, presentValue, qk].flatMap((t) => perHead(ctx, t, 1, heads)),
    ]);
  },
};

/**
 * com.microsoft RotaryEmbedding (onnxruntime-genai's rotary on q and k before a
 * MultiHeadAttention): input [B, S, num_heads x size] or [B, num_heads, S, size], the output the
 * same. It rotates column pairs within each head, so only whole heads may go; num_heads, when
 * set, counts them (0: the kernel takes size from the caches [L, size / 2], which do not change).
 */
const rotaryEmbedding: OpRule = {
  resize: resizeHeads,
  link(ctx) {
    const n = ctx.node;
    const [x, , cos] = inputs(n);
    const y = outputs(n)[0];
    const [xd, cd] = [ctx.dims(x), ctx.dims(cos)];
    if (!xd || rank(ctx, y) !== xd.length) return;
    linkAllAxes(ctx, x, y);
    if (xd.length === 4) {
      ctx.freeze(x, 3, `${nodeLabel(n)} (RotaryEmbedding) rotates within a head`);
      return;
    }
    const rotaryDim = attrInt(n, 'rotary_embedding_dim', 0);
    const heads = attrInt(n, 'num_heads', 0) || (rotaryDim === 0 && cd?.length === 2 ? xd[2] / (2 * cd[1]) : 0);
    if (xd.length !== 3 || !Number.isInteger(heads) || heads <= 0) {
      if (xd.length === 3) ctx.freeze(x, 2, `${nodeLabel(n)} (RotaryEmbedding): its head count is unknown`);
      return;
    }
    ctx.heads(heads, [
      { tensor: x, axis: 2, size: xd[2] / heads },
      { tensor: y, axis: 2, size: xd[2] / heads },
    ]);
  },
};

/**
 * com.microsoft GroupQueryAttention (onnxruntime-genai's attention): query [B, S, num_heads x
 * size] and key, value [B, S, kv_num_heads x size] (or query holding q|k|v packed, key and value
 * empty), caches [B, kv_num_heads, L, size]; query head h reads kv head h / (num_heads /
 * kv_num_heads) (docs/contracts.md, "What is prunable"). A unit is a KV group: its kv head's
 * columns of k and v and cache entry, its query heads' columns of q and of the output. The
 * rotary caches [L, size / 2] are per head size, which does not change.
 */
const groupQueryAttention: OpRule = {
  macs(node, shapeOf) {
    const [y, present] = [shapeOf(node.output[0]), shapeOf(node.output[1])];
    if (!y || !present || y.length !== 3 || present.length !== 4) return undefined;
    // Scores and weighted values: each query column against the T = past + S keys of the cache.
    return 2 * y[0] * y[1] * present[2] * y[2];
  },
  resize({ node, newDims, oldDims }) {
    const y = node.output[0];
    const [before, after] = [oldDims(y)?.[2], newDims(y, 0)?.[2]];
    const [heads, kvHeads] = [attrInt(node, 'num_heads', 0), attrInt(node, 'kv_num_heads', 0)];
    if (!before || !after || before === after || heads <= 0 || kvHeads <= 0) return;
    const kept = after / (before / kvHeads);
    setAttrInt(node, 'num_heads', (heads / kvHeads) * kept);
    setAttrInt(node, 'kv_num_heads', kept);
  },
  link(ctx) {
    const n = ctx.node;
    const [q, k, v, pastKey, pastValue] = inputs(n);
    const [y, presentKey, presentValue] = outputs(n);
    const [heads, kvHeads] = [attrInt(n, 'num_heads', 0), attrInt(n, 'kv_num_heads', 0)];
    const [qd, yd] = [ctx.dims(q), ctx.dims(y)];
    if (!qd || !yd || qd.length !== 3 || yd.length !== 3 || kvHeads <= 0 || heads % kvHeads !== 0 || yd[2] % heads !== 0) return;
    const size = yd[2] / heads;
    const group = (heads / kvHeads) * size;
    const packed = !k && !v;
    if (packed ? qd[2] !== (heads + 2 * kvHeads) * size : rank(ctx, k) !== 3 || rank(ctx, v) !== 3) return;
    ctx.heads(kvHeads, [
      { tensor: q, axis: 2, size: group },
      ...(packed
        ? [
            { tensor: q, axis: 2, size, offset: heads * size },
            { tensor: q, axis: 2, size, offset: (heads + kvHeads) * size },
          ]
        : [
            { tensor: k, axis: 2, size },
            { tensor: v, axis: 2, size },
          ]),
      { tensor: y, axis: 2, size: group },
      ...[pastKey, pastValue, presentKey, presentValue].flatMap((t) => perHead(ctx, t, 1, kvHeads)),
    ]);
  },
};

/** Split and Concat: the split axis is laid out piece after piece; other axes are shared. */
function piecewise(whole: string, parts: string[], axis: number, ctx: RuleContext): void {
  const r = rank(ctx, whole);
  const ax = normAxis(axis, r);
  let offset = 0;
  for (const p of parts) {
    if (!p) continue;
    const d = ctx.dims(p);
    if (!d) return;
    for (let a = 0; a < r; a++) {
      if (a === ax) ctx.offset(whole, a, p, a, offset);
      else ctx.same(whole, a, p, a);
    }
    offset += d[ax];
  }
}

const split: OpRule = {
  link: (ctx) => piecewise(inputs(ctx.node)[0], outputs(ctx.node), attrInt(ctx.node, 'axis', 0), ctx),
  // The sizes follow the new sizes of its outputs, in the form the opset takes them.
  resize({ node, model, opset, newDims }) {
    const axis = normAxis(attrInt(node, 'axis', 0), newDims(node.input[0], 0)!.length);
    const sizes = node.output.map((o) => newDims(o, 0)![axis]);
    if (attr(node, 'split')) setAttrInts(node, 'split', sizes);
    else if (node.input[1]) {
      const name = model.uniqueName(`${node.input[1]}_pruned`);
      model.addInitializer(name, intTensor(sizes));
      node.input[1] = name;
    } else if (opset >= 13) {
      const name = model.uniqueName(`${node.name || 'split'}_sizes`);
      model.addInitializer(name, intTensor(sizes));
      node.input.push(name);
      node.attribute = node.attribute.filter((a) => a.name !== 'num_outputs');
    } else setAttrInts(node, 'split', sizes);
  },
};
const concat: OpRule = {
  link: (ctx) => piecewise(outputs(ctx.node)[0], inputs(ctx.node), attrInt(ctx.node, 'axis', 0), ctx),
};

/** Where a Slice starts on an axis of `size`: negative counts from the end, clamped as ONNX does. */
function sliceStart(start: number, size: number): number {
  return Math.min(Math.max(start < 0 ? start + size : start, 0), size);
}

/**
 * Slice: axes it leaves whole (step 1, full range) pass through. A static axis cut to one range
 * with step 1 by constant starts and ends is a piece of the whole, as with Split (a fused
 * projection sliced into gate and up, or q, k and v): apply rewrites the range. Other cuts are
 * fixed.
 */
const slice: OpRule = {
  link(ctx) {
    const n = ctx.node;
    const [x, startsName, endsName, axesName, stepsName] = inputs(n);
    const y = outputs(n)[0];
    const [a, b, a2, b2] = [ctx.dims(x), ctx.dims(y), ctx.dims2(x), ctx.dims2(y)];
    if (!a || !b || !a2 || !b2 || a.length !== b.length) return;
    const axes = (axesName ? ctx.ints(axesName) : Array.from({ length: a.length }, (_, i) => i))?.map((ax) => normAxis(ax, a.length));
    const steps = stepsName ? ctx.ints(stepsName) : undefined;
    if (!axes || (stepsName && !steps)) return;
    const starts = startsName && ctx.isConstant(startsName) && endsName && ctx.isConstant(endsName) ? ctx.ints(startsName) : undefined;
    for (let k = 0; k < a.length; k++) {
      const i = axes.indexOf(k);
      const step = i < 0 ? 1 : (steps?.[i] ?? 1);
      if (step !== 1) continue;
      if (a[k] === b[k] && a2[k] === b2[k]) ctx.same(x, k, y, k);
      else if (starts && i >= 0 && a[k] === a2[k] && b[k] === b2[k]) {
        const start = sliceStart(starts[i], a[k]);
        if (start + b[k] <= a[k]) ctx.offset(x, k, y, k, start);
      }
    }
  },
  // A cut pruned axis: the range moves to the kept channels. Starts and ends are constants (link
  // couples nothing else); new ones are written, so constants other ops share stay as they were.
  resize({ node, model, newDims, oldDims, removed }) {
    const [x, startsName, endsName, axesName] = node.input;
    const y = node.output[0];
    const before = oldDims(y);
    const after = newDims(y, 0);
    const starts = model.constant(startsName);
    const ends = model.constant(endsName);
    if (!before || !after || !starts || !ends) return;
    const axes = axesName ? toNumbers(model.constant(axesName)!) : before.map((_, i) => i);
    // INT64_MAX ("to the end") does not survive a trip through a double: any bound past 2^53 is
    // as good as the end, and stays one.
    const bound = (v: number | bigint) => Math.max(-Number.MAX_SAFE_INTEGER, Math.min(Number.MAX_SAFE_INTEGER, Number(v)));
    const newStarts = Array.from(starts.data as ArrayLike<number | bigint>, bound);
    const newEnds = Array.from(ends.data as ArrayLike<number | bigint>, bound);
    let edited = false;
    for (const [i, ax] of axes.entries()) {
      const k = normAxis(ax, before.length);
      const cut = removed(x, k);
      if (!cut || (cut.indices.size === 0 && after[k] === before[k])) continue;
      const start = sliceStart(newStarts[i], cut.size);
      let removedBefore = 0;
      for (const g of cut.indices) if (g < start) removedBefore++;
      newStarts[i] = start - removedBefore;
      newEnds[i] = newStarts[i] + after[k];
      edited = true;
    }
    if (!edited) return;
    const startsNew = model.uniqueName(`${startsName}_pruned`);
    model.addInitializer(startsNew, intTensor(newStarts, starts.dtype, starts.dims));
    const endsNew = model.uniqueName(`${endsName}_pruned`);
    model.addInitializer(endsNew, intTensor(newEnds, ends.dtype, ends.dims));
    node.input[1] = startsNew;
    node.input[2] = endsNew;
  },
};

/**
 * Pad: an axis padded by nothing at either end passes through (the channels of an image padded
 * spatially, as ZeroPadding2D and TF's 'same' padding export it); a padded axis is fixed. The
 * pads come from the `pads` input (opset 11+, often computed: its traced value is used) or
 * attribute, over every axis or the `axes` input (opset 18+).
 */
const pad: OpRule = {
  link(ctx) {
    const n = ctx.node;
    const [x, padsName, , axesName] = inputs(n);
    const y = outputs(n)[0];
    const r = rank(ctx, x);
    if (r < 0) return;
    const pads = ctx.opset >= 11 ? (padsName ? ctx.ints(padsName) : undefined) : attrInts(n, 'pads');
    const axes = axesName ? ctx.ints(axesName)?.map((a) => normAxis(a, r)) : Array.from({ length: r }, (_, i) => i);
    if (!pads || !axes || pads.length !== 2 * axes.length) return; // unknown pads: leave frozen
    const padded = new Set(axes.filter((_, i) => pads[i] !== 0 || pads[i + axes.length] !== 0));
    for (let k = 0; k < r; k++) {
      if (!padded.has(k)) ctx.same(x, k, y, k);
      else for (const t of [x, y]) ctx.freeze(t, k, `padded by Pad ${n.name ?? ''} (its width is part of the pads)`.replace('  ', ' '));
    }
  },
};

/** Gather: the gathered axis is indexed by data (vocabulary rows); the others pass through. */
const gather: OpRule = {
  link(ctx) {
    const [data, indices] = inputs(ctx.node);
    const y = outputs(ctx.node)[0];
    const r = rank(ctx, data);
    const ri = rank(ctx, indices);
    if (r < 0 || ri < 0) return;
    const axis = normAxis(attrInt(ctx.node, 'axis', 0), r);
    for (let k = 0; k < r; k++) {
      if (k < axis) ctx.same(data, k, y, k);
      else if (k > axis) ctx.same(data, k, y, k - 1 + ri);
    }
    ctx.freeze(data, axis, `rows picked by Gather ${ctx.node.name ?? ''} (e.g. a vocabulary)`.trim());
  },
};

/** Expand: input axes that are not broadcast pass through (repeat_kv of grouped-query attention). */
const expand: OpRule = {
  link: (ctx) => linkBroadcast(ctx, [inputs(ctx.node)[0]], outputs(ctx.node)[0]),
  resize: (ctx) => ctx.fixShapeInput(1, (v, run) => broadcastDims(ctx.newDims(ctx.node.input[0], run)!, v.data)),
};

/** Shape and Size read the dims of their input; the shape rewriter keeps their users right. */
const readsShape: OpRule = {
  link(ctx) {
    const x = inputs(ctx.node)[0];
    for (let a = 0; a < rank(ctx, x); a++) ctx.keep(x, a);
  },
};

/**
 * Resize/Upsample: an axis the op leaves its size (in both traced runs: a scale of 1, or the
 * same size asked) passes through, whatever the layout; the others are fixed by the scale. A
 * constant `sizes` input holds the channel count too: it is rewritten when channels go.
 */
const resize: OpRule = {
  link(ctx) {
    const x = inputs(ctx.node)[0];
    const y = outputs(ctx.node)[0];
    const [a, b, a2, b2] = [ctx.dims(x), ctx.dims(y), ctx.dims2(x), ctx.dims2(y)];
    if (!a || !b || !a2 || !b2 || a.length !== b.length) return;
    for (let k = 0; k < a.length; k++) if (a[k] === b[k] && a2[k] === b2[k]) ctx.same(x, k, y, k);
  },
  resize({ node, model, newDims, fixShapeInput }) {
    const sizes = node.opType === 'Resize' ? node.input[3] : undefined;
    if (!sizes) return;
    const [d0, d1] = [newDims(node.output[0], 0), newDims(node.output[0], 1)];
    // Constant sizes (a static shape): written anew, as a new constant in case others share it.
    if (model.isConstant(sizes) && d0 && JSON.stringify(d0) === JSON.stringify(d1)) {
      const name = model.uniqueName(`${sizes}_pruned`);
      model.addInitializer(name, intTensor(d0));
      node.input[3] = name;
    } else fixShapeInput(3, (v) => v.data);
  },
};

/** A Constant node is a weight like an initializer: its users decide how it is coupled. */
const constant: OpRule = {
  link(ctx) {
    const y = outputs(ctx.node)[0];
    for (let a = 0; a < rank(ctx, y); a++) ctx.keep(y, a);
  },
};

/**
 * The registry: op type -> rule, default-domain ops by name and others as `domain::Op`. An op not
 * listed here, or listed without `link`, freezes what it touches.
 */
export const OP_RULES: Record<string, OpRule> = {
  // element-wise, one input
  Relu: unary, LeakyRelu: unary, PRelu: broadcast, Elu: unary, Selu: unary, Celu: unary, Gelu: unary,
  Sigmoid: unary, HardSigmoid: unary, HardSwish: unary, Tanh: unary, Erf: unary, Softplus: unary,
  Softsign: unary, Mish: unary, ThresholdedRelu: unary, Exp: unary, Log: unary, Sqrt: unary,
  Reciprocal: unary, Neg: unary, Abs: unary, Sign: unary, Floor: unary, Ceil: unary, Round: unary,
  Sin: unary, Cos: unary, Cast: unary, CastLike: broadcast, Identity: unary, Dropout: unary,
  Not: unary, IsNaN: unary, IsInf: unary,
  // element-wise with broadcasting (bias Add, SwiGLU Mul, squeeze-excite gate, residual Add)
  Add: adds, Sub: broadcast, Mul: broadcast, Div: broadcast, Pow: broadcast, Max: broadcast,
  Min: broadcast, Sum: adds, Mean: broadcast, Mod: broadcast, Where: broadcast, Clip: broadcast,
  Equal: broadcast, Less: broadcast, Greater: broadcast, LessOrEqual: broadcast, GreaterOrEqual: broadcast,
  And: broadcast, Or: broadcast, Xor: broadcast,
  // normalizations
  BatchNormalization: perChannelNorm, InstanceNormalization: perChannelNorm, GroupNormalization: groupNorm,
  LayerNormalization: layerNormRule('LayerNormalization', false),
  Softmax: softmaxRule('Softmax'), LogSoftmax: softmaxRule('LogSoftmax'), Hardmax: softmaxRule('Hardmax'),
  ReduceMean: reduceRule('ReduceMean'), ReduceSum: reduceRule('ReduceSum'), ReduceMax: reduceRule('ReduceMax'),
  ReduceMin: reduceRule('ReduceMin'), ReduceProd: reduceRule('ReduceProd'), ReduceL1: reduceRule('ReduceL1'),
  ReduceL2: reduceRule('ReduceL2'), ReduceSumSquare: reduceRule('ReduceSumSquare'),
  ReduceLogSum: reduceRule('ReduceLogSum'), ReduceLogSumExp: reduceRule('ReduceLogSumExp'),
  // weights
  MatMul: matmul, Gemm: gemm, Conv: conv, ConvTranspose: convRule(true), Einsum: einsum,
  // layout
  Transpose: transpose, Reshape: reshapeWithShape, Flatten: reshape, Squeeze: reshape, Unsqueeze: reshape,
  Split: split, Concat: concat, Slice: slice, Pad: pad, Gather: gather, Expand: expand,
  GlobalAveragePool: pool, GlobalMaxPool: pool, GlobalLpPool: pool, AveragePool: pool, MaxPool: pool,
  LpPool: pool, Resize: resize, Upsample: resize,
  Shape: readsShape, Size: readsShape,
  Constant: constant,
  // what onnxruntime's graph optimizer writes (a model saved after it): default-domain contrib
  // ops and com.microsoft fusions
  SimplifiedLayerNormalization: layerNormRule('SimplifiedLayerNormalization', true),
  'com.microsoft::FusedMatMul': fusedMatmul,
  'com.microsoft::FusedGemm': gemm,
  'com.microsoft::FusedConv': fusedConv,
  'com.microsoft::Gelu': unary,
  'com.microsoft::QuickGelu': unary,
  'com.microsoft::FastGelu': broadcast,
  'com.microsoft::BiasGelu': broadcast,
  'com.microsoft::SkipLayerNormalization': skipNorm('SkipLayerNormalization'),
  'com.microsoft::SkipSimplifiedLayerNormalization': skipNorm('SkipSimplifiedLayerNormalization'),
  'com.microsoft::Attention': attention,
  'com.microsoft::MultiHeadAttention': multiHeadAttention,
  'com.microsoft::GroupQueryAttention': groupQueryAttention,
  'com.microsoft::RotaryEmbedding': rotaryEmbedding,
  // counted, not understood by the engine (quantized models)
  MatMulInteger: { macs: matmulMacs },
  'com.microsoft::MatMulNBits': {
    // A [..., K] times the dequantized [K, N] weight; K is an attribute.
    macs(node, shapeOf) {
      const out = shapeOf(node.output[0]);
      const k = attrInt(node, 'K', 0);
      return out && k > 0 ? elementCount(out) * k : undefined;
    },
  },
};

/** The registry's rule for a node (a com.microsoft op is another op than the default domain's of the same name). */
export function ruleOf(node: onnx.INodeProto): OpRule | undefined {
  const domain = node.domain ?? '';
  const key = domain === '' || domain === 'ai.onnx' ? (node.opType ?? '') : `${domain}::${node.opType}`;
  return Object.prototype.hasOwnProperty.call(OP_RULES, key) ? OP_RULES[key] : undefined;
}
