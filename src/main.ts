import * as core from '@actions/core';
import { isUserError } from './errors';

/**
 * The GitHub Action. It will read its inputs (action.yml), run the same pipeline as
 * `prune-gate run`, publish the report and set its outputs. That pipeline does not exist yet,
 * so for now the action fails the step and says so rather than pretending to gate anything.
 */
export async function run(): Promise<void> {
  try {
    const config = core.getInput('config') || 'prune-gate.yml';
    core.setFailed(`prune-gate run is not implemented yet (config: ${config})`);
  } catch (e) {
    // A UserError is the user's to fix: its one-line message is enough. Anything else is a bug.
    if (isUserError(e)) core.setFailed(e.message);
    else core.setFailed(`internal error (a bug in prune-gate, please report it): ${e instanceof Error ? (e.stack ?? e.message) : String(e)}`);
  }
}
