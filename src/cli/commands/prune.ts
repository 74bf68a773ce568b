import * as path from 'path';
import { Command } from 'commander';
import { parseExternalData, parseTarget } from '../../config/config';
import { UserError } from '../../errors';
import { OnnxModel } from '../../onnx/model';
import { writeModel } from '../../onnx/write';
import { batchCount, readCalibration, calibrationFeeds } from '../../eval/calibration';
import { STRUCTURES, Structure, WIDTH_STRUCTURES } from '../../graph/analysis';
import { ALLOCATIONS, Allocation, CompensationChoice, Importance } from '../../prune';
import { PruneInFormatResult, pruneInFormat } from '../../pipeline/quantized-inputs';
import { Evaluator } from '../../eval/evaluator';
import { allocationLine, quantizedInputsLines } from '../../report/markdown';
import { CliContext } from '../context';
import { baseOrigin, producerStamp } from '../../pipeline/provenance';
import { writeJsonAtomic } from '../../util/files';
import { withElapsed } from '../../util/progress';
import { grouped, table } from '../../util/format';
import { checkOutputFile } from '../../util/paths';

interface PruneFlags {
  model: string;
  out: string;
  calibration?: string;
  target: string;
  structures: string;
  importance?: string;
  compensate?: string;
  allocation: string;
  steps: string;
  align: string;
  report?: string;
  externalData: string | true;
  quantized: string;
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
    .option('--structures <list>', 'what may be removed: any of ffn,heads,channels,blocks (whole residual blocks, off by default)', WIDTH_STRUCTURES.join(','))
    .option('--importance <how>', 'magnitude or activation (default: activation with --calibration, else magnitude)')
    .option('--compensate <how>', 'auto, none, bias or reconstruct (default: auto with --calibration, which measures bias and reconstruct; else none)')
    .option(
      '--allocation <how>',
      'how removals are shared between layers: auto (with --calibration: global, uniform, FFN-only and by measured damage, the least damaging kept; without: uniform), global, uniform, ffn-only or measured',
      'auto',
    )
    .option('--steps <n>', 'reach the target in n increments, re-measuring in between', '1')
    .option('--align <n>', 'keep FFN and conv widths multiples of n (8 or 16 for fast kernels); auto: with --calibration, the widths that are not slower than the base on this machine', 'auto')
    .option('--quantized <form>', "a quantized model's weights after pruning: keep (in their format: MatMulNBits, DequantizeLinear) or float", 'keep')
    .option('--report <file>', 'also write what was removed as JSON')
    .option('--external-data [mode]', 'where the pruned model keeps its weights: auto (as the input model did), always (in <out>.data; the bare flag) or never (inline, at most 2 GiB)', 'auto')
    .action(async (flags: PruneFlags) => {
      checkOutputFile(flags.out, '--out');
      if (flags.report !== undefined) checkOutputFile(flags.report, '--report');
      if (path.resolve(flags.out) === path.resolve(flags.model)) {
        throw new UserError(`refusing to overwrite the input model ${flags.model}: choose another --out`);
      }
      const target = parseTarget(flags.target, '--target', { auto: false }) as number;
      const structures = parseStructures(flags.structures);
      const importance = parseImportance(flags.importance, flags.calibration);
      const compensate = parseCompensate(flags.compensate, flags.calibration);
      const allocation = parseAllocation(flags.allocation, flags.calibration);
      const steps = Number(flags.steps);
      if (!Number.isInteger(steps) || steps < 1) throw new UserError(`--steps must be a whole number of at least 1 (got '${flags.steps}')`);
      const externalData = parseExternalData(flags.externalData === true ? 'always' : flags.externalData, '--external-data');
      const align = flags.align === 'auto' ? 'auto' : Number(flags.align);
      if (align !== 'auto' && (!Number.isInteger(align) || align < 1)) throw new UserError(`--align must be auto or a whole number of at least 1 (got '${flags.align}')`);
      if (flags.quantized !== 'keep' && flags.quantized !== 'float') throw new UserError(`--quantized must be keep or float (got '${flags.quantized}')`);
      const quantized = flags.quantized;
      const model = OnnxModel.read(flags.model);
      // The flags as resolved are the settings config-sha256 covers (docs/contracts.md, "What a written model says").
      const origin = baseOrigin(model, { prune: { target, structures, importance, compensate, allocation, steps, align, ...(quantized === 'float' ? { quantized } : {}) }, externalData });
      const set = flags.calibration ? await readCalibration(flags.calibration, model) : undefined;
      // With data, candidates are measured on it against the base (the damage measure).
      const evaluator = set ? await Evaluator.create(model, set, { latency: { warmup: 0, runs: 1 } }) : undefined;
      let result: PruneInFormatResult;
      try {
        result = await pruneInFormat(model, {
          target,
          structures,
          importance,
          compensate,
          allocation,
          steps,
          align,
          calibration: evaluator ? calibrationFeeds(evaluator.set) : undefined,
          calibrationBatches: evaluator ? batchCount(evaluator.set) : undefined,
          calibrationSamples: evaluator?.set.count,
          damage: evaluator?.damageMeasure(),
          log: withElapsed((line) => ctx.stderr(`${line}\n`)),
        }, quantized);
      } finally {
        await evaluator?.close();
      }
      // An unchanged copy is not what was asked for: say why, and write nothing.
      if (target > 0 && result.paramsAfter >= result.paramsBefore) {
        throw new UserError(`nothing was removed from ${flags.model}: ${result.short ?? 'the engine removed less than asked'}; nothing was written`);
      }
      const written = writeModel(result.model, flags.out, { externalData, producer: producerStamp(origin, result.model, [result]) });
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

function parseCompensate(text: string | undefined, calibration: string | undefined): CompensationChoice {
  if (text === undefined) return calibration ? 'auto' : 'none';
  if (text !== 'auto' && text !== 'none' && text !== 'bias' && text !== 'reconstruct') {
    throw new UserError(`--compensate must be auto, none, bias or reconstruct (got '${text}')`);
  }
  if (text !== 'none' && !calibration) throw new UserError(`--compensate ${text} needs --calibration DIR (it uses the activations' means)`);
  return text;
}

function parseAllocation(text: string, calibration: string | undefined): Allocation {
  if (!ALLOCATIONS.includes(text as Allocation)) throw new UserError(`--allocation must be one of ${ALLOCATIONS.join(', ')} (got '${text}')`);
  if (text === 'measured' && !calibration) throw new UserError('--allocation measured needs --calibration DIR (the damage is measured on it)');
  // Without data nothing can be measured: every layer loses the same share.
  return text === 'auto' && !calibration ? 'uniform' : (text as Allocation);
}

function pruneReport(input: string, output: string, r: PruneInFormatResult) {
  return {
    model: input,
    pruned_model: output,
    params: { before: r.paramsBefore, after: r.paramsAfter, removed_fraction: 1 - r.paramsAfter / r.paramsBefore },
    ...(r.short ? { short: r.short } : {}),
    pruned: r.pruned,
    skipped: r.skipped,
    ...(r.allocation ? { allocation: r.allocation } : {}),
    ...(r.quantizedInputs ? { quantized_inputs: r.quantizedInputs } : {}),
  };
}

export function formatPruned(r: PruneInFormatResult, out: string): string {
  const removed = r.paramsBefore - r.paramsAfter;
  const pct = ((100 * removed) / r.paramsBefore).toFixed(1);
  const lines = [`Removed ${grouped(removed)} of ${grouped(r.paramsBefore)} parameters (${pct} %); wrote ${out}`];
  if (r.short) lines.push(`Short of the target: ${r.short}`);
  if (r.pruned.length) {
    lines.push('', 'Pruned:');
    lines.push(
      ...table(
        [['kind', 'units', 'params', 'where'], ...r.pruned.map((p) => [p.kind, `${p.before} -> ${p.after}`, grouped(p.params), p.where])],
        '  ',
      ),
    );
  } else lines.push('', 'Nothing was removed.');
  if (r.allocation && r.pruned.length) lines.push('', allocationLine(r.allocation));
  if (r.quantizedInputs) lines.push('', ...quantizedInputsLines(r.quantizedInputs));
  if (r.skipped.length) {
    lines.push('', 'Left alone (widths kept whole; the weights listed may have lost other axes above):');
    for (const s of r.skipped) lines.push(`  ${s.where}: ${s.reason}`);
  }
  return `${lines.join('\n')}\n`;
}
