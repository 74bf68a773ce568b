// The action's cold-start install of onnxruntime-node (src/github/onnxruntime.ts) against
// stand-ins for the npm registry, with no network: a tarball that is not the pinned one is
// refused before anything loads it, an unreachable registry fails with npm's own reason, and a
// registry that never answers is cut off at the install timeout. Nothing half-installed is left.
import * as fs from 'fs';
import * as http from 'http';
import type { AddressInfo } from 'net';
import * as os from 'os';
import * as path from 'path';
import * as zlib from 'zlib';
import { ONNXRUNTIME_NODE_VERSION, ensureOnnxRuntime, runtimeDir } from '../src/github/onnxruntime';

let tmp: string;
beforeEach(() => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'prune-gate-install-'));
});
afterEach(() => fs.rmSync(tmp, { recursive: true, force: true }));

/** A gzipped tar holding package/package.json: what a (tampered) package tarball looks like. */
function tarball(): Buffer {
  const body = Buffer.from(JSON.stringify({ name: 'onnxruntime-node', version: ONNXRUNTIME_NODE_VERSION, description: 'not the real one' }));
  const header = Buffer.alloc(512);
  header.write('package/package.json', 0);
  header.write('0000644\0', 100);
  header.write('0000000\0', 108);
  header.write('0000000\0', 116);
  header.write(body.length.toString(8).padStart(11, '0') + '\0', 124);
  header.write('00000000000\0', 136);
  header.write('        ', 148);
  header.write('0', 156);
  header.write('ustar\0', 257);
  header.write('00', 263);
  let sum = 0;
  for (const b of header) sum += b;
  header.write(sum.toString(8).padStart(6, '0') + '\0 ', 148);
  const padded = Buffer.concat([body, Buffer.alloc((512 - (body.length % 512)) % 512)]);
  return zlib.gzipSync(Buffer.concat([header, padded, Buffer.alloc(1024)]));
}

async function listen(handler: http.RequestListener): Promise<{ url: string; close: () => Promise<void>; requests: string[] }> {
  const requests: string[] = [];
  const server = http.createServer((req, res) => {
    requests.push(`${req.method} ${req.url}`);
    handler(req, res);
  });
  await new Promise<void>((r) => server.listen(0, '127.0.0.1', r));
  const url = `http://127.0.0.1:${(server.address() as AddressInfo).port}/`;
  return { url, requests, close: () => new Promise<void>((r) => (server.closeAllConnections(), server.close(() => r()))) };
}

/** ensureOnnxRuntime from a copied action (nothing resolves onnxruntime-node) with this registry. */
function install(registry: string, extra: NodeJS.ProcessEnv = {}) {
  const actionRoot = path.join(tmp, 'action');
  fs.mkdirSync(path.join(actionRoot, 'dist'), { recursive: true });
  const env = { PATH: process.env.PATH, HOME: tmp, RUNNER_TOOL_CACHE: path.join(tmp, 'toolcache'), npm_config_registry: registry, npm_config_cache: path.join(tmp, 'npm-cache'), ...extra };
  const module = { filename: path.join(actionRoot, 'dist', 'index.js'), paths: [] as string[] } as unknown as NodeModule;
  return { run: () => ensureOnnxRuntime({ module, actionRoot, env }), dir: runtimeDir(actionRoot, env) };
}

/** Nothing of a failed install stays in the tool cache. */
function leftovers(dir: string): string[] {
  const parent = path.dirname(dir);
  return fs.existsSync(parent) ? fs.readdirSync(parent) : [];
}

test('a tarball that is not the pinned one is refused before anything loads it', async () => {
  const tgz = tarball();
  const crypto = await import('crypto');
  const integrity = `sha512-${crypto.createHash('sha512').update(tgz).digest('base64')}`;
  const registry = await listen((req, res) => {
    if (req.url?.endsWith('.tgz')) {
      res.writeHead(200, { 'content-type': 'application/octet-stream' });
      res.end(tgz);
      return;
    }
    // The mirror's own metadata agrees with its tampered file, so npm itself accepts it.
    const tarballUrl = `http://${req.headers.host}/onnxruntime-node/-/onnxruntime-node-${ONNXRUNTIME_NODE_VERSION}.tgz`;
    const version = { name: 'onnxruntime-node', version: ONNXRUNTIME_NODE_VERSION, dist: { tarball: tarballUrl, integrity } };
    res.writeHead(200, { 'content-type': 'application/json' });
    res.end(JSON.stringify({ name: 'onnxruntime-node', 'dist-tags': { latest: ONNXRUNTIME_NODE_VERSION }, versions: { [ONNXRUNTIME_NODE_VERSION]: version } }));
  });
  try {
    const { run, dir } = install(registry.url);
    await expect(run()).rejects.toThrow(
      new RegExp(`^the onnxruntime-node@${ONNXRUNTIME_NODE_VERSION.replace(/\./g, '\\.')} tarball from ${registry.url.replace(/[./]/g, '\\$&')} has integrity sha512-.*, not the pinned sha512-twhs1C2C.*: refusing to use it`),
    );
    expect(registry.requests.some((r) => r.endsWith('.tgz'))).toBe(true);
    expect(leftovers(dir)).toEqual([]);
  } finally {
    await registry.close();
  }
}, 60_000);

test('an unreachable registry fails with npm\'s own reason, in one line', async () => {
  const closed = await listen(() => undefined);
  const url = closed.url;
  await closed.close(); // nothing listens there now
  const { run, dir } = install(url);
  const error = await run().then(
    () => undefined,
    (e: Error) => e,
  );
  expect(error?.message).toMatch(new RegExp(`^the install of onnxruntime-node@[\\d.]+ from ${url.replace(/[./]/g, '\\$&')} failed \\(npm exited with 1\\): .*ECONNREFUSED`));
  expect(error?.message).not.toContain('\n');
  expect(leftovers(dir)).toEqual([]);
}, 60_000);

test('a registry that never answers is cut off at the install timeout', async () => {
  const silent = await listen(() => undefined); // accepts, never responds
  try {
    const { run, dir } = install(silent.url, { PRUNE_GATE_INSTALL_TIMEOUT: '3' });
    const started = Date.now();
    await expect(run()).rejects.toThrow(/^the install of onnxruntime-node@[\d.]+ from .* did not finish within 3 s \(PRUNE_GATE_INSTALL_TIMEOUT\)/);
    expect(Date.now() - started).toBeLessThan(20_000);
    expect(silent.requests.length).toBeGreaterThan(0);
    expect(leftovers(dir)).toEqual([]);
  } finally {
    await silent.close();
  }
}, 60_000);
