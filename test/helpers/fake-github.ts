// A stand-in for GitHub's REST API on 127.0.0.1, for tests that run the built action. Every
// request is checked against GitHub's published OpenAPI description (@octokit/openapi,
// api.github.com): the operation must exist for the method and path, path and query parameters
// must have the declared types, the JSON body must satisfy the operation's request schema (and
// carry no property the schema does not know, which GitHub would silently ignore). Every
// response the fake sends is checked against the operation's response schema too, so the fake
// cannot hand the action shapes GitHub never would. Anything off is recorded in `problems`,
// which a test expects to be empty.
//
// State: repositories with pull requests (head SHA, from a real webhook payload) and issue
// comments, and tokens that can write or only read. A read-only token (a fork's) gets the 403
// GitHub answers: "Resource not accessible by integration".
import * as http from 'http';
import type { AddressInfo } from 'net';

type Schema = Record<string, unknown>;
interface Spec {
  paths: Record<string, Record<string, Operation>>;
  components: Record<string, Record<string, unknown>>;
}
interface Parameter {
  name: string;
  in: 'path' | 'query' | 'header';
  required?: boolean;
  schema: Schema;
}
interface Operation {
  operationId: string;
  parameters?: (Parameter | { $ref: string })[];
  requestBody?: { required?: boolean; content: Record<string, { schema: Schema }> };
  responses: Record<string, { $ref?: string; content?: Record<string, { schema: Schema }> }>;
}

let specCache: Spec | undefined;
/** api.github.com's OpenAPI description (13 MB, parsed once per test file). */
export function githubSpec(): Spec {
  specCache ??= require('@octokit/openapi/generated/api.github.com.json') as Spec;
  return specCache;
}

function deref<T>(spec: Spec, node: T): T {
  let n = node as unknown as { $ref?: string };
  while (n && typeof n === 'object' && typeof n.$ref === 'string') {
    const parts = n.$ref.replace(/^#\//, '').split('/');
    let cur: unknown = spec;
    for (const p of parts) cur = (cur as Record<string, unknown>)[p.replace(/~1/g, '/').replace(/~0/g, '~')];
    if (cur === undefined) throw new Error(`unresolved $ref ${n.$ref}`);
    n = cur as { $ref?: string };
  }
  return n as unknown as T;
}

function typeOf(v: unknown): string {
  if (v === null) return 'null';
  if (Array.isArray(v)) return 'array';
  if (typeof v === 'number') return Number.isInteger(v) ? 'integer' : 'number';
  return typeof v;
}

/**
 * Validates `value` against an OpenAPI 3.0 schema: $ref, nullable, type, enum, required,
 * properties, additionalProperties, items, allOf/anyOf/oneOf, string length, numeric range,
 * and the date-time and uri formats. `strict` also rejects properties the schema does not list.
 */
export function validate(spec: Spec, schemaIn: Schema, value: unknown, at: string, strict: boolean, problems: string[]): void {
  const schema = deref(spec, schemaIn);
  if (value === null) {
    if (schema.nullable === true) return;
    if (!schema.type && !schema.anyOf && !schema.oneOf && !schema.allOf) return;
  }
  if (Array.isArray(schema.allOf)) for (const s of schema.allOf as Schema[]) validate(spec, s, value, at, strict, problems);
  for (const key of ['anyOf', 'oneOf'] as const) {
    const options = schema[key] as Schema[] | undefined;
    if (!Array.isArray(options)) continue;
    const fits = options.some((s) => {
      const p: string[] = [];
      validate(spec, s, value, at, strict, p);
      return p.length === 0;
    });
    if (!fits) problems.push(`${at}: matches none of the ${key} schemas (found ${JSON.stringify(value)?.slice(0, 80)})`);
  }
  if (Array.isArray(schema.enum) && !(schema.enum as unknown[]).includes(value)) {
    problems.push(`${at}: ${JSON.stringify(value)} is not one of ${JSON.stringify(schema.enum)}`);
    return;
  }
  const type = schema.type as string | undefined;
  const actual = typeOf(value);
  if (type) {
    const ok = type === actual || (type === 'number' && actual === 'integer');
    if (!ok) {
      problems.push(`${at}: expected ${type}${schema.nullable ? ' or null' : ''}, found ${actual}`);
      return;
    }
  }
  if (actual === 'string') {
    const s = value as string;
    if (typeof schema.maxLength === 'number' && s.length > schema.maxLength) problems.push(`${at}: longer than ${schema.maxLength}`);
    if (typeof schema.minLength === 'number' && s.length < schema.minLength) problems.push(`${at}: shorter than ${schema.minLength}`);
    if (schema.format === 'date-time' && !/^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d(\.\d+)?(Z|[+-]\d\d:\d\d)$/.test(s)) problems.push(`${at}: not a date-time: ${s}`);
    if (schema.format === 'uri') {
      try {
        new URL(s);
      } catch {
        problems.push(`${at}: not a uri: ${s}`);
      }
    }
  }
  if (actual === 'integer' || actual === 'number') {
    const n = value as number;
    if (typeof schema.minimum === 'number' && n < schema.minimum) problems.push(`${at}: below ${schema.minimum}`);
    if (typeof schema.maximum === 'number' && n > schema.maximum) problems.push(`${at}: above ${schema.maximum}`);
  }
  if (actual === 'array' && schema.items) {
    (value as unknown[]).forEach((item, i) => validate(spec, schema.items as Schema, item, `${at}[${i}]`, strict, problems));
  }
  if (actual === 'object') {
    const obj = value as Record<string, unknown>;
    const props = (schema.properties ?? {}) as Record<string, Schema>;
    for (const r of (schema.required ?? []) as string[]) if (!(r in obj)) problems.push(`${at}.${r}: required, missing`);
    for (const [k, v] of Object.entries(obj)) {
      if (props[k]) validate(spec, props[k], v, `${at}.${k}`, strict, problems);
      else if (schema.additionalProperties === false || (strict && schema.properties && !schema.additionalProperties)) {
        problems.push(`${at}.${k}: not a property of this schema`);
      } else if (schema.additionalProperties && typeof schema.additionalProperties === 'object') {
        validate(spec, schema.additionalProperties as Schema, v, `${at}.${k}`, strict, problems);
      }
    }
  }
}

/** The operation for a method and concrete path, with the path parameters' raw values. */
export function findOperation(spec: Spec, method: string, pathname: string): { template: string; op: Operation; params: Record<string, string> } | undefined {
  for (const [template, item] of Object.entries(spec.paths)) {
    const names: string[] = [];
    const re = new RegExp(
      `^${template.replace(/[.*+?^$()|[\]\\]/g, '\\$&').replace(/\\?\{([^}]+)\\?\}/g, (_m, name: string) => {
        names.push(name);
        return '([^/]+)';
      })}$`,
    );
    const m = re.exec(pathname);
    if (!m) continue;
    const op = item[method.toLowerCase()];
    if (!op) continue;
    const params: Record<string, string> = {};
    names.forEach((n, i) => (params[n] = decodeURIComponent(m[i + 1])));
    return { template, op, params };
  }
  return undefined;
}

function coerce(raw: string, schema: Schema): unknown {
  if (schema.type === 'integer' || schema.type === 'number') return /^-?\d+(\.\d+)?$/.test(raw) ? Number(raw) : raw;
  if (schema.type === 'boolean') return raw === 'true' ? true : raw === 'false' ? false : raw;
  return raw;
}

export interface FakeComment {
  id: number;
  issue: number;
  body: string;
  user: string;
  created_at: string;
  updated_at: string;
}

export interface FakeRequest {
  method: string;
  path: string;
  operationId?: string;
  status: number;
  body?: unknown;
}

export interface RepoSetup {
  owner: string;
  repo: string;
  /** Pull requests as GitHub's webhook payloads describe them (the pull_request object). */
  pulls: Record<string, unknown>[];
}

const BOT = 'github-actions[bot]';

function user(login: string, id: number): Record<string, unknown> {
  const api = 'https://api.github.com/users/' + encodeURIComponent(login);
  return {
    login,
    id,
    node_id: `MDM6Qm90${id}`,
    avatar_url: `https://avatars.githubusercontent.com/in/${id}?v=4`,
    gravatar_id: '',
    url: api,
    html_url: `https://github.com/apps/${login.replace('[bot]', '')}`,
    followers_url: `${api}/followers`,
    following_url: `${api}/following{/other_user}`,
    gists_url: `${api}/gists{/gist_id}`,
    starred_url: `${api}/starred{/owner}{/repo}`,
    subscriptions_url: `${api}/subscriptions`,
    organizations_url: `${api}/orgs`,
    repos_url: `${api}/repos`,
    events_url: `${api}/events{/privacy}`,
    received_events_url: `${api}/received_events`,
    type: login.endsWith('[bot]') ? 'Bot' : 'User',
    site_admin: false,
  };
}

export class FakeGitHub {
  readonly problems: string[] = [];
  readonly requests: FakeRequest[] = [];
  readonly comments = new Map<number, FakeComment>();
  /** Operations refused with 403 (a read-only token writing). */
  readonly forbidden: string[] = [];
  /** Ids of the comments updated, in order. */
  readonly updated: number[] = [];
  private nextId = 1_000_001;
  private readonly server: http.Server;
  private readonly tokens = new Map<string, { login: string; write: boolean }>();
  private readonly pulls = new Map<string, Record<string, unknown>>();
  private readonly repo: string;

  constructor(
    setup: RepoSetup,
    /** Comments per page when the client asks for more (to exercise pagination). */
    private readonly maxPerPage = 100,
  ) {
    this.repo = `${setup.owner}/${setup.repo}`;
    // A webhook's pull_request object is the REST one but for auto_merge (checked by the
    // response validation: it is the only required field the webhook examples lack).
    for (const pr of setup.pulls) this.pulls.set(String(pr.number), { auto_merge: null, ...pr });
    this.server = http.createServer((req, res) => void this.handle(req, res));
  }

  /** A token the fake accepts: `write` false is a fork's read-only GITHUB_TOKEN. */
  addToken(token: string, write: boolean, login = BOT): this {
    this.tokens.set(token, { login, write });
    return this;
  }

  /** A comment written by someone (e.g. a human quoting the marker), before the action runs. */
  addComment(issue: number, body: string, login = 'octocat'): FakeComment {
    const now = new Date().toISOString().replace(/\.\d+Z$/, 'Z');
    const c = { id: this.nextId++, issue, body, user: login, created_at: now, updated_at: now };
    this.comments.set(c.id, c);
    return c;
  }

  setHead(pr: number, sha: string): void {
    const p = this.pulls.get(String(pr));
    if (!p) throw new Error(`no pull request ${pr}`);
    (p.head as Record<string, unknown>).sha = sha;
  }

  commentsOn(issue: number): FakeComment[] {
    return [...this.comments.values()].filter((c) => c.issue === issue);
  }

  async listen(): Promise<string> {
    await new Promise<void>((resolve) => this.server.listen(0, '127.0.0.1', resolve));
    return `http://127.0.0.1:${(this.server.address() as AddressInfo).port}`;
  }

  close(): Promise<void> {
    return new Promise((resolve) => this.server.close(() => resolve()));
  }

  private url(): string {
    return `http://127.0.0.1:${(this.server.address() as AddressInfo).port}`;
  }

  private commentJson(c: FakeComment): Record<string, unknown> {
    const api = `https://api.github.com/repos/${this.repo}`;
    return {
      id: c.id,
      node_id: `IC_kwDO${c.id}`,
      url: `${api}/issues/comments/${c.id}`,
      html_url: `https://github.com/${this.repo}/pull/${c.issue}#issuecomment-${c.id}`,
      body: c.body,
      user: user(c.user, c.user === BOT ? 41898282 : 583231),
      created_at: c.created_at,
      updated_at: c.updated_at,
      issue_url: `${api}/issues/${c.issue}`,
      author_association: c.user === BOT ? 'NONE' : 'OWNER',
      performed_via_github_app: null,
    };
  }

  private async handle(req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
    const chunks: Buffer[] = [];
    for await (const c of req) chunks.push(c as Buffer);
    const raw = Buffer.concat(chunks).toString('utf8');
    const url = new URL(req.url ?? '/', this.url());
    const method = (req.method ?? 'GET').toUpperCase();
    const where = `${method} ${url.pathname}`;
    const record: FakeRequest = { method, path: url.pathname + url.search, status: 0 };
    this.requests.push(record);
    const send = (status: number, body: unknown, op?: Operation, headers: Record<string, string> = {}) => {
      record.status = status;
      if (op) this.checkResponse(where, op, status, body);
      res.writeHead(status, { 'content-type': 'application/json; charset=utf-8', ...headers });
      res.end(JSON.stringify(body));
    };
    const spec = githubSpec();
    const found = findOperation(spec, method, url.pathname);
    if (!found) {
      this.problems.push(`${where}: no such operation in api.github.com's OpenAPI description`);
      return send(404, { message: 'Not Found', documentation_url: 'https://docs.github.com/rest', status: '404' });
    }
    const { op, params } = found;
    record.operationId = op.operationId;
    const before = this.problems.length;

    // Parameters: path ones present and typed; query ones known and typed.
    const declared = (op.parameters ?? []).map((p) => deref(spec, p) as Parameter);
    for (const p of declared.filter((d) => d.in === 'path')) {
      if (params[p.name] === undefined) this.problems.push(`${where}: path parameter ${p.name} missing`);
      else validate(spec, p.schema, coerce(params[p.name], p.schema), `${where}: path ${p.name}`, true, this.problems);
    }
    for (const [k, v] of url.searchParams) {
      const p = declared.find((d) => d.in === 'query' && d.name === k);
      if (!p) this.problems.push(`${where}: query parameter ${k} is not one of ${op.operationId}'s`);
      else validate(spec, p.schema, coerce(v, p.schema), `${where}: query ${k}`, true, this.problems);
    }
    // The body.
    let body: unknown;
    if (op.requestBody) {
      const type = String(req.headers['content-type'] ?? '');
      if (!type.startsWith('application/json')) this.problems.push(`${where}: content-type ${type || '(none)'}, expected application/json`);
      try {
        body = raw ? JSON.parse(raw) : undefined;
      } catch {
        this.problems.push(`${where}: body is not JSON`);
      }
      if (body === undefined && op.requestBody.required !== false) this.problems.push(`${where}: body required`);
      else if (body !== undefined) validate(spec, op.requestBody.content['application/json'].schema, body, `${where}: body`, true, this.problems);
    } else if (raw) {
      this.problems.push(`${where}: ${op.operationId} takes no body`);
    }
    record.body = body;
    // The token.
    const auth = String(req.headers.authorization ?? '');
    const token = /^(token|bearer) (.+)$/i.exec(auth)?.[2];
    const who = token ? this.tokens.get(token) : undefined;
    if (!who) {
      this.problems.push(`${where}: unknown or missing token (${auth ? 'given' : 'none'})`);
      return send(401, { message: 'Bad credentials', documentation_url: 'https://docs.github.com/rest', status: '401' });
    }
    if (this.problems.length > before) return send(422, { message: 'Validation Failed', documentation_url: 'https://docs.github.com/rest', status: '422' });
    if (params.owner !== undefined && `${params.owner}/${params.repo}` !== this.repo) {
      this.problems.push(`${where}: repository ${params.owner}/${params.repo}, expected ${this.repo}`);
      return send(404, { message: 'Not Found', documentation_url: 'https://docs.github.com/rest', status: '404' }, op);
    }
    this.route(op, params, url, body as Record<string, unknown> | undefined, who, send);
  }

  private route(
    op: Operation,
    params: Record<string, string>,
    url: URL,
    body: Record<string, unknown> | undefined,
    who: { login: string; write: boolean },
    send: (status: number, body: unknown, op?: Operation, headers?: Record<string, string>) => void,
  ): void {
    const notFound = () => send(404, { message: 'Not Found', documentation_url: 'https://docs.github.com/rest', status: '404' }, op);
    const writes = op.operationId === 'issues/create-comment' || op.operationId === 'issues/update-comment';
    if (writes && !who.write) {
      // What GitHub answers a read-only GITHUB_TOKEN (a pull request from a fork).
      const doc =
        op.operationId === 'issues/create-comment'
          ? 'https://docs.github.com/rest/issues/comments#create-an-issue-comment'
          : 'https://docs.github.com/rest/issues/comments#update-an-issue-comment';
      this.forbidden.push(op.operationId);
      return send(403, { message: 'Resource not accessible by integration', documentation_url: doc, status: '403' }, op);
    }
    const now = new Date().toISOString().replace(/\.\d+Z$/, 'Z');
    switch (op.operationId) {
      case 'users/get-authenticated': {
        // Refused for installation tokens, the workflow's GITHUB_TOKEN among them.
        if (who.login.endsWith('[bot]')) return send(403, { message: 'Resource not accessible by integration', documentation_url: 'https://docs.github.com/rest/users/users#get-the-authenticated-user', status: '403' }, op);
        return send(200, { ...user(who.login, 583231), name: null, company: null, blog: '', location: null, email: null, hireable: null, bio: null, public_repos: 1, public_gists: 0, followers: 0, following: 0, created_at: '2020-01-01T00:00:00Z', updated_at: '2020-01-01T00:00:00Z' }, op);
      }
      case 'pulls/get': {
        const pr = this.pulls.get(params.pull_number);
        return pr ? send(200, pr, op) : notFound();
      }
      case 'issues/list-comments': {
        const issue = Number(params.issue_number);
        if (!this.pulls.has(String(issue))) return notFound();
        const perPage = Math.min(Number(url.searchParams.get('per_page') ?? 30), this.maxPerPage);
        const page = Number(url.searchParams.get('page') ?? 1);
        const all = this.commentsOn(issue).sort((a, b) => a.id - b.id);
        const last = Math.max(1, Math.ceil(all.length / perPage));
        const headers: Record<string, string> = {};
        if (page < last) {
          const next = new URL(url.toString());
          next.searchParams.set('page', String(page + 1));
          const lastUrl = new URL(url.toString());
          lastUrl.searchParams.set('page', String(last));
          headers.link = `<${next}>; rel="next", <${lastUrl}>; rel="last"`;
        }
        return send(200, all.slice((page - 1) * perPage, page * perPage).map((c) => this.commentJson(c)), op, headers);
      }
      case 'issues/create-comment': {
        const issue = Number(params.issue_number);
        if (!this.pulls.has(String(issue))) return notFound();
        const c: FakeComment = { id: this.nextId++, issue, body: String(body?.body), user: who.login, created_at: now, updated_at: now };
        this.comments.set(c.id, c);
        return send(201, this.commentJson(c), op, { location: `https://api.github.com/repos/${this.repo}/issues/comments/${c.id}` });
      }
      case 'issues/update-comment': {
        const c = this.comments.get(Number(params.comment_id));
        if (!c) return notFound();
        // As GitHub: a token that may write to the repository's issues may edit anyone's comment.
        this.updated.push(c.id);
        c.body = String(body?.body);
        c.updated_at = now;
        return send(200, this.commentJson(c), op);
      }
      default:
        this.problems.push(`${op.operationId}: the action has no business calling it`);
        return send(501, { message: `${op.operationId} is not served by the fake`, status: '501' });
    }
  }

  /** The fake's own answers must fit GitHub's response schema for that status. */
  private checkResponse(where: string, op: Operation, status: number, body: unknown): void {
    const spec = githubSpec();
    const response = op.responses[String(status)];
    if (!response) {
      this.problems.push(`${where}: the fake answered ${status}, which ${op.operationId} does not declare`);
      return;
    }
    const schema = deref(spec, response).content?.['application/json']?.schema;
    if (schema) validate(spec, schema, body, `${where}: the fake's response ${status}`, false, this.problems);
  }
}
