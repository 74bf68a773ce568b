import * as v8 from 'v8';
import { UserError } from '../errors';

/**
 * Every pass the engine makes over the calibration set (activation statistics, covariances,
 * normalization sums, the damage measure's losses) goes through one PassRecord. By default each pass runs the model. A
 * recording also keeps what each pass returned, in order; a replay gives those results back
 * without running the model, so another machine rebuilds the same pruned models, byte for byte,
 * from the same sums: the merge of an Actions matrix (docs/contracts.md, "Beyond one runner").
 */
export interface PassRecord {
  /** The result of the pass `what` describes (what it reads): run now, or as recorded. */
  pass<T>(what: string, run: () => Promise<T>): Promise<T>;
}

export const RUN_PASSES: PassRecord = { pass: (_what, run) => run() };

/** One pass as recorded: what it read, and its result serialized (absent when it did not fit). */
interface RecordedPass {
  what: string;
  result?: Buffer;
}

const FORMAT = 'prune-gate passes v1';

/**
 * Runs every pass and keeps its result, serialized exactly (Node's structured-clone format keeps
 * Float64Arrays and Maps bit for bit), until `maxBytes` are kept; a later result that would not
 * fit is left out, and a replay runs that pass again.
 */
export class PassRecording implements PassRecord {
  private readonly passes: RecordedPass[] = [];
  private bytes = 0;

  constructor(private readonly maxBytes: number) {}

  async pass<T>(what: string, run: () => Promise<T>): Promise<T> {
    const result = await run();
    const data = v8.serialize(result);
    if (this.bytes + data.length <= this.maxBytes) {
      this.bytes += data.length;
      this.passes.push({ what, result: data });
    } else {
      this.passes.push({ what });
    }
    return result;
  }

  /** How many passes ran, how many are kept, and the bytes kept. */
  summary(): { passes: number; kept: number; bytes: number } {
    return { passes: this.passes.length, kept: this.passes.filter((p) => p.result).length, bytes: this.bytes };
  }

  serialize(): Buffer {
    return v8.serialize({ format: FORMAT, passes: this.passes });
  }
}

/**
 * Gives back a recording's results in the order they were recorded, each only for the same pass
 * (the same tensors read); a pass recorded without its result runs. `source` names the file in
 * errors.
 */
export class PassReplay implements PassRecord {
  private next = 0;
  private replayedCount = 0;

  private constructor(
    private readonly passes: RecordedPass[],
    private readonly source: string,
  ) {}

  static parse(data: Buffer, source: string): PassReplay {
    let parsed: { format?: unknown; passes?: unknown };
    try {
      parsed = v8.deserialize(data) as typeof parsed;
    } catch (e) {
      throw new UserError(`${source}: not a readable record of calibration passes (${(e as Error).message}); give the folder job 1 wrote, unchanged`);
    }
    if (parsed?.format !== FORMAT || !Array.isArray(parsed.passes)) {
      throw new UserError(`${source}: not a record of calibration passes written by this prune-gate; give the folder job 1 wrote, unchanged`);
    }
    return new PassReplay(parsed.passes as RecordedPass[], source);
  }

  async pass<T>(what: string, run: () => Promise<T>): Promise<T> {
    const index = this.next++;
    const recorded = this.passes[index];
    if (!recorded || recorded.what !== what) {
      throw new UserError(
        `${this.source}: pass ${index + 1} here reads ${brief(what)}, but job 1 recorded ${recorded ? brief(recorded.what) : 'no more passes'}: this machine builds other models than the jobs (another prune-gate or onnxruntime?); merge with the jobs' version on their runner type`,
      );
    }
    if (!recorded.result) return run();
    this.replayedCount++;
    return v8.deserialize(recorded.result) as T;
  }

  /** Passes given back from the record, and passes run here because the record left them out. */
  replayed(): { replayed: number; run: number } {
    return { replayed: this.replayedCount, run: this.next - this.replayedCount };
  }
}

function brief(what: string): string {
  return what.length > 120 ? `${what.slice(0, 117)}...` : what;
}
