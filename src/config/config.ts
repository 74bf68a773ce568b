import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import YAML from 'yaml';
import { z } from 'zod';
import { UserError } from '../errors';
import { DEFAULT_LATENCY, LatencyOptions } from '../eval/latency';
import { METRIC_NAMES, MetricName } from '../eval/metric-names';
import { parseMebibytes } from '../eval/memory';
import { GateRule, OnInconclusive } from '../gate/gate';
import { BOUND_KINDS, BoundKind, METRICS, isTimed } from '../gate/metrics';
import { EXTERNAL_DATA_MODES, ExternalDataMode } from '../onnx/write';
import { QUANTIZE_METHODS, QUANTIZE_MODES, QuantizeMethod, QuantizeMode } from '../quantize/options';
import { ALLOCATIONS } from '../prune/types';
import type { Allocation, CompensationChoice, Importance, Structure } from '../prune/types';
import { quoted } from '../util/format';
import { checkedPath, displayPath } from '../util/paths';
import { closest, keyPath, parseWith } from '../util/validation';

export const DEFAULT_CONFIG = 'prune-gate.yml';

export interface PruneSettings {
  target: number | 'auto';
  maxTarget: number;
  structures: Structure[];
  importance: Importance;
  /** Widths kept as multiples of this (1: any width; auto: what is not slower than the base here). */
  align: number | 'auto';
  compensate: CompensationChoice;
  allocation: Allocation;
  steps: number;
  /** A quantized input's weights after pruning: in their format (keep, the default) or float (docs/quantization.md). */
  quantized?: 'keep' | 'float';
}

export interface Config {
  /** The config file (absolute), or undefined when running on flags alone. */
  file?: string;
  /** Absolute paths, resolved against the config file's folder (or the working folder for flags). */
  model?: string;
  calibration?: string;
  prune: PruneSettings;
  quantize: QuantizeMode;
  /** How int4/int8 MatMulNBits codes are chosen (docs/quantization.md); undefined: auto. */
  quantizeMethod?: QuantizeMethod;
  /** Keep the exporter's intermediate tensor and node names in a quantized artifact (default: shortened). */
  keepNames: boolean;
  /** Where written models keep their weights (auto: as the input model did). */
  externalData: ExternalDataMode;
  gate: GateRule[];
  /** How latency is timed, and what a latency bound the timing cannot decide counts as. */
  latency: LatencySettings;
  /**
   * The target device: onnxruntime's intra-op threads for every session (undefined: every core),
   * and the bytes of memory the gate may use (default: this machine's RAM).
   */
  device: { threads?: number; memory: number };
  /** Seconds the whole search may take; the search plans its passes to fit (docs/pruning.md, "Cost"). */
  budget: number;
}

export type LatencySettings = Omit<LatencyOptions, 'settled'> & { time: number; noise: number; onInconclusive: OnInconclusive };

export const DEFAULT_LATENCY_SETTINGS: LatencySettings = { ...DEFAULT_LATENCY, onInconclusive: 'fail' };

/** The search's budget when none is given: ten minutes. */
export const DEFAULT_BUDGET = 600;

export const DEFAULT_PRUNE: PruneSettings = {
  target: 'auto',
  maxTarget: 0.5,
  structures: ['ffn', 'heads', 'channels'],
  importance: 'activation',
  align: 'auto',
  compensate: 'auto',
  allocation: 'auto',
  steps: 5,
};

const fraction = (what: string) =>
  z.number({ error: what }).gt(0, { error: what }).lt(1, { error: what });

const ConfigFile = z.strictObject({
  model: z.string({ error: 'a path to an .onnx file' }).optional(),
  calibration: z.string({ error: 'a path to a calibration folder' }).optional(),
  prune: z
    .strictObject({
      // 0 prunes nothing: with quantize, the gate judges the quantized base model.
      target: z
        .union([z.number(), z.string()], { error: (i) => targetExpected(true, i.input) })
        .transform((v, ctx) => targetValue(v, true) ?? (ctx.addIssue({ code: 'custom', message: targetExpected(true, v) }), z.NEVER))
        .optional(),
      'max-target': fraction('a fraction of parameters between 0 and 1 (0.6)').optional(),
      structures: z
        .array(z.enum(['ffn', 'heads', 'channels', 'blocks'], { error: (i) => `unknown structure '${String(i.input)}' (expected ffn, heads, channels, blocks)` }), {
          error: 'a list of ffn, heads, channels, blocks',
        })
        .min(1, { error: 'at least one of ffn, heads, channels, blocks' })
        .optional(),
      importance: z.enum(['activation', 'magnitude']).optional(),
      compensate: z.enum(['auto', 'none', 'bias', 'reconstruct']).optional(),
      allocation: z.enum(ALLOCATIONS).optional(),
      align: z
        .union([z.literal('auto'), z.number({ error: 'auto, or a whole number of units >= 1 (8 keeps widths multiples of 8)' }).int({ error: 'a whole number of units >= 1' }).min(1, { error: 'a whole number of units >= 1' }).max(256, { error: 'at most 256' })], {
          error: 'auto, or a whole number of units >= 1 (8 keeps widths multiples of 8)',
        })
        .optional(),
      steps: z.number({ error: 'a whole number of steps >= 1' }).int({ error: 'a whole number of steps >= 1' }).min(1, { error: 'a whole number of steps >= 1' }).max(100, { error: 'at most 100 steps' }).optional(),
      quantized: z.enum(['keep', 'float']).optional(),
    })
    .optional(),
  quantize: z.enum(QUANTIZE_MODES).optional(),
  'quantize-method': z.enum(QUANTIZE_METHODS).optional(),
  'keep-names': z.boolean({ error: 'true or false' }).optional(),
  'external-data': z.enum(EXTERNAL_DATA_MODES).optional(),
  gate: z.record(z.string(), z.unknown(), { error: 'a mapping of metric names to bounds' }).optional(),
  device: z
    .strictObject({
      threads: z.number({ error: 'a whole number of threads >= 1' }).int({ error: 'a whole number of threads >= 1' }).min(1, { error: 'a whole number of threads >= 1' }).max(1024, { error: 'at most 1024 threads' }).optional(),
      memory: z
        .union([z.number(), z.string()], { error: (i) => memoryExpected(i.input) })
        .transform((v, ctx) => byteSize(v) ?? (ctx.addIssue({ code: 'custom', message: memoryExpected(v) }), z.NEVER))
        .optional(),
    })
    .optional(),
  budget: z
    .union([z.number(), z.string()], { error: (i) => budgetExpected(i.input) })
    .transform((v, ctx) => durationSeconds(v) ?? (ctx.addIssue({ code: 'custom', message: budgetExpected(v) }), z.NEVER))
    .optional(),
  latency: z
    .strictObject({
      warmup: z.number({ error: 'a whole number >= 0' }).int({ error: 'a whole number >= 0' }).min(0, { error: 'a whole number >= 0' }).optional(),
      // The most timed runs of each model; how many is chosen by `time` (docs/contracts.md, "Latency").
      runs: z.number({ error: 'a whole number >= 1 (the most timed runs of each model)' }).int({ error: 'a whole number >= 1' }).min(1, { error: 'a whole number >= 1' }).optional(),
      time: z
        .union([z.number(), z.string()], { error: (i) => latencyTimeExpected(i.input) })
        .transform((v, ctx) => durationSeconds(v) ?? (ctx.addIssue({ code: 'custom', message: latencyTimeExpected(v) }), z.NEVER))
        .optional(),
      noise: z
        .union([z.number(), z.string()], { error: (i) => noiseExpected(i.input) })
        .transform((v, ctx) => noiseShare(v) ?? (ctx.addIssue({ code: 'custom', message: noiseExpected(v) }), z.NEVER))
        .optional(),
      'on-inconclusive': z.enum(['fail', 'pass']).optional(),
    })
    .optional(),
});
type ConfigFile = z.output<typeof ConfigFile>;

/**
 * Reads and validates a config file. Every problem is one line naming the file and the key:
 * "prune-gate.yml: prune.targt: unknown key (did you mean target?)".
 */
export function loadConfig(file: string): Config {
  const abs = path.resolve(file);
  const shown = displayPath(abs);
  let text: string;
  try {
    text = fs.readFileSync(abs, 'utf8');
  } catch (e) {
    const code = (e as NodeJS.ErrnoException).code;
    if (code === 'ENOENT') throw new UserError(`config file not found: ${shown}`);
    if (code === 'EISDIR') throw new UserError(`config file ${shown} is a folder: name the .yml file in it`);
    throw new UserError(`cannot read config file ${shown}: ${(e as Error).message}`);
  }
  return parseConfig(text, abs);
}

/** Validates config text; `file` names it in messages and anchors its relative paths. */
export function parseConfig(text: string, file: string): Config {
  const shown = displayPath(file);
  const doc = YAML.parseDocument(text, { uniqueKeys: true });
  if (doc.errors.length > 0) {
    const err = doc.errors[0];
    const line = err.linePos?.[0].line;
    const message = err.message.split('\n')[0].replace(/ at line \d+, column \d+:?$/, '');
    throw new UserError(`${shown}:${line ? ` line ${line}:` : ''} not valid YAML: ${message}`);
  }
  const data: unknown = doc.toJS() ?? {};
  if (typeof data !== 'object' || data === null || Array.isArray(data)) {
    throw new UserError(`${shown}: expected a mapping of keys (model, calibration, prune, quantize, gate)`);
  }
  const raw = parseWith(ConfigFile, data, shown);
  const dir = path.dirname(path.resolve(file));
  const config = fromFile(raw, dir, shown);
  config.file = path.resolve(file);
  return config;
}

function fromFile(raw: ConfigFile, dir: string, shown: string): Config {
  const p = raw.prune ?? {};
  return {
    model: raw.model !== undefined ? checkedPath(raw.model, `${shown}: model`, 'file', dir) : undefined,
    calibration: raw.calibration !== undefined ? checkedPath(raw.calibration, `${shown}: calibration`, 'file or folder', dir) : undefined,
    prune: {
      target: p.target ?? DEFAULT_PRUNE.target,
      maxTarget: p['max-target'] ?? DEFAULT_PRUNE.maxTarget,
      structures: p.structures ? [...new Set(p.structures)] : DEFAULT_PRUNE.structures,
      importance: p.importance ?? DEFAULT_PRUNE.importance,
      align: p.align ?? DEFAULT_PRUNE.align,
      compensate: p.compensate ?? DEFAULT_PRUNE.compensate,
      allocation: p.allocation ?? DEFAULT_PRUNE.allocation,
      steps: p.steps ?? DEFAULT_PRUNE.steps,
      ...(p.quantized ? { quantized: p.quantized } : {}),
    },
    quantize: raw.quantize ?? 'none',
    ...(raw['quantize-method'] ? { quantizeMethod: raw['quantize-method'] } : {}),
    keepNames: raw['keep-names'] ?? false,
    externalData: raw['external-data'] ?? 'auto',
    gate: parseGate(raw.gate ?? {}, shown),
    latency: {
      warmup: raw.latency?.warmup ?? DEFAULT_LATENCY_SETTINGS.warmup,
      time: raw.latency?.time ?? DEFAULT_LATENCY_SETTINGS.time,
      noise: raw.latency?.noise ?? DEFAULT_LATENCY_SETTINGS.noise,
      ...(raw.latency?.runs !== undefined ? { runs: raw.latency.runs } : {}),
      onInconclusive: raw.latency?.['on-inconclusive'] ?? DEFAULT_LATENCY_SETTINGS.onInconclusive,
    },
    device: { threads: raw.device?.threads, memory: raw.device?.memory ?? os.totalmem() },
    budget: raw.budget ?? DEFAULT_BUDGET,
  };
}

const BYTE_UNITS: Record<string, number> = { kb: 1e3, kib: 2 ** 10, mb: 1e6, gb: 1e9, tb: 1e12, mib: 2 ** 20, gib: 2 ** 30, tib: 2 ** 40 };

/** `device.memory`: a size with its unit (16GB, 12 GiB, 512MiB), in bytes. */
export function byteSize(value: unknown): number | undefined {
  const m = typeof value === 'string' ? /^\s*(\d+(?:\.\d+)?|\.\d+)\s*([a-z]+)\s*$/i.exec(value) : null;
  const unit = m ? BYTE_UNITS[m[2].toLowerCase()] : undefined;
  if (!m || !unit) return undefined;
  const bytes = Math.round(Number(m[1]) * unit);
  return bytes > 0 ? bytes : undefined;
}

function memoryExpected(value: unknown): string {
  return `a memory size with its unit, e.g. 16GB or 12GiB (KB, MB, GB, TB, KiB, MiB, GiB, TiB), found ${quoted(value)}`;
}

/** The configuration used when there is no config file: defaults, no bounds. */
export function defaultConfig(): Config {
  return { prune: { ...DEFAULT_PRUNE }, quantize: 'none', keepNames: false, externalData: 'auto', gate: [], latency: { ...DEFAULT_LATENCY_SETTINGS }, device: { memory: os.totalmem() }, budget: DEFAULT_BUDGET };
}


/**
 * The gate section: metric name -> one bound, e.g. perplexity: { max-increase: 5% }. Parsed by
 * hand rather than by a schema so that each mistake gets its own message (which bounds a metric
 * takes, what a bound value looks like).
 */
export function parseGate(gate: Record<string, unknown>, shown: string): GateRule[] {
  const rules: GateRule[] = [];
  for (const [metric, spec] of Object.entries(gate)) {
    const at = keyPath(['gate', metric]);
    if (!(METRIC_NAMES as readonly string[]).includes(metric)) {
      const hint = closest(metric, METRIC_NAMES);
      throw new UserError(`${shown}: ${at}: unknown metric${hint ? ` (did you mean ${hint}?)` : ` (metrics: ${METRIC_NAMES.join(', ')})`}`);
    }
    const name = metric as MetricName;
    const allowed = METRICS[name].bounds;
    if (typeof spec !== 'object' || spec === null || Array.isArray(spec)) {
      throw new UserError(`${shown}: ${at}: expected a bound such as { ${allowed[0]}: ${exampleValue(allowed[0])} }, found ${JSON.stringify(spec)}`);
    }
    const entries = Object.entries(spec);
    if (entries.length !== 1) {
      throw new UserError(`${shown}: ${at}: give exactly one bound (${allowed.join(' or ')}), found ${entries.length}`);
    }
    const [bound, value] = entries[0];
    if (!(allowed as readonly string[]).includes(bound)) {
      const what = (BOUND_KINDS as readonly string[]).includes(bound) ? 'is not a bound of this metric' : 'unknown bound';
      throw new UserError(`${shown}: ${at}.${bound}: ${what}; ${metric} takes ${allowed.join(' or ')}`);
    }
    rules.push(parseRule(name, bound as BoundKind, value, `${shown}: ${at}.${bound}`));
  }
  return rules;
}

function exampleValue(bound: BoundKind): string {
  return bound === 'max-drop' ? '0.01' : bound === 'max-increase' ? '5%' : bound === 'min-speedup' ? '1.2' : '0.5';
}

/** A bound's value: a plain number in the metric's unit, or "N%" relative to the base model. */
export function parseRule(metric: MetricName, bound: BoundKind, value: unknown, where: string): GateRule {
  if (metric === 'memory' && bound === 'max') {
    const mib = parseMebibytes(value);
    if (mib === undefined) throw new UserError(`${where}: expected an amount of memory such as 512 MiB or 1 GiB (a plain number is MiB), found ${JSON.stringify(value)}`);
    return { metric, bound, value: mib, percent: false, text: `max ${typeof value === 'string' ? value.trim() : `${value} MiB`}` };
  }
  let number: number;
  let percent = false;
  if (typeof value === 'number' && Number.isFinite(value)) number = value;
  else if (typeof value === 'string' && /^\s*[-+]?(\d+(\.\d*)?|\.\d+)\s*%?\s*$/.test(value)) {
    percent = value.includes('%');
    number = parseFloat(value.replace('%', ''));
  } else {
    throw new UserError(`${where}: expected a number in the metric's unit (e.g. 0.01) or a percentage of the base model's value (e.g. 5%), found ${JSON.stringify(value)}`);
  }
  if (percent && bound === 'min-speedup') {
    throw new UserError(`${where}: min-speedup takes a factor such as 1.2 (20 % faster), not a percentage`);
  }
  // min and max are thresholds on the value itself (a cosine can be negative); the others are
  // amounts of change and must not be negative.
  const positive = bound === 'min-speedup' || bound === 'max-ratio';
  if ((bound !== 'min' && bound !== 'max' && number < 0) || (positive && number === 0)) {
    throw new UserError(`${where}: must be ${positive ? 'greater than 0' : '0 or more'}, found ${number}`);
  }
  checkUnit(metric, bound, number, percent, where);
  return { metric, bound, value: number, percent, text: `${bound} ${percent ? `${number}%` : number}` };
}

/** A number shown without float noise: 0.15, not 0.15000000000000002. */
const plain = (n: number) => String(Number(n.toPrecision(6)));

/**
 * A plain number that cannot be meant for its metric, refused with the likely spelling: a
 * fraction metric's min or max-drop written in points (99 for 0.99), a ratio that pruning can
 * only lower written above 1 (1.5 for "1.5x smaller"). Such a bound either fails every run,
 * blaming the model, or never checks anything. Perplexity's max-increase depends on the base
 * model's value: checkRulesAgainstBase (gate.ts) judges it once that is known.
 */
function checkUnit(metric: MetricName, bound: BoundKind, number: number, percent: boolean, where: string): void {
  const atMostOne = METRICS[metric].unit === 'fraction' || metric === 'cosine';
  if (!percent && atMostOne && bound === 'min' && number > 1) {
    throw new UserError(`${where}: ${number} is above 1, which ${metric} never reaches; write ${plain(number / 100)} or ${number}% (of the base model's)`);
  }
  if (!percent && METRICS[metric].unit === 'fraction' && bound === 'max-drop' && number >= 1) {
    throw new UserError(`${where}: ${number} lets all of ${metric} (a fraction) go, so it never fails; write ${plain(number / 100)} for ${number} ${number === 1 ? 'point' : 'points'} or ${number}% (of the base model's)`);
  }
  const shrinks = metric === 'size' || metric === 'params' || metric === 'macs';
  const ratio = percent ? number / 100 : number;
  if (shrinks && bound === 'max-ratio' && ratio > 1) {
    throw new UserError(`${where}: ${percent ? `${number}%` : number} is above 1, and pruning only makes ${metric} smaller, so it never fails; write ${plain(1 / ratio)} for ${plain(ratio)}x smaller (max-ratio is candidate / base)`);
  }
  // A timed metric's ratio is a factor of a few at most (pruning and quantization change a
  // model's speed that much): a factor this large is a percentage written without its sign.
  if (isTimed(metric) && !percent && number >= TIMED_FACTOR_LIMIT) {
    if (bound === 'min-speedup') {
      throw new UserError(`${where}: ${number} asks the candidate to be ${number}x as fast as the base, which pruning and quantization do not reach, so it always fails; write ${plain(1 + number / 100)} for ${number} % faster`);
    }
    if (bound === 'max-ratio') {
      throw new UserError(`${where}: ${number} lets the candidate take ${number}x the base's time, so it never fails; write ${plain(number / 100)} or ${number}% (of the base model's)`);
    }
  }
}

/** A speedup or time ratio from this up is refused (checkUnit). */
const TIMED_FACTOR_LIMIT = 10;

/**
 * A target as a user writes it (a number in the config file; text on the command line and in the
 * action's inputs): a fraction of the parameters from 0 up to 1 (1 excluded), or `auto` for the
 * gradual search where `auto` is allowed. Undefined when it is neither.
 */
function targetValue(value: unknown, auto: boolean): number | 'auto' | undefined {
  if (auto && typeof value === 'string' && value.trim() === 'auto') return 'auto';
  const text = typeof value === 'string' ? value.trim() : undefined;
  const number = /^(\d+(\.\d*)?|\.\d+)$/;
  // "30%" is 0.3: a share of the parameters written as a percentage.
  const percent = text?.endsWith('%') && number.test(text.slice(0, -1).trim()) ? Number(text.slice(0, -1)) / 100 : undefined;
  const n = typeof value === 'number' ? value : percent ?? (text !== undefined && number.test(text) ? Number(text) : NaN);
  return n >= 0 && n < 1 ? n : undefined;
}

/**
 * A duration as a user writes it: seconds as a number, or text such as 90s, 10m, 1h30m, 2h
 * (hours, minutes and seconds in that order, each optional). Undefined when it is not one, or
 * not above zero.
 */
export function durationSeconds(value: unknown): number | undefined {
  if (typeof value === 'number') return Number.isFinite(value) && value > 0 ? value : undefined;
  if (typeof value !== 'string') return undefined;
  const text = value.trim();
  if (/^\d+(\.\d+)?$/.test(text)) return durationSeconds(Number(text));
  const m = /^(?:(\d+(?:\.\d+)?)h)?\s*(?:(\d+(?:\.\d+)?)m)?\s*(?:(\d+(?:\.\d+)?)s)?$/.exec(text);
  if (!m || !(m[1] || m[2] || m[3])) return undefined;
  const seconds = Number(m[1] ?? 0) * 3600 + Number(m[2] ?? 0) * 60 + Number(m[3] ?? 0);
  return seconds > 0 ? seconds : undefined;
}

/** A share written as a fraction (0.03) or a percentage (3%), from 0 up to a half. */
function noiseShare(value: unknown): number | undefined {
  const text = typeof value === 'string' ? value.trim() : undefined;
  const percent = text?.endsWith('%') ? Number(text.slice(0, -1).trim()) / 100 : undefined;
  const share = typeof value === 'number' ? value : percent ?? (text !== undefined && text !== '' ? Number(text) : NaN);
  return share >= 0 && share <= 0.5 ? share : undefined;
}

function noiseExpected(value: unknown): string {
  return `expected how far repeated measurements differ, as a share such as 3% or 0.03 (0 to 50%), found ${quoted(value)}`;
}

function latencyTimeExpected(value: unknown): string {
  return `expected the most time timing one candidate may take, such as 10s or 1m (a plain number is seconds), found ${quoted(value)}`;
}

function budgetExpected(value: unknown): string {
  return `expected a duration such as 90s, 10m or 1h30m (a plain number is seconds), found ${quoted(value)}`;
}

/** The one reading of a budget given as a flag or an input; `where` names it in the error. */
export function parseBudget(value: unknown, where: string): number {
  const seconds = durationSeconds(value);
  if (seconds === undefined) throw new UserError(`${where}: ${budgetExpected(value)}`);
  return seconds;
}

function targetExpected(auto: boolean, value: unknown): string {
  return `expected a fraction of parameters between 0 and 1 (e.g. 0.3 or 30%)${auto ? ' or auto' : ''}, found ${quoted(value)}`;
}

/** The one reading of a target (see targetValue); `where` names the flag, input or key in the error. */
export function parseTarget(value: unknown, where: string, options: { auto: boolean } = { auto: true }): number | 'auto' {
  const target = targetValue(value, options.auto);
  if (target === undefined) throw new UserError(`${where}: ${targetExpected(options.auto, value)}`);
  return target;
}

export function parseExternalData(value: string, where: string): ExternalDataMode {
  if ((EXTERNAL_DATA_MODES as readonly string[]).includes(value)) return value as ExternalDataMode;
  throw new UserError(`${where}: expected ${EXTERNAL_DATA_MODES.join(', ')}, found ${quoted(value)}`);
}

export function parseQuantize(value: string, where: string): QuantizeMode {
  if ((QUANTIZE_MODES as readonly string[]).includes(value)) return value as QuantizeMode;
  throw new UserError(`${where}: expected ${QUANTIZE_MODES.join(', ')}, found ${quoted(value)}`);
}

/** Settings given outside the config file (command-line flags, action inputs), parsed; paths absolute. */
export interface Overrides {
  model?: string;
  calibration?: string;
  target?: number | 'auto';
  quantize?: QuantizeMode;
  keepNames?: boolean;
  externalData?: ExternalDataMode;
  /** Seconds (see parseBudget). */
  budget?: number;
}

/** What a caller calls its options in messages: "--model" on the command line, "input model" in the action. */
export type OptionName = (key: 'config' | 'model' | 'calibration' | 'target' | 'quantize' | 'external-data' | 'budget') => string;

/** Overrides as written (flags, inputs), checked: paths exist, target and quantize parse. */
export function parseOverrides(
  raw: { model?: string; calibration?: string; target?: string; quantize?: string; keepNames?: boolean; externalData?: string; budget?: string },
  option: OptionName,
): Overrides {
  const o: Overrides = {};
  if (raw.model !== undefined) o.model = checkedPath(raw.model, option('model'), 'file');
  if (raw.calibration !== undefined) o.calibration = checkedPath(raw.calibration, option('calibration'), 'file or folder');
  if (raw.target !== undefined) o.target = parseTarget(raw.target, option('target'));
  if (raw.quantize !== undefined) o.quantize = parseQuantize(raw.quantize, option('quantize'));
  if (raw.keepNames) o.keepNames = true;
  if (raw.externalData !== undefined) o.externalData = parseExternalData(raw.externalData, option('external-data'));
  if (raw.budget !== undefined) o.budget = parseBudget(raw.budget, option('budget'));
  return o;
}

export function applyOverrides(config: Config, o: Overrides): Config {
  const out: Config = { ...config, prune: { ...config.prune } };
  if (o.model !== undefined) out.model = o.model;
  if (o.calibration !== undefined) out.calibration = o.calibration;
  if (o.target !== undefined) out.prune.target = o.target;
  if (o.quantize !== undefined) out.quantize = o.quantize;
  if (o.keepNames) out.keepNames = true;
  if (o.externalData !== undefined) out.externalData = o.externalData;
  if (o.budget !== undefined) out.budget = o.budget;
  return out;
}

/**
 * The config of a run, for the command line and the action alike: the config file `file` (by
 * default ./prune-gate.yml, which may then be absent when the overrides name the model and the
 * calibration themselves), with the overrides applied. Every way this fails is one line naming
 * the option (`option`) or the file's key to set.
 */
export function resolveConfig(file: string | undefined, overrides: Overrides, option: OptionName): Config {
  const chosen = path.resolve(file ?? DEFAULT_CONFIG);
  let base: Config;
  if (fs.existsSync(chosen)) base = loadConfig(chosen);
  else if (file !== undefined) throw new UserError(`${option('config')}: file not found: ${displayPath(chosen)}`);
  else if (overrides.model && overrides.calibration) base = defaultConfig();
  else {
    const missing = [overrides.model ? undefined : option('model'), overrides.calibration ? undefined : option('calibration')].filter(Boolean);
    throw new UserError(
      `no ${DEFAULT_CONFIG} in ${displayPath(path.dirname(chosen)) || '.'} and no ${missing.join(' or ')}: create ${DEFAULT_CONFIG} there with "model:" and "calibration:" (README, "Configuration"), give ${option('config')} FILE, or give ${option('model')} and ${option('calibration')}`,
    );
  }
  const config = applyOverrides(base, overrides);
  // Without a config file both were given: a missing one is the file's to set.
  const source = () => displayPath(config.file as string);
  if (!config.model) throw new UserError(`${source()}: no model: set "model:" in it, or give ${option('model')}`);
  if (!config.calibration) throw new UserError(`${source()}: no calibration set: set "calibration:" in it, or give ${option('calibration')}`);
  return config;
}
