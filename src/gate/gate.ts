import { UserError } from '../errors';
import { MetricInterval, MetricIntervals, MetricName, MetricValues, REFERENCE_METRICS, Task, metricsOf } from '../eval/metric-names';
import { LatencyResult, latencyIntervals, latencyValues } from '../eval/latency';
import { DecodeSettled, firstTokenIntervals, firstTokenValues, tokensPerSecondIntervals, tokensPerSecondValues } from '../eval/decode-values';
import { BoundKind, METRICS, isQuality } from './metrics';
import { formatValue } from './format';

/** One bound of the gate, as written and as understood. */
export interface GateRule {
  metric: MetricName;
  bound: BoundKind;
  value: number;
  /** true: `value` is a percentage of the base model's value. */
  percent: boolean;
  /** As written, for the report: "max-increase 5%". */
  text: string;
}

/** One line of report.json's metrics[]. */
export interface MetricResult {
  name: MetricName;
  base: number | null;
  candidate: number | null;
  /** The resolved number the candidate is held to; null when the metric has no bound. */
  bound: number | null;
  /** The bound as written, e.g. "max-increase 5%"; null when the metric has no bound. */
  rule: string | null;
  pass: boolean;
  /** A timed metric's 95 % interval, in the metric's unit, that the bound judged (absent when the value is exact). */
  interval?: [number, number];
  /** The interval straddled the bound: `pass` is then what latency.on-inconclusive says. */
  inconclusive?: boolean;
}

export type Verdict = 'pass' | 'fail';

/** What a bound that the measurement cannot decide counts as (latency.on-inconclusive). */
export type OnInconclusive = 'pass' | 'fail';

/** The values judge compares: each model's, and for timed metrics the intervals of the candidate's. */
export interface JudgedValues {
  base: MetricValues;
  candidate: MetricValues;
  intervals?: MetricIntervals;
}

/** A bound on a metric the calibration set cannot produce is a config mistake: say so up front. */
export function checkRulesFitTask(rules: readonly GateRule[], set: { task: Task; generation?: { references?: unknown } }, where: string): void {
  const { task } = set;
  const available = metricsOf(task);
  for (const r of rules) {
    if (set.generation && !set.generation.references && REFERENCE_METRICS.includes(r.metric)) {
      throw new UserError(`${where}: gate.${r.metric}: the generation set gives no "reference" per prompt, so there is no ${r.metric}; add references or bound agreement and sequence-agreement`);
    }
    if (!available.includes(r.metric)) {
      const needs =
        r.metric === 'accuracy' ? 'a classification set with labels' : r.metric === 'next-token-accuracy' ? 'a language-model calibration set' : r.metric === 'perplexity' ? 'a language-model or generation set' : 'a generation set';
      throw new UserError(`${where}: gate.${r.metric}: the calibration task is ${task}, which has no ${r.metric}; it needs ${needs}`);
    }
  }
}

/**
 * Bounds whose sense depends on the base model's value, judged once it is known (the plain-number
 * checks that need no base are config.ts's): a perplexity max-increase above the base's own
 * perplexity allows it to more than double, which is a percentage written without its sign.
 */
export function checkRulesAgainstBase(rules: readonly GateRule[], base: MetricValues, where: string): void {
  for (const r of rules) {
    const value = base[r.metric];
    if (r.metric !== 'perplexity' || r.bound !== 'max-increase' || r.percent || value === undefined || !(r.value > value)) continue;
    throw new UserError(
      `${where}: gate.perplexity.max-increase: ${r.value} is above the base model's perplexity (${formatValue('perplexity', value)}), so it allows more than doubling it; write ${r.value}% for ${r.value} % of the base's, or a plain increase below ${formatValue('perplexity', value)}`,
    );
  }
}

/**
 * The number the candidate is held to. A plain value is in the metric's unit; a percentage is
 * relative to the base model's value (max-drop 1% = 1 % of base accuracy; max 90% = 0.9 x base).
 */
export function resolveBound(rule: GateRule, base: number): number {
  const v = rule.value;
  const rel = (v / 100) * base;
  switch (rule.bound) {
    case 'max-drop':
      return base - (rule.percent ? rel : v);
    case 'max-increase':
      return base + (rule.percent ? rel : v);
    case 'min':
    case 'max':
      return rule.percent ? rel : v;
    case 'max-ratio':
      return base * (rule.percent ? v / 100 : v);
    case 'min-speedup':
      // A speedup is faster: a time divided by it, a rate (tokens per second) multiplied.
      return METRICS[rule.metric].higherIsBetter ? base * v : base / v;
  }
}

/** Equal within rounding passes: a bound of 0.97 and an agreement of 0.97 computed as 0.9699999. */
export function withinBound(metric: MetricName, candidate: number, bound: number): boolean {
  if (!Number.isFinite(candidate)) return false;
  const eps = 1e-9 * Math.max(1, Math.abs(bound));
  return METRICS[metric].higherIsBetter ? candidate >= bound - eps : candidate <= bound + eps;
}

/**
 * Every metric of the task, each judged against its bound when the config sets one. A metric
 * with an interval (timed) passes only when its whole interval is within the bound, fails only
 * when its whole interval is beyond it, and is otherwise inconclusive, counted as `onInconclusive`.
 */
export function judge(values: JudgedValues, rules: readonly GateRule[], task: Task, onInconclusive: OnInconclusive = 'fail'): MetricResult[] {
  // memory is measured only when a bound asks for it (a fresh process per model): unasked, no row;
  // likewise the reference metrics of a generation set without references.
  const listed = metricsOf(task).filter(
    (name) => !(name === 'memory' || (task === 'generation' && REFERENCE_METRICS.includes(name))) || rules.some((r) => r.metric === name) || values.candidate[name] !== undefined,
  );
  return listed.map((name) => {
    const base = values.base[name] ?? null;
    const candidate = values.candidate[name] ?? null;
    const rule = rules.find((r) => r.metric === name);
    if (!rule) return { name, base, candidate, bound: null, rule: null, pass: true };
    // A relative bound needs the base value; an unknown value (e.g. MACs not measured) fails.
    const bound = base === null && needsBase(rule) ? null : resolveBound(rule, base ?? NaN);
    const interval = bound === null ? undefined : judgedInterval(rule, base, values.intervals?.[name]);
    const outcome = bound === null || candidate === null ? 'fail' : outcomeOf(name, candidate, bound, interval);
    return {
      name,
      base,
      candidate,
      bound: bound !== null && Number.isFinite(bound) ? bound : null,
      rule: rule.text,
      pass: outcome === 'pass' || (outcome === 'inconclusive' && onInconclusive === 'pass'),
      ...(interval && interval.every(Number.isFinite) ? { interval } : {}),
      ...(outcome === 'inconclusive' ? { inconclusive: true } : {}),
    };
  });
}

/**
 * The interval a bound judges, in the metric's unit: a bound relative to the base (min-speedup,
 * max-ratio, a percentage) judges the ratio measured side by side with the base, put in the
 * base's unit (both move together on a busy machine, the ratio much less); an absolute one the
 * candidate's own value.
 */
function judgedInterval(rule: GateRule, base: number | null, measured: MetricInterval | undefined): [number, number] | undefined {
  if (!measured) return undefined;
  if (!needsBase(rule)) return measured.candidate;
  return base === null ? undefined : [base * measured.ratio[0], base * measured.ratio[1]];
}

function outcomeOf(metric: MetricName, candidate: number, bound: number, interval: [number, number] | undefined): 'pass' | 'fail' | 'inconclusive' {
  if (!interval) return withinBound(metric, candidate, bound) ? 'pass' : 'fail';
  const [worst, best] = METRICS[metric].higherIsBetter ? interval : [interval[1], interval[0]];
  if (withinBound(metric, worst, bound)) return 'pass';
  return withinBound(metric, best, bound) ? 'inconclusive' : 'fail';
}

/**
 * Whether a timing decides every bound of `rules` on what it measures (each interval wholly on
 * one side of its bound): what measureTrials runs until, within its time. `valuesOf` gives the
 * timing's metrics; bounds on other metrics are not its to decide.
 */
function timingSettled(rules: readonly GateRule[], valuesOf: (timing: LatencyResult) => JudgedValues): (timing: LatencyResult) => boolean {
  return (timing) => {
    const values = valuesOf(timing);
    const own = rules.filter((r) => values.candidate[r.metric] !== undefined);
    return own.length === 0 || judge(values, own, 'generation').every((m) => !m.inconclusive);
  };
}

/** Latency's timing: decided when every latency bound is. */
export function latencySettled(rules: readonly GateRule[]): (latency: LatencyResult) => boolean {
  return timingSettled(rules, (l) => ({ base: latencyValues(l.base), candidate: latencyValues(l.candidate), intervals: latencyIntervals(l) }));
}

/** Decode speed's two timings, each decided when its metric's bound is. */
export function decodeSettled(rules: readonly GateRule[]): DecodeSettled {
  return {
    firstToken: timingSettled(rules, (t) => ({ base: firstTokenValues(t, 'base'), candidate: firstTokenValues(t, 'candidate'), intervals: firstTokenIntervals(t) })),
    decode: timingSettled(rules, (t) => ({ base: tokensPerSecondValues(t, 'base'), candidate: tokensPerSecondValues(t, 'candidate'), intervals: tokensPerSecondIntervals(t) })),
  };
}

function needsBase(rule: GateRule): boolean {
  return rule.percent || rule.bound === 'max-drop' || rule.bound === 'max-increase' || rule.bound === 'max-ratio' || rule.bound === 'min-speedup';
}

export function verdictOf(results: readonly MetricResult[]): Verdict {
  return results.every((r) => r.pass) ? 'pass' : 'fail';
}

/** Passes every quality bound (the gradual search continues past a step that does). */
export function passesQuality(results: readonly MetricResult[]): boolean {
  return results.every((r) => r.pass || !isQuality(r.name));
}

/** The bounded metrics that failed, for messages: "perplexity (max-increase 5%)". */
export function failures(results: readonly MetricResult[]): string[] {
  return results.filter((r) => !r.pass).map((r) => `${r.name} (${r.rule}${r.inconclusive ? ', inconclusive' : ''})`);
}

/** The broken bounds with their values, for progress lines: "size 2.57 MiB, bound ≤ 2.38 MiB (max-ratio 0.75)". */
export function brokenBounds(results: readonly MetricResult[]): string[] {
  return results
    .filter((r) => !r.pass)
    .map(
      (r) =>
        `${r.name} ${formatValue(r.name, r.candidate)}, bound ${METRICS[r.name].higherIsBetter ? '≥' : '≤'} ${formatValue(r.name, r.bound)} (${r.rule})` +
        (r.interval ? `, 95 % interval ${formatValue(r.name, r.interval[0])} to ${formatValue(r.name, r.interval[1])}` : '') +
        (r.inconclusive ? ': inconclusive' : ''),
    );
}
