// `npm run bench -- cold-start`: the action's start as runners see it. dist/index.js is copied
// into a folder with no node_modules (as the runner checks out an action), with an empty tool
// cache and an empty npm cache, and a stand-in for the Actions cache service
// (test/helpers/fake-cache.ts) on this machine:
//   cold        the first job: onnxruntime-node from the registry, then saved to the Actions cache;
//   warm        the next step on the same runner: the tool cache has it;
//   new runner  a job on a fresh VM: the tool cache emptied, the npm registry unreachable, the
//               runtime restored from the Actions cache.
// Prints one JSON line per run.
import { spawn } from 'child_process';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { FakeCacheService } from '../../test/helpers/fake-cache';

const ROOT = path.resolve(__dirname, '..', '..');
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'prune-gate-cold-start-'));
const action = path.join(tmp, '_actions', 'owner', 'prune-gate', 'v1');
const toolCache = path.join(tmp, 'toolcache');
const npmCache = path.join(tmp, 'npm-cache');

function du(dir: string): number {
  if (!fs.existsSync(dir)) return 0;
  let total = 0;
  for (const e of fs.readdirSync(dir, { withFileTypes: true })) {
    const p = path.join(dir, e.name);
    total += e.isDirectory() ? du(p) : fs.lstatSync(p).size;
  }
  return total;
}

function runStep(label: string, extra: Record<string, string>): Promise<{ status: number | null; seconds: number; stdout: string }> {
  const out = path.join(tmp, `${label.replace(/\W/g, '-')}-output`);
  const summary = path.join(tmp, `${label.replace(/\W/g, '-')}-summary`);
  fs.writeFileSync(out, '');
  fs.writeFileSync(summary, '');
  fs.writeFileSync(path.join(tmp, 'event.json'), '{}');
  const env: Record<string, string> = {
    PATH: process.env.PATH ?? '',
    HOME: process.env.HOME ?? '',
    GITHUB_EVENT_NAME: 'push',
    GITHUB_EVENT_PATH: path.join(tmp, 'event.json'),
    GITHUB_OUTPUT: out,
    GITHUB_STEP_SUMMARY: summary,
    GITHUB_WORKSPACE: ROOT,
    GITHUB_SERVER_URL: 'https://github.com',
    RUNNER_TEMP: path.join(tmp, `${label.replace(/\W/g, '-')}-runner-temp`),
    RUNNER_TOOL_CACHE: toolCache,
    npm_config_cache: npmCache,
    INPUT_CONFIG: 'test/action-configs/pass.yml',
    'INPUT_FAIL-ON': 'regression',
    INPUT_COMMENT: 'true',
    ...extra,
  };
  const started = process.hrtime.bigint();
  return new Promise((resolve) => {
    let stdout = '';
    const child = spawn(process.execPath, [path.join(action, 'dist', 'index.js')], { cwd: ROOT, env, stdio: ['ignore', 'pipe', 'pipe'] });
    child.stdout.on('data', (d: Buffer) => (stdout += d.toString()));
    child.stderr.on('data', (d: Buffer) => (stdout += d.toString()));
    child.on('close', (status) => resolve({ status, seconds: Number(process.hrtime.bigint() - started) / 1e9, stdout }));
  });
}

async function main(): Promise<void> {
  fs.mkdirSync(path.join(action, 'dist'), { recursive: true });
  fs.copyFileSync(path.join(ROOT, 'dist', 'index.js'), path.join(action, 'dist', 'index.js'));
  const service = new FakeCacheService('bench-token');
  const url = await service.listen();
  const cache = { ACTIONS_CACHE_SERVICE_V2: 'true', ACTIONS_RESULTS_URL: url, ACTIONS_RUNTIME_TOKEN: 'bench-token' };
  try {
    for (const [label, extra, wipe] of [
      ['cold', cache, false],
      ['warm', cache, false],
      ['new runner', { ...cache, npm_config_registry: 'http://127.0.0.1:9/' }, true],
    ] as const) {
      if (wipe) for (const dir of [toolCache, npmCache]) fs.rmSync(dir, { recursive: true, force: true }); // a new VM
      const r = await runStep(label, extra);
      const installed = /installed onnxruntime-node in ([\d.]+) s/.exec(r.stdout)?.[1];
      const source = /restored onnxruntime-node/.test(r.stdout) ? 'actions cache' : installed ? 'npm registry' : /using onnxruntime-node/.test(r.stdout) ? 'tool cache' : 'none';
      console.log(
        JSON.stringify({
          run: label,
          status: r.status,
          seconds: r.seconds,
          source,
          installSeconds: installed ? Number(installed) : null,
          runtimeMiB: du(toolCache) / 2 ** 20,
          npmCacheMiB: du(npmCache) / 2 ** 20,
          cacheEntryMiB: service.stored().reduce((n, e) => n + e.bytes, 0) / 2 ** 20,
          ...(r.status !== 0 ? { output: r.stdout.slice(-2000) } : {}),
        }),
      );
    }
  } finally {
    await service.close();
    fs.rmSync(tmp, { recursive: true, force: true });
  }
}

void main();
