import * as crypto from 'crypto';
import * as fs from 'fs';
import * as path from 'path';
import type { Config } from '../config/config';
import { UserError } from '../errors';
import { Batch, CalibrationSet, batchCount, batches, readCalibration, shardOf, tokenCount } from '../eval/calibration';
import { currentEnvironment } from '../eval/environment';
import { Evaluator, LOSS_NAME, ModelStats, sizeValues } from '../eval/evaluator';
import { LatencyResult, latencyIntervals, latencyValues, measureLatency } from '../eval/latency';
import type { MetricValues, Task } from '../eval/metric-names';
import { MetricSums, SELF_COMPARISON, addSums, comparisonValues, taskValues } from '../eval/metrics';
import { GateRule, JudgedValues, MetricResult, checkRulesAgainstBase, checkRulesFitTask, failures, judge, latencySettled, verdictOf } from '../gate/gate';
import { isLatency } from '../gate/metrics';
import { SearchDeps, StepInfo, gradualSearch, stepRatios } from '../gate/search';
import { countParams } from '../graph/cost';
import { OnnxModel } from '../onnx/model';
import { createSession, sessionThreads, withSessionThreads } from '../onnx/runtime';
import { ModelMemory, measureMemory } from '../eval/memory';
import { DamageMeasure, PassRecord, PassRecording, PassReplay, RUN_PASSES } from '../prune';
import { pruneInFormat } from './quantized-inputs';
import { buildReport } from '../report/build';
import type { ReportPullRequest, ReportQuantization, ReportRun } from '../report/schema';
import { writeFileAtomic, writeJsonAtomic } from '../util/files';
import { hashFileInto, sha256 } from '../util/hash';
import { BaseOrigin, baseOrigin, gateModelSettings, modelSha256 } from './provenance';
import { checkOutputFolder, displayPath } from '../util/paths';
import { Job, MAX_JOBS, PARTIAL_JSON, PASSES_FILE } from './job';
import { RunOutcome, STEPS_DIR, WrittenCandidate, boundsMemory, candidateSteps, measureMemoryIfBounded, promote, pruneSettings, quantizeWith, writeReports } from './run';

/**
 * Splitting the gate over a GitHub Actions matrix (docs/contracts.md, "Beyond one runner"):
 * every job rebuilds the same candidates, so the plan refuses what would make them differ
 * between jobs, and names itself by a hash of everything the result depends on, so that a merge
 * can refuse partial results of another plan.
 */


/**
 * The settings a plan cannot split: each makes a job's candidates depend on what only that job
 * sees. Measured choices (allocation auto or measured, compensation auto) split: every job
 * measures the same losses on the whole set (wholeSetDamage). Latency and memory bounds split:
 * the merge measures them on its one machine.
 */
export function checkSplittable(config: Config): void {
  const where = config.file ? displayPath(config.file) : 'the config';
  const { prune } = config;
  if (prune.align === 'auto') {
    throw new UserError(`${where}: prune.align: auto takes widths from each runner's convolution kernels and checks them by timing there, so jobs could build different models; set a number (1 keeps the widths as allocated, 8 rounds them)`);
  }
}

/**
 * The config's calibration set, when jobs can split it. A generation set cannot be split yet:
 * its prompts are decoded in batches sorted by length over the whole set, so a job's shard would
 * decode in other batches, with other padding and rounding, than one machine (docs/contracts.md).
 */
export async function splittableSet(config: Config, base: OnnxModel): Promise<CalibrationSet> {
  const set = await readCalibration(config.calibration as string, base);
  if (set.generation) {
    throw new UserError(`${set.source}: a generation set cannot be split yet: its prompts are decoded in batches sorted by length over the whole set, which a job's share would not reproduce exactly; run the gate on one machine`);
  }
  return set;
}

/** The matrix GitHub's `strategy.matrix` takes: one entry per job, "K/N". */
export function matrixOf(jobs: number): { include: { job: string }[] } {
  if (!Number.isInteger(jobs) || jobs < 1 || jobs > MAX_JOBS) throw new UserError(`--jobs: expected a whole number of jobs from 1 to ${MAX_JOBS}, found ${jobs}`);
  return { include: Array.from({ length: jobs }, (_, i) => ({ job: `${i + 1}/${jobs}` })) };
}

/** The files a path stands for: the file, or every file under the folder, in a stable order. */
function filesOf(location: string): string[] {
  const stat = fs.statSync(location);
  if (!stat.isDirectory()) return [location];
  return fs
    .readdirSync(location, { withFileTypes: true })
    .sort((a, b) => (a.name < b.name ? -1 : a.name > b.name ? 1 : 0))
    .flatMap((e) => (e.isDirectory() ? filesOf(path.join(location, e.name)) : e.isFile() ? [path.join(location, e.name)] : []));
}

/**
 * The plan's identity: a hash of the settings (the config as resolved, paths left out), the
 * model's bytes with its external data (`baseSha256`, modelSha256 of the config's model), the
 * calibration set's files and the number of jobs.
 */
export function planIdentity(config: Config, jobs: number, baseSha256: string): string {
  const hash = crypto.createHash('sha256');
  const { file: _file, model: _model, calibration, ...settings } = config;
  // v2: partial.json names each step's candidate by its sha256, which a merge checks.
  hash.update(`prune-gate plan v2\0jobs ${jobs}\0`);
  hash.update(JSON.stringify(settings));
  hash.update(`\0model ${baseSha256}\0`);
  const calibrationRoot = fs.statSync(calibration as string).isDirectory() ? (calibration as string) : path.dirname(calibration as string);
  for (const f of filesOf(calibration as string)) {
    hash.update(`${path.relative(calibrationRoot, f)}\0${fs.statSync(f).size}\0`);
    hashFileInto(hash, f);
  }
  return hash.digest('hex');
}

// ---------------------------------------------------------------------------------------------
// A job: the whole search's candidates, its shard of the calibration set evaluated
// ---------------------------------------------------------------------------------------------

/** What one step's candidate was, in one job: the same in every job but for the sums. */
interface PartialStep {
  ratio: number;
  /** The candidate's written bytes (model file, then external data), as modelSha256 hashes them: what the merge checks its rebuild against. */
  sha256: string;
  candidate: ModelStats;
  sums: MetricSums;
  quantization?: ReportQuantization;
}

/** partial.json: one job's share of the gate. */
export interface Partial {
  tool: 'prune-gate';
  kind: 'partial';
  plan: string;
  job: Job;
  task: Task;
  /** Samples this job evaluated per model (the base and each step's candidate), and how many models. */
  evaluated: { samples: number; models: number };
  calibration: { samples: number; tokens: number | null };
  base: { stats: ModelStats; sums: MetricSums };
  steps: PartialStep[];
  /** Job 1's record of the engine's passes over the calibration set (PASSES_FILE beside it). */
  passes?: { file: string; sha256: string; bytes: number; passes: number; kept: number };
}

/**
 * At most this many bytes of pass results go into job 1's record (an artifact to upload): the
 * statistics of activation importance and bias compensation are a few numbers per channel, but
 * least-squares reconstruction's covariances grow with the square of a layer's width. A pass
 * left out runs again in the merge.
 */
export const MAX_RECORDED_BYTES = 1 << 30;

/** The search's steps as a matrix job builds them: every step, since only the merge knows where one machine would have stopped. */
export async function runJob(config: Config, job: Job, out: string, log: (line: string) => void = () => undefined): Promise<Partial> {
  return withSessionThreads(config.device.threads, async () => {
    checkSplittable(config);
    checkOutputFolder(out, '--out');
    const base = OnnxModel.read(config.model as string);
    const baseSha256 = modelSha256(base);
    const plan = planIdentity(config, job.count, baseSha256);
    const set = await splittableSet(config, base);
    checkRulesFitTask(config.gate, set, config.file ? displayPath(config.file) : 'the gate');
    const shard = shardOf(set, job.index, job.count);
    log(`job ${job.index}/${job.count} of plan ${plan.slice(0, 16)}: evaluating ${shard.count} of the ${set.count} calibration samples`);
    const evaluator = await Evaluator.create(base, shard, { latency: { warmup: 0, runs: 1 }, log });
    const outDir = path.resolve(out);
    const stepsDir = path.join(outDir, STEPS_DIR);
    const steps: PartialStep[] = [];
    let baseSums: MetricSums | undefined;
    // Every job runs the same passes; job 1 keeps their results for the merge.
    const recording = job.index === 1 ? new PassRecording(MAX_RECORDED_BYTES) : undefined;
    const measure = wholeSetDamage(config, base, set, log);
    try {
      const origin = baseOrigin(base, gateModelSettings(config), baseSha256);
      const deps = rebuiltSteps(config, origin, set, stepsDir, recording ?? RUN_PASSES, measure.damage, log, async (model, written, step) => {
        const evaluation = await evaluator.evaluate(model);
        baseSums ??= evaluation.sums.base;
        steps.push({ ratio: step.ratio, sha256: modelSha256(model), candidate: evaluation.candidate, sums: evaluation.sums.candidate, quantization: written.quantization });
        return [];
      });
      await gradualSearch(base, countParams(base), 'fixed', stepRatios(config.prune.target, config.prune.maxTarget, config.prune.steps), deps);
      const partial: Partial = {
        tool: 'prune-gate',
        kind: 'partial',
        plan,
        job,
        task: set.task,
        evaluated: { samples: shard.count, models: 1 + steps.length },
        calibration: { samples: set.count, tokens: tokenCount(set) },
        base: { stats: evaluator.base, sums: baseSums ?? {} },
        steps,
      };
      fs.mkdirSync(outDir, { recursive: true });
      if (recording) {
        const data = recording.serialize();
        writeFileAtomic(path.join(outDir, PASSES_FILE), data);
        const { passes, kept } = recording.summary();
        partial.passes = { file: PASSES_FILE, sha256: sha256(data), bytes: data.length, passes, kept };
        log(`recorded ${kept} of ${passes} passes over the calibration set for the merge (${PASSES_FILE}, ${(data.length / 2 ** 20).toFixed(1)} MiB)`);
      }
      writeJsonAtomic(path.join(outDir, PARTIAL_JSON), partial);
      return partial;
    } finally {
      await evaluator.close();
      await measure.close();
      fs.rmSync(stepsDir, { recursive: true, force: true });
    }
  });
}

/** Allocation or compensation chosen by measuring candidates (not fixed by the config). */
function measuresChoices(config: Config): boolean {
  return config.prune.allocation === 'auto' || config.prune.allocation === 'measured' || config.prune.compensate === 'auto';
}

/**
 * The damage measure of one machine's search, on the whole calibration set, which `auto` and
 * `measured` choices compare candidates by: every job measures the same losses on the same
 * batches, so every job makes the same choice (job 1 records them for the merge). Its base pass
 * runs at the first measurement. A config that fixes its choices measures nothing: report.json
 * then has no loss for them.
 */
function wholeSetDamage(config: Config, base: OnnxModel, set: CalibrationSet, log: (line: string) => void): { damage: DamageMeasure; close(): Promise<void> } {
  if (!measuresChoices(config)) {
    return { damage: { name: 'not measured: the gate was split over jobs, none of which evaluates the whole set', loss: async () => NaN }, close: async () => undefined };
  }
  let evaluator: Promise<Evaluator> | undefined;
  const whole = () => (evaluator ??= Evaluator.create(base, set, { latency: config.latency, log }));
  return {
    damage: {
      name: LOSS_NAME,
      samples: set.count,
      loss: async (candidate, share, tap) => (await whole()).loss(candidate, share, tap),
      losses: async (candidate, shares, tap) => (await whole()).losses(candidate, shares, tap),
      batches: batchCount(set),
      sampleLosses: async (candidate, extra, outputs, batched) => (await whole()).sampleLosses(candidate, extra, outputs, batched),
    },
    close: async () => {
      if (evaluator) await (await evaluator).close();
    },
  };
}

/**
 * The search's steps rebuilt exactly as one machine builds them (the engine on the whole set's
 * statistics), with `score` deciding what a step's metrics are.
 */
function rebuiltSteps(
  config: Config,
  origin: BaseOrigin,
  set: CalibrationSet,
  stepsDir: string,
  passes: PassRecord,
  damage: DamageMeasure,
  log: (line: string) => void,
  score: (model: OnnxModel, written: WrittenCandidate, step: StepInfo) => Promise<MetricResult[]>,
): SearchDeps<WrittenCandidate> {
  return candidateSteps<WrittenCandidate>(
    config,
    origin,
    stepsDir,
    (model, target, memory, step) =>
      pruneInFormat(
        model,
        {
          ...pruneSettings(config, set, target, memory, log),
          passes,
          damage,
          final: step.index === step.count,
        },
        config.prune.quantized,
      ),
    quantizeWith(set, config.keepNames, log, passes, config.quantizeMethod),
    async (model, written, step) => ({ metrics: await score(model, written, step), artifact: written }),
    log,
  );
}

// ---------------------------------------------------------------------------------------------
// The merge: the jobs' sums added, the search replayed, the chosen candidate rebuilt and timed
// ---------------------------------------------------------------------------------------------

/** A job's partial.json as read: the folder it is in, its name for messages, and what it holds. */
interface PartialFile {
  dir: string;
  file: string;
  partial: Partial;
}

function readPartial(dir: string): PartialFile {
  const file = path.join(dir, PARTIAL_JSON);
  let data: Partial;
  try {
    data = JSON.parse(fs.readFileSync(file, 'utf8')) as Partial;
  } catch (e) {
    throw new UserError(`${displayPath(file)}: not a readable partial result (${String((e as Error).message).split('\n')[0]}); give the folders the jobs wrote with run --job`);
  }
  if (data?.tool !== 'prune-gate' || data.kind !== 'partial' || typeof data.plan !== 'string' || !data.job || !Array.isArray(data.steps)) {
    throw new UserError(`${displayPath(file)}: not a partial result of prune-gate run --job`);
  }
  return { dir, file: displayPath(file), partial: data };
}

/**
 * The partial results of every job of one plan, once each, in job order, or a one-line refusal.
 * `planOf` gives the plan's identity for the job count the first folder names.
 */
function collectPartials(dirs: readonly string[], planOf: (jobs: number) => string): { plan: string; read: PartialFile[] } {
  const read = dirs.map(readPartial);
  const plan = planOf(read[0].partial.job.count);
  for (const { file, partial } of read) {
    if (partial.plan !== plan) {
      throw new UserError(`${file}: from another plan (${partial.plan.slice(0, 16)}, not ${plan.slice(0, 16)}): its config, model, calibration set or job count differ from this merge's`);
    }
  }
  const count = read[0]?.partial.job.count ?? 0;
  const byJob = new Map<number, string>();
  for (const { file, partial } of read) {
    const seen = byJob.get(partial.job.index);
    if (seen) throw new UserError(`job ${partial.job.index}/${count} appears twice: ${seen} and ${file}; give each job's folder once`);
    byJob.set(partial.job.index, file);
  }
  for (let k = 1; k <= count; k++) {
    if (!byJob.has(k)) throw new UserError(`job ${k}/${count} is missing: no partial.json for it among the ${read.length} folders given; wait for every job, or rerun job ${k}`);
  }
  read.sort((a, b) => a.partial.job.index - b.partial.job.index);
  for (const { file, partial } of read) {
    if (partial.steps.length !== read[0].partial.steps.length) {
      throw new UserError(`${file}: job ${partial.job.index}/${count} lists ${partial.steps.length} steps, job 1 ${read[0].partial.steps.length}: not a result of this plan's search; give the folders the jobs wrote, unchanged`);
    }
  }
  return { plan, read };
}

/**
 * `prune-gate merge`: the report, verdict and files one machine would have written, from the
 * jobs' partial results: sums added, every step judged, the search's stop and choice replayed
 * while the candidates are rebuilt, the chosen one timed side by side with the base.
 */
export async function mergeJobs(
  config: Config,
  dirs: readonly string[],
  out: string,
  log: (line: string) => void = () => undefined,
  recorded: { pullRequest?: ReportPullRequest; run?: ReportRun } = {},
): Promise<RunOutcome> {
  return withSessionThreads(config.device.threads, async () => {
    if (dirs.length === 0) throw new UserError('merge: give the folders the jobs wrote (run --job K/N --out DIR)');
    checkSplittable(config);
    checkOutputFolder(out, '--out');
    const base = OnnxModel.read(config.model as string);
    const baseSha256 = modelSha256(base);
    const { plan, read } = collectPartials(dirs, (jobs) => planIdentity(config, jobs, baseSha256));
    const partials = read.map((r) => r.partial);
    const set = await readCalibration(config.calibration as string, base);
    const task = set.task;
    const rules = config.gate;
    const baseSums = addSums(...partials.map((p) => p.base.sums));
    const baseStats = partials[0].base.stats;
    const baseValues: MetricValues = { ...taskValues(task, baseSums), ...SELF_COMPARISON, ...sizeValues(baseStats) };
    checkRulesAgainstBase(rules, baseValues, config.file ? displayPath(config.file) : 'the gate');
    const stepValues = partials[0].steps.map((step, i) => {
      const sums = addSums(...partials.map((p) => p.steps[i].sums));
      return { base: baseValues, candidate: { ...taskValues(task, sums), ...comparisonValues(sums), ...sizeValues(step.candidate) } };
    });
    const passes = recordedPasses(read[0], log);
    const timesSteps = rules.some(boundsLatency);
    log(`merging ${partials.length} jobs of plan ${plan.slice(0, 16)}: ${partials.reduce((n, p) => n + p.evaluated.samples, 0)} samples evaluated per model`);
    const outDir = path.resolve(out);
    const stepsDir = path.join(outDir, STEPS_DIR);
    const timer = await SideBySide.create(config, set);
    // Measured choices come from job 1's record; without it, measured here on the whole set.
    const measure = wholeSetDamage(config, base, set, log);
    // A latency bound judges every step, as on one machine: each rebuilt candidate is timed here.
    const latencies = new Map<number, LatencyResult>();
    try {
      const origin = baseOrigin(base, gateModelSettings(config), baseSha256);
      const deps = rebuiltSteps(config, origin, set, stepsDir, passes, measure.damage, log, async (model, written, step) => {
        checkSameCandidate(read, step.index, modelSha256(model));
        const values = stepValues[step.index - 1];
        if (timesSteps) {
          const latency = await timer.time(written.file);
          latencies.set(step.index - 1, latency);
          withLatency(values, latency);
        }
        return judge(values, rules.filter((r) => !boundsMemory(r)), task, config.latency.onInconclusive);
      });
      const mode = config.prune.target === 'auto' ? 'auto' : 'fixed';
      const result = await gradualSearch(base, countParams(base), mode, stepRatios(config.prune.target, config.prune.maxTarget, config.prune.steps), deps);
      const { replayed, run } = passes instanceof PassReplay ? passes.replayed() : { replayed: 0, run: 0 };
      if (replayed + run > 0) {
        log(`rebuilt the candidates with ${replayed} passes over the calibration set replayed from job 1${run ? ` and ${run} run here` : ''}`);
      }
      const chosen = result.artifact;
      const latency = latencies.get(result.chosen) ?? (await timer.time(chosen.file));
      const values = withLatency(stepValues[result.chosen], latency);
      const memoryPeaks = await measureMemoryIfBounded((file) => timer.memory(file), rules, values, [config.model as string, chosen.file], log);
      const metrics = judge(values, rules, task, config.latency.onInconclusive);
      const verdict = verdictOf(metrics);
      result.steps[result.chosen] = { ...result.steps[result.chosen], metrics, pass: verdict === 'pass' };
      const files = promote(chosen, outDir);
      const step = partials[0].steps[result.chosen];
      const report = buildReport({
        verdict,
        task,
        configFile: config.file ?? null,
        calibration: { path: config.calibration as string, samples: partials[0].calibration.samples, tokens: partials[0].calibration.tokens },
        target: config.prune.target,
        quantize: config.quantize,
        quantization: step.quantization,
        base: baseStats,
        candidate: { ...step.candidate, path: files.model },
        metrics,
        latency,
        steps: result.steps,
        chosenStep: result.chosen,
        pruned: result.pruned,
        skipped: result.skipped,
        allocation: result.allocation,
        environment: currentEnvironment(),
        memory: memoryPeaks,
        pullRequest: recorded.pullRequest,
        run: recorded.run,
      });
      const outcome = writeReports(report, outDir, files);
      log(verdict === 'pass' ? `gate passed at step ${result.chosen + 1}` : `gate failed: ${failures(metrics).join(', ')}`);
      return outcome;
    } finally {
      await timer.release();
      await measure.close();
      fs.rmSync(stepsDir, { recursive: true, force: true });
    }
  });
}

/**
 * Refuses, in one line, the merge of jobs that evaluated another candidate at step `index` than
 * the one the merge rebuilt (`rebuilt`, its sha256): their sums are of another model. Parameter
 * counts and sizes can agree while the weights differ (two CPUs under one runner label round
 * differently), so the check is on the written bytes.
 */
function checkSameCandidate(read: readonly PartialFile[], index: number, rebuilt: string): void {
  const built = (p: Partial) => p.steps[index - 1]?.sha256;
  const name = (p: Partial) => `job ${p.job.index}/${p.job.count}`;
  const same = read.filter((r) => built(r.partial) === rebuilt);
  const other = read.find((r) => built(r.partial) !== rebuilt);
  if (!other) return;
  const short = (sha: string | undefined) => (sha ? sha.slice(0, 16) : 'none');
  if (same.length === 0) {
    throw new UserError(
      `step ${index}: the merge rebuilt a candidate (sha256 ${short(rebuilt)}) that no job built (${name(other.partial)}: ${short(built(other.partial))}): this machine builds other models than the jobs' runners (another onnxruntime or CPU?); merge on the jobs' runner type`,
    );
  }
  throw new UserError(
    `${other.file}: ${name(other.partial)} evaluated another step ${index} candidate (sha256 ${short(built(other.partial))}) than the merge rebuilt and ${same.map((r) => name(r.partial)).join(', ')} built (${short(rebuilt)}): its runner built another model (another CPU under the same runner label?), so its sums are not of this one; rerun it on the runner type of ${same.map((r) => name(r.partial)).join(', ')}`,
  );
}

const boundsLatency = (r: GateRule) => isLatency(r.metric);

/** `values` with a side-by-side timing's medians and 95th percentiles, for the base and the candidate. */
function withLatency(values: JudgedValues, latency: LatencyResult): JudgedValues {
  values.base = { ...values.base, ...latencyValues(latency.base) };
  values.candidate = { ...values.candidate, ...latencyValues(latency.candidate) };
  values.intervals = { ...values.intervals, ...latencyIntervals(latency) };
  return values;
}

/**
 * Job 1's record of the engine's passes, so the merge rebuilds the candidates without running
 * the model over the calibration set again; without it (not uploaded), the passes run here.
 */
function recordedPasses({ dir, partial: { passes } }: PartialFile, log: (line: string) => void): PassRecord {
  const file = path.join(dir, PASSES_FILE);
  if (!passes || !fs.existsSync(file)) {
    log(`no ${PASSES_FILE} beside job 1's partial.json: the merge runs the pruning's passes over the calibration set again`);
    return RUN_PASSES;
  }
  const data = fs.readFileSync(file);
  if (sha256(data) !== passes.sha256) {
    throw new UserError(`${displayPath(file)}: not the record job 1's partial.json names (its sha256 differs); give the folder job 1 wrote, unchanged`);
  }
  return PassReplay.parse(data, displayPath(file));
}

/**
 * The merge's one machine: candidates timed against the base, runs alternated on the first
 * calibration batch (as the evaluator times them on one machine), and the memory metric.
 */
class SideBySide {
  private constructor(
    private readonly config: Config,
    private readonly base: Awaited<ReturnType<typeof createSession>>,
    private readonly feeds: Batch['feeds'],
  ) {}

  static async create(config: Config, set: CalibrationSet): Promise<SideBySide> {
    return new SideBySide(config, await createSession(config.model as string), (batches(set).next().value as Batch).feeds);
  }

  async time(candidateFile: string): Promise<LatencyResult> {
    const candidate = await createSession(candidateFile);
    try {
      return await measureLatency(this.base, candidate, this.feeds, { ...this.config.latency, settled: latencySettled(this.config.gate) });
    } finally {
      await candidate.release();
    }
  }

  memory(file: string): Promise<ModelMemory> {
    return measureMemory(file, this.feeds, sessionThreads());
  }

  release(): Promise<void> {
    return this.base.release();
  }
}
