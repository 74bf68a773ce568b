// `npm run bench -- quantization`: size, latency and held-out quality for prune only, quantize
// only, and both. Latency twice: on one calibration batch (16 x 64 tokens), and on 1 x 8 tokens,
// the shape of generation, where weight-only quantization pays off on a CPU.
// Quantized files are the ones `run` writes (short intermediate names); their size with the
// exporter's names kept is reported next to it.
// Usage: ts-node tools/bench/quantize.ts [model.onnx calibration-dir heldout-dir]...
// Prints JSON lines.
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { calibrationFeeds, loadCalibration } from '../../src/eval/calibration';
import { Evaluator } from '../../src/eval/evaluator';
import { measureLatency } from '../../src/eval/latency';
import { createSession, ort } from '../../src/onnx/runtime';
import { OnnxModel } from '../../src/onnx/model';
import { writeModel } from '../../src/onnx/write';
import { pruneModel } from '../../src/prune';
import { quantizeArtifact } from '../../src/pipeline/run';

const ROOT = path.resolve(__dirname, '..', '..');

async function main() {
  const args = process.argv.slice(2);
  const sets: [string, string, string][] = [];
  for (let i = 0; i + 2 < args.length; i += 3) sets.push([args[i], args[i + 1], args[i + 2]]);
  if (sets.length === 0) {
    for (const name of ['gpt2', 'llama']) {
      sets.push([path.join(ROOT, 'test/fixtures', `${name}.onnx`), path.join(ROOT, 'calibration', name), path.join(ROOT, 'bench/heldout', name)]);
    }
  }
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'prune-gate-qbench-'));
  for (const [file, cal, held] of sets) {
    const base = OnnxModel.read(file);
    const calibration = loadCalibration(cal, base);
    const heldOut = loadCalibration(held, base);
    const evaluator = await Evaluator.create(base, heldOut, { latency: { warmup: 3, runs: 10 } });
    // As the example's config prunes: FFN neurons in three gradual steps (heads cost the GQA models far more).
    const pruned = (await pruneModel(base, { target: 0.3, structures: ['ffn'], steps: 3, importance: 'activation', compensate: 'reconstruct', calibration: calibrationFeeds(calibration) })).model;
    // Quantized variants are what `run` ships (quantizeArtifact: short intermediate names); the
    // same model with the exporter's names kept is written too, for its size.
    const quantize = (model: OnnxModel, mode: 'int8' | 'int4', keepNames = false) =>
      quantizeArtifact(model, mode, { calibration: calibrationFeeds(calibration), keepNames }).then((r) => r.model);
    const variants: [string, (keepNames?: boolean) => Promise<OnnxModel>, boolean][] = [
      ['pruned 30 %', async () => pruned, false],
      ['int8', (k) => quantize(base, 'int8', k), true],
      ['int4', (k) => quantize(base, 'int4', k), true],
      ['pruned 30 % + int8', (k) => quantize(pruned, 'int8', k), true],
      ['pruned 30 % + int4', (k) => quantize(pruned, 'int4', k), true],
    ];
    const name = path.basename(file);
    console.log(JSON.stringify({ model: name, variant: 'base', bytes: evaluator.base.bytes, perplexity: evaluator.baseTask.perplexity }));
    for (const [label, make, quantized] of variants) {
      const out = path.join(tmp, `${label.replace(/\W+/g, '-')}-${name}`);
      writeModel(await make(), out);
      let bytesNamesKept: number | undefined;
      if (quantized) {
        const kept = path.join(tmp, `names-kept-${path.basename(out)}`);
        writeModel(await make(true), kept);
        bytesNamesKept = fs.statSync(kept).size;
      }
      const candidate = OnnxModel.read(out);
      const ev = await evaluator.evaluate(candidate);
      const speedupGeneration = await generationSpeedup(base, candidate);
      console.log(JSON.stringify({
        model: name,
        variant: label,
        bytes: ev.candidate.bytes,
        sizeRatio: evaluator.base.bytes / ev.candidate.bytes,
        ...(bytesNamesKept ? { bytesNamesKept, sizeRatioNamesKept: evaluator.base.bytes / bytesNamesKept } : {}),
        perplexity: ev.values.candidate.perplexity,
        agreement: ev.values.candidate.agreement,
        speedup: ev.latency.speedup,
        speedupGeneration,
      }));
    }
    await evaluator.close();
  }
  fs.rmSync(tmp, { recursive: true, force: true });
}

/** base p50 / candidate p50 on one sequence of 8 tokens, runs alternated. */
async function generationSpeedup(base: OnnxModel, candidate: OnnxModel): Promise<number> {
  const ids = new BigInt64Array(8).map((_, i) => BigInt((i * 37 + 11) % 200));
  const feeds = { input_ids: new ort.Tensor('int64', ids, [1, 8]) };
  const [b, c] = [await createSession(base), await createSession(candidate)];
  try {
    return (await measureLatency(b, c, feeds, { warmup: 5, runs: 40 })).speedup;
  } finally {
    await b.release();
    await c.release();
  }
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
