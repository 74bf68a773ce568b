// Measures the action's cold start as a GitHub-hosted runner sees it: dist/index.js copied into
// a folder with no node_modules (as the runner checks out an action), an empty tool cache and an
// empty npm cache (so onnxruntime-node comes from the registry), then a warm run.
//
//   node tools/action-cold-start.mjs [--dist DIR] [--keep-npm-cache]
//
// Prints the install time the action reports, each run's wall time and the runtime's size on disk.
import { spawnSync } from 'node:child_process';
import * as fs from 'node:fs';
import * as os from 'node:os';
import * as path from 'node:path';
import { fileURLToPath } from 'node:url';

const root = path.resolve(path.dirname(fileURLToPath(import.meta.url)), '..');
const arg = (name) => {
  const i = process.argv.indexOf(name);
  return i > 0 ? process.argv[i + 1] : undefined;
};
const dist = path.resolve(arg('--dist') ?? path.join(root, 'dist'));
const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'prune-gate-cold-start-'));
const action = path.join(tmp, '_actions', 'owner', 'prune-gate', 'v1');
fs.mkdirSync(path.join(action, 'dist'), { recursive: true });
fs.copyFileSync(path.join(dist, 'index.js'), path.join(action, 'dist', 'index.js'));

function du(dir) {
  let total = 0;
  for (const e of fs.readdirSync(dir, { withFileTypes: true })) {
    const p = path.join(dir, e.name);
    total += e.isDirectory() ? du(p) : fs.lstatSync(p).size;
  }
  return total;
}

function run(label) {
  const out = path.join(tmp, `${label}-output`);
  const summary = path.join(tmp, `${label}-summary`);
  fs.writeFileSync(out, '');
  fs.writeFileSync(summary, '');
  fs.writeFileSync(path.join(tmp, 'event.json'), '{}');
  const env = {
    PATH: process.env.PATH,
    HOME: process.env.HOME,
    GITHUB_EVENT_NAME: 'push',
    GITHUB_EVENT_PATH: path.join(tmp, 'event.json'),
    GITHUB_OUTPUT: out,
    GITHUB_STEP_SUMMARY: summary,
    RUNNER_TEMP: path.join(tmp, 'runner-temp'),
    RUNNER_TOOL_CACHE: path.join(tmp, 'toolcache'),
    'INPUT_CONFIG': 'test/action-configs/pass.yml',
    'INPUT_FAIL-ON': 'regression',
    'INPUT_COMMENT': 'true',
  };
  if (!process.argv.includes('--keep-npm-cache')) env.npm_config_cache = path.join(tmp, 'npm-cache');
  const started = process.hrtime.bigint();
  const r = spawnSync(process.execPath, [path.join(action, 'dist', 'index.js')], { cwd: root, env, encoding: 'utf8' });
  const seconds = Number(process.hrtime.bigint() - started) / 1e9;
  const installed = /installed onnxruntime-node in ([\d.]+) s/.exec(r.stdout)?.[1];
  console.log(`${label}: exit ${r.status}, ${seconds.toFixed(1)} s wall${installed ? `, of which installing onnxruntime-node ${installed} s` : ''}`);
  if (r.status !== 0) console.log(r.stdout + r.stderr);
}

try {
  run('cold');
  run('warm');
  const cache = path.join(tmp, 'toolcache');
  console.log(`runtime on disk: ${(du(cache) / 2 ** 20).toFixed(1)} MiB (${cache})`);
  if (fs.existsSync(path.join(tmp, 'npm-cache'))) console.log(`npm cache (discarded with the runner): ${(du(path.join(tmp, 'npm-cache')) / 2 ** 20).toFixed(1)} MiB`);
} finally {
  fs.rmSync(tmp, { recursive: true, force: true });
}
