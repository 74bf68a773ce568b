import { Command } from 'commander';
import { version } from '../../package.json';
import * as evalCommand from './commands/eval';
import * as inspect from './commands/inspect';
import * as merge from './commands/merge';
import * as plan from './commands/plan';
import * as prune from './commands/prune';
import * as run from './commands/run';
import { CLI_COMMAND } from '../util/install';
import { CliContext } from './context';

/**
 * The `prune-gate` command line. Each command lives in its own file under commands/ and exports
 * `register(program, ctx)`; adding one is one line below. Commands must be registered with
 * `program.command(...)` (not addCommand) so they inherit the error handling set up here.
 */
export function buildProgram(ctx: CliContext): Command {
  const program = new Command('prune-gate')
    .description('Structured pruning of ONNX models as a gated pull-request check')
    .version(version, '-V, --version')
    .showSuggestionAfterError()
    .addHelpText('after', `\nIn any repository, without installing: ${CLI_COMMAND} <command>\n`)
    // Throw instead of calling process.exit, so main() decides the exit status (usage errors: 2).
    .exitOverride()
    .configureOutput({
      writeOut: (s) => ctx.stdout(s),
      writeErr: (s) => ctx.stderr(s),
      // One line, in the same form as every other error: "prune-gate: <what is wrong>".
      outputError: (s, write) => write(`prune-gate: ${s.trim().replace(/^error: /, '').replace(/\s*\n\s*/g, ' ')} (see prune-gate --help)\n`),
    });

  run.register(program, ctx);
  evalCommand.register(program, ctx);
  prune.register(program, ctx);
  inspect.register(program, ctx);
  plan.register(program, ctx);
  merge.register(program, ctx);
  return program;
}
