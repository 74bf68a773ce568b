// Runs a bundled action (index.js) as a child process the way the GitHub runner runs a node24
// action: inputs as INPUT_<NAME> environment variables (upper-cased, hyphens kept:
// INPUT_GITHUB-TOKEN) with action.yml's defaults filled in, the event payload in a file named by
// GITHUB_EVENT_PATH, and the GITHUB_OUTPUT and GITHUB_STEP_SUMMARY files. It returns what the
// runner would see: the exit status, stdout (workflow commands such as ::error), the outputs
// and the summary.
import { spawn } from 'child_process';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import YAML from 'yaml';
import { ROOT } from './run-cli';

export interface ActionYml {
  runs: { using: string; main: string };
  inputs: Record<string, { description: string; required?: boolean; default?: string }>;
  outputs: Record<string, { description: string }>;
}

export function actionYml(): ActionYml {
  return YAML.parse(fs.readFileSync(path.join(ROOT, 'action.yml'), 'utf8')) as ActionYml;
}

export interface ActionStep {
  /** The bundled entry (index.js). */
  main: string;
  /** `with:` of the workflow step; keys must be inputs of action.yml. */
  with?: Record<string, string>;
  eventName: string;
  payload?: unknown;
  /** The workspace (the step's working folder). */
  cwd?: string;
  /** The workflow's token (what ${{ github.token }} expands to). */
  githubToken?: string;
  repository?: string;
  apiUrl?: string;
  env?: Record<string, string>;
}

export interface Annotation {
  level: 'error' | 'warning' | 'notice';
  properties: Record<string, string>;
  message: string;
}

export interface ActionRun {
  status: number;
  stdout: string;
  stderr: string;
  outputs: Record<string, string>;
  summary: string;
  annotations: Annotation[];
  runnerTemp: string;
}

/** The environment variable the runner sets for an input (actions/runner: upper-cased, spaces to _). */
export function inputVariable(name: string): string {
  return `INPUT_${name.replace(/ /g, '_').toUpperCase()}`;
}

/** GITHUB_OUTPUT's heredoc format: name<<ghadelimiter_UUID, value lines, the delimiter. */
export function parseOutputFile(text: string): Record<string, string> {
  const out: Record<string, string> = {};
  const lines = text.split(/\r?\n/);
  for (let i = 0; i < lines.length; i++) {
    const m = /^([^<=]+)<<(.+)$/.exec(lines[i]);
    if (m) {
      const end = lines.indexOf(m[2], i + 1);
      if (end < 0) throw new Error(`GITHUB_OUTPUT: no closing delimiter for ${m[1]}`);
      out[m[1]] = lines.slice(i + 1, end).join('\n');
      i = end;
    } else if (lines[i].includes('=')) {
      const at = lines[i].indexOf('=');
      out[lines[i].slice(0, at)] = lines[i].slice(at + 1);
    } else if (lines[i] !== '') {
      throw new Error(`GITHUB_OUTPUT: unexpected line ${JSON.stringify(lines[i])}`);
    }
  }
  return out;
}

function unescapeData(s: string): string {
  return s.replace(/%0D/g, '\r').replace(/%0A/g, '\n').replace(/%25/g, '%');
}

function unescapeProperty(s: string): string {
  return unescapeData(s).replace(/%3A/g, ':').replace(/%2C/g, ',');
}

/** ::error file=a,title=b::message lines of stdout. */
export function parseAnnotations(stdout: string): Annotation[] {
  const found: Annotation[] = [];
  for (const line of stdout.split(/\r?\n/)) {
    const m = /^::(error|warning|notice)( [^:]*)?::(.*)$/.exec(line);
    if (!m) continue;
    const properties: Record<string, string> = {};
    for (const kv of (m[2] ?? '').trim().split(',').filter(Boolean)) {
      const at = kv.indexOf('=');
      properties[kv.slice(0, at)] = unescapeProperty(kv.slice(at + 1));
    }
    found.push({ level: m[1] as Annotation['level'], properties, message: unescapeData(m[3]) });
  }
  return found;
}

/** The run the helper's steps belong to (GITHUB_RUN_ID), and the commit checked out (GITHUB_SHA). */
export const RUN_ID = '8000000001';
export const MERGE_SHA = 'e'.repeat(40);

/** The environment a runner gives a step: nothing of this machine's GITHUB_*, INPUT_* or proxies. */
function baseEnv(): Record<string, string> {
  const keep = ['PATH', 'HOME', 'TMPDIR', 'TEMP', 'TMP', 'SYSTEMROOT', 'LANG'];
  const env: Record<string, string> = {};
  for (const k of keep) if (process.env[k] !== undefined) env[k] = process.env[k] as string;
  return env;
}

export async function runAction(step: ActionStep): Promise<ActionRun> {
  const yml = actionYml();
  const given = step.with ?? {};
  for (const k of Object.keys(given)) if (!yml.inputs[k]) throw new Error(`test bug: ${k} is not an input of action.yml`);
  const token = step.githubToken ?? 'ghs_workflow_token';
  const runnerTemp = fs.mkdtempSync(path.join(os.tmpdir(), 'prune-gate-runner-'));
  const files = {
    event: path.join(runnerTemp, '_github_workflow', 'event.json'),
    output: path.join(runnerTemp, '_runner_file_commands', 'set_output'),
    summary: path.join(runnerTemp, '_runner_file_commands', 'step_summary'),
  };
  fs.mkdirSync(path.dirname(files.event), { recursive: true });
  fs.mkdirSync(path.dirname(files.output), { recursive: true });
  fs.writeFileSync(files.event, JSON.stringify(step.payload ?? {}));
  fs.writeFileSync(files.output, '');
  fs.writeFileSync(files.summary, '');
  const cwd = step.cwd ?? ROOT;
  const env: Record<string, string> = {
    ...baseEnv(),
    CI: 'true',
    GITHUB_ACTIONS: 'true',
    GITHUB_WORKSPACE: cwd,
    GITHUB_EVENT_NAME: step.eventName,
    GITHUB_EVENT_PATH: files.event,
    GITHUB_OUTPUT: files.output,
    GITHUB_STEP_SUMMARY: files.summary,
    GITHUB_REPOSITORY: step.repository ?? 'Codertocat/Hello-World',
    GITHUB_API_URL: step.apiUrl ?? 'http://127.0.0.1:9', // nothing listens there: an unexpected call fails
    GITHUB_SERVER_URL: 'https://github.com',
    GITHUB_RUN_ID: RUN_ID,
    GITHUB_RUN_ATTEMPT: '1',
    GITHUB_SHA: MERGE_SHA, // on pull_request events, the merge commit; the action records the PR's head
    RUNNER_TEMP: runnerTemp,
    RUNNER_OS: 'Linux',
  };
  // Every input of action.yml, as given or its default (the runner expands ${{ github.token }}).
  for (const [name, spec] of Object.entries(yml.inputs)) {
    const value = given[name] ?? (spec.default ?? '').replace(/\$\{\{\s*github\.token\s*\}\}/, token);
    env[inputVariable(name)] = value;
  }
  Object.assign(env, step.env ?? {});
  const { status, stdout, stderr } = await new Promise<{ status: number; stdout: string; stderr: string }>((resolve, reject) => {
    const child = spawn(process.execPath, [step.main], { cwd, env, stdio: ['ignore', 'pipe', 'pipe'] });
    let out = '';
    let err = '';
    child.stdout.on('data', (d: Buffer) => (out += d.toString()));
    child.stderr.on('data', (d: Buffer) => (err += d.toString()));
    const timer = setTimeout(() => child.kill('SIGKILL'), 110_000);
    child.on('error', reject);
    child.on('close', (code) => {
      clearTimeout(timer);
      resolve({ status: code ?? -1, stdout: out, stderr: err });
    });
  });
  return {
    status,
    stdout,
    stderr,
    outputs: parseOutputFile(fs.readFileSync(files.output, 'utf8')),
    summary: fs.readFileSync(files.summary, 'utf8'),
    annotations: parseAnnotations(stdout),
    runnerTemp,
  };
}
