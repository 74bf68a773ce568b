import { execFile } from 'child_process';
import { createHash } from 'crypto';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { onnx } from 'onnx-proto';
import { UserError } from '../errors';
import { Feeds } from '../onnx/runtime';
import { displayPath } from '../util/paths';

/**
 * The `memory` metric (docs/contracts.md, "Config file"): the model's own peak resident memory,
 * in MiB. A fresh process loads the model with onnxruntime and runs one batch, as the app on the
 * device would; the same process without the model (Node.js, onnxruntime, the batch's inputs
 * read, a one-node session created and run on the same threads) peaks at tens of MiB by itself,
 * and that is subtracted. The baseline is a trivial session rather than the process before any
 * session because creating the first session sets up what every model pays alike (onnxruntime's
 * environment, the intra-op thread pool, the allocators); what is left is what this model adds:
 * its weights, its graph, its kernels and the activations of its batch.
 *
 * The child requires onnxruntime-node from where this process found it (the action installs it
 * at run time, outside any node_modules the child would search). Without a model it creates the
 * trivial session from the bytes it is given. Its peak is VmHWM, its own address space's: Linux's
 * getrusage maxrss of a forked and exec'd process starts at the parent's resident size, so the
 * gate's process, holding models, would set the figure (docs/measured.md, "The memory metric").
 * Where there is no /proc (macOS), getrusage's is taken.
 */
const CHILD = `
const [ortPath, model, feedsFile, threads, trivial] = process.argv.slice(1);
const fs = require('fs');
const ort = require(ortPath);
const ARRAYS = { float32: Float32Array, float64: Float64Array, float16: Uint16Array, int64: BigInt64Array, uint64: BigUint64Array,
  int32: Int32Array, uint32: Uint32Array, int16: Int16Array, uint16: Uint16Array, int8: Int8Array, uint8: Uint8Array, bool: Uint8Array };
(async () => {
  const options = { logSeverityLevel: 4 };
  if (Number(threads) > 0) options.intraOpNumThreads = Number(threads);
  const session = await ort.InferenceSession.create(model || Buffer.from(trivial, 'base64'), options);
  const feeds = {};
  for (const f of JSON.parse(fs.readFileSync(feedsFile, 'utf8'))) {
    const bytes = Buffer.from(f.data, 'base64');
    const Array = ARRAYS[f.type];
    const data = new Array(bytes.buffer.slice(bytes.byteOffset, bytes.byteOffset + bytes.byteLength));
    feeds[f.name] = new ort.Tensor(f.type, data, f.dims);
  }
  await session.run(model ? feeds : { x: new ort.Tensor('float32', new Float32Array(1), [1]) });
  let status = '';
  try { status = fs.readFileSync('/proc/self/status', 'utf8'); } catch {}
  const hwm = /VmHWM:\\s+(\\d+) kB/.exec(status);
  process.stdout.write(JSON.stringify({ peakKb: hwm ? Number(hwm[1]) : process.resourceUsage().maxRSS }));
})().catch((e) => {
  process.stderr.write(String((e && e.message) || e).split('\\n')[0]);
  process.exit(1);
});
`;

/**
 * glibc raises its mmap threshold each time a large block is freed, so whether the buffers
 * onnxruntime frees while loading return to the system or stay in the heap depends on the order
 * of allocations between threads: BERT-base's peak was anywhere from 607 to 802 MiB on identical runs
 * (docs/measured.md, "The memory metric"). Held at its default starting value (128 KiB), large
 * blocks are always mapped and unmapped, and the peak is what onnxruntime holds, the same on every
 * run. Other C libraries ignore the variable.
 */
const FIXED_MMAP_THRESHOLD = 'glibc.malloc.mmap_threshold=131072';

/** What the `memory` metric measured of one model, in MiB. */
export interface ModelMemory {
  /** The metric: the model's own peak RSS, `peak` less `runtime` (0 when it is not more). */
  net: number;
  /** Peak RSS of the process that loaded the model and ran the batch (the median of its runs). */
  peak: number;
  /** Peak RSS of the same process without the model (the median of its runs). */
  runtime: number;
  /** How much the runs without the model differ among themselves: a net figure within it is noise. */
  spread: number;
}

/** The peaks (MiB) the base's and the candidate's memory are net of, for the report. */
export interface MemoryPeaks {
  /** The process without a model, and how much its runs differ among themselves. */
  runtime: number;
  spread: number;
  /** The process with the base model, and with the candidate. */
  base: number;
  candidate: number;
}

/** Runs of the process without a model: its peak varies by a few hundred KiB from run to run. */
const RUNTIME_RUNS = 5;
/** A model whose first run nets less than this is run as often (each run is quick; larger models' ±0.3 MiB is under 0.5 %). */
const REPEAT_BELOW_MIB = 64;

/** Writes `feeds` where the measuring process reads them; returns the file's sha256. */
export function writeFeeds(feeds: Feeds, file: string): string {
  const spec = Object.entries(feeds).map(([name, t]) => {
    const data = t.data as unknown as ArrayBufferView;
    return { name, type: t.type, dims: t.dims, data: Buffer.from(data.buffer, data.byteOffset, data.byteLength).toString('base64') };
  });
  const text = JSON.stringify(spec);
  fs.writeFileSync(file, text);
  return createHash('sha256').update(text).digest('hex');
}

/** The one-node model of the process without a model: y = Identity(x), x a float32 [1]. */
function trivialModel(): string {
  const value = (name: string) => ({ name, type: { tensorType: { elemType: onnx.TensorProto.DataType.FLOAT, shape: { dim: [{ dimValue: 1 }] } } } });
  const proto = onnx.ModelProto.create({
    irVersion: 8,
    opsetImport: [{ domain: '', version: 13 }],
    graph: { name: 'no model', node: [{ opType: 'Identity', input: ['x'], output: ['y'] }], input: [value('x')], output: [value('y')] },
  });
  return Buffer.from(onnx.ModelProto.encode(proto).finish()).toString('base64');
}

/**
 * The measuring process: node with the script above, given the model (undefined: the process
 * without a model), the feeds file and the threads, and the environment it runs in.
 */
export function memoryCommand(modelFile: string | undefined, feedsFile: string, threads: number | undefined): { command: string; args: string[]; env: NodeJS.ProcessEnv } {
  const tunables = [process.env.GLIBC_TUNABLES, FIXED_MMAP_THRESHOLD].filter(Boolean).join(':');
  return {
    command: process.execPath,
    args: ['-e', CHILD, require.resolve('onnxruntime-node'), modelFile ? path.resolve(modelFile) : '', feedsFile, String(threads ?? 0), modelFile ? '' : trivialModel()],
    env: { ...process.env, GLIBC_TUNABLES: tunables },
  };
}

/** Peak RSS in MiB of one run of the measuring process. */
async function peakOnce(modelFile: string | undefined, feedsFile: string, threads: number | undefined): Promise<number> {
  const { command, args, env } = memoryCommand(modelFile, feedsFile, threads);
  const stdout = await new Promise<string>((resolve, reject) => {
    execFile(command, args, { maxBuffer: 1 << 20, env }, (error, out, err) => {
      if (error) reject(new Error(`measuring the memory of ${modelFile ?? 'onnxruntime without a model'} failed: ${err.trim() || error.message}`));
      else resolve(out);
    });
  });
  return (JSON.parse(stdout) as { peakKb: number }).peakKb / 1024;
}

function median(values: readonly number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  const mid = sorted.length >> 1;
  return sorted.length % 2 ? sorted[mid] : (sorted[mid - 1] + sorted[mid]) / 2;
}

/**
 * The model's own memory from the peaks (MiB) of its runs and of the runs without a model: the
 * difference of their medians, 0 when the model's runs peaked no higher.
 */
export function netMemory(modelPeaks: readonly number[], runtimePeaks: readonly number[]): ModelMemory {
  if (modelPeaks.length === 0 || runtimePeaks.length === 0) throw new Error('internal: no memory runs to compare');
  const peak = median(modelPeaks);
  const runtime = median(runtimePeaks);
  return { net: Math.max(0, peak - runtime), peak, runtime, spread: Math.max(...runtimePeaks) - Math.min(...runtimePeaks) };
}

/**
 * A ratio of the candidate's memory to the base's needs the base's to be measurable: more than
 * the runs without a model differ by. Throws a one-line error naming the base file otherwise.
 */
export function checkRatioMeasurable(base: ModelMemory, file: string): void {
  if (base.net > base.spread) return;
  const mib = (v: number) => `${v.toFixed(2)} MiB`;
  throw new UserError(
    `gate.memory: max-ratio is a ratio of the base model's own memory, and ${displayPath(file)} peaked at ${mib(base.peak)} against ${mib(base.runtime)} without a model, within the ${mib(base.spread)} that runs without a model differ by: the ratio would be noise; bound memory with max instead`,
  );
}

/** Peaks of the process without a model, by threads and feeds: measured once per run. */
const runtimePeaks = new Map<string, Promise<number[]>>();

async function runtimeRuns(feedsFile: string, digest: string, threads: number | undefined): Promise<number[]> {
  const key = `${threads ?? 0}:${digest}`;
  let runs = runtimePeaks.get(key);
  if (!runs) {
    runs = (async () => {
      const peaks: number[] = [];
      for (let i = 0; i < RUNTIME_RUNS; i++) peaks.push(await peakOnce(undefined, feedsFile, threads));
      return peaks;
    })();
    runtimePeaks.set(key, runs);
    runs.catch(() => runtimePeaks.delete(key));
  }
  return runs;
}

/**
 * The memory metric of `modelFile` loaded and run on `feeds` with `threads` intra-op threads:
 * its peak RSS net of the same process without it. The process without a model is measured
 * once for the feeds and threads (the base and the candidate of a run share it).
 */
export async function measureMemory(modelFile: string, feeds: Feeds, threads: number | undefined): Promise<ModelMemory> {
  const dir = fs.mkdtempSync(path.join(os.tmpdir(), 'prune-gate-memory-'));
  try {
    const feedsFile = path.join(dir, 'feeds.json');
    const digest = writeFeeds(feeds, feedsFile);
    const runtime = await runtimeRuns(feedsFile, digest, threads);
    const peaks = [await peakOnce(modelFile, feedsFile, threads)];
    if (peaks[0] - median(runtime) < REPEAT_BELOW_MIB) {
      while (peaks.length < RUNTIME_RUNS) peaks.push(await peakOnce(modelFile, feedsFile, threads));
    }
    return netMemory(peaks, runtime);
  } finally {
    fs.rmSync(dir, { recursive: true, force: true });
  }
}

/** A memory amount as written in a bound: `512 MiB`, `1 GiB`, or a plain number of MiB. Undefined when it is none of these. */
export function parseMebibytes(value: unknown): number | undefined {
  if (typeof value === 'number') return Number.isFinite(value) && value > 0 ? value : undefined;
  const m = typeof value === 'string' ? /^\s*(\d+(?:\.\d+)?|\.\d+)\s*(MiB|GiB)?\s*$/i.exec(value) : null;
  if (!m) return undefined;
  const n = Number(m[1]) * (m[2]?.toLowerCase() === 'gib' ? 1024 : 1);
  return n > 0 ? n : undefined;
}
