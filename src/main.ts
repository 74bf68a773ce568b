import * as core from '@actions/core';
import * as github from '@actions/github';
import { resolveConfig } from './config/config';
import { checkOutputFolder, displayPath } from './util/paths';
import { UserError, isUserError } from './errors';
import { METRICS } from './gate/metrics';
import { COMMENT_CUT_NOTE, COMMENT_LIMIT, SUMMARY_CUT_NOTE, SUMMARY_LIMIT_BYTES, apiError, commentBody, cutToLimit, ownLogin, pullRequestHead, upsertComment, utf8Bytes } from './github/comment';
import { ActionContext, measuredCommit, publishedRun, readContext, recordedPullRequest, thisRun } from './github/event';
import { GateInputs, Inputs, inputName, readInputs } from './github/inputs';
import { readReport } from './report/build';
import { formatValue } from './gate/format';
import { legacyMarker, renderMarkdown, stickyMarker } from './report/markdown';
import { withElapsed } from './util/progress';
import * as path from 'path';
import { PARTIAL_JSON } from './pipeline/job';
import type { Report } from './report/schema';

/**
 * The GitHub Action (action.yml runs dist/index.js, bundled from index.ts). It reads and
 * validates its inputs, then either runs the gate (the same pipeline as `prune-gate run`) or,
 * with `report:`, publishes an existing report.json; then it sets the outputs, comments on the
 * pull request, writes the job summary (saying when the comment was left alone), and fails the
 * step when the gate failed.
 */

export interface ActionDeps {
  /** Makes onnxruntime-node loadable before the pipeline is (index.ts installs it on a cold start). */
  ensureRuntime?: () => Promise<void>;
  env?: NodeJS.ProcessEnv;
}

interface Published {
  report: Report;
  markdown: string;
  reportPath: string;
  prunedModelPath: string;
  /** The config file, for annotations (gate mode). */
  configFile?: string;
}

export async function run(deps: ActionDeps = {}): Promise<void> {
  const env = deps.env ?? process.env;
  try {
    const inputs = readInputs((name) => core.getInput(name), env);
    const ctx = readContext(env);
    if (inputs.mode === 'gate' && inputs.job) {
      await matrixJob(inputs, deps);
      return;
    }
    const published = inputs.mode === 'gate' ? await gate(inputs, ctx, deps) : publishOnly(inputs.report, ctx, inputs.artifactUrl);
    setOutputs(published);
    const commented = await comment(published.report, published.markdown, inputs, ctx);
    await writeSummary(published, inputs, env, commented.note);
    judge(published, inputs);
    if (commented.failure) core.setFailed(commented.failure);
  } catch (e) {
    // A UserError is the user's to fix: its one-line message is enough. Anything else is a bug.
    if (isUserError(e)) core.setFailed(e.message);
    else core.setFailed(`internal error (a bug in prune-gate, please report it): ${e instanceof Error ? (e.stack ?? e.message) : String(e)}`);
  }
}

// ---------------------------------------------------------------------------------------------
// The two modes
// ---------------------------------------------------------------------------------------------

async function gate(inputs: GateInputs, ctx: ActionContext, deps: ActionDeps): Promise<Published> {
  const config = resolveConfig(inputs.config, inputs.overrides, inputName);
  checkOutputFolder(inputs.out, 'input out');
  await (deps.ensureRuntime ?? (async () => undefined))();
  // Loaded only now: the pipeline requires onnxruntime-node, which ensureRuntime provides.
  const { runGate } = await import('./pipeline/run');
  const { mergeJobs } = await import('./pipeline/matrix');
  core.startGroup(`prune-gate: pruning ${displayPath(config.model as string)} and evaluating it on ${displayPath(config.calibration as string)}`);
  try {
    const pullRequest = ctx.pullRequest && recordedPullRequest(ctx.pullRequest);
    const log = withElapsed((line) => core.info(line));
    const outcome = inputs.merge
      ? await mergeJobs(config, inputs.merge, inputs.out, log, { pullRequest, run: thisRun(ctx, inputs.artifactUrl) })
      : await runGate({ config, out: inputs.out, log, pullRequest, run: thisRun(ctx, inputs.artifactUrl) });
    return {
      report: outcome.report,
      markdown: outcome.markdown,
      reportPath: outcome.files.json,
      prunedModelPath: outcome.files.model,
      configFile: config.file,
    };
  } finally {
    core.endGroup();
  }
}

/** A matrix job (`job: K/N`): its share of the gate in partial.json, for the merge job; nothing is published. */
async function matrixJob(inputs: GateInputs, deps: ActionDeps): Promise<void> {
  const config = resolveConfig(inputs.config, inputs.overrides, inputName);
  const job = inputs.job as NonNullable<GateInputs['job']>;
  checkOutputFolder(inputs.out, 'input out');
  await (deps.ensureRuntime ?? (async () => undefined))();
  const { runJob } = await import('./pipeline/matrix');
  const partial = await runJob(config, job, inputs.out, withElapsed((line) => core.info(line)));
  core.setOutput('partial-path', inputs.out);
  const files = [PARTIAL_JSON, ...(partial.passes ? [partial.passes.file] : [])].join(' and ');
  core.info(`job ${job.index}/${job.count}: ${partial.steps.length} steps evaluated on ${partial.evaluated.samples} samples; upload ${inputs.out} (${files}) for the merge job`);
}

function publishOnly(file: string, ctx: ActionContext, artifactUrl: string | undefined): Published {
  let report: Report;
  try {
    report = readReport(displayPath(file));
  } catch (e) {
    if (isUserError(e)) throw new UserError(`input report: ${e.message}`);
    throw e;
  }
  // The report is untrusted: its commit and links come from the workflow_run event instead, or,
  // published by the run that gated (after an upload step, for its artifact-url), from this run.
  const run = ctx.workflowRun ? publishedRun(ctx, artifactUrl ?? report.run?.artifacts_url) : thisRun(ctx, artifactUrl);
  const { run: _untrusted, ...rest } = report;
  report = run ? { ...rest, run } : rest;
  core.info(`publishing ${displayPath(file)} (verdict: ${report.verdict}); nothing is pruned`);
  return { report, markdown: renderMarkdown(report), reportPath: file, prunedModelPath: '' };
}

// ---------------------------------------------------------------------------------------------
// Outputs, summary, verdict
// ---------------------------------------------------------------------------------------------

/** A ratio as an output: 4.2, not 4.199999; '' when it cannot be measured. */
function ratioOutput(v: number | null): string {
  return v === null || !Number.isFinite(v) || v <= 0 ? '' : String(Number(v.toFixed(3)));
}

function setOutputs(p: Published): void {
  const { report } = p;
  core.setOutput('verdict', report.verdict);
  core.setOutput('report-path', p.reportPath);
  core.setOutput('pruned-model-path', p.prunedModelPath);
  core.setOutput('compression', ratioOutput(report.candidate.bytes > 0 ? report.base.bytes / report.candidate.bytes : null));
  core.setOutput('speedup', ratioOutput(report.latency.speedup));
  // The share counted in the written model (0.301), not the target; '' for eval and old reports.
  core.setOutput('removed', report.removed === undefined ? '' : String(Number(report.removed.toFixed(4))));
}

function publishedFrom(report: Report): string {
  const pr = report.pull_request;
  // Numbers and a hex SHA, both checked by the schema: nothing here can carry markup.
  return pr ? `> Published from the report of pull request #${pr.number} (head ${pr.head_sha.slice(0, 12)}).\n\n` : '> Published from an existing report.\n\n';
}

/** The job summary: the report, after `note` (one line about the comment, when there is one). */
async function writeSummary(p: Published, inputs: Inputs, env: NodeJS.ProcessEnv, note: string | undefined): Promise<void> {
  if (!env.GITHUB_STEP_SUMMARY) {
    core.info('no GITHUB_STEP_SUMMARY (not on a runner): the report is in report.md');
    return;
  }
  const text = (note ? `> ${note}\n\n` : '') + (inputs.mode === 'publish' ? publishedFrom(p.report) : '') + p.markdown;
  await core.summary.addRaw(cutToLimit(text, SUMMARY_LIMIT_BYTES - 1024, SUMMARY_CUT_NOTE, utf8Bytes)).write();
}

/** One annotation per metric over its bound; the step fails naming them (fail-on: regression). */
function judge(p: Published, inputs: Inputs): void {
  const { report } = p;
  core.info(`verdict: ${report.verdict}`);
  if (report.verdict === 'pass') return;
  const failing = report.metrics.filter((m) => m.rule !== null && !m.pass);
  const names = failing.map((m) => `${m.name} (${m.rule})`);
  const what = names.length ? `: ${names.join(', ')} over the bound` : '';
  if (inputs.failOn === 'never') {
    core.notice(`prune-gate: the gate failed${what}; fail-on is never, so the step passes`);
    return;
  }
  const file = p.configFile ? displayPath(p.configFile) : undefined;
  for (const m of failing) {
    const op = METRICS[m.name].higherIsBetter ? '≥' : '≤';
    core.error(`${m.name}: ${formatValue(m.name, m.candidate)} (base ${formatValue(m.name, m.base)}), bound ${op} ${formatValue(m.name, m.bound)} (${m.rule})`, {
      title: `prune-gate: ${m.name} over its bound`,
      file,
    });
  }
  core.setFailed(`prune-gate: the gate failed${what}`);
}

// ---------------------------------------------------------------------------------------------
// The pull-request comment
// ---------------------------------------------------------------------------------------------

/** Which pull request to comment on (its number), or why none. */
function commentTarget(report: Report, inputs: Inputs, ctx: ActionContext): number | string {
  const run = ctx.workflowRun;
  if (inputs.prNumber !== undefined) return inputs.prNumber;
  if (ctx.pullRequest) return ctx.pullRequest.number;
  if (inputs.mode === 'publish' && run) {
    // The report came from an untrusted run's artifact: the PR it names must be the one the
    // triggering run was for (GitHub's head SHA, not the report's), checked before commenting.
    const recorded = report.pull_request;
    if (recorded && recorded.head_sha !== run.headSha) {
      return `report.json records head ${recorded.head_sha.slice(0, 12)} but the workflow run was for ${run.headSha.slice(0, 12)}: not the report of this run`;
    }
    const number = recorded?.number ?? run.pullRequests[0];
    if (number !== undefined) return number;
    return 'the report records no pull request and the workflow_run event names none: set pr-number';
  }
  return ctx.eventName ? `a ${ctx.eventName} event has no pull request to comment on` : 'no GITHUB_EVENT_NAME (not on a runner), so no pull request to comment on';
}

interface Commented {
  /** Why the step fails: publish mode, whose only job is the comment, could not write it. */
  failure?: string;
  /** One line for the job summary when the comment was left alone. */
  note?: string;
}

/** Comments (or says why not), only while the pull request's head is the measured commit. */
async function comment(report: Report, markdown: string, inputs: Inputs, ctx: ActionContext): Promise<Commented> {
  if (!inputs.comment) {
    core.info('comment is false: no pull-request comment');
    return {};
  }
  const target = commentTarget(report, inputs, ctx);
  const publish = inputs.mode === 'publish';
  const measured = measuredCommit(ctx);
  if (typeof target === 'string' || measured === undefined) {
    const why = typeof target === 'string' ? target : 'no GITHUB_SHA, so the measured commit is unknown';
    if (publish) core.warning(`prune-gate: not commenting: ${why}`);
    else core.info(`not commenting: ${why}`);
    return {};
  }
  const number = target;
  if (!ctx.repository) return publish ? { failure: 'prune-gate: cannot comment: GITHUB_REPOSITORY is not set' } : {};
  if (!inputs.token) {
    core.warning(`prune-gate: no github-token: not commenting on pull request #${number}`);
    return {};
  }
  const where = { ...ctx.repository, number };
  const octokit = github.getOctokit(inputs.token, { baseUrl: ctx.apiUrl });
  try {
    const markers = { current: stickyMarker(report.base.path, report.config), legacy: legacyMarker(report.base.path) };
    const body = commentBody(markers.current, markdown);
    if (body.includes(COMMENT_CUT_NOTE)) core.info(`the report was cut to GitHub's ${COMMENT_LIMIT}-character limit for a comment`);
    const own = await ownLogin(octokit, inputs.token, inputs.commentAuthor);
    core.info(`updating only comments by ${own.login} (${own.how})`);
    // Asked last: a run that a newer push overtook must not overwrite the newer run's comment.
    const head = await pullRequestHead(octokit, where);
    if (head !== measured) {
      const [was, now] = [measured.slice(0, 12), head.slice(0, 12)];
      core.warning(
        `prune-gate: not commenting on pull request #${number}: its head is now ${now}, not ${was}, the commit measured (a newer push, or a pull request other than the one measured); its comment is left as it was`,
      );
      // Both SHAs are hex (GitHub's): nothing here can carry markup.
      return { note: `⏭️ Not commented: pull request #${number}'s head is now \`${now}\`, not \`${was}\`, the commit measured; its comment is left as it was.` };
    }
    const r = await upsertComment(octokit, where, markers, body, own.login);
    core.info(`${r.action} the comment on pull request #${number}: ${r.url}`);
    // As peter-evans/create-or-update-comment names them: for a later step that links or reacts to it.
    core.setOutput('comment-id', String(r.id));
    core.setOutput('comment-url', r.url);
    return {};
  } catch (e) {
    const { status, message } = apiError(e);
    const what = `cannot comment on pull request #${number}: ${message}${status ? ` (HTTP ${status})` : ''}`;
    if (publish) return { failure: `prune-gate: ${what}` };
    if (status === 403) {
      const why = ctx.pullRequest?.fromFork
        ? 'the pull request comes from a fork, whose token is read-only: the report is in the job summary, and the README shows how a workflow_run workflow comments on fork pull requests'
        : 'give the job `permissions: pull-requests: write`';
      core.warning(`prune-gate: ${what}; ${why}`);
    } else {
      core.warning(`prune-gate: ${what}`);
    }
    return {};
  }
}
