import type { PassRecord } from '../util/passes';
import type { PassEntry } from './types';

/**
 * The passes over the calibration set one step makes, each through the run's PassRecord (so a
 * matrix merge replays them) and each written down with why it ran and what it cost, for
 * report.json's `allocation.passes` and the budget.
 */
export class PassLedger {
  readonly entries: PassEntry[] = [];

  constructor(private readonly record: PassRecord) {}

  /** `what` names the pass for the record (the tensors it reads); `kind`, `why` and `samples` for the report. */
  async pass<T>(kind: PassEntry['what'], why: string, samples: number, what: string, run: () => Promise<T>): Promise<T> {
    const start = Date.now();
    const result = await this.record.pass(what, run);
    this.entries.push({ what: kind, why, samples, seconds: (Date.now() - start) / 1000 });
    return result;
  }
}
