import { onnx } from 'onnx-proto';
import { Analysis } from '../graph/analysis';
import { GraphIndex, Node, nodeLabel } from '../graph/graph';
import { ruleOf } from '../graph/rules';
import { SmallValue, ShapeEvaluator, Unevaluable, shapeSubgraph } from '../graph/shape-eval';
import { OnnxModel } from '../onnx/model';
import { DataType } from '../onnx/dtype';
import { intTensor, fromFloat32, toNumbers } from '../onnx/tensor';
import { Removal } from './plan';

/** A shape or attribute the pruner could not keep consistent; the groups involved are frozen. */
export class FixFailure extends Error {
  constructor(
    message: string,
    readonly tensors: string[],
  ) {
    super(message);
  }
}

export interface Applied {
  model: OnnxModel;
  /** Removed index count per slot id. */
  removed: Map<number, number>;
  /** The entries sliced out of each constant: tensor, axis and indices (in the input model). */
  sliced: SlicedEntries[];
}

export interface SlicedEntries {
  tensor: string;
  axis: number;
  indices: number[];
}

/**
 * Removes the chosen units from a copy of the model: slices every weight, bias and constant of
 * their slots, then lets each op whose axes changed rewrite the sizes it holds (its registry
 * entry's `resize`: depthwise group counts, Split sizes, Slice ranges, and the shape inputs of
 * Reshape and Expand, computed at run time or constant, through ShapeFixer).
 */
export function applyRemoval(analysis: Analysis, removals: Removal[], prepare?: (copy: OnnxModel) => void): Applied {
  const { space } = analysis;
  const model = analysis.model.clone();
  prepare?.(model); // compensation edits the kept weights and biases before slicing
  const removedIdx = new Map<number, Set<number>>();
  for (const { units } of removals) {
    for (const u of units) {
      for (const [slotId, indices] of u.indices) {
        let set = removedIdx.get(slotId);
        if (!set) removedIdx.set(slotId, (set = new Set()));
        for (const i of indices) set.add(i);
      }
    }
  }
  const removed = new Map([...removedIdx].map(([k, v]) => [k, v.size]));

  // 1. Slice constants, one tensor at a time (all of its pruned axes at once).
  const byTensor = new Map<string, number[]>();
  for (const slotId of removedIdx.keys()) {
    const s = space.slots[slotId];
    if (!s.constant) continue;
    byTensor.set(s.tensor, [...(byTensor.get(s.tensor) ?? []), slotId]);
  }
  for (const [tensor, slotIds] of byTensor) {
    const keep = new Map<number, number[]>();
    for (const slotId of slotIds) {
      const s = space.slots[slotId];
      const gone = removedIdx.get(slotId)!;
      const kept: number[] = [];
      for (let i = 0; i < s.size; i++) if (!gone.has(i)) kept.push(i);
      keep.set(s.axis, kept);
    }
    model.sliceConstant(tensor, keep);
  }
  sliceCreatedBiases(analysis, model, removedIdx);

  // 2. Fix sizes written in attributes and shape inputs.
  const index = new GraphIndex(model);
  const newDims = (tensor: string, which: 0 | 1): number[] | undefined => {
    const base = analysis.traces[which].get(tensor)?.dims ?? analysis.model.constantInfo(tensor)?.dims;
    if (!base) return undefined;
    const dims = [...base];
    for (const s of space.slotsOf(tensor)) dims[s.axis] -= removed.get(s.id) ?? 0;
    return dims;
  };
  const changed = (tensor: string) => space.slotsOf(tensor).some((s) => (removed.get(s.id) ?? 0) > 0);
  // old size -> new size of the axes that shrank, for the tensors around one node.
  const sizeChanges = (tensors: string[]): [number, number][] => {
    const pairs = new Map<string, [number, number]>();
    for (const t of tensors) {
      for (const s of space.slotsOf(t)) {
        const count = removed.get(s.id) ?? 0;
        if (count > 0) pairs.set(`${s.size}>${s.size - count}`, [s.size, s.size - count]);
      }
    }
    return [...pairs.values()];
  };
  const fixer = new ShapeFixer(model, index, newDims, sizeChanges);
  const opset = analysis.model.defaultOpset ?? 13;
  for (const node of index.nodes) {
    const touches = [...node.input, ...node.output].some((n) => n && changed(n));
    const resize = touches ? ruleOf(node)?.resize : undefined;
    if (!resize) continue;
    resize({
      node,
      model,
      opset,
      newDims,
      oldDims: (tensor) => analysis.traces[0].get(tensor)?.dims,
      removed: (tensor, axis) => {
        const slot = space.slotsOf(tensor).find((s) => s.axis === axis);
        return slot ? { size: slot.size, indices: removedIdx.get(slot.id) ?? new Set() } : undefined;
      },
      fixShapeInput: (input, result) => fixer.fix(node, input, result),
    });
  }
  const shrunk = (tensor: string) => space.slotsOf(tensor).flatMap((s) => ((removed.get(s.id) ?? 0) > 0 ? [{ axis: s.axis, size: s.size - (removed.get(s.id) ?? 0) }] : []));
  tidy(model, changed, shrunk);
  const sliced = [...removedIdx]
    .filter(([slotId]) => space.slots[slotId].constant)
    .map(([slotId, indices]) => ({ tensor: space.slots[slotId].tensor, axis: space.slots[slotId].axis, indices: [...indices].sort((a, b) => a - b) }));
  return { model, removed, sliced };
}

/**
 * A bias that compensation created for a layer that had none (Conv before a BatchNorm, a MatMul
 * without its Add) is not among the analysed constants; when the layer's own output channels
 * lose units too, it loses the same entries as the weight's output axis.
 */
function sliceCreatedBiases(analysis: Analysis, model: OnnxModel, removedIdx: Map<number, Set<number>>): void {
  const { space } = analysis;
  for (const node of model.graph.node as Node[]) {
    const w = node.input[1];
    const inputRank = analysis.traces[0].get(node.input[0])?.dims.length;
    const weightRank = w ? analysis.model.constantInfo(w)?.dims.length : undefined;
    if (inputRank === undefined || weightRank === undefined) continue;
    const use = ruleOf(node)?.weight?.(node, inputRank, weightRank);
    const outSlot = use && space.slot(w, use.weightOut);
    const gone = outSlot && removedIdx.get(outSlot.id);
    if (!use || !outSlot || !gone?.size) continue;
    // The bias input, or the constant of the Add compensation put after a MatMul.
    const bias =
      use.biasInput !== undefined ? node.input[use.biasInput] : model.graph.node.find((n) => n.opType === 'Add' && n.input?.[0] === node.output[0])?.input?.[1];
    if (!bias || analysis.model.isConstant(bias) || !model.isConstant(bias)) continue;
    if (model.constantInfo(bias)?.dims[0] !== outSlot.size) continue;
    const kept: number[] = [];
    for (let i = 0; i < outSlot.size; i++) if (!gone.has(i)) kept.push(i);
    model.sliceConstant(bias, new Map([[0, kept]]));
  }
}

/**
 * What the checker and runtimes read besides the nodes must agree with the new sizes: recorded
 * shapes (value_info) of the tensors that shrank are dropped (they are optional, and a stale
 * one fails onnx.checker's full check); an initializer also listed as a graph input (older
 * exports) gets its new shape there, and so do a KV cache's inputs and outputs; constants the rewrites replaced, and nodes whose outputs
 * nothing reads any more, are removed (runtimes warn about each unused initializer).
 */
function tidy(model: OnnxModel, changed: (tensor: string) => boolean, shrunk: (tensor: string) => { axis: number; size: number }[]): void {
  const graph = model.graph;
  graph.valueInfo = (graph.valueInfo ?? []).filter((v) => !changed(v.name ?? ''));
  // A KV cache's inputs and outputs that lost heads declare their new fixed sizes.
  for (const v of [...graph.input, ...graph.output]) {
    const dims = v.type?.tensorType?.shape?.dim;
    if (!dims || model.isConstant(v.name ?? '')) continue;
    for (const { axis, size } of shrunk(v.name ?? '')) {
      if (dims[axis] && !dims[axis].dimParam) dims[axis] = onnx.TensorShapeProto.Dimension.create({ dimValue: size });
    }
  }
  for (const v of graph.input) {
    const info = model.constantInfo(v.name ?? '');
    const dims = v.type?.tensorType?.shape?.dim;
    if (!info || !dims || !changed(v.name ?? '')) continue;
    info.dims.forEach((d, i) => {
      if (dims[i]) dims[i] = onnx.TensorShapeProto.Dimension.create({ dimValue: d });
    });
  }
  const interfaceNames = new Set(graph.input.map((v) => v.name ?? ''));
  model.dropUnread((name) => !interfaceNames.has(name));
}

/**
 * Keeps a shape input right after pruning: evaluates it with the new sizes (in both traced
 * runs); if it no longer gives the output's new shape, finds the constant(s) in its arithmetic
 * whose value is an old size (a head count, a width) and rewrites them to the new size,
 * checking the result, and copies a constant first when other ops share it.
 */
class ShapeFixer {
  constructor(
    private readonly model: OnnxModel,
    private readonly index: GraphIndex,
    private readonly newDims: (t: string, k: 0 | 1) => number[] | undefined,
    /** old size -> new size of the axes of these tensors that shrank. */
    private readonly sizeChanges: (tensors: string[]) => [number, number][],
  ) {}

  fix(node: Node, input: number, result: (shapeValue: SmallValue, which: 0 | 1) => number[]): void {
    const shapeName = node.input[input];
    const out = node.output[0];
    const expected = [this.newDims(out, 0), this.newDims(out, 1)];
    const check = (overrides: Map<string, SmallValue>) =>
      ([0, 1] as const).every((k) => {
        try {
          const ev = new ShapeEvaluator(this.model, this.index, (t) => this.newDims(t, k), overrides);
          return JSON.stringify(result(ev.eval(shapeName), k)) === JSON.stringify(expected[k]);
        } catch (e) {
          if (e instanceof Unevaluable) return false;
          throw e;
        }
      });
    if (check(new Map())) return;
    const { nodes, leaves } = shapeSubgraph(this.index, shapeName);
    const leafValues = new Map<string, SmallValue>();
    for (const leaf of leaves) {
      const t = this.model.constant(leaf);
      if (t && t.dtype !== DataType.FLOAT && t.data.length <= 64) {
        leafValues.set(leaf, { dims: t.dims, data: toNumbers(t), float: false });
      }
    }
    const candidates: Map<string, SmallValue>[] = [];
    for (const [from, to] of this.sizeChanges([node.input[0], out])) {
      // Every occurrence of the old size at once (e.g. a head count used for the heads entry
      // and for head_dim = width / heads), then each occurrence alone.
      const all = new Map<string, SmallValue>();
      for (const [leaf, v] of leafValues) {
        if (v.data.includes(from)) all.set(leaf, { ...v, data: v.data.map((x) => (x === from ? to : x)) });
      }
      if (all.size) candidates.push(all);
      for (const [leaf, v] of leafValues) {
        v.data.forEach((x, i) => {
          if (x !== from) return;
          const data = [...v.data];
          data[i] = to;
          candidates.push(new Map([[leaf, { ...v, data }]]));
        });
      }
    }
    const good = candidates.find(check);
    if (good) {
      // The node itself reads the leaf when its shape input is a constant (Reshape to [0, G, -1]).
      for (const [leaf, v] of good) this.writeLeaf(leaf, v, new Set([...nodes, node]));
      return;
    }
    if (!this.pinStaticEntries(node, input, result, expected)) {
      throw new FixFailure(`cannot rewrite the shape input of ${node.opType} ${nodeLabel(node)}`, [node.input[0], out]);
    }
  }

  /**
   * The fallback when no constant holds the old size: the size is read at run time from a tensor
   * that was not pruned (timm writes `reshape(B, N, C)` with C = x.shape[-1], the residual
   * width, for the attention output whose width shrank). The entries of the shape for static
   * axes that changed are overwritten with their new sizes: shape * mask + sizes.
   */
  private pinStaticEntries(
    node: Node,
    input: number,
    result: (shapeValue: SmallValue, which: 0 | 1) => number[],
    expected: (number[] | undefined)[],
  ): boolean {
    const shapeName = node.input[input];
    const values: SmallValue[] = [];
    for (const k of [0, 1] as const) {
      try {
        values.push(new ShapeEvaluator(this.model, this.index, (t) => this.newDims(t, k), new Map()).eval(shapeName));
      } catch (e) {
        if (e instanceof Unevaluable) return false;
        throw e;
      }
    }
    const [e0, e1] = expected;
    if (!e0 || !e1 || values.some((v) => v.float || v.data.length !== e0.length)) return false;
    const pinned = new Set<number>();
    for (const k of [0, 1] as const) {
      result(values[k], k).forEach((size, p) => size !== expected[k]![p] && pinned.add(p));
    }
    // Only static axes (the same size in both runs) can take a constant.
    if (pinned.size === 0 || [...pinned].some((p) => e0[p] !== e1[p])) return false;
    const fits = ([0, 1] as const).every((k) => {
      const data = values[k].data.map((v, p) => (pinned.has(p) ? expected[k]![p] : v));
      return JSON.stringify(result({ ...values[k], data }, k)) === JSON.stringify(expected[k]);
    });
    if (!fits) return false;
    const label = node.name || node.output[0];
    const mask = this.model.uniqueName(`${label}_shape_mask`);
    this.model.addInitializer(mask, intTensor(e0.map((_, p) => (pinned.has(p) ? 0 : 1))));
    const sizes = this.model.uniqueName(`${label}_shape_sizes`);
    this.model.addInitializer(sizes, intTensor(e0.map((size, p) => (pinned.has(p) ? size : 0))));
    const masked = this.model.uniqueName(`${shapeName}_masked`);
    const shape = this.model.uniqueName(`${shapeName}_pinned`);
    const graph = this.model.graph;
    graph.node.splice(
      graph.node.indexOf(node as onnx.NodeProto),
      0,
      onnx.NodeProto.create({ opType: 'Mul', name: `${label}_shape_mask`, input: [shapeName, mask], output: [masked] }),
      onnx.NodeProto.create({ opType: 'Add', name: `${label}_shape_pin`, input: [masked, sizes], output: [shape] }),
    );
    node.input[input] = shape;
    return true;
  }

  /** Writes a rewritten constant, copying it first if ops outside this shape computation use it. */
  private writeLeaf(leaf: string, value: SmallValue, within: Set<Node>): void {
    const original = this.model.constant(leaf)!;
    const tensor = fromFloat32(value.data, original.dtype, value.dims);
    const users = this.index.consumersOf(leaf);
    if (users.every((n) => within.has(n))) {
      this.model.setConstant(leaf, tensor);
      return;
    }
    const name = this.model.uniqueName(`${leaf}_pruned`);
    this.model.addInitializer(name, tensor);
    for (const n of users) if (within.has(n)) n.input = n.input.map((i) => (i === leaf ? name : i));
  }
}
