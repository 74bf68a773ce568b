/**
 * Calibration-aware exceptions: the output error of every quantized layer, measured on the real
 * activations, and the few layers whose error stands out, which get more bits or stay float.
 */
import { onnx } from 'onnx-proto';
import { halfToFloat } from '../onnx/dtype';
import { OnnxModel } from '../onnx/model';
import { runInPieces } from '../onnx/pieces';
import { Feeds, ort, sessionForProto } from '../onnx/runtime';
import { Candidate } from './formats';
import { CheckedOptions, KEEP_FLOAT_MIN_ERROR } from './options';
import { addMsOpset } from './rewrite';

/** Quantized layers compared per calibration pass (bounds the activations held at once). */
const PROBE_CHUNK = 32;

export interface KeptFloatLayer {
  node: string;
  reason: string;
  error?: number;
}

export function formatError(e: number | undefined): string {
  return e === undefined ? 'not measured' : `relative error ${e.toPrecision(3)}`;
}

function medianOf(values: number[]): number {
  const s = [...values].sort((a, b) => a - b);
  if (s.length === 0) return 0;
  const mid = s.length >> 1;
  return s.length % 2 ? s[mid] : (s[mid - 1] + s[mid]) / 2;
}

/**
 * Measures every candidate's error and picks the exceptions: up to `keepFloat` layers with the
 * largest error, those that stand out (`keepFloatRatio` times the median layer's) and matter on
 * their own (at least 2 %). At 4 bits an exception is first tried at 8 bits, measured the same
 * way, and stored so when that brings it under 2 %; the others stay float. Edits `candidates`
 * in place (an exception at 8 bits replaces its 4-bit candidate; a float one leaves the list)
 * and returns the layers kept float.
 */
export async function chooseExceptions(
  work: OnnxModel,
  candidates: Candidate[],
  opts: CheckedOptions,
  calibration: () => Iterable<Feeds> | AsyncIterable<Feeds>,
  log: (line: string) => void,
): Promise<KeptFloatLayer[]> {
  const keptFloat: KeptFloatLayer[] = [];
  const measure = (list: Candidate[]) => measureCandidates(work, list, opts, calibration, log);
  // Layers whose method was chosen by measurement (./method.ts) are measured already.
  await measure(candidates.filter((c) => c.error === undefined));
  const ranked = [...candidates].sort((a, b) => (b.error ?? 0) - (a.error ?? 0));
  // The median at round-to-nearest's errors: what 4 bits cost this model's layers. Against GPTQ's
  // lower median, a layer it improved less than the others would become an exception, stored in
  // more bytes than round-to-nearest's file (docs/quantization.md).
  const median = medianOf(ranked.map((c) => c.rtnError ?? c.error ?? 0));
  // An exception must stand out from the other layers and matter on its own: at int8 every
  // layer's error is a fraction of a percent, and a float layer would cost bytes for nothing.
  const keep = ranked
    .slice(0, opts.keepFloat)
    .filter((c) => (c.error ?? 0) > 0 && (c.error ?? 0) >= opts.keepFloatRatio * median && (c.error ?? 0) >= KEEP_FLOAT_MIN_ERROR);
  const measured = candidates.length;
  const reasons = new Map(
    keep.map((c, rank) => [c, `largest output error on the calibration data (${rank + 1} of ${measured}: ${formatError(c.error)}, ${(c.error! / median).toFixed(1)}x the median layer's${candidates.some((o) => o.rtnError !== undefined) ? ' rounded to nearest' : ''})`]),
  );
  const wider = new Map(opts.exceptions === 'int8' ? keep.flatMap((c) => (c.at8Bits ? [[c, c.at8Bits()] as const] : [])) : []);
  if (wider.size > 0) await measure([...wider.values()]);
  for (const c of keep) {
    const at8 = wider.get(c);
    if (at8 && (at8.error ?? Infinity) < KEEP_FLOAT_MIN_ERROR) {
      at8.exception = `${reasons.get(c)}; at 8 bits: ${formatError(at8.error)}`;
      candidates[candidates.indexOf(c)] = at8;
      continue;
    }
    keptFloat.push({ node: c.label, reason: reasons.get(c)!, error: c.error });
    candidates.splice(candidates.indexOf(c), 1);
  }
  return keptFloat;
}

/**
 * Measures `list`'s output errors in one pass (see measureErrors), recorded and replayed like the
 * pruning's statistics (util/passes.ts). An empty list costs nothing.
 */
export async function measureCandidates(
  work: OnnxModel,
  list: Candidate[],
  opts: CheckedOptions,
  calibration: () => Iterable<Feeds> | AsyncIterable<Feeds>,
  log: (line: string) => void,
): Promise<void> {
  if (list.length === 0) return;
  const errors = await opts.passes.pass(`quantization errors of ${list.map((c) => `${c.label}${c.method === 'gptq' ? ' (gptq)' : ''}`).join(', ')}`, async () => {
    await measureErrors(work, list, calibration, log, opts.pieceBytes);
    return list.map((c) => c.error);
  });
  list.forEach((c, i) => (c.error = errors[i]));
}

/**
 * Sets `error` on every candidate: ||Y - Ŷ|| / ||Y|| over the calibration batches, Y the float
 * layer's output and Ŷ its quantized twin's, both computed in one run from the same input (the
 * float model's activation), so each layer's error is its own, not accumulated from upstream.
 * Layers are probed `PROBE_CHUNK` at a time to bound the activations held per run. With
 * `pieceBytes`, each run is the model in float one piece at a time (onnx/pieces.ts), so no session
 * holds more than a piece's weights.
 */
async function measureErrors(
  work: OnnxModel,
  candidates: Candidate[],
  calibration: () => Iterable<Feeds> | AsyncIterable<Feeds>,
  log: (line: string) => void,
  pieceBytes?: number,
): Promise<void> {
  for (let start = 0; start < candidates.length; start += PROBE_CHUNK) {
    const chunk = candidates.slice(start, start + PROBE_CHUNK);
    const probe = work.clone();
    const graph = probe.graph;
    const pairs: [string, string][] = [];
    const shared = new Set<onnx.NodeProto>();
    for (const c of chunk) {
      const y = c.node.output[0];
      const twin = probe.uniqueName(`${y}__quantized`);
      for (const s of c.shared) shared.add(s);
      graph.node.push(...c.build([twin]));
      graph.output.push(onnx.ValueInfoProto.create({ name: twin }));
      if (!graph.output.some((o) => o.name === y)) graph.output.push(onnx.ValueInfoProto.create({ name: y }));
      pairs.push([y, twin]);
    }
    graph.node = [...shared, ...graph.node];
    addMsOpset(probe);
    const fetches = [...new Set(pairs.flat())];
    const session = pieceBytes ? undefined : await sessionForProto(work, probe.proto);
    const run = (feeds: Feeds) => (session ? session.run(feeds, fetches) : runInPieces(probe, feeds, fetches, pieceBytes!));
    const sums = chunk.map(() => ({ diff: 0, ref: 0 }));
    try {
      for await (const feeds of calibration()) {
        const out = await run(feeds);
        pairs.forEach(([y, twin], i) => {
          const a = floatData(out[y]);
          const b = floatData(out[twin]);
          let diff = 0;
          let ref = 0;
          for (let j = 0; j < a.length; j++) {
            diff += (a[j] - b[j]) ** 2;
            ref += a[j] * a[j];
          }
          sums[i].diff += diff;
          sums[i].ref += ref;
        });
      }
    } finally {
      await session?.release();
    }
    chunk.forEach((c, i) => {
      c.error = sums[i].ref > 0 ? Math.sqrt(sums[i].diff / sums[i].ref) : sums[i].diff > 0 ? Infinity : 0;
      log(`quantize: ${c.label} at ${c.bits} bits${c.method === 'gptq' ? ' (gptq)' : ''}: output ${formatError(c.error)}`);
    });
  }
}

function floatData(t: ort.Tensor): Float32Array | Float64Array {
  if (t.type === 'float16') return Float32Array.from(t.data as Uint16Array, halfToFloat);
  return t.data as Float32Array;
}
