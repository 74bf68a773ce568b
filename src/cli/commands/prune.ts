import * as path from 'path';
import { Command } from 'commander';
import { parseTarget } from '../../config/config';
import { UserError } from '../../errors';
import { OnnxModel } from '../../onnx/model';
import { writeModel } from '../../onnx/write';
import { loadCalibration, calibrationFeeds } from '../../eval/calibration';
import { STRUCTURES, Structure } from '../../graph/analysis';
import { Compensation, Importance, PruneResult, pruneModel } from '../../prune';
import { CliContext } from '../context';
import { writeJsonAtomic } from '../../util/files';
import { grouped, table } from '../../util/format';

interface PruneFlags {
  model: string;
  out: string;
  calibration?: string;
  target: string;
  structures: string;
  importance?: string;
  compensate?: string;
  steps: string;
  align: string;
  report?: string;
  externalData?: boolean;
}

/** `prune-gate prune`: prune only; prints what was removed where, and why places were skipped. */
export function register(program: Command, ctx: CliContext): void {
  program
    .command('prune')
    .description('remove whole FFN neurons, attention heads and conv channels from a model')
    .requiredOption('-m, --model <file>', 'the .onnx model to prune (never modified)')
    .requiredOption('-o, --out <file>', 'where the pruned .onnx is written')
    .option('--calibration <dir>', 'calibration data, for activation importance')
    .option('-t, --target <ratio>', 'fraction of the parameters to remove', '0.2')
    .option('--structures <list>', 'what may be removed: any of ffn,heads,channels', STRUCTURES.join(','))
    .option('--importance <how>', 'magnitude or activation (default: activation with --calibration, else magnitude)')
    .option('--compensate <how>', 'none, bias or reconstruct (default: bias with --calibration, else none)')
    .option('--steps <n>', 'reach the target in n increments, re-measuring in between', '1')
    .option('--align <n>', 'keep FFN and conv widths multiples of n (8 or 16 for fast kernels)', '1')
    .option('--report <file>', 'also write what was removed as JSON')
    .option('--external-data', 'write the weights to <out>.data beside the model')
    .action(async (flags: PruneFlags) => {
      if (path.resolve(flags.out) === path.resolve(flags.model)) {
        throw new UserError(`refusing to overwrite the input model ${flags.model}: choose another --out`);
      }
      const target = parseTarget(flags.target, '--target', { auto: false }) as number;
      const structures = parseStructures(flags.structures);
      const importance = parseImportance(flags.importance, flags.calibration);
      const compensate = parseCompensate(flags.compensate, flags.calibration);
      const steps = Number(flags.steps);
      if (!Number.isInteger(steps) || steps < 1) throw new UserError(`--steps must be a whole number of at least 1 (got '${flags.steps}')`);
      const align = Number(flags.align);
      if (!Number.isInteger(align) || align < 1) throw new UserError(`--align must be a whole number of at least 1 (got '${flags.align}')`);
      const model = OnnxModel.read(flags.model);
      const calibration = flags.calibration ? calibrationFeeds(loadCalibration(flags.calibration, model)) : undefined;
      const result = await pruneModel(model, {
        target,
        structures,
        importance,
        compensate,
        steps,
        align,
        calibration,
        log: (line) => ctx.stderr(`${line}\n`),
      });
      const written = writeModel(result.model, flags.out, { externalData: flags.externalData });
      if (flags.report) writeJsonAtomic(flags.report, pruneReport(flags.model, written.path, result));
      ctx.stdout(formatPruned(result, flags.out));
    });
}

export function parseStructures(text: string): Structure[] {
  const list = text.split(',').map((s) => s.trim()).filter(Boolean);
  const bad = list.filter((s) => !STRUCTURES.includes(s as Structure));
  if (bad.length || list.length === 0) {
    throw new UserError(`--structures takes a list of ${STRUCTURES.join(', ')} (got '${text}')`);
  }
  return list as Structure[];
}

function parseImportance(text: string | undefined, calibration: string | undefined): Importance {
  if (text === undefined) return calibration ? 'activation' : 'magnitude';
  if (text !== 'magnitude' && text !== 'activation') {
    throw new UserError(`--importance must be magnitude or activation (got '${text}')`);
  }
  if (text === 'activation' && !calibration) {
    throw new UserError('--importance activation needs --calibration DIR (the data the activations come from)');
  }
  return text;
}

function parseCompensate(text: string | undefined, calibration: string | undefined): Compensation {
  if (text === undefined) return calibration ? 'bias' : 'none';
  if (text !== 'none' && text !== 'bias' && text !== 'reconstruct') {
    throw new UserError(`--compensate must be none, bias or reconstruct (got '${text}')`);
  }
  if (text !== 'none' && !calibration) throw new UserError(`--compensate ${text} needs --calibration DIR (it uses the activations' means)`);
  return text;
}

function pruneReport(input: string, output: string, r: PruneResult) {
  return {
    model: input,
    pruned_model: output,
    params: { before: r.paramsBefore, after: r.paramsAfter, removed_fraction: 1 - r.paramsAfter / r.paramsBefore },
    pruned: r.pruned,
    skipped: r.skipped,
  };
}

export function formatPruned(r: PruneResult, out: string): string {
  const removed = r.paramsBefore - r.paramsAfter;
  const pct = ((100 * removed) / r.paramsBefore).toFixed(1);
  const lines = [`Removed ${grouped(removed)} of ${grouped(r.paramsBefore)} parameters (${pct} %); wrote ${out}`];
  if (r.pruned.length) {
    lines.push('', 'Pruned:');
    lines.push(
      ...table(
        [['kind', 'units', 'params', 'where'], ...r.pruned.map((p) => [p.kind, `${p.before} -> ${p.after}`, grouped(p.params), p.where])],
        '  ',
      ),
    );
  } else lines.push('', 'Nothing was removed.');
  if (r.skipped.length) {
    lines.push('', 'Left alone:');
    for (const s of r.skipped) lines.push(`  ${s.where}: ${s.reason}`);
  }
  return `${lines.join('\n')}\n`;
}
