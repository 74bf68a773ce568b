// `npm run bench -- cost` (child): what a gate costs against one `prune-gate eval` of the same
// model on the same set, side by side in one run, for one model: the command users run, timed
// as a whole (node's start included), with GNU time's peak resident set size. The eval compares
// the base with the model the gate wrote, before and after the gate (the mean is the reference).
// Prints one JSON line.
//
//   cost.ts NAME CONFIG
import { spawnSync } from 'child_process';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';

const ROOT = path.resolve(__dirname, '..', '..');
const CLI = path.join(ROOT, 'bin', 'prune-gate.js');

interface Timed {
  seconds: number;
  peakRssMb: number;
  status: number;
  stdout: string;
  stderr: string;
}

/** One command under GNU time (-f: elapsed seconds and peak RSS in KiB on stderr's last line). */
function timed(args: string[], cwd: string): Timed {
  const r = spawnSync('/usr/bin/time', ['-f', '%e %M', process.execPath, CLI, ...args], { cwd, encoding: 'utf8', maxBuffer: 1 << 28 });
  const lines = r.stderr.trimEnd().split('\n');
  const [seconds, kib] = lines[lines.length - 1].split(' ').map(Number);
  return { seconds, peakRssMb: kib / 1024, status: r.status ?? -1, stdout: r.stdout, stderr: lines.slice(0, -1).join('\n') };
}

function main(): void {
  const [name, configArg] = process.argv.slice(2);
  const config = path.resolve(configArg);
  const cwd = path.dirname(config);
  const out = fs.mkdtempSync(path.join(os.tmpdir(), `prune-gate-cost-${name}-`));
  try {
    const text = fs.readFileSync(config, 'utf8');
    const model = path.resolve(cwd, /^model:\s*(\S+)/m.exec(text)![1]);
    const calibration = path.resolve(cwd, /^calibration:\s*(\S+)/m.exec(text)![1]);
    const gate = timed(['run', '--config', config, '--out', out, '--json'], cwd);
    if (gate.status > 1) throw new Error(`${name}: the gate exited ${gate.status}: ${gate.stderr.slice(-2000)}`);
    const report = JSON.parse(gate.stdout) as {
      verdict: string;
      chosen_step: number;
      steps: { ratio: number; passes?: { what: string; seconds: number }[] }[];
      base: { params: number };
      candidate: { params: number };
      budget?: { seconds: number; spent: number; left_out: string[] };
    };
    const evalArgs = ['eval', '--base', model, '--candidate', path.join(out, 'pruned.onnx'), '--calibration', calibration];
    // One eval before and one after the gate's candidate exists would need two gates: the two
    // evals run right after the gate, one after the other, and their mean is the reference.
    const evals = [timed(evalArgs, cwd), timed(evalArgs, cwd)];
    const evalSeconds = (evals[0].seconds + evals[1].seconds) / 2;
    const passesPerStep = report.steps.map((s) => s.passes?.length ?? 0);
    console.log(
      JSON.stringify({
        name,
        params: report.base.params,
        gateSeconds: gate.seconds,
        gatePeakRssMb: gate.peakRssMb,
        evalSeconds: evals.map((e) => e.seconds),
        evalPeakRssMb: Math.max(...evals.map((e) => e.peakRssMb)),
        ratio: gate.seconds / evalSeconds,
        verdict: report.verdict,
        steps: report.steps.length,
        chosen: report.chosen_step,
        removed: 1 - report.candidate.params / report.base.params,
        passesPerStep,
        passSeconds: report.steps.map((s) => (s.passes ?? []).reduce((t, p) => t + p.seconds, 0)),
        budget: report.budget,
      }),
    );
  } finally {
    fs.rmSync(out, { recursive: true, force: true });
  }
}

main();
