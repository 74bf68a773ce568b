// The memory metric is each model's own peak RSS: its process's peak less the peak of the same
// process without a model, which is measured once for the feeds and threads; the size of the
// process that measures does not count; a ratio bound on a base too small to measure is refused
// in one line; the report says what the figures are net of. The bench's independent estimate
// (tools/bench/memory-estimate.ts) counts what a hand count of the same graph gives.
import * as path from 'path';
import { onnx } from 'onnx-proto';
import { Batch, batches, loadCalibration } from '../src/eval/calibration';
import { ModelMemory, checkRatioMeasurable, measureMemory, netMemory } from '../src/eval/memory';
import { traceModel } from '../src/graph/trace';
import { OnnxModel } from '../src/onnx/model';
import { floatWeightBytes } from '../src/onnx/skeleton';
import { ort } from '../src/onnx/runtime';
import { buildReport } from '../src/report/build';
import { renderMarkdown } from '../src/report/markdown';
import { ReportSchema } from '../src/report/schema';
import { estimateRunMemory, traceAtBatch, withRows } from '../tools/bench/memory-estimate';
import { T, floatTensor, model, node, valueInfo } from './helpers/onnx-builders';

const ROOT = path.resolve(__dirname, '..');
const MIB = 2 ** 20;

describe('netMemory: the model process peak less the one without a model', () => {
  test('the difference of the medians of their runs, and the spread of the runs without a model', () => {
    expect(netMemory([90, 95, 91], [78, 80, 79, 78.5, 79.5])).toEqual({ net: 12, peak: 91, runtime: 79, spread: 2 });
    expect(netMemory([10, 12], [1, 3])).toEqual({ net: 9, peak: 11, runtime: 2, spread: 2 });
  });

  test('a model whose process peaks no higher nets 0, never a negative figure', () => {
    expect(netMemory([78.9], [79, 79.2, 78.8])).toMatchObject({ net: 0, peak: 78.9, runtime: 79 });
    expect(netMemory([79], [79])).toMatchObject({ net: 0, spread: 0 });
  });

  test('no runs is a bug, not a figure', () => {
    expect(() => netMemory([], [79])).toThrow(/internal/);
    expect(() => netMemory([80], [])).toThrow(/internal/);
  });
});

describe('checkRatioMeasurable: a max-ratio needs a base that nets more than the runs without a model differ by', () => {
  const base = (net: number, spread: number): ModelMemory => ({ net, peak: 79 + net, runtime: 79, spread });

  test('within the spread (or 0) is refused in one line naming the file and what to do', () => {
    for (const [net, spread] of [
      [0.1, 0.4],
      [0.4, 0.4],
      [0, 0],
    ]) {
      let message = '';
      try {
        checkRatioMeasurable(base(net, spread), path.join(process.cwd(), 'models', 'tiny.onnx'));
      } catch (e) {
        expect((e as Error).name).toBe('UserError');
        message = (e as Error).message;
      }
      expect(message).toMatch(/^gate\.memory: max-ratio is a ratio of the base model's own memory, and models\/tiny\.onnx peaked at [\d.]+ MiB against 79\.00 MiB without a model, within the [\d.]+ MiB that runs without a model differ by: the ratio would be noise; bound memory with max instead$/);
    }
  });

  test('above the spread passes', () => {
    expect(() => checkRatioMeasurable(base(0.5, 0.4), 'm.onnx')).not.toThrow();
  });
});

function firstBatch(fixture: string): { file: string; model: OnnxModel; feeds: Batch['feeds'] } {
  const file = path.join(ROOT, 'test', 'fixtures', `${fixture}.onnx`);
  const m = OnnxModel.read(file);
  return { file, model: m, feeds: (batches(loadCalibration(path.join(ROOT, 'calibration', fixture), m)).next().value as Batch).feeds };
}

test('measureMemory: the model holds its weights on top of a runtime measured once, whatever the size of the measuring process', async () => {
  const { file, model: m, feeds } = firstBatch('gpt2');
  const first = await measureMemory(file, feeds, 1);
  // Node.js with onnxruntime holds tens of MiB by itself; the figure is the model's own: at least
  // its weights, and far below the runtime for a model of half a MiB.
  expect(first.runtime).toBeGreaterThan(20);
  expect(first.net).toBeCloseTo(first.peak - first.runtime, 9);
  expect(first.net).toBeGreaterThan(floatWeightBytes(m) / MIB);
  expect(first.net).toBeLessThan(first.runtime / 4);
  // The process without a model is not measured again for the same feeds and threads: the same
  // figure, while the model's runs are made anew.
  const again = await measureMemory(file, feeds, 1);
  expect([again.runtime, again.spread]).toEqual([first.runtime, first.spread]);
  // The measuring process holding 768 MiB more does not change the model's process peak (a
  // child's getrusage maxrss would start at its parent's resident size).
  const ballast = Buffer.alloc(768 * MIB, 1);
  const ballasted = await measureMemory(file, feeds, 1);
  expect(ballast[ballast.length - 1]).toBe(1);
  expect(ballasted.peak).toBeLessThan(first.peak + 8);
});

test('report.json gives the peaks the memory figures are net of, and report.md says so under the metrics', () => {
  const report = buildReport({
    verdict: 'pass',
    task: 'classification',
    target: 0.3,
    quantize: 'none',
    base: { path: 'm.onnx', params: 10, bytes: 100, macs: 10 },
    candidate: { path: 'p.onnx', params: 7, bytes: 70, macs: 7 },
    metrics: [{ name: 'memory', base: 2.5, candidate: 2.0, bound: 2.25, rule: 'max-ratio 0.9', pass: true }],
    latency: { base: { p50_ms: 1, p95_ms: 1 }, candidate: { p50_ms: 1, p95_ms: 1 }, speedup: 1 },
    steps: [],
    chosenStep: null,
    pruned: [],
    skipped: [],
    memory: { runtime: 78.25, spread: 0.3, base: 80.75, candidate: 80.25 },
  });
  expect(ReportSchema.parse(JSON.parse(JSON.stringify(report))).memory).toEqual({ runtime_mib: 78.25, spread_mib: 0.3, base_peak_mib: 80.75, candidate_peak_mib: 80.25 });
  const md = renderMarkdown(report);
  expect(md).toMatch(/\| memory \| 2\.50 MiB \| 2\.00 MiB \|[^\n]*\n\n<sub>memory: each model's own peak RSS, net of the 78\.3 MiB the same process \(Node\.js, onnxruntime, the batch's inputs\) peaks at without a model \(its runs differ by 0\.300 MiB\); with the base it peaked at 80\.8 MiB, with the candidate at 80\.3 MiB\.<\/sub>/);
  // Without a memory bound there is no memory figure and no note.
  expect(renderMarkdown({ ...report, memory: undefined, metrics: [] })).not.toContain('memory:');
});

describe("the bench's estimate of what a run holds", () => {
  // x[B, 4] -> MatMul w1[4, 8] -> Relu -> MatMul w2[8, 2] -> y, w2 stored in float16 behind a Cast.
  function chain(): OnnxModel {
    const half = new Uint16Array(16).fill(0x3c00); // 1.0
    const w2 = onnx.TensorProto.create({ name: 'w2_fp16', dataType: T.FLOAT16, dims: [8, 2], rawData: new Uint8Array(half.buffer) });
    const to = onnx.AttributeProto.create({ name: 'to', type: onnx.AttributeProto.AttributeType.INT, i: T.FLOAT });
    return OnnxModel.fromProto(
      model({
        nodes: [node('Cast', ['w2_fp16'], ['w2'], [to]), node('MatMul', ['x', 'w1'], ['h']), node('Relu', ['h'], ['r']), node('MatMul', ['r', 'w2'], ['y'])],
        inputs: [valueInfo('x', T.FLOAT, ['batch', 4])],
        outputs: [valueInfo('y', T.FLOAT, ['batch', 2])],
        initializers: [floatTensor('w1', [4, 8]), w2],
      }),
    );
  }

  test('weights as held (the float16 weight as float32), live activations at their peak, and the weights as stored while the session is made', async () => {
    const m = chain();
    const feeds = { x: new ort.Tensor('float32', new Float32Array(3 * 4), [3, 4]) };
    const e = estimateRunMemory(m, await traceModel(m, feeds));
    // Held: w1 (32 floats) and w2 widened (16 floats); folded: w2 made by the Cast at load.
    expect([e.weights, e.folded]).toEqual([(32 + 16) * 4, 16 * 4]);
    expect(e.stored).toBe(32 * 4 + 16 * 2);
    // At the Relu both h and r [3, 8] are alive; at the last MatMul r and y (3 x 2): 96 bytes.
    expect(e.activations).toBe(2 * 3 * 8 * 4);
    expect(e.nodes).toBe(3); // the Cast of a constant is folded, not run
    expect(e.total).toBe(Math.max(e.stored + e.folded, e.weights + e.activations));
  });

  test('the trace of a batch extrapolated from one and two of its samples is the trace of the batch', async () => {
    const { model: m, feeds } = firstBatch('gpt2');
    const batch = withRows(feeds, 5);
    const direct = await traceModel(m, batch);
    const extrapolated = await traceAtBatch(m, batch);
    for (const n of m.graph.node) for (const o of n.output ?? []) expect([o, extrapolated.get(o)?.dims]).toEqual([o, direct.get(o)?.dims]);
    expect(estimateRunMemory(m, extrapolated)).toEqual(estimateRunMemory(m, direct));
  });
});
