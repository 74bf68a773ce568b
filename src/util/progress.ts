/**
 * Progress lines (stderr in the CLI, the log in the action): every line carries the time since
 * the run started, and a long pass over the calibration set says how far it is and how long it
 * has left.
 */

export type Log = (line: string) => void;

/** Seconds as a clock: 0:07, 12:05, 1:02:03. */
export function clock(seconds: number): string {
  const s = Math.max(0, Math.floor(seconds));
  const [h, m, r] = [Math.floor(s / 3600), Math.floor((s % 3600) / 60), s % 60];
  const two = (n: number) => String(n).padStart(2, '0');
  return h > 0 ? `${h}:${two(m)}:${two(r)}` : `${m}:${two(r)}`;
}

/** `log` with each line prefixed by the time elapsed since this call: "[1:05] step 2 of 5: evaluating". */
export function withElapsed(log: Log, now: () => number = Date.now): Log {
  const start = now();
  return (line) => log(`[${clock((now() - start) / 1000)}] ${line}`);
}

/** How often a pass reports, at most (its last batch is always reported when it reported before). */
const EVERY_MS = 10_000;

/**
 * One pass over `total` batches: after each batch, a line "WHAT: 12/40 batches, about 0:35
 * left" at most every `everyMs` (the time left extrapolated from the batches so far). A pass
 * that ends before the first interval says nothing: short runs stay quiet.
 */
export class PassProgress {
  private done = 0;
  private readonly start: number;
  private last: number;
  private reported = false;

  constructor(
    private readonly what: string,
    private total: number,
    private readonly log: Log | undefined,
    private readonly options: { everyMs?: number; now?: () => number } = {},
  ) {
    this.start = this.now();
    this.last = this.start;
  }

  private now(): number {
    return (this.options.now ?? Date.now)();
  }

  /** One more batch done (`total`: the number of batches, when only the pass itself knows it). */
  tick(total = this.total): void {
    this.total = total;
    this.done++;
    if (!this.log) return;
    const t = this.now();
    const finished = this.done >= this.total;
    if (finished ? !this.reported : t - this.last < (this.options.everyMs ?? EVERY_MS)) return;
    this.last = t;
    this.reported = true;
    const left = finished ? 'done' : `about ${clock((((t - this.start) / this.done) * (this.total - this.done)) / 1000)} left`;
    this.log(`${this.what}: ${this.done}/${this.total} batches, ${left}`);
  }
}
