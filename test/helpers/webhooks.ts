// Real webhook payloads (the event file the runner writes for GITHUB_EVENT_PATH), from
// @octokit/webhooks-examples: GitHub's documented examples, which the Octokit team validates
// against the webhooks' schemas. Tests copy them and change only what a scenario needs.

interface Example {
  name: string;
  examples: Record<string, unknown>[];
}

const EXAMPLES = require('@octokit/webhooks-examples') as Example[];

type Payload = Record<string, any>;

function example(event: string, where: (p: Payload) => boolean): Payload {
  const group = EXAMPLES.find((e) => e.name === event);
  const found = group?.examples.find((p) => where(p as Payload));
  if (!found) throw new Error(`@octokit/webhooks-examples has no ${event} example like that`);
  return structuredClone(found) as Payload;
}

/** pull_request, action opened: PR #2 of Codertocat/Hello-World, from a branch of the same repository. */
export function pullRequestOpened(): Payload {
  return example('pull_request', (p) => p.action === 'opened' && p.pull_request.head.repo?.full_name === p.repository.full_name);
}

/** pull_request, action synchronize (a new push to the PR), optionally with another head SHA. */
export function pullRequestSynchronize(headSha?: string): Payload {
  const p = example('pull_request', (e) => e.action === 'synchronize');
  if (headSha) {
    p.before = p.pull_request.head.sha;
    p.after = headSha;
    p.pull_request.head.sha = headSha;
  }
  return p;
}

/** pull_request opened from a fork: the head repository is someone else's copy. */
export function pullRequestFromFork(headSha?: string): Payload {
  const p = pullRequestOpened();
  const fork = structuredClone(p.pull_request.head.repo);
  fork.full_name = `forker/${fork.name}`;
  fork.fork = true;
  fork.owner = { ...fork.owner, login: 'forker', id: 7_000_001 };
  fork.html_url = `https://github.com/forker/${fork.name}`;
  p.pull_request.head.repo = fork;
  p.pull_request.head.label = 'forker:changes';
  if (headSha) p.pull_request.head.sha = headSha;
  return p;
}

/**
 * workflow_run completed, for a run triggered by a pull_request from a fork: pull_requests is
 * empty (as it often is for forks), head_sha is the fork's commit.
 */
export function workflowRunCompleted(headSha: string, conclusion: 'success' | 'failure' = 'failure'): Payload {
  const p = example('workflow_run', (e) => e.action === 'completed');
  p.workflow_run.event = 'pull_request';
  p.workflow_run.head_sha = headSha;
  p.workflow_run.pull_requests = [];
  p.workflow_run.conclusion = conclusion;
  if (p.workflow_run.head_repository) p.workflow_run.head_repository.full_name = 'forker/Hello-World';
  return p;
}

export function push(): Payload {
  return example('push', () => true);
}
