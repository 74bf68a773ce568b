import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { z } from 'zod';
import { DEFAULT_CONFIG, OptionName, Overrides, parseOverrides } from '../config/config';
import { UserError } from '../errors';
import { quoted } from '../util/format';
import { checkedPath } from '../util/paths';
import { Job, PARTIAL_JSON, parseJob } from '../pipeline/job';

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
  'budget',
  'out',
  'github-token',
  'comment',
  'fail-on',
  'report',
  'pr-number',
  'artifact-url',
  'comment-author',
  'job',
  'merge',
] as const;
export type InputName = (typeof INPUT_NAMES)[number];

interface Common {
  /** '' when there is none: the action then cannot comment (it says so). */
  token: string;
  comment: boolean;
  failOn: 'regression' | 'never';
  /** The pull request to comment on when the event does not name one. */
  prNumber?: number;
  /** The link to the run's artifacts the comment gives (the upload step's artifact-url output). */
  artifactUrl?: string;
  /** Whose comments the action may edit, when its token is not the workflow's (see comment.ts). */
  commentAuthor?: string;
}

/** Prune, evaluate and gate (the default). Paths are absolute. */
export interface GateInputs extends Common {
  mode: 'gate';
  /** The config file; undefined for the default (prune-gate.yml), which may be absent when model and calibration are given. */
  config?: string;
  /** The inputs that override the config's keys (model, calibration, target, quantize, budget). */
  overrides: Overrides;
  out: string;
  /** A matrix job (`job: K/N`): build every candidate, evaluate this job's shard, write partial.json; nothing published. */
  job?: Job;
  /** The merge (`merge: DIR`): the folders under DIR holding the jobs' partial.json, merged and published as a run. */
  merge?: string[];
}

/** How messages name the action's inputs. */
export const inputName: OptionName = (key) => `input ${key}`;

/** Publish an existing report.json (the workflow_run half of the fork pattern). */
export interface PublishInputs extends Common {
  mode: 'publish';
  report: string;
}

export type Inputs = GateInputs | PublishInputs;

const optionalText = z.string().transform((s) => (s === '' ? undefined : s));

function choice<T extends string>(values: readonly T[], fallback: T) {
  return z.string().transform((s, ctx) => {
    if (s === '') return fallback;
    if ((values as readonly string[]).includes(s)) return s as T;
    ctx.addIssue({ code: 'custom', message: `expected ${values.slice(0, -1).join(', ')} or ${values[values.length - 1]}, found ${quoted(s)}` });
    return z.NEVER;
  });
}

const boolean = (fallback: boolean) =>
  z.string().transform((s, ctx) => {
    // The YAML 1.2 core schema's booleans, as @actions/core's getBooleanInput accepts them.
    if (s === '') return fallback;
    if (['true', 'True', 'TRUE'].includes(s)) return true;
    if (['false', 'False', 'FALSE'].includes(s)) return false;
    ctx.addIssue({ code: 'custom', message: `expected true or false, found ${quoted(s)}` });
    return z.NEVER;
  });

const prNumber = z.string().transform((s, ctx) => {
  if (s === '') return undefined;
  const n = Number(s.replace(/^#/, ''));
  if (/^#?[1-9]\d{0,9}$/.test(s) && Number.isSafeInteger(n)) return n;
  ctx.addIssue({ code: 'custom', message: `expected a pull request number such as 42, found ${quoted(s)}` });
  return z.NEVER;
});

const httpsUrl = z.string().transform((s, ctx) => {
  if (s === '') return undefined;
  if (/^https:\/\/[^\s]+$/.test(s) && s.length <= 2000) return s;
  ctx.addIssue({ code: 'custom', message: `expected an https:// URL (the upload step's artifact-url output), found ${quoted(s)}` });
  return z.NEVER;
});

const login = z.string().transform((s, ctx) => {
  if (s === '') return undefined;
  if (/^[A-Za-z0-9](?:[A-Za-z0-9-]{0,38})(\[bot\])?$/.test(s)) return s;
  ctx.addIssue({ code: 'custom', message: `expected a GitHub login such as my-app[bot], found ${quoted(s)}` });
  return z.NEVER;
});

const RawInputs = z
  .object({
    // The config's overrides are checked by parseOverrides, as the command line's flags are.
    config: optionalText,
    model: optionalText,
    calibration: optionalText,
    target: optionalText,
    quantize: optionalText,
    budget: optionalText,
    out: optionalText,
    'github-token': z.string(),
    comment: boolean(true),
    'fail-on': choice(['regression', 'never'] as const, 'regression'),
    report: optionalText,
    'pr-number': prNumber,
    'artifact-url': httpsUrl,
    'comment-author': login,
    job: optionalText,
    merge: optionalText,
  })
  .superRefine((v, ctx) => {
    if (v.job !== undefined && v.merge !== undefined) {
      ctx.addIssue({ code: 'custom', path: ['merge'], message: 'merges the jobs of a plan; a matrix job sets job, the final job sets merge, not both' });
    }
    if (v.report === undefined) return;
    // With report: nothing is pruned; settings of the pruning would silently do nothing.
    const pruning = (['model', 'calibration', 'target', 'quantize', 'budget', 'out', 'job', 'merge'] as const).filter((k) => v[k] !== undefined);
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
  const common: Common = {
    token: v['github-token'],
    comment: v.comment,
    failOn: v['fail-on'],
    prNumber: v['pr-number'],
    artifactUrl: v['artifact-url'],
    commentAuthor: v['comment-author'],
  };
  if (v.report !== undefined) return { mode: 'publish', ...common, report: checkedPath(v.report, 'input report', 'file') };
  return {
    mode: 'gate',
    ...common,
    // action.yml's default: the file may be absent (then model and calibration must be given).
    config: v.config === undefined || v.config === DEFAULT_CONFIG ? undefined : path.resolve(v.config),
    overrides: parseOverrides(v, inputName),
    out: path.resolve(v.out ?? path.join(env.RUNNER_TEMP || os.tmpdir(), 'prune-gate')),
    ...(v.job !== undefined ? { job: parseJob(v.job, 'input job') } : {}),
    ...(v.merge !== undefined ? { merge: partialFolders(v.merge) } : {}),
  };
}

/** The folders under `dir` (and `dir` itself) that hold a partial.json: what download-artifact leaves of the jobs' uploads. */
function partialFolders(dir: string): string[] {
  const root = checkedPath(dir, 'input merge', 'folder');
  const found = [root, ...fs.readdirSync(root, { withFileTypes: true }).filter((e) => e.isDirectory()).map((e) => path.join(root, e.name))].filter((d) => fs.existsSync(path.join(d, PARTIAL_JSON)));
  if (found.length === 0) throw new UserError(`input merge: no ${PARTIAL_JSON} in ${dir} or the folders in it; download the jobs' artifacts there (actions/download-artifact, one folder each)`);
  return found.sort();
}
