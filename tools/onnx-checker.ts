// onnx.checker.check_model(full_check=True) from Debian's python3-onnx (1.12: IR up to 8, opset
// up to 17), the check most ONNX tooling runs before it accepts a model.
import { spawnSync } from 'child_process';

export type CheckResult = { status: 'ok' } | { status: 'invalid' | 'unsupported'; message: string };

const SCRIPT = `
import sys, onnx
try:
    onnx.checker.check_model(onnx.load(sys.argv[1]), full_check=True)
    print("ok")
except Exception as e:
    print(("unsupported " if "higher than the checker" in str(e) or "opset" in str(e).lower() and "higher" in str(e) else "invalid ") + str(e).replace("\\n", " ")[:400])
`;

/** Whether the checker is there; under CI=true its absence is an error, elsewhere a note. */
export function checkerAvailable(): boolean {
  const r = spawnSync('/usr/bin/python3', ['-c', 'import onnx'], { encoding: 'utf8' });
  if (r.status === 0) return true;
  if (process.env.CI === 'true') throw new Error('CI=true but the ONNX checker is missing: .ci/run installs python3-onnx with apt-get');
  console.warn('note: /usr/bin/python3 with python3-onnx is not installed: the ONNX checker is skipped (apt-get install python3-onnx)');
  return false;
}

export function checkModel(file: string): CheckResult {
  const r = spawnSync('/usr/bin/python3', ['-c', SCRIPT, file], { encoding: 'utf8' });
  const line = (r.stdout ?? '').trim().split('\n').pop() ?? '';
  if (line === 'ok') return { status: 'ok' };
  if (line.startsWith('unsupported ')) return { status: 'unsupported', message: line.slice(12) };
  return { status: 'invalid', message: line.startsWith('invalid ') ? line.slice(8) : `${r.stderr}`.trim() };
}
