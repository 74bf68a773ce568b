// The ONNX checker on the models the tests write (tools/onnx-checker.ts: onnx.checker.check_model
// with full_check from Debian's python3-onnx; under CI=true its absence fails the run).
import { checkModel, checkerAvailable } from '../../tools/onnx-checker';

let available: boolean | undefined;

/**
 * `file` passes the ONNX checker. With `input` (the model it was made from), only when that input
 * passes it too: a model the checker refuses, or whose IR version or opset is beyond Debian's
 * onnx 1.12 ('unsupported'), cannot be held to it.
 */
export function expectCheckerAccepts(file: string, input?: string): void {
  available ??= checkerAvailable();
  if (!available) return;
  if (input !== undefined && checkModel(input).status !== 'ok') return;
  expect([file, checkModel(file)]).toEqual([file, { status: 'ok' }]);
}
