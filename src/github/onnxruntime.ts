import * as actionsCache from '@actions/cache';
import { spawn } from 'child_process';
import * as fs from 'fs';
import { createRequire } from 'module';
import * as path from 'path';
import { UserError } from '../errors';

/**
 * How the action gets onnxruntime-node. A JavaScript action runs dist/ as it is, with no
 * `npm install`, and a bundler cannot inline onnxruntime-node (it loads its native library by a
 * computed path). So dist/index.js leaves it external and, on a cold start, installs this exact
 * version with the runner's own npm into a cache folder (the runner's tool cache, else beside
 * the action), keeps only this platform's binaries, and adds that folder to the bundle's module
 * search paths before the pipeline is loaded. A warm start (self-hosted runner, second step in a
 * job) finds the folder and installs nothing. Publishing a report needs no runtime at all.
 */

/** The version dist/ is built and tested against (test/action-runtime.test.ts checks it is the installed one). */
export const ONNXRUNTIME_NODE_VERSION = '1.30.0';
/** Its tarball's integrity, as the npm registry published it: a tarball that differs is refused. */
export const ONNXRUNTIME_NODE_INTEGRITY = 'sha512-twhs1C2C/BFkz1yc5OY0KIU2GUq6DURO7hD4bx5Q2Qy3nAMJwRXW8xU3NVczE29VA9lolLOYepoD8fjTGOfIqw==';
/** The whole install (download and unpack) must finish within this many seconds (PRUNE_GATE_INSTALL_TIMEOUT overrides it). */
const INSTALL_TIMEOUT_S = 300;
const PACKAGE = 'onnxruntime-node';
const DONE = '.prune-gate-complete';

export interface RuntimeOptions {
  /** The bundle's module: its `paths` are where its `require('onnxruntime-node')` looks. */
  module: NodeModule;
  /** The action's folder (the parent of dist/): the cache goes there without a tool cache. */
  actionRoot: string;
  env?: NodeJS.ProcessEnv;
  log?: (line: string) => void;
}

export interface RuntimeInfo {
  /** Where onnxruntime-node's package.json is. */
  packageDir: string;
  /** cache: the runner's tool cache; actions-cache: restored from the Actions cache service. */
  source: 'resolved' | 'cache' | 'actions-cache' | 'installed';
  seconds?: number;
}

/** The cache folder for this version and platform. */
export function runtimeDir(actionRoot: string, env: NodeJS.ProcessEnv = process.env): string {
  const leaf = path.join(PACKAGE, ONNXRUNTIME_NODE_VERSION, `${process.platform}-${process.arch}`);
  return env.RUNNER_TOOL_CACHE ? path.join(env.RUNNER_TOOL_CACHE, 'prune-gate', leaf) : path.join(actionRoot, '.runtime', leaf);
}

function resolvable(from: string): string | undefined {
  try {
    return path.dirname(createRequire(from).resolve(`${PACKAGE}/package.json`));
  } catch {
    return undefined;
  }
}

/** Makes `require('onnxruntime-node')` work from the bundle, installing it first when needed. */
export async function ensureOnnxRuntime(o: RuntimeOptions): Promise<RuntimeInfo> {
  const env = o.env ?? process.env;
  const log = o.log ?? (() => undefined);
  // A checkout with node_modules (a local run, this repository's tests) already has it.
  const found = resolvable(o.module.filename);
  if (found) return { packageDir: found, source: 'resolved' };

  const dir = runtimeDir(o.actionRoot, env);
  const modules = path.join(dir, 'node_modules');
  let source: RuntimeInfo['source'] = 'cache';
  let seconds: number | undefined;
  if (!fs.existsSync(path.join(dir, DONE)) && (await restoreFromActionsCache(dir, log))) {
    source = 'actions-cache';
  } else if (!fs.existsSync(path.join(dir, DONE))) {
    source = 'installed';
    const started = Date.now();
    log(`installing ${PACKAGE}@${ONNXRUNTIME_NODE_VERSION} into ${dir} (once per runner: it is not bundled, it ships a native library)`);
    await install(dir, env, log);
    seconds = (Date.now() - started) / 1000;
    log(`installed ${PACKAGE} in ${seconds.toFixed(1)} s`);
    await saveToActionsCache(dir, log);
  } else {
    log(`using ${PACKAGE}@${ONNXRUNTIME_NODE_VERSION} from ${dir}`);
  }
  if (!o.module.paths.includes(modules)) o.module.paths.unshift(modules);
  return { packageDir: path.join(modules, PACKAGE), source, seconds };
}

/** The Actions cache key of this runtime: the version, platform and architecture it is for. */
export function runtimeCacheKey(): string {
  return `prune-gate-${PACKAGE}-${ONNXRUNTIME_NODE_VERSION}-${process.platform}-${process.arch}`;
}

/**
 * The runtime from the Actions cache service, when the runner offers one (a hosted runner's
 * tool cache is empty on every new VM, the Actions cache is the repository's). A miss or an
 * unreachable service is not an error: the install follows. The service is found, as
 * @actions/cache finds it, from the runner's ACTIONS_* variables.
 */
async function restoreFromActionsCache(dir: string, log: (line: string) => void): Promise<boolean> {
  if (!actionsCache.isFeatureAvailable()) return false;
  try {
    const hit = await actionsCache.restoreCache([dir], runtimeCacheKey());
    if (hit && fs.existsSync(path.join(dir, DONE))) {
      log(`restored ${PACKAGE}@${ONNXRUNTIME_NODE_VERSION} from the Actions cache (key ${hit})`);
      return true;
    }
    if (hit) fs.rmSync(dir, { recursive: true, force: true }); // an incomplete entry: install instead
    log(`${PACKAGE}@${ONNXRUNTIME_NODE_VERSION} was not restored from the Actions cache (key ${runtimeCacheKey()}): installing it`);
  } catch (e) {
    log(`the Actions cache could not be read (${String((e as Error)?.message ?? e).split('\n')[0]}): installing instead`);
  }
  return false;
}

/** Saves a fresh install for the repository's next jobs; a failure only costs them the install. */
async function saveToActionsCache(dir: string, log: (line: string) => void): Promise<void> {
  if (!actionsCache.isFeatureAvailable()) return;
  try {
    await actionsCache.saveCache([dir], runtimeCacheKey());
    log(`saved ${PACKAGE}@${ONNXRUNTIME_NODE_VERSION} to the Actions cache (key ${runtimeCacheKey()})`);
  } catch (e) {
    log(`${PACKAGE} was not saved to the Actions cache (${String((e as Error)?.message ?? e).split('\n')[0]}); the next job installs it again`);
  }
}

/** npm-cli.js next to this node (the runner's node24 is a full Node.js layout), else npm on PATH. */
function npmCommand(): { command: string; args: string[]; shell: boolean } {
  const bin = path.dirname(process.execPath);
  for (const cli of [path.join(bin, '..', 'lib', 'node_modules', 'npm', 'bin', 'npm-cli.js'), path.join(bin, 'node_modules', 'npm', 'bin', 'npm-cli.js')]) {
    if (fs.existsSync(cli)) return { command: process.execPath, args: [cli], shell: false };
  }
  return { command: process.platform === 'win32' ? 'npm.cmd' : 'npm', args: [], shell: process.platform === 'win32' };
}

/** The install's deadline in seconds: PRUNE_GATE_INSTALL_TIMEOUT, else the default. */
function installTimeout(env: NodeJS.ProcessEnv): number {
  const given = Number(env.PRUNE_GATE_INSTALL_TIMEOUT);
  return Number.isFinite(given) && given > 0 ? given : INSTALL_TIMEOUT_S;
}

/** The integrity npm recorded (node_modules/.package-lock.json) for the package it unpacked. */
function installedIntegrity(folder: string): string {
  try {
    const lock = JSON.parse(fs.readFileSync(path.join(folder, 'node_modules', '.package-lock.json'), 'utf8')) as { packages?: Record<string, { integrity?: string }> };
    return lock.packages?.[`node_modules/${PACKAGE}`]?.integrity ?? 'none recorded';
  } catch {
    return 'none recorded';
  }
}

async function install(dir: string, env: NodeJS.ProcessEnv, log: (line: string) => void): Promise<void> {
  // Into a fresh folder, moved into place only when complete: a cancelled job or a concurrent
  // one never leaves a half-installed runtime that a later run would trust.
  fs.mkdirSync(path.dirname(dir), { recursive: true });
  const tmp = fs.mkdtempSync(`${dir}.partial-`);
  const deadline = Date.now() + installTimeout(env) * 1000;
  try {
    fs.writeFileSync(path.join(tmp, 'package.json'), `${JSON.stringify({ private: true, description: 'prune-gate runtime' })}\n`);
    const npm = npmCommand();
    const quiet = ['--no-audit', '--no-fund', '--loglevel=error', '--fetch-retries=1', '--fetch-retry-mintimeout=2000', '--fetch-timeout=30000'];
    const childEnv = { ...env, ONNXRUNTIME_NODE_INSTALL: 'skip', npm_config_update_notifier: 'false' };
    const args = [
      'install',
      `${PACKAGE}@${ONNXRUNTIME_NODE_VERSION}`,
      // onnxruntime-node's postinstall would download CUDA binaries on linux-x64; the CPU ones
      // are in the package.
      '--ignore-scripts',
      '--omit=dev',
      '--prefer-offline',
      ...quiet,
    ];
    await runNpm(npm, args, tmp, childEnv, deadline, 'install');
    // npm checked the tarball it unpacked against the integrity it records in the hidden
    // lockfile; that must be the pinned one, else the folder is dropped before anything loads it.
    const integrity = installedIntegrity(tmp);
    if (integrity !== ONNXRUNTIME_NODE_INTEGRITY) {
      throw new UserError(
        `the ${PACKAGE}@${ONNXRUNTIME_NODE_VERSION} tarball from ${registryOf(env)} has integrity ${integrity.slice(0, 24)}…, not the pinned ${ONNXRUNTIME_NODE_INTEGRITY.slice(0, 24)}…: refusing to use it (a mirror serving another file?)`,
      );
    }
    trimPlatforms(path.join(tmp, 'node_modules', PACKAGE));
    fs.writeFileSync(path.join(tmp, DONE), `${ONNXRUNTIME_NODE_VERSION}\n`);
    try {
      fs.renameSync(tmp, dir);
    } catch {
      // Another job finished first (or a stale incomplete folder is there): keep a complete one.
      if (fs.existsSync(path.join(dir, DONE))) return;
      fs.rmSync(dir, { recursive: true, force: true });
      fs.renameSync(tmp, dir);
    }
    log(`kept ${PACKAGE}'s ${process.platform}-${process.arch} binaries only`);
  } finally {
    fs.rmSync(tmp, { recursive: true, force: true });
  }
}

/** The registry npm uses here (the runner's npm config may point at a mirror). */
function registryOf(env: NodeJS.ProcessEnv): string {
  return env.npm_config_registry || env.NPM_CONFIG_REGISTRY || 'the npm registry';
}

/**
 * Runs npm until `deadline`; a failure is one line that keeps npm's own error (its `npm error`
 * lines: the code, the address it could not reach), and a timeout says how long it waited.
 */
async function runNpm(npm: { command: string; args: string[]; shell: boolean }, args: string[], cwd: string, env: NodeJS.ProcessEnv, deadline: number, what: string): Promise<void> {
  const subject = `${what} of ${PACKAGE}@${ONNXRUNTIME_NODE_VERSION} from ${registryOf(env)}`;
  const { status, output, timedOut } = await spawnCollect(npm.command, [...npm.args, ...args], cwd, env, npm.shell, Math.max(1, deadline - Date.now()));
  const lines = output.split('\n').map((l) => l.trim()).filter(Boolean);
  const errors = lines.filter((l) => /^npm (error|ERR!)/.test(l) && !/A complete log of this run|^npm (error|ERR!)\s*$/.test(l)).map((l) => l.replace(/^npm (error|ERR!)\s*/, ''));
  const cause = (errors.length ? errors.slice(0, 4) : lines.slice(-3)).join(' / ') || 'no output';
  if (timedOut) {
    throw new UserError(`the ${subject} did not finish within ${installTimeout(env)} s (PRUNE_GATE_INSTALL_TIMEOUT): ${cause === 'no output' ? 'npm said nothing (a registry that does not answer?)' : cause}`);
  }
  if (status !== 0) throw new UserError(`the ${subject} failed (npm exited with ${status}): ${cause}`);
}

/** The package holds every platform's binaries (~290 MB); this one needs ~45 MB of them. */
function trimPlatforms(pkg: string): void {
  const bin = path.join(pkg, 'bin');
  if (!fs.existsSync(bin)) return;
  for (const napi of fs.readdirSync(bin)) {
    const mine = path.join(bin, napi, process.platform, process.arch);
    if (!fs.existsSync(mine)) {
      throw new UserError(`${PACKAGE}@${ONNXRUNTIME_NODE_VERSION} has no binaries for ${process.platform}-${process.arch}; run the action on linux-x64, linux-arm64, darwin-arm64 or win32`);
    }
    for (const platform of fs.readdirSync(path.join(bin, napi))) {
      const pdir = path.join(bin, napi, platform);
      if (platform !== process.platform) fs.rmSync(pdir, { recursive: true, force: true });
      else for (const arch of fs.readdirSync(pdir)) if (arch !== process.arch) fs.rmSync(path.join(pdir, arch), { recursive: true, force: true });
    }
  }
}

function spawnCollect(command: string, args: string[], cwd: string, env: NodeJS.ProcessEnv, shell: boolean, timeoutMs: number): Promise<{ status: number; output: string; timedOut: boolean }> {
  return new Promise((resolve) => {
    let output = '';
    let timedOut = false;
    const child = spawn(command, args, { cwd, env, shell, stdio: ['ignore', 'pipe', 'pipe'] });
    const timer = setTimeout(() => {
      timedOut = true;
      child.kill('SIGKILL');
    }, timeoutMs);
    child.stdout.on('data', (d: Buffer) => (output += d.toString()));
    child.stderr.on('data', (d: Buffer) => (output += d.toString()));
    child.on('error', (e) => {
      clearTimeout(timer);
      resolve({ status: -1, output: `${command}: ${e.message}`, timedOut });
    });
    child.on('close', (code) => {
      clearTimeout(timer);
      resolve({ status: code ?? -1, output, timedOut });
    });
  });
}
