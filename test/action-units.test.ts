// The action's pure parts, in-process: input validation (one typed object, one-line errors),
// cutting a report to GitHub's limits, and reading the event payload.
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { COMMENT_CUT_NOTE, COMMENT_LIMIT, commentBody, cutToLimit, utf8Bytes } from '../src/github/comment';
import { isRunUrl, measuredCommit, readContext, thisRun } from '../src/github/event';
import { INPUT_NAMES, readInputs } from '../src/github/inputs';
import { pullRequestFromFork, pullRequestOpened, push, workflowRunCompleted } from './helpers/webhooks';

function inputs(given: Record<string, string>) {
  return readInputs((name) => given[name] ?? '', { RUNNER_TEMP: '/runner/temp' });
}

describe('readInputs', () => {
  test('defaults: gate mode with prune-gate.yml, comment on, fail-on regression, out in RUNNER_TEMP', () => {
    expect(inputs({})).toEqual({
      mode: 'gate',
      config: undefined,
      overrides: {},
      model: undefined,
      calibration: undefined,
      target: undefined,
      quantize: undefined,
      out: path.resolve('/runner/temp/prune-gate'),
      token: '',
      comment: true,
      failOn: 'regression',
      prNumber: undefined,
    });
  });

  test('every input typed', () => {
    const v = inputs({
      config: 'test/action-configs/pass.yml',
      model: 'test/fixtures/mlp.onnx',
      calibration: 'calibration/mlp',
      target: 'auto',
      quantize: 'int8',
      out: 'out',
      'github-token': 'ghs_x',
      comment: 'False',
      'fail-on': 'never',
      'pr-number': '#42',
    });
    expect(v).toMatchObject({
      mode: 'gate',
      config: path.resolve('test/action-configs/pass.yml'),
      overrides: { model: path.resolve('test/fixtures/mlp.onnx'), calibration: path.resolve('calibration/mlp'), target: 'auto', quantize: 'int8' },
      comment: false,
      failOn: 'never',
      prNumber: 42,
      token: 'ghs_x',
    });
    expect(inputs({ target: '0.35' })).toMatchObject({ overrides: { target: 0.35 } });
    expect(inputs({ target: '0' })).toMatchObject({ overrides: { target: 0 } }); // quantize only
    expect(inputs({ config: 'prune-gate.yml' })).toMatchObject({ config: undefined }); // action.yml's default: may be absent
  });

  test('report: publish mode', () => {
    expect(inputs({ report: 'package.json', 'pr-number': '7' })).toEqual({
      mode: 'publish',
      report: path.resolve('package.json'),
      token: '',
      comment: true,
      failOn: 'regression',
      prNumber: 7,
    });
  });

  test('target 30% is 0.3, as on the command line and in the config', () => {
    const gate = inputs({ target: '30%' });
    expect(gate.mode === 'gate' && gate.overrides.target).toBe(0.3);
  });

  test.each([
    [{ target: '1' }, "input target: expected a fraction of parameters between 0 and 1 (e.g. 0.3 or 30%) or auto, found '1'"],
    [{ target: '130%' }, "input target: expected a fraction of parameters between 0 and 1 (e.g. 0.3 or 30%) or auto, found '130%'"],
    [{ 'artifact-url': 'http://x/y' }, "input artifact-url: expected an https:// URL (the upload step's artifact-url output), found 'http://x/y'"],
    [{ 'comment-author': 'a b' }, "input comment-author: expected a GitHub login such as my-app[bot], found 'a b'"],
    [{ job: '5/4' }, "input job: expected K/N with 1 <= K <= N <= 256 (a job of the plan's matrix, e.g. 2/4), found '5/4'"],
    [{ job: '1/2', merge: 'calibration' }, 'input merge: merges the jobs of a plan; a matrix job sets job, the final job sets merge, not both'],
    [{ report: 'package.json', job: '1/2' }, 'input report: publishes an existing report and prunes nothing: remove job (they apply only when the action prunes)'],
    [{ merge: 'calibration' }, "input merge: no partial.json in calibration or the folders in it; download the jobs' artifacts there (actions/download-artifact, one folder each)"],
    [{ 'pr-number': '0' }, "input pr-number: expected a pull request number such as 42, found '0'"],
    [{ comment: 'on' }, "input comment: expected true or false, found 'on'"],
    [{ model: 'calibration' }, 'input model: not a file: calibration'],
    [{ calibration: 'calibration/nowhere' }, 'input calibration: file or folder not found: calibration/nowhere'],
    [{ report: 'package.json', model: 'package.json', out: 'x' }, 'input report: publishes an existing report and prunes nothing: remove model, out (they apply only when the action prunes)'],
    [{ quantize: 'a\nb' }, "input quantize: expected none, int8, int4, found 'a\\nb'"],
  ])('%j -> one line naming the input', (given, message) => {
    expect(() => inputs(given)).toThrow(message);
    try {
      inputs(given);
    } catch (e) {
      expect((e as Error).message).not.toContain('\n');
    }
  });

  test('reads exactly the inputs it declares', () => {
    const asked: string[] = [];
    readInputs((name) => (asked.push(name), ''), {});
    expect(asked).toEqual([...INPUT_NAMES]);
  });
});

describe('cutToLimit', () => {
  const rows = (n: number, width = 50) => Array.from({ length: n }, (_, i) => `| ${String(i).padEnd(width, 'x')} |`).join('\n');

  test('a text within the limit is unchanged', () => {
    expect(cutToLimit('abc\n', 10, 'note')).toBe('abc\n');
  });

  test('cuts at a line, closes an open <details> and code fence, ends with the note, and fills the room', () => {
    const text = `# title\n<details>\n<summary>s</summary>\n\n\`\`\`\n${rows(2000)}\n\`\`\`\n</details>\n`;
    const out = cutToLimit(text, 10_000, 'NOTE');
    expect(out.length).toBeLessThanOrEqual(10_000);
    expect(out.length).toBeGreaterThan(10_000 - 60);
    expect(out.endsWith('```\n</details>\n\n---\nNOTE\n')).toBe(true);
    const lines = new Set(text.split('\n'));
    for (const line of out.split('\n')) if (line !== '---' && line !== 'NOTE') expect(lines.has(line)).toBe(true); // whole lines only
  });

  test('measures UTF-8 bytes when asked (the summary limit is 1 MiB)', () => {
    const text = Array.from({ length: 1000 }, () => '✅'.repeat(20)).join('\n');
    const out = cutToLimit(text, 5000, 'cut', utf8Bytes);
    expect(utf8Bytes(out)).toBeLessThanOrEqual(5000);
    expect(utf8Bytes(out)).toBeGreaterThan(5000 - 70);
  });

  test('one line longer than the limit leaves the note alone', () => {
    expect(cutToLimit('y'.repeat(100), 50, 'too long')).toBe('too long\n');
  });

  test('commentBody: the marker first, within 65,536 characters', () => {
    const body = commentBody('<!-- prune-gate:m.onnx -->', rows(5000, 100));
    expect(body.startsWith('<!-- prune-gate:m.onnx -->\n| 0')).toBe(true);
    expect(body.length).toBeLessThanOrEqual(COMMENT_LIMIT);
    expect(body.trimEnd().endsWith(COMMENT_CUT_NOTE)).toBe(true);
  });
});

describe('readContext', () => {
  let dir: string;
  beforeAll(() => (dir = fs.mkdtempSync(path.join(os.tmpdir(), 'prune-gate-event-'))));
  afterAll(() => fs.rmSync(dir, { recursive: true, force: true }));
  const event = (name: string, payload: unknown) => {
    const file = path.join(dir, `${name}.json`);
    fs.writeFileSync(file, JSON.stringify(payload));
    return readContext({ GITHUB_EVENT_NAME: name, GITHUB_EVENT_PATH: file, GITHUB_REPOSITORY: 'Codertocat/Hello-World', GITHUB_API_URL: 'https://ghe.example/api/v3/', GITHUB_SERVER_URL: 'https://ghe.example/', GITHUB_RUN_ID: '77', GITHUB_RUN_ATTEMPT: '2', GITHUB_SHA: 'e'.repeat(40) });
  };

  test('pull_request: number, head, same repository', () => {
    const p = pullRequestOpened();
    expect(event('pull_request', p)).toEqual({
      eventName: 'pull_request',
      repository: { owner: 'Codertocat', repo: 'Hello-World' },
      apiUrl: 'https://ghe.example/api/v3',
      serverUrl: 'https://ghe.example',
      runId: 77,
      runAttempt: 2,
      sha: 'e'.repeat(40),
      pullRequest: { number: 2, headSha: p.pull_request.head.sha, fromFork: false },
    });
  });

  test("the run a report records: the PR's head, this attempt's page, artifacts from the input or the run page", () => {
    const ctx = event('pull_request', pullRequestOpened());
    const page = 'https://ghe.example/Codertocat/Hello-World/actions/runs/77';
    expect(thisRun(ctx)).toEqual({ sha: pullRequestOpened().pull_request.head.sha, url: `${page}/attempts/2`, artifacts_url: `${page}#artifacts` });
    expect(thisRun(ctx, `${page}/artifacts/9`)?.artifacts_url).toBe(`${page}/artifacts/9`);
    expect(thisRun(event('push', push()))?.sha).toBe('e'.repeat(40));
    // Only pages of this repository's runs are links.
    expect([`${page}`, `${page}/attempts/3`, `${page}/artifacts/12`, `${page}#artifacts`].every((u) => isRunUrl(ctx, u))).toBe(true);
    for (const u of ['https://evil.example/Codertocat/Hello-World/actions/runs/77', 'https://ghe.example/other/repo/actions/runs/77', `${page}/../../x`, `${page}?x=1`, `${page}/logs`]) {
      expect([u, isRunUrl(ctx, u)]).toEqual([u, false]);
    }
  });

  test('a fork', () => {
    expect(event('pull_request', pullRequestFromFork()).pullRequest?.fromFork).toBe(true);
  });

  test('workflow_run: the triggering run head and its pull requests', () => {
    expect(event('workflow_run', workflowRunCompleted('c'.repeat(40))).workflowRun).toEqual({ id: 1589141559, event: 'pull_request', headSha: 'c'.repeat(40), pullRequests: [] });
  });

  test('the measured commit: the triggering run head, else the pull request head (not the merge commit), else GITHUB_SHA', () => {
    const run = event('workflow_run', workflowRunCompleted('c'.repeat(40)));
    expect([measuredCommit(run), thisRun(run)?.sha]).toEqual(['c'.repeat(40), 'c'.repeat(40)]);
    const pr = event('pull_request', pullRequestOpened());
    expect(measuredCommit(pr)).toBe(pullRequestOpened().pull_request.head.sha);
    expect(measuredCommit(pr)).not.toBe(pr.sha);
    expect(measuredCommit(event('push', push()))).toBe('e'.repeat(40));
    expect(measuredCommit(readContext({ GITHUB_EVENT_NAME: 'push' }))).toBeUndefined();
  });

  test('a payload that is not JSON is a one-line error', () => {
    const file = path.join(dir, 'broken.json');
    fs.writeFileSync(file, '{');
    expect(() => readContext({ GITHUB_EVENT_NAME: 'push', GITHUB_EVENT_PATH: file })).toThrow(/^GITHUB_EVENT_PATH .*broken\.json: not JSON: /);
  });

  test('the repository name is checked', () => {
    expect(() => readContext({ GITHUB_REPOSITORY: 'no-slash' })).toThrow("GITHUB_REPOSITORY: expected owner/name, found 'no-slash'");
  });
});
