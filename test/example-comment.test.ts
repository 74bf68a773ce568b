// The repository's example (prune-gate.yml, what `npm start` runs) gets a pull-request comment
// that reads at a glance (issue 30): it starts with why this ratio and stays under 4 KB, also
// with the links a run on GitHub adds. Run in-process through the CLI's main(), from the
// repository's root as `npm start` is.
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { runMain as cli } from './helpers/in-process';
import { commentBody, utf8Bytes } from '../src/github/comment';
import { plainText, renderMarkdown, stickyMarker } from '../src/report/markdown';
import type { Report } from '../src/report/schema';

const ROOT = path.resolve(__dirname, '..');
let tmp: string;
beforeAll(() => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'prune-gate-example-comment-'));
});
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

const percent = (r: number) => `${Number((r * 100).toFixed(1))}%`;

test("the example's passing comment is under 4 KB and starts with the why-this-ratio line", async () => {
  expect(process.cwd()).toBe(ROOT);
  const out = path.join(tmp, 'out');
  const r = await cli(['run', '--out', out]);
  expect(r.stderr).not.toMatch(/internal error/);
  expect(r.status).toBe(0);
  const report = JSON.parse(fs.readFileSync(path.join(out, 'report.json'), 'utf8')) as Report;
  const md = fs.readFileSync(path.join(out, 'report.md'), 'utf8');
  const body = commentBody(stickyMarker(report.base.path, report.config), md);
  // The marker is an HTML comment (not shown); the first line a reader sees says why this ratio,
  // from the steps as report.json gives them: the kept one and what the next one broke.
  const [marker, first] = body.split('\n');
  expect(marker).toMatch(/^<!-- prune-gate:model=examples\/fortunes-llama\/model\.onnx config=prune-gate\.yml -->$/);
  const kept = report.steps[report.chosen_step!];
  const next = report.steps[report.chosen_step! + 1];
  const broke = next.metrics.filter((m) => !m.pass).map((m) => `${m.name} (${m.rule})`);
  expect(broke.length).toBeGreaterThan(0);
  expect(first).toBe(`### ✅ Kept ${percent(kept.removed!)}: the largest step within every bound; ${percent(next.removed!)} broke ${broke.join(', ')}.`);
  expect(utf8Bytes(body)).toBeLessThan(4096);
  // On GitHub the report also links the commit, the run and its artifacts: still under 4 KB.
  const run = 'https://github.com/octo-org/prune-gate-demo/actions/runs/12345678901';
  const onGitHub = renderMarkdown({ ...report, run: { sha: 'f'.repeat(40), url: `${run}/attempts/2`, artifacts_url: `${run}/artifacts/4567890123` } });
  expect(onGitHub).toContain(`[commit \`ffffffffffff\`](https://github.com/octo-org/prune-gate-demo/commit/${'f'.repeat(40)})`);
  expect(utf8Bytes(commentBody(stickyMarker(report.base.path, report.config), onGitHub))).toBeLessThan(4096);
  // The terminal gets the same report as plain text: names as they are, no character references.
  expect(r.stdout).toBe(plainText(md));
  expect(r.stdout).toContain('/model/layers.0/mlp (gate_proj/MatMul, up_proj/MatMul, down_proj/MatMul)');
  expect(r.stdout).not.toMatch(/&#\d+;|\\_/);
});
