// `npm run bench -- matrix`: the example LLaMA's gate on one machine against the same gate split
// over 4 jobs (prune-gate run --job K/4, then merge), every process on 1 thread. The jobs run one
// after another here (2 cores cannot show 4 at once): a matrix's wall time is its longest job
// plus the merge. Prints JSON lines.
import { spawnSync } from 'child_process';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';

const ROOT = path.resolve(__dirname, '..', '..');
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'prune-gate-matrix-'));
const config = path.join(tmp, 'matrix.yml');
// The repository's example (prune-gate.yml) with the choices a plan needs fixed: the allocation
// and compensation its own measurement picks there (docs/measured.md), widths as allocated.
fs.writeFileSync(
  config,
  [
    `model: ${path.join(ROOT, 'examples/fortunes-llama/model.onnx')}`,
    `calibration: ${path.join(ROOT, 'calibration/fortunes-llama')}`,
    'prune: { target: auto, max-target: 0.5, steps: 5, structures: [ffn], importance: activation, allocation: uniform, compensate: reconstruct, align: 1 }',
    'gate:',
    '  perplexity: { max-increase: 15% }',
    '  agreement: { min: 0.8 }',
    '  size: { max-ratio: 0.75 }',
    'latency: { warmup: 2, runs: 5 }',
    'device: { threads: 1 }',
  ].join('\n'),
);
const cli = path.join(ROOT, 'bin', 'prune-gate.js');

function timed(args: string[]): { seconds: number; status: number | null; stdout: string } {
  const started = process.hrtime.bigint();
  const r = spawnSync(process.execPath, [cli, ...args], { cwd: ROOT, encoding: 'utf8', maxBuffer: 1 << 26 });
  return { seconds: Number(process.hrtime.bigint() - started) / 1e9, status: r.status, stdout: r.stdout };
}

const one = timed(['run', '--config', config, '--out', path.join(tmp, 'one'), '--json']);
const oneReport = JSON.parse(one.stdout) as { verdict: string; chosen_step: number; steps: unknown[] };
console.log(JSON.stringify({ run: 'one machine', seconds: one.seconds, status: one.status, verdict: oneReport.verdict, chosen: oneReport.chosen_step, steps: oneReport.steps.length }));
const jobs = [1, 2, 3, 4].map((k) => {
  const r = timed(['run', '--config', config, '--job', `${k}/4`, '--out', path.join(tmp, `job-${k}`)]);
  const partial = JSON.parse(fs.readFileSync(path.join(tmp, `job-${k}`, 'partial.json'), 'utf8')) as { evaluated: { samples: number; models: number } };
  console.log(JSON.stringify({ run: `job ${k}/4`, seconds: r.seconds, status: r.status, samples: partial.evaluated.samples, models: partial.evaluated.models }));
  return r.seconds;
});
const merge = timed(['merge', ...[1, 2, 3, 4].map((k) => path.join(tmp, `job-${k}`)), '--config', config, '--out', path.join(tmp, 'merged'), '--json']);
const merged = JSON.parse(merge.stdout) as { verdict: string; chosen_step: number; steps: unknown[] };
console.log(JSON.stringify({ run: 'merge', seconds: merge.seconds, status: merge.status, verdict: merged.verdict, chosen: merged.chosen_step, steps: merged.steps.length, longestJob: Math.max(...jobs), sameModel: fs.readFileSync(path.join(tmp, 'one', 'pruned.onnx')).equals(fs.readFileSync(path.join(tmp, 'merged', 'pruned.onnx'))) }));
fs.rmSync(tmp, { recursive: true, force: true });
