import { z } from 'zod';
import { METRIC_NAMES, TASKS } from '../eval/metric-names';

/**
 * report.json. The fields listed in docs/contracts.md are stable (users and the action's publish-only mode
 * read them); this schema is also how the action validates a report it did not write itself
 * (the fork pattern: a report downloaded from an untrusted PR's artifact). Numbers must be
 * finite, strings are bounded, arrays are bounded: a hostile report cannot make the comment huge.
 */

const MAX_TEXT = 2000;
const MAX_ITEMS = 100_000;

const text = z.string().max(MAX_TEXT);
const num = z.number().finite();
const count = z.number().finite().nonnegative();

export const ModelStatsSchema = z.object({
  path: text,
  params: count,
  bytes: count,
  macs: count.nullable(),
});

export const MetricResultSchema = z.object({
  name: z.enum(METRIC_NAMES),
  base: num.nullable(),
  candidate: num.nullable(),
  bound: num.nullable(),
  rule: text.nullable(),
  pass: z.boolean(),
  /** A timed metric's 95 % interval, in its unit, that the bound judged. */
  interval: z.tuple([num, num]).optional(),
  /** The interval straddled the bound: `pass` is what latency.on-inconclusive says. */
  inconclusive: z.boolean().optional(),
});

export const LatencyStatsSchema = z.object({ p50_ms: count, p95_ms: count });

/**
 * One of decode speed's two timings, in its metric's unit (time-to-first-token ms, tokens/s):
 * each model's median, the speedup (above 1: the candidate is faster) with its 95 % interval, the
 * candidate's own 95 % interval (null with too few runs), and the timing's runs, seconds and warnings.
 */
const DecodeTimingSchema = z.object({
  base: count.nullable(),
  candidate: count.nullable(),
  speedup: count.nullable(),
  interval: z.tuple([count, count]).nullable(),
  candidate_interval: z.tuple([count, count]).nullable(),
  runs: z.number().int().nonnegative(),
  seconds: count,
  warnings: z.array(text).max(10),
});

/** One pass over the calibration set: what it was, why it ran, the samples it read and what it cost. */
const PassSchema = z.object({
  what: z.enum(['statistics', 'probe', 'confirmation', 'normalization sums', 'evaluation', 'quantization']),
  why: z.string().max(2000),
  samples: z.number().int().nonnegative(),
  seconds: z.number().nonnegative(),
});

export const StepSchema = z.object({
  /** The step's target: the cumulative share of the base model's parameters asked to go. */
  ratio: z.number().min(0).max(1),
  /** The cumulative share of the base model's parameters actually removed (counted; absent in reports of older versions). */
  removed: z.number().finite().max(1).optional(),
  /** Why removed falls short of ratio, when it does (alignment, nothing more to remove, …). */
  short: text.optional(),
  metrics: z.array(MetricResultSchema).max(METRIC_NAMES.length),
  pass: z.boolean(),
  /** Passes every quality bound (the search goes on past such a step). */
  quality_pass: z.boolean(),
  /** The step's passes over the calibration set (the pruning's; its evaluation is its kept confirmation's). */
  passes: z.array(PassSchema).max(16).optional(),
});

/** What quantization did to the chosen candidate (present when quantize is int8 or int4). */
export const QuantizationSchema = z.object({
  /** Layers whose weights were quantized, and those weights' bytes before and after. */
  layers: count,
  weight_bytes_before: count,
  weight_bytes_after: count,
  /** Layers stored with more bits than asked: float, or 8 bits in an int4 model; and why. */
  exceptions: z.array(z.object({ where: text, stored: z.enum(['float', 'int8']), reason: text })).max(MAX_ITEMS),
  /** Bytes saved by shortening intermediate tensor names (0 with keep-names). */
  names_bytes_saved: count,
  /**
   * How MatMulNBits codes were chosen, when calibration data chose them (quantize-method gptq or
   * auto): the method asked, what was used ('gptq', 'rtn', or both with how many layers each),
   * and the mean relative output error on the calibration data over those layers, with the codes
   * stored and with round-to-nearest's.
   */
  method: z
    .object({
      asked: z.enum(['auto', 'rtn', 'gptq']),
      used: text,
      layers: count,
      gptq_layers: count,
      calibration_error: z.number().nonnegative(),
      rtn_calibration_error: z.number().nonnegative(),
    })
    .optional(),
});

/** Where the run happened: the commit judged, and links to the run and its artifacts (https URLs on GitHub). */
export const RunSchema = z.object({
  sha: z.string().regex(/^[0-9a-f]{40}([0-9a-f]{24})?$/),
  url: z.string().max(MAX_TEXT).regex(/^https:\/\/[^\s]+$/).optional(),
  artifacts_url: z.string().max(MAX_TEXT).regex(/^https:\/\/[^\s]+$/).optional(),
});

/** The pull request a run was for: its number and the head commit it judged. */
/**
 * Present when the model as written did not fit `device.memory`: the base and the candidates
 * were evaluated, and statistics collected, in a weight-only int8 form (MatMulNBits), and `gap`
 * is that form's own distance from the float model on the set's first batch.
 */
export const EvaluationFormSchema = z.object({
  form: z.literal('int8'),
  reason: text,
  device_memory_bytes: count,
  model_bytes: count,
  form_bytes: count,
  bits: count,
  block_size: count,
  gap: z.object({
    samples: count,
    float: z.record(z.string(), num),
    int8: z.record(z.string(), num),
    agreement: num.nullable(),
    kl_divergence: num.nullable(),
    seconds: count,
  }),
});

export const PullRequestSchema = z.object({ number: z.number().int().positive(), head_sha: z.string().regex(/^[0-9a-f]{40}([0-9a-f]{24})?$/) });

export const ReportSchema = z.object({
  tool: z.literal('prune-gate'),
  /** The report format's version; bumped only when a stable field changes meaning. */
  format: z.literal(1),
  verdict: z.enum(['pass', 'fail']),
  task: z.enum(TASKS),
  /** The prune settings of the run, or null for `eval` (two given models). */
  target: z.union([z.number().min(0).max(1), z.literal('auto')]).nullable(),
  quantize: z.enum(['none', 'int8', 'int4']),
  /** The share of the base model's parameters the candidate lacks, counted (run only; the target is `target`, or the chosen step's `ratio`). */
  removed: z.number().finite().max(1).optional(),
  quantization: QuantizationSchema.optional(),
  base: ModelStatsSchema,
  candidate: ModelStatsSchema,
  metrics: z.array(MetricResultSchema).max(METRIC_NAMES.length),
  latency: z.object({
    base: LatencyStatsSchema,
    candidate: LatencyStatsSchema,
    /** base p50 / candidate p50 (the same number as `ratio`, kept for readers of format 1). */
    speedup: count.nullable(),
    /** The median ratio base / candidate, its 95 % bootstrap interval (null with too few runs), and the timed runs of each model. */
    ratio: count.nullable().optional(),
    interval: z.tuple([count, count]).nullable().optional(),
    runs: z.number().int().nonnegative().optional(),
    /** Seconds the timed runs took. */
    seconds: count.optional(),
    /** The intervals' least half-width, as a share of their figure (latency.noise). */
    noise: count.optional(),
    /** What makes the figures less sure (a busy machine, too little time), in words. */
    warnings: z.array(text).max(10).optional(),
  }),
  /**
   * Generation sets: decode speed at batch 1, base and candidate alternated (`cache`: on the KV
   * cache, else each step re-ran the sequence), on a prompt of `prompt_tokens` then `steps` tokens.
   */
  decode: z
    .object({
      cache: z.boolean(),
      prompt_tokens: z.number().int().positive(),
      steps: z.number().int().positive(),
      time_to_first_token: DecodeTimingSchema,
      tokens_per_second: DecodeTimingSchema,
    })
    .optional(),
  steps: z.array(StepSchema).max(100),
  /** Index into steps of the model that was written, or null without a search. */
  chosen_step: z.number().int().nonnegative().nullable(),
  pruned: z
    .array(
      z.object({
        kind: z.enum(['ffn', 'heads', 'channels', 'blocks']),
        where: text,
        before: count,
        after: count,
        params: count,
      }),
    )
    .max(MAX_ITEMS),
  skipped: z.array(z.object({ where: text, reason: text })).max(MAX_ITEMS),
  /**
   * A quantized input's weights (MatMulNBits, DequantizeLinear) after pruning, in their format:
   * how many kept their original bytes, and each one requantized (input columns removed or
   * values refit) with its relative weight error ‖requantized − pruned float‖ / ‖pruned float‖.
   */
  quantized_inputs: z
    .object({
      exact: count,
      requantized: z.array(z.object({ where: text, format: text, how: text, error: count })).max(MAX_ITEMS),
      worst: count,
    })
    .optional(),
  /**
   * How the removals were shared between layers and kinds, and which compensation repaired
   * them: the strategy kept and every one tried with its calibration loss (null: not measurable).
   */
  allocation: z
    .object({
      strategy: z.enum(['global', 'uniform', 'ffn-only', 'measured']),
      compensate: z.enum(['none', 'bias', 'reconstruct']),
      measure: text,
      /** What the losses were measured on, when not the whole calibration set. */
      on: text.optional(),
      tried: z
        .array(
          z.object({
            strategy: z.enum(['global', 'uniform', 'ffn-only', 'measured']),
            compensate: z.enum(['none', 'bias', 'reconstruct']),
            loss: z.number().nullable(),
            params: count,
            align: count.optional(),
            latency: z.number().nullable().optional(),
            note: text.optional(),
          }),
        )
        .max(MAX_ITEMS),
      align: count,
      latency: z.number().nullable().optional(),
      /** The passes over the calibration set the result's last step made: what each was, why it ran, what it read and cost. */
      passes: z.array(PassSchema).max(16).optional(),
    })
    .optional(),
  /** The search's budget (seconds), what the run spent, and what was left out to keep to it. */
  budget: z
    .object({
      seconds: z.number().positive(),
      spent: z.number().nonnegative(),
      left_out: z.array(text).max(MAX_ITEMS),
    })
    .optional(),
  /** What the figures were measured on: the CPU, its cores, onnxruntime's threads, the versions. */
  environment: z
    .object({
      cpu: text,
      cores: count,
      threads: count,
      onnxruntime: text,
      'prune-gate': text,
    })
    .optional(),
  /**
   * Present when memory was measured: the peaks (MiB) the metric's figures are net of. Each
   * model's `memory` in metrics[] is its process's peak less `runtime_mib`, the peak of the same
   * process without a model (0 when not more); `spread_mib` is how much runs of the latter differ.
   */
  memory: z.object({ runtime_mib: count, spread_mib: count, base_peak_mib: count, candidate_peak_mib: count }).optional(),
  evaluation_form: EvaluationFormSchema.optional(),
  /**
   * Graph inputs and outputs whose declared shape the candidate changed (a KV cache's heads after
   * head pruning): the app that feeds the model must follow. Absent when none changed.
   */
  interface: z
    .array(
      z.object({
        name: text,
        kind: z.enum(['input', 'output']),
        base: z.array(z.union([num, text]).nullable()).max(64),
        candidate: z.array(z.union([num, text]).nullable()).max(64),
      }),
    )
    .max(MAX_ITEMS)
    .optional(),
  /** Generation sets with a tokenizer: a few samples decoded, the base's and the candidate's generations side by side. */
  examples: z
    .array(z.object({ line: count, prompt: text, reference: text.optional(), base: text, candidate: text }))
    .max(20)
    .optional(),
  /** The config file the gate ran with (a path relative to the working folder), or null on flags alone. */
  config: text.nullable().optional(),
  /** The calibration set: its path, samples and the tokens they hold (token inputs only). */
  calibration: z.object({ path: text, samples: count, tokens: count.nullable() }).optional(),
  /** The commit and the GitHub Actions run that produced the report (set by the action). */
  run: RunSchema.optional(),
  /** Set when the run was on a pull_request event (the publish-only mode comments on it). */
  pull_request: PullRequestSchema.optional(),
});

export type Report = z.output<typeof ReportSchema>;
export type ReportStep = z.output<typeof StepSchema>;
export type ReportQuantization = z.output<typeof QuantizationSchema>;
export type ReportPullRequest = z.output<typeof PullRequestSchema>;
export type ReportRun = z.output<typeof RunSchema>;
export type ReportEvaluationForm = z.output<typeof EvaluationFormSchema>;
