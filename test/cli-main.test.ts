// The CLI's exit statuses, in-process: 2 with one line for a UserError, 3 with the stack for a bug.
import * as path from 'path';
import { main } from '../src/cli/main';
import { OnnxModel } from '../src/onnx/model';
import { FIXTURES_DIR } from './helpers/fixtures';

function capture() {
  const out = { stdout: '', stderr: '' };
  return { out, io: { stdout: (s: string) => void (out.stdout += s), stderr: (s: string) => void (out.stderr += s) } };
}

afterEach(() => jest.restoreAllMocks());

test('success: exit 0, the description on stdout', async () => {
  const { out, io } = capture();
  expect(await main(['inspect', '--model', path.join(FIXTURES_DIR, 'mlp.onnx')], io)).toBe(0);
  expect(out.stdout).toMatch(/^Parameters\s+2,778 /m);
  expect(out.stderr).toBe('');
});

test('a UserError: exit 2, one line, no stack', async () => {
  const { out, io } = capture();
  expect(await main(['inspect', '--model', path.join(FIXTURES_DIR, 'no-such-model.onnx')], io)).toBe(2);
  expect(out.stderr).toMatch(/^prune-gate: model file not found: .*no-such-model\.onnx\n$/);
});

test('any other error is a bug: exit 3, "internal error" and the stack', async () => {
  jest.spyOn(OnnxModel, 'read').mockImplementation(() => {
    throw new TypeError("Cannot read properties of undefined (reading 'dims')");
  });
  const { out, io } = capture();
  expect(await main(['inspect', '--model', 'x.onnx'], io)).toBe(3);
  expect(out.stderr).toMatch(/^prune-gate: internal error \(a bug in prune-gate, please report it\):\nTypeError: Cannot read/);
  expect(out.stderr).toMatch(/\n\s+at .+/); // the stack is kept for the bug report
});
