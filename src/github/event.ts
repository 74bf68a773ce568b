import * as fs from 'fs';
import { z } from 'zod';
import { UserError } from '../errors';
import type { ReportPullRequest, ReportRun } from '../report/schema';

/**
 * What the action needs from the workflow run's context: the repository, the event and, for the
 * events that have one, the pull request. Read from the runner's environment (GITHUB_REPOSITORY,
 * GITHUB_EVENT_NAME, GITHUB_EVENT_PATH, GITHUB_API_URL); the payload is checked field by field
 * rather than trusted to have a shape.
 */

const SHA = /^[0-9a-f]{40}([0-9a-f]{24})?$/;

const PullRequestPayload = z.object({
  pull_request: z.object({
    number: z.number().int().positive(),
    head: z.object({
      sha: z.string().regex(SHA),
      repo: z.object({ full_name: z.string() }).nullable().optional(),
    }),
    base: z.object({ repo: z.object({ full_name: z.string() }) }).optional(),
  }),
});

const WorkflowRunPayload = z.object({
  workflow_run: z.object({
    id: z.number().int().positive().optional(),
    event: z.string(),
    head_sha: z.string().regex(SHA),
    pull_requests: z.array(z.object({ number: z.number().int().positive() })).default([]),
    head_repository: z.object({ full_name: z.string() }).nullable().optional(),
  }),
});

/** The events whose payload names a pull request the action can comment on. */
export const PULL_REQUEST_EVENTS = ['pull_request', 'pull_request_target'] as const;

export interface PullRequestEvent {
  number: number;
  headSha: string;
  /** The head repository differs from the base one: the token is read-only (no secrets either). */
  fromFork: boolean;
}

export interface WorkflowRunEvent {
  /** The triggering run's id: its page and artifacts are under /actions/runs/<id>. */
  id?: number;
  /** The event of the run that triggered this one (pull_request for the fork pattern). */
  event: string;
  /** The commit that run was for: trusted (GitHub's, not the PR's). */
  headSha: string;
  pullRequests: number[];
}

export interface ActionContext {
  eventName: string;
  /** owner/name, or undefined outside GitHub Actions (a local run). */
  repository?: { owner: string; repo: string };
  apiUrl: string;
  /** https://github.com, or the GitHub Enterprise server's address. */
  serverUrl: string;
  /** This job's run (GITHUB_RUN_ID, GITHUB_RUN_ATTEMPT) and the commit it checked out (GITHUB_SHA). */
  runId?: number;
  runAttempt?: number;
  sha?: string;
  pullRequest?: PullRequestEvent;
  workflowRun?: WorkflowRunEvent;
}

function readPayload(file: string | undefined): unknown {
  if (!file) return {};
  let text: string;
  try {
    text = fs.readFileSync(file, 'utf8');
  } catch {
    return {};
  }
  try {
    return JSON.parse(text);
  } catch (e) {
    throw new UserError(`GITHUB_EVENT_PATH ${file}: not JSON: ${(e as Error).message.split('\n')[0]}`);
  }
}

/** The pull request of a pull_request(_target) event's payload; undefined for other events or payloads. */
function pullRequestOf(eventName: string, payload: unknown, repository: string | undefined): PullRequestEvent | undefined {
  if (!(PULL_REQUEST_EVENTS as readonly string[]).includes(eventName)) return undefined;
  const pr = PullRequestPayload.safeParse(payload);
  if (!pr.success) return undefined;
  const head = pr.data.pull_request.head.repo;
  const base = pr.data.pull_request.base?.repo.full_name ?? repository;
  return {
    number: pr.data.pull_request.number,
    headSha: pr.data.pull_request.head.sha,
    // A deleted head repository (null) was a fork.
    fromFork: head === null ? true : head === undefined ? false : head.full_name !== base,
  };
}

/**
 * The pull request this run is for, as report.json records it (so that a later `workflow_run`
 * job publishing the report knows which PR to comment on). For the command line, which may run
 * anywhere: outside a pull_request event, or with an unreadable payload, there is none.
 */
export function pullRequestOfRun(env: NodeJS.ProcessEnv = process.env): ReportPullRequest | undefined {
  let payload: unknown;
  try {
    payload = readPayload(env.GITHUB_EVENT_PATH);
  } catch {
    return undefined;
  }
  const pr = pullRequestOf(env.GITHUB_EVENT_NAME ?? '', payload, env.GITHUB_REPOSITORY);
  return pr && recordedPullRequest(pr);
}

/** A run's pull request as report.json records it. */
export function recordedPullRequest(pr: PullRequestEvent): ReportPullRequest {
  return { number: pr.number, head_sha: pr.headSha };
}

export function readContext(env: NodeJS.ProcessEnv = process.env): ActionContext {
  const eventName = env.GITHUB_EVENT_NAME ?? '';
  const payload = readPayload(env.GITHUB_EVENT_PATH);
  const ctx: ActionContext = {
    eventName,
    apiUrl: (env.GITHUB_API_URL || 'https://api.github.com').replace(/\/+$/, ''),
    serverUrl: (env.GITHUB_SERVER_URL || 'https://github.com').replace(/\/+$/, ''),
  };
  if (/^[1-9]\d{0,15}$/.test(env.GITHUB_RUN_ID ?? '')) ctx.runId = Number(env.GITHUB_RUN_ID);
  if (/^[1-9]\d{0,5}$/.test(env.GITHUB_RUN_ATTEMPT ?? '')) ctx.runAttempt = Number(env.GITHUB_RUN_ATTEMPT);
  if (SHA.test(env.GITHUB_SHA ?? '')) ctx.sha = env.GITHUB_SHA;
  const repo = env.GITHUB_REPOSITORY;
  if (repo) {
    const m = /^([A-Za-z0-9_.-]+)\/([A-Za-z0-9_.-]+)$/.exec(repo);
    if (!m) throw new UserError(`GITHUB_REPOSITORY: expected owner/name, found '${repo}'`);
    ctx.repository = { owner: m[1], repo: m[2] };
  }
  const pullRequest = pullRequestOf(eventName, payload, repo);
  if (pullRequest) ctx.pullRequest = pullRequest;
  if (eventName === 'workflow_run') {
    const run = WorkflowRunPayload.safeParse(payload);
    if (run.success) {
      ctx.workflowRun = {
        id: run.data.workflow_run.id,
        event: run.data.workflow_run.event,
        headSha: run.data.workflow_run.head_sha,
        pullRequests: run.data.workflow_run.pull_requests.map((p) => p.number),
      };
    }
  }
  return ctx;
}

/** The page of run `id` of this repository: /<owner>/<repo>/actions/runs/<id>. */
function runUrl(ctx: ActionContext, id: number): string | undefined {
  return ctx.repository ? `${ctx.serverUrl}/${ctx.repository.owner}/${ctx.repository.repo}/actions/runs/${id}` : undefined;
}

/** Whether `url` is a page of one of this repository's runs (its page, an attempt, its artifacts): only such URLs become links. */
export function isRunUrl(ctx: ActionContext, url: string): boolean {
  const base = runUrl(ctx, 1)?.replace(/\/1$/, '/');
  if (!base || !url.startsWith(base)) return false;
  return /^\d+(\/attempts\/\d+)?(\/artifacts\/\d+|#artifacts)?$/.test(url.slice(base.length));
}

/**
 * The commit a run measured, as GitHub's event names it: the head of the run a workflow_run
 * event follows, the pull request's head (a pull_request checkout is the merge of that head with
 * the base; the head is what the pull request shows and what a push replaces), else the commit
 * checked out (GITHUB_SHA). The report records it and the comment is written only while the pull
 * request's head is still it (docs/contracts.md, "The action").
 */
export function measuredCommit(ctx: ActionContext): string | undefined {
  return ctx.workflowRun?.headSha ?? ctx.pullRequest?.headSha ?? ctx.sha;
}

/**
 * The commit and run a report made here records: the measured commit, this run's page, and its
 * artifacts (the `artifact-url` input the workflow passes from its upload step, else the run
 * page's artifacts list).
 */
export function thisRun(ctx: ActionContext, artifactUrl?: string): ReportRun | undefined {
  const sha = measuredCommit(ctx);
  if (!sha) return undefined;
  const page = ctx.runId !== undefined ? runUrl(ctx, ctx.runId) : undefined;
  const url = page && ctx.runAttempt && ctx.runAttempt > 1 ? `${page}/attempts/${ctx.runAttempt}` : page;
  const artifacts = artifactUrl ?? (page ? `${page}#artifacts` : undefined);
  return { sha, ...(url ? { url } : {}), ...(artifacts ? { artifacts_url: artifacts } : {}) };
}

/**
 * What a published report says about its run, from GitHub rather than the report (which the
 * pull request's own code wrote): the workflow_run event's head commit and run page; an
 * artifacts link (the report's, or the artifact-url input) is kept only when it points at that
 * same run of this repository.
 */
export function publishedRun(ctx: ActionContext, artifactsUrl: string | undefined): ReportRun | undefined {
  const run = ctx.workflowRun;
  if (!run) return undefined;
  const page = run.id !== undefined ? runUrl(ctx, run.id) : undefined;
  const sameRun = (u: string) => page !== undefined && isRunUrl(ctx, u) && (u === page || u.startsWith(`${page}/`) || u.startsWith(`${page}#`));
  const artifacts = artifactsUrl && sameRun(artifactsUrl) ? artifactsUrl : page ? `${page}#artifacts` : undefined;
  return { sha: run.headSha, ...(page ? { url: page } : {}), ...(artifacts ? { artifacts_url: artifacts } : {}) };
}
