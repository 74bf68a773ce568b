import { Command } from 'commander';
import { parseOverrides, resolveConfig } from '../../config/config';
import { UserError } from '../../errors';
import { OnnxModel } from '../../onnx/model';
import { MAX_JOBS } from '../../pipeline/job';
import { checkSplittable, matrixOf, planIdentity, splittableSet } from '../../pipeline/matrix';
import { modelSha256 } from '../../pipeline/provenance';
import { CliContext } from '../context';
import { flagName } from './run';

interface PlanFlags {
  config?: string;
  model?: string;
  calibration?: string;
  target?: string;
  jobs: string;
}

/**
 * `prune-gate plan`: the matrix for splitting the gate over N jobs (`strategy.matrix:
 * ${{ fromJSON(...) }}`) on stdout; on stderr the plan's identity and each job's share. Refuses,
 * exit 2, the settings under which jobs could build different candidates.
 */
export function register(program: Command, ctx: CliContext): void {
  program
    .command('plan')
    .description('print the GitHub Actions matrix that splits the gate over --jobs jobs')
    .option('-c, --config <file>', 'the config file (default: prune-gate.yml in the current folder)')
    .option('-m, --model <file>', "the .onnx model (overrides the config's model)")
    .option('--calibration <dir>', "the calibration folder (overrides the config's calibration)")
    .option('-t, --target <ratio>', 'fraction of parameters to remove (0.3 or 30%), or auto')
    .option('-j, --jobs <n>', 'how many jobs', '4')
    .action(async (flags: PlanFlags) => {
      if (!/^\d+$/.test(flags.jobs)) throw new UserError(`--jobs: expected a whole number of jobs from 1 to ${MAX_JOBS}, found '${flags.jobs}'`);
      const jobs = Number(flags.jobs);
      const matrix = matrixOf(jobs);
      const config = resolveConfig(flags.config, parseOverrides({ model: flags.model, calibration: flags.calibration, target: flags.target }, flagName), flagName);
      checkSplittable(config);
      const model = OnnxModel.read(config.model as string);
      const set = await splittableSet(config, model);
      const id = planIdentity(config, jobs, modelSha256(model));
      ctx.stderr(`plan ${id.slice(0, 16)}: ${jobs} jobs, each evaluating at most ${Math.ceil(set.count / jobs)} of the ${set.count} calibration samples\n`);
      ctx.stdout(`${JSON.stringify(matrix)}\n`);
    });
}
