import { onnx } from 'onnx-proto';
import { DataType } from './dtype';
import { createSession, ort } from './runtime';

/**
 * Dense float64 linear algebra run by onnxruntime: the pruning engine's covariance inverses and
 * Optimal-Brain-Surgeon updates are matrix products of thousands of rows, which onnxruntime's
 * GEMM does at about a hundred times the speed of a JavaScript loop. Each kernel is a small
 * graph (standard ops, and `com.microsoft` Inverse for blocks of a few rows),
 * made once: the process shares one instance (`DenseMath.shared`), whose few sessions live as
 * long as it does (onnxruntime-node leaks memory over many session create/release cycles).
 */
export class DenseMath {
  private readonly sessions = new Map<string, Promise<ort.InferenceSession>>();
  private static instance: DenseMath | undefined;

  static shared(): DenseMath {
    return (DenseMath.instance ??= new DenseMath());
  }

  /**
   * The inverse of a symmetric positive definite n x n matrix (row-major; its lower triangle is
   * read), through its Cholesky factor L: M⁻¹ = L⁻ᵀL⁻¹. An inverse by blocks of explicit inverses
   * (Schur complements) squares the condition number and loses every digit on a covariance damped
   * by 10⁻⁶; the factor does not. The factor is made by recursion over halves (cholesky), the
   * matrix products by onnxruntime, blocks of at most LEAF rows here. A matrix that is not
   * numerically positive definite gets the least diagonal jitter that makes it so (from 10⁻¹² of
   * its mean diagonal); NaNs when even 10⁻⁴ does not.
   */
  async inverse(a: Float64Array, n: number): Promise<Float64Array> {
    if (n === 0) return new Float64Array(0);
    let mean = 0;
    for (let i = 0; i < n; i++) mean += a[i * n + i] / n;
    for (const jitter of [0, 1e-12, 1e-10, 1e-8, 1e-6, 1e-4]) {
      let m = a;
      if (jitter > 0) {
        m = Float64Array.from(a);
        for (let i = 0; i < n; i++) m[i * n + i] += jitter * Math.abs(mean);
      }
      const factor = await this.inverseFactor(m, n);
      if (factor) return factor.gram;
    }
    return new Float64Array(n * n).fill(NaN);
  }

  /**
   * The upper triangular U with M⁻¹ = UᵀU, M symmetric positive definite (n x n): the factor
   * GPTQ's error feedback reads (docs/quantization.md). With R the reversal of rows and columns,
   * RMR = LLᵀ gives M⁻¹ = (RL⁻¹R)ᵀ(RL⁻¹R), and RL⁻¹R is upper triangular. Undefined when M is not
   * numerically positive definite (the caller dampens it first).
   */
  async inverseUpperFactor(a: Float64Array, n: number): Promise<Float64Array | undefined> {
    const reversed = (m: Float64Array) => {
      const r = new Float64Array(n * n);
      for (let i = 0; i < n; i++) for (let j = 0; j < n; j++) r[i * n + j] = m[(n - 1 - i) * n + (n - 1 - j)];
      return r;
    };
    if (n === 0) return new Float64Array(0);
    const factor = await this.inverseFactor(reversed(a), n);
    return factor && reversed(factor.x);
  }

  /**
   * For M = LLᵀ (n x n): X = L⁻¹ and its gram XᵀX = M⁻¹, or undefined when a pivot is not
   * positive. For M = [A Bᵀ; B D] with A = L₁L₁ᵀ: L's block under L₁ is C = B·X₁ᵀ, the rest
   * factors S = D − CCᵀ, and X = [X₁ 0; −X₂CX₁ X₂].
   */
  private async inverseFactor(m: Float64Array, n: number): Promise<{ x: Float64Array; gram: Float64Array } | undefined> {
    if (n <= LEAF) {
      const l = cholesky(m, n);
      if (!l) return undefined;
      const x = lowerInverse(l, n);
      return { x, gram: lowerGram(x, n) };
    }
    const h = Math.ceil(n / 2 / LEAF) * LEAF;
    const r = n - h;
    const [top, b, d] = [new Float64Array(h * h), new Float64Array(r * h), new Float64Array(r * r)];
    for (let i = 0; i < h; i++) top.set(m.subarray(i * n, i * n + h), i * h);
    for (let i = 0; i < r; i++) {
      b.set(m.subarray((h + i) * n, (h + i) * n + h), i * h);
      d.set(m.subarray((h + i) * n + h, (h + i + 1) * n), i * r);
    }
    const first = await this.inverseFactor(top, h);
    if (!first) return undefined;
    const split = await (await this.session('cholesky split', choleskySplitGraph)).run({ x1: f64(first.x, [h, h]), b: f64(b, [r, h]), d: f64(d, [r, r]) });
    const second = await this.inverseFactor(split.s.data as Float64Array, r);
    if (!second) return undefined;
    const join = await (await this.session('cholesky join', choleskyJoinGraph)).run({
      x1: f64(first.x, [h, h]),
      g1: f64(first.gram, [h, h]),
      c: split.c,
      x2: f64(second.x, [r, r]),
      g2: f64(second.gram, [r, r]),
    });
    return { x: join.x.data as Float64Array, gram: join.gram.data as Float64Array };
  }

  /**
   * One Optimal-Brain-Surgeon removal of the rows `removed` (indices into m) from a layer whose
   * inverse Hessian is `hinv` (m x m) and weight `w` (m x n, one row per input channel): the
   * kept rows of the weight absorb what the removed ones did, and both shrink to the `kept`
   * rows (in that order). Also returns the unit errors (as `unitErrors`) of `units`, rows of
   * the shrunk matrices, for the next removal.
   */
  async remove(
    hinv: Float64Array,
    w: Float64Array,
    m: number,
    n: number,
    removed: number[],
    kept: number[],
    units: number[][],
  ): Promise<{ hinv: Float64Array; w: Float64Array; errors: Float64Array }> {
    const session = await this.session('remove', removeGraph);
    const out = await session.run({ hinv: f64(hinv, [m, m]), w: f64(w, [m, n]), removed: i64(removed), kept: i64(kept), ...unitFeeds(units, kept.length) });
    return { hinv: out.hinvKept.data as Float64Array, w: out.wKept.data as Float64Array, errors: out.errors.data as Float64Array };
  }

  /**
   * The weight's kept rows after removing `removed` with the Optimal-Brain-Surgeon update
   * W_k − Hinv_kP · (Hinv_PP)⁻¹ · W_P (the least-squares refit of the kept rows), in `kept` order.
   */
  async refit(hinv: Float64Array, w: Float64Array, m: number, n: number, removed: number[], kept: number[]): Promise<Float64Array> {
    const session = await this.session('refit', refitGraph);
    const out = await session.run({ hinv: f64(hinv, [m, m]), w: f64(w, [m, n]), removed: i64(removed), kept: i64(kept) });
    return out.wKept.data as Float64Array;
  }

  /**
   * For each unit (a row of `units`: d channel indices), the error of removing it alone:
   * tr(W_uᵀ · (Hinv_uu)⁻¹ · W_u).
   */
  async unitErrors(hinv: Float64Array, w: Float64Array, m: number, n: number, units: number[][]): Promise<Float64Array> {
    if (units.length === 0) return new Float64Array(0);
    const session = await this.session('unit errors', unitErrorsGraph);
    const out = await session.run({ hinv: f64(hinv, [m, m]), w: f64(w, [m, n]), ...unitFeeds(units, m) });
    return out.errors.data as Float64Array;
  }

  /** The product A · B of A (m x k) and B (k x n). */
  async product(a: Float64Array, b: Float64Array, m: number, k: number, n: number): Promise<Float64Array> {
    if (m === 0 || n === 0) return new Float64Array(m * n);
    const session = await this.session('product', productGraph);
    const out = await session.run({ a: f64(a, [m, k]), b: f64(b, [k, n]) });
    return out.out.data as Float64Array;
  }

  /** tr(Dᵀ · C · D) for C (m x m) and D (m x n): the output error a weight change D makes under input covariance C. */
  async quadratic(c: Float64Array, d: Float64Array, m: number, n: number): Promise<number> {
    if (m === 0 || n === 0) return 0;
    const session = await this.session('quadratic', quadraticGraph);
    const out = await session.run({ c: f64(c, [m, m]), d: f64(d, [m, n]) });
    return (out.out.data as Float64Array)[0];
  }

  private session(key: string, build: () => Uint8Array): Promise<ort.InferenceSession> {
    let s = this.sessions.get(key);
    if (!s) {
      s = createSession(build(), { enableCpuMemArena: false });
      this.sessions.set(key, s);
    }
    return s;
  }
}

const f64 = (data: Float64Array, dims: number[]) => new ort.Tensor('float64', data, dims);

/**
 * Units (rows of d channel indices each, of an m x m matrix) as the unit-error graph reads them:
 * their rows, and the flat index of every entry of each unit's own d x d block.
 */
function unitFeeds(units: number[][], m: number): { units: ort.Tensor; blocks: ort.Tensor } {
  const d = units[0]?.length ?? 1;
  const blocks = new BigInt64Array(units.length * d * d);
  units.forEach((u, k) => {
    for (let i = 0; i < d; i++) for (let j = 0; j < d; j++) blocks[(k * d + i) * d + j] = BigInt(u[i] * m + u[j]);
  });
  return { units: new ort.Tensor('int64', BigInt64Array.from(units.flat(), BigInt), [units.length, d]), blocks: new ort.Tensor('int64', blocks, [units.length, d, d]) };
}
const i64 = (values: number[]) => new ort.Tensor('int64', BigInt64Array.from(values, BigInt), [values.length]);

/** Blocks of at most this many rows are factored and inverted here (a few hundred thousand multiply-adds). */
const LEAF = 64;

/** The lower Cholesky factor of an n x n symmetric matrix (lower triangle read), or undefined when a pivot is not positive. */
function cholesky(a: Float64Array, n: number): Float64Array | undefined {
  const l = new Float64Array(n * n);
  for (let j = 0; j < n; j++) {
    let d = a[j * n + j];
    for (let k = 0; k < j; k++) d -= l[j * n + k] * l[j * n + k];
    if (!(d > 0)) return undefined;
    const ljj = Math.sqrt(d);
    l[j * n + j] = ljj;
    for (let i = j + 1; i < n; i++) {
      let v = a[i * n + j];
      for (let k = 0; k < j; k++) v -= l[i * n + k] * l[j * n + k];
      l[i * n + j] = v / ljj;
    }
  }
  return l;
}

/** The inverse of an n x n lower triangular matrix with a positive diagonal (lower triangular too). */
export function lowerInverse(l: Float64Array, n: number): Float64Array {
  const x = new Float64Array(n * n);
  for (let j = 0; j < n; j++) {
    x[j * n + j] = 1 / l[j * n + j];
    for (let i = j + 1; i < n; i++) {
      let v = 0;
      for (let k = j; k < i; k++) v -= l[i * n + k] * x[k * n + j];
      x[i * n + j] = v / l[i * n + i];
    }
  }
  return x;
}

/** A graph under construction: nodes, int64 constants, and fresh names. */
class GraphBuilder {
  readonly nodes: onnx.NodeProto[] = [];
  readonly initializers: onnx.TensorProto[] = [];
  private count = 0;

  op(opType: string, inputs: string[], attributes: Record<string, number | number[]> = {}, domain?: string): string {
    const output = `t${this.count++}`;
    const attribute = Object.entries(attributes).map(([name, v]) =>
      Array.isArray(v)
        ? onnx.AttributeProto.create({ name, type: onnx.AttributeProto.AttributeType.INTS, ints: v })
        : onnx.AttributeProto.create({ name, type: onnx.AttributeProto.AttributeType.INT, i: v }),
    );
    this.nodes.push(onnx.NodeProto.create({ opType, input: inputs, output: [output], attribute, ...(domain ? { domain } : {}) }));
    return output;
  }

  ints(values: number[]): string {
    const name = `c${this.count++}`;
    this.initializers.push(onnx.TensorProto.create({ name, dataType: DataType.INT64, dims: [values.length], int64Data: values }));
    return name;
  }

  /** Names `value` as the graph output `name`. */
  output(value: string, name: string): void {
    this.nodes.push(onnx.NodeProto.create({ opType: 'Identity', input: [value], output: [name] }));
  }

  encode(inputs: [string, DataType][], outputs: [string, DataType][]): Uint8Array {
    const info = ([name, elemType]: [string, DataType]) => onnx.ValueInfoProto.create({ name, type: { tensorType: { elemType } } });
    const model = onnx.ModelProto.create({
      irVersion: 8,
      producerName: 'prune-gate',
      opsetImport: [
        { domain: '', version: 17 },
        { domain: 'com.microsoft', version: 1 },
      ],
      graph: { name: 'dense', node: this.nodes, initializer: this.initializers, input: inputs.map(info), output: outputs.map(info) },
    });
    return onnx.ModelProto.encode(model).finish();
  }
}

/** XᵀX for an n x n lower triangular X (symmetric). */
function lowerGram(x: Float64Array, n: number): Float64Array {
  const g = new Float64Array(n * n);
  for (let i = 0; i < n; i++) {
    for (let j = 0; j <= i; j++) {
      let v = 0;
      for (let k = i; k < n; k++) v += x[k * n + i] * x[k * n + j];
      g[i * n + j] = v;
      g[j * n + i] = v;
    }
  }
  return g;
}

/** Graph inputs or outputs, all float64 matrices. */
const doubles = (...names: string[]): [string, DataType][] => names.map((n) => [n, DataType.DOUBLE]);
/** xᵀ of a matrix. */
const transposed = (g: GraphBuilder, x: string) => g.op('Transpose', [x], { perm: [1, 0] });

/** The factor's block under the first half, C = B·X₁ᵀ, and what is left to factor, S = D − CCᵀ (any sizes). */
function choleskySplitGraph(): Uint8Array {
  const g = new GraphBuilder();
  const c = g.op('MatMul', ['b', transposed(g, 'x1')]);
  g.output(c, 'c');
  g.output(g.op('Sub', ['d', g.op('MatMul', [c, transposed(g, c)])]), 's');
  return g.encode(doubles('x1', 'b', 'd'), doubles('c', 's'));
}

/**
 * The halves joined: E = −X₂CX₁, X = [X₁ 0; E X₂] and its gram
 * XᵀX = [G₁ + EᵀE, EᵀX₂; X₂ᵀE, G₂] (any sizes).
 */
function choleskyJoinGraph(): Uint8Array {
  const g = new GraphBuilder();
  const t = (x: string) => transposed(g, x);
  const e = g.op('Neg', [g.op('MatMul', ['x2', g.op('MatMul', ['c', 'x1'])])]);
  const zeros = g.op('Cast', [g.op('ConstantOfShape', [g.op('Shape', [t(e)])])], { to: DataType.DOUBLE });
  const x = g.op('Concat', [g.op('Concat', ['x1', zeros], { axis: 1 }), g.op('Concat', [e, 'x2'], { axis: 1 })], { axis: 0 });
  const ex2 = g.op('MatMul', [t(e), 'x2']);
  const upper = g.op('Concat', [g.op('Add', ['g1', g.op('MatMul', [t(e), e])]), ex2], { axis: 1 });
  const lower = g.op('Concat', [t(ex2), 'g2'], { axis: 1 });
  g.output(x, 'x');
  g.output(g.op('Concat', [upper, lower], { axis: 0 }), 'gram');
  return g.encode(doubles('x1', 'g1', 'c', 'x2', 'g2'), doubles('x', 'gram'));
}

/** Gathers Hinv's removed columns in its removed rows (Hinv_PP) and in its kept rows (Hinv_kP), and W's removed rows (W_P). */
function surgeon(g: GraphBuilder): { hpp: string; hkp: string; wp: string } {
  const hp = g.op('Gather', ['hinv', 'removed'], { axis: 1 });
  return {
    hpp: g.op('Gather', [hp, 'removed'], { axis: 0 }),
    hkp: g.op('Gather', [hp, 'kept'], { axis: 0 }),
    wp: g.op('Gather', ['w', 'removed'], { axis: 0 }),
  };
}

const SURGEON_INPUTS: [string, DataType][] = [
  ...doubles('hinv', 'w'),
  ['removed', DataType.INT64],
  ['kept', DataType.INT64],
];

/** With T = Hinv_kP · (Hinv_PP)⁻¹: Hinv_kk − T · Hinv_kPᵀ and W_k − T · W_P, and the unit errors of the result. */
function removeGraph(): Uint8Array {
  const g = new GraphBuilder();
  const { hpp, hkp, wp } = surgeon(g);
  const tk = g.op('MatMul', [hkp, g.op('Inverse', [hpp], {}, 'com.microsoft')]);
  const hkk = g.op('Gather', [g.op('Gather', ['hinv', 'kept'], { axis: 0 }), 'kept'], { axis: 1 });
  const hinvKept = g.op('Sub', [hkk, g.op('MatMul', [tk, transposed(g, hkp)])]);
  const wKept = g.op('Sub', [g.op('Gather', ['w', 'kept'], { axis: 0 }), g.op('MatMul', [tk, wp])]);
  g.output(hinvKept, 'hinvKept');
  g.output(wKept, 'wKept');
  g.output(unitErrors(g, hinvKept, wKept), 'errors');
  return g.encode([...SURGEON_INPUTS, ['units', DataType.INT64], ['blocks', DataType.INT64]], doubles('hinvKept', 'wKept', 'errors'));
}

/**
 * W_k − Hinv_kP · ((Hinv_PP)⁻¹ · W_P): the product in this order costs p²n + (m−p)pn
 * multiply-adds against (m−p)p² + (m−p)pn for T·W_P (removeGraph needs T for the inverse).
 */
function refitGraph(): Uint8Array {
  const g = new GraphBuilder();
  const { hpp, hkp, wp } = surgeon(g);
  const solved = g.op('MatMul', [g.op('Inverse', [hpp], {}, 'com.microsoft'), wp]);
  g.output(g.op('Sub', [g.op('Gather', ['w', 'kept'], { axis: 0 }), g.op('MatMul', [hkp, solved])]), 'wKept');
  return g.encode(SURGEON_INPUTS, doubles('wKept'));
}

/** tr(W_uᵀ · (Hinv_uu)⁻¹ · W_u) for each unit (the `units` and `blocks` inputs, unitFeeds) of `hinv` and `w`. */
function unitErrors(g: GraphBuilder, hinv: string, w: string): string {
  // Each unit's own [d, d] block, picked from the flattened matrix.
  const blocks = g.op('Gather', [g.op('Reshape', [hinv, g.ints([-1])]), 'blocks'], { axis: 0 });
  const wu = g.op('Gather', [w, 'units'], { axis: 0 }); // [u, d, n]
  const solved = g.op('MatMul', [g.op('Inverse', [blocks], {}, 'com.microsoft'), wu]);
  return g.op('ReduceSum', [g.op('Mul', [wu, solved]), g.ints([1, 2])], { keepdims: 0 });
}

function unitErrorsGraph(): Uint8Array {
  const g = new GraphBuilder();
  g.output(unitErrors(g, 'hinv', 'w'), 'errors');
  return g.encode([...doubles('hinv', 'w'), ['units', DataType.INT64], ['blocks', DataType.INT64]], doubles('errors'));
}

function productGraph(): Uint8Array {
  const g = new GraphBuilder();
  g.output(g.op('MatMul', ['a', 'b']), 'out');
  return g.encode(doubles('a', 'b'), doubles('out'));
}

function quadraticGraph(): Uint8Array {
  const g = new GraphBuilder();
  g.output(g.op('ReduceSum', [g.op('Mul', ['d', g.op('MatMul', ['c', 'd'])]), g.ints([0, 1])], { keepdims: 0 }), 'out');
  return g.encode(doubles('c', 'd'), doubles('out'));
}
