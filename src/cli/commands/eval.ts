import { Command } from 'commander';
import { loadConfig } from '../../config/config';
import { pullRequestOfRun } from '../../github/event';
import { compareModels } from '../../pipeline/run';
import { withElapsed } from '../../util/progress';
import { CliContext } from '../context';
import { plainText } from '../../report/markdown';

interface EvalFlags {
  base: string;
  candidate: string;
  calibration: string;
  config?: string;
  out?: string;
  json?: boolean;
}

/**
 * `prune-gate eval`: two given models compared on a calibration set. Without --config it only
 * reports (exit 0); with one it applies the config's gate like `run` (exit 1 when it fails).
 */
export function register(program: Command, ctx: CliContext): void {
  program
    .command('eval')
    .description('compare a candidate model with its base on a calibration set (and gate it with --config)')
    .requiredOption('-b, --base <file>', 'the base .onnx model')
    .requiredOption('--candidate <file>', 'the candidate .onnx model (e.g. a pruned one)')
    .requiredOption('--calibration <dir>', 'the calibration folder')
    .option('-c, --config <file>', 'a config file whose gate section the candidate is held to')
    .option('-o, --out <dir>', 'also write report.json and report.md to this folder')
    .option('--json', 'print report.json instead of the Markdown report')
    .action(async (flags: EvalFlags) => {
      const config = flags.config !== undefined ? loadConfig(flags.config) : undefined;
      const { report, markdown } = await compareModels({
        base: flags.base,
        candidate: flags.candidate,
        calibration: flags.calibration,
        config,
        out: flags.out,
        log: withElapsed((line) => ctx.stderr(`${line}\n`)),
        pullRequest: pullRequestOfRun(),
      });
      ctx.stdout(flags.json ? `${JSON.stringify(report, null, 2)}\n` : plainText(markdown));
      ctx.exitCode = config && report.verdict === 'fail' ? 1 : 0;
    });
}
