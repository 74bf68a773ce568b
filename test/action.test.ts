// The built action (src/index.ts bundled as for dist/) run as a child process the way
// the runner runs it: INPUT_* variables with action.yml's defaults, real pull_request payloads
// from @octokit/webhooks-examples, GITHUB_OUTPUT / GITHUB_STEP_SUMMARY files, and GITHUB_API_URL
// pointing at a local stand-in for the REST API that checks every request against GitHub's
// OpenAPI description (test/helpers/fake-github.ts).
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { INPUT_NAMES } from '../src/github/inputs';
import { ReportSchema } from '../src/report/schema';
import { legacyMarker, stickyMarker } from '../src/report/markdown';
import { CLI_COMMAND } from '../src/util/install';
import { FakeGitHub } from './helpers/fake-github';
import { ActionRun, ActionStep, RUN_ID, actionYml, runAction } from './helpers/run-action';
import { ROOT, bundleInto } from './helpers/run-cli';
import { pullRequestFromFork, pullRequestOpened, pullRequestSynchronize, push } from './helpers/webhooks';

const PASS = 'test/action-configs/pass.yml';
const FAIL = 'test/action-configs/fail.yml';
const MARKER = stickyMarker('test/fixtures/mlp.onnx', PASS);
const FAIL_MARKER = stickyMarker('test/fixtures/mlp.onnx', FAIL);
const WRITE = 'ghs_write_token';
const READ = 'ghs_fork_read_only_token';

let bundle: string;
let main: string;
const temps: string[] = [];
beforeAll(() => {
  bundle = bundleInto('action');
  main = path.join(bundle, 'index.js');
});
afterAll(() => {
  fs.rmSync(bundle, { recursive: true, force: true });
  for (const t of temps) fs.rmSync(t, { recursive: true, force: true });
});

async function step(s: Omit<ActionStep, 'main'>): Promise<ActionRun> {
  const r = await runAction({ main, ...s });
  temps.push(r.runnerTemp);
  return r;
}

/** A fake API for the example payloads' repository (Codertocat/Hello-World, PR #2). */
async function fakeApi(maxPerPage = 100): Promise<{ gh: FakeGitHub; url: string }> {
  const pr = pullRequestOpened();
  const gh = new FakeGitHub({ owner: 'Codertocat', repo: 'Hello-World', pulls: [pr.pull_request] }, maxPerPage);
  gh.addToken(WRITE, true).addToken(READ, false);
  return { gh, url: await gh.listen() };
}

function readJson(file: string): unknown {
  return JSON.parse(fs.readFileSync(file, 'utf8'));
}

const errors = (r: ActionRun) => r.annotations.filter((a) => a.level === 'error');
const warnings = (r: ActionRun) => r.annotations.filter((a) => a.level === 'warning');

test('action.yml: node24, dist/index.js, and exactly the inputs the code reads and the outputs it sets', () => {
  const yml = actionYml();
  expect(yml.runs).toEqual({ using: 'node24', main: 'dist/index.js' });
  expect(Object.keys(yml.inputs)).toEqual([...INPUT_NAMES]);
  expect(Object.keys(yml.outputs).sort()).toEqual(['comment-id', 'comment-url', 'compression', 'partial-path', 'pruned-model-path', 'removed', 'report-path', 'speedup', 'verdict']);
  expect(yml.inputs['github-token'].default).toBe('${{ github.token }}');
  for (const [name, spec] of Object.entries(yml.inputs)) expect([name, spec.required ?? false]).toEqual([name, false]);
});

describe('on pull_request events, with a write token', () => {
  let gh: FakeGitHub;
  let api: string;
  beforeAll(async () => {
    ({ gh, url: api } = await fakeApi(2)); // two comments a page: the action must follow the pages
    // Others talk on the PR first, one quoting the marker, one starting with it: neither is the action's comment.
    gh.addComment(2, 'Looks good to me');
    gh.addComment(2, `> ${MARKER}\n> ### prune-gate passed\n\nnice`);
    gh.addComment(2, `${MARKER}\nmy own notes, which only look like the action's`);
  });
  afterAll(() => gh.close());

  let first: ActionRun;
  test('the first run gates the model, sets every output, writes the summary and creates the comment', async () => {
    first = await step({ eventName: 'pull_request', payload: pullRequestOpened(), apiUrl: api, githubToken: WRITE, with: { config: PASS } });
    expect(first.stderr).toBe('');
    expect(errors(first)).toEqual([]);
    expect(first.status).toBe(0);
    expect(gh.problems).toEqual([]);

    const report = ReportSchema.parse(readJson(first.outputs['report-path']));
    expect(report.verdict).toBe('pass');
    expect(report.pull_request).toEqual({ number: 2, head_sha: pullRequestOpened().pull_request.head.sha });
    expect(first.outputs.verdict).toBe('pass');
    expect(fs.existsSync(first.outputs['pruned-model-path'])).toBe(true);
    expect(path.basename(first.outputs['pruned-model-path'])).toBe('pruned.onnx');
    expect(Number(first.outputs.compression)).toBeCloseTo(report.base.bytes / report.candidate.bytes, 3);
    expect(Number(first.outputs.compression)).toBeGreaterThan(1);
    expect(Number(first.outputs.removed)).toBeCloseTo((report.base.params - report.candidate.params) / report.base.params, 4);
    expect(Number(first.outputs.speedup)).toBeCloseTo(report.latency.speedup as number, 2);

    const md = fs.readFileSync(path.join(path.dirname(first.outputs['report-path']), 'report.md'), 'utf8');
    expect(first.summary).toContain(md.trim());
    expect(first.summary).toMatch(/^### ✅ Kept [^\n]*\n\nprune-gate passed/);

    const mine = gh.commentsOn(2).filter((c) => c.user === 'github-actions[bot]');
    expect(mine).toHaveLength(1);
    expect(mine[0].body).toBe(`${MARKER}\n${md}`);
    // The comment written, for a later step: its id and its page, as GitHub answered them.
    expect(first.outputs['comment-id']).toBe(String(mine[0].id));
    expect(first.outputs['comment-url']).toBe(`https://github.com/Codertocat/Hello-World/pull/2#issuecomment-${mine[0].id}`);
    // Provenance: the commit judged (the PR's head, not the merge commit), the run and its
    // artifacts, the calibration set, the command that reproduces it, versions and machine.
    const head = pullRequestOpened().pull_request.head.sha;
    const runPage = `https://github.com/Codertocat/Hello-World/actions/runs/${RUN_ID}`;
    expect(report.run).toEqual({ sha: head, url: runPage, artifacts_url: `${runPage}#artifacts` });
    expect(report.config).toBe(PASS);
    expect(report.calibration).toEqual({ path: 'calibration/mlp', samples: expect.any(Number), tokens: null });
    expect(md).toContain(`Judged: [commit \`${head.slice(0, 12)}\`](https://github.com/Codertocat/Hello-World/commit/${head}) · [the run](${runPage}) · [its artifacts](${runPage}#artifacts) · ${report.calibration!.samples} calibration samples from \`calibration/mlp\`.`);
    expect(md).toContain(`Reproduce locally: \`${CLI_COMMAND} run --config ${PASS} --model test/fixtures/mlp.onnx --calibration calibration/mlp --target ${report.target} --quantize none\``);
    expect(md).toMatch(/Measured on .*onnxruntime 1\.\d+\.\d+, prune-gate \d+\.\d+\.\d+/);
    expect(gh.requests.map((r) => `${r.operationId} ${r.status}`)).toEqual([
      'pulls/get 200', // the PR's head is still the measured commit
      'issues/list-comments 200',
      'issues/list-comments 200',
      'issues/create-comment 201',
    ]);
    expect(gh.requests[1].path).toMatch(/per_page=100/);
  });

  test('a failing gate fails the step naming the metrics, one error annotation per metric, and still comments', async () => {
    const r = await step({ eventName: 'pull_request', payload: pullRequestOpened(), apiUrl: api, githubToken: WRITE, with: { config: FAIL } });
    expect(r.status).toBe(1);
    expect(r.outputs.verdict).toBe('fail');
    expect(gh.problems).toEqual([]);
    const errs = errors(r);
    const perMetric = errs.filter((a) => a.properties.title);
    expect(perMetric.map((a) => a.properties.title).sort()).toEqual(['prune-gate: agreement over its bound', 'prune-gate: cosine over its bound']);
    for (const a of perMetric) expect(a.properties.file).toBe(FAIL);
    expect(perMetric.find((a) => a.properties.title.includes('agreement'))?.message).toMatch(/^agreement: [\d.]+ % \(base 100\.00 %\), bound ≥ 99\.99 % \(min 0\.9999\)$/);
    // core.setFailed: the step's own error, naming both metrics.
    const failed = errs.filter((a) => !a.properties.title);
    expect(failed).toHaveLength(1);
    expect(failed[0].message).toBe('prune-gate: the gate failed: agreement (min 0.9999), cosine (min 0.999) over the bound');
    expect(r.stdout).toMatch(/^::error title=prune-gate%3A agreement over its bound,file=test\/action-configs\/fail\.yml::agreement: /m);
    expect(r.summary).toMatch(/^### ❌ (?:Failed at|No step kept)[^\n]*\n\nprune-gate failed/);
    // Another config gating the same model keeps its own comment; the passing config's stays.
    const bot = gh.commentsOn(2).filter((c) => c.user === 'github-actions[bot]');
    expect(bot.map((c) => c.body.split('\n', 1)[0])).toEqual([MARKER, FAIL_MARKER]);
    expect(bot[0].body).toMatch(/### ✅ Kept [^\n]*\n\nprune-gate passed/);
    expect(bot[1].body).toMatch(/### ❌ (?:Failed at|No step kept)[^\n]*\n\nprune-gate failed/);
  });

  test('fail-on: never reports the failed gate without failing the step', async () => {
    const r = await step({ eventName: 'pull_request', payload: pullRequestOpened(), apiUrl: api, githubToken: WRITE, with: { config: FAIL, 'fail-on': 'never' } });
    expect(r.status).toBe(0);
    expect(r.outputs.verdict).toBe('fail');
    expect(errors(r)).toEqual([]);
    expect(r.annotations.filter((a) => a.level === 'notice').map((a) => a.message)).toEqual([
      'prune-gate: the gate failed: agreement (min 0.9999), cosine (min 0.999) over the bound; fail-on is never, so the step passes',
    ]);
    expect(r.summary).toMatch(/^### ❌ (?:Failed at|No step kept)[^\n]*\n\nprune-gate failed/);
  });

  test('comment: false makes no API call', async () => {
    const n = gh.requests.length;
    const r = await step({ eventName: 'pull_request', payload: pullRequestOpened(), apiUrl: api, githubToken: WRITE, with: { config: PASS, comment: 'false' } });
    expect(r.status).toBe(0);
    expect(gh.requests.length).toBe(n);
    expect(r.summary).toMatch(/^### ✅ Kept [^\n]*\n\nprune-gate passed/);
    expect([r.outputs['comment-id'], r.outputs['comment-url']]).toEqual([undefined, undefined]);
  });

  const OPENED_HEAD = pullRequestOpened().pull_request.head.sha as string;
  const NEW_HEAD = 'a'.repeat(40);

  test('the run after a push (synchronize) updates the same comment in place', async () => {
    expect(first).toBeDefined();
    gh.setHead(2, NEW_HEAD); // the push
    const before = gh.commentsOn(2).find((c) => c.body.startsWith(MARKER) && c.user === 'github-actions[bot]') as { id: number; body: string };
    before.body = `${MARKER}\nstale text from an earlier push`;
    const requestsBefore = gh.requests.length;
    const r = await step({ eventName: 'pull_request', payload: pullRequestSynchronize(NEW_HEAD), apiUrl: api, githubToken: WRITE, with: { config: PASS } });
    expect(r.status).toBe(0);
    expect(gh.problems).toEqual([]);
    const mine = gh.commentsOn(2).filter((c) => c.body.startsWith(MARKER) && c.user === 'github-actions[bot]');
    expect(mine).toHaveLength(1); // still one comment for the config and model
    expect(mine[0].id).toBe(before.id);
    expect(mine[0].body).toMatch(/^<!-- prune-gate:model=test\/fixtures\/mlp\.onnx config=test\/action-configs\/pass\.yml -->\n### ✅ Kept [^\n]*\n\nprune-gate passed/);
    expect(mine[0].body).toContain(`commit \`${NEW_HEAD.slice(0, 12)}\``);
    expect(mine[0].body).not.toContain('stale text');
    const calls = gh.requests.slice(requestsBefore);
    expect(calls.map((c) => c.operationId)).toEqual(['pulls/get', 'issues/list-comments', 'issues/list-comments', 'issues/update-comment']);
    expect(calls[3].path).toBe(`/repos/Codertocat/Hello-World/issues/comments/${before.id}`);
    expect([r.outputs['comment-id'], r.outputs['comment-url']]).toEqual([String(before.id), expect.stringMatching(new RegExp(`#issuecomment-${before.id}$`))]);
    expect(ReportSchema.parse(readJson(r.outputs['report-path'])).pull_request?.head_sha).toBe(NEW_HEAD);
    expect(gh.commentsOn(2)).toHaveLength(5); // the three others and the failing config's untouched
    expect(gh.commentsOn(2).find((c) => c.user === 'octocat' && c.body.startsWith(MARKER))?.body).toBe(`${MARKER}\nmy own notes, which only look like the action's`);
  });

  test("the runs for the earlier head, finishing after that push, leave the comments alone, say so in the log and the summary, and still judge", async () => {
    const before = gh.commentsOn(2).filter((c) => c.user === 'github-actions[bot]').map((c) => ({ ...c }));
    expect(before.map((c) => c.body.split('\n', 1)[0])).toEqual([MARKER, FAIL_MARKER]);
    const [was, now] = [OPENED_HEAD.slice(0, 12), NEW_HEAD.slice(0, 12)];
    for (const [config, verdict, status] of [[PASS, 'pass', 0], [FAIL, 'fail', 1]] as const) {
      const from = gh.requests.length;
      const r = await step({ eventName: 'pull_request', payload: pullRequestOpened(), apiUrl: api, githubToken: WRITE, with: { config } });
      expect(gh.problems).toEqual([]);
      // The head is asked for, and nothing is written.
      expect(gh.requests.slice(from).map((q) => `${q.method} ${q.operationId} ${q.status}`)).toEqual(['GET pulls/get 200']);
      expect(warnings(r).map((a) => a.message)).toEqual([
        `prune-gate: not commenting on pull request #2: its head is now ${now}, not ${was}, the commit measured (a newer push, or a pull request other than the one measured); its comment is left as it was`,
      ]);
      expect(r.summary.split('\n', 1)[0]).toBe(`> ⏭️ Not commented: pull request #2's head is now \`${now}\`, not \`${was}\`, the commit measured; its comment is left as it was.`);
      expect(r.summary).toMatch(verdict === 'pass' ? /\n### ✅ Kept [^\n]*\n\nprune-gate passed/ : /\n### ❌ (?:Failed at|No step kept)[^\n]*\n\nprune-gate failed/);
      // The check is the run's own: its verdict, outputs and exit status are as without the comment.
      expect([r.status, r.outputs.verdict]).toEqual([status, verdict]);
      expect(ReportSchema.parse(readJson(r.outputs['report-path'])).run?.sha).toBe(OPENED_HEAD);
      expect(Number(r.outputs.compression)).toBeGreaterThan(1);
      if (verdict === 'fail') expect(errors(r).map((a) => a.message)).toContain('prune-gate: the gate failed: agreement (min 0.9999), cosine (min 0.999) over the bound');
    }
    expect(gh.commentsOn(2).filter((c) => c.user === 'github-actions[bot]')).toEqual(before);
    expect(before[0].body).toContain(`commit \`${now}\``); // the newer run's numbers stay
  });
});

test("the action's comment from before markers had the config is adopted; another user's is not, on page 3 of 250 comments", async () => {
  const { gh, url } = await fakeApi();
  try {
    for (let i = 1; i <= 250; i++) {
      // Comment 230 is another user's, starting with both markers the action could look for.
      if (i === 230) gh.addComment(2, `${legacyMarker('test/fixtures/mlp.onnx')}\n${MARKER}\nsomeone else's text`, 'octocat');
      else if (i === 240) gh.addComment(2, `${legacyMarker('test/fixtures/mlp.onnx')}\n### ✅ prune-gate passed (an older version's comment)`, 'github-actions[bot]');
      else gh.addComment(2, `comment ${i}`);
    }
    const octocat = gh.commentsOn(2).find((c) => c.user === 'octocat' && c.body.includes('someone else'))!;
    const old = gh.commentsOn(2).find((c) => c.user === 'github-actions[bot]')!;
    const r = await step({ eventName: 'pull_request', payload: pullRequestOpened(), apiUrl: url, githubToken: WRITE, with: { config: PASS } });
    expect(r.status).toBe(0);
    expect(gh.problems).toEqual([]);
    expect(gh.updated).toEqual([old.id]);
    expect(gh.comments.size).toBe(250); // none created
    expect(old.body.split('\n', 1)[0]).toBe(MARKER);
    expect(octocat.body).toBe(`${legacyMarker('test/fixtures/mlp.onnx')}\n${MARKER}\nsomeone else's text`);
    expect(r.stdout).toMatch(/adopted the comment on pull request #2/);
    expect(r.stdout).toMatch(/updating only comments by github-actions\[bot\]/);
  } finally {
    await gh.close();
  }
});

test('a personal token: the action asks GET /user who it is and edits only that login\'s comment', async () => {
  const { gh, url } = await fakeApi();
  gh.addToken('ghp_personal', true, 'release-bot-user');
  try {
    gh.addComment(2, `${MARKER}\nby the workflow bot`, 'github-actions[bot]');
    const first = await step({ eventName: 'pull_request', payload: pullRequestOpened(), apiUrl: url, githubToken: 'ghp_personal', with: { config: PASS } });
    expect(first.status).toBe(0);
    expect(gh.problems).toEqual([]);
    expect(gh.requests.map((q) => `${q.operationId} ${q.status}`)).toEqual(['users/get-authenticated 200', 'pulls/get 200', 'issues/list-comments 200', 'issues/create-comment 201']);
    expect(gh.commentsOn(2).filter((c) => c.user === 'release-bot-user')).toHaveLength(1);
    expect(gh.commentsOn(2).find((c) => c.user === 'github-actions[bot]')?.body).toBe(`${MARKER}\nby the workflow bot`);
    // An app's installation token names its bot with comment-author.
    gh.addToken('ghs_app_token', true, 'my-app[bot]');
    gh.addComment(2, `${MARKER}\nthe app's earlier report`, 'my-app[bot]');
    const app = await step({ eventName: 'pull_request', payload: pullRequestOpened(), apiUrl: url, githubToken: 'ghs_app_token', with: { config: PASS, 'comment-author': 'my-app[bot]' } });
    expect(app.status).toBe(0);
    expect(gh.commentsOn(2).find((c) => c.user === 'my-app[bot]')?.body).toMatch(/### ✅ Kept [^\n]*\n\nprune-gate passed/);
    expect(gh.problems).toEqual([]);
  } finally {
    await gh.close();
  }
});

test('a matrix: four jobs write partial results and publish nothing; the merge job publishes the report one machine would', async () => {
  const { gh, url } = await fakeApi();
  const root = fs.mkdtempSync(path.join(os.tmpdir(), 'prune-gate-matrix-'));
  temps.push(root);
  try {
    for (const job of ['1/4', '2/4', '3/4', '4/4']) {
      const out = path.join(root, 'partials', `job-${job[0]}`);
      const r = await step({ eventName: 'pull_request', payload: pullRequestOpened(), apiUrl: url, githubToken: WRITE, with: { config: 'test/action-configs/matrix.yml', job, out } });
      expect([job, r.status, errors(r)]).toEqual([job, 0, []]);
      expect(r.outputs['partial-path']).toBe(out);
      // Job 1 also keeps its passes over the calibration set for the merge.
      expect([job, fs.readdirSync(out).sort()]).toEqual([job, job === '1/4' ? ['partial.json', 'passes.bin'] : ['partial.json']]);
      expect(r.summary).toBe('');
    }
    expect(gh.requests).toEqual([]); // the jobs publish nothing
    const merged = await step({ eventName: 'pull_request', payload: pullRequestOpened(), apiUrl: url, githubToken: WRITE, with: { config: 'test/action-configs/matrix.yml', merge: path.join(root, 'partials'), out: path.join(root, 'merged') } });
    expect([merged.status, errors(merged)]).toEqual([0, []]);
    expect(merged.outputs.verdict).toBe('pass');
    const report = ReportSchema.parse(readJson(merged.outputs['report-path']));
    expect(report.steps.map((s) => s.quality_pass)).toEqual([true, true, false]);
    expect(fs.existsSync(merged.outputs['pruned-model-path'])).toBe(true);
    expect(merged.summary).toMatch(/^### ✅ Kept [^\n]*\n\nprune-gate passed/);
    expect(gh.commentsOn(2).filter((c) => c.user === 'github-actions[bot]')).toHaveLength(1);
    expect(gh.problems).toEqual([]);
  } finally {
    await gh.close();
  }
});

test('a pull request from a fork (read-only token, 403): a warning, the summary, and the step does not fail', async () => {
  const { gh, url } = await fakeApi();
  try {
    const r = await step({ eventName: 'pull_request', payload: pullRequestFromFork(), apiUrl: url, githubToken: READ, with: { config: PASS } });
    expect(r.status).toBe(0);
    expect(errors(r)).toEqual([]);
    expect(gh.problems).toEqual([]);
    expect(gh.forbidden).toEqual(['issues/create-comment']);
    expect(gh.comments.size).toBe(0);
    const w = warnings(r);
    expect(w).toHaveLength(1);
    expect(w[0].message).toMatch(/^prune-gate: cannot comment on pull request #2: Resource not accessible by integration \(HTTP 403\); the pull request comes from a fork/);
    expect(w[0].message).not.toContain('\n');
    expect(r.summary).toMatch(/^### ✅ Kept [^\n]*\n\nprune-gate passed/);
    expect(r.outputs.verdict).toBe('pass');
  } finally {
    await gh.close();
  }
});

test("a push event runs the repository's own example (prune-gate.yml, the default config) and writes only the summary", async () => {
  const { gh, url } = await fakeApi();
  try {
    const r = await step({ eventName: 'push', payload: push(), apiUrl: url, githubToken: WRITE });
    const report = ReportSchema.parse(readJson(r.outputs['report-path']));
    expect(report.base.path).toBe('examples/fortunes-llama/model.onnx'); // prune-gate.yml's model
    expect(report.pull_request).toBeUndefined();
    expect(r.status).toBe(report.verdict === 'pass' ? 0 : 1);
    expect(gh.requests).toEqual([]); // no comment, not even a look
    expect(r.summary.trim()).toBe(fs.readFileSync(path.join(path.dirname(r.outputs['report-path']), 'report.md'), 'utf8').trim());
    expect(r.stdout).toMatch(/not commenting: a push event has no pull request to comment on/);
  } finally {
    await gh.close();
  }
});

test('device threads and a memory bound work through the action: the report says what it ran on, the memory bound fails the step', async () => {
  const { gh, url } = await fakeApi();
  try {
    const r = await step({ eventName: 'push', payload: push(), apiUrl: url, githubToken: WRITE, with: { config: 'test/action-configs/device.yml' } });
    expect(r.status).toBe(1);
    const report = ReportSchema.parse(readJson(r.outputs['report-path']));
    expect(report.environment?.threads).toBe(1);
    expect(report.metrics.find((m) => m.name === 'memory')).toMatchObject({ rule: 'max 0.5 MiB', pass: false });
    expect(errors(r).map((a) => a.properties.title).filter(Boolean)).toEqual(['prune-gate: memory over its bound']);
    expect(r.summary).toContain(`onnxruntime on 1 of ${os.cpus().length} cores`);
  } finally {
    await gh.close();
  }
});

test('a bad input fails the step with one line naming the input, before any work', async () => {
  const cases: [Record<string, string>, string | RegExp][] = [
    [{ target: '1.5' }, "input target: expected a fraction of parameters between 0 and 1 (e.g. 0.3 or 30%) or auto, found '1.5'"],
    [{ comment: 'yes' }, "input comment: expected true or false, found 'yes'"],
    [{ 'fail-on': 'always' }, "input fail-on: expected regression or never, found 'always'"],
    [{ quantize: 'fp8' }, "input quantize: expected none, int8, int4, found 'fp8'"],
    [{ 'pr-number': '12abc' }, "input pr-number: expected a pull request number such as 42, found '12abc'"],
    [{ model: 'models/missing.onnx' }, 'input model: file not found: models/missing.onnx'],
    [{ calibration: 'calibration/nowhere' }, 'input calibration: file or folder not found: calibration/nowhere'],
    [{ config: 'ci/prune-gate.yml' }, 'input config: file not found: ci/prune-gate.yml'],
    [{ report: 'prune-gate.yml', target: '0.3' }, 'input report: publishes an existing report and prunes nothing: remove target (they apply only when the action prunes)'],
    [{ report: 'prune-gate.yml' }, /^input report: prune-gate\.yml: not a readable JSON report: /],
    [{ out: 'package.json' }, 'input out: package.json is a file, not a folder; name a folder (it is created when missing)'],
  ];
  // Independent runs: in parallel, each checked on its own.
  const runs = await Promise.all(cases.map(([inputs]) => step({ eventName: 'pull_request', payload: pullRequestOpened(), with: { config: PASS, ...inputs } })));
  runs.forEach((r, i) => {
    const [inputs, message] = cases[i];
    const lines = r.stdout.split('\n').filter((l) => l.startsWith('::error'));
    expect({ inputs, status: r.status, errorLines: lines.length }).toEqual({ inputs, status: 1, errorLines: 1 });
    const [e] = errors(r);
    if (typeof message === 'string') expect({ inputs, message: e.message }).toEqual({ inputs, message });
    else expect(e.message).toMatch(message);
    expect(r.stdout).not.toMatch(/internal error|\bat .+:\d+:\d+/);
    expect({ inputs, outputs: r.outputs, summary: r.summary }).toEqual({ inputs, outputs: {}, summary: '' });
  });
});

test('a wrong key in the config fails with one line naming the file and the key', async () => {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'prune-gate-action-config-'));
  temps.push(dir);
  const file = path.join(dir, 'prune-gate.yml');
  fs.writeFileSync(file, `model: ${path.join(ROOT, 'test/fixtures/mlp.onnx')}\ncalibration: ${path.join(ROOT, 'calibration/mlp')}\nprune:\n  targt: 0.3\n`);
  const r = await step({ eventName: 'push', payload: push(), cwd: dir });
  expect(r.status).toBe(1);
  expect(errors(r).map((a) => a.message)).toEqual(['prune-gate.yml: prune.targt: unknown key (did you mean target?)']);
});
