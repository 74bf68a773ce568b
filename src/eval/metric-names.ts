import type { Task } from './calibration';

/**
 * The metrics an evaluation produces (docs/contracts.md, "Metric names"): the same names in the
 * config, in report.json's metrics[] and in the comment. How each is judged (bounds, which way
 * is better, quality or efficiency) is the gate's table, src/gate/metrics.ts.
 */
export const METRIC_NAMES = [
  'accuracy',
  'perplexity',
  'next-token-accuracy',
  'agreement',
  'kl-divergence',
  'cosine',
  'latency-p50',
  'latency-p95',
  'size',
  'params',
  'macs',
  'memory',
] as const;
export type MetricName = (typeof METRIC_NAMES)[number];

export type MetricValues = Partial<Record<MetricName, number>>;

/** Which metrics a calibration task can produce (the rest of the quality metrics need labels or tokens). */
export const TASK_METRICS: Record<Task, readonly MetricName[]> = {
  'language-model': ['perplexity', 'next-token-accuracy'],
  classification: ['accuracy'],
  generic: [],
};

/** Metrics every task has (all but the task-specific ones): comparisons with the base model and the efficiency measures. */
export const COMMON_METRICS: readonly MetricName[] = METRIC_NAMES.filter(
  (m) => !Object.values(TASK_METRICS).some((own) => own.includes(m)),
);

/** The metrics a task reports, in report order: its own first, then comparisons and efficiency. */
export function metricsOf(task: Task): MetricName[] {
  return [...TASK_METRICS[task], ...COMMON_METRICS];
}
