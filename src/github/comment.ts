import * as github from '@actions/github';

/**
 * The sticky PR comment: one per config and model, found again by its hidden marker (the body's
 * first line) among the comments the action's own identity wrote, and updated in place on every
 * push, else created, only while the pull request's head is the measured commit. Bodies are cut
 * to GitHub's limit.
 */

export type Octokit = ReturnType<typeof github.getOctokit>;

/** GitHub rejects a comment body longer than this many characters (its documented limit). */
export const COMMENT_LIMIT = 65_536;
/** The job summary of one step is at most 1 MiB. */
export const SUMMARY_LIMIT_BYTES = 1024 * 1024;

export const COMMENT_CUT_NOTE =
  "✂️ The report is cut here: it is longer than GitHub's 65,536-character limit for a comment. The whole report is in the job summary and in report.json.";
export const SUMMARY_CUT_NOTE = "✂️ The report is cut here: it is longer than GitHub's 1 MiB limit for a job summary. The whole report is in report.json.";

/**
 * `text` cut at a line boundary so that it, plus the note, measures at most `limit` (by
 * `measure`: characters or UTF-8 bytes). Cutting at a line never splits a character reference
 * (&#95;) or a table row; an open <details> or code fence is closed so the note renders.
 */
export function cutToLimit(text: string, limit: number, note: string, measure: (s: string) => number = (s) => s.length): string {
  if (measure(text) <= limit) return text;
  const closing = (kept: string): string => {
    const fences = (kept.match(/^```/gm) ?? []).length;
    const open = (kept.match(/<details>/g) ?? []).length - (kept.match(/<\/details>/g) ?? []).length;
    return `${fences % 2 ? '```\n' : ''}${'</details>\n'.repeat(Math.max(0, open))}`;
  };
  const lines = text.split('\n');
  // Binary search for the most lines that fit with their closing tags and the note.
  let lo = 0;
  let hi = lines.length;
  const build = (n: number): string => {
    if (n === 0) return `${note}\n`;
    const kept = lines.slice(0, n).join('\n');
    return `${kept}\n${closing(kept)}\n---\n${note}\n`;
  };
  while (lo < hi) {
    const mid = Math.ceil((lo + hi) / 2);
    if (measure(build(mid)) <= limit) lo = mid;
    else hi = mid - 1;
  }
  // lo = 0 (the first line alone is over the limit): the note alone.
  return build(lo);
}

export const utf8Bytes = (s: string): number => Buffer.byteLength(s, 'utf8');

/** The comment's body: the marker on its own first line, then the report, within the limit. */
export function commentBody(marker: string, markdown: string): string {
  return cutToLimit(`${marker}\n${markdown}`, COMMENT_LIMIT, COMMENT_CUT_NOTE);
}

export interface CommentTarget {
  owner: string;
  repo: string;
  number: number;
}

export interface CommentResult {
  /** adopted: a comment with the earlier model-only marker, now carrying the current one. */
  action: 'created' | 'updated' | 'adopted';
  id: number;
  url: string;
}

/** The bot that writes with a workflow's GITHUB_TOKEN. */
export const WORKFLOW_BOT = 'github-actions[bot]';

/**
 * Whose comments the action may edit: its own. `GET /user` answers for a personal or OAuth
 * token but is refused (403) for installation tokens, which include the workflow's GITHUB_TOKEN;
 * those are told apart by GitHub's token prefix (ghs_, "server-to-server") and write as
 * github-actions[bot], or as the app named by the `comment-author` input.
 */
export async function ownLogin(octokit: Octokit, token: string, configured?: string): Promise<{ login: string; how: string }> {
  if (configured) return { login: configured, how: 'the comment-author input' };
  if (token.startsWith('ghs_')) return { login: WORKFLOW_BOT, how: "an installation token writes as the workflow's bot (set comment-author for another app)" };
  const me = await octokit.rest.users.getAuthenticated();
  return { login: me.data.login, how: 'GET /user' };
}

/**
 * The pull request's head commit now. Asked right before a comment is written: a run that a
 * newer push overtook must not overwrite the newer run's comment with older numbers.
 */
export async function pullRequestHead(octokit: Octokit, target: CommentTarget): Promise<string> {
  const pr = await octokit.rest.pulls.get({ owner: target.owner, repo: target.repo, pull_number: target.number });
  return pr.data.head.sha;
}

/**
 * Finds the comment `own` wrote with this marker and updates it, or adopts the one it wrote with
 * the earlier model-only marker (so an open pull request keeps one comment), or creates it.
 * Comments by anyone else are never edited, whatever they start with.
 */
export async function upsertComment(octokit: Octokit, target: CommentTarget, markers: { current: string; legacy?: string }, body: string, own: string): Promise<CommentResult> {
  const { owner, repo, number } = target;
  let existing: { id: number; html_url: string } | undefined;
  let legacy: { id: number; html_url: string } | undefined;
  for await (const page of octokit.paginate.iterator(octokit.rest.issues.listComments, { owner, repo, issue_number: number, per_page: 100 })) {
    for (const c of page.data) {
      if (c.user?.login !== own) continue;
      // The marker must open the body: a reply quoting the comment ("> <!-- ...") is not it.
      const first = (c.body ?? '').split('\n', 1)[0];
      if (first === markers.current) existing ??= c;
      else if (markers.legacy !== undefined && first === markers.legacy) legacy ??= c;
    }
    if (existing) break;
  }
  const mine = existing ?? legacy;
  if (mine) {
    const r = await octokit.rest.issues.updateComment({ owner, repo, comment_id: mine.id, body });
    return { action: existing ? 'updated' : 'adopted', id: r.data.id, url: r.data.html_url };
  }
  const r = await octokit.rest.issues.createComment({ owner, repo, issue_number: number, body });
  return { action: 'created', id: r.data.id, url: r.data.html_url };
}

/** An HTTP error from the REST API: its status and GitHub's message, without the stack. */
export function apiError(e: unknown): { status?: number; message: string } {
  const status = typeof (e as { status?: unknown })?.status === 'number' ? (e as { status: number }).status : undefined;
  const data = (e as { response?: { data?: { message?: unknown } } })?.response?.data;
  const message = typeof data?.message === 'string' ? data.message : e instanceof Error ? e.message : String(e);
  return { status, message: message.split('\n')[0] };
}
