import { halfToFloat, isFloatDType } from '../../src/onnx/dtype';
import { OnnxModel } from '../../src/onnx/model';
import { createSession, ort } from '../../src/onnx/runtime';
import { fromFloat32, toFloat32 } from '../../src/onnx/tensor';
import type { PruneResult } from '../../src/prune';

export async function outputsAt(m: OnnxModel, feeds: Record<string, ort.Tensor>): Promise<Record<string, ort.Tensor>> {
  const session = await createSession(m);
  try {
    return await session.run(feeds);
  } finally {
    await session.release();
  }
}

/** An output's values as numbers (float16 outputs are raw 16-bit patterns in onnxruntime's tensors). */
export function outputValues(t: ort.Tensor): number[] {
  if (t.type === 'float16') return Array.from(t.data as Uint16Array, halfToFloat);
  return Array.from(t.data as Float32Array, Number);
}

/** A copy of the base with the entries the prune removed set to zero. */
export function zeroedCopy(base: OnnxModel, result: PruneResult): OnnxModel {
  const zeroed = base.clone();
  for (const { tensor, axis, indices } of result.sliced ?? []) {
    const t = zeroed.constant(tensor)!;
    if (!isFloatDType(t.dtype)) continue;
    const values = toFloat32(t);
    const inner = t.dims.slice(axis + 1).reduce((a, b) => a * b, 1);
    const size = t.dims[axis];
    for (let i = 0; i < values.length; i++) if (indices.includes(Math.floor(i / inner) % size)) values[i] = 0;
    zeroed.setConstant(tensor, fromFloat32(values, t.dtype, t.dims));
  }
  return zeroed;
}

/** The base with the entries the prune removed zeroed computes what the pruned model does (within 1e-4 relative). */
export async function expectZeroedEqual(base: OnnxModel, result: PruneResult, feeds: Record<string, ort.Tensor>, got: Record<string, ort.Tensor>): Promise<void> {
  const reference = await outputsAt(zeroedCopy(base, result), feeds);
  for (const [name, t] of Object.entries(reference)) {
    const [a, b] = [outputValues(t), outputValues(got[name])];
    const scale = Math.max(1e-6, ...a.map(Math.abs));
    const worst = Math.max(...a.map((v, i) => Math.abs(v - b[i])));
    expect([name, worst / scale <= 1e-4]).toEqual([name, true]);
  }
}

