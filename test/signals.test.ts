// A run stopped by a signal (Ctrl-C, a cancelled CI job) removes its temporary files, as a run
// that ends does: here the int8 evaluation form's data file, written beside the user's model.
import { spawn } from 'child_process';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { OnnxModel } from '../src/onnx/model';
import { writeModel } from '../src/onnx/write';
import { bundleInto } from './helpers/run-cli';

const ROOT = path.resolve(__dirname, '..');

let bundle = '';
let tmp = '';
beforeAll(() => {
  bundle = bundleInto('signals');
  tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'prune-gate-signals-'));
});
afterAll(() => {
  fs.rmSync(bundle, { recursive: true, force: true });
  fs.rmSync(tmp, { recursive: true, force: true });
});

test.each([
  ['SIGINT', 130],
  ['SIGTERM', 143],
] as const)('%s mid-run: exit %i, and the data file made beside the model is gone', async (signal, code) => {
  const dir = fs.mkdtempSync(path.join(tmp, 'model-'));
  // External data: the form's codes then go to a file in the model's folder.
  writeModel(OnnxModel.read(path.join(ROOT, 'test/fixtures/llama.onnx')), path.join(dir, 'model.onnx'), { externalData: 'always' });
  const config = path.join(dir, 'prune-gate.yml');
  // A device too small for the model as written: the run makes its int8 form in a file beside it.
  fs.writeFileSync(config, `model: model.onnx\ncalibration: ${path.join(ROOT, 'calibration/llama')}\nprune: { target: 0.3, steps: 3 }\ndevice: { memory: 400KB }\n`);
  const child = spawn(process.execPath, [path.join(bundle, 'cli.js'), 'run', '--config', config, '--out', path.join(tmp, `out-${signal}`)], { cwd: dir, stdio: 'ignore' });
  const exited = new Promise<number | null>((resolve) => child.on('exit', (status) => resolve(status)));
  const formFile = () => fs.readdirSync(dir).find((f) => f.startsWith('.prune-gate-int8-'));
  for (let waited = 0; !formFile() && waited < 60_000; waited += 10) await new Promise((r) => setTimeout(r, 10));
  expect(formFile()).toBeDefined();
  child.kill(signal);
  expect(await exited).toBe(code);
  expect(fs.readdirSync(dir).sort()).toEqual(['model.onnx', 'model.onnx.data', 'prune-gate.yml']);
}, 120_000);
