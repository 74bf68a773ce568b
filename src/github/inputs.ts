import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { z } from 'zod';
import { QUANTIZE_MODES, QuantizeMode } from '../config/config';
import { UserError } from '../errors';

/**
 * The action's inputs (action.yml), read once and validated into one typed object before
 * anything runs. A bad value fails the step with one line naming the input:
 * "input target: expected a fraction of parameters between 0 and 1 (e.g. 0.3) or auto, found '1.5'".
 */

/** Every input of action.yml, in its order (a test checks the two lists agree). */
export const INPUT_NAMES = [
  'config',
  'model',
  'calibration',
  'target',
  'quantize',
  'out',
  'github-token',
  'comment',
  'fail-on',
  'report',
  'pr-number',
] as const;
export type InputName = (typeof INPUT_NAMES)[number];

export const DEFAULT_CONFIG_INPUT = 'prune-gate.yml';

interface Common {
  /** '' when there is none: the action then cannot comment (it says so). */
  token: string;
  comment: boolean;
  failOn: 'regression' | 'never';
  /** The pull request to comment on when the event does not name one. */
  prNumber?: number;
}

/** Prune, evaluate and gate (the default). Paths are absolute. */
export interface GateInputs extends Common {
  mode: 'gate';
  config: string;
  /** false when `config` is the default (prune-gate.yml), which may be absent when model and calibration are given. */
  configGiven: boolean;
  model?: string;
  calibration?: string;
  target?: number | 'auto';
  quantize?: QuantizeMode;
  out: string;
}

/** Publish an existing report.json (the workflow_run half of the fork pattern). */
export interface PublishInputs extends Common {
  mode: 'publish';
  report: string;
}

export type Inputs = GateInputs | PublishInputs;

/** How a value was written, for messages: quoted, one line, bounded. */
function shown(v: string): string {
  const s = JSON.stringify(v.length > 80 ? `${v.slice(0, 79)}…` : v);
  return `'${s.slice(1, -1)}'`;
}

const optionalText = z.string().transform((s) => (s === '' ? undefined : s));

function existingPath(kind: 'file' | 'folder') {
  return optionalText.superRefine((v, ctx) => {
    if (v === undefined) return;
    let stat: fs.Stats | undefined;
    try {
      stat = fs.statSync(path.resolve(v));
    } catch {
      stat = undefined;
    }
    if (!stat) ctx.addIssue({ code: 'custom', message: `${kind} not found: ${v}` });
    else if (kind === 'file' && !stat.isFile()) ctx.addIssue({ code: 'custom', message: `not a file: ${v}` });
    else if (kind === 'folder' && !stat.isDirectory()) ctx.addIssue({ code: 'custom', message: `not a folder: ${v}` });
  });
}

function choice<T extends string>(values: readonly T[], fallback: T) {
  return z.string().transform((s, ctx) => {
    if (s === '') return fallback;
    if ((values as readonly string[]).includes(s)) return s as T;
    ctx.addIssue({ code: 'custom', message: `expected ${values.slice(0, -1).join(', ')} or ${values[values.length - 1]}, found ${shown(s)}` });
    return z.NEVER;
  });
}

const target = z.string().transform((s, ctx): number | 'auto' | undefined => {
  if (s === '') return undefined;
  if (s === 'auto') return 'auto';
  const n = Number(s);
  if (/^(\d+(\.\d*)?|\.\d+)$/.test(s) && n >= 0 && n < 1) return n;
  ctx.addIssue({ code: 'custom', message: `expected a fraction of parameters between 0 and 1 (e.g. 0.3) or auto, found ${shown(s)}` });
  return z.NEVER;
});

const boolean = (fallback: boolean) =>
  z.string().transform((s, ctx) => {
    // The YAML 1.2 core schema's booleans, as @actions/core's getBooleanInput accepts them.
    if (s === '') return fallback;
    if (['true', 'True', 'TRUE'].includes(s)) return true;
    if (['false', 'False', 'FALSE'].includes(s)) return false;
    ctx.addIssue({ code: 'custom', message: `expected true or false, found ${shown(s)}` });
    return z.NEVER;
  });

const prNumber = z.string().transform((s, ctx) => {
  if (s === '') return undefined;
  const n = Number(s.replace(/^#/, ''));
  if (/^#?[1-9]\d{0,9}$/.test(s) && Number.isSafeInteger(n)) return n;
  ctx.addIssue({ code: 'custom', message: `expected a pull request number such as 42, found ${shown(s)}` });
  return z.NEVER;
});

const RawInputs = z
  .object({
    config: z.string().transform((s) => s || DEFAULT_CONFIG_INPUT),
    model: existingPath('file'),
    calibration: existingPath('folder'),
    target,
    quantize: z.string().transform((s, ctx): QuantizeMode | undefined => {
      if (s === '') return undefined;
      if ((QUANTIZE_MODES as readonly string[]).includes(s)) return s as QuantizeMode;
      ctx.addIssue({ code: 'custom', message: `expected none, int8 or int4, found ${shown(s)}` });
      return z.NEVER;
    }),
    out: optionalText,
    'github-token': z.string(),
    comment: boolean(true),
    'fail-on': choice(['regression', 'never'] as const, 'regression'),
    report: existingPath('file'),
    'pr-number': prNumber,
  })
  .superRefine((v, ctx) => {
    if (v.report === undefined) return;
    // With report: nothing is pruned; settings of the pruning would silently do nothing.
    const pruning = (['model', 'calibration', 'target', 'quantize', 'out'] as const).filter((k) => v[k] !== undefined);
    if (pruning.length) {
      ctx.addIssue({
        code: 'custom',
        path: ['report'],
        message: `publishes an existing report and prunes nothing: remove ${pruning.join(', ')} (they apply only when the action prunes)`,
      });
    }
  });

/**
 * Reads every input through `get` (core.getInput: INPUT_<NAME>, the name upper-cased with its
 * hyphens kept, e.g. INPUT_GITHUB-TOKEN) and validates them; throws a UserError naming the first
 * bad input. Relative paths are resolved against the working folder (the workspace on a runner).
 */
export function readInputs(get: (name: InputName) => string, env: NodeJS.ProcessEnv = process.env): Inputs {
  const raw: Record<string, string> = {};
  for (const name of INPUT_NAMES) raw[name] = get(name).trim();
  const r = RawInputs.safeParse(raw);
  if (!r.success) {
    const issue = r.error.issues[0];
    throw new UserError(`input ${String(issue.path[0] ?? '')}: ${issue.message.split('\n')[0]}`);
  }
  const v = r.data;
  const common: Common = { token: v['github-token'], comment: v.comment, failOn: v['fail-on'], prNumber: v['pr-number'] };
  if (v.report !== undefined) return { mode: 'publish', ...common, report: path.resolve(v.report) };
  return {
    mode: 'gate',
    ...common,
    config: path.resolve(v.config),
    configGiven: raw.config !== '' && raw.config !== DEFAULT_CONFIG_INPUT,
    model: v.model === undefined ? undefined : path.resolve(v.model),
    calibration: v.calibration === undefined ? undefined : path.resolve(v.calibration),
    target: v.target,
    quantize: v.quantize,
    out: path.resolve(v.out ?? path.join(env.RUNNER_TEMP || os.tmpdir(), 'prune-gate')),
  };
}
