// `prune-gate plan` (issue 19, the Actions matrix): the matrix for N jobs, a plan identity that
// follows the config, the model's and the calibration set's bytes and N, and one-line refusals
// of the settings under which jobs could build different candidates.
import * as crypto from 'crypto';
import * as fs from 'fs';
import * as path from 'path';
import { OnnxModel } from '../src/onnx/model';
import { CliResult, ROOT, useBuiltCli } from './helpers/run-cli';

const built = useBuiltCli('matrix');

function config(name: string, extra = '', calibration = path.join(ROOT, 'calibration', 'mlp'), model = 'mlp.onnx', prune = 'allocation: global, compensate: none, align: 1, importance: magnitude'): string {
  const file = path.join(built.tmp, `${name}.yml`);
  // One timed run unless the test times on purpose: latency is not what most of these test.
  const latency = extra.includes('latency:') ? [] : ['latency: { warmup: 0, runs: 1 }'];
  fs.writeFileSync(file, [`model: ${path.join(ROOT, 'test', 'fixtures', model)}`, `calibration: ${calibration}`, `prune: { target: auto, steps: 3, ${prune} }`, ...latency, 'gate:', '  agreement: { min: 0.5 }', extra].join('\n'));
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
  ['prune: { target: 0.2, align: auto }', /prune\.align: auto takes widths from each runner's convolution kernels/],
])('plan refuses, in one line naming the key: %s', async (yml, message) => {
  const file = path.join(built.tmp, 'refused.yml');
  fs.writeFileSync(file, `model: ${path.join(ROOT, 'test', 'fixtures', 'mlp.onnx')}\ncalibration: ${path.join(ROOT, 'calibration', 'mlp')}\n${yml}\n`);
  const r = await built.cli(['plan', '--config', file]);
  expect(r.status).toBe(2);
  expect(r.stderr).toMatch(/^prune-gate: [^\n]+\n$/);
  expect(r.stderr).toMatch(message);
  expect(r.stdout).toBe('');
});

test('plan refuses a generation set, in one line naming it and why', async () => {
  const r = await built.cli(['plan', '--config', path.join(ROOT, 'examples', 'fortunes-llama', 'generation', 'prune-gate.yml')]);
  expect([r.status, r.stdout]).toEqual([2, '']);
  expect(r.stderr).toMatch(/^prune-gate: examples\/fortunes-llama\/generation\/calibration\.json: a generation set cannot be split yet: its prompts are decoded in batches sorted by length over the whole set, which a job's share would not reproduce exactly; run the gate on one machine\n$/);
});

test('plan refuses a job count outside 1 to 256', async () => {
  for (const jobs of ['0', '257', 'four']) {
    const r = await built.cli(['plan', '--config', config('d'), '--jobs', jobs]);
    expect([jobs, r.status]).toEqual([jobs, 2]);
    expect(r.stderr).toMatch(/^prune-gate: --jobs: expected a whole number of jobs from 1 to 256/);
  }
});

describe.each([
  ['mlp, magnitude, global allocation', () => config('split')],
  ['llama, activations, uniform allocation, least-squares reconstruction', () => config('split-llama', '', path.join(ROOT, 'calibration', 'llama'), 'llama.onnx', 'structures: [ffn], allocation: uniform, compensate: reconstruct, align: 1, importance: activation')],
  ['measured, llama, allocation and compensation auto (chosen by their losses on the whole set)', () => config('split-measured', '', path.join(ROOT, 'calibration', 'llama'), 'llama.onnx', 'structures: [ffn, heads], allocation: auto, compensate: auto, align: 1, importance: activation')],
])('%s: a gradual search split over 4 jobs and merged', (name, makeConfig) => {
  const jobs = ['1/4', '2/4', '3/4', '4/4'];
  let cfg: string;
  let one: Record<string, unknown> & { metrics: { name: string; base: number | null; candidate: number | null; pass: boolean }[] };
  let oneStatus: number;
  const tag = name.split(',')[0];
  const dirOf = (job: string) => path.join(built.tmp, `${tag}-job-${job.replace('/', '-of-')}`);
  const at = (leaf: string) => path.join(built.tmp, `${tag}-${leaf}`);

  beforeAll(async () => {
    cfg = makeConfig();
    const r = await built.cli(['run', '--config', cfg, '--out', at('one'), '--json']);
    oneStatus = r.status;
    one = JSON.parse(r.stdout);
    for (const job of jobs) {
      const j = await built.cli(['run', '--config', cfg, '--job', job, '--out', dirOf(job)]);
      expect([job, j.status, j.stderr.includes('internal error')]).toEqual([job, 0, false]);
    }
  }, 120_000);

  test('the merged report equals the one-machine report: metrics within 1e-6 (latency aside), steps, verdict, exit status, the same pruned model', async () => {
    const r = await built.cli(['merge', ...jobs.map(dirOf), '--config', cfg, '--out', at('merged'), '--json']);
    expect(r.status).toBe(oneStatus);
    // The merge rebuilt the candidates from job 1's recorded statistics, without a pass of its own.
    expect(r.stderr).not.toMatch(/collecting activation/);
    if (tag !== 'mlp') expect(r.stderr).toMatch(/rebuilt the candidates with \d+ passes over the calibration set replayed from job 1\n/);
    expect(r.stderr).not.toMatch(/evaluating the base model/);
    const merged = JSON.parse(r.stdout) as typeof one;
    for (const key of ['verdict', 'chosen_step', 'target', 'task', 'pruned', 'skipped']) expect([key, merged[key]]).toEqual([key, one[key]]);
    // The same allocation. Measured choices: every job measured the same losses on the whole set,
    // and the merge replayed job 1's. Fixed ones: no job measures their loss.
    const allocation = (rep: typeof one) => rep.allocation as { strategy: string; compensate: string; align: number; tried: { strategy: string; compensate: string; loss: number | null; params: number }[]; measure: string };
    expect([allocation(merged).strategy, allocation(merged).compensate, allocation(merged).align]).toEqual([allocation(one).strategy, allocation(one).compensate, allocation(one).align]);
    // Fixed ones: nothing is measured to choose, on one machine as in jobs.
    expect(allocation(merged).tried).toEqual(allocation(one).tried);
    expect(allocation(merged).measure).toBe(allocation(one).measure);
    if (tag === 'measured') expect(allocation(one).tried.length).toBe(2);
    const steps = (rep: typeof one) => (rep.steps as { ratio: number; pass: boolean; quality_pass: boolean }[]).map((s) => [s.ratio, s.pass, s.quality_pass]);
    expect(steps(merged)).toEqual(steps(one));
    expect((one.steps as unknown[]).length).toBeGreaterThan(1);
    for (const m of one.metrics) {
      if (m.name.startsWith('latency') || m.name === 'memory') continue;
      const got = merged.metrics.find((x) => x.name === m.name)!;
      for (const side of ['base', 'candidate'] as const) {
        const [a, b] = [m[side] as number, got[side] as number];
        expect([m.name, side, Math.abs(a - b) <= 1e-6 * Math.max(1, Math.abs(a))]).toEqual([m.name, side, true]);
      }
    }
    expect(fs.readFileSync(path.join(at('merged'), 'pruned.onnx')).equals(fs.readFileSync(path.join(at('one'), 'pruned.onnx')))).toBe(true);
  }, 120_000);

  test('each job evaluated at most ⌈S/4⌉ samples per model, and every job built the same candidates', () => {
    const partials = jobs.map((job) => JSON.parse(fs.readFileSync(path.join(dirOf(job), 'partial.json'), 'utf8')));
    const samples = partials[0].calibration.samples as number;
    for (const p of partials) expect(p.evaluated.samples).toBeLessThanOrEqual(Math.ceil(samples / 4));
    expect(partials.reduce((n, p) => n + p.evaluated.samples, 0)).toBe(samples);
    // The same bytes: each step's candidate has one sha256 in every job.
    const builds = partials.map((p) => JSON.stringify(p.steps.map((s: { sha256: string }) => s.sha256)));
    expect(new Set(builds).size).toBe(1);
    expect(partials[0].steps.every((s: { sha256: string }) => /^[0-9a-f]{64}$/.test(s.sha256))).toBe(true);
  });

  // A merge without job 1's record, where the record holds statistics and losses.
  if (tag === 'measured') test("without job 1's record of passes the merge runs them itself, to the same model; a record that is not job 1's is refused", async () => {
    const bare = at('job-1-bare');
    fs.cpSync(dirOf('1/4'), bare, { recursive: true });
    fs.rmSync(path.join(bare, 'passes.bin'));
    const r = await built.cli(['merge', bare, ...jobs.slice(1).map(dirOf), '--config', cfg, '--out', at('merged-bare')]);
    expect(r.status).toBe(oneStatus);
    expect(r.stderr).toMatch(/no passes\.bin beside job 1's partial\.json: the merge runs the pruning's passes over the calibration set again\n[^]*collecting activation statistics/);
    expect(fs.readFileSync(path.join(at('merged-bare'), 'pruned.onnx')).equals(fs.readFileSync(path.join(at('one'), 'pruned.onnx')))).toBe(true);
    const altered = at('job-1-altered');
    fs.cpSync(dirOf('1/4'), altered, { recursive: true });
    const record = fs.readFileSync(path.join(altered, 'passes.bin'));
    record[record.length - 1] ^= 1;
    fs.writeFileSync(path.join(altered, 'passes.bin'), record);
    const refused = await built.cli(['merge', altered, ...jobs.slice(1).map(dirOf), '--config', cfg, '--out', at('merged-altered')]);
    expect([refused.status, refused.stderr]).toEqual([2, expect.stringMatching(/^prune-gate: .*job-1-altered\/passes\.bin: not the record job 1's partial\.json names \(its sha256 differs\); give the folder job 1 wrote, unchanged\n$/)]);
    expect(fs.existsSync(path.join(at('merged-altered'), 'report.json'))).toBe(false);
  }, 120_000);

  // Refusals do not depend on the search: checked once, on the quickest.
  if (tag === 'mlp') test('a merge refuses a missing job, a job given twice, and a partial result of another plan', async () => {
    const three = await built.cli(['merge', ...jobs.slice(0, 3).map(dirOf), '--config', cfg, '--out', at('m1')]);
    expect([three.status, three.stderr]).toEqual([2, 'prune-gate: job 4/4 is missing: no partial.json for it among the 3 folders given; wait for every job, or rerun job 4\n']);
    const twice = await built.cli(['merge', ...jobs.map(dirOf), dirOf('2/4'), '--config', cfg, '--out', at('m2')]);
    expect(twice.status).toBe(2);
    expect(twice.stderr).toMatch(/^prune-gate: job 2\/4 appears twice: .*job-2-of-4\/partial\.json and .*job-2-of-4\/partial\.json; give each job's folder once\n$/);
    // Another plan: the same data gated with another bound.
    const other = `${cfg.slice(0, -4)}-other.yml`;
    fs.writeFileSync(other, `${fs.readFileSync(cfg, 'utf8')}\n  cosine: { min: 0.1 }\n`);
    const stranger = at('stranger');
    expect((await built.cli(['run', '--config', other, '--job', '3/4', '--out', stranger])).status).toBe(0);
    const mixed = await built.cli(['merge', dirOf('1/4'), dirOf('2/4'), stranger, dirOf('4/4'), '--config', cfg, '--out', at('m3')]);
    expect(mixed.status).toBe(2);
    expect(mixed.stderr).toMatch(/^prune-gate: .*-stranger\/partial\.json: from another plan \([0-9a-f]{16}, not [0-9a-f]{16}\): its config, model, calibration set or job count differ from this merge's\n$/);
    expect(fs.existsSync(path.join(at('m3'), 'report.json'))).toBe(false);
  }, 120_000);
});

/** `cfg` run on one machine (TAG-one) and split over 2 jobs (TAG-1, TAG-2) then merged (TAG-merged); every job exits 0. */
async function oneAndMerged(cfg: string, tag: string): Promise<{ one: CliResult; merged: CliResult }> {
  const one = await built.cli(['run', '--config', cfg, '--out', path.join(built.tmp, `${tag}-one`), '--json']);
  const dirs = ['1/2', '2/2'].map((job) => path.join(built.tmp, `${tag}-${job[0]}`));
  for (const [i, job] of ['1/2', '2/2'].entries()) expect([job, (await built.cli(['run', '--config', cfg, '--job', job, '--out', dirs[i]])).status]).toEqual([job, 0]);
  const merged = await built.cli(['merge', ...dirs, '--config', cfg, '--out', path.join(built.tmp, `${tag}-merged`), '--json']);
  return { one, merged };
}

test('latency and memory bounds split too: the merge times every rebuilt step against the base on its machine, and measures memory for the chosen one', async () => {
  // One bound no model can meet (a 9x speedup) and two every
  // step meets, whatever the timing's interval: both machines judge every step the same, so the
  // same steps, verdict and exit status, with latency and memory measured. (A factor of 10 or
  // more is refused as a percentage without its sign.)
  const cfg = config('timed', ['  latency-p50: { min-speedup: 9 }', '  latency-p95: { max-ratio: 9 }', '  memory: { max: 1 GiB }', 'latency: { time: 1s }'].join('\n'));
  expect((await built.cli(['plan', '--config', cfg, '--jobs', '2'])).status).toBe(0);
  const { one, merged } = await oneAndMerged(cfg, 'timed');
  expect([one.status, merged.status]).toEqual([1, 1]);
  type Metric = { name: string; base: number | null; candidate: number | null; pass: boolean };
  type Rep = { verdict: string; chosen_step: number; metrics: Metric[]; steps: { ratio: number; pass: boolean; quality_pass: boolean }[] };
  const [a, b] = [JSON.parse(one.stdout) as Rep, JSON.parse(merged.stdout) as Rep];
  expect([b.verdict, b.chosen_step, b.steps.map((s) => [s.ratio, s.pass, s.quality_pass])]).toEqual([a.verdict, a.chosen_step, a.steps.map((s) => [s.ratio, s.pass, s.quality_pass])]);
  expect(b.steps.length).toBe(3);
  // Memory is the MLP's own, net of the process without a model: a few KiB of weights, which may
  // measure as 0.
  const measured = (name: string, v: number | null) => v !== null && (name === 'memory' ? v >= 0 : v > 0);
  for (const name of ['latency-p50', 'latency-p95', 'memory']) {
    const m = b.metrics.find((x) => x.name === name)!;
    expect([name, measured(name, m.base), measured(name, m.candidate), m.pass]).toEqual([name, true, true, name !== 'latency-p50']);
  }
  // Every step was judged on latency in the merge, as one machine judges it.
  expect(merged.stderr.match(/step \d of 3: fails [^\n]*latency-p50 [\d.]+ ms, bound/g)?.length).toBe(3);
}, 120_000);

test('a quantized candidate splits too: the merge replays the quantizer\'s calibration passes from job 1 and writes the same model', async () => {
  const cfg = config('quantized', 'quantize: int8');
  const { one, merged } = await oneAndMerged(cfg, 'quantized');
  expect(merged.status).toBe(one.status);
  expect((JSON.parse(merged.stdout) as { quantization: unknown }).quantization).toEqual((JSON.parse(one.stdout) as { quantization: unknown }).quantization);
  expect(merged.stderr).toMatch(/rebuilt the candidates with [1-9]\d* passes over the calibration set replayed from job 1\n/);
  expect(fs.readFileSync(path.join(built.tmp, 'quantized-merged', 'pruned.onnx')).equals(fs.readFileSync(path.join(built.tmp, 'quantized-one', 'pruned.onnx')))).toBe(true);
}, 120_000);

test('a job that evaluated another candidate than the merge rebuilt is refused, naming the job and the step: candidates are compared by their bytes', async () => {
  // Activation statistics and bias compensation: the candidates' weights follow the data.
  const prune = 'allocation: global, compensate: bias, align: 1, importance: activation';
  const cfg = config('checked', '', path.join(ROOT, 'calibration', 'mlp'), 'mlp.onnx', prune);
  const dirs = ['1/2', '2/2'].map((job) => path.join(built.tmp, `checked-${job[0]}`));
  for (const [i, job] of ['1/2', '2/2'].entries()) expect([job, (await built.cli(['run', '--config', cfg, '--job', job, '--out', dirs[i]])).status]).toEqual([job, 0]);
  const merged = await built.cli(['merge', ...dirs, '--config', cfg, '--out', path.join(built.tmp, 'checked-merged'), '--json']);
  expect(merged.status).not.toBe(2);
  type Step = { sha256: string; candidate: { params: number; bytes: number } };
  const partial = (dir: string) => JSON.parse(fs.readFileSync(path.join(dir, 'partial.json'), 'utf8')) as { plan: string; steps: Step[] };
  // Each job names every step's candidate by the sha256 of its written bytes: the merge wrote the chosen one.
  const chosen = (JSON.parse(merged.stdout) as { chosen_step: number }).chosen_step;
  const written = crypto.createHash('sha256').update(fs.readFileSync(path.join(built.tmp, 'checked-merged', 'pruned.onnx'))).digest('hex');
  for (const dir of dirs) expect(partial(dir).steps[chosen].sha256).toBe(written);
  // The bundled CLI stamps the package's version.
  const version = (JSON.parse(fs.readFileSync(path.join(ROOT, 'package.json'), 'utf8')) as { version: string }).version;
  const stamped = OnnxModel.read(path.join(built.tmp, 'checked-merged', 'pruned.onnx')).proto;
  expect([stamped.producerName, stamped.producerVersion]).toEqual(['prune-gate', version]);

  // Job 2 again, on a runner whose arithmetic differs (simulated by a perturbed calibration file:
  // its last sample's features scaled by 1.5) under the same plan: its first candidate has the
  // same parameter count and size as the others', but other weights.
  const copy = path.join(built.tmp, 'checked-calibration');
  fs.cpSync(path.join(ROOT, 'calibration', 'mlp'), copy, { recursive: true });
  const features = fs.readFileSync(path.join(copy, 'features.npy'));
  const last = new DataView(features.buffer, features.byteOffset + features.length - 64 * 4, 64 * 4);
  for (let i = 0; i < 64; i++) last.setFloat32(i * 4, last.getFloat32(i * 4, true) * 1.5, true);
  fs.writeFileSync(path.join(copy, 'features.npy'), features);
  const perturbed = path.join(built.tmp, 'checked-perturbed-2');
  expect((await built.cli(['run', '--config', config('checked-perturbed', '', copy, 'mlp.onnx', prune), '--job', '2/2', '--out', perturbed])).status).toBe(0);
  const forged = { ...partial(perturbed), plan: partial(dirs[1]).plan };
  fs.writeFileSync(path.join(perturbed, 'partial.json'), JSON.stringify(forged));
  const sizes = (p: { steps: Step[] }) => p.steps.map((s) => [s.candidate.params, s.candidate.bytes]);
  expect(sizes(forged)[0]).toEqual(sizes(partial(dirs[1]))[0]);
  expect(forged.steps[0].sha256).not.toBe(partial(dirs[1]).steps[0].sha256);
  const refused = await built.cli(['merge', dirs[0], perturbed, '--config', cfg, '--out', path.join(built.tmp, 'checked-refused')]);
  // After the progress lines of the step it refused, one line, no stack trace.
  expect([refused.status, refused.stdout]).toEqual([2, '']);
  expect(refused.stderr).toMatch(
    /\nprune-gate: [^\n]*checked-perturbed-2\/partial\.json: job 2\/2 evaluated another step 1 candidate \(sha256 [0-9a-f]{16}\) than the merge rebuilt and job 1\/2 built \([0-9a-f]{16}\): its runner built another model \(another CPU under the same runner label\?\), so its sums are not of this one; rerun it on the runner type of job 1\/2\n$/,
  );
  expect(fs.existsSync(path.join(built.tmp, 'checked-refused', 'report.json'))).toBe(false);

  // Both jobs on that other arithmetic, and no record of job 1's passes: the merge runs them on
  // its own machine and rebuilds a candidate no job built; it names itself.
  const perturbed1 = path.join(built.tmp, 'checked-perturbed-1');
  expect((await built.cli(['run', '--config', config('checked-perturbed', '', copy, 'mlp.onnx', prune), '--job', '1/2', '--out', perturbed1])).status).toBe(0);
  fs.writeFileSync(path.join(perturbed1, 'partial.json'), JSON.stringify({ ...partial(perturbed1), plan: forged.plan }));
  fs.rmSync(path.join(perturbed1, 'passes.bin'));
  const alone = await built.cli(['merge', perturbed1, perturbed, '--config', cfg, '--out', path.join(built.tmp, 'checked-alone')]);
  expect([alone.status, alone.stdout]).toEqual([2, '']);
  expect(alone.stderr).toMatch(
    /\nprune-gate: step 1: the merge rebuilt a candidate \(sha256 [0-9a-f]{16}\) that no job built \(job 1\/2: [0-9a-f]{16}\): this machine builds other models than the jobs' runners \(another onnxruntime or CPU\?\); merge on the jobs' runner type\n$/,
  );
}, 120_000);
