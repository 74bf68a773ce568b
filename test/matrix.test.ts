// `prune-gate plan` (issue 19, the Actions matrix): the matrix for N jobs, a plan identity that
// follows the config, the model's and the calibration set's bytes and N, and one-line refusals
// of the settings under which jobs could build different candidates.
import * as fs from 'fs';
import * as path from 'path';
import { ROOT, useBuiltCli } from './helpers/run-cli';

const built = useBuiltCli('matrix');

function config(name: string, extra = '', calibration = path.join(ROOT, 'calibration', 'mlp')): string {
  const file = path.join(built.tmp, `${name}.yml`);
  fs.writeFileSync(
    file,
    [`model: ${path.join(ROOT, 'test', 'fixtures', 'mlp.onnx')}`, `calibration: ${calibration}`, 'prune: { target: auto, steps: 3, allocation: global, compensate: none, align: 1, importance: magnitude }', 'gate:', '  agreement: { min: 0.5 }', extra].join('\n'),
  );
  return file;
}

const identity = (stderr: string) => /^plan ([0-9a-f]{16}): /.exec(stderr)?.[1];

test('plan prints the matrix and names the plan by the config, the data and N', async () => {
  const r = await built.cli(['plan', '--config', config('a'), '--jobs', '4']);
  expect([r.status, JSON.parse(r.stdout)]).toEqual([0, { include: ['1/4', '2/4', '3/4', '4/4'].map((job) => ({ job })) }]);
  expect(r.stderr).toMatch(/^plan [0-9a-f]{16}: 4 jobs, each evaluating at most 32 of the 128 calibration samples\n$/);
  const again = await built.cli(['plan', '--config', config('a'), '--jobs', '4']);
  expect(identity(again.stderr)).toBe(identity(r.stderr));
  expect(identity((await built.cli(['plan', '--config', config('a'), '--jobs', '3'])).stderr)).not.toBe(identity(r.stderr));
  expect(identity((await built.cli(['plan', '--config', config('b', '  cosine: { min: 0.5 }'), '--jobs', '4'])).stderr)).not.toBe(identity(r.stderr));
  // One byte of the calibration set changed: another plan.
  const copy = path.join(built.tmp, 'calibration-copy');
  fs.cpSync(path.join(ROOT, 'calibration', 'mlp'), copy, { recursive: true });
  const same = await built.cli(['plan', '--config', config('c', '', copy), '--jobs', '4']);
  expect(identity(same.stderr)).toBe(identity(r.stderr));
  const npy = fs.readdirSync(copy).find((f) => f.endsWith('.npy')) as string;
  const bytes = fs.readFileSync(path.join(copy, npy));
  bytes[bytes.length - 1] ^= 1;
  fs.writeFileSync(path.join(copy, npy), bytes);
  expect(identity((await built.cli(['plan', '--config', config('c', '', copy), '--jobs', '4'])).stderr)).not.toBe(identity(r.stderr));
}, 60_000);

test.each([
  ['prune: { target: 0.2, align: auto }', /prune\.align: auto chooses widths by timing candidates on each machine/],
  ['prune: { target: 0.2, align: 1, allocation: measured, compensate: none }', /prune\.allocation: measured measures candidates on the whole calibration set, which no job holds; choose global, uniform or ffn-only/],
  ['prune: { target: 0.2, align: 1, allocation: global, compensate: auto }', /prune\.compensate: auto measures candidates/],
  ['prune: { target: 0.2, align: 1, allocation: global, compensate: none }\ngate:\n  latency-p50: { min-speedup: 1.1 }', /gate\.latency-p50: measured on one machine, side by side with the base, not per job/],
])('plan refuses, in one line naming the key: %s', async (yml, message) => {
  const file = path.join(built.tmp, 'refused.yml');
  fs.writeFileSync(file, `model: ${path.join(ROOT, 'test', 'fixtures', 'mlp.onnx')}\ncalibration: ${path.join(ROOT, 'calibration', 'mlp')}\n${yml}\n`);
  const r = await built.cli(['plan', '--config', file]);
  expect(r.status).toBe(2);
  expect(r.stderr).toMatch(/^prune-gate: [^\n]+\n$/);
  expect(r.stderr).toMatch(message);
  expect(r.stdout).toBe('');
});

test('plan refuses a job count outside 1 to 256', async () => {
  for (const jobs of ['0', '257', 'four']) {
    const r = await built.cli(['plan', '--config', config('d'), '--jobs', jobs]);
    expect([jobs, r.status]).toEqual([jobs, 2]);
    expect(r.stderr).toMatch(/^prune-gate: --jobs: expected a whole number of jobs from 1 to 256/);
  }
});
