// `npm run bench -- matrix`: a gate on one machine against the same gate split over 4 jobs
// (prune-gate run --job K/4, then merge), every process on 1 thread. The jobs run one after
// another here (2 cores cannot show 4 at once): a matrix's wall time is its longest job plus the
// merge. Usage: matrix.ts [MODEL CALIBRATION STEPS MAX-TARGET COMPENSATE | CONFIG.yml]: without
// arguments the repository's example with every choice fixed; with them, that model (the larger
// generated one), or a config as it is. Prints JSON lines.
import { spawnSync } from 'child_process';
import * as crypto from 'crypto';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';

const ROOT = path.resolve(__dirname, '..', '..');
const givenConfig = process.argv[2]?.endsWith('.yml') ? path.resolve(process.argv[2]) : undefined;
const [modelArg, calibrationArg, stepsArg, maxTargetArg, compensateArg] = givenConfig ? [] : process.argv.slice(2);
const model = modelArg ?? path.join(ROOT, 'examples/fortunes-llama/model.onnx');
const calibration = calibrationArg ?? path.join(ROOT, 'calibration/fortunes-llama');
// The temporary folders sit beside the model: a large one's candidates need the disk it is on.
const tmp = fs.mkdtempSync(path.join(modelArg ? path.dirname(model) : os.tmpdir(), 'prune-gate-matrix-'));
// A given config runs as committed but on 1 thread: a copy beside it (its paths stay relative).
const config = givenConfig ? path.join(path.dirname(givenConfig), `.bench-matrix-${process.pid}.yml`) : path.join(tmp, 'matrix.yml');
if (givenConfig) fs.writeFileSync(config, `${fs.readFileSync(givenConfig, 'utf8')}\ndevice: { threads: 1 }\n`);
// The repository's example (prune-gate.yml) with the choices a plan needs fixed: the allocation
// and compensation its own measurement picks there (docs/measured.md), widths as allocated.
if (!givenConfig) fs.writeFileSync(
  config,
  [
    `model: ${model}`,
    `calibration: ${calibration}`,
    `prune: { target: auto, max-target: ${maxTargetArg ?? 0.5}, steps: ${stepsArg ?? 5}, structures: [ffn], importance: activation, allocation: uniform, compensate: ${compensateArg ?? 'reconstruct'}, align: 1 }`,
    'gate:',
    '  perplexity: { max-increase: 15% }',
    '  agreement: { min: 0.8 }',
    '  size: { max-ratio: 0.75 }',
    'latency: { warmup: 2, runs: 5 }',
    'device: { threads: 1 }',
  ].join('\n'),
);
const cli = path.join(ROOT, 'bin', 'prune-gate.js');

function timed(args: string[]): { seconds: number; status: number | null; stdout: string; stderr: string } {
  const started = process.hrtime.bigint();
  const r = spawnSync(process.execPath, [cli, ...args], { cwd: ROOT, encoding: 'utf8', maxBuffer: 1 << 26 });
  return { seconds: Number(process.hrtime.bigint() - started) / 1e9, status: r.status, stdout: r.stdout, stderr: r.stderr };
}

/** sha256 of the pruned model and its external data, streamed (a large one's data is GBs). */
function digest(dir: string): string {
  const hash = crypto.createHash('sha256');
  for (const f of ['pruned.onnx', 'pruned.onnx.data'].map((n) => path.join(dir, n)).filter((f) => fs.existsSync(f))) {
    const fd = fs.openSync(f, 'r');
    const buffer = Buffer.allocUnsafe(1 << 24);
    for (let n; (n = fs.readSync(fd, buffer, 0, buffer.length, null)) > 0; ) hash.update(buffer.subarray(0, n));
    fs.closeSync(fd);
  }
  return hash.digest('hex');
}

const label = givenConfig ? `${path.basename(model)}, ${path.relative(ROOT, givenConfig)} as committed` : path.basename(model);
try {
  const one = timed(['run', '--config', config, '--out', path.join(tmp, 'one'), '--json']);
  const oneReport = JSON.parse(one.stdout) as { verdict: string; chosen_step: number; steps: unknown[]; calibration: { samples: number } };
  const samples = oneReport.calibration.samples;
  console.log(JSON.stringify({ model: label, run: 'one machine', seconds: one.seconds, status: one.status, verdict: oneReport.verdict, chosen: oneReport.chosen_step, steps: oneReport.steps.length, samples }));
  const oneDigest = digest(path.join(tmp, 'one'));
  fs.rmSync(path.join(tmp, 'one'), { recursive: true, force: true });
  const jobs = [1, 2, 3, 4].map((k) => {
    const r = timed(['run', '--config', config, '--job', `${k}/4`, '--out', path.join(tmp, `job-${k}`)]);
    const partial = JSON.parse(fs.readFileSync(path.join(tmp, `job-${k}`, 'partial.json'), 'utf8')) as { evaluated: { samples: number; models: number }; passes?: { bytes: number; passes: number; kept: number } };
    console.log(JSON.stringify({ model: label, run: `job ${k}/4`, seconds: r.seconds, status: r.status, samples: partial.evaluated.samples, of: samples, models: partial.evaluated.models, passes: partial.passes ?? null }));
    return r.seconds;
  });
  const dirs = [1, 2, 3, 4].map((k) => path.join(tmp, `job-${k}`));
  const merge = timed(['merge', ...dirs, '--config', config, '--out', path.join(tmp, 'merged'), '--json']);
  const merged = JSON.parse(merge.stdout) as { verdict: string; chosen_step: number; steps: unknown[] };
  const replayed = /rebuilt the candidates with (\d+) passes over the calibration set replayed from job 1(?: and (\d+) run here)?/.exec(merge.stderr);
  console.log(
    JSON.stringify({
      model: label,
      run: 'merge',
      seconds: merge.seconds,
      status: merge.status,
      verdict: merged.verdict,
      chosen: merged.chosen_step,
      steps: merged.steps.length,
      replayed: replayed ? Number(replayed[1]) : 0,
      ranHere: replayed?.[2] ? Number(replayed[2]) : 0,
      longestJob: Math.max(...jobs),
      sameModel: digest(path.join(tmp, 'merged')) === oneDigest,
    }),
  );
  // The merge without job 1's record: the pruning's passes run again (what it cost before the record).
  fs.rmSync(path.join(tmp, 'merged'), { recursive: true, force: true });
  fs.rmSync(path.join(tmp, 'job-1', 'passes.bin'));
  const bare = timed(['merge', ...dirs, '--config', config, '--out', path.join(tmp, 'merged'), '--json']);
  console.log(JSON.stringify({ model: label, run: 'merge, passes run again', seconds: bare.seconds, status: bare.status, sameModel: digest(path.join(tmp, 'merged')) === oneDigest }));
} finally {
  fs.rmSync(tmp, { recursive: true, force: true });
  if (givenConfig) fs.rmSync(config, { force: true });
}
