import * as fs from 'fs';

export interface PullRequestRef {
  number: number;
  head_sha: string;
}

/**
 * The pull request a GitHub Actions run is for, read from the event payload
 * (GITHUB_EVENT_NAME, GITHUB_EVENT_PATH). Recorded in report.json so that a later
 * `workflow_run` job publishing the report knows which PR to comment on. Undefined outside a
 * pull_request event or when the payload cannot be read: the report is still valid without it.
 */
export function pullRequestFromEnv(env: NodeJS.ProcessEnv = process.env): PullRequestRef | undefined {
  const event = env.GITHUB_EVENT_NAME;
  if (event !== 'pull_request' && event !== 'pull_request_target') return undefined;
  if (!env.GITHUB_EVENT_PATH) return undefined;
  let payload: unknown;
  try {
    payload = JSON.parse(fs.readFileSync(env.GITHUB_EVENT_PATH, 'utf8'));
  } catch {
    return undefined;
  }
  const pr = (payload as { pull_request?: { number?: unknown; head?: { sha?: unknown } } }).pull_request;
  const number = pr?.number;
  const sha = pr?.head?.sha;
  if (typeof number !== 'number' || !Number.isInteger(number) || number <= 0) return undefined;
  if (typeof sha !== 'string' || !/^[0-9a-f]{40}([0-9a-f]{24})?$/.test(sha)) return undefined;
  return { number, head_sha: sha };
}
