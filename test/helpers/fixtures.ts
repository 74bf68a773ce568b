// The exported fixture models (test/fixtures/*.onnx, made by tools/fixtures/export.py) and inputs
// with varied values for running them.
import * as fs from 'fs';
import * as path from 'path';
import { OnnxModel } from '../../src/onnx/model';
import { graphInputs, ort, ortType } from '../../src/onnx/runtime';

export const FIXTURES_DIR = path.resolve(__dirname, '..', 'fixtures');

export function fixtureFiles(): string[] {
  if (!fs.existsSync(FIXTURES_DIR)) return [];
  return fs
    .readdirSync(FIXTURES_DIR)
    .filter((f) => f.endsWith('.onnx'))
    .sort()
    .map((f) => path.join(FIXTURES_DIR, f));
}

/**
 * Inputs of `batch` samples: the first dynamic axis is the batch, other dynamic axes `length`.
 * Integer inputs are token ids below 100 (every fixture's vocabulary is larger); an input named
 * attention_mask masks the last position of every sample but the first.
 */
export function sampleFeeds(model: OnnxModel, batch: number, length: number): Record<string, ort.Tensor> {
  const feeds: Record<string, ort.Tensor> = {};
  for (const spec of graphInputs(model)) {
    let sawBatch = false;
    const dims = spec.dims.map((d) => {
      if (typeof d === 'number') return d;
      if (sawBatch) return length;
      sawBatch = true;
      return batch;
    });
    const n = dims.reduce((a, b) => a * b, 1);
    const type = ortType(spec.dtype);
    if (type === 'int64') {
      const data = new BigInt64Array(n);
      const last = dims[dims.length - 1];
      for (let i = 0; i < n; i++) {
        if (spec.name === 'attention_mask') data[i] = i >= last && i % last === last - 1 ? 0n : 1n;
        else data[i] = BigInt((i * 37 + 11) % 100);
      }
      feeds[spec.name] = new ort.Tensor('int64', data, dims);
    } else if (type === 'float32') {
      const data = new Float32Array(n);
      for (let i = 0; i < n; i++) data[i] = Math.sin(i * 1.618 + batch) * 0.8;
      feeds[spec.name] = new ort.Tensor('float32', data, dims);
    } else {
      throw new Error(`sampleFeeds: no sample data for ${spec.name} of type ${type}`);
    }
  }
  return feeds;
}

/**
 * The rows of the table an integer input indexes: the data of the Gather that reads it (through
 * Reshape, Cast and the like, as exporters write an embedding lookup), or undefined.
 */
function tableRows(model: OnnxModel, input: string): number | undefined {
  const passThrough = new Set(['Reshape', 'Cast', 'Unsqueeze', 'Squeeze', 'Flatten', 'Identity']);
  const seen = new Set<string>();
  const frontier = [input];
  while (frontier.length) {
    const name = frontier.pop()!;
    if (seen.has(name)) continue;
    seen.add(name);
    for (const n of model.graph.node) {
      if (n.opType === 'Gather' && n.input![1] === name) {
        const table = model.constantInfo(n.input![0]);
        const axis = Number(n.attribute?.find((a) => a.name === 'axis')?.i ?? 0);
        if (table) return table.dims[axis < 0 ? axis + table.dims.length : axis];
      } else if (passThrough.has(n.opType ?? '') && n.input![0] === name) frontier.push(...n.output!);
    }
  }
  return undefined;
}

/**
 * `feeds` with every integer input that indexes a table (token ids into an embedding) drawn
 * pseudo-randomly, and deterministically, from the whole table: with one id everywhere, a prune
 * that dropped or permuted rows of an embedding, or mixed up positions, could still compute the
 * same outputs.
 */
export function withVariedTokens(model: OnnxModel, feeds: Record<string, ort.Tensor>, seed = 12345): Record<string, ort.Tensor> {
  const out = { ...feeds };
  let state = seed;
  const next = () => (state = (state * 16807) % 2147483647) / 2147483647;
  for (const [name, t] of Object.entries(feeds)) {
    if (t.type !== 'int64' && t.type !== 'int32') continue;
    const rows = tableRows(model, name);
    if (rows === undefined) continue;
    const ids = Array.from({ length: t.size }, () => Math.floor(next() * rows));
    out[name] = t.type === 'int64' ? new ort.Tensor('int64', BigInt64Array.from(ids, BigInt), t.dims) : new ort.Tensor('int32', Int32Array.from(ids), t.dims);
  }
  return out;
}

/** The bytes of every output, to compare two runs bit for bit. */
export function outputBytes(results: Record<string, ort.Tensor>): Record<string, { dims: number[]; bytes: Buffer }> {
  const out: Record<string, { dims: number[]; bytes: Buffer }> = {};
  for (const [name, t] of Object.entries(results)) {
    const data = t.data as unknown as ArrayBufferView;
    out[name] = { dims: [...t.dims], bytes: Buffer.from(data.buffer, data.byteOffset, data.byteLength) };
  }
  return out;
}

/** Runs the file at `file` with onnxruntime reading it itself (ground truth, independent of our reader). */
export async function runFile(file: string, feeds: Record<string, ort.Tensor>) {
  const session = await ort.InferenceSession.create(file, { logSeverityLevel: 3 });
  try {
    return outputBytes(await session.run(feeds));
  } finally {
    await session.release();
  }
}

/** The two files give bit-identical outputs at two input sizes (so dynamic shapes count too). */
export async function expectSameOutputs(original: string, copy: string, model: OnnxModel) {
  for (const [batch, length] of [
    [1, 5],
    [3, 11],
  ]) {
    const feeds = sampleFeeds(model, batch, length);
    const expected = await runFile(original, feeds);
    const actual = await runFile(copy, feeds);
    expect(Object.keys(actual).sort()).toEqual(Object.keys(expected).sort());
    for (const name of Object.keys(expected)) {
      expect(actual[name].dims).toEqual(expected[name].dims);
      expect(expected[name].bytes.byteLength).toBeGreaterThan(0);
      // Bit-identical, not merely close.
      expect(actual[name].bytes.equals(expected[name].bytes)).toBe(true);
    }
  }
}
