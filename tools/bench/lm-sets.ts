// The language models the quantization benches read: (model, calibration, held-out) triples from
// the command line, else the gpt2 and llama fixtures with their sets.
import * as path from 'path';

const ROOT = path.resolve(__dirname, '..', '..');

export function languageModelSets(args: readonly string[]): [string, string, string][] {
  const sets: [string, string, string][] = [];
  for (let i = 0; i + 2 < args.length; i += 3) sets.push([args[i], args[i + 1], args[i + 2]]);
  if (sets.length === 0) {
    for (const name of ['gpt2', 'llama']) {
      sets.push([path.join(ROOT, 'test/fixtures', `${name}.onnx`), path.join(ROOT, 'calibration', name), path.join(ROOT, 'bench/heldout', name)]);
    }
  }
  return sets;
}
