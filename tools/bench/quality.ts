// `npm run bench -- quality`: held-out quality of each trained fixture at 20 % and 40 % of parameters
// removed, by importance and compensation method. Prints JSON lines (one per row) on stdout.
import * as path from 'path';
import { calibrationFeeds, loadCalibration } from '../../src/eval/calibration';
import { Evaluator } from '../../src/eval/evaluator';
import { OnnxModel } from '../../src/onnx/model';
import { PruneOptions, pruneModel } from '../../src/prune';

const ROOT = path.resolve(__dirname, '..', '..');

export const METHODS: { label: string; importance: PruneOptions['importance']; compensate: PruneOptions['compensate']; steps?: number }[] = [
  { label: 'magnitude', importance: 'magnitude', compensate: 'none' },
  { label: 'activation', importance: 'activation', compensate: 'none' },
  { label: 'activation + bias', importance: 'activation', compensate: 'bias' },
  { label: 'activation + reconstruct', importance: 'activation', compensate: 'reconstruct' },
  { label: 'activation + bias, 4 steps', importance: 'activation', compensate: 'bias', steps: 4 },
];

async function main() {
  const names = process.argv.slice(2).length ? process.argv.slice(2) : ['gpt2', 'llama', 'bert', 'cnn', 'mlp'];
  for (const name of names) {
    const base = OnnxModel.read(path.join(ROOT, 'test', 'fixtures', `${name}.onnx`));
    const calibration = loadCalibration(path.join(ROOT, 'calibration', name), base);
    const heldOut = loadCalibration(path.join(ROOT, 'bench', 'heldout', name), base);
    const metric = calibration.task === 'language-model' ? 'perplexity' : 'accuracy';
    const evaluator = await Evaluator.create(base, heldOut, { latency: { warmup: 0, runs: 1 } });
    try {
      console.log(JSON.stringify({ name, metric, ratio: 0, method: 'base', value: evaluator.baseTask[metric], samples: heldOut.count }));
      for (const ratio of [0.2, 0.4]) {
        for (const m of METHODS) {
          const result = await pruneModel(base, {
            target: ratio,
            structures: ['ffn', 'heads', 'channels'],
            importance: m.importance,
            compensate: m.compensate,
            steps: m.steps,
            calibration: calibrationFeeds(calibration),
          });
          const values = (await evaluator.evaluate(result.model)).values.candidate;
          const removed = 1 - result.paramsAfter / result.paramsBefore;
          // KL to the base separates methods where accuracy saturates (the digit classifiers).
          console.log(JSON.stringify({ name, metric, ratio, method: m.label, value: values[metric], kl: values['kl-divergence'], removed }));
        }
      }
    } finally {
      await evaluator.close();
    }
  }
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
