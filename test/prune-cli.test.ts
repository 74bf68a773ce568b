// `prune-gate prune`: prints what it removed, writes the same as JSON with --report, and refuses
// bad flags with one line and exit status 2. What it writes passes the ONNX checker and, pruned
// on calibration data, stays close to the base on that data.
import * as fs from 'fs';
import * as path from 'path';
import { calibrationFeeds, loadCalibration } from '../src/eval/calibration';
import { OnnxModel } from '../src/onnx/model';
import { createSession } from '../src/onnx/runtime';
import { countParams } from '../src/graph/cost';
import { expectCheckerAccepts } from './helpers/checker';
import { FIXTURES_DIR } from './helpers/fixtures';
import { ROOT, useBuiltCli } from './helpers/run-cli';

const built = useBuiltCli('prune');
const cli = built.cli;

const gpt2 = path.join(FIXTURES_DIR, 'gpt2.onnx');

/**
 * Perplexity of a language model on a calibration set: exp of the mean negative log-likelihood
 * of token t+1 given tokens 0..t, written here rather than taken from src/eval so that it checks
 * what the evaluator would say.
 */
async function perplexity(file: string, data: string): Promise<number> {
  const model = OnnxModel.read(file);
  const session = await createSession(model);
  let [nll, count] = [0, 0];
  try {
    for (const feeds of calibrationFeeds(loadCalibration(data, model))()) {
      const ids = feeds.input_ids.data as BigInt64Array;
      const logits = (await session.run(feeds)).logits;
      const [rows, length, vocab] = logits.dims;
      const values = logits.data as Float32Array;
      for (let r = 0; r < rows; r++) {
        for (let t = 0; t < length - 1; t++) {
          const row = values.subarray((r * length + t) * vocab, (r * length + t + 1) * vocab);
          const max = row.reduce((a, b) => Math.max(a, b), -Infinity);
          const logSum = Math.log(row.reduce((a, b) => a + Math.exp(b - max), 0)) + max;
          nll += logSum - row[Number(ids[r * length + t + 1])];
          count++;
        }
      }
    }
  } finally {
    await session.release();
  }
  return Math.exp(nll / count);
}

test('prints what was removed where and writes the pruned model and the JSON report', async () => {
  const out = path.join(built.tmp, 'gpt2-pruned.onnx');
  const report = path.join(built.tmp, 'removed.json');
  const r = await cli(['prune', '--model', gpt2, '--out', out, '--target', '0.3', '--report', report]);
  expect(r.status).toBe(0);
  expect(r.stdout).toMatch(/^Removed [\d,]+ of 136,960 parameters \(30\.\d %\)/);
  expect(r.stdout).toMatch(/heads\s+4 -> \d/);
  expect(r.stdout).toMatch(/ffn\s+256 -> \d+/);
  expect(r.stdout).toContain('Left alone (widths kept whole; the weights listed may have lost other axes above):');
  expect(r.stderr).toContain('analyzing the graph'); // progress on stderr
  expectCheckerAccepts(out);
  const json = JSON.parse(fs.readFileSync(report, 'utf8'));
  expect(json.params.after).toBe(countParams(OnnxModel.read(out)));
  expect(json.pruned.map((p: { kind: string }) => p.kind).sort()).toEqual(['ffn', 'ffn', 'heads', 'heads']);
  // Without calibration data nothing is measured: every layer loses the same share, and it says so.
  expect(r.stdout).toContain('Allocation by the same share in every layer, not compensated (nothing measured: no calibration data to measure damage on)');
  expect(json.allocation).toMatchObject({ strategy: 'uniform', compensate: 'none', tried: [] });
});

test('with calibration data: activation importance, bias compensation, steps; the model stays close to the base', async () => {
  const out = path.join(built.tmp, 'llama-pruned.onnx');
  const base = path.join(FIXTURES_DIR, 'llama.onnx');
  const data = path.join(ROOT, 'calibration', 'llama');
  const r = await cli(['prune', '--model', base, '--out', out, '--target', '0.2', '--calibration', data, '--steps', '2']);
  expect(r.status).toBe(0);
  expectCheckerAccepts(out);
  // Measured: 6.64 -> 7.71 (1.16x) on this set; the same 20 % taken uniformly by magnitude,
  // without compensation, gives 21.9 (3.3x). A compensation applied to the wrong rows, or not at
  // all, lands far above the bound.
  const [before, after] = [await perplexity(base, data), await perplexity(out, data)];
  expect(after / before).toBeLessThan(1.5);
  expect(r.stderr).toContain('collecting activation statistics');
  expect(r.stderr).toContain('pruning step 2 of 2');
  // The allocation is planned from damage curves put in one unit by one probe pass (step 1; step
  // 2 reuses its sensitivities), and the plan and its runner-up are run when they are estimated
  // close: the line says which was kept, and by what loss when it was run.
  expect(r.stderr).toMatch(/damage curves of \d+ groups from the statistics \(closed form\)/);
  expect(r.stderr).toMatch(/sensitivity of \d+ groups probed in one pass/);
  expect(r.stderr).toMatch(/sensitivity: each group as the last probe measured it \(a probe runs every 2 steps\)/);
  expect(r.stdout).toMatch(/Allocation by (a global ranking|measured damage), (bias-compensated|reconstructed)(, widths multiples of (8|16))?(: KL divergence from the base [\d.e-]+ on (the calibration set|the first \d+ of \d+ calibration batches \(the race\))| \(KL divergence from the base\)); \d+ alternatives? tried/);
  const removed = 1 - countParams(OnnxModel.read(out)) / countParams(OnnxModel.read(path.join(FIXTURES_DIR, 'llama.onnx')));
  expect(Math.abs(removed - 0.2)).toBeLessThan(0.02);
});

test.each([
  [['--target', '1.5'], /--target: expected a fraction of parameters between 0 and 1 \(e\.g\. 0\.3 or 30%\), found '1\.5'/],
  [['--target', 'half'], /--target: expected a fraction of parameters between 0 and 1 \(e\.g\. 0\.3 or 30%\), found 'half'/],
  [['--target', 'auto'], /--target: expected a fraction of parameters between 0 and 1 \(e\.g\. 0\.3 or 30%\), found 'auto'/],
  [['--structures', 'ffn,layers'], /--structures takes a list of ffn, heads, channels/],
  [['--importance', 'activation'], /needs --calibration/],
  [['--compensate', 'bias'], /needs --calibration/],
  [['--external-data', 'sometimes'], /--external-data: expected auto, always, never, found 'sometimes'/],
])('bad flags %p: one line, exit 2', async (flags, message) => {
  const r = await cli(['prune', '--model', gpt2, '--out', path.join(built.tmp, 'x.onnx'), ...(flags as string[])]);
  expect(r.status).toBe(2);
  expect(r.stderr).toMatch(/^prune-gate: [^\n]+\n$/);
  expect(r.stderr).toMatch(message as RegExp);
  expect(fs.existsSync(path.join(built.tmp, 'x.onnx'))).toBe(false);
});

test('a target out of reach says so, with the reason: heads alone cannot give 60 % of a GPT-2', async () => {
  const report = path.join(built.tmp, 'short.json');
  const r = await cli(['prune', '--model', gpt2, '--out', path.join(built.tmp, 'short.onnx'), '--target', '0.6', '--structures', 'heads', '--report', report]);
  expect(r.status).toBe(0);
  // Every attention layer keeps one head; the rest of the model is not heads.
  expect(r.stdout).toMatch(/^Removed 24,864 of 136,960 parameters \(18\.2 %\); wrote .*\nShort of the target: nothing more to remove: the prunable groups can lose 24,864 parameters \(one unit each kept\), 82,176 were asked/);
  expect(JSON.parse(fs.readFileSync(report, 'utf8')).short).toMatch(/^nothing more to remove/);
  // A target below one head removes nothing: exit 2, one line, no file.
  const tiny = path.join(built.tmp, 'tiny.onnx');
  const none = await cli(['prune', '--model', gpt2, '--out', tiny, '--target', '0.001', '--structures', 'heads', '--allocation', 'global']);
  expect(none.status).toBe(2);
  expect(none.stderr).toMatch(/\nprune-gate: nothing was removed from .*gpt2\.onnx: granularity: 0 parameters removed of 137 asked; the next unit would overshoot the target; nothing was written\n$/);
  expect(fs.existsSync(tiny)).toBe(false);
});

test('refuses to overwrite the input model', async () => {
  const copy = path.join(built.tmp, 'mlp.onnx');
  fs.copyFileSync(path.join(FIXTURES_DIR, 'mlp.onnx'), copy);
  const before = fs.readFileSync(copy);
  const r = await cli(['prune', '--model', copy, '--out', copy]);
  expect(r.status).toBe(2);
  expect(r.stderr).toMatch(/refusing to overwrite the input model/);
  expect(fs.readFileSync(copy).equals(before)).toBe(true);
});

test("--external-data: the input's layout by default, the bare flag or always puts weights in <out>.data, never brings them inline", async () => {
  const dataFiles = (file: string) => fs.existsSync(`${file}.data`);
  const inline = path.join(built.tmp, 'layout-inline.onnx');
  expect((await cli(['prune', '--model', gpt2, '--out', inline])).status).toBe(0);
  expect(dataFiles(inline)).toBe(false);
  const external = path.join(built.tmp, 'layout-external.onnx');
  expect((await cli(['prune', '--model', gpt2, '--out', external, '--external-data'])).status).toBe(0);
  expect(dataFiles(external)).toBe(true);
  // Pruning that external model again keeps its layout, unless told otherwise.
  const kept = path.join(built.tmp, 'layout-kept.onnx');
  expect((await cli(['prune', '--model', external, '--out', kept, '--target', '0.1'])).status).toBe(0);
  expect(dataFiles(kept)).toBe(true);
  const back = path.join(built.tmp, 'layout-back.onnx');
  expect((await cli(['prune', '--model', external, '--out', back, '--target', '0.1', '--external-data', 'never'])).status).toBe(0);
  expect(dataFiles(back)).toBe(false);
  expect(OnnxModel.read(back).hadExternalData).toBe(false);
});
