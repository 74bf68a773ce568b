import { Command } from 'commander';
import { DUMMY_BATCH, DUMMY_SEQUENCE, countParams, estimateMacs } from '../../graph/cost';
import { Trace, traceModel } from '../../graph/trace';
import { cacheSizes } from '../../graph/cache-sizes';
import { dtypeName } from '../../onnx/dtype';
import { externalLocation, isExternal } from '../../onnx/external';
import { OnnxModel } from '../../onnx/model';
import { InputSpec, dummyFeeds, graphInputs, graphOutputs } from '../../onnx/runtime';
import { toNumber } from '../../onnx/tensor';
import { CliContext } from '../context';
import { isUserError } from '../../errors';
import { PrunableBlocks, PrunableGroup, SkippedEntry } from '../../prune';
import { findPrunableInFormat } from '../../pipeline/quantized-inputs';
import { bytes, grouped, shape, si, table } from '../../util/format';

export interface ValueSummary {
  name: string;
  dtype: string;
  /** Fixed sizes as numbers, dynamic axes by their name (null when the model names none). */
  shape: (number | string | null)[];
}

/** What `prune-gate inspect --json` prints. Field names are part of the CLI's interface. */
export interface Inspection {
  path: string;
  irVersion: number;
  producer: { name: string; version: string };
  opsets: { domain: string; version: number }[];
  inputs: ValueSummary[];
  outputs: ValueSummary[];
  params: number;
  /** The .onnx file plus its external data files. */
  bytes: number;
  /** External data files, as the model names them (relative to its folder). */
  externalData: string[];
  /** Multiply-accumulates per sample at `macsInputShapes`; null when the model could not be run. */
  macs: number | null;
  macsInputShapes: Record<string, number[]>;
  macsByOp: Record<string, number>;
  /** Why `macs` is null, or which nodes' cost is missing from it. */
  macsNote?: string;
  nodes: number;
  /** Node count per op type; ops outside the default domain are written domain::Op. */
  ops: Record<string, number>;
  /** The groups the engine can prune, and the places it leaves alone with the reason. */
  prunable: PrunableGroup[];
  skipped: SkippedEntry[];
  /** Whole residual blocks `structures: blocks` could remove, and those it would leave with the reason. */
  blocks?: PrunableBlocks;
  /** Why the analysis could not run (the model does not run with dummy inputs). */
  prunableNote?: string;
  /** The quantized weights pruned in their format (MatMulNBits, DequantizeLinear), and how. */
  quantized?: string;
}

export function register(program: Command, ctx: CliContext): void {
  program
    .command('inspect')
    .description("describe a model: inputs, outputs, opsets, parameters, size on disk, MACs and ops")
    .requiredOption('-m, --model <file>', 'the .onnx model file')
    .option('--json', 'print the description as JSON')
    .action(async (opts: { model: string; json?: boolean }) => {
      const inspection = await inspectModel(opts.model);
      ctx.stdout(opts.json ? `${JSON.stringify(inspection, null, 2)}\n` : formatInspection(inspection));
    });
}

export async function inspectModel(file: string): Promise<Inspection> {
  const model = OnnxModel.read(file);
  const describe = (v: InputSpec): ValueSummary => ({ name: v.name, dtype: dtypeName(v.dtype), shape: v.dims });
  const ops: Record<string, number> = {};
  for (const node of model.graph.node) {
    const domain = node.domain && node.domain !== 'ai.onnx' ? `${node.domain}::` : '';
    const key = `${domain}${node.opType}`;
    ops[key] = (ops[key] ?? 0) + 1;
  }

  // One run of the model with dummy inputs gives every tensor's shape: the MACs follow from it
  // (and the pruning engine's analysis will reuse the same trace).
  const feeds = dummyFeeds(model, DUMMY_BATCH, DUMMY_SEQUENCE, await cacheSizes(model));
  const macsInputShapes: Record<string, number[]> = {};
  for (const [name, t] of Object.entries(feeds)) macsInputShapes[name] = [...t.dims];
  let trace: Trace | undefined;
  let macs: number | null = null;
  let macsByOp: Record<string, number> = {};
  let macsNote: string | undefined;
  try {
    trace = await traceModel(model, feeds);
  } catch (e) {
    const reason = String((e as Error).message ?? e).split('\n')[0];
    macsNote = `onnxruntime could not run the model with dummy inputs: ${reason}`;
  }
  if (trace) {
    const estimate = estimateMacs(model, trace);
    macs = estimate.total;
    macsByOp = estimate.byOp;
    if (estimate.unknown.length) macsNote = `shapes unknown, not counted: ${estimate.unknown.join(', ')}`;
  }

  const inspection: Inspection = {
    path: file,
    irVersion: toNumber(model.proto.irVersion),
    producer: { name: model.proto.producerName ?? '', version: model.proto.producerVersion ?? '' },
    opsets: (model.proto.opsetImport ?? []).map((o) => ({ domain: o.domain || 'ai.onnx', version: toNumber(o.version) })),
    inputs: graphInputs(model).map(describe),
    outputs: graphOutputs(model).map(describe),
    params: countParams(model),
    bytes: model.bytesOnDisk(),
    externalData: [
      ...new Set(model.initializers.filter(isExternal).map((t) => externalLocation(t, model.dir, model.origin).location)),
    ],
    macs,
    macsInputShapes,
    macsByOp,
    ...(macsNote ? { macsNote } : {}),
    nodes: model.graph.node.length,
    ops: Object.fromEntries(Object.entries(ops).sort((a, b) => b[1] - a[1] || a[0].localeCompare(b[0]))),
    prunable: [],
    skipped: [],
  };
  try {
    Object.assign(inspection, await findPrunableInFormat(model));
  } catch (e) {
    // The description above stands; only the analysis could not be made (a model that does not
    // run on dummy inputs, say).
    inspection.prunableNote = `the graph could not be analysed: ${String((e as Error).message ?? e).split('\n')[0]}`;
  }
  return inspection;
}

/** The human-readable form: a block of figures, then one section per further topic. */
export function formatInspection(ins: Inspection): string {
  const valueRows = (values: ValueSummary[]) =>
    values.length ? table(values.map((v) => [v.name, v.dtype, shape(v.shape)])) : ['(none)'];
  const at = Object.entries(ins.macsInputShapes)
    .map(([name, dims]) => `${name} ${shape(dims)}`)
    .join(', ');
  const macsLine =
    ins.macs === null
      ? `not measured (${ins.macsNote})`
      : `${grouped(ins.macs)} per sample (${si(ins.macs)}), at ${at}${ins.macsNote ? `; ${ins.macsNote}` : ''}`;
  const external = ins.externalData.length ? `, with external data in ${ins.externalData.join(', ')}` : '';
  const producer = [ins.producer.name, ins.producer.version].filter(Boolean).join(' ') || 'unknown';
  const opsets = ins.opsets.map((o) => `${o.domain} ${o.version}`).join(', ');

  const overview: [string, string[]][] = [
    ['Model', [ins.path]],
    ['Format', [`ONNX IR ${ins.irVersion}, opsets ${opsets || 'none'}; producer ${producer}`]],
    ['Inputs', valueRows(ins.inputs)],
    ['Outputs', valueRows(ins.outputs)],
    ['Parameters', [`${grouped(ins.params)} (${si(ins.params)})`]],
    ['Size', [`${grouped(ins.bytes)} bytes on disk (${bytes(ins.bytes)})${external}`]],
    ['MACs', [macsLine]],
    ['Nodes', [String(ins.nodes)]],
    ['Ops', [Object.entries(ins.ops).map(([op, n]) => `${op} ${n}`).join(', ')]],
  ];
  const width = Math.max(...overview.map(([k]) => k.length)) + 2;
  const lines: string[] = [];
  for (const [key, values] of overview) {
    values.forEach((v, i) => lines.push(`${(i === 0 ? key : '').padEnd(width)}${v}`));
  }
  lines.push('', 'Prunable groups');
  if (ins.prunableNote) lines.push(`  none found: ${ins.prunableNote}`);
  else if (ins.prunable.length === 0) lines.push('  none');
  else
    lines.push(
      ...table(
        [['kind', 'units', 'params/unit', 'where'], ...ins.prunable.map((g) => [g.kind, String(g.units), grouped(g.unitParams), g.where])],
        '  ',
      ),
    );
  if (ins.blocks && ins.blocks.removable.length + ins.blocks.leftAlone.length > 0) {
    lines.push('', 'Residual blocks (structures: blocks, off by default)');
    if (ins.blocks.removable.length) lines.push(...table([['params', 'where'], ...ins.blocks.removable.map((b) => [grouped(b.params), b.where])], '  '));
    for (const s of ins.blocks.leftAlone) lines.push(`  left whole: ${s.where}: ${s.reason}`);
  }
  if (ins.quantized) lines.push('', 'Quantized weights', `  ${ins.quantized}`);
  // A place is a width (a channel axis) the listed weights share; their other axes may still be
  // pruned above (q_proj's heads, say, while its input width, the residual stream, stays).
  lines.push('', 'Left alone (widths kept whole; the weights listed may still lose other axes above)');
  if (ins.skipped.length === 0) lines.push('  nothing');
  for (const s of ins.skipped) lines.push(`  ${s.where}: ${s.reason}`);
  return `${lines.join('\n')}\n`;
}
