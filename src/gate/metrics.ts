/**
 * The metrics of the gate (PRODUCT.md): their names (the same in the config, in report.json and
 * in the comment), which way is better, which bounds each takes, and whether a bound on it is a
 * quality bound (stops the gradual search) or an efficiency bound (does not).
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
] as const;
export type MetricName = (typeof METRIC_NAMES)[number];

export const BOUND_KINDS = ['max-drop', 'max-increase', 'min', 'max', 'min-speedup', 'max-ratio'] as const;
export type BoundKind = (typeof BOUND_KINDS)[number];

export type MetricValues = Partial<Record<MetricName, number>>;

export interface MetricInfo {
  /** quality bounds stop the gradual search; efficiency bounds do not (they only improve). */
  kind: 'quality' | 'efficiency';
  higherIsBetter: boolean;
  bounds: readonly BoundKind[];
  /** For the Markdown report. */
  unit: 'fraction' | 'ratio' | 'nats' | 'ms' | 'bytes' | 'count';
}

export const METRICS: Record<MetricName, MetricInfo> = {
  accuracy: { kind: 'quality', higherIsBetter: true, bounds: ['max-drop', 'min'], unit: 'fraction' },
  'next-token-accuracy': { kind: 'quality', higherIsBetter: true, bounds: ['max-drop', 'min'], unit: 'fraction' },
  agreement: { kind: 'quality', higherIsBetter: true, bounds: ['max-drop', 'min'], unit: 'fraction' },
  cosine: { kind: 'quality', higherIsBetter: true, bounds: ['max-drop', 'min'], unit: 'ratio' },
  perplexity: { kind: 'quality', higherIsBetter: false, bounds: ['max-increase', 'max'], unit: 'ratio' },
  'kl-divergence': { kind: 'quality', higherIsBetter: false, bounds: ['max-increase', 'max'], unit: 'nats' },
  'latency-p50': { kind: 'efficiency', higherIsBetter: false, bounds: ['min-speedup', 'max-ratio', 'max'], unit: 'ms' },
  'latency-p95': { kind: 'efficiency', higherIsBetter: false, bounds: ['min-speedup', 'max-ratio', 'max'], unit: 'ms' },
  size: { kind: 'efficiency', higherIsBetter: false, bounds: ['max-ratio', 'max'], unit: 'bytes' },
  params: { kind: 'efficiency', higherIsBetter: false, bounds: ['max-ratio', 'max'], unit: 'count' },
  macs: { kind: 'efficiency', higherIsBetter: false, bounds: ['max-ratio', 'max'], unit: 'count' },
};

/** Which metrics a calibration task can produce (the rest of the quality metrics need labels or tokens). */
export const TASK_METRICS: Record<'language-model' | 'classification' | 'generic', readonly MetricName[]> = {
  'language-model': ['perplexity', 'next-token-accuracy'],
  classification: ['accuracy'],
  generic: [],
};

/** Metrics every task has (all but the task-specific ones): comparisons with the base model and the efficiency measures. */
export const COMMON_METRICS: readonly MetricName[] = METRIC_NAMES.filter(
  (m) => !Object.values(TASK_METRICS).some((own) => own.includes(m)),
);

export function isQuality(name: MetricName): boolean {
  return METRICS[name].kind === 'quality';
}
