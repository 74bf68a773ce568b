// How a user's repository gets the CLI (README.md, "Command line"): one npx command from the
// release tag's git tree. dist/ is committed, so npm packs the tree as it is (package.json's
// `files`) without building it, installs the one dependency the bundle leaves out
// (onnxruntime-node) and runs no install script. The install test clones this checkout's files
// into a local bare repository tagged like a release and runs that command on it from an empty
// folder; it needs the npm registry (or npm's cache), see test/helpers/registry.ts.
import { spawnSync } from 'child_process';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { main } from '../src/cli/main';
import { CLI_COMMAND } from '../src/util/install';
import { registryTests } from './helpers/registry';
import { ROOT, bundleInto } from './helpers/run-cli';

const npm = process.platform === 'win32' ? 'npm.cmd' : 'npm';
const installTest = registryTests('the npx install test is');

test('the README, --help and the report name the same command', async () => {
  const readme = fs.readFileSync(path.join(ROOT, 'README.md'), 'utf8');
  expect(readme).toContain(`${CLI_COMMAND} run`);
  let help = '';
  expect(await main(['--help'], { stdout: (s) => (help += s), stderr: () => undefined })).toBe(0);
  expect(help).toContain(`In any repository, without installing: ${CLI_COMMAND} <command>`);
  // The report's reproduce line is checked where a report is made (test/action.test.ts).
});

test('the npm package holds the CLI and its license, nothing of the tests or the action', () => {
  const r = spawnSync(npm, ['pack', '--dry-run', '--json'], { cwd: ROOT, encoding: 'utf8', shell: process.platform === 'win32' });
  expect(r.status).toBe(0);
  const files = (JSON.parse(r.stdout) as { files: { path: string }[] }[])[0].files.map((f) => f.path).sort();
  expect(files).toEqual(['LICENSE', 'README.md', 'bin/prune-gate.js', 'dist/cli.js', 'package.json']);
});

installTest(
  '`npx --yes --ignore-scripts github:OWNER/prune-gate#v1 --help` works from an empty folder, against a local bare clone',
  async () => {
    const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'prune-gate-npx-'));
    const built = bundleInto('npx');
    try {
      // The checkout's tracked files as they are now, with dist/cli.js built from the current
      // sources (test/dist.test.ts checks the committed one), committed and tagged as a release.
      const tree = path.join(tmp, 'tree');
      const tracked = spawnSync('git', ['ls-files', '-z'], { cwd: ROOT, encoding: 'utf8' }).stdout.split('\0').filter((f) => f && fs.existsSync(path.join(ROOT, f)));
      for (const f of tracked) {
        fs.mkdirSync(path.dirname(path.join(tree, f)), { recursive: true });
        fs.copyFileSync(path.join(ROOT, f), path.join(tree, f));
      }
      fs.copyFileSync(path.join(built, 'cli.js'), path.join(tree, 'dist', 'cli.js'));
      const tag = /#(v\d+)$/.exec(CLI_COMMAND.split(' ').find((w) => w.startsWith('github:'))!)![1];
      const git = (args: string[], cwd: string) => {
        const r = spawnSync('git', ['-c', 'user.name=test', '-c', 'user.email=test@example.com', '-c', 'commit.gpgsign=false', ...args], { cwd, encoding: 'utf8' });
        if (r.status !== 0) throw new Error(`git ${args.join(' ')}: ${r.stderr}`);
      };
      git(['init', '-q'], tree);
      git(['add', '-A'], tree);
      git(['commit', '-q', '-m', 'release'], tree);
      git(['tag', tag], tree);
      const bare = path.join(tmp, 'prune-gate.git');
      git(['clone', '-q', '--bare', tree, bare], tmp);

      // npm's own cache of packages (shared, so a warm cache is used), with npx's install folder
      // and npm's logs in this test's cache folder.
      const userCache = spawnSync(npm, ['config', 'get', 'cache'], { cwd: tmp, encoding: 'utf8', shell: process.platform === 'win32' }).stdout.trim();
      const cache = path.join(tmp, 'npm-cache');
      fs.mkdirSync(cache);
      fs.symlinkSync(path.join(userCache, '_cacache'), path.join(cache, '_cacache'), 'junction');
      // Nothing of the npm that may be running jest (its config, e.g. the project's
      // ignore-scripts, reaches child processes as npm_config_*), and scripts on unless the
      // command's own flag turns them off.
      const env = Object.fromEntries(Object.entries(process.env).filter(([k]) => !/^npm_/i.test(k)));
      Object.assign(env, {
        npm_config_ignore_scripts: 'false',
        npm_config_cache: cache,
        npm_config_prefer_offline: 'true',
        npm_config_update_notifier: 'false',
        // onnxruntime-node's install script, were it run, would fail on every platform with
        // this value (not one of its manifests): the install must not depend on it.
        ONNXRUNTIME_NODE_INSTALL: 'not-a-manifest',
      });
      const empty = path.join(tmp, 'empty');
      fs.mkdirSync(empty);
      const [npx, ...args] = CLI_COMMAND.split(' ').map((w) => (w.startsWith('github:') ? `git+file://${bare.split(path.sep).join('/')}#${tag}` : w));
      const r = spawnSync(process.platform === 'win32' ? `${npx}.cmd` : npx, [...args, '--help'], { cwd: empty, env, encoding: 'utf8', timeout: 280_000, shell: process.platform === 'win32' });

      expect([r.status, r.stderr.split('\n').filter((l) => /npm error|ERR!/.test(l))]).toEqual([0, []]);
      expect(r.stdout).toMatch(/^Usage: prune-gate /);
      expect(r.stdout).toContain(`In any repository, without installing: ${CLI_COMMAND} <command>`);
      expect(fs.readdirSync(empty)).toEqual([]);
      // Only onnxruntime-node and what it needs beside the CLI: the rest is bundled into dist/cli.js.
      const [installDir] = fs.readdirSync(path.join(cache, '_npx'));
      const installed = fs.readdirSync(path.join(cache, '_npx', installDir, 'node_modules'));
      expect(installed).toEqual(expect.arrayContaining(['prune-gate', 'onnxruntime-node']));
      expect(installed).not.toEqual(expect.arrayContaining(['commander']));
    } finally {
      fs.rmSync(built, { recursive: true, force: true });
      fs.rmSync(tmp, { recursive: true, force: true });
    }
  },
  300_000,
);
