// Publish-only mode and the two-workflow fork pattern, end to end through the
// built action. Workflow 1 runs on a pull_request from a fork with its read-only token: the gate
// runs, the comment is refused (403, a warning) and report.json records the PR and its head.
// The report travels as an artifact (copied here) to workflow 2, a workflow_run with a write
// token, which publishes it with `report:` to the PR recorded in it, after checking that PR's
// head is the commit the triggering run was for. The report is untrusted: a tampered one is
// rejected by the schema, names the wrong PR, or tries to inject markup, and none of it works.
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { COMMENT_CUT_NOTE, COMMENT_LIMIT } from '../src/github/comment';
import { renderMarkdown, stickyMarker } from '../src/report/markdown';
import { Report, ReportSchema } from '../src/report/schema';
import { FakeGitHub } from './helpers/fake-github';
import { ActionRun, ActionStep, RUN_ID, runAction } from './helpers/run-action';
import { bundleInto } from './helpers/run-cli';
import { pullRequestFromFork, pullRequestOpened, workflowRunCompleted } from './helpers/webhooks';

const WRITE = 'ghs_base_repository_write_token';
const READ = 'ghs_fork_read_only_token';
const FORK_HEAD = 'f0'.repeat(20);
const OTHER_HEAD = 'be'.repeat(20);
const MARKER = stickyMarker('test/fixtures/mlp.onnx', 'test/action-configs/pass.yml');
// The triggering run of the example workflow_run payload (its id), in this repository.
const TRIGGERING_RUN = 'https://github.com/Codertocat/Hello-World/actions/runs/1589141559';
/** The report as published: its commit and run from the workflow_run event, not from the report. */
const asPublished = (r: Report): Report => ({ ...r, run: { sha: FORK_HEAD, url: TRIGGERING_RUN, artifacts_url: `${TRIGGERING_RUN}#artifacts` } });

let bundle: string;
let main: string;
let gh: FakeGitHub;
let api: string;
const temps: string[] = [];

beforeAll(async () => {
  bundle = bundleInto('action-publish');
  main = path.join(bundle, 'index.js');
  // PR #2 from a fork (head FORK_HEAD), and PR #3, someone else's, with another head.
  const fork = pullRequestFromFork(FORK_HEAD).pull_request;
  const other = pullRequestOpened().pull_request;
  other.number = 3;
  other.head.sha = OTHER_HEAD;
  gh = new FakeGitHub({ owner: 'Codertocat', repo: 'Hello-World', pulls: [fork, other] });
  gh.addToken(WRITE, true).addToken(READ, false);
  api = await gh.listen();
});
afterAll(async () => {
  await gh.close();
  fs.rmSync(bundle, { recursive: true, force: true });
  for (const t of temps) fs.rmSync(t, { recursive: true, force: true });
});

async function step(s: Omit<ActionStep, 'main'>): Promise<ActionRun> {
  const r = await runAction({ main, apiUrl: api, ...s });
  temps.push(r.runnerTemp);
  return r;
}

/** Workflow 2's workspace: no checkout, only the downloaded artifact. */
function artifactWorkspace(report: unknown): string {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'prune-gate-workflow-run-'));
  temps.push(dir);
  fs.mkdirSync(path.join(dir, 'prune-gate-report'));
  fs.writeFileSync(path.join(dir, 'prune-gate-report', 'report.json'), typeof report === 'string' ? report : JSON.stringify(report));
  return dir;
}

function publishStep(workspace: string, extra: Record<string, string> = {}, headSha = FORK_HEAD) {
  return step({
    eventName: 'workflow_run',
    payload: workflowRunCompleted(headSha),
    githubToken: WRITE,
    cwd: workspace,
    with: { report: 'prune-gate-report/report.json', ...extra },
  });
}

const ops = (from: number) => gh.requests.slice(from).map((r) => `${r.method} ${r.path.replace(/\?.*$/, '')} ${r.status}`);

let workflow1: ActionRun;
let report: Report;
let reportMd: string;

test('workflow 1 (pull_request from a fork, read-only token): the gate runs, the comment gets 403 -> a warning, report.json records the PR', async () => {
  workflow1 = await step({ eventName: 'pull_request', payload: pullRequestFromFork(FORK_HEAD), githubToken: READ, with: { config: 'test/action-configs/pass.yml' } });
  expect(workflow1.status).toBe(0);
  expect(workflow1.annotations.map((a) => a.level)).toEqual(['warning']);
  expect(workflow1.annotations[0].message).toMatch(/Resource not accessible by integration \(HTTP 403\); the pull request comes from a fork/);
  expect(gh.forbidden).toEqual(['issues/create-comment']);
  expect(gh.comments.size).toBe(0);
  report = ReportSchema.parse(JSON.parse(fs.readFileSync(workflow1.outputs['report-path'], 'utf8')));
  expect(report.pull_request).toEqual({ number: 2, head_sha: FORK_HEAD });
  reportMd = fs.readFileSync(path.join(path.dirname(workflow1.outputs['report-path']), 'report.md'), 'utf8');
  expect(gh.problems).toEqual([]);
});

test('workflow 2 (workflow_run, write token, report:): publishes the summary and creates the comment on the recorded PR; a rerun updates it', async () => {
  expect(report).toBeDefined();
  const ws = artifactWorkspace(report);
  const from = gh.requests.length;
  const r = await publishStep(ws);
  expect(r.stderr).toBe('');
  expect(r.annotations).toEqual([]);
  expect(r.status).toBe(0);
  expect(gh.problems).toEqual([]);
  expect(ops(from)).toEqual([
    'GET /repos/Codertocat/Hello-World/pulls/2 200', // the PR's head must be the run's head_sha
    'GET /repos/Codertocat/Hello-World/issues/2/comments 200',
    'POST /repos/Codertocat/Hello-World/issues/2/comments 201',
  ]);
  const comments = gh.commentsOn(2);
  expect(comments).toHaveLength(1);
  // Rendered again from report.json, with the triggering run's commit and links from the event.
  const published = renderMarkdown(asPublished(report));
  expect(comments[0].body).toBe(`${MARKER}\n${published}`);
  expect(published).toContain(`Judged: [commit \`${FORK_HEAD.slice(0, 12)}\`](https://github.com/Codertocat/Hello-World/commit/${FORK_HEAD}) · [the run](${TRIGGERING_RUN}) · [its artifacts](${TRIGGERING_RUN}#artifacts)`);
  expect(reportMd.replace(/<sub>Judged: [^\n]*<\/sub>/, '')).toBe(published.replace(/<sub>Judged: [^\n]*<\/sub>/, ''));
  expect(r.summary).toBe(`> Published from the report of pull request #2 (head ${FORK_HEAD.slice(0, 12)}).\n\n${published}`);
  expect(r.outputs).toEqual({
    verdict: 'pass',
    'report-path': path.join(ws, 'prune-gate-report', 'report.json'),
    'pruned-model-path': '',
    removed: workflow1.outputs.removed,
    compression: workflow1.outputs.compression,
    speedup: workflow1.outputs.speedup,
    'comment-id': String(comments[0].id),
    'comment-url': `https://github.com/Codertocat/Hello-World/pull/2#issuecomment-${comments[0].id}`,
  });
  expect(r.stdout).toMatch(/nothing is pruned/);

  const again = await publishStep(ws);
  expect(again.status).toBe(0);
  expect(gh.commentsOn(2)).toHaveLength(1);
  expect(gh.requests[gh.requests.length - 1]).toMatchObject({ method: 'PATCH', path: `/repos/Codertocat/Hello-World/issues/comments/${comments[0].id}`, status: 200 });
  expect(gh.problems).toEqual([]);
});

test('a report naming another pull request is not published there (its head is not the run head)', async () => {
  const tampered = structuredClone(report);
  tampered.pull_request = { number: 3, head_sha: FORK_HEAD };
  const from = gh.requests.length;
  const r = await publishStep(artifactWorkspace(tampered));
  expect(r.status).toBe(0);
  expect(ops(from)).toEqual(['GET /repos/Codertocat/Hello-World/pulls/3 200']);
  expect(r.annotations.map((a) => [a.level, a.message])).toEqual([
    [
      'warning',
      `prune-gate: not commenting on pull request #3: its head is now ${OTHER_HEAD.slice(0, 12)}, not ${FORK_HEAD.slice(0, 12)}, the commit measured (a newer push, or a pull request other than the one measured); its comment is left as it was`,
    ],
  ]);
  expect(gh.commentsOn(3)).toHaveLength(0);
  expect(r.summary.split('\n', 1)[0]).toBe(`> ⏭️ Not commented: pull request #3's head is now \`${OTHER_HEAD.slice(0, 12)}\`, not \`${FORK_HEAD.slice(0, 12)}\`, the commit measured; its comment is left as it was.`);
});

test("a report's own run links are not trusted: only a link to the triggering run's artifacts in this repository is kept", async () => {
  const links = (run: Report['run']) => {
    const tampered = structuredClone(report);
    tampered.run = run;
    return tampered;
  };
  const posted = async (r: Report) => {
    const ws = artifactWorkspace(r);
    const step = await publishStep(ws);
    expect(step.status).toBe(0);
    return gh.commentsOn(2)[0].body;
  };
  const evil = await posted(links({ sha: OTHER_HEAD, url: 'https://evil.example/phish', artifacts_url: 'https://github.com/other/repo/actions/runs/1589141559#artifacts' }));
  expect(evil).not.toMatch(/evil\.example|other\/repo|bebebebe/);
  expect(evil).toContain(`[commit \`${FORK_HEAD.slice(0, 12)}\`](https://github.com/Codertocat/Hello-World/commit/${FORK_HEAD}) · [the run](${TRIGGERING_RUN}) · [its artifacts](${TRIGGERING_RUN}#artifacts)`);
  const artifact = `${TRIGGERING_RUN}/artifacts/123456`;
  expect(await posted(links({ sha: FORK_HEAD, artifacts_url: artifact }))).toContain(`[its artifacts](${artifact})`);
  const otherRun = 'https://github.com/Codertocat/Hello-World/actions/runs/99/artifacts/1';
  expect(await posted(links({ sha: FORK_HEAD, artifacts_url: otherRun }))).not.toContain(otherRun);
  expect(gh.problems).toEqual([]);
});

test("a report whose recorded head is not the run's is not published at all", async () => {
  const tampered = structuredClone(report);
  tampered.pull_request = { number: 3, head_sha: OTHER_HEAD };
  const from = gh.requests.length;
  const r = await publishStep(artifactWorkspace(tampered));
  expect(r.status).toBe(0);
  expect(ops(from)).toEqual([]);
  expect(r.annotations.map((a) => a.message)).toEqual([
    `prune-gate: not commenting: report.json records head ${OTHER_HEAD.slice(0, 12)} but the workflow run was for ${FORK_HEAD.slice(0, 12)}: not the report of this run`,
  ]);
});

test('a report that does not fit the schema fails the step with one line, and nothing is sent', async () => {
  const from = gh.requests.length;
  const bad = { ...report, verdict: 'maybe' };
  const r = await publishStep(artifactWorkspace(bad));
  expect(r.status).toBe(1);
  expect(r.annotations.map((a) => a.message)).toEqual([
    "input report: prune-gate-report/report.json: not a prune-gate report: verdict: Invalid option: expected one of \"pass\"|\"fail\"",
  ]);
  const huge = { ...report, metrics: report.metrics.map((m) => ({ ...m, rule: 'x'.repeat(5000) })) };
  const r2 = await publishStep(artifactWorkspace(huge));
  expect(r2.status).toBe(1);
  expect(r2.annotations[0].message).toMatch(/^input report: prune-gate-report\/report\.json: not a prune-gate report: metrics\.0\.rule: /);
  expect(ops(from)).toEqual([]);
  expect(r.summary + r2.summary).toBe('');
});

test('a hostile report: every string is escaped, the marker stays one HTML comment, the comment is cut to 65,536 characters with a note', async () => {
  const evil = structuredClone(report);
  evil.base.path = 'models/--><img src=x onerror=alert(1)>.onnx';
  const hostile = (i: number) =>
    `<img src=x onerror=alert(${i})> @octocat [click](javascript:alert(1)) </details><script>alert(1)</script> | x | \`code\` https://evil.example ${'_*~'.repeat(80)}`;
  evil.skipped = Array.from({ length: 400 }, (_, i) => ({ where: hostile(i), reason: hostile(i) }));
  evil.metrics = evil.metrics.map((m) => (m.rule === null ? m : { ...m, rule: `${m.rule} <img src=x onerror=alert(2)> @octocat` }));
  evil.pruned = Array.from({ length: 50 }, (_, i) => ({ kind: 'ffn' as const, where: hostile(i), before: 8, after: 4, params: 100 }));
  const ws = artifactWorkspace(evil);
  const r = await publishStep(ws, { 'pr-number': '2' });
  expect(r.status).toBe(0);
  expect(gh.problems).toEqual([]);
  const mine = gh.commentsOn(2).filter((c) => c.body.startsWith('<!-- prune-gate:model=models/'));
  expect(mine).toHaveLength(1);
  const body = mine[0].body;
  const [marker] = body.split('\n', 1);
  expect(marker).toBe('<!-- prune-gate:model=models/-__img_src_x_onerror_alert_1__.onnx config=test/action-configs/pass.yml -->');
  expect(marker.match(/-->/g)).toHaveLength(1);
  expect(body.length).toBeLessThanOrEqual(COMMENT_LIMIT);
  expect(body.length).toBeGreaterThan(COMMENT_LIMIT - 5000); // cut near the limit, not far below
  expect(body.trimEnd().endsWith(COMMENT_CUT_NOTE)).toBe(true);
  expect((body.match(/<details>/g) ?? []).length).toBe((body.match(/<\/details>/g) ?? []).length);
  // The second marker-like string and every tag or link from the report are inert text.
  for (const s of [body, r.summary]) {
    expect(s).not.toMatch(/<img|<script|<\/details><script|\]\(javascript|@octocat|https:\/\/evil|onerror=/);
    expect(s.split('\n').slice(1).join('\n')).not.toContain('-->');
  }
  expect(body).toContain('&lt;img src&#61;x onerror&#61;alert(1)&gt;');
  expect(body).toContain('@\u200boctocat');
  expect(body).toContain('(min 0.25 &lt;img src&#61;x onerror&#61;alert(2)&gt; @\u200boctocat)'); // a rule, in the metrics table
  // The summary (1 MiB limit) holds all of it.
  expect(Buffer.byteLength(r.summary)).toBeLessThan(1024 * 1024);
  expect(r.summary).toContain('… and 200 more (see report.json)');
});

test('publish mode fails the step when it cannot comment (its only job), naming the pull request', async () => {
  const r = await publishStep(artifactWorkspace(report), { 'pr-number': '99' });
  expect(r.status).toBe(1);
  expect(r.annotations.map((a) => a.message)).toEqual(['prune-gate: cannot comment on pull request #99: Not Found (HTTP 404)']);
  expect(r.summary).toMatch(/### ✅ Kept [^\n]*\n\nprune-gate passed/); // the summary is still written
});

test('one job links the artifact (docs/action.md): the gate (comment false, fail-on never), the upload, then publishing with its artifact-url comments with that link and fails on a failed gate', async () => {
  // PR #3 (not a fork) on a pull_request event; its head is the commit measured.
  const event = pullRequestOpened();
  event.number = 3;
  event.pull_request.number = 3;
  event.pull_request.head.sha = OTHER_HEAD;
  const gated = await step({ eventName: 'pull_request', payload: event, githubToken: WRITE, with: { config: 'test/action-configs/fail.yml', comment: 'false', 'fail-on': 'never' } });
  expect([gated.status, gated.outputs.verdict]).toEqual([0, 'fail']);
  expect(gh.commentsOn(3)).toHaveLength(0);
  // What actions/upload-artifact's artifact-url output looks like: this run's artifact page.
  const artifact = `https://github.com/Codertocat/Hello-World/actions/runs/${RUN_ID}/artifacts/4242`;
  const published = await step({ eventName: 'pull_request', payload: event, githubToken: WRITE, with: { report: gated.outputs['report-path'], 'artifact-url': artifact } });
  expect(gh.problems).toEqual([]);
  const comments = gh.commentsOn(3);
  expect(comments).toHaveLength(1);
  expect(comments[0].body).toContain(`Judged: [commit \`${OTHER_HEAD.slice(0, 12)}\`](https://github.com/Codertocat/Hello-World/commit/${OTHER_HEAD}) · [the run](https://github.com/Codertocat/Hello-World/actions/runs/${RUN_ID}) · [its artifacts](${artifact})`);
  expect(published.outputs['comment-url']).toBe(`https://github.com/Codertocat/Hello-World/pull/3#issuecomment-${comments[0].id}`);
  // The check is the publishing step's: it fails on the failed gate.
  expect(published.status).toBe(1);
  expect(published.annotations.filter((a) => !a.properties.title).map((a) => a.message)).toEqual(['prune-gate: the gate failed: agreement (min 0.9999), cosine (min 0.999) over the bound']);
});
