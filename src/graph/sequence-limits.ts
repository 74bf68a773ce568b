import type { onnx } from 'onnx-proto';
import { OnnxModel } from '../onnx/model';
import { attrInt } from './graph';

/**
 * What a graph says about the token sequences it accepts: which constant tables an integer input
 * picks rows from (so ids past the table's end are refused before onnxruntime stops on them), and
 * the longest sequence when the graph shows one.
 */

/** Ops that pass their first input's values through unchanged (retyped or reshaped). */
const VALUE_PRESERVING = new Set(['Cast', 'Reshape', 'Unsqueeze', 'Squeeze', 'Flatten', 'Identity']);

export interface IndexedTable {
  /** The constant the Gather reads. */
  table: string;
  rows: number;
  /** The Gather's name, for messages. */
  gather: string;
}

/** Names carrying the values of `sources`, followed forward through value-preserving ops (and `extra` ops). */
function sameValues(nodes: readonly onnx.INodeProto[], sources: Iterable<string>, extra: (n: onnx.INodeProto, known: Set<string>) => boolean = () => false): Set<string> {
  const known = new Set(sources);
  for (let grew = true; grew; ) {
    grew = false;
    for (const n of nodes) {
      const out = n.output?.[0] ?? '';
      if (!out || known.has(out)) continue;
      const passes = (VALUE_PRESERVING.has(n.opType ?? '') && known.has(n.input?.[0] ?? '')) || extra(n, known);
      if (passes) {
        known.add(out);
        grew = true;
      }
    }
  }
  return known;
}

/** Gathers along axis 0 of a constant table whose indices are `values` (a set of tensor names). */
function gathersOf(model: OnnxModel, values: Set<string>): IndexedTable[] {
  const found: IndexedTable[] = [];
  for (const n of model.graph.node) {
    if (n.opType !== 'Gather' || (n.domain ?? '') !== '' || attrInt(n, 'axis', 0) !== 0 || !values.has(n.input?.[1] ?? '')) continue;
    const table = n.input?.[0] ?? '';
    const rows = model.constantInfo(table)?.dims[0];
    if (rows !== undefined) found.push({ table, rows, gather: n.name || 'a Gather' });
  }
  return found;
}

/** The constant tables whose rows the integer input `input` picks (token ids into an embedding). */
export function tablesIndexedBy(model: OnnxModel, input: string): IndexedTable[] {
  return gathersOf(model, sameValues(model.graph.node, [input]));
}

/** The input that carries positions in Hugging Face exports. */
export const POSITIONS_INPUT = 'position_ids';

/**
 * The longest sequence the graph accepts, when it shows one: a fixed sequence axis (axis 1) of
 * the token input, or the rows of a position table, a Gather whose indices are positions (the
 * position_ids input, or a Range, offset or not by an Add or Sub).
 */
export function maxSequenceLength(model: OnnxModel, tokens: string): { length: number; why: string } | undefined {
  const declared = model.graph.input.find((v) => v.name === tokens)?.type?.tensorType?.shape?.dim?.[1];
  if (declared?.dimValue !== undefined && declared.dimValue !== null && Number(declared.dimValue) > 0) {
    return { length: Number(declared.dimValue), why: `its input '${tokens}' has a fixed sequence axis of ${Number(declared.dimValue)}` };
  }
  const nodes = model.graph.node;
  const ranges = nodes.filter((n) => n.opType === 'Range').map((n) => n.output?.[0] ?? '');
  const inputs = model.graph.input.map((v) => v.name ?? '').filter((n) => n === POSITIONS_INPUT);
  const positions = sameValues(nodes, [...ranges, ...inputs], (n, known) => ['Add', 'Sub', 'Expand'].includes(n.opType ?? '') && known.has(n.input?.[0] ?? ''));
  const tables = gathersOf(model, positions);
  if (tables.length === 0) return undefined;
  const smallest = tables.reduce((a, b) => (b.rows < a.rows ? b : a));
  return { length: smallest.rows, why: `its position table '${smallest.table}' has ${smallest.rows} rows` };
}
