import { PROBE_EVERY } from '../prune/allocate';
import type { SearchEffort } from '../prune/types';

/**
 * The search's budget (docs/pruning.md, "Cost"): the time the whole search may take. Every step
 * but the first is planned from what the steps before it cost: when the steps left would not fit
 * in what remains at full effort, the passes that matter least are left out, in this order, and
 * the report says which and where:
 * 1. the confirmation of a second candidate (the one planned is kept without a race),
 * 2. the sensitivity probe (each group's sensitivity from the last step that probed it),
 * 3. half of the calibration set, in the statistics pass.
 * What cannot be left out (the statistics, the step's own evaluation) runs even past the budget;
 * the report then says by how much it was exceeded.
 */

/** What one step cost, by part (seconds). */
export interface StepCost {
  total: number;
  /** The confirmation of the candidate not kept (0 when none ran). */
  alternative: number;
  /** The sensitivity probe (0 when none ran). */
  probe: number;
  /** The statistics pass, and the share of the calibration set it read. */
  statistics: number;
  share: number;
  /** Work done once per search (each consumer's damping, chosen the first time it is seen), which later steps do not repeat. */
  once: number;
}

const LEVELS: { effort: SearchEffort; leaves: string }[] = [
  { effort: { alternative: true, probe: true, share: 1 }, leaves: '' },
  { effort: { alternative: false, probe: true, share: 1 }, leaves: 'the confirmation of a second candidate' },
  { effort: { alternative: false, probe: false, share: 1 }, leaves: "the sensitivity probe (each group's last measured sensitivity reused)" },
  { effort: { alternative: false, probe: false, share: 0.5 }, leaves: 'half of the calibration set in the statistics pass' },
];

export class SearchBudget {
  private readonly start: number;
  private readonly costs: StepCost[] = [];
  /** What was left out at which steps: leaves -> step numbers. */
  private readonly omitted = new Map<string, number[]>();
  /** The step effortFor planned last, its level, and whether a probe was due there, until stepDone. */
  private planned: { index: number; level: number; probeDue: boolean } | undefined;

  constructor(
    readonly seconds: number,
    private readonly steps: number,
    private readonly now: () => number = Date.now,
  ) {
    this.start = now();
  }

  elapsed(): number {
    return (this.now() - this.start) / 1000;
  }

  /**
   * The effort of step `index` (1-based): full, unless the steps left would not fit at it. The
   * engine probes only where a probe is due (`probeDue`, as the engine counts it: prune's
   * probeDue), then every PROBE_EVERY steps, so the estimate counts the probes due.
   */
  effortFor(index: number, probeDue = true): SearchEffort {
    const last = this.costs[this.costs.length - 1];
    let chosen = 0;
    if (last) {
      const left = this.seconds - this.elapsed();
      const steps = this.steps - index + 1;
      // The probes the steps left run at full effort: this one if due, then every PROBE_EVERY.
      const probes = Math.ceil((steps - (probeDue ? 0 : 1)) / PROBE_EVERY);
      chosen = LEVELS.length - 1;
      for (let level = 0; level < LEVELS.length; level++) {
        if (steps * this.estimate(last, level) + (LEVELS[level].effort.probe ? probes * this.lastOf('probe') : 0) <= left) {
          chosen = level;
          break;
        }
      }
    }
    this.planned = { index, level: chosen, probeDue };
    return LEVELS[chosen].effort;
  }

  /**
   * What step `effortFor` planned cost. What its effort left out is recorded if the step would
   * have run it: a probe when none ran, half of a statistics pass when one ran (statistics the
   * last step's confirmation collected on the whole set leave nothing out).
   */
  stepDone(cost: StepCost): void {
    this.costs.push(cost);
    const planned = this.planned;
    this.planned = undefined;
    if (!planned) return;
    const left = (level: number) => {
      const at = this.omitted.get(LEVELS[level].leaves) ?? [];
      this.omitted.set(LEVELS[level].leaves, [...at, planned.index]);
    };
    if (planned.level >= 1) left(1);
    if (planned.level >= 2 && planned.probeDue && cost.probe === 0) left(2);
    if (planned.level >= 3 && cost.statistics > 0 && cost.share < 1) left(3);
  }

  /** Seconds the steps after `done` steps should take, at the effort the last one ran at. */
  remaining(done: number): number {
    const last = this.costs[this.costs.length - 1];
    return last ? Math.max(0, (this.steps - done) * last.total) : NaN;
  }

  /** For report.json: the budget, what was spent, and what was left out to keep to it. */
  summary(): { seconds: number; spent: number; left_out: string[] } {
    const steps = (list: number[]) => (list.length === 1 ? `step ${list[0]}` : `steps ${list.join(', ')}`);
    return {
      seconds: this.seconds,
      spent: Math.round(this.elapsed() * 10) / 10,
      left_out: [...this.omitted].map(([what, at]) => `${what} at ${steps(at)}`),
    };
  }

  /** A part's last measured cost (a part left out last time costs what it cost before). */
  private lastOf(part: 'alternative' | 'probe'): number {
    return [...this.costs].reverse().find((c) => c[part] > 0)?.[part] ?? 0;
  }

  /**
   * One step at `level`, from the last one's cost, without its probe (effortFor counts the
   * probes due): what it always runs, plus the alternative's confirmation if the level keeps it.
   */
  private estimate(cost: StepCost, level: number): number {
    const { effort } = LEVELS[level];
    const core = cost.total - cost.alternative - cost.probe - cost.statistics - cost.once;
    const statistics = (cost.statistics / Math.max(cost.share, 1e-9)) * effort.share;
    return Math.max(0, core + statistics + (effort.alternative ? this.lastOf('alternative') : 0));
  }
}
