/**
 * A mistake in what the user gave us (a file, a flag, a config key). The CLI prints the message
 * as one line and exits 2; the action fails the step with it. Anything else is a bug in prune-gate
 * and keeps its stack trace.
 */
export class UserError extends Error {
  constructor(message: string) {
    super(message);
    this.name = 'UserError';
  }
}

export function isUserError(e: unknown): e is UserError {
  return e instanceof UserError;
}
