import * as github from '@actions/github';

/**
 * The sticky PR comment: one per model, found again by its hidden marker (the body's first
 * line) and updated in place on every push, else created. Bodies are cut to GitHub's limit.
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
  action: 'created' | 'updated';
  id: number;
  url: string;
}

/** Finds this model's comment by its marker and updates it, or creates it. */
export async function upsertComment(octokit: Octokit, target: CommentTarget, marker: string, body: string): Promise<CommentResult> {
  const { owner, repo, number } = target;
  let existing: { id: number; html_url: string } | undefined;
  for await (const page of octokit.paginate.iterator(octokit.rest.issues.listComments, { owner, repo, issue_number: number, per_page: 100 })) {
    // The marker must open the body: a reply quoting the comment ("> <!-- ...") is not it.
    existing = page.data.find((c) => (c.body ?? '').split('\n', 1)[0] === marker);
    if (existing) break;
  }
  if (existing) {
    const r = await octokit.rest.issues.updateComment({ owner, repo, comment_id: existing.id, body });
    return { action: 'updated', id: r.data.id, url: r.data.html_url };
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
