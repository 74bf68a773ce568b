// `npm run bench -- int4-methods`: issue 29's calibrated int4, on the LM fixtures. For each model:
// held-out perplexity of the model pruned 30 % (as `quantization` prunes it), then quantized to
// int4 by round-to-nearest, GPTQ and auto (the default), with the file sizes and each method's
// mean calibration output error; and the unpruned model at int8 (auto) against float.
// Usage: ts-node tools/bench/int4-methods.ts [model.onnx calibration-dir heldout-dir]...
// Prints JSON lines.
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { calibrationFeeds, loadCalibration } from '../../src/eval/calibration';
import { Evaluator } from '../../src/eval/evaluator';
import { OnnxModel } from '../../src/onnx/model';
import { writeModel } from '../../src/onnx/write';
import { pruneModel } from '../../src/prune';
import { quantizeArtifact } from '../../src/pipeline/run';
import type { QuantizeMethod } from '../../src/quantize/options';
import { languageModelSets } from './lm-sets';

const emit = (row: Record<string, unknown>) => console.log(JSON.stringify(row));

async function main() {
  const sets = languageModelSets(process.argv.slice(2));
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'prune-gate-int4-'));
  try {
    for (const [file, cal, held] of sets) {
      const name = path.basename(file, '.onnx');
      const base = OnnxModel.read(file);
      const calibration = loadCalibration(cal, base);
      const evaluator = await Evaluator.create(base, loadCalibration(held, base), {});
      const pruned = (await pruneModel(base, { target: 0.3, structures: ['ffn'], steps: 3, importance: 'activation', compensate: 'reconstruct', calibration: calibrationFeeds(calibration) })).model;
      const measure = async (variant: string, model: OnnxModel, extra: Record<string, unknown> = {}) => {
        const out = path.join(tmp, `${name}-${variant.replace(/\W+/g, '-')}.onnx`);
        writeModel(model, out);
        const ev = await evaluator.evaluate(OnnxModel.read(out));
        emit({ model: name, variant, bytes: ev.candidate.bytes, perplexity: ev.values.candidate.perplexity, ...extra });
      };
      emit({ model: name, variant: 'float', bytes: evaluator.base.bytes, perplexity: evaluator.baseTask.perplexity });
      await measure('pruned 30 %', pruned);
      for (const method of ['rtn', 'gptq', 'auto'] as QuantizeMethod[]) {
        const started = Date.now();
        const q = await quantizeArtifact(pruned, 'int4', { calibration: calibrationFeeds(calibration), method });
        const m = q.quantization.method;
        await measure(`pruned 30 % + int4 ${method}`, q.model, {
          method,
          seconds: (Date.now() - started) / 1000,
          ...(m ? { used: m.used, calibrationError: m.calibration_error, rtnCalibrationError: m.rtn_calibration_error } : {}),
        });
      }
      await measure('int8', (await quantizeArtifact(base, 'int8', { calibration: calibrationFeeds(calibration) })).model);
      await evaluator.close();
    }
  } finally {
    fs.rmSync(tmp, { recursive: true, force: true });
  }
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
