import { OnnxModel } from '../onnx/model';
import { InputSpec, graphInputs, graphOutputs, ort } from '../onnx/runtime';
import { CalibrationSet, batches } from './calibration';
import { greedyDecode } from './generate';
import type { DecodeInput } from './decode-speed';
import { Log, PassProgress } from '../util/progress';
import { GenerationSpec, referenceSet, teacherForcedSet } from './generation-set';
import type { MetricValues } from './metric-names';
import { MetricSums, TaskAccumulator, outputRows, planRows, taskValues } from './metrics';
import { exactMatch, rougeL, tokenF1 } from './sequence-metrics';
import { TokenText, tokenText } from './token-text';

/**
 * A generation set evaluated (docs/contracts.md, "Generation sets"): the base decodes once; its
 * generations, appended to the prompts, become the set every later pass runs (pruning
 * statistics, the teacher-forced comparisons, the search's loss, latency and memory). Each
 * candidate decodes the prompts itself for the sequence metrics.
 */
export class GenerationRun {
  private constructor(
    readonly spec: GenerationSpec,
    /** The base's generations, without end-of-sequence ids. */
    readonly baseGenerations: number[][],
    /** Prompts followed by the base's generations: what the model runs in one pass. */
    readonly forward: CalibrationSet,
    /** Prompts followed by their references, for the reference's perplexity. */
    private readonly references: CalibrationSet | undefined,
    private readonly text: TokenText | undefined,
  ) {}

  static async start(session: ort.InferenceSession, set: CalibrationSet, log?: Log): Promise<GenerationRun> {
    const spec = set.generation as GenerationSpec;
    const generations = await decode(session, set, 'generating with the base model', log);
    const text = spec.tokenizer ? tokenText(spec.tokenizer) : undefined;
    return new GenerationRun(spec, generations, teacherForcedSet(spec, set, generations), referenceSet(spec, set), text);
  }

  /** The generation metrics of the model in `session` as exact sums, and its generations. */
  async measure(session: ort.InferenceSession, isBase = false, log?: Log): Promise<{ sums: MetricSums; values: MetricValues; generations: number[][] }> {
    const generations = isBase ? this.baseGenerations : await decode(session, this.forward, 'generating with the candidate', log);
    const total = (f: (g: number[], i: number) => number) => generations.reduce((sum, g, i) => sum + f(g, i), 0);
    let sums: MetricSums = { sequence: total((g, i) => exactMatch(g, this.baseGenerations[i])), samples: generations.length };
    const references = this.spec.references;
    if (references && this.references) {
      sums = { ...sums, exact: total((g, i) => exactMatch(g, references[i])), f1: total((g, i) => tokenF1(g, references[i])), rouge: total((g, i) => rougeL(g, references[i])) };
      const task = new TaskAccumulator('generation');
      for (const batch of batches(this.references)) {
        const result = await session.run(batch.feeds, [this.references.output]);
        const out = outputRows(result[this.references.output]);
        task.add(out, planRows(this.references, batch, out));
      }
      sums = { ...sums, ...task.sums() };
    }
    return { sums, values: generationValues(sums), generations };
  }

  /**
   * What decode speed times (decode-speed.ts): the first prompt, then max-new-tokens - 1 steps (at
   * least 1) fed the base's generation for it, its last token repeated past its end. Both models
   * decode the same tokens, so do the same work whatever each would choose, and every step the
   * set allows is timed (the first token is the prompt's run).
   */
  decodeInput(): DecodeInput {
    const prompt = this.spec.prompts[0];
    const generated = this.baseGenerations[0];
    const last = generated.at(-1) ?? (prompt.at(-1) as number);
    const tokens = Array.from({ length: Math.max(1, this.spec.maxNewTokens - 1) }, (_, i) => generated[i] ?? last);
    return { decoder: this.spec.decoder, prompt, tokens };
  }

  /** The first `count` samples as text, base and candidate side by side, when the set names a tokenizer. */
  examples(candidate: readonly number[][], count = 3): GenerationExample[] | undefined {
    const text = this.text;
    if (!text) return undefined;
    return this.spec.prompts.slice(0, count).map((prompt, i) => ({
      line: this.spec.lines[i],
      prompt: text(prompt),
      reference: this.spec.references ? text(this.spec.references[i]) : undefined,
      base: text(this.baseGenerations[i]),
      candidate: text(candidate[i]),
    }));
  }
}

/** The generation metrics from their sums (the references' only when the set has references). */
export function generationValues(sums: MetricSums): MetricValues {
  const n = sums.samples || 1;
  const values: MetricValues = { 'sequence-agreement': (sums.sequence ?? 0) / n };
  if (sums.exact === undefined) return values;
  return { ...values, 'exact-match': sums.exact / n, 'token-f1': (sums.f1 ?? 0) / n, 'rouge-l': (sums.rouge ?? 0) / n, ...taskValues('generation', sums) };
}

export interface GenerationExample {
  /** The sample's line in the prompts file. */
  line: number;
  prompt: string;
  reference?: string;
  base: string;
  candidate: string;
}

function decode(session: ort.InferenceSession, set: CalibrationSet, what: string, log: Log | undefined): Promise<number[][]> {
  const spec = set.generation as GenerationSpec;
  const options = { maxNewTokens: spec.maxNewTokens, eos: spec.eos, batchSize: set.batchSize };
  const progress = new PassProgress(what, 0, log);
  return greedyDecode(session, spec.decoder, spec.prompts, { ...options, onBatch: (total) => progress.tick(total) });
}

/** An input or output whose declared shape the candidate changed (a KV cache's heads, say). */
export interface InterfaceChange {
  name: string;
  kind: 'input' | 'output';
  base: (number | string | null)[];
  candidate: (number | string | null)[];
}

/** The graph inputs and outputs whose declared shapes differ between two models: the app feeding the model must follow. */
export function interfaceChanges(base: OnnxModel, candidate: OnnxModel): InterfaceChange[] {
  const changes: InterfaceChange[] = [];
  const compare = (kind: 'input' | 'output', a: InputSpec[], b: InputSpec[]) => {
    for (const x of a) {
      const y = b.find((s) => s.name === x.name);
      if (y && y.dims.join() !== x.dims.join()) changes.push({ name: x.name, kind, base: x.dims, candidate: y.dims });
    }
  };
  compare('input', graphInputs(base), graphInputs(candidate));
  compare('output', graphOutputs(base), graphOutputs(candidate));
  return changes;
}
