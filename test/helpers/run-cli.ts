// Runs the real CLI as a child process, so tests see its true exit status, stdout and stderr.
// The CLI is bundled from the current sources into a temporary folder under build/ (not dist/,
// which may be stale while developing; test/dist.test.ts checks dist/ separately) with the same
// script as `npm run build`. build/ sits inside the project so `onnxruntime-node` resolves.
import { execFile, spawnSync } from 'child_process';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';

export const ROOT = path.resolve(__dirname, '..', '..');

export interface CliResult {
  status: number;
  stdout: string;
  stderr: string;
}

/** Bundles src/ into a fresh folder under build/ and returns it; remove it with fs.rmSync. */
export function bundleInto(prefix: string): string {
  fs.mkdirSync(path.join(ROOT, 'build'), { recursive: true });
  const dir = fs.mkdtempSync(path.join(ROOT, 'build', `${prefix}-`));
  const r = spawnSync(process.execPath, [path.join(ROOT, 'tools', 'bundle.mjs'), '--outdir', dir], { encoding: 'utf8' });
  if (r.status !== 0) throw new Error(`bundling failed (${r.status}): ${r.stderr}`);
  return dir;
}

export function cliRunner(bundleDir: string): (args: string[], cwd?: string) => Promise<CliResult> {
  const cli = path.join(bundleDir, 'cli.js');
  return (args, cwd = ROOT) =>
    new Promise((resolve) => {
      execFile(process.execPath, [cli, ...args], { cwd, encoding: 'utf8', maxBuffer: 1 << 24 }, (err, stdout, stderr) => {
        const status = err ? ((err as { code?: unknown }).code as number) : 0;
        resolve({ status: typeof status === 'number' ? status : -1, stdout, stderr });
      });
    });
}

/**
 * For a test file that runs the built CLI: bundles it before the tests and gives a scratch
 * folder, both removed afterwards. `tmp` is read inside tests (it exists from beforeAll on).
 */
export function useBuiltCli(name: string): { cli: (args: string[], cwd?: string) => Promise<CliResult>; readonly tmp: string } {
  let bundle = '';
  let tmp = '';
  let run: ReturnType<typeof cliRunner> | undefined;
  beforeAll(() => {
    bundle = bundleInto(`cli-${name}`);
    run = cliRunner(bundle);
    tmp = fs.mkdtempSync(path.join(os.tmpdir(), `prune-gate-${name}-`));
  });
  afterAll(() => {
    fs.rmSync(bundle, { recursive: true, force: true });
    fs.rmSync(tmp, { recursive: true, force: true });
  });
  return {
    cli: (args, cwd) => run!(args, cwd),
    get tmp() {
      return tmp;
    },
  };
}
