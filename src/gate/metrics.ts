import { DECODE_SPEED_METRICS, MetricName } from '../eval/metric-names';

/**
 * How the gate judges each metric (docs/contracts.md, "Config file"): which way is better, which
 * bounds it takes, and whether a bound on it is a quality bound (stops the gradual search) or an
 * efficiency bound (does not). The names themselves are eval's (src/eval/metric-names.ts).
 */

export const BOUND_KINDS = ['max-drop', 'max-increase', 'min', 'max', 'min-speedup', 'max-ratio'] as const;
export type BoundKind = (typeof BOUND_KINDS)[number];

export interface MetricInfo {
  /** quality bounds stop the gradual search; efficiency bounds do not (they only improve). */
  kind: 'quality' | 'efficiency';
  higherIsBetter: boolean;
  bounds: readonly BoundKind[];
  /** For the Markdown report. */
  unit: 'fraction' | 'ratio' | 'nats' | 'ms' | 'tokens/s' | 'bytes' | 'count' | 'MiB';
}

export const METRICS: Record<MetricName, MetricInfo> = {
  accuracy: { kind: 'quality', higherIsBetter: true, bounds: ['max-drop', 'min'], unit: 'fraction' },
  'next-token-accuracy': { kind: 'quality', higherIsBetter: true, bounds: ['max-drop', 'min'], unit: 'fraction' },
  'exact-match': { kind: 'quality', higherIsBetter: true, bounds: ['max-drop', 'min'], unit: 'fraction' },
  'token-f1': { kind: 'quality', higherIsBetter: true, bounds: ['max-drop', 'min'], unit: 'fraction' },
  'rouge-l': { kind: 'quality', higherIsBetter: true, bounds: ['max-drop', 'min'], unit: 'fraction' },
  'sequence-agreement': { kind: 'quality', higherIsBetter: true, bounds: ['max-drop', 'min'], unit: 'fraction' },
  agreement: { kind: 'quality', higherIsBetter: true, bounds: ['max-drop', 'min'], unit: 'fraction' },
  cosine: { kind: 'quality', higherIsBetter: true, bounds: ['max-drop', 'min'], unit: 'ratio' },
  perplexity: { kind: 'quality', higherIsBetter: false, bounds: ['max-increase', 'max'], unit: 'ratio' },
  'kl-divergence': { kind: 'quality', higherIsBetter: false, bounds: ['max-increase', 'max'], unit: 'nats' },
  'latency-p50': { kind: 'efficiency', higherIsBetter: false, bounds: ['min-speedup', 'max-ratio', 'max'], unit: 'ms' },
  'latency-p95': { kind: 'efficiency', higherIsBetter: false, bounds: ['min-speedup', 'max-ratio', 'max'], unit: 'ms' },
  'decode-tokens-per-second': { kind: 'efficiency', higherIsBetter: true, bounds: ['min-speedup', 'min'], unit: 'tokens/s' },
  'time-to-first-token': { kind: 'efficiency', higherIsBetter: false, bounds: ['max-ratio', 'min-speedup', 'max'], unit: 'ms' },
  size: { kind: 'efficiency', higherIsBetter: false, bounds: ['max-ratio', 'max'], unit: 'bytes' },
  params: { kind: 'efficiency', higherIsBetter: false, bounds: ['max-ratio', 'max'], unit: 'count' },
  macs: { kind: 'efficiency', higherIsBetter: false, bounds: ['max-ratio', 'max'], unit: 'count' },
  memory: { kind: 'efficiency', higherIsBetter: false, bounds: ['max', 'max-ratio'], unit: 'MiB' },
};

export function isQuality(name: MetricName): boolean {
  return METRICS[name].kind === 'quality';
}

/** Latency (latency-p50, latency-p95): one calibration batch's run, timed. */
export function isLatency(name: MetricName): boolean {
  return METRICS[name].unit === 'ms' && !isDecodeSpeed(name);
}

/** A generation set's decode speed (decode-tokens-per-second, time-to-first-token), timed at batch 1. */
export function isDecodeSpeed(name: MetricName): boolean {
  return DECODE_SPEED_METRICS.includes(name);
}

/** The timed metrics: measured with an interval, by runs of their own. */
export function isTimed(name: MetricName): boolean {
  return isLatency(name) || isDecodeSpeed(name);
}
