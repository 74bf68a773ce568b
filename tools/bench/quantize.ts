// `npm run bench -- quantization`: size, latency and held-out quality for prune only, quantize
// only, and both, on language models; and Conv weights in float or int8 on the digits CNN.
// Quantized files are the ones `run` writes (short intermediate names); their size with the
// exporter's names kept is reported next to it. Latency twice: on one calibration batch, and on
// 1 x 8 tokens, the shape of generation, where weight-only quantization pays off on a CPU.
// Usage: ts-node tools/bench/quantize.ts [model.onnx calibration-dir heldout-dir]...
// Prints JSON lines.
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { calibrationFeeds, loadCalibration } from '../../src/eval/calibration';
import { Evaluator } from '../../src/eval/evaluator';
import { measureLatency } from '../../src/eval/latency';
import { OnnxModel } from '../../src/onnx/model';
import { createSession, ort } from '../../src/onnx/runtime';
import { writeModel } from '../../src/onnx/write';
import { pruneModel } from '../../src/prune';
import { quantizeModel } from '../../src/quantize';
import { quantizeArtifact } from '../../src/pipeline/run';
import type { ReportQuantization } from '../../src/report/schema';
import { languageModelSets } from './lm-sets';

const ROOT = path.resolve(__dirname, '..', '..');
const emit = (row: Record<string, unknown>) => console.log(JSON.stringify(row));
/** "fortunes-llama" for examples/fortunes-llama/model.onnx, "gpt2" for test/fixtures/gpt2.onnx. */
const modelName = (file: string) => (path.basename(file) === 'model.onnx' ? path.basename(path.dirname(file)) : path.basename(file, '.onnx'));

async function languageModels(sets: [string, string, string][], tmp: string) {
  for (const [file, cal, held] of sets) {
    const base = OnnxModel.read(file);
    const calibration = loadCalibration(cal, base);
    const heldOut = loadCalibration(held, base);
    const evaluator = await Evaluator.create(base, heldOut, { latency: { warmup: 3, runs: 10 } });
    // As the example's config prunes: FFN neurons in three gradual steps (heads cost the GQA models far more).
    const pruned = (await pruneModel(base, { target: 0.3, structures: ['ffn'], steps: 3, importance: 'activation', compensate: 'reconstruct', calibration: calibrationFeeds(calibration) })).model;
    const quantize = (model: OnnxModel, mode: 'int8' | 'int4', keepNames = false) =>
      quantizeArtifact(model, mode, { calibration: calibrationFeeds(calibration), keepNames });
    const variants: [string, (keepNames?: boolean) => Promise<{ model: OnnxModel; quantization?: ReportQuantization }>, boolean][] = [
      ['pruned 30 %', async () => ({ model: pruned }), false],
      ['int8', (k) => quantize(base, 'int8', k), true],
      ['int4', (k) => quantize(base, 'int4', k), true],
      ['pruned 30 % + int8', (k) => quantize(pruned, 'int8', k), true],
      ['pruned 30 % + int4', (k) => quantize(pruned, 'int4', k), true],
    ];
    const name = modelName(file);
    emit({ model: name, metric: 'perplexity', variant: 'base', bytes: evaluator.base.bytes, value: evaluator.baseTask.perplexity });
    for (const [label, make, quantized] of variants) {
      const out = path.join(tmp, `${label.replace(/\W+/g, '-')}-${name}.onnx`);
      const made = await make();
      writeModel(made.model, out);
      let bytesNamesKept: number | undefined;
      if (quantized) {
        const kept = path.join(tmp, `names-kept-${path.basename(out)}`);
        writeModel((await make(true)).model, kept);
        bytesNamesKept = fs.statSync(kept).size;
      }
      const candidate = OnnxModel.read(out);
      const ev = await evaluator.evaluate(candidate);
      emit({
        model: name,
        metric: 'perplexity',
        variant: label,
        bytes: ev.candidate.bytes,
        sizeRatio: evaluator.base.bytes / ev.candidate.bytes,
        ...(bytesNamesKept ? { bytesNamesKept, sizeRatioNamesKept: evaluator.base.bytes / bytesNamesKept } : {}),
        value: ev.values.candidate.perplexity,
        agreement: ev.values.candidate.agreement,
        speedup: ev.latency!.speedup,
        speedupGeneration: await speedupOn(base, candidate, tokens(1, 8)),
        exceptions: made.quantization?.exceptions ?? [],
      });
    }
    await evaluator.close();
  }
}

/** Conv weights in float (the default) or int8 behind a DequantizeLinear, on the digits CNN. */
async function convWeights(tmp: string) {
  const file = path.join(ROOT, 'examples', 'digits-cnn', 'model.onnx');
  const base = OnnxModel.read(file);
  const heldOut = loadCalibration(path.join(ROOT, 'examples', 'digits-cnn', 'heldout'), base);
  const evaluator = await Evaluator.create(base, heldOut, { latency: { warmup: 3, runs: 20 } });
  emit({ model: 'digits-cnn', metric: 'accuracy', variant: 'base', bytes: evaluator.base.bytes, value: evaluator.baseTask.accuracy });
  for (const conv of ['float', 'int8'] as const) {
    const out = path.join(tmp, `digits-conv-${conv}.onnx`);
    writeModel((await quantizeModel(base, { bits: 8, conv })).model, out);
    const ev = await evaluator.evaluate(OnnxModel.read(out));
    emit({
      model: 'digits-cnn',
      metric: 'accuracy',
      variant: conv === 'float' ? 'int8, Conv weights float (default)' : 'int8, Conv weights int8 (conv: int8)',
      bytes: ev.candidate.bytes,
      sizeRatio: evaluator.base.bytes / ev.candidate.bytes,
      value: ev.values.candidate.accuracy,
      agreement: ev.values.candidate.agreement,
      speedup: ev.latency!.speedup,
      exceptions: [],
    });
  }
  await evaluator.close();
}

function tokens(batch: number, length: number) {
  const ids = new BigInt64Array(batch * length).map((_, i) => BigInt((i * 37 + 11) % 200));
  return { input_ids: new ort.Tensor('int64', ids, [batch, length]) };
}

/** base p50 / candidate p50 on `feeds`, runs alternated. */
async function speedupOn(base: OnnxModel, candidate: OnnxModel, feeds: Record<string, ort.Tensor>): Promise<number> {
  const [b, c] = [await createSession(base), await createSession(candidate)];
  try {
    return (await measureLatency(b, c, feeds, { warmup: 5, runs: 40 })).speedup;
  } finally {
    await b.release();
    await c.release();
  }
}

async function main() {
  const sets = languageModelSets(process.argv.slice(2));
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'prune-gate-qbench-'));
  try {
    await languageModels(sets, tmp);
    await convWeights(tmp);
  } finally {
    fs.rmSync(tmp, { recursive: true, force: true });
  }
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
