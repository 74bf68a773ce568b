import { CommanderError } from 'commander';
import { isUserError } from '../errors';
import { CliContext } from './context';
import { buildProgram } from './program';
import { exitCleanlyOnSignals } from '../util/signals';

/** Exit statuses (docs/contracts.md): 0 passed, 1 gate failed, 2 bad input or usage; 3 is a bug of ours. */
export const EXIT_USAGE = 2;
export const EXIT_INTERNAL = 3;

/**
 * Runs the CLI on `args` (without node and the script) and resolves to the exit status. Never
 * throws: a UserError becomes one line "prune-gate: <message>" and status 2, without a stack;
 * anything else is a bug and is printed with its stack, status 3.
 */
export async function main(args: string[], io: Pick<CliContext, 'stdout' | 'stderr'> = processIO): Promise<number> {
  const ctx: CliContext = { stdout: io.stdout, stderr: io.stderr, exitCode: 0 };
  try {
    await buildProgram(ctx).parseAsync(args, { from: 'user' });
    return ctx.exitCode;
  } catch (e) {
    if (e instanceof CommanderError) {
      // --help and --version end with status 0; usage errors were already printed by commander.
      return e.exitCode === 0 ? 0 : EXIT_USAGE;
    }
    if (isUserError(e)) {
      io.stderr(`prune-gate: ${e.message.replace(/\s*\n\s*/g, ' ')}\n`);
      return EXIT_USAGE;
    }
    const detail = e instanceof Error ? (e.stack ?? e.message) : String(e);
    io.stderr(`prune-gate: internal error (a bug in prune-gate, please report it):\n${detail}\n`);
    return EXIT_INTERNAL;
  }
}

const processIO = {
  stdout: (s: string) => void process.stdout.write(s),
  stderr: (s: string) => void process.stderr.write(s),
};

/** Runs the CLI on the process's arguments and sets its exit status (bin/prune-gate.js calls this). */
export function runCli(): void {
  exitCleanlyOnSignals();
  // Piping into `head` closes stdout early: that is not an error worth a stack trace.
  process.stdout.on('error', (e: NodeJS.ErrnoException) => {
    if (e.code !== 'EPIPE') throw e;
  });
  void main(process.argv.slice(2)).then((code) => {
    process.exitCode = code;
  });
}

// `node dist/cli.js ...` runs the CLI; requiring the module (bin/prune-gate.js, tests) does not.
if (require.main === module) runCli();
