import { UserError } from '../errors';

/**
 * A matrix job's name, as the plan's matrix gives it ("K/N"), and the file it writes. Kept apart
 * from matrix.ts so that reading the action's inputs loads nothing of the runtime.
 */

/** The most jobs a plan splits into (GitHub's matrix allows 256 jobs). */
export const MAX_JOBS = 256;

export const PARTIAL_JSON = 'partial.json';
/** Job 1's record of the engine's passes over the calibration set, which the merge replays. */
export const PASSES_FILE = 'passes.bin';

export interface Job {
  index: number;
  count: number;
}

/** "K/N" as a job, or a one-line error naming `where`. */
export function parseJob(text: string, where: string): Job {
  const m = /^\s*(\d+)\s*\/\s*(\d+)\s*$/.exec(text);
  const [index, count] = m ? [Number(m[1]), Number(m[2])] : [NaN, NaN];
  if (!(count >= 1 && count <= MAX_JOBS && index >= 1 && index <= count)) {
    throw new UserError(`${where}: expected K/N with 1 <= K <= N <= ${MAX_JOBS} (a job of the plan's matrix, e.g. 2/4), found '${text}'`);
  }
  return { index, count };
}

