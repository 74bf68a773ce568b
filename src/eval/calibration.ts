import * as fs from 'fs';
import * as path from 'path';
import YAML from 'yaml';
import { z } from 'zod';
import { displayPath } from '../util/paths';
import { parseWith } from '../util/validation';
import { UserError } from '../errors';
import { POSITIONS_INPUT, tablesIndexedBy } from '../graph/sequence-limits';
import { DataType, dtypeInfo, dtypeName, floatToHalf, isFloatDType } from '../onnx/dtype';
import { OnnxModel } from '../onnx/model';
import { InputSpec, graphInputs, graphOutputs, toOrtTensor } from '../onnx/runtime';
import { Tensor, elementCount, toFloat32, toNumbers } from '../onnx/tensor';
import type { Feeds } from '../onnx/runtime';
import { readNpy } from './npy';
import { TASKS, Task } from './metric-names';
import { GenerationKeys, GenerationSpec, loadGenerationSpec, promptSet } from './generation-set';
import { emptyPast, isPastInput } from '../onnx/kv-cache';
import { cacheSizes } from '../graph/cache-sizes';
import type { FixedSizes } from '../onnx/runtime';
import { pastWithSizes } from './kv-cache';


export const DEFAULT_BATCH_SIZE = 16;
const SPEC_NAMES = ['calibration.json', 'calibration.yml', 'calibration.yaml'];
const SAMPLES_NAME = 'samples.jsonl';
/** The input whose zeros mark padding (not counted in LM metrics, filled with ones if absent). */
export const MASK_INPUT = 'attention_mask';

const CalibrationFile = z.strictObject({
  task: z.enum(TASKS, {
    error: (i) => (i.input === undefined ? `missing: name the task (${TASKS.join(', ')})` : `unknown task '${String(i.input)}' (expected ${TASKS.join(', ')})`),
  }),
  inputs: z.record(z.string(), z.string({ error: 'the name of an .npy file' })).optional(),
  samples: z.string({ error: 'the name of a .jsonl file' }).optional(),
  labels: z.string({ error: 'the name of an .npy file of class indices' }).optional(),
  output: z.string({ error: "the name of the model's output" }).optional(),
  tokens: z.string({ error: "the name of the model's token input" }).optional(),
  batch_size: z.number({ error: 'a positive whole number' }).int({ error: 'a positive whole number' }).positive({ error: 'a positive whole number' }).optional(),
  ...GenerationKeys,
});
type CalibrationFile = z.output<typeof CalibrationFile>;

const SampleLine = z.strictObject({
  inputs: z.record(z.string(), z.unknown()),
  label: z.number({ error: 'a class index' }).int({ error: 'a whole class index' }).nonnegative({ error: 'a class index >= 0' }).optional(),
});

/** A calibration set checked against a model and converted to its input types. */
export interface CalibrationSet {
  /** The file named in messages: calibration.json/.yml, or samples.jsonl. */
  source: string;
  task: Task;
  /** Every model input, axis 0 the sample axis, in the model's element type. */
  inputs: Record<string, Tensor>;
  /** Class index per sample (classification). */
  labels?: Int32Array;
  /** The output the metrics read. */
  output: string;
  /** The token input (language-model). */
  tokens?: string;
  /** The attention mask input, when the model has one. */
  mask?: string;
  batchSize: number;
  count: number;
  /** Sequence sets (generation): which positions count, per sample and position. */
  positions?: RowsThatCount;
  /** The prompts, references and decoding settings of a generation set. */
  generation?: GenerationSpec;
}

/** Per sample and position ([count x length], row-major): compared (1) or not, and the token it should predict (-1: none). */
export interface RowsThatCount {
  length: number;
  compare: Uint8Array;
  targets?: Int32Array;
}

/** One batch: the feeds for the model and what the metrics need about those samples. */
export interface Batch {
  start: number;
  size: number;
  feeds: Feeds;
  labels?: Int32Array;
}

export interface LoadOptions {
  batchSize?: number;
  /** Sizes of the KV-cache axes the model leaves symbolic, found by running it (readCalibration). */
  cacheSizes?: FixedSizes;
}

/**
 * Loads the calibration set at `location` (a folder holding calibration.json/.yml or
 * samples.jsonl, or one of those files) and checks it against the model's inputs and outputs.
 */
export function loadCalibration(location: string, model: OnnxModel, options: LoadOptions = {}): CalibrationSet {
  const specFile = findSpecFile(location);
  const shown = displayPath(specFile);
  const specs = graphInputs(model);
  const outputs = graphOutputs(model).map((o) => o.name);
  let spec: CalibrationFile;
  let raw: { inputs: Record<string, Tensor>; labels?: Tensor; labelFile?: string };
  if (specFile.endsWith('.jsonl')) {
    const samples = readSamples(specFile, specs);
    spec = { task: samples.labels ? 'classification' : 'generic' };
    raw = samples;
  } else {
    spec = readSpec(specFile);
    if (spec.task === 'generation') return loadGeneration(spec, specFile, model, options);
    raw = readTensors(spec, specFile, specs);
  }
  const inputs = fitInputs(raw.inputs, model, shown, options.cacheSizes);
  checkIndices(inputs, model, shown);
  const count = sampleCount(inputs, shown);
  const output = chooseOutput(spec.output, outputs, shown);
  const set: CalibrationSet = {
    source: shown,
    task: spec.task,
    inputs,
    output,
    count,
    mask: specs.some((s) => s.name === MASK_INPUT) ? MASK_INPUT : undefined,
    batchSize: batchSizeFor(specs, options.batchSize ?? spec.batch_size ?? DEFAULT_BATCH_SIZE),
  };
  if (spec.task === 'classification') set.labels = checkLabels(raw.labels, raw.labelFile, count, shown);
  else if (raw.labels) throw new UserError(`${shown}: labels are used by the classification task only, this set's task is ${spec.task}; remove "labels"`);
  if (spec.task === 'language-model') set.tokens = chooseTokens(spec.tokens, specs, shown);
  return set;
}

/** A generation set: its prompts checked against the model, as a set of the prompts alone until the base has generated. */
function loadGeneration(spec: CalibrationFile, specFile: string, model: OnnxModel, options: LoadOptions): CalibrationSet {
  const generation = loadGenerationSpec(spec, specFile, model, options.cacheSizes);
  const empty: CalibrationSet = {
    source: displayPath(specFile),
    task: 'generation',
    inputs: {},
    output: generation.decoder.logits,
    count: 0,
    mask: generation.decoder.mask?.name,
    batchSize: batchSizeFor(graphInputs(model), options.batchSize ?? spec.batch_size ?? DEFAULT_BATCH_SIZE),
    generation,
  };
  return promptSet(generation, empty);
}

/**
 * loadCalibration for a model whose cache may leave an axis symbolic (onnxruntime-genai's
 * `kv_cache_dim`): its size is found by running the model once without its pasts
 * (graph/cache-sizes.ts; no run when the declarations fix every size).
 */
export async function readCalibration(location: string, model: OnnxModel, options: Omit<LoadOptions, 'cacheSizes'> = {}): Promise<CalibrationSet> {
  return loadCalibration(location, model, { ...options, cacheSizes: await cacheSizes(model) });
}

function findSpecFile(location: string): string {
  let stat: fs.Stats;
  try {
    stat = fs.statSync(location);
  } catch {
    throw new UserError(`calibration not found: ${location} (give a folder holding calibration.json or samples.jsonl)`);
  }
  if (!stat.isDirectory()) return location;
  for (const name of [...SPEC_NAMES, SAMPLES_NAME]) {
    const f = path.join(location, name);
    if (fs.existsSync(f)) return f;
  }
  throw new UserError(
    `${location}: no calibration.json, calibration.yml or samples.jsonl in this folder; add one (see the README, "Calibration data")`,
  );
}

function readSpec(file: string): CalibrationFile {
  const shown = displayPath(file);
  const text = fs.readFileSync(file, 'utf8');
  let data: unknown;
  try {
    data = file.endsWith('.json') ? JSON.parse(text) : YAML.parse(text);
  } catch (e) {
    throw new UserError(`${shown}: not valid ${file.endsWith('.json') ? 'JSON' : 'YAML'}: ${(e as Error).message.split('\n')[0]}`);
  }
  if (data === null || typeof data !== 'object' || Array.isArray(data)) {
    throw new UserError(`${shown}: expected an object with "task" and "inputs"`);
  }
  const spec = parseWith(CalibrationFile, data, shown);
  const generationOnly = (Object.keys(GenerationKeys) as (keyof typeof GenerationKeys)[]).find((k) => spec[k] !== undefined);
  if (spec.task !== 'generation' && generationOnly) throw new UserError(`${shown}: ${generationOnly}: used by task generation only, this set's task is ${spec.task}; remove it`);
  if (spec.task !== 'generation' && !spec.inputs === !spec.samples) {
    throw new UserError(`${shown}: give either "inputs" (.npy files) or "samples" (a .jsonl file)${spec.inputs ? ', not both' : ''}`);
  }
  return spec;
}

/** Resolves a file named in the spec, relative to the spec's folder, or says which key named it. */
function specPath(specFile: string, name: string, key: string): string {
  const f = path.resolve(path.dirname(specFile), name);
  if (!fs.existsSync(f)) {
    throw new UserError(`${displayPath(specFile)}: ${key}: file not found: ${displayPath(f)}`);
  }
  return f;
}

function readTensors(
  spec: CalibrationFile,
  specFile: string,
  specs: InputSpec[],
): { inputs: Record<string, Tensor>; labels?: Tensor; labelFile?: string } {
  if (spec.samples) {
    const samples = readSamples(specPath(specFile, spec.samples, 'samples'), specs);
    if (spec.labels) throw new UserError(`${displayPath(specFile)}: labels come from the "label" of each sample in ${spec.samples}; remove "labels"`);
    return samples;
  }
  const inputs: Record<string, Tensor> = {};
  for (const [name, file] of Object.entries(spec.inputs ?? {})) {
    inputs[name] = withSource(readNpy(specPath(specFile, file, `inputs.${name}`)), file);
  }
  if (!spec.labels) return { inputs };
  const labelFile = specPath(specFile, spec.labels, 'labels');
  return { inputs, labels: readNpy(labelFile), labelFile: spec.labels };
}

/** Remembers which file a tensor came from, for messages. */
const SOURCES = new WeakMap<Tensor, string>();
function withSource(t: Tensor, file: string): Tensor {
  SOURCES.set(t, file);
  return t;
}
function sourceOf(t: Tensor, name: string): string {
  const f = SOURCES.get(t);
  return f ? `input '${name}' (${f})` : `input '${name}'`;
}

// ---------------------------------------------------------------------------------------------
// samples.jsonl
// ---------------------------------------------------------------------------------------------

/** Reads samples.jsonl: one sample a line, arrays without the sample axis, dtypes from the model. */
export function readSamples(file: string, specs: InputSpec[]): { inputs: Record<string, Tensor>; labels?: Tensor; labelFile?: string } {
  const shown = displayPath(file);
  const lines = fs
    .readFileSync(file, 'utf8')
    .split('\n')
    .map((text, i) => ({ text: text.trim(), line: i + 1 }))
    .filter((l) => l.text.length > 0);
  if (lines.length === 0) throw new UserError(`${shown}: the calibration set is empty: add one JSON sample a line`);
  const values = new Map<string, number[]>();
  const shapes = new Map<string, { dims: number[]; line: number }>();
  const labels: number[] = [];
  let firstLabelLine: number | undefined;
  for (const [index, { text, line }] of lines.entries()) {
    const where = `${shown} line ${line}`;
    let json: unknown;
    try {
      json = JSON.parse(text);
    } catch (e) {
      throw new UserError(`${where}: not valid JSON (${(e as Error).message})`);
    }
    const sample = parseWith(SampleLine, json, where);
    if (sample.label !== undefined) {
      if (firstLabelLine === undefined && line !== lines[0].line) {
        throw new UserError(`${where}: has a "label" but line ${lines[0].line} has none; label every sample or none`);
      }
      firstLabelLine ??= line;
      labels.push(sample.label);
    } else if (firstLabelLine !== undefined) {
      throw new UserError(`${where}: no "label" but line ${firstLabelLine} has one; label every sample or none`);
    }
    for (const [name, value] of Object.entries(sample.inputs)) {
      const spec = specs.find((s) => s.name === name);
      if (!spec) throw new UserError(`${where}: inputs.${name}: the model has no input '${name}' (its inputs: ${specs.map((s) => s.name).join(', ')})`);
      const { dims, flat } = flattenNested(value, `${where}: inputs.${name}`);
      // A line is one sample: drop a leading 1 if the user wrote the batch axis.
      const sampleDims = dims.length === spec.dims.length && dims[0] === 1 ? dims.slice(1) : dims;
      const first = shapes.get(name);
      if (!first) shapes.set(name, { dims: sampleDims, line });
      else if (first.dims.join() !== sampleDims.join()) {
        throw new UserError(
          `${where}: inputs.${name} has shape [${sampleDims.join(', ')}] but line ${first.line} has [${first.dims.join(', ')}]; every sample must have the same shape (pad, and mark padding with attention_mask)`,
        );
      }
      let list = values.get(name);
      if (!list) values.set(name, (list = []));
      if (list.length !== index * elementCount(sampleDims)) {
        throw new UserError(`${where}: inputs.${name} is missing on an earlier line; give every input on every line`);
      }
      for (const v of flat) list.push(v);
    }
    for (const name of values.keys()) {
      if (!(name in sample.inputs)) throw new UserError(`${where}: inputs.${name} is missing; give every input on every line`);
    }
  }
  const inputs: Record<string, Tensor> = {};
  for (const [name, flat] of values) {
    const spec = specs.find((s) => s.name === name) as InputSpec;
    const dims = [lines.length, ...(shapes.get(name)?.dims ?? [])];
    inputs[name] = withSource(numbersToTensor(flat, spec.dtype, dims, `${shown}: inputs.${name}`), path.basename(file));
  }
  const labelTensor = firstLabelLine !== undefined ? { dtype: DataType.INT32, dims: [labels.length], data: Int32Array.from(labels) } : undefined;
  return { inputs, labels: labelTensor, labelFile: labelTensor ? path.basename(file) : undefined };
}

/** Shape and row-major values of a nested JSON array; refuses ragged arrays and non-numbers. */
function flattenNested(value: unknown, where: string): { dims: number[]; flat: number[] } {
  const dims: number[] = [];
  for (let v = value; Array.isArray(v); v = v[0]) dims.push(v.length);
  const flat: number[] = [];
  const walk = (v: unknown, depth: number): void => {
    if (depth === dims.length) {
      if (typeof v === 'boolean') flat.push(v ? 1 : 0);
      else if (typeof v === 'number' && Number.isFinite(v)) flat.push(v);
      else throw new UserError(`${where}: expected numbers, found ${JSON.stringify(v)}`);
      return;
    }
    if (!Array.isArray(v) || v.length !== dims[depth]) {
      throw new UserError(`${where}: not a rectangular array (rows of different lengths at depth ${depth})`);
    }
    for (const x of v) walk(x, depth + 1);
  };
  walk(value, 0);
  return { dims, flat };
}

function numbersToTensor(values: number[], dtype: DataType, dims: number[], where: string): Tensor {
  const info = dtypeInfo(dtype);
  const n = values.length;
  const data = new info.array(n);
  if (dtype === DataType.FLOAT16) for (let i = 0; i < n; i++) (data as Uint16Array)[i] = floatToHalf(values[i]);
  else if (isFloatDType(dtype)) (data as Float32Array).set(values);
  else {
    for (let i = 0; i < n; i++) {
      if (!Number.isInteger(values[i])) throw new UserError(`${where}: the model's input is ${dtypeName(dtype)}, found ${values[i]}`);
    }
    if (data instanceof BigInt64Array || data instanceof BigUint64Array) for (let i = 0; i < n; i++) data[i] = BigInt(values[i]);
    else (data as Int32Array).set(values);
  }
  return { dtype, dims, data };
}

// ---------------------------------------------------------------------------------------------
// Checking against the model
// ---------------------------------------------------------------------------------------------

/**
 * Every model input present, in the model's element type, with a shape that fits. What a set
 * may leave out is filled: an attention_mask of ones, and a KV cache's past, empty (every task
 * starts from an empty cache, docs/contracts.md "Calibration data").
 */
function fitInputs(given: Record<string, Tensor>, model: OnnxModel, shown: string, found: FixedSizes = {}): Record<string, Tensor> {
  const specs = graphInputs(model);
  const names = specs.map((s) => s.name);
  for (const name of Object.keys(given)) {
    if (!names.includes(name)) {
      throw new UserError(`${shown}: inputs.${name}: the model has no input '${name}' (its inputs: ${names.join(', ')})`);
    }
  }
  const out: Record<string, Tensor> = {};
  for (const spec of specs) {
    const t = given[spec.name];
    if (t) out[spec.name] = convertDType(t, spec, shown);
  }
  // attention_mask is usually all ones for unpadded sets: fill it rather than insist on a file.
  // With an empty past, a mask of past + current positions is as long as the tokens.
  const mask = specs.find((s) => s.name === MASK_INPUT);
  const reference = Object.entries(out).find(([name]) => !isPastInput(name))?.[1];
  if (mask && !out[MASK_INPUT] && reference) out[MASK_INPUT] = onesLike(mask, reference);
  const missingPast = specs.filter((s) => isPastInput(s.name) && !out[s.name]);
  if (missingPast.length && reference) {
    const named = namedSizes(out, specs);
    for (const past of missingPast) out[past.name] = emptyPast(pastWithSizes(model, past, named, shown, found), reference.dims[0]);
  }
  for (const spec of specs) {
    if (!out[spec.name]) {
      throw new UserError(`${shown}: inputs: no data for the model input '${spec.name}'; add "${spec.name}": "<file>.npy" to inputs`);
    }
  }
  checkShapes(out, specs, shown);
  return out;
}

/** The size of each named axis in the inputs given, from the first input that has it. */
function namedSizes(inputs: Record<string, Tensor>, specs: InputSpec[]): Map<string, number> {
  const named = new Map<string, number>();
  for (const spec of specs) {
    const t = inputs[spec.name];
    spec.dims.forEach((d, i) => {
      if (t && typeof d === 'string' && !named.has(d) && t.dims.length === spec.dims.length) named.set(d, t.dims[i]);
    });
  }
  return named;
}

/**
 * Integer inputs that pick rows of a constant table (token ids into an embedding, through a
 * Cast or not) must be rows the table has: onnxruntime would stop with "indices element out of
 * data bounds". The first one outside is named, with its sample.
 */
function checkIndices(inputs: Record<string, Tensor>, model: OnnxModel, shown: string): void {
  for (const [name, t] of Object.entries(inputs)) {
    if (isFloatDType(t.dtype)) continue;
    const tables = tablesIndexedBy(model, name);
    if (tables.length === 0) continue;
    const values = toNumbers(t);
    const perSample = values.length / (t.dims[0] || 1);
    for (const { table, rows, gather } of tables) {
      const bad = values.findIndex((v) => v >= rows || v < -rows);
      if (bad >= 0) {
        throw new UserError(
          `${shown}: inputs.${name}: value ${values[bad]} (sample ${Math.floor(bad / perSample)}) is outside the model's ${rows} rows of '${table}' that ${gather} picks from (ids 0 to ${rows - 1}); was the data made for another vocabulary?`,
        );
      }
    }
  }
}

function onesLike(spec: InputSpec, reference: Tensor): Tensor {
  const dims = reference.dims.slice(0, spec.dims.length);
  const n = elementCount(dims);
  const info = dtypeInfo(spec.dtype);
  const data = new info.array(n);
  if (data instanceof BigInt64Array || data instanceof BigUint64Array) data.fill(1n);
  else if (spec.dtype === DataType.FLOAT16) (data as Uint16Array).fill(floatToHalf(1));
  else (data as Float32Array).fill(1);
  return { dtype: spec.dtype, dims, data };
}

/**
 * The data in the model input's element type. Lossless conversions are made (narrower integers
 * to int32/int64, int64 to int32 when every value fits), and float64/float32 data go to the
 * model's float type (numpy's default float64 would otherwise be refused everywhere).
 */
export function convertDType(t: Tensor, spec: InputSpec, shown: string): Tensor {
  const want = spec.dtype;
  if (t.dtype === want) return t;
  const refuse = (extra = '') =>
    new UserError(
      `${shown}: ${sourceOf(t, spec.name)}: dtype ${dtypeName(t.dtype)} does not fit the model's ${dtypeName(want)} input${extra}; save it as ${dtypeName(want)}`,
    );
  if (isFloatDType(want)) {
    if (!isFloatDType(t.dtype)) throw refuse();
    const f = toFloat32(t);
    if (want === DataType.FLOAT) return { dtype: want, dims: t.dims, data: f };
    if (want === DataType.DOUBLE) return { dtype: want, dims: t.dims, data: Float64Array.from(f) };
    if (want === DataType.FLOAT16) return { dtype: want, dims: t.dims, data: Uint16Array.from(f, floatToHalf) };
    throw refuse();
  }
  if (want === DataType.BOOL) {
    if (t.dtype !== DataType.UINT8 && t.dtype !== DataType.INT8) throw refuse();
    return { dtype: want, dims: t.dims, data: Uint8Array.from(t.data as Uint8Array, (v) => (v ? 1 : 0)) };
  }
  if (isFloatDType(t.dtype) || t.dtype === DataType.BOOL) throw refuse();
  const values = toNumbers(t);
  const info = dtypeInfo(want);
  const [lo, hi] = intRange(want);
  for (let i = 0; i < values.length; i++) {
    const v = (t.data as ArrayLike<number | bigint>)[i];
    if (typeof v === 'bigint' ? v < BigInt(lo) || v > BigInt(hi) : v < lo || v > hi) {
      throw refuse(` (value ${v} at index ${i} does not fit)`);
    }
  }
  const data = new info.array(values.length);
  if (data instanceof BigInt64Array || data instanceof BigUint64Array) {
    const src = t.data as ArrayLike<number | bigint>;
    for (let i = 0; i < values.length; i++) data[i] = BigInt(src[i]);
  } else (data as Int32Array).set(values);
  return { dtype: want, dims: t.dims, data };
}

function intRange(dtype: DataType): [number, number] {
  switch (dtype) {
    case DataType.INT8:
      return [-128, 127];
    case DataType.UINT8:
      return [0, 255];
    case DataType.INT16:
      return [-32768, 32767];
    case DataType.UINT16:
      return [0, 65535];
    case DataType.INT32:
      return [-(2 ** 31), 2 ** 31 - 1];
    case DataType.UINT32:
      return [0, 2 ** 32 - 1];
    case DataType.UINT64:
      return [0, Number.MAX_SAFE_INTEGER];
    default:
      return [Number.MIN_SAFE_INTEGER, Number.MAX_SAFE_INTEGER];
  }
}

function showDims(dims: (number | string | null)[]): string {
  return `[${dims.map((d, i) => (i === 0 ? 'N' : d === null ? '?' : d)).join(', ')}]`;
}

/** Rank and fixed sizes as the model declares them; named dynamic axes equal across inputs. */
function checkShapes(inputs: Record<string, Tensor>, specs: InputSpec[], shown: string): void {
  const named = new Map<string, { size: number; input: string }>();
  for (const spec of specs) {
    const t = inputs[spec.name];
    const fits =
      t.dims.length === spec.dims.length &&
      spec.dims.every((d, i) => i === 0 || typeof d !== 'number' || d === t.dims[i]);
    if (!fits) {
      throw new UserError(
        `${shown}: ${sourceOf(t, spec.name)}: expected shape ${showDims(spec.dims)} (axis 0 = samples), found [${t.dims.join(', ')}]`,
      );
    }
    spec.dims.forEach((d, i) => {
      if (i === 0 || typeof d !== 'string') return;
      const seen = named.get(d);
      if (!seen) named.set(d, { size: t.dims[i], input: spec.name });
      else if (seen.size !== t.dims[i]) {
        throw new UserError(
          `${shown}: ${sourceOf(t, spec.name)} has ${d} = ${t.dims[i]} (axis ${i}) but input '${seen.input}' has ${d} = ${seen.size}; they must match`,
        );
      }
    });
  }
  // An axis named as a sum ('past_sequence + sequence', a cache model's mask) is the sum of its parts.
  for (const spec of specs) {
    spec.dims.forEach((d, i) => {
      if (i === 0 || typeof d !== 'string' || !d.includes('+')) return;
      const parts = d.split('+').map((p) => p.trim());
      const sizes = parts.map((p) => (/^\d+$/.test(p) ? Number(p) : named.get(p)?.size));
      if (sizes.some((n) => n === undefined)) return;
      const sum = (sizes as number[]).reduce((a, b) => a + b, 0);
      const t = inputs[spec.name];
      if (t.dims[i] !== sum) {
        const from = parts.map((p, k) => (/^\d+$/.test(p) ? p : `${p} = ${sizes[k]} (input '${named.get(p)?.input}')`)).join(' + ');
        throw new UserError(`${shown}: ${sourceOf(t, spec.name)} has ${d} = ${t.dims[i]} (axis ${i}) but ${from} is ${sum}; they must match`);
      }
    });
  }
}

function sampleCount(inputs: Record<string, Tensor>, shown: string): number {
  const entries = Object.entries(inputs);
  const [firstName, first] = entries[0];
  for (const [name, t] of entries) {
    if (t.dims[0] !== first.dims[0]) {
      throw new UserError(
        `${shown}: inputs have different sample counts (axis 0): ${sourceOf(first, firstName)} has ${first.dims[0]}, ${sourceOf(t, name)} has ${t.dims[0]}`,
      );
    }
  }
  if (first.dims[0] === 0) throw new UserError(`${shown}: the calibration set is empty (${sourceOf(first, firstName)} has 0 samples on axis 0)`);
  return first.dims[0];
}

/** A model with a fixed batch axis can only take batches of that size. */
function batchSizeFor(specs: InputSpec[], wanted: number): number {
  const fixed = specs.map((s) => s.dims[0]).find((d): d is number => typeof d === 'number');
  return fixed ?? wanted;
}

function chooseOutput(wanted: string | undefined, outputs: string[], shown: string): string {
  if (wanted !== undefined) {
    if (!outputs.includes(wanted)) {
      throw new UserError(`${shown}: output: the model has no output '${wanted}' (its outputs: ${outputs.join(', ')})`);
    }
    return wanted;
  }
  return outputs.includes('logits') ? 'logits' : outputs[0];
}

function chooseTokens(wanted: string | undefined, specs: InputSpec[], shown: string): string {
  // The mask and the positions are integers too, but never the tokens (as generation sets find them).
  const integer = specs.filter((s) => !isFloatDType(s.dtype) && s.dtype !== DataType.BOOL && s.name !== MASK_INPUT && s.name !== POSITIONS_INPUT);
  if (wanted !== undefined) {
    const spec = specs.find((s) => s.name === wanted);
    if (!spec) throw new UserError(`${shown}: tokens: the model has no input '${wanted}' (its inputs: ${specs.map((s) => s.name).join(', ')})`);
    if (!integer.includes(spec)) throw new UserError(`${shown}: tokens: input '${wanted}' is ${dtypeName(spec.dtype)}; the token input must hold integer ids`);
    return wanted;
  }
  if (integer.length === 1) return integer[0].name;
  throw new UserError(
    integer.length === 0
      ? `${shown}: task language-model needs an integer token input, and the model has none`
      : `${shown}: the model has several integer inputs (${integer.map((s) => s.name).join(', ')}); name the token input with "tokens"`,
  );
}

function checkLabels(labels: Tensor | undefined, file: string | undefined, count: number, shown: string): Int32Array {
  if (!labels) throw new UserError(`${shown}: task classification needs "labels" (an .npy file with one class index per sample)`);
  const n = labels.dims.length === 2 && labels.dims[1] === 1 ? labels.dims[0] : labels.dims.length === 1 ? labels.dims[0] : -1;
  if (n < 0) throw new UserError(`${shown}: labels (${file}): expected shape [N] (one class index per sample), found [${labels.dims.join(', ')}]`);
  if (n !== count) throw new UserError(`${shown}: labels (${file}) has ${n} labels but the inputs have ${count} samples; give one label per sample`);
  const out = new Int32Array(n);
  const src = labels.data as ArrayLike<number | bigint>;
  for (let i = 0; i < n; i++) {
    const v = Number(src[i]);
    if (!Number.isInteger(v) || v < 0) throw new UserError(`${shown}: labels (${file}): label ${i} is ${v}; labels are class indices 0, 1, 2, ...`);
    out[i] = v;
  }
  return out;
}

// ---------------------------------------------------------------------------------------------
// Batches
// ---------------------------------------------------------------------------------------------

/** Rows [start, end) of a tensor along axis 0, copied (so every batch owns its buffer). */
export function sliceRows(t: Tensor, start: number, end: number): Tensor {
  const row = elementCount(t.dims.slice(1));
  const data = t.data.slice(start * row, end * row);
  return { dtype: t.dtype, dims: [end - start, ...t.dims.slice(1)], data };
}

function toFeeds(inputs: Record<string, Tensor>): Feeds {
  const feeds: Feeds = {};
  for (const [name, t] of Object.entries(inputs)) feeds[name] = toOrtTensor(t);
  return feeds;
}

/** The set in batches of `batchSize` samples along axis 0 (the last one may be smaller). */
export function* batches(set: CalibrationSet, batchSize = set.batchSize): Generator<Batch> {
  for (let start = 0; start < set.count; start += batchSize) {
    const end = Math.min(set.count, start + batchSize);
    const slice: Record<string, Tensor> = {};
    for (const [name, t] of Object.entries(set.inputs)) slice[name] = sliceRows(t, start, end);
    yield { start, size: end - start, feeds: toFeeds(slice), labels: set.labels?.slice(start, end) };
  }
}

/** How many real tokens the set holds (the token input where the mask is 1), or null when the model reads no tokens. */
export function tokenCount(set: CalibrationSet): number | null {
  if (set.positions) return set.positions.compare.reduce((n, v) => n + v, 0);
  if (!set.tokens) return null;
  const mask = set.mask ? set.inputs[set.mask] : undefined;
  if (!mask) return elementCount(set.inputs[set.tokens].dims);
  return toNumbers(mask).filter((v) => v !== 0).length;
}

/**
 * Shard `index` of `count` (1-based) of a calibration set: samples [⌊(index-1)·S/count⌋,
 * ⌊index·S/count⌋), whole samples, in order. A generation set is split by prompts, before any
 * decoding. The shards of a set cover it exactly once.
 */
export function shardOf(set: CalibrationSet, index: number, count: number): CalibrationSet {
  const lo = Math.floor(((index - 1) * set.count) / count);
  const hi = Math.floor((index * set.count) / count);
  if (set.generation) {
    const g = set.generation;
    const generation = { ...g, prompts: g.prompts.slice(lo, hi), lines: g.lines.slice(lo, hi), references: g.references?.slice(lo, hi) };
    return promptSet(generation, { ...set, generation });
  }
  const inputs: Record<string, Tensor> = {};
  for (const [name, t] of Object.entries(set.inputs)) inputs[name] = sliceRows(t, lo, hi);
  const positions = set.positions && {
    length: set.positions.length,
    compare: set.positions.compare.slice(lo * set.positions.length, hi * set.positions.length),
    targets: set.positions.targets?.slice(lo * set.positions.length, hi * set.positions.length),
  };
  return { ...set, inputs, count: hi - lo, labels: set.labels?.slice(lo, hi), positions };
}

/** How many batches `batches(set)` yields. */
export function batchCount(set: CalibrationSet, batchSize = set.batchSize): number {
  return Math.ceil(set.count / batchSize);
}

/** The set's batches as the pruning engine takes them (PruneOptions.calibration); the first `count` only, when given. */
export function calibrationFeeds(set: CalibrationSet, count = Infinity): () => Iterable<Feeds> {
  return function* () {
    let n = 0;
    for (const b of batches(set)) {
      if (n++ >= count) return;
      yield b.feeds;
    }
  };
}
