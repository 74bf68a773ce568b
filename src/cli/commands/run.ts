import { Command } from 'commander';
import { OptionName, parseOverrides, resolveConfig } from '../../config/config';
import { pullRequestOfRun } from '../../github/event';
import * as path from 'path';
import { PARTIAL_JSON, parseJob } from '../../pipeline/job';
import { runJob } from '../../pipeline/matrix';
import { runGate } from '../../pipeline/run';
import { withElapsed } from '../../util/progress';
import { CliContext } from '../context';
import { plainText } from '../../report/markdown';

/** How messages name the command line's options. */
export const flagName: OptionName = (key) => `--${key}`;

export const DEFAULT_OUT = 'out';

interface RunFlags {
  config?: string;
  model?: string;
  calibration?: string;
  out: string;
  target?: string;
  quantize?: string;
  keepNames?: boolean;
  externalData?: string;
  budget?: string;
  json?: boolean;
  job?: string;
}

/**
 * `prune-gate run`: the whole gate. Prints report.md as plain text (or report.json with --json) on stdout and
 * progress on stderr; exit status 0 when the gate passes, 1 when it fails (2 for bad input, from main).
 */
export function register(program: Command, ctx: CliContext): void {
  program
    .command('run')
    .description('prune the model step by step, evaluate it against the base on the calibration set, and gate it')
    .option('-c, --config <file>', 'the config file (default: prune-gate.yml in the current folder)')
    .option('-m, --model <file>', "the .onnx model (overrides the config's model)")
    .option('--calibration <dir>', "the calibration folder (overrides the config's calibration)")
    .option('-o, --out <dir>', 'where pruned.onnx, report.json and report.md are written', DEFAULT_OUT)
    .option('-t, --target <ratio>', 'fraction of parameters to remove (0.3), or auto for the gradual search')
    .option('--quantize <mode>', 'none, int8 or int4')
    .option('--keep-names', "keep the exporter's intermediate tensor and node names in a quantized model (default: shortened)")
    .option('--external-data <mode>', "where pruned.onnx keeps its weights: auto (as the input model did), always (in pruned.onnx.data) or never (inline, at most 2 GiB); overrides the config's external-data")
    .option('--budget <duration>', "the time the whole search may take (90s, 10m, 1h30m; default 10m); overrides the config's budget")
    .option('--json', 'print report.json instead of the Markdown report')
    .option('--job <K/N>', "job K of a plan's N (prune-gate plan): build every candidate, evaluate this job's shard, write OUT/partial.json for merge")
    .action(async (flags: RunFlags) => {
      const overrides = parseOverrides(
        { model: flags.model, calibration: flags.calibration, target: flags.target, quantize: flags.quantize, keepNames: flags.keepNames, externalData: flags.externalData, budget: flags.budget },
        flagName,
      );
      const config = resolveConfig(flags.config, overrides, flagName);
      if (flags.job !== undefined) {
        const job = parseJob(flags.job, '--job');
        const partial = await runJob(config, job, flags.out, withElapsed((line) => ctx.stderr(`${line}\n`)));
        ctx.stdout(`job ${job.index}/${job.count}: ${partial.steps.length} steps evaluated on ${partial.evaluated.samples} samples; ${path.join(flags.out, PARTIAL_JSON)}\n`);
        return;
      }
      const outcome = await runGate({ config, out: flags.out, log: withElapsed((line) => ctx.stderr(`${line}\n`)), pullRequest: pullRequestOfRun() });
      ctx.stdout(flags.json ? `${JSON.stringify(outcome.report, null, 2)}\n` : plainText(outcome.markdown));
      ctx.exitCode = outcome.report.verdict === 'pass' ? 0 : 1;
    });
}
