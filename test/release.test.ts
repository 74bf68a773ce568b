// The release workflow (.github/workflows/release.yml): its tag check runs here as GitHub runs
// it (bash, with the release's tag and prerelease flag), on a repository whose package.json has
// a given version; and what the workflows promise about tokens and Node versions holds.
import { spawnSync } from 'child_process';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import YAML from 'yaml';
import { ROOT } from './helpers/run-cli';

interface Step {
  id?: string;
  uses?: string;
  run?: string;
  with?: Record<string, unknown>;
}
interface Job {
  permissions?: Record<string, string>;
  strategy?: { matrix?: Record<string, unknown[]> };
  steps: Step[];
}
const workflow = (name: string) => YAML.parse(fs.readFileSync(path.join(ROOT, '.github', 'workflows', name), 'utf8')) as { permissions?: unknown; jobs: Record<string, Job> };
const release = workflow('release.yml');
const ci = workflow('ci.yml');

let repo: string;
beforeAll(() => {
  repo = fs.mkdtempSync(path.join(os.tmpdir(), 'prune-gate-release-'));
  spawnSync('git', ['init', '-q'], { cwd: repo });
  spawnSync('git', ['-c', 'user.name=test', '-c', 'user.email=test@example.com', '-c', 'commit.gpgsign=false', 'commit', '-q', '--allow-empty', '-m', 'release'], { cwd: repo });
});
afterAll(() => fs.rmSync(repo, { recursive: true, force: true }));

/** The release's tag check, run with this tag and prerelease flag on a package.json of `version`. */
function checkTag(version: string, tag: string, prerelease = false): { status: number | null; outputs: string; summary: string; stdout: string } {
  const script = release.jobs.check.steps.find((s) => s.id === 'tag')!.run!;
  fs.writeFileSync(path.join(repo, 'package.json'), JSON.stringify({ name: 'prune-gate', version }));
  const outputs = path.join(repo, 'outputs');
  const summary = path.join(repo, 'summary');
  fs.writeFileSync(outputs, '');
  fs.writeFileSync(summary, '');
  const r = spawnSync('bash', ['-e', '-c', script], {
    cwd: repo,
    encoding: 'utf8',
    env: { ...process.env, TAG: tag, PRERELEASE: String(prerelease), GITHUB_OUTPUT: outputs, GITHUB_STEP_SUMMARY: summary },
  });
  return { status: r.status, outputs: fs.readFileSync(outputs, 'utf8'), summary: fs.readFileSync(summary, 'utf8'), stdout: r.stdout };
}

test('a release tagged with package.json\'s version moves its major tag to the checked commit', () => {
  const head = spawnSync('git', ['rev-parse', 'HEAD'], { cwd: repo, encoding: 'utf8' }).stdout.trim();
  const r = checkTag('1.2.3', 'v1.2.3');
  expect(r.status).toBe(0);
  expect(r.outputs).toBe(`commit=${head}\nmajor=v1\n`);
});

test("a tag that is not package.json's version fails the release, saying what to do", () => {
  const r = checkTag('1.2.3', 'v1.2.4');
  expect(r.status).toBe(1);
  expect(r.stdout).toBe("::error::release tag v1.2.4 is not package.json's version (v1.2.3): set the version, commit, and tag that commit\n");
  expect(r.outputs).toBe('');
  expect(checkTag('1.2', 'v1.2').status).toBe(1);
});

test('a prerelease, by its tag or by its flag, passes the check and leaves the major tag alone', () => {
  for (const r of [checkTag('1.3.0-rc.1', 'v1.3.0-rc.1'), checkTag('1.3.0', 'v1.3.0', true)]) {
    expect(r.status).toBe(0);
    expect(r.outputs).toMatch(/^commit=[0-9a-f]{40}\n$/);
    expect(r.summary).toMatch(/^v1\.3\.0(-rc\.1)? is a prerelease: v1 is not moved\n$/);
  }
});

test('least privilege: only the step that moves the tag holds a token that can write; no checkout keeps a token', () => {
  expect(release.permissions).toEqual({});
  expect(Object.fromEntries(Object.entries(release.jobs).map(([name, job]) => [name, job.permissions]))).toEqual({ check: { contents: 'read' }, 'move-major-tag': { contents: 'write' } });
  expect(release.jobs['move-major-tag'].steps.map((s) => s.uses ?? 'run')).toEqual(['run']);
  for (const job of [...Object.values(release.jobs), ...Object.values(ci.jobs)]) {
    for (const step of job.steps.filter((s) => s.uses?.startsWith('actions/checkout@'))) expect(step.with?.['persist-credentials']).toBe(false);
  }
});

test("CI tests on Node 24 (action.yml's runtime) and on the oldest Node package.json's engines allows; the action runs on x64 and arm64", () => {
  const oldest = Number(/^>=(\d+)$/.exec(JSON.parse(fs.readFileSync(path.join(ROOT, 'package.json'), 'utf8')).engines.node)![1]);
  expect(fs.readFileSync(path.join(ROOT, 'action.yml'), 'utf8')).toMatch(/^ {2}using: node24$/m);
  for (const job of ['test', 'check-dist']) expect(ci.jobs[job].strategy!.matrix!.node).toEqual([24, oldest]);
  expect(ci.jobs['self-test'].strategy!.matrix!.runner).toEqual(['ubuntu-24.04', 'ubuntu-24.04-arm']);
  expect(ci.jobs['self-test'].steps.filter((s) => s.uses === './').map((s) => s.id)).toEqual(['gate', 'failing', 'publish']);
});
