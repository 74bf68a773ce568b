// One latency measurement in a fresh process (as a CI job is one), for `npm run bench -- latency`.
// Prints one JSON line. Usage: node -r ts-node/register/transpile-only tools/bench/latency.ts
//   gate CONFIG OUT                      the whole gate as the config runs it: the kept step's latency
//   harness BASE CANDIDATE CALIBRATION N an independent timing: N alternated runs of each model
//                                        on the first calibration batch, ratio of the medians
import * as ort from 'onnxruntime-node';
import { loadConfig } from '../../src/config/config';
import { batches, loadCalibration } from '../../src/eval/calibration';
import { OnnxModel } from '../../src/onnx/model';
import { runGate } from '../../src/pipeline/run';

async function gate(configFile: string, out: string) {
  const started = performance.now();
  const { report } = await runGate({ config: loadConfig(configFile), out });
  const rows = report.metrics.filter((m) => m.name.startsWith('latency-') && m.rule !== null);
  const latencyVerdict = rows.some((m) => m.inconclusive) ? 'inconclusive' : rows.every((m) => m.pass) ? 'pass' : 'fail';
  console.log(
    JSON.stringify({
      task: 'gate',
      verdict: report.verdict,
      latencyVerdict,
      chosenStep: report.chosen_step,
      ratio: report.latency.ratio,
      interval: report.latency.interval,
      runs: report.latency.runs,
      seconds: report.latency.seconds,
      warnings: report.latency.warnings,
      gateSeconds: (performance.now() - started) / 1000,
      // Each step's latency verdict, as the search judged it.
      steps: report.steps.map((s) => {
        const m = s.metrics.find((x) => x.name === 'latency-p50');
        return m?.inconclusive ? 'inconclusive' : m?.pass ? 'pass' : 'fail';
      }),
    }),
  );
}

/**
 * Timing written apart from src/eval/latency.ts, so a mistake there does not repeat here: plain
 * onnxruntime sessions with the options the tool's sessions have (no spinning thread pool, every
 * core), five untimed runs of each, then `n` of each alternated (which goes first alternating
 * too), performance.now() around each run, and the ratio of the two medians (base / candidate).
 */
async function harness(baseFile: string, candidateFile: string, calibration: string, n: number) {
  const options: ort.InferenceSession.SessionOptions = { logSeverityLevel: 4, extra: { session: { 'intra_op.allow_spinning': '0' } } };
  const set = loadCalibration(calibration, OnnxModel.read(baseFile));
  const feeds = batches(set).next().value!.feeds;
  const base = await ort.InferenceSession.create(baseFile, options);
  const candidate = await ort.InferenceSession.create(candidateFile, options);
  const time = async (s: ort.InferenceSession) => {
    const t0 = performance.now();
    await s.run(feeds);
    return performance.now() - t0;
  };
  for (let i = 0; i < 5; i++) {
    await base.run(feeds);
    await candidate.run(feeds);
  }
  const b: number[] = [];
  const c: number[] = [];
  for (let i = 0; i < n; i++) {
    if (i % 2 === 0) {
      b.push(await time(base));
      c.push(await time(candidate));
    } else {
      c.push(await time(candidate));
      b.push(await time(base));
    }
  }
  const median = (v: number[]) => {
    const s = [...v].sort((x, y) => x - y);
    return s.length % 2 ? s[(s.length - 1) / 2] : (s[s.length / 2 - 1] + s[s.length / 2]) / 2;
  };
  console.log(JSON.stringify({ task: 'harness', runs: n, baseMs: median(b), candidateMs: median(c), ratio: median(b) / median(c) }));
}

async function main() {
  const [task, ...args] = process.argv.slice(2);
  if (task === 'gate') return gate(args[0], args[1]);
  if (task === 'harness') return harness(args[0], args[1], args[2], Number(args[3]));
  throw new Error(`unknown task ${task}: gate or harness`);
}

main().catch((e) => {
  console.error(e);
  process.exitCode = 1;
});
