/** The calibration tasks (docs/contracts.md, "Calibration data"). */
export const TASKS = ['language-model', 'classification', 'generic', 'generation'] as const;
export type Task = (typeof TASKS)[number];

/**
 * The metrics an evaluation produces (docs/contracts.md, "Metric names"): the same names in the
 * config, in report.json's metrics[] and in the comment. How each is judged (bounds, which way
 * is better, quality or efficiency) is the gate's table, src/gate/metrics.ts.
 */
export const METRIC_NAMES = [
  'accuracy',
  'perplexity',
  'next-token-accuracy',
  'exact-match',
  'token-f1',
  'rouge-l',
  'sequence-agreement',
  'agreement',
  'kl-divergence',
  'cosine',
  'latency-p50',
  'latency-p95',
  'decode-tokens-per-second',
  'time-to-first-token',
  'size',
  'params',
  'macs',
  'memory',
] as const;
export type MetricName = (typeof METRIC_NAMES)[number];

export type MetricValues = Partial<Record<MetricName, number>>;

/**
 * How sure a measured value is (latency, timed): 95 % intervals of the candidate's own value and
 * of its ratio to the base's (candidate / base), from runs made side by side with the base.
 */
export interface MetricInterval {
  candidate: [number, number];
  ratio: [number, number];
}
export type MetricIntervals = Partial<Record<MetricName, MetricInterval>>;

/** Which metrics a calibration task can produce (the rest of the quality metrics need labels or tokens). */
export const TASK_METRICS: Record<Task, readonly MetricName[]> = {
  'language-model': ['perplexity', 'next-token-accuracy'],
  classification: ['accuracy'],
  generic: [],
  generation: ['exact-match', 'token-f1', 'rouge-l', 'sequence-agreement', 'perplexity', 'decode-tokens-per-second', 'time-to-first-token'],
};

/** A generation set's decode speed at batch 1 (eval/decode-speed.ts): timed, like latency. */
export const DECODE_SPEED_METRICS: readonly MetricName[] = ['decode-tokens-per-second', 'time-to-first-token'];

/** The generation metrics that compare with a reference: absent when the set gives none. */
export const REFERENCE_METRICS: readonly MetricName[] = ['exact-match', 'token-f1', 'rouge-l', 'perplexity'];

/** Metrics every task has (all but the task-specific ones): comparisons with the base model and the efficiency measures. */
export const COMMON_METRICS: readonly MetricName[] = METRIC_NAMES.filter(
  (m) => !Object.values(TASK_METRICS).some((own) => own.includes(m)),
);

/** The metrics a task reports, in report order: its own first, then comparisons and efficiency. */
export function metricsOf(task: Task): MetricName[] {
  return [...TASK_METRICS[task], ...COMMON_METRICS];
}
