import * as crypto from 'crypto';
import * as fs from 'fs';
import * as path from 'path';
import type { Config } from '../config/config';
import { UserError } from '../errors';
import { OnnxModel } from '../onnx/model';
import { displayPath } from '../util/paths';

/**
 * Splitting the gate over a GitHub Actions matrix (docs/contracts.md, "Beyond one runner"):
 * every job rebuilds the same candidates, so the plan refuses what would make them differ
 * between jobs, and names itself by a hash of everything the result depends on, so that a merge
 * can refuse partial results of another plan.
 */

/** The most jobs a plan splits into (GitHub's matrix allows 256 jobs). */
export const MAX_JOBS = 256;

/** The settings a plan cannot split: each makes a job's candidates or verdict depend on what only that job sees. */
export function checkSplittable(config: Config): void {
  const where = config.file ? displayPath(config.file) : 'the config';
  const { prune } = config;
  if (prune.align === 'auto') {
    throw new UserError(`${where}: prune.align: auto chooses widths by timing candidates on each machine, so jobs could build different models; set a number (1 keeps the widths as allocated, 8 rounds them)`);
  }
  if (prune.allocation === 'auto' || prune.allocation === 'measured') {
    throw new UserError(`${where}: prune.allocation: ${prune.allocation} measures candidates on the whole calibration set, which no job holds; choose global, uniform or ffn-only`);
  }
  if (prune.compensate === 'auto') {
    throw new UserError(`${where}: prune.compensate: auto measures candidates on the whole calibration set, which no job holds; choose none, bias or reconstruct`);
  }
  const unsplittable = config.gate.find((r) => r.metric === 'latency-p50' || r.metric === 'latency-p95' || r.metric === 'memory');
  if (unsplittable) {
    throw new UserError(`${where}: gate.${unsplittable.metric}: measured on one machine, side by side with the base, not per job; remove the bound to split the gate, or run it on one machine`);
  }
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

/** Adds a file's name (relative to `root`) and bytes to the hash, streamed. */
function hashFile(hash: crypto.Hash, file: string, root: string): void {
  hash.update(`${path.relative(root, file)}\0${fs.statSync(file).size}\0`);
  const fd = fs.openSync(file, 'r');
  try {
    const buffer = Buffer.allocUnsafe(1 << 22);
    for (let n; (n = fs.readSync(fd, buffer, 0, buffer.length, null)) > 0; ) hash.update(buffer.subarray(0, n));
  } finally {
    fs.closeSync(fd);
  }
}

/**
 * The plan's identity: a hash of the settings (the config as resolved, paths left out), the
 * model's bytes with its external data, the calibration set's files and the number of jobs.
 */
export function planIdentity(config: Config, jobs: number): string {
  const hash = crypto.createHash('sha256');
  const { file: _file, model, calibration, ...settings } = config;
  hash.update(`prune-gate plan v1\0jobs ${jobs}\0`);
  hash.update(JSON.stringify(settings));
  const modelFile = model as string;
  for (const f of OnnxModel.read(modelFile).files()) hashFile(hash, f, path.dirname(modelFile));
  const calibrationRoot = fs.statSync(calibration as string).isDirectory() ? (calibration as string) : path.dirname(calibration as string);
  for (const f of filesOf(calibration as string)) hashFile(hash, f, calibrationRoot);
  return hash.digest('hex');
}
