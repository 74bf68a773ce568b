// How the built action gets onnxruntime-node on a runner (src/github/onnxruntime.ts): the bundle
// is copied where the runner puts an action (a folder with dist/index.js and no node_modules),
// so nothing resolves onnxruntime-node. Publishing a report needs no runtime; the first gate run
// installs the pinned version with npm into RUNNER_TOOL_CACHE, keeping only this platform's
// binaries; the next run reuses it. That install needs the npm registry (npm ci does not cache
// the package's metadata): test/helpers/registry.ts says what the two tests that install do
// when it is unreachable.
import { spawnSync } from 'child_process';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { ONNXRUNTIME_NODE_VERSION, runtimeCacheKey, runtimeDir } from '../src/github/onnxruntime';
import { FakeCacheService } from './helpers/fake-cache';
import { ReportSchema } from '../src/report/schema';
import { ActionRun, ActionStep, runAction } from './helpers/run-action';
import { ROOT, bundleInto } from './helpers/run-cli';
import { push } from './helpers/webhooks';
import { registryTests } from './helpers/registry';

const installTest = registryTests('the two install tests are');

let tmp: string;
let actionRoot: string;
let toolCache: string;
const temps: string[] = [];

beforeAll(() => {
  // Outside the project: no node_modules above it (checked below).
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'prune-gate-action-runtime-'));
  actionRoot = path.join(tmp, '_actions', 'owner', 'prune-gate', 'v1');
  toolCache = path.join(tmp, 'hostedtoolcache');
  const built = bundleInto('action-runtime');
  try {
    fs.mkdirSync(path.join(actionRoot, 'dist'), { recursive: true });
    fs.copyFileSync(path.join(built, 'index.js'), path.join(actionRoot, 'dist', 'index.js'));
    fs.copyFileSync(path.join(ROOT, 'action.yml'), path.join(actionRoot, 'action.yml'));
    // A report to publish, made by the CLI of the same build (inside the project, where
    // onnxruntime-node resolves).
    const cli = spawnSync(process.execPath, [path.join(built, 'cli.js'), 'run', '--config', 'test/action-configs/pass.yml', '--out', path.join(tmp, 'out')], { cwd: ROOT, encoding: 'utf8' });
    if (cli.status !== 0) throw new Error(`prune-gate run failed: ${cli.stderr}`);
  } finally {
    fs.rmSync(built, { recursive: true, force: true });
  }
});
afterAll(() => {
  fs.rmSync(tmp, { recursive: true, force: true });
  for (const t of temps) fs.rmSync(t, { recursive: true, force: true });
});

async function step(s: Omit<ActionStep, 'main'>): Promise<ActionRun> {
  const r = await runAction({ main: path.join(actionRoot, 'dist', 'index.js'), env: { RUNNER_TOOL_CACHE: toolCache }, ...s });
  temps.push(r.runnerTemp);
  return r;
}

function du(dir: string): number {
  let total = 0;
  for (const e of fs.readdirSync(dir, { withFileTypes: true })) {
    const p = path.join(dir, e.name);
    total += e.isDirectory() ? du(p) : fs.lstatSync(p).size;
  }
  return total;
}

test('the pinned version is the one the project installs and tests with', () => {
  const installed = JSON.parse(fs.readFileSync(path.join(ROOT, 'node_modules', 'onnxruntime-node', 'package.json'), 'utf8')).version;
  expect(ONNXRUNTIME_NODE_VERSION).toBe(installed);
});

test('the copied action cannot resolve onnxruntime-node by itself', () => {
  for (let dir = actionRoot; ; dir = path.dirname(dir)) {
    expect(fs.existsSync(path.join(dir, 'node_modules', 'onnxruntime-node'))).toBe(false);
    if (path.dirname(dir) === dir) break;
  }
});

test('publishing a report needs no runtime: nothing is installed', async () => {
  const r = await step({ eventName: 'push', payload: push(), cwd: tmp, with: { report: 'out/report.json' } });
  expect(r.stderr).toBe('');
  expect(r.status).toBe(0);
  expect(r.outputs.verdict).toBe('pass');
  expect(r.summary).toMatch(/^> Published from an existing report\.\n\n### ✅ Kept [^\n]*\n\nprune-gate passed/);
  expect(r.stdout).not.toMatch(/onnxruntime-node/);
  expect(fs.existsSync(toolCache)).toBe(false);
});

installTest('the first gate run installs onnxruntime-node into the tool cache (this platform only); the next reuses it', async () => {
  const config = path.join(ROOT, 'test/action-configs/pass.yml');
  const dir = runtimeDir(actionRoot, { RUNNER_TOOL_CACHE: toolCache });
  expect(dir).toBe(path.join(toolCache, 'prune-gate', 'onnxruntime-node', ONNXRUNTIME_NODE_VERSION, `${process.platform}-${process.arch}`));

  const cold = await step({ eventName: 'push', payload: push(), with: { config } });
  expect(cold.stderr).toBe('');
  expect(cold.status).toBe(0);
  expect(cold.stdout).toContain(`installing onnxruntime-node@${ONNXRUNTIME_NODE_VERSION} into ${dir}`);
  expect(cold.stdout).toMatch(/installed onnxruntime-node in [\d.]+ s/);
  expect(ReportSchema.parse(JSON.parse(fs.readFileSync(cold.outputs['report-path'], 'utf8'))).verdict).toBe('pass');

  const bin = path.join(dir, 'node_modules', 'onnxruntime-node', 'bin', 'napi-v6');
  expect(fs.readdirSync(bin)).toEqual([process.platform]);
  expect(fs.readdirSync(path.join(bin, process.platform))).toEqual([process.arch]);
  expect(du(dir)).toBeLessThan(80 * 1024 * 1024); // ~45 MB of binaries on linux-x64, not ~290 MB
  expect(fs.readdirSync(path.dirname(dir)).filter((f) => f.includes('.partial-'))).toEqual([]);

  const warm = await step({ eventName: 'push', payload: push(), with: { config } });
  expect(warm.status).toBe(0);
  expect(warm.stdout).toContain(`using onnxruntime-node@${ONNXRUNTIME_NODE_VERSION} from ${dir}`);
  expect(warm.stdout).not.toContain('installing');
}, 300_000);

installTest(
  "on a new runner (empty tool cache) the runtime comes from the Actions cache service, with the npm registry unreachable",
  async () => {
    const service = new FakeCacheService('runtime-token');
    const url = await service.listen();
    const cacheEnv = { ACTIONS_CACHE_SERVICE_V2: 'true', ACTIONS_RESULTS_URL: url, ACTIONS_RUNTIME_TOKEN: 'runtime-token', GITHUB_SERVER_URL: 'https://github.com' };
    const config = path.join(ROOT, 'test/action-configs/pass.yml');
    const jobCache = path.join(tmp, 'job-toolcache');
    const dir = runtimeDir(actionRoot, { RUNNER_TOOL_CACHE: jobCache });
    try {
      // Job 1: installs from the registry, then saves the runtime under its key.
      const first = await runAction({ main: path.join(actionRoot, 'dist', 'index.js'), eventName: 'push', payload: push(), with: { config }, env: { ...cacheEnv, RUNNER_TOOL_CACHE: jobCache } });
      temps.push(first.runnerTemp);
      expect([first.status, first.stderr]).toEqual([0, '']);
      expect(first.stdout).toMatch(/installed onnxruntime-node in [\d.]+ s/);
      expect(first.stdout).toContain(`saved onnxruntime-node@${ONNXRUNTIME_NODE_VERSION} to the Actions cache (key ${runtimeCacheKey()})`);
      expect(service.stored()).toEqual([{ key: runtimeCacheKey(), bytes: expect.any(Number) }]);

      // Job 2, another VM: the tool cache is empty and npm's registry is a closed port.
      fs.rmSync(jobCache, { recursive: true, force: true });
      const second = await runAction({
        main: path.join(actionRoot, 'dist', 'index.js'),
        eventName: 'push',
        payload: push(),
        with: { config },
        env: { ...cacheEnv, RUNNER_TOOL_CACHE: jobCache, npm_config_registry: 'http://127.0.0.1:9/', npm_config_cache: path.join(tmp, 'empty-npm-cache') },
      });
      temps.push(second.runnerTemp);
      expect([second.status, second.stderr]).toEqual([0, '']);
      expect(second.stdout).toContain(`restored onnxruntime-node@${ONNXRUNTIME_NODE_VERSION} from the Actions cache (key ${runtimeCacheKey()})`);
      expect(second.stdout).not.toMatch(/installing onnxruntime-node/);
      expect(ReportSchema.parse(JSON.parse(fs.readFileSync(second.outputs['report-path'], 'utf8'))).verdict).toBe('pass');
      expect(fs.existsSync(path.join(dir, 'node_modules', 'onnxruntime-node', 'package.json'))).toBe(true);
      expect(service.calls).toEqual(expect.arrayContaining(['GetCacheEntryDownloadURL', 'CreateCacheEntry', 'FinalizeCacheEntryUpload', 'GET blob']));
      expect(service.problems).toEqual([]);
    } finally {
      await service.close();
    }
  },
  300_000,
);
