import { Command } from 'commander';
import { parseOverrides, resolveConfig } from '../../config/config';
import { mergeJobs } from '../../pipeline/matrix';
import { withElapsed } from '../../util/progress';
import { CliContext } from '../context';
import { DEFAULT_OUT, flagName } from './run';
import { plainText } from '../../report/markdown';

interface MergeFlags {
  config?: string;
  model?: string;
  calibration?: string;
  target?: string;
  out: string;
  json?: boolean;
}

/**
 * `prune-gate merge DIR...`: the report one machine would have written, from the partial results
 * of every job of a plan (run --job K/N). Exit status as for run: 0 pass, 1 fail, 2 bad input
 * (partial results of another plan, a job missing or given twice).
 */
export function register(program: Command, ctx: CliContext): void {
  program
    .command('merge')
    .description("combine the jobs' partial results (run --job K/N) into the report, verdict and pruned model one machine would give")
    .argument('<dirs...>', 'the folders the jobs wrote')
    .option('-c, --config <file>', 'the config file (default: prune-gate.yml in the current folder)')
    .option('-m, --model <file>', "the .onnx model (overrides the config's model)")
    .option('--calibration <dir>', "the calibration folder (overrides the config's calibration)")
    .option('-t, --target <ratio>', 'fraction of parameters to remove, or auto (as the plan had it)')
    .option('-o, --out <dir>', 'where pruned.onnx, report.json and report.md are written', DEFAULT_OUT)
    .option('--json', 'print report.json instead of the Markdown report')
    .action(async (dirs: string[], flags: MergeFlags) => {
      const config = resolveConfig(flags.config, parseOverrides({ model: flags.model, calibration: flags.calibration, target: flags.target }, flagName), flagName);
      const outcome = await mergeJobs(config, dirs, flags.out, withElapsed((line) => ctx.stderr(`${line}\n`)));
      ctx.stdout(flags.json ? `${JSON.stringify(outcome.report, null, 2)}\n` : plainText(outcome.markdown));
      ctx.exitCode = outcome.report.verdict === 'pass' ? 0 : 1;
    });
}
