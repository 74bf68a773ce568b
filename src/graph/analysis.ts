import { AtomSpace, Slot } from './atoms';
import { GraphIndex, Node, nodeLabel } from './graph';
import { nodeReads } from '../onnx/reads';
import { RuleContext, ruleOf } from './rules';
import { QUANTIZED_NOT_PRUNABLE, quantizedOpReason, quantizedWeightOf } from './quantized';
import { Trace, traceModelAt } from './trace';
import { cacheSizes } from './cache-sizes';
import { OnnxModel } from '../onnx/model';
import { RuntimeFailure, dummyFeeds, ort } from '../onnx/runtime';
import { isFloatDType } from '../onnx/dtype';
import { toNumbers } from '../onnx/tensor';
import { UserError, isUserError } from '../errors';

/** What can be made narrower: FFN/hidden neurons, attention heads (or KV groups), conv channels. */
export const WIDTH_STRUCTURES = ['ffn', 'heads', 'channels'] as const;
export type WidthStructure = (typeof WIDTH_STRUCTURES)[number];
/** What can be removed: the widths, and whole residual blocks (`blocks`, graph/blocks.ts; off by default). */
export const STRUCTURES = [...WIDTH_STRUCTURES, 'blocks'] as const;
export type Structure = (typeof STRUCTURES)[number];

/** One removable unit: an FFN neuron, a head (or KV group), a conv channel. */
export interface Unit {
  /** Indices removed from each slot (by slot id) when this unit goes. */
  indices: Map<number, number[]>;
  /** Parameters removed with it. */
  params: number;
}

/** Units that share the same slots: one layer's neurons, heads or channels. */
export interface Group {
  id: number;
  kind: WidthStructure;
  where: string;
  units: Unit[];
  /** Constant slots (weights, biases, norm parameters) sliced when units go. */
  constantSlots: Slot[];
  /** Every slot the units touch. */
  slots: Slot[];
}

export interface SkippedPlace {
  where: string;
  reason: string;
  params: number;
}

export interface Analysis {
  model: OnnxModel;
  index: GraphIndex;
  space: AtomSpace;
  traces: [Trace, Trace];
  groups: Group[];
  skipped: SkippedPlace[];
}

/**
 * Two runs with different dynamic sizes: axes that differ are dynamic (batch, sequence). The
 * pairs are tried in turn until the model runs at both sizes: an image net may need a side that
 * survives its downsampling (multiples of 32), an audio model a window longer than its
 * filters. Axis 0 gets the first number, every other dynamic axis the second.
 */
export const TRACE_SIZES: [number, number][][] = [
  [
    [2, 7],
    [3, 5],
  ],
  [
    [2, 32],
    [3, 64],
  ],
  [
    [2, 96],
    [3, 128],
  ],
  [
    [1, 512],
    [2, 640],
  ],
  [
    [1, 1600],
    [2, 2048],
  ],
];

export interface AnalyzeOptions {
  /** Slots to treat as frozen (from a failed attempt), by tensor and axis. */
  frozen?: { tensor: string; axis: number; reason: string }[];
  feeds?: [Record<string, ort.Tensor>, Record<string, ort.Tensor>];
  traces?: [Trace, Trace];
}

/**
 * The model traced at two sizes (see TRACE_SIZES). A model that onnxruntime runs at none of
 * them cannot be analysed: a UserError says so with onnxruntime's last complaint.
 */
export async function traceTwice(model: OnnxModel): Promise<[Trace, Trace]> {
  let lastError: string | undefined;
  const fixed = await cacheSizes(model);
  for (const pair of TRACE_SIZES) {
    try {
      // One session runs both sizes.
      const traces = await traceModelAt(model, pair.map((sizes) => dummyFeeds(model, ...sizes, fixed)));
      traces.forEach((trace, i) => Object.assign(trace, { sizes: pair[i], fixed }));
      return [traces[0], traces[1]];
    } catch (e) {
      // Only onnxruntime's refusal means "try another size"; anything else is a bug (exit 3).
      if (!(e instanceof RuntimeFailure) && !isUserError(e)) throw e;
      lastError = e.message.split('\n')[0];
    }
  }
  const tried = TRACE_SIZES.map((pair) => pair.map(([a, b]) => `${a}x${b}`).join(' and ')).join(', ');
  throw new UserError(
    `${model.origin || 'the model'}: onnxruntime does not run it on dummy inputs at any size tried (axis 0 x other dynamic axes: ${tried}), so its graph cannot be analysed (at the last): ${lastError}`,
  );
}

const INT_TYPES = new Set(['int64', 'int32', 'uint64', 'uint32', 'int16', 'uint16', 'int8', 'uint8']);

/**
 * Finds every removable unit of the model: builds channel atoms for every static axis, lets each
 * op's rule couple or freeze them, and reads the classes off the union-find.
 */
export async function analyze(model: OnnxModel, options: AnalyzeOptions = {}): Promise<Analysis> {
  const index = new GraphIndex(model);
  const traces = options.traces ?? (await traceTwice(model));
  const [t1, t2] = traces;
  const space = new AtomSpace();

  const dimsOf = (name: string, which: 0 | 1): number[] | undefined => {
    const traced = (which === 0 ? t1 : t2).get(name);
    if (traced) return traced.dims;
    return model.constantInfo(name)?.dims;
  };
  const isFloatConst = (name: string) => {
    const info = model.constantInfo(name);
    return !!info && isFloatDType(info.dtype);
  };

  // Slots: static axes (same size in both runs) of size > 1. Shape vectors and scalars of
  // integer type are values, not channel spaces.
  const addSlots = (name: string) => {
    if (!name) return;
    const d1 = dimsOf(name, 0);
    const d2 = dimsOf(name, 1);
    if (!d1 || !d2 || d1.length !== d2.length) return;
    const type = t1.get(name)?.type;
    const constInfo = model.constantInfo(name);
    const isInt = type ? INT_TYPES.has(type) : constInfo ? !isFloatDType(constInfo.dtype) && constInfo.dtype !== 9 : false;
    if (isInt && d1.length <= 1) return;
    d1.forEach((size, axis) => {
      if (size > 1 && size === d2[axis]) space.addSlot(name, axis, size, model.isConstant(name));
    });
  };
  // A constant nothing reads is no channel space of the model (removing its entries would do nothing).
  for (const name of model.constantNames()) if (index.consumersOf(name).length > 0 || index.graphOutputs.has(name)) addSlots(name);
  for (const name of t1.keys()) addSlots(name);
  space.seal();

  // Slots that are the outer (head) axis of a reshape split.
  const headAxes = new Set<number>();
  const opset = model.defaultOpset ?? 13;
  for (const node of index.nodes) {
    const touched = new Set<number>();
    const mark = (s: Slot | undefined) => s && touched.add(s.id);
    const slotOf = (name: string, axis: number): Slot | undefined => {
      if (!name) return undefined;
      const r = dimsOf(name, 0)?.length ?? 0;
      return space.slot(name, axis < 0 ? axis + r : axis);
    };
    const ctx: RuleContext = {
      node,
      opset,
      dims: (n) => dimsOf(n, 0),
      dims2: (n) => dimsOf(n, 1),
      ints: (n) => {
        const info = model.constantInfo(n);
        if (info && isFloatDType(info.dtype)) return undefined; // a weight: never read it for this
        const c = info && model.constant(n);
        if (c) return toNumbers(c);
        const v1 = t1.get(n)?.ints;
        const v2 = t2.get(n)?.ints;
        return v1 && v2 && JSON.stringify(v1) === JSON.stringify(v2) ? v1 : undefined;
      },
      isConstant: (n) => model.isConstant(n),
      consumers: (n) => index.consumersOf(n),
      slot: slotOf,
      same(a, axA, b, axB) {
        const sa = slotOf(a, axA);
        const sb = slotOf(b, axB);
        mark(sa);
        mark(sb);
        if (sa && sb && sa.size === sb.size) space.same(sa, sb);
        else if (sa && sb) {
          space.freeze(sa, `${nodeLabel(node)}: axis sizes differ`);
          space.freeze(sb, `${nodeLabel(node)}: axis sizes differ`);
        } else if (sa || sb) {
          // One side is dynamic or size 1: the static side cannot shrink through this op.
          space.freeze((sa ?? sb)!, `${nodeLabel(node)} (${node.opType}) broadcasts or resizes it`);
        }
      },
      offset(whole, axW, part, axP, off) {
        const sw = slotOf(whole, axW);
        const sp = slotOf(part, axP);
        mark(sw);
        mark(sp);
        if (sw && sp) space.offset(sw, sp, off);
        else if (sw || sp) space.freeze((sw ?? sp)!, `${nodeLabel(node)} (${node.opType}) cuts it`);
      },
      outer(merged, axM, outer, axO, inner) {
        const sm = slotOf(merged, axM);
        const so = slotOf(outer, axO);
        mark(sm);
        mark(so);
        if (sm && so && Number.isInteger(inner) && sm.size % (so.size * inner) === 0) {
          space.outer(sm, so, inner);
          headAxes.add(so.id);
        } else if (sm || so) space.freeze((sm ?? so)!, `${nodeLabel(node)} (${node.opType}) mixes it with a dynamic axis`);
      },
      heads(count, parts, asHeads = true) {
        const found = parts.map((p) => ({ slot: slotOf(p.tensor, p.axis), size: p.size, offset: p.offset ?? 0 }));
        for (const f of found) mark(f.slot);
        const fits = (f: (typeof found)[number]) => f.slot && Number.isInteger(f.size) && f.size > 0 && f.offset + count * f.size <= f.slot.size;
        if (count > 0 && found.every(fits)) {
          space.heads(count, found as { slot: Slot; size: number; offset: number }[]);
          if (asHeads) for (const f of found) headAxes.add(f.slot!.id);
        } else {
          for (const f of found) if (f.slot) space.freeze(f.slot, `${nodeLabel(node)} (${node.opType}): its heads do not fit the shapes seen`);
        }
      },
      freeze(name, axis, reason) {
        const s = slotOf(name, axis);
        mark(s);
        if (s) space.freeze(s, reason);
      },
      normalizedOver(name, axis, reason) {
        const s = slotOf(name, axis);
        mark(s);
        if (s) space.normalize(s, reason);
      },
      keep(name, axis) {
        mark(slotOf(name, axis));
      },
    };
    const link = ruleOf(node)?.link;
    if (link) link(ctx);
    // Whatever the rule did not account for is fixed in size: freeze it.
    const quantized = link ? undefined : quantizedWeightOf(model, node);
    const reason = link
      ? `fixed by ${node.opType} ${nodeLabel(node)}`
      : quantized
        ? quantizedOpReason(quantized, model)
        : `${node.domain ? node.domain + '.' : ''}${node.opType} ${nodeLabel(node)} ${NOT_UNDERSTOOD}`;
    for (const name of [...nodeReads(node), ...node.output]) {
      for (const s of name ? space.slotsOf(name) : []) {
        if (!touched.has(s.id)) {
          space.freeze(s, reason);
        }
      }
    }
  }
  // The model's interface keeps its shapes. An initializer older exporters also list as a graph
  // input is a weight: its default is what runs unless the user feeds it. A KV cache is the
  // exception: its past inputs and present outputs follow their layer's heads, and report.json's
  // `interface` tells the app (docs/contracts.md).
  const cache = kvCacheTensors(model);
  for (const v of model.graph.input) {
    if (model.isInitializer(v.name ?? '') || cache.has(v.name ?? '')) continue;
    for (const s of space.slotsOf(v.name ?? '')) space.freeze(s, 'model input');
  }
  for (const v of model.graph.output) {
    if (cache.has(v.name ?? '')) continue;
    for (const s of space.slotsOf(v.name ?? '')) space.freeze(s, 'model output');
  }
  for (const f of options.frozen ?? []) {
    const s = space.slot(f.tensor, f.axis);
    if (s) space.freeze(s, f.reason);
  }

  const { groups, skipped } = collectGroups(model, index, space, headAxes, isFloatConst, residualRoots(model, index, space));
  return { model, index, space, traces, groups, skipped };
}

/**
 * A KV cache's tensors: each graph output made by a Concat of a graph input (the past) and the
 * step's new keys or values (the present, fed back as that input on the next step), and that input;
 * and a com.microsoft GroupQueryAttention's past and present (inputs 3, 4 and outputs 1, 2) or a
 * MultiHeadAttention's (inputs 6, 7 and outputs 1, 2), which it concatenates inside.
 */
export function kvCacheTensors(model: OnnxModel): Set<string> {
  const inputs = new Set(model.graph.input.map((v) => v.name ?? '').filter((n) => n && !model.isInitializer(n)));
  const outputs = new Set(model.graph.output.map((v) => v.name ?? ''));
  const tensors = new Set<string>();
  const pastAt: Record<string, number> = { GroupQueryAttention: 3, MultiHeadAttention: 6 };
  for (const n of model.graph.node) {
    const at = pastAt[n.opType ?? ''];
    if (at === undefined || n.domain !== 'com.microsoft') continue;
    for (const i of (n.input ?? []).slice(at, at + 2)) if (inputs.has(i)) tensors.add(i);
    for (const o of (n.output ?? []).slice(1, 3)) if (outputs.has(o)) tensors.add(o);
  }
  for (const v of model.graph.output) {
    const producer = model.graph.node.find((n) => n.output?.includes(v.name ?? ''));
    if (producer?.opType !== 'Concat') continue;
    const past = (producer.input ?? []).filter((i) => inputs.has(i));
    if (past.length !== 1) continue;
    tensors.add(past[0]);
    tensors.add(v.name ?? '');
  }
  return tensors;
}

interface ClassInfo {
  slots: number[];
  counts: number[];
  frozen?: string;
}

function collectGroups(
  model: OnnxModel,
  index: GraphIndex,
  space: AtomSpace,
  heads: Set<number>,
  isFloatConst: (name: string) => boolean,
  residual: Set<number>,
) {
  const classes = new Map<number, ClassInfo>();
  const rootOf = new Int32Array(space.atomCount);
  for (const slot of space.slots) {
    const hard = space.frozen.get(slot.id);
    const normalized = space.normalized.get(slot.id);
    for (let i = 0; i < slot.size; i++) {
      const root = space.find(slot.base + i);
      rootOf[slot.base + i] = root;
      let info = classes.get(root);
      if (!info) classes.set(root, (info = { slots: [], counts: [] }));
      if (info.slots[info.slots.length - 1] === slot.id) info.counts[info.counts.length - 1]++;
      else {
        info.slots.push(slot.id);
        info.counts.push(1);
      }
      // A normalization's statistics may lose channels of a layer's own width, not of a
      // residual stream, which every block reads and writes.
      const frozen = hard ?? (normalized && residual.has(root) ? normalized : undefined);
      if (frozen && (!info.frozen || reasonRank(frozen) > reasonRank(info.frozen))) info.frozen = frozen;
    }
  }

  const paramSlots = space.slots.filter((s) => s.constant && isFloatConst(s.tensor));
  const isParamSlot = new Set(paramSlots.map((s) => s.id));
  const bySignature = new Map<string, { roots: number[]; info: ClassInfo }>();
  for (const [root, info] of classes) {
    if (!info.slots.some((s) => isParamSlot.has(s))) continue;
    const key = `${info.frozen ? 'F' : 'P'}|${info.slots.join(',')}|${info.counts.join(',')}`;
    const entry = bySignature.get(key);
    if (entry) entry.roots.push(root);
    else bySignature.set(key, { roots: [root], info });
  }

  const groups: Group[] = [];
  const skipped: SkippedPlace[] = [];
  const slotParams = (slotId: number, count: number) => {
    const s = space.slots[slotId];
    const dims = model.constantInfo(s.tensor)?.dims ?? [];
    return (count * dims.reduce((a, b) => a * b, 1)) / s.size;
  };
  for (const { roots, info } of bySignature.values()) {
    const constantSlots = info.slots.filter((s) => isParamSlot.has(s)).map((s) => space.slots[s]);
    const unitParams = info.slots.reduce((sum, s, i) => sum + (isParamSlot.has(s) ? slotParams(s, info.counts[i]) : 0), 0);
    const where = describeWeights(constantSlots, index);
    if (info.frozen) {
      // A lone weight axis coupled to nothing (a conv kernel's spatial axis) is not a channel
      // space; only an op we do not understand makes it worth a line.
      if (info.slots.length === 1 && !stopsAnalysis(info.frozen)) continue;
      skipped.push({ where, reason: info.frozen, params: Math.round(unitParams * roots.length) });
      continue;
    }
    if (roots.length < 2) {
      skipped.push({ where, reason: 'a single unit: removing it would empty the layer', params: Math.round(unitParams) });
      continue;
    }
    const rootSet = new Map(roots.map((r, i) => [r, i]));
    const units: Unit[] = roots.map(() => ({ indices: new Map(), params: unitParams }));
    for (const slotId of info.slots) {
      const slot = space.slots[slotId];
      for (let i = 0; i < slot.size; i++) {
        const u = rootSet.get(rootOf[slot.base + i]);
        if (u === undefined) continue;
        const list = units[u].indices.get(slotId);
        if (list) list.push(i);
        else units[u].indices.set(slotId, [i]);
      }
    }
    // Units in layout order (first index of their first slot), so unit k reads naturally.
    const first = info.slots[0];
    units.sort((a, b) => a.indices.get(first)![0] - b.indices.get(first)![0]);
    const kind: WidthStructure = constantSlots.some((s) => consumers(index, s.tensor).some((n) => ruleOf(n)?.channels))
      ? 'channels'
      : info.slots.some((s) => heads.has(s))
        ? 'heads'
        : 'ffn';
    groups.push({ id: groups.length, kind, where, units, constantSlots, slots: info.slots.map((s) => space.slots[s]) });
  }
  // Groups in the order the graph runs their first weight.
  const order = graphOrder(index);
  const position = (g: Group) =>
    Math.min(...g.constantSlots.flatMap((s) => consumers(index, s.tensor).map((n) => order.get(n) ?? Infinity)));
  groups.sort((a, b) => position(a) - position(b));
  groups.forEach((g, i) => (g.id = i));
  return { groups, skipped };
}

/**
 * Roots of the classes that are residual streams: an op adds two computed tensors whose
 * channels are the same class (its rule's `sums`), the way every block adds its output to its
 * input.
 */
function residualRoots(model: OnnxModel, index: GraphIndex, space: AtomSpace): Set<number> {
  const roots = new Set<number>();
  // Every channel (atom) of a slot is its own class: its root, for every atom of a tensor.
  const rootsOf = (t: string) => new Set(space.slotsOf(t).flatMap((s) => Array.from({ length: s.size }, (_, i) => space.find(s.base + i))));
  for (const node of index.nodes) {
    const summed = ruleOf(node)?.sums?.(node).filter((i) => i && !model.isConstant(i));
    if (!summed || summed.length < 2) continue;
    const sets = summed.map(rootsOf);
    for (let a = 0; a < sets.length; a++) {
      for (let b = a + 1; b < sets.length; b++) for (const r of sets[a]) if (sets[b].has(r)) roots.add(r);
    }
  }
  return roots;
}

function consumers(index: GraphIndex, tensor: string): Node[] {
  // Weights often reach their op through a Cast or Transpose; look one step further.
  const direct = index.consumersOf(tensor);
  return direct.flatMap((n) => (['Cast', 'Transpose', 'Identity'].includes(n.opType) ? index.consumersOf(n.output[0]) : [n]));
}

const orders = new WeakMap<GraphIndex, Map<Node, number>>();
/** Position of each node in topological order, to list groups and ops as the graph runs. */
function graphOrder(index: GraphIndex): Map<Node, number> {
  let order = orders.get(index);
  if (!order) orders.set(index, (order = new Map(index.nodes.map((n, i) => [n, i]))));
  return order;
}

const NOT_UNDERSTOOD = 'is not understood by the engine';

/** A reason given by an op the engine has no rule for (one reading a quantized weight included). */
const stopsAnalysis = (reason: string) => reason.includes(NOT_UNDERSTOOD) || reason.includes(QUANTIZED_NOT_PRUNABLE);

/** Unknown ops and normalizations explain a skip better than "fixed by Reshape". */
function reasonRank(reason: string): number {
  if (stopsAnalysis(reason)) return 5;
  if (/normaliz|reduces over/.test(reason)) return 4;
  if (reason === 'model output' || reason === 'model input') return 3;
  if (reason.includes('Gather')) return 2;
  return 1;
}

/** "/h.0/attn (c_attn/MatMul, c_proj/MatMul)": the ops that use the group's weights. */
function describeWeights(slots: Slot[], index: GraphIndex): string {
  const order = graphOrder(index);
  const ops = [...new Set(slots.flatMap((s) => consumers(index, s.tensor)))].sort((a, b) => order.get(a)! - order.get(b)!);
  const names = [...new Set(ops.map((n) => nodeLabel(n)))];
  if (names.length === 0) return listed(slots.map((s) => s.tensor));
  if (names.length === 1) return names[0];
  let prefix = names[0];
  for (const n of names) while (!n.startsWith(prefix)) prefix = prefix.slice(0, -1);
  prefix = prefix.slice(0, prefix.lastIndexOf('/') + 1);
  if (prefix.length < 2) return listed(names);
  return `${prefix.replace(/\/$/, '')} (${listed(names.map((n) => n.slice(prefix.length)))})`;
}

/** At most six names, then how many more: a residual stream touches every layer. */
function listed(names: string[]): string {
  return names.length <= 6 ? names.join(', ') : `${names.slice(0, 5).join(', ')} and ${names.length - 5} more`;
}
