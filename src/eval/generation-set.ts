import * as fs from 'fs';
import * as path from 'path';
import { z } from 'zod';
import { UserError } from '../errors';
import { POSITIONS_INPUT, maxSequenceLength, tablesIndexedBy } from '../graph/sequence-limits';
import { DataType, dtypeName, isFloatDType } from '../onnx/dtype';
import { OnnxModel } from '../onnx/model';
import { FixedSizes, InputSpec, graphInputs, graphOutputs } from '../onnx/runtime';
import { Tensor, intTensor } from '../onnx/tensor';
import { displayPath } from '../util/paths';
import { parseWith } from '../util/validation';
import type { CalibrationSet, RowsThatCount } from './calibration';
import { DecoderInputs } from './generate';
import { PAST_PREFIX, PRESENT_PREFIX, emptyPast, isPastInput, presentOf } from '../onnx/kv-cache';
import { pastWithSizes } from './kv-cache';
import { readTokenizer } from './token-text';

/**
 * `task: generation` sets (docs/contracts.md, "Generation sets"): prompts and references as token
 * ids, one JSON line each, decoded greedily. Loading checks every line against the model (ids
 * inside its vocabulary, lengths inside its limit) and finds how the model is fed.
 */

/** The keys calibration.json takes for a generation set (the loader's schema merges them). */
export const GenerationKeys = {
  'max-new-tokens': z.number({ error: 'a positive whole number of tokens' }).int({ error: 'a positive whole number of tokens' }).positive({ error: 'a positive whole number of tokens' }).optional(),
  'eos-token-id': z
    .union([z.number().int().nonnegative(), z.array(z.number().int().nonnegative()).min(1)], { error: 'a token id, or a list of token ids' })
    .optional(),
  'max-length': z.number({ error: 'a positive whole number of tokens' }).int({ error: 'a positive whole number of tokens' }).positive({ error: 'a positive whole number of tokens' }).optional(),
  tokenizer: z.string({ error: 'the name of a tokenizer.json file, or "bytes"' }).optional(),
};

const PromptLine = z.strictObject({
  prompt: z.array(z.number({ error: 'a token id' }).int({ error: 'a whole token id' }), { error: 'a list of token ids' }),
  reference: z.array(z.number({ error: 'a token id' }).int({ error: 'a whole token id' }), { error: 'a list of token ids' }).optional(),
});

export interface GenerationSpec {
  /** The prompts file, as messages name it. */
  file: string;
  /** Line number of each sample in the file. */
  lines: number[];
  prompts: number[][];
  /** One per prompt, or none (then only the agreement metrics exist). */
  references?: number[][];
  maxNewTokens: number;
  eos: number[];
  /** 'bytes' or the path of a tokenizer.json: only decodes examples for the report. */
  tokenizer?: string;
  decoder: DecoderInputs;
}

interface GenerationFileKeys {
  samples?: string;
  inputs?: unknown;
  labels?: unknown;
  tokens?: string;
  output?: string;
  'max-new-tokens'?: number;
  'eos-token-id'?: number | number[];
  'max-length'?: number;
  tokenizer?: string;
}

/** Reads a generation set named by calibration.json at `specFile` and checks it against the model. */
export function loadGenerationSpec(spec: GenerationFileKeys, specFile: string, model: OnnxModel, cacheSizes: FixedSizes = {}): GenerationSpec {
  const shown = displayPath(specFile);
  if (spec.inputs !== undefined || spec.labels !== undefined) {
    throw new UserError(`${shown}: task generation reads "samples" (a .jsonl file of prompts); remove "${spec.inputs !== undefined ? 'inputs' : 'labels'}"`);
  }
  if (!spec.samples) throw new UserError(`${shown}: samples: missing: name the .jsonl file of prompts ({"prompt": [ids], "reference": [ids]} a line)`);
  if (spec['max-new-tokens'] === undefined) throw new UserError(`${shown}: max-new-tokens: missing: the most tokens to generate per prompt (e.g. 32)`);
  const samplesFile = path.resolve(path.dirname(specFile), spec.samples);
  if (!fs.existsSync(samplesFile)) throw new UserError(`${shown}: samples: file not found: ${displayPath(samplesFile)}`);
  const decoder = decoderInputs(model, spec.tokens, spec.output, shown, cacheSizes);
  const eosIds = spec['eos-token-id'];
  const eos = eosIds === undefined ? [] : Array.isArray(eosIds) ? eosIds : [eosIds];
  const tokenizer = spec.tokenizer === undefined || spec.tokenizer === 'bytes' ? spec.tokenizer : path.resolve(path.dirname(specFile), spec.tokenizer);
  if (tokenizer && tokenizer !== 'bytes') readTokenizer(tokenizer, `${shown}: tokenizer`); // refuse a bad file now, not after the search
  const set = readPrompts(samplesFile, spec['max-new-tokens'], eos, tokenizer, decoder);
  checkAgainstModel(set, model, spec['max-length'], shown);
  return set;
}

function readPrompts(file: string, maxNewTokens: number, eos: number[], tokenizer: string | undefined, decoder: DecoderInputs): GenerationSpec {
  const shown = displayPath(file);
  const prompts: number[][] = [];
  const references: number[][] = [];
  const lines: number[] = [];
  let firstWithReference: boolean | undefined;
  fs.readFileSync(file, 'utf8')
    .split('\n')
    .forEach((text, i) => {
      if (!text.trim()) return;
      const where = `${shown} line ${i + 1}`;
      let json: unknown;
      try {
        json = JSON.parse(text);
      } catch (e) {
        throw new UserError(`${where}: not valid JSON (${(e as Error).message})`);
      }
      const sample = parseWith(PromptLine, json, where);
      if (sample.prompt.length === 0) throw new UserError(`${where}: prompt is empty; every prompt needs at least one token id`);
      const hasReference = sample.reference !== undefined;
      if (firstWithReference === undefined) firstWithReference = hasReference;
      else if (hasReference !== firstWithReference) {
        throw new UserError(`${where}: ${hasReference ? 'has a "reference" but' : 'has no "reference" but'} line ${lines[0]} ${firstWithReference ? 'has one' : 'has none'}; give a reference on every line or on none`);
      }
      prompts.push(sample.prompt);
      if (sample.reference) references.push(sample.reference);
      lines.push(i + 1);
    });
  if (prompts.length === 0) throw new UserError(`${shown}: the generation set is empty: add one {"prompt": [ids], "reference": [ids]} a line`);
  return { file: shown, lines, prompts, references: firstWithReference ? references : undefined, maxNewTokens, eos, tokenizer, decoder };
}

/** Every id inside the vocabulary and every prompt plus its generation inside the model's limit. */
function checkAgainstModel(set: GenerationSpec, model: OnnxModel, maxLength: number | undefined, shown: string): void {
  const vocabulary = vocabularySize(model, set.decoder);
  const limit = maxLength !== undefined ? { length: maxLength, why: `${shown} gives max-length ${maxLength}` } : maxSequenceLength(model, set.decoder.tokens.name);
  set.prompts.forEach((prompt, i) => {
    const where = `${set.file} line ${set.lines[i]}`;
    const fields: [string, readonly number[]][] = [['prompt', prompt]];
    if (set.references) fields.push(['reference', set.references[i]]);
    for (const [field, ids] of fields) {
      const bad = ids.find((id) => id < 0 || (vocabulary !== undefined && id >= vocabulary.size));
      if (bad !== undefined) {
        throw new UserError(`${where}: ${field} token ${bad} is outside the model's vocabulary (${vocabulary ? `ids 0 to ${vocabulary.size - 1}, ${vocabulary.why}` : 'ids start at 0'}); was the set made for another tokenizer?`);
      }
    }
    if (set.tokenizer === 'bytes') {
      const wide = [...prompt, ...(set.references?.[i] ?? [])].find((id) => id > 255);
      if (wide !== undefined) throw new UserError(`${where}: token ${wide} is not a byte, and the tokenizer is "bytes"; name the model's tokenizer.json instead`);
    }
    if (limit) {
      const longest = Math.max(prompt.length + set.maxNewTokens, prompt.length + (set.references?.[i].length ?? 0));
      if (longest > limit.length) {
        throw new UserError(
          `${where}: the prompt (${prompt.length} tokens) plus ${set.maxNewTokens} new tokens is longer than the ${limit.length} the model accepts (${limit.why}); shorten the prompt or lower max-new-tokens`,
        );
      }
    }
  });
}

/** The vocabulary's size: rows of the token embedding, or the width of the declared logits. */
function vocabularySize(model: OnnxModel, decoder: DecoderInputs): { size: number; why: string } | undefined {
  const tables = tablesIndexedBy(model, decoder.tokens.name);
  if (tables.length) {
    const t = tables.reduce((a, b) => (b.rows < a.rows ? b : a));
    return { size: t.rows, why: `the rows of '${t.table}'` };
  }
  const width = graphOutputs(model).find((o) => o.name === decoder.logits)?.dims.at(-1);
  return typeof width === 'number' ? { size: width, why: `the width of output '${decoder.logits}'` } : undefined;
}

const MASK = 'attention_mask';

/** The model's inputs by role: token ids, mask, positions and the cache's past/present pairs. */
function decoderInputs(model: OnnxModel, tokensName: string | undefined, outputName: string | undefined, shown: string, cacheSizes: FixedSizes): DecoderInputs {
  const specs = graphInputs(model);
  const outputs = graphOutputs(model).map((o) => o.name);
  const cache = specs
    .filter((s) => isPastInput(s.name))
    .map((declared) => {
      const present = presentOf(model, declared.name);
      if (!present) throw new UserError(`${shown}: the model takes '${declared.name}' but has no output '${PRESENT_PREFIX + declared.name.slice(PAST_PREFIX.length)}' to carry the cache to the next step`);
      if (!isFloatDType(declared.dtype)) {
        throw new UserError(`${shown}: cache input '${declared.name}' is ${dtypeName(declared.dtype)}; a Hugging Face cache is float [batch, heads, past_sequence, head_size]`);
      }
      const past = pastWithSizes(model, declared, new Map(), shown, cacheSizes);
      return { past, present };
    });
  const roles = new Set([MASK, POSITIONS_INPUT, ...cache.map((c) => c.past.name)]);
  const integer = specs.filter((s) => !roles.has(s.name) && !isFloatDType(s.dtype) && s.dtype !== DataType.BOOL);
  let tokens: InputSpec | undefined;
  if (tokensName !== undefined) {
    tokens = integer.find((s) => s.name === tokensName);
    if (!tokens) throw new UserError(`${shown}: tokens: the model has no integer input '${tokensName}' (its inputs: ${specs.map((s) => s.name).join(', ')})`);
  } else {
    tokens = integer.length === 1 ? integer[0] : integer.find((s) => s.name === 'input_ids');
    if (!tokens) {
      throw new UserError(
        integer.length === 0 ? `${shown}: task generation needs an integer token input, and the model has none` : `${shown}: the model has several integer inputs (${integer.map((s) => s.name).join(', ')}); name the token input with "tokens"`,
      );
    }
  }
  const known = new Set([tokens.name, ...roles]);
  const other = specs.filter((s) => !known.has(s.name));
  if (other.length) {
    throw new UserError(
      `${shown}: task generation feeds the token ids, ${MASK}, ${POSITIONS_INPUT} and ${PAST_PREFIX}.* inputs; the model also takes ${other.map((s) => `'${s.name}'`).join(', ')}, which a generation set cannot fill`,
    );
  }
  if (outputName !== undefined && !outputs.includes(outputName)) throw new UserError(`${shown}: output: the model has no output '${outputName}' (its outputs: ${outputs.join(', ')})`);
  const logits = outputName ?? (outputs.includes('logits') ? 'logits' : outputs[0]);
  return { tokens, mask: specs.find((s) => s.name === MASK), positions: specs.find((s) => s.name === POSITIONS_INPUT), cache, logits };
}

/** Which rows of a sequence count: the positions that predict, and what they predict (or -1). */
type RowRule = (sample: number, sequenceLength: number) => { compare: [number, number]; targets?: readonly number[] };

/**
 * Whole sequences (prompt and continuation) as a calibration set the model runs in one pass:
 * right-padded (a causal model's real positions never see the pads), with a mask of ones and
 * zeros where the model has one, positions from 0, and an empty cache. `rule` says which rows
 * count for the comparisons and which tokens they should predict.
 */
export function sequenceSet(spec: GenerationSpec, base: CalibrationSet, sequences: readonly (readonly number[])[], rule: RowRule): CalibrationSet {
  const { decoder } = spec;
  const count = sequences.length;
  const length = Math.max(1, ...sequences.map((s) => s.length));
  const ids = new Array<number>(count * length).fill(0);
  const mask = new Array<number>(count * length).fill(0);
  const compare = new Uint8Array(count * length);
  const targets = new Int32Array(count * length).fill(-1);
  let anyTarget = false;
  sequences.forEach((s, i) => {
    s.forEach((t, j) => {
      ids[i * length + j] = t;
      mask[i * length + j] = 1;
    });
    const r = rule(i, s.length);
    for (let j = r.compare[0]; j <= r.compare[1]; j++) compare[i * length + j] = 1;
    r.targets?.forEach((t, k) => {
      targets[i * length + r.compare[0] + k] = t;
      anyTarget = true;
    });
  });
  const inputs: Record<string, Tensor> = { [decoder.tokens.name]: intTensor(ids, decoder.tokens.dtype, [count, length]) };
  if (decoder.mask) inputs[decoder.mask.name] = intTensor(mask, decoder.mask.dtype, [count, length]);
  if (decoder.positions) inputs[decoder.positions.name] = intTensor(sequences.flatMap(() => Array.from({ length }, (_, j) => j)), decoder.positions.dtype, [count, length]);
  for (const { past } of decoder.cache) inputs[past.name] = emptyPast(past, count);
  const positions: RowsThatCount = { length, compare, targets: anyTarget ? targets : undefined };
  return { ...base, inputs, count, positions, output: decoder.logits, tokens: decoder.tokens.name };
}


/** The prompts alone as a set: what tracing, statistics and MACs see before the base has generated. */
export function promptSet(spec: GenerationSpec, base: CalibrationSet): CalibrationSet {
  return sequenceSet(spec, base, spec.prompts, (_, n) => ({ compare: [0, n - 1] }));
}

/** The base's generations appended to their prompts: rows that chose a generated token (or the end) count. */
export function teacherForcedSet(spec: GenerationSpec, base: CalibrationSet, generations: readonly (readonly number[])[]): CalibrationSet {
  const sequences = spec.prompts.map((p, i) => [...p, ...generations[i]]);
  return sequenceSet(spec, base, sequences, (i) => {
    const p = spec.prompts[i].length;
    const g = generations[i].length;
    // The row after the last generated token chose the end-of-sequence id, when decoding stopped on one.
    const last = g < spec.maxNewTokens ? p + g - 1 : p + g - 2;
    return { compare: [p - 1, last] };
  });
}

/** The references appended to their prompts: rows that predict a reference token count, with that token as target. */
export function referenceSet(spec: GenerationSpec, base: CalibrationSet): CalibrationSet | undefined {
  const references = spec.references;
  if (!references) return undefined;
  const sequences = spec.prompts.map((p, i) => [...p, ...references[i]]);
  return sequenceSet(spec, base, sequences, (i) => {
    const p = spec.prompts[i].length;
    return { compare: [p - 1, p + references[i].length - 2], targets: references[i] };
  });
}
