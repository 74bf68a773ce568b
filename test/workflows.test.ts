// The workflows (the repository's own and those the docs show) pass actionlint, the linter knows
// the runner labels of .github/actionlint.yaml, and it catches what it should.
import YAML from 'yaml';
import { Workflow, lintWorkflows, workflows } from '../tools/lint-workflows';

const ci = (runsOn: string, step = 'run: echo ok'): Workflow => ({
  where: 'test.yml',
  firstLine: 1,
  text: `on: push\njobs:\n  a:\n    runs-on: ${runsOn}\n    steps:\n      - ${step}\n`,
});

test('every workflow of .github/workflows and of the docs passes actionlint', async () => {
  const all = workflows();
  expect(all.map((w) => w.where)).toEqual(expect.arrayContaining(['.github/workflows/ci.yml', '.github/workflows/release.yml', 'README.md']));
  expect(await lintWorkflows(all)).toEqual([]);
}, 60_000);

test('current hosted-runner labels pass; an unknown label and a bad expression are caught with their line', async () => {
  expect(await lintWorkflows([ci('ubuntu-24.04'), ci('ubuntu-slim'), ci('macos-26'), ci('windows-11-arm')])).toEqual([]);
  const problems = await lintWorkflows([ci('ubuntu-99'), ci('ubuntu-latest', 'run: echo ${{ github.no_such_field }}')]);
  expect(problems).toHaveLength(2);
  expect(problems[0]).toBe('test.yml:4:14: label "ubuntu-99" is unknown [runner-label]');
  expect(problems[1]).toMatch(/^test\.yml:6:\d+: property "no_such_field" is not defined/);
}, 60_000);

test("the docs' pull-request workflows cancel the run for an older commit: concurrency per pull request, cancel-in-progress", () => {
  const shown = workflows().filter((w) => !w.where.startsWith('.github'));
  const forPullRequests = shown
    .map((w) => ({ where: `${w.where}:${w.firstLine}`, yml: YAML.parse(w.text) as { on: Record<string, unknown>; concurrency?: { group?: string; 'cancel-in-progress'?: boolean } } }))
    .filter(({ yml }) => 'pull_request' in yml.on || 'workflow_run' in yml.on);
  expect(forPullRequests.length).toBeGreaterThanOrEqual(3); // the README's, the fork pattern's second, the matrix
  for (const { where, yml } of forPullRequests) {
    const c = yml.concurrency;
    expect([where, c?.['cancel-in-progress']]).toEqual([where, true]);
    const perPullRequest = 'pull_request' in yml.on ? /github\.event\.pull_request\.number/ : /github\.event\.workflow_run\.head_branch/;
    expect([where, perPullRequest.test(c?.group ?? '')]).toEqual([where, true]);
  }
});
