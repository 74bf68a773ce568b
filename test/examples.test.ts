// The examples end as docs/measured.md documents them: `bin/prune-gate.js run`, the command
// users run, on each example's config gives the verdict, the step kept, each step's outcome and
// the main metric recorded in docs/results/examples.json by `npm run bench -- examples`.
import { spawnSync } from 'child_process';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import type { Report } from '../src/report/schema';

const ROOT = path.resolve(__dirname, '..');
const documented = JSON.parse(fs.readFileSync(path.join(ROOT, 'docs', 'results', 'examples.json'), 'utf8')) as {
  rows: { example: string; run: string; metric: string; verdict: string; chosenStep: number; steps: { ratio: number; pass: boolean; failed: string[]; calibration: number }[] }[];
};
let tmp: string;
beforeAll(() => {
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'prune-gate-examples-'));
});
afterAll(() => fs.rmSync(tmp, { recursive: true, force: true }));

test.each([
  ['fortunes-llama', []],
  ['digits-cnn', ['--config', 'examples/digits-cnn/prune-gate.yml']],
])('%s: the gate ends as documented', (example, args) => {
  const out = path.join(tmp, example);
  const r = spawnSync(process.execPath, [path.join(ROOT, 'bin', 'prune-gate.js'), 'run', ...args, '--out', out, '--json'], { cwd: ROOT, encoding: 'utf8' });
  const doc = documented.rows.find((row) => row.example === example && row.run === 'gate')!;
  expect(r.stderr).not.toMatch(/internal error/);
  expect(r.status).toBe(doc.verdict === 'pass' ? 0 : 1);
  const report = JSON.parse(r.stdout) as Report;
  expect(JSON.parse(fs.readFileSync(path.join(out, 'report.json'), 'utf8'))).toEqual(report);
  expect(fs.existsSync(path.join(out, 'pruned.onnx'))).toBe(true);
  expect(report.verdict).toBe(doc.verdict);
  expect(report.chosen_step).toBe(doc.chosenStep);
  expect(report.steps.map((s) => ({ ratio: s.ratio, pass: s.pass, failed: s.metrics.filter((m) => !m.pass).map((m) => m.name) }))).toEqual(
    doc.steps.map((s) => ({ ratio: s.ratio, pass: s.pass, failed: s.failed })),
  );
  expectSharesCounted(out, report);
  report.steps.forEach((s, i) => {
    const value = s.metrics.find((m) => m.name === doc.metric)!.candidate as number;
    // Deterministic, but onnxruntime's kernels may round differently on another CPU.
    expect(Math.abs(value / doc.steps[i].calibration - 1)).toBeLessThan(1e-3);
  });
});

/** The headline's share and each step's share in report.md are the parameters counted in report.json, to 0.1 %. */
function expectSharesCounted(out: string, report: Report): void {
  const md = fs.readFileSync(path.join(out, 'report.md'), 'utf8');
  const share = (params: number) => (report.base.params - params) / report.base.params;
  // The verdict line (under the why-this-ratio line) names the share pruned.
  const headline = /^(?:### [✅❌] )?prune-gate (?:passed|failed): .* pruned ([\d.]+)%/m.exec(md);
  expect(headline).not.toBeNull();
  expect(Math.abs(Number(headline![1]) / 100 - share(report.candidate.params))).toBeLessThan(0.001);
  const rows = [...md.matchAll(/^\| (\d+)(?: ⬅)? \| ([\d.]+)%(?: \(target ([\d.]+)%\))? \|/gm)];
  expect(rows).toHaveLength(report.steps.length);
  rows.forEach((row, i) => {
    const params = report.steps[i].metrics.find((m) => m.name === 'params')!.candidate as number;
    expect(Math.abs(Number(row[2]) / 100 - share(params))).toBeLessThan(0.001);
    // The target is shown beside the share exactly where the two differ as printed.
    expect(row[3] === undefined ? Number(row[2]) : Number(row[3])).toBe(Number((report.steps[i].ratio * 100).toFixed(1)));
  });
}

test('digits at --target 30%: the headline and the steps give the share removed as counted', () => {
  const out = path.join(tmp, 'digits-30');
  const r = spawnSync(process.execPath, [path.join(ROOT, 'bin', 'prune-gate.js'), 'run', '--config', 'examples/digits-cnn/prune-gate.yml', '--target', '30%', '--out', out, '--json'], { cwd: ROOT, encoding: 'utf8' });
  expect(r.stderr).not.toMatch(/internal error/);
  const report = JSON.parse(r.stdout) as Report;
  expect(report.target).toBe(0.3);
  expect(report.removed).toBeCloseTo((report.base.params - report.candidate.params) / report.base.params, 10);
  expectSharesCounted(out, report);
});

test('the generation example fails at target 0.6, on agreement with the base generations (docs/measured.md)', () => {
  const out = path.join(tmp, 'generation-0.6');
  const config = path.join('examples', 'fortunes-llama', 'generation', 'prune-gate.yml');
  const r = spawnSync(process.execPath, [path.join(ROOT, 'bin', 'prune-gate.js'), 'run', '--config', config, '--target', '0.6', '--out', out, '--json'], { cwd: ROOT, encoding: 'utf8' });
  expect(r.stderr).not.toMatch(/internal error/);
  expect(r.status).toBe(1);
  const report = JSON.parse(r.stdout) as Report;
  expect(report.task).toBe('generation');
  expect(report.metrics.filter((m) => !m.pass).map((m) => m.name)).toEqual(['agreement']);
  expect(report.metrics.find((m) => m.name === 'rouge-l')?.rule).toBe('max-drop 10%');
  expect(report.examples?.map((e) => e.line)).toEqual([1, 2, 3]);
});
