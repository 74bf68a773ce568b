// `npm run bench -- examples`: the repository's two examples, as their configs gate them and as
// sweeps that evaluate every step, on the calibration set (what the gate sees) and on the
// held-out set (what it never sees). The figures quoted in the examples' configs, their READMEs
// and the README's examples table come from here. Prints JSON lines.
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { Config, loadConfig } from '../../src/config/config';
import { CalibrationSet, calibrationFeeds, loadCalibration } from '../../src/eval/calibration';
import { Evaluator } from '../../src/eval/evaluator';
import { MetricName } from '../../src/eval/metric-names';
import { OnnxModel } from '../../src/onnx/model';
import { QuantizeFn, quantizeArtifact, runGate } from '../../src/pipeline/run';

const ROOT = path.resolve(__dirname, '..', '..');
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'prune-gate-examples-'));

interface Example {
  name: string;
  config: string;
  heldout: string;
  /** The task's own metric. */
  metric: MetricName;
}

const EXAMPLES: Example[] = [
  { name: 'fortunes-llama', config: path.join(ROOT, 'prune-gate.yml'), heldout: path.join(ROOT, 'examples/fortunes-llama/heldout'), metric: 'perplexity' },
  { name: 'digits-cnn', config: path.join(ROOT, 'examples/digits-cnn/prune-gate.yml'), heldout: path.join(ROOT, 'examples/digits-cnn/heldout'), metric: 'accuracy' },
];

const emit = (row: Record<string, unknown>) => console.log(JSON.stringify(row));
const metricOf = (metrics: { name: string; base: number | null; candidate: number | null }[], name: string) => metrics.find((m) => m.name === name);

/**
 * Runs the gate with `config`, evaluating each step's candidate (after quantization, the artifact
 * the gate judges) on the held-out set too, latency included (base and candidate alternated).
 */
async function gateWithHeldOut(label: string, ex: Example, config: Config, heldOut: CalibrationSet, latencyRuns: number) {
  const base = OnnxModel.read(config.model as string);
  const held = await Evaluator.create(base, heldOut, { latency: { warmup: 3, runs: latencyRuns } });
  const calibration = loadCalibration(config.calibration as string, base);
  const perStep: Record<string, unknown>[] = [];
  const quantize: QuantizeFn = async (model, mode) => {
    const candidate = mode === 'none' ? { model } : await quantizeArtifact(model, mode, { calibration: calibrationFeeds(calibration), keepNames: config.keepNames });
    const ev = await held.evaluate(candidate.model);
    perStep.push({
      heldout: ev.values.candidate[ex.metric],
      heldoutAgreement: ev.values.candidate.agreement,
      speedup: ev.latency!.speedup,
    });
    return candidate;
  };
  try {
    const outcome = await runGate({ config, out: path.join(tmp, label), quantize });
    const r = outcome.report;
    const steps = r.steps.map((s, i) => {
      const main = metricOf(s.metrics, ex.metric)!;
      const agreement = metricOf(s.metrics, 'agreement')!;
      const size = metricOf(s.metrics, 'size')!;
      return {
        ratio: s.ratio,
        pass: s.pass,
        qualityPass: s.quality_pass,
        failed: s.metrics.filter((m) => !m.pass).map((m) => m.name),
        calibration: main.candidate,
        calibrationBase: main.base,
        agreement: agreement.candidate,
        sizeRatio: (size.candidate as number) / (size.base as number),
        params: metricOf(s.metrics, 'params')!.candidate,
        paramsRatio: (metricOf(s.metrics, 'params')!.candidate as number) / (metricOf(s.metrics, 'params')!.base as number),
        ...perStep[i],
      };
    });
    emit({
      example: ex.name,
      run: label,
      metric: ex.metric,
      verdict: r.verdict,
      chosenStep: r.chosen_step,
      target: r.target,
      quantize: r.quantize,
      structures: config.prune.structures,
      compensate: config.prune.compensate,
      align: config.prune.align,
      base: { heldout: held.baseTask[ex.metric], bytes: r.base.bytes, params: r.base.params },
      candidateBytes: r.candidate.bytes,
      steps,
      markdown: outcome.markdown,
    });
  } finally {
    await held.close();
  }
}

async function main() {
  for (const ex of EXAMPLES) {
    const configured = loadConfig(ex.config);
    const base = OnnxModel.read(configured.model as string);
    const heldOut = loadCalibration(ex.heldout, base);
    const latencyRuns = 20;
    // The gate as the example's config runs it (npm start for the first).
    await gateWithHeldOut('gate', ex, configured, heldOut, latencyRuns);
    // Every step evaluated: a fixed target evaluates all of them, whatever the bounds say.
    const maxTarget = configured.prune.maxTarget;
    const sweep = (prune: Partial<Config['prune']>): Config => ({ ...configured, prune: { ...configured.prune, target: maxTarget, ...prune } });
    await gateWithHeldOut('sweep', ex, sweep({}), heldOut, latencyRuns);
    if (ex.name === 'fortunes-llama') {
      // With heads allowed too (the measured allocation decides), and 30 % with compensation
      // fixed to bias or none instead of measured.
      await gateWithHeldOut('heads allowed, first step', ex, sweep({ structures: ['ffn', 'heads'], target: maxTarget / configured.prune.steps, steps: 1 }), heldOut, latencyRuns);
      for (const compensate of ['bias', 'none'] as const) {
        await gateWithHeldOut(`30 %, compensate ${compensate}`, ex, sweep({ compensate, target: 0.3, steps: 3 }), heldOut, latencyRuns);
      }
      // The gate with quantization, as the README quotes it.
      await gateWithHeldOut('gate, --target 0.3 --quantize int4', ex, { ...configured, prune: { ...configured.prune, target: 0.3 }, quantize: 'int4' }, heldOut, latencyRuns);
      await gateWithHeldOut('gate, --quantize int8', ex, { ...configured, quantize: 'int8' }, heldOut, latencyRuns);
      await gateWithHeldOut('gate, --target 0 --quantize int8', ex, { ...configured, prune: { ...configured.prune, target: 0 }, quantize: 'int8' }, heldOut, latencyRuns);
      await gateWithHeldOut('gate, --target 0 --quantize int4', ex, { ...configured, prune: { ...configured.prune, target: 0 }, quantize: 'int4' }, heldOut, latencyRuns);
    } else {
      // The same sweep with any width, and with widths from the kernel table (align auto).
      await gateWithHeldOut('sweep, align 1', ex, sweep({ align: 1 }), heldOut, latencyRuns);
      await gateWithHeldOut('sweep, align auto', ex, sweep({ align: 'auto' }), heldOut, latencyRuns);
    }
  }
}

main()
  .catch((e) => {
    console.error(e);
    process.exitCode = 1;
  })
  .finally(() => fs.rmSync(tmp, { recursive: true, force: true }));
