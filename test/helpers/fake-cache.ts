// A stand-in for the GitHub Actions cache service (v2) as @actions/cache talks to it: the
// results service's Twirp JSON API (CreateCacheEntry, FinalizeCacheEntryUpload,
// GetCacheEntryDownloadURL, with proto field names) and the blob storage its signed URLs point
// at (an Azure "Put Blob" / block upload, and a plain download). Entries are matched by key and
// version; only finalized entries are found; every request needs the runtime token.
import * as http from 'http';
import type { AddressInfo } from 'net';

const SERVICE = '/twirp/github.actions.results.api.v1.CacheService/';

interface Entry {
  key: string;
  version: string;
  blocks: Map<string, Buffer>;
  data?: Buffer;
  finalized: boolean;
}

export class FakeCacheService {
  readonly calls: string[] = [];
  readonly problems: string[] = [];
  private readonly entries: Entry[] = [];
  private readonly server: http.Server;

  constructor(private readonly token: string) {
    this.server = http.createServer((req, res) => void this.handle(req, res));
  }

  async listen(): Promise<string> {
    await new Promise<void>((r) => this.server.listen(0, '127.0.0.1', r));
    return `http://127.0.0.1:${(this.server.address() as AddressInfo).port}/`;
  }

  close(): Promise<void> {
    this.server.closeAllConnections();
    return new Promise((r) => this.server.close(() => r()));
  }

  /** The keys of the finalized entries and their sizes. */
  stored(): { key: string; bytes: number }[] {
    return this.entries.filter((e) => e.finalized).map((e) => ({ key: e.key, bytes: e.data?.length ?? 0 }));
  }

  private base(req: http.IncomingMessage): string {
    return `http://${req.headers.host}`;
  }

  private async handle(req: http.IncomingMessage, res: http.ServerResponse): Promise<void> {
    const chunks: Buffer[] = [];
    for await (const c of req) chunks.push(c as Buffer);
    const body = Buffer.concat(chunks);
    const url = new URL(req.url ?? '/', this.base(req));
    const json = (status: number, value: unknown) => {
      res.writeHead(status, { 'content-type': 'application/json' });
      res.end(JSON.stringify(value));
    };
    if (url.pathname.startsWith(SERVICE)) {
      const method = url.pathname.slice(SERVICE.length);
      this.calls.push(method);
      if (req.headers.authorization !== `Bearer ${this.token}`) {
        this.problems.push(`${method}: authorization ${String(req.headers.authorization)}`);
        return json(401, { code: 'unauthenticated', msg: 'bad token' });
      }
      const request = JSON.parse(body.toString('utf8') || '{}') as Record<string, unknown>;
      const key = String(request.key ?? '');
      const version = String(request.version ?? '');
      if (!key || !version) this.problems.push(`${method}: key or version missing in ${body.toString('utf8')}`);
      if (method === 'CreateCacheEntry') {
        if (this.entries.some((e) => e.key === key && e.version === version)) return json(200, { ok: false, message: 'already exists' });
        const id = this.entries.push({ key, version, blocks: new Map(), finalized: false }) - 1;
        return json(200, { ok: true, signed_upload_url: `${this.base(req)}/devstoreaccount1/caches/${id}?sv=2024-01-01&sig=fake` });
      }
      if (method === 'FinalizeCacheEntryUpload') {
        const entry = this.entries.find((e) => e.key === key && e.version === version);
        if (!entry?.data || String(entry.data.length) !== String(request.size_bytes)) return json(200, { ok: false, message: 'size mismatch' });
        entry.finalized = true;
        return json(200, { ok: true, entry_id: String(this.entries.indexOf(entry) + 1) });
      }
      if (method === 'GetCacheEntryDownloadURL') {
        const keys = [key, ...((request.restore_keys as string[] | undefined) ?? [])];
        const entry = this.entries.find((e) => e.finalized && e.version === version && keys.includes(e.key));
        if (!entry) return json(200, { ok: false });
        return json(200, { ok: true, signed_download_url: `${this.base(req)}/download/${this.entries.indexOf(entry)}`, matched_key: entry.key });
      }
      return json(404, { code: 'bad_route', msg: method });
    }
    const upload = /^\/devstoreaccount1\/caches\/(\d+)$/.exec(url.pathname);
    if (upload && req.method === 'PUT') {
      const entry = this.entries[Number(upload[1])];
      const comp = url.searchParams.get('comp');
      this.calls.push(`PUT blob${comp ? ` ${comp}` : ''}`);
      if (comp === 'block') entry.blocks.set(url.searchParams.get('blockid') ?? '', body);
      else if (comp === 'blocklist') {
        const ids = [...body.toString('utf8').matchAll(/<(?:Latest|Uncommitted|Committed)>([^<]+)</g)].map((m) => m[1]);
        entry.data = Buffer.concat(ids.map((id) => entry.blocks.get(id) ?? Buffer.alloc(0)));
      } else entry.data = body;
      res.writeHead(201, { etag: '"0x1"', 'last-modified': new Date().toUTCString(), 'x-ms-request-id': '1', 'x-ms-version': '2024-01-01', 'content-length': '0' });
      res.end();
      return;
    }
    const download = /^\/download\/(\d+)$/.exec(url.pathname);
    if (download && req.method === 'GET') {
      const data = this.entries[Number(download[1])]?.data ?? Buffer.alloc(0);
      this.calls.push('GET blob');
      res.writeHead(200, { 'content-type': 'application/octet-stream', 'content-length': String(data.length) });
      res.end(data);
      return;
    }
    this.problems.push(`unexpected ${req.method} ${url.pathname}`);
    res.writeHead(404);
    res.end();
  }
}
