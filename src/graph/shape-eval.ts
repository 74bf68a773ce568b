import { GraphIndex, Node, attrInt, attrInts } from './graph';
import { OnnxModel } from '../onnx/model';
import { DataType, isFloatDType } from '../onnx/dtype';
import { elementCount, toNumbers } from '../onnx/tensor';

/** A small tensor computed while evaluating shape arithmetic. */
export interface SmallValue {
  dims: number[];
  data: number[];
  float: boolean;
}

export class Unevaluable extends Error {}

const MAX_ELEMENTS = 4096;

/**
 * Evaluates the integer arithmetic that computes shapes at run time (Shape -> Gather -> Div ->
 * Concat -> Reshape), for given tensor dims. The pruner uses it to check whether a shape input
 * still gives the right shape once channels are gone, and to find the constant to rewrite.
 */
export class ShapeEvaluator {
  private memo = new Map<string, SmallValue>();

  constructor(
    private readonly model: OnnxModel,
    private readonly index: GraphIndex,
    private readonly dimsOf: (tensor: string) => number[] | undefined,
    private readonly overrides = new Map<string, SmallValue>(),
  ) {}

  eval(name: string): SmallValue {
    const hit = this.memo.get(name);
    if (hit) return hit;
    const value = this.compute(name);
    this.memo.set(name, value);
    return value;
  }

  private compute(name: string): SmallValue {
    const o = this.overrides.get(name);
    if (o) return o;
    const c = this.model.isConstant(name) ? this.model.constant(name) : undefined;
    if (c) {
      if (c.data.length > MAX_ELEMENTS) throw new Unevaluable(`constant ${name} too large`);
      return {
        dims: c.dims,
        data: toNumbers(c),
        float: isFloatDType(c.dtype),
      };
    }
    const node = this.index.producerOf(name);
    if (!node) throw new Unevaluable(`${name} is a model input`);
    const outIndex = node.output.indexOf(name);
    return this.evalNode(node, outIndex);
  }

  private input(node: Node, i: number): SmallValue | undefined {
    const n = node.input[i];
    return n ? this.eval(n) : undefined;
  }

  private evalNode(node: Node, outIndex: number): SmallValue {
    const op = node.opType;
    if (outIndex !== 0) throw new Unevaluable(`${op} output ${outIndex}`);
    switch (op) {
      case 'Shape': {
        const d = this.dimsOf(node.input[0]);
        if (!d) throw new Unevaluable(`no dims for ${node.input[0]}`);
        const r = d.length;
        const norm = (v: number) => Math.min(Math.max(v < 0 ? v + r : v, 0), r);
        const start = norm(attrInt(node, 'start', 0));
        const end = norm(attrInt(node, 'end', r));
        const data = d.slice(start, end);
        return { dims: [data.length], data, float: false };
      }
      case 'Size': {
        const d = this.dimsOf(node.input[0]);
        if (!d) throw new Unevaluable(`no dims for ${node.input[0]}`);
        return { dims: [], data: [elementCount(d)], float: false };
      }
      case 'Identity':
        return this.input(node, 0)!;
      case 'Cast': {
        const v = this.input(node, 0)!;
        const to = attrInt(node, 'to', DataType.INT64);
        const float = isFloatDType(to);
        return { dims: v.dims, data: float ? v.data : v.data.map(Math.trunc), float };
      }
      case 'Gather': {
        const data = this.input(node, 0)!;
        const idx = this.input(node, 1)!;
        if (data.dims.length !== 1 || attrInt(node, 'axis', 0) !== 0) throw new Unevaluable('Gather rank');
        const n = data.data.length;
        return { dims: idx.dims, data: idx.data.map((i) => data.data[i < 0 ? i + n : i]), float: data.float };
      }
      case 'Unsqueeze': {
        const v = this.input(node, 0)!;
        const axes = attrInts(node, 'axes') ?? this.input(node, 1)?.data;
        if (!axes) throw new Unevaluable('Unsqueeze axes');
        const r = v.dims.length + axes.length;
        const set = new Set(axes.map((a) => (a < 0 ? a + r : a)));
        const dims: number[] = [];
        for (let i = 0, j = 0; i < r; i++) dims.push(set.has(i) ? 1 : v.dims[j++]);
        return { dims, data: v.data, float: v.float };
      }
      case 'Squeeze': {
        const v = this.input(node, 0)!;
        const axes = attrInts(node, 'axes') ?? this.input(node, 1)?.data;
        const r = v.dims.length;
        const set = new Set((axes ?? v.dims.map((d, i) => (d === 1 ? i : -1 - r))).map((a) => (a < 0 ? a + r : a)));
        return { dims: v.dims.filter((_, i) => !set.has(i)), data: v.data, float: v.float };
      }
      case 'Reshape': {
        const v = this.input(node, 0)!;
        const shape = this.input(node, 1)!.data;
        return { dims: resolveReshape(v.dims, shape, attrInt(node, 'allowzero', 0) === 1), data: v.data, float: v.float };
      }
      case 'Concat': {
        const parts = node.input.map((_, i) => this.input(node, i)!);
        if (parts.some((p) => p.dims.length > 1)) throw new Unevaluable('Concat rank');
        const data = parts.flatMap((p) => p.data);
        return { dims: [data.length], data, float: parts.some((p) => p.float) };
      }
      case 'Slice': {
        const v = this.input(node, 0)!;
        if (v.dims.length !== 1) throw new Unevaluable('Slice rank');
        const starts = attrInts(node, 'starts') ?? this.input(node, 1)!.data;
        const ends = attrInts(node, 'ends') ?? this.input(node, 2)!.data;
        const steps = this.input(node, 4)?.data ?? [1];
        const n = v.data.length;
        const step = steps[0];
        const clamp = (x: number, lo: number, hi: number) => Math.min(Math.max(x, lo), hi);
        let s = starts[0] < 0 ? starts[0] + n : starts[0];
        let e = ends[0] < 0 ? ends[0] + n : ends[0];
        const data: number[] = [];
        if (step > 0) {
          s = clamp(s, 0, n);
          e = clamp(e, 0, n);
          for (let i = s; i < e; i += step) data.push(v.data[i]);
        } else {
          s = clamp(s, -1, n - 1);
          e = clamp(e, -1, n - 1);
          for (let i = s; i > e; i += step) data.push(v.data[i]);
        }
        return { dims: [data.length], data, float: v.float };
      }
      case 'ConstantOfShape': {
        const shape = this.input(node, 0)!.data;
        const count = elementCount(shape);
        if (count > MAX_ELEMENTS) throw new Unevaluable('ConstantOfShape too large');
        const valueAttr = node.attribute.find((a) => a.name === 'value');
        let fill = 0;
        let float = true;
        if (valueAttr?.t) {
          const t = this.model.readTensorProto(valueAttr.t);
          fill = Number((t.data as ArrayLike<number | bigint>)[0] ?? 0);
          float = isFloatDType(t.dtype);
        }
        return { dims: shape, data: new Array(count).fill(fill), float };
      }
      case 'Range': {
        const [start, limit, delta] = [0, 1, 2].map((i) => this.input(node, i)!.data[0]);
        const data: number[] = [];
        for (let x = start; delta > 0 ? x < limit : x > limit; x += delta) {
          data.push(x);
          if (data.length > MAX_ELEMENTS) throw new Unevaluable('Range too large');
        }
        return { dims: [data.length], data, float: this.input(node, 0)!.float };
      }
      case 'Expand': {
        const v = this.input(node, 0)!;
        const shape = this.input(node, 1)!.data;
        const dims = broadcastDims(v.dims, shape);
        return broadcastTo(v, dims);
      }
      case 'Neg': case 'Abs': case 'Sqrt': case 'Floor': case 'Ceil': case 'Reciprocal': case 'Not': {
        const v = this.input(node, 0)!;
        const f = UNARY[op];
        return { dims: v.dims, data: v.data.map(f), float: v.float || op === 'Sqrt' || op === 'Reciprocal' };
      }
      case 'ReduceProd': case 'ReduceSum': case 'ReduceMax': case 'ReduceMin': {
        const v = this.input(node, 0)!;
        if (v.dims.length > 1) throw new Unevaluable('Reduce rank');
        const f = { ReduceProd: (a: number, b: number) => a * b, ReduceSum: (a: number, b: number) => a + b, ReduceMax: (a: number, b: number) => Math.max(a, b), ReduceMin: (a: number, b: number) => Math.min(a, b) }[op];
        const init = { ReduceProd: 1, ReduceSum: 0, ReduceMax: -Infinity, ReduceMin: Infinity }[op];
        const keep = attrInt(node, 'keepdims', 1) === 1;
        return { dims: keep ? [1] : [], data: [v.data.reduce(f, init)], float: v.float };
      }
      default: {
        const f = BINARY[op];
        if (f && node.input.length === 2) {
          const a = this.input(node, 0)!;
          const b = this.input(node, 1)!;
          const intDiv = op === 'Div' && !a.float && !b.float;
          return elementwise([a, b], (x) => (intDiv ? Math.trunc(x[0] / x[1]) : f(x[0], x[1])), COMPARISONS.has(op) ? false : a.float || b.float);
        }
        if (op === 'Where') {
          const [c, x, y] = [0, 1, 2].map((i) => this.input(node, i)!);
          return elementwise([c, x, y], (v) => (v[0] ? v[1] : v[2]), x.float || y.float);
        }
        throw new Unevaluable(`op ${op}`);
      }
    }
  }
}

const UNARY: Record<string, (x: number) => number> = {
  Neg: (x) => -x, Abs: Math.abs, Sqrt: Math.sqrt, Floor: Math.floor, Ceil: Math.ceil, Reciprocal: (x) => 1 / x,
  Not: (x) => (x ? 0 : 1),
};
const BINARY: Record<string, (a: number, b: number) => number> = {
  Add: (a, b) => a + b, Sub: (a, b) => a - b, Mul: (a, b) => a * b, Div: (a, b) => a / b,
  Mod: (a, b) => a % b, Pow: (a, b) => a ** b, Max: Math.max, Min: Math.min,
  Equal: (a, b) => (a === b ? 1 : 0), Less: (a, b) => (a < b ? 1 : 0), Greater: (a, b) => (a > b ? 1 : 0),
  And: (a, b) => (a && b ? 1 : 0), Or: (a, b) => (a || b ? 1 : 0),
};
const COMPARISONS = new Set(['Equal', 'Less', 'Greater', 'And', 'Or']);

export function broadcastDims(a: number[], b: number[]): number[] {
  const r = Math.max(a.length, b.length);
  const out: number[] = [];
  for (let i = 0; i < r; i++) {
    const x = a[i - (r - a.length)] ?? 1;
    const y = b[i - (r - b.length)] ?? 1;
    if (x !== y && x !== 1 && y !== 1) throw new Unevaluable(`cannot broadcast ${a} with ${b}`);
    out.push(x === 1 ? y : x);
  }
  return out;
}

function broadcastTo(v: SmallValue, dims: number[]): SmallValue {
  const count = elementCount(dims);
  if (count > MAX_ELEMENTS) throw new Unevaluable('broadcast too large');
  const r = dims.length;
  const vd = [...new Array(r - v.dims.length).fill(1), ...v.dims];
  const data: number[] = new Array(count);
  for (let flat = 0; flat < count; flat++) {
    let rem = flat;
    let src = 0;
    let stride = 1;
    for (let ax = r - 1; ax >= 0; ax--) {
      const coord = rem % dims[ax];
      rem = Math.floor(rem / dims[ax]);
      if (vd[ax] !== 1) src += coord * stride;
      stride *= vd[ax];
    }
    data[flat] = v.data[src];
  }
  return { dims, data, float: v.float };
}

function elementwise(values: SmallValue[], f: (x: number[]) => number, float: boolean): SmallValue {
  const dims = values.map((v) => v.dims).reduce((a, b) => broadcastDims(a, b));
  const expanded = values.map((v) => broadcastTo(v, dims));
  const data = expanded[0].data.map((_, i) => f(expanded.map((e) => e.data[i])));
  return { dims, data, float };
}

/** Output dims of Reshape(input of `dims`, `shape`): 0 copies the input's dim, -1 is inferred. */
export function resolveReshape(dims: number[], shape: number[], allowZero = false): number[] {
  const out = shape.map((s, i) => (s === 0 && !allowZero ? dims[i] : s));
  const neg = out.indexOf(-1);
  if (neg >= 0) {
    const known = out.reduce((a, b, i) => (i === neg ? a : a * b), 1);
    out[neg] = known === 0 ? 0 : elementCount(dims) / known;
  }
  return out;
}

/** Every node and constant leaf that a shape value is computed from (not past Shape/Size). */
export function shapeSubgraph(index: GraphIndex, name: string): { nodes: Set<Node>; leaves: Set<string> } {
  const nodes = new Set<Node>();
  const leaves = new Set<string>();
  const stack = [name];
  const seen = new Set<string>();
  while (stack.length) {
    const t = stack.pop()!;
    if (!t || seen.has(t)) continue;
    seen.add(t);
    if (index.model.isConstant(t)) {
      leaves.add(t);
      const p = index.producerOf(t);
      if (p) nodes.add(p);
      continue;
    }
    const p = index.producerOf(t);
    if (!p) continue;
    nodes.add(p);
    if (p.opType === 'Shape' || p.opType === 'Size') continue;
    stack.push(...p.input);
  }
  return { nodes, leaves };
}
