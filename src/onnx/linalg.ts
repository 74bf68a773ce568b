import { onnx } from 'onnx-proto';
import { DataType } from './dtype';
import { createSession, ort } from './runtime';

/**
 * Dense float64 linear algebra run by onnxruntime: the pruning engine's covariance inverses and
 * Optimal-Brain-Surgeon updates are matrix products of thousands of rows, which onnxruntime's
 * GEMM does at about a hundred times the speed of a JavaScript loop. Each kernel is a small
 * graph (standard ops plus `com.microsoft` Inverse for blocks of at most INVERSE_BASE rows),
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
   * The inverse of a symmetric positive definite n x n matrix (row-major). Above INVERSE_BASE
   * rows the matrix is padded with the identity to a multiple of INVERSE_BASE (its inverse is
   * the inverse padded the same way), so one session serves every size of a band.
   */
  async inverse(a: Float64Array, n: number): Promise<Float64Array> {
    if (n === 0) return new Float64Array(0);
    if (n <= INVERSE_BASE) {
      const session = await this.session('inverse', () => inverseGraph(n));
      return (await session.run({ a: f64(a, [n, n]) })).out.data as Float64Array;
    }
    const size = Math.ceil(n / INVERSE_BASE) * INVERSE_BASE;
    const padded = new Float64Array(size * size);
    for (let i = 0; i < n; i++) padded.set(a.subarray(i * n, (i + 1) * n), i * size);
    for (let i = n; i < size; i++) padded[i * size + i] = 1;
    const session = await this.session(`inverse ${size}`, () => inverseGraph(size));
    const out = (await session.run({ a: f64(padded, [size, size]) })).out.data as Float64Array;
    const result = new Float64Array(n * n);
    for (let i = 0; i < n; i++) result.set(out.subarray(i * size, i * size + n), i * n);
    return result;
  }

  /**
   * One Optimal-Brain-Surgeon removal of the rows `removed` (indices into m) from a layer whose
   * inverse Hessian is `hinv` (m x m) and weight `w` (m x n, one row per input channel): the
   * kept rows of the weight absorb what the removed ones did, and both shrink to the `kept`
   * rows (in that order). Also returns the removed block of the inverse Hessian and of the
   * weight, from which the error of the removal is computed, and the unit errors (as
   * `unitErrors`) of `units`, rows of the shrunk matrices, for the next removal.
   */
  async remove(
    hinv: Float64Array,
    w: Float64Array,
    m: number,
    n: number,
    removed: number[],
    kept: number[],
    units: number[][],
  ): Promise<{ hinv: Float64Array; w: Float64Array; hinvRemoved: Float64Array; wRemoved: Float64Array; errors: Float64Array }> {
    const session = await this.session('remove', removeGraph);
    const out = await session.run({ hinv: f64(hinv, [m, m]), w: f64(w, [m, n]), removed: i64(removed), kept: i64(kept), ...unitFeeds(units, kept.length) });
    return {
      hinv: out.hinvKept.data as Float64Array,
      w: out.wKept.data as Float64Array,
      hinvRemoved: out.hinvRemoved.data as Float64Array,
      wRemoved: out.wRemoved.data as Float64Array,
      errors: out.errors.data as Float64Array,
    };
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

/** Blocks up to this size are inverted by onnxruntime's own Inverse; larger ones by block recursion. */
const INVERSE_BASE = 256;

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

/**
 * The inverse of an n x n symmetric positive definite matrix by block recursion:
 * [A B; Bᵀ D]⁻¹ = [A⁻¹ + A⁻¹B S⁻¹ BᵀA⁻¹, −A⁻¹B S⁻¹; (…)ᵀ, S⁻¹] with S = D − BᵀA⁻¹B (positive
 * definite again), so all but the small blocks is matrix products.
 */
function inverseGraph(n: number): Uint8Array {
  const g = new GraphBuilder();
  const block = (x: string, r0: number, r1: number, c0: number, c1: number) => g.op('Slice', [x, g.ints([r0, c0]), g.ints([r1, c1]), g.ints([0, 1])]);
  const transpose = (x: string) => g.op('Transpose', [x], { perm: [1, 0] });
  const inv = (x: string, size: number): string => {
    if (size <= INVERSE_BASE) return g.op('Inverse', [x], {}, 'com.microsoft');
    const h = size >> 1;
    const ai = inv(block(x, 0, h, 0, h), h);
    const b = block(x, 0, h, h, size);
    const aib = g.op('MatMul', [ai, b]);
    const si = inv(g.op('Sub', [block(x, h, size, h, size), g.op('MatMul', [transpose(b), aib])]), size - h);
    const upperRight = g.op('Neg', [g.op('MatMul', [aib, si])]);
    const upperLeft = g.op('Sub', [ai, g.op('MatMul', [upperRight, transpose(aib)])]);
    const top = g.op('Concat', [upperLeft, upperRight], { axis: 1 });
    const bottom = g.op('Concat', [transpose(upperRight), si], { axis: 1 });
    return g.op('Concat', [top, bottom], { axis: 0 });
  };
  g.output(inv('a', n), 'out');
  return g.encode([['a', DataType.DOUBLE]], [['out', DataType.DOUBLE]]);
}

/** Gathers the removed columns of Hinv, the kept rows of them, and T = Hinv_kP · (Hinv_PP)⁻¹. */
function surgeon(g: GraphBuilder): { hp: string; hpp: string; wp: string; tk: string } {
  const hp = g.op('Gather', ['hinv', 'removed'], { axis: 1 });
  const hpp = g.op('Gather', [hp, 'removed'], { axis: 0 });
  const wp = g.op('Gather', ['w', 'removed'], { axis: 0 });
  const tk = g.op('MatMul', [g.op('Gather', [hp, 'kept'], { axis: 0 }), g.op('Inverse', [hpp], {}, 'com.microsoft')]);
  return { hp, hpp, wp, tk };
}

const SURGEON_INPUTS: [string, DataType][] = [
  ['hinv', DataType.DOUBLE],
  ['w', DataType.DOUBLE],
  ['removed', DataType.INT64],
  ['kept', DataType.INT64],
];

function removeGraph(): Uint8Array {
  const g = new GraphBuilder();
  const { hp, hpp, wp, tk } = surgeon(g);
  const hkk = g.op('Gather', [g.op('Gather', ['hinv', 'kept'], { axis: 0 }), 'kept'], { axis: 1 });
  const hpk = g.op('Gather', [hp, 'kept'], { axis: 0 });
  const hinvKept = g.op('Sub', [hkk, g.op('MatMul', [tk, g.op('Transpose', [hpk], { perm: [1, 0] })])]);
  const wKept = g.op('Sub', [g.op('Gather', ['w', 'kept'], { axis: 0 }), g.op('MatMul', [tk, wp])]);
  g.output(hinvKept, 'hinvKept');
  g.output(wKept, 'wKept');
  g.output(hpp, 'hinvRemoved');
  g.output(wp, 'wRemoved');
  g.output(unitErrors(g, hinvKept, wKept), 'errors');
  return g.encode(
    [...SURGEON_INPUTS, ['units', DataType.INT64], ['blocks', DataType.INT64]],
    [
      ['hinvKept', DataType.DOUBLE],
      ['wKept', DataType.DOUBLE],
      ['hinvRemoved', DataType.DOUBLE],
      ['wRemoved', DataType.DOUBLE],
      ['errors', DataType.DOUBLE],
    ],
  );
}

function refitGraph(): Uint8Array {
  const g = new GraphBuilder();
  const { wp, tk } = surgeon(g);
  g.output(g.op('Sub', [g.op('Gather', ['w', 'kept'], { axis: 0 }), g.op('MatMul', [tk, wp])]), 'wKept');
  return g.encode(SURGEON_INPUTS, [['wKept', DataType.DOUBLE]]);
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
  return g.encode(
    [
      ['hinv', DataType.DOUBLE],
      ['w', DataType.DOUBLE],
      ['units', DataType.INT64],
      ['blocks', DataType.INT64],
    ],
    [['errors', DataType.DOUBLE]],
  );
}

function quadraticGraph(): Uint8Array {
  const g = new GraphBuilder();
  g.output(g.op('ReduceSum', [g.op('Mul', ['d', g.op('MatMul', ['c', 'd'])]), g.ints([0, 1])], { keepdims: 0 }), 'out');
  return g.encode(
    [
      ['c', DataType.DOUBLE],
      ['d', DataType.DOUBLE],
    ],
    [['out', DataType.DOUBLE]],
  );
}
