// Tests that install packages from the npm registry (the action's runtime install, the CLI run
// with npx from a git tag). The registry is asked three times before it counts as unreachable;
// then those tests fail under CI=true (a CI run must exercise them) and are skipped elsewhere,
// their names saying why.
import { spawnSync } from 'child_process';
import * as os from 'os';
import { ONNXRUNTIME_NODE_VERSION } from '../../src/github/onnxruntime';
import { npmErrorReason } from '../../tools/npm-error';

/**
 * Whether npm can reach its registry (with the user's npm config: registry, proxy), asked up to
 * three times 2 s and 4 s apart (one dropped request is not an outage); if not, why not.
 */
function probeRegistry(): string | undefined {
  let why = '';
  for (const wait of [0, 2000, 4000]) {
    if (wait) Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, wait);
    const r = spawnSync(process.platform === 'win32' ? 'npm.cmd' : 'npm', ['view', `onnxruntime-node@${ONNXRUNTIME_NODE_VERSION}`, 'version', '--prefer-online', '--fetch-retries=0', '--fetch-timeout=8000'], {
      cwd: os.tmpdir(),
      encoding: 'utf8',
      timeout: 20_000,
      shell: process.platform === 'win32',
    });
    if (r.status === 0 && r.stdout.trim() === ONNXRUNTIME_NODE_VERSION) return undefined;
    why = r.error?.message ?? npmErrorReason(r.stderr) ?? `exit ${r.status}, printed ${JSON.stringify(r.stdout.trim())}`;
  }
  return `npm view onnxruntime-node@${ONNXRUNTIME_NODE_VERSION} failed 3 times (last: ${why})`;
}

/**
 * Declares the test files' tests that install from the registry: `installTest` runs one when
 * the registry is reachable, fails it under CI=true when not, and else skips it saying why.
 */
export function registryTests(what: string): (name: string, fn: () => Promise<void>, timeout: number) => void {
  const unreachable = probeRegistry();
  if (unreachable && process.env.CI !== 'true') console.warn(`the npm registry is unreachable, so ${what} skipped: ${unreachable}`);
  return (name, fn, timeout) => {
    if (!unreachable) return test(name, fn, timeout);
    if (process.env.CI === 'true') {
      return test(name, () => {
        throw new Error(`CI=true, and the npm registry is unreachable: ${unreachable}`);
      });
    }
    test.skip(`${name} [skipped: the npm registry is unreachable: ${unreachable}]`, fn);
  };
}
