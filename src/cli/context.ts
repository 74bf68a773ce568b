/**
 * What a command needs from the outside world. Commands write through it instead of `process`
 * so tests can run the CLI in-process, and they report their exit status by setting `exitCode`
 * (0 passed, 1 gate failed); bad input is thrown as a UserError and becomes 2 in main.ts.
 */
export interface CliContext {
  stdout(text: string): void;
  stderr(text: string): void;
  exitCode: number;
}
