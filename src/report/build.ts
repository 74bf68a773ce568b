import * as fs from 'fs';
import * as path from 'path';
import { displayPath } from '../util/paths';
import type { QuantizeMode } from '../quantize/options';
import type { ModelStats } from '../eval/evaluator';
import type { LatencyResult } from '../eval/latency';
import { DecodeSpeed, decodeSpeedValues } from '../eval/decode-values';
import type { MetricResult, Verdict } from '../gate/gate';
import type { StepOutcome } from '../gate/search';
import type { AllocationResult, PrunedEntry, SkippedEntry } from '../prune/types';
import type { Environment } from '../eval/environment';
import type { QuantizedInputsReport } from '../quantize/inputs';
import type { MemoryPeaks } from '../eval/memory';
import type { GenerationExample, InterfaceChange } from '../eval/generation';
import { UserError } from '../errors';
import { Report, ReportEvaluationForm, ReportPullRequest, ReportQuantization, ReportRun, ReportSchema } from './schema';

export interface ReportInput {
  verdict: Verdict;
  task: Report['task'];
  target: number | 'auto' | null;
  quantize: QuantizeMode;
  quantization?: ReportQuantization;
  base: ModelStats;
  candidate: ModelStats;
  metrics: MetricResult[];
  /** The chosen candidate's timing against the base (tests may give only the medians and the speedup). */
  latency: Pick<LatencyResult, 'base' | 'candidate' | 'speedup'> & Partial<LatencyResult>;
  /** Generation sets: the chosen candidate's decode speed against the base. */
  decode?: DecodeSpeed;
  steps: StepOutcome[];
  chosenStep: number | null;
  pruned: PrunedEntry[];
  skipped: SkippedEntry[];
  /** What became of a quantized input's weights (src/quantize/inputs.ts). */
  quantizedInputs?: QuantizedInputsReport;
  allocation?: AllocationResult;
  /** The search's budget and what it left out (run only). */
  budget?: Report['budget'];
  pullRequest?: ReportPullRequest;
  environment?: Environment;
  /** The peaks the memory metric is net of, when it was measured. */
  memory?: MemoryPeaks;
  /** The int8 form the models were evaluated in, when they did not fit device.memory as written. */
  evaluationForm?: ReportEvaluationForm;
  interface?: InterfaceChange[];
  examples?: GenerationExample[];
  /** The config file (absolute), undefined on flags alone; the report records it relative to the working folder. */
  configFile?: string | null;
  calibration?: { path: string; samples: number; tokens: number | null };
  run?: ReportRun;
}

/** NaN and infinities have no JSON form: an unmeasurable value is null. */
function finiteOrNull(v: number | null): number | null {
  return v !== null && Number.isFinite(v) ? v : null;
}

function metricJson(m: MetricResult): MetricResult {
  const { interval, ...rest } = m;
  return { ...rest, base: finiteOrNull(m.base), candidate: finiteOrNull(m.candidate), bound: finiteOrNull(m.bound), ...(interval?.every(Number.isFinite) ? { interval } : {}) };
}

function latencyJson(l: ReportInput['latency']): Report['latency'] {
  const speedup = finiteOrNull(l.speedup);
  const interval = l.intervals?.p50.speedup;
  return {
    base: l.base,
    candidate: l.candidate,
    speedup,
    ...(l.runs !== undefined
      ? {
          ratio: speedup,
          interval: interval?.every(Number.isFinite) ? interval : null,
          runs: l.runs,
          seconds: l.seconds ?? 0,
          ...(l.noise !== undefined ? { noise: l.noise } : {}),
          warnings: l.warnings ?? [],
        }
      : {}),
  };
}

function decodeJson(d: DecodeSpeed): NonNullable<Report['decode']> {
  const values = decodeSpeedValues(d);
  const finite = (i: [number, number] | undefined) => (i?.every(Number.isFinite) ? i : null);
  const timing = (name: 'time-to-first-token' | 'decode-tokens-per-second', t: LatencyResult) => ({
    base: finiteOrNull(values.base[name] ?? null),
    candidate: finiteOrNull(values.candidate[name] ?? null),
    speedup: finiteOrNull(t.speedup),
    interval: finite(t.intervals?.p50.speedup),
    candidate_interval: t.intervals ? finite(values.intervals[name]?.candidate) : null,
    runs: t.runs,
    seconds: t.seconds,
    warnings: t.warnings,
  });
  return {
    cache: d.cache,
    prompt_tokens: d.promptTokens,
    steps: d.steps,
    time_to_first_token: timing('time-to-first-token', d.firstToken),
    tokens_per_second: timing('decode-tokens-per-second', d.decode),
  };
}

/** Paths as the repository sees them (relative to the working folder), not the runner's absolute paths. */
function statsJson(s: ModelStats): ModelStats {
  return { ...s, path: s.path ? displayPath(path.resolve(s.path)) : '' };
}

const EXAMPLE_CHARS = 400;

/** A decoded example short enough for the comment (the schema bounds every string). */
function clipExample(e: GenerationExample): GenerationExample {
  const clip = (t: string) => (t.length > EXAMPLE_CHARS ? `${t.slice(0, EXAMPLE_CHARS)}…` : t);
  return { line: e.line, prompt: clip(e.prompt), ...(e.reference !== undefined ? { reference: clip(e.reference) } : {}), base: clip(e.base), candidate: clip(e.candidate) };
}

/** report.json's object, checked against the schema the action validates reports with. */
export function buildReport(input: ReportInput): Report {
  const report: Report = {
    tool: 'prune-gate',
    format: 1,
    verdict: input.verdict,
    task: input.task,
    target: input.target,
    quantize: input.quantize,
    ...(input.quantization ? { quantization: input.quantization } : {}),
    base: statsJson(input.base),
    candidate: statsJson(input.candidate),
    metrics: input.metrics.map(metricJson),
    latency: latencyJson(input.latency),
    ...(input.decode ? { decode: decodeJson(input.decode) } : {}),
    ...(input.target !== null && input.base.params > 0 ? { removed: (input.base.params - input.candidate.params) / input.base.params } : {}),
    steps: input.steps.map((s) => ({
      ratio: s.ratio,
      removed: s.removed,
      ...(s.short ? { short: s.short } : {}),
      metrics: s.metrics.map(metricJson),
      pass: s.pass,
      quality_pass: s.qualityPass,
      ...(s.passes ? { passes: s.passes } : {}),
    })),
    chosen_step: input.chosenStep,
    pruned: input.pruned.map((p) => ({ kind: p.kind, where: p.where, before: p.before, after: p.after, params: p.params })),
    skipped: input.skipped.map((s) => ({ where: s.where, reason: s.reason })),
    ...(input.quantizedInputs ? { quantized_inputs: input.quantizedInputs } : {}),
    ...(input.allocation
      ? {
          allocation: {
            ...input.allocation,
            ...(input.allocation.latency !== undefined ? { latency: finiteOrNull(input.allocation.latency) } : {}),
            tried: input.allocation.tried.map((t) => ({
              ...t,
              loss: finiteOrNull(t.loss),
              ...(t.latency !== undefined ? { latency: finiteOrNull(t.latency) } : {}),
            })),
          },
        }
      : {}),
    ...(input.budget ? { budget: input.budget } : {}),
    ...(input.environment ? { environment: input.environment } : {}),
    ...(input.memory ? { memory: { runtime_mib: input.memory.runtime, spread_mib: input.memory.spread, base_peak_mib: input.memory.base, candidate_peak_mib: input.memory.candidate } } : {}),
    ...(input.evaluationForm ? { evaluation_form: input.evaluationForm } : {}),
    ...(input.interface?.length ? { interface: input.interface } : {}),
    ...(input.examples?.length ? { examples: input.examples.map(clipExample) } : {}),
    ...(input.configFile !== undefined ? { config: input.configFile === null ? null : displayPath(path.resolve(input.configFile)) } : {}),
    ...(input.calibration ? { calibration: { ...input.calibration, path: displayPath(path.resolve(input.calibration.path)) } } : {}),
    ...(input.run ? { run: input.run } : {}),
    ...(input.pullRequest ? { pull_request: input.pullRequest } : {}),
  };
  const checked = ReportSchema.safeParse(report);
  if (!checked.success) {
    throw new Error(`internal: the report does not fit its own schema: ${JSON.stringify(checked.error.issues[0])}`);
  }
  return checked.data;
}

/** A report from a file, validated (the action's publish-only mode; untrusted input). */
export function readReport(file: string): Report {
  let data: unknown;
  try {
    data = JSON.parse(fs.readFileSync(file, 'utf8'));
  } catch (e) {
    throw new UserError(`${file}: not a readable JSON report: ${(e as Error).message.split('\n')[0]}`);
  }
  return parseReport(data, file);
}

export function parseReport(data: unknown, file: string): Report {
  const r = ReportSchema.safeParse(data);
  if (r.success) return r.data;
  const issue = r.error.issues[0];
  throw new UserError(`${file}: not a prune-gate report: ${issue.path.join('.') || '(top level)'}: ${issue.message}`);
}
