/**
 * GPTQ's Hessians: H = Σ x xᵀ over the calibration inputs x (length K) of each MatMulNBits layer,
 * one pass over the calibration set for all of them (layers that read the same tensor, a
 * transformer's q, k and v, share one). onnxruntime computes each batch's XᵀX; only the K x K sums
 * leave it. This is the covariance the pruning engine's reconstruction collects
 * (src/prune/stats.ts); quantize and prune share a layer and do not import each other
 * (docs/architecture.md), and the quantized model is not the one pruning measured.
 */
import { onnx } from 'onnx-proto';
import { DataType } from '../onnx/dtype';
import { OnnxModel } from '../onnx/model';
import { Feeds, sessionForProto } from '../onnx/runtime';

export interface HessianRequest {
  /** The layer's input tensor, read with its last axis of `channels` (= K). */
  tensor: string;
  channels: number;
  /** Its element type is float16 (cast to float32 before the product). */
  float16: boolean;
}

/** Σ x xᵀ over every calibration batch, and over every other batch only (what a dampening is checked on: ./gptq.ts). */
export interface Hessian {
  full: Float64Array;
  half: Float64Array;
}

export async function collectHessians(
  model: OnnxModel,
  requests: HessianRequest[],
  calibration: () => Iterable<Feeds> | AsyncIterable<Feeds>,
): Promise<Map<string, Hessian>> {
  const wanted = new Map(requests.map((r) => [r.tensor, r]));
  const probe = model.clone();
  const graph = probe.graph;
  const names = probe.uniqueNames();
  const outputs = new Map<string, string>();
  const node = (opType: string, input: string[], attribute: onnx.IAttributeProto[] = []) => {
    const out = names('prune_gate_hessian');
    graph.node.push(onnx.NodeProto.create({ opType, name: out, input, output: [out], attribute }));
    return out;
  };
  for (const r of wanted.values()) {
    const shape = names('prune_gate_hessian_shape');
    probe.addInitializer(shape, { dtype: DataType.INT64, dims: [2], data: BigInt64Array.from([-1n, BigInt(r.channels)]) });
    let x = node('Reshape', [r.tensor, shape]);
    if (r.float16) x = node('Cast', [x], [onnx.AttributeProto.create({ name: 'to', type: onnx.AttributeProto.AttributeType.INT, i: DataType.FLOAT })]);
    const t = node('Transpose', [x], [onnx.AttributeProto.create({ name: 'perm', type: onnx.AttributeProto.AttributeType.INTS, ints: [1, 0] })]);
    const gram = node('MatMul', [t, x]);
    graph.output.push(onnx.ValueInfoProto.create({ name: gram }));
    outputs.set(r.tensor, gram);
  }
  const sums = new Map([...wanted.values()].map((r) => [r.tensor, { full: new Float64Array(r.channels * r.channels), half: new Float64Array(r.channels * r.channels) }]));
  // No memory arena: as the pruning's statistics pass, the K x K outputs are copied out at once.
  const session = await sessionForProto(probe, probe.proto, { enableCpuMemArena: false });
  try {
    const fetches = [...outputs.values()];
    let batch = 0;
    for await (const feeds of calibration()) {
      const out = await session.run(feeds, fetches);
      const odd = batch++ % 2 === 1;
      for (const [tensor, name] of outputs) {
        const { full, half } = sums.get(tensor)!;
        const g = out[name].data as Float32Array;
        for (let i = 0; i < g.length; i++) full[i] += g[i];
        if (odd) for (let i = 0; i < g.length; i++) half[i] += g[i];
      }
    }
  } finally {
    await session.release();
  }
  return sums;
}
