/**
 * Lets a run stopped by a signal clean up: Ctrl-C (SIGINT), a cancelled CI job (the Actions
 * runner sends SIGINT, then SIGTERM) or a closed terminal (SIGHUP). Node's default action for
 * them ends the process without its 'exit' handlers, which remove the run's temporary files: the
 * spill file of pruned weights in the system's temporary folder, and the int8 evaluation form's
 * data file beside the user's model (7.7 GB for a 7B). Ended with the shell's code for the
 * signal, 128 + its number; a second signal of the same kind ends the process at once.
 */
export function exitCleanlyOnSignals(): void {
  for (const [signal, code] of [
    ['SIGINT', 130],
    ['SIGTERM', 143],
    ['SIGHUP', 129],
  ] as const) {
    process.once(signal, () => process.exit(code));
  }
}
