// Runs the CLI's `main` in this process (what `prune-gate ARGS` does, without a child process):
// its exit status and what it wrote to stdout and stderr.
import { main } from '../../src/cli/main';
import type { CliResult } from './run-cli';

export async function runMain(args: string[]): Promise<CliResult> {
  let stdout = '';
  let stderr = '';
  const status = await main(args, { stdout: (s) => void (stdout += s), stderr: (s) => void (stderr += s) });
  return { status, stdout, stderr };
}
