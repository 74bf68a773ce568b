// Issue 8's table: size, latency and held-out quality for prune only, quantize only, and both.
// Usage: ts-node tools/bench/quantize.ts [model.onnx calibration-dir heldout-dir]...
// Prints JSON lines.
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { calibrationFeeds, loadCalibration } from '../../src/eval/calibration';
import { Evaluator } from '../../src/eval/evaluator';
import { OnnxModel } from '../../src/onnx/model';
import { writeModel } from '../../src/onnx/write';
import { pruneModel } from '../../src/prune';
import { quantizeModel } from '../../src/quantize';

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
    const pruned = (await pruneModel(base, { target: 0.3, structures: ['ffn', 'heads', 'channels'], importance: 'activation', compensate: 'reconstruct', calibration: calibrationFeeds(calibration) })).model;
    const variants: [string, () => Promise<OnnxModel>][] = [
      ['pruned 30 %', async () => pruned],
      ['int8', async () => (await quantizeModel(base, { bits: 8, calibration: calibrationFeeds(calibration) })).model],
      ['int4', async () => (await quantizeModel(base, { bits: 4, calibration: calibrationFeeds(calibration) })).model],
      ['pruned 30 % + int8', async () => (await quantizeModel(pruned, { bits: 8, calibration: calibrationFeeds(calibration) })).model],
      ['pruned 30 % + int4', async () => (await quantizeModel(pruned, { bits: 4, calibration: calibrationFeeds(calibration) })).model],
    ];
    const name = path.basename(file);
    console.log(JSON.stringify({ model: name, variant: 'base', bytes: evaluator.base.bytes, perplexity: evaluator.baseTask.perplexity }));
    for (const [label, make] of variants) {
      const out = path.join(tmp, `${label.replace(/\W+/g, '-')}-${name}`);
      writeModel(await make(), out);
      const ev = await evaluator.evaluate(OnnxModel.read(out));
      console.log(JSON.stringify({
        model: name,
        variant: label,
        bytes: ev.candidate.bytes,
        sizeRatio: evaluator.base.bytes / ev.candidate.bytes,
        perplexity: ev.values.candidate.perplexity,
        agreement: ev.values.candidate.agreement,
        speedup: ev.latency.speedup,
      }));
    }
    await evaluator.close();
  }
  fs.rmSync(tmp, { recursive: true, force: true });
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
