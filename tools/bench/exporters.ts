// `npm run bench -- exporters`: models of architectures that are not among the fixtures (made by
// export_sweep.py), each at three opsets: the share of parameters in weights the engine can
// prune along some axis, and whether the model pruned by 30 % and then quantized loads in
// onnxruntime with its output shapes.
// Usage: ts-node tools/bench/exporters.ts model.onnx... ; prints JSON lines.
import * as fs from 'fs';
import * as os from 'os';
import * as path from 'path';
import { analyze } from '../../src/graph/analysis';
import { countParams } from '../../src/graph/cost';
import { OnnxModel } from '../../src/onnx/model';
import { elementCount } from '../../src/onnx/tensor';
import { createSession, dummyFeeds } from '../../src/onnx/runtime';
import { writeModel } from '../../src/onnx/write';
import { quantizeArtifact } from '../../src/pipeline/run';
import { findPrunable, pruneModel } from '../../src/prune';
import { CORPUS_CACHE, corpusSource, fetchCorpus, optimizedCorpus } from '../corpus';
import { checkModel, checkerAvailable } from '../onnx-checker';

async function shapesOf(file: string | OnnxModel, feeds: ReturnType<typeof dummyFeeds>): Promise<string> {
  const session = await createSession(typeof file === 'string' ? OnnxModel.read(file) : file);
  try {
    const out = await session.run(feeds);
    return JSON.stringify(Object.entries(out).map(([k, t]) => [k, t.dims]));
  } finally {
    await session.release();
  }
}

/** Files to measure: the arguments, and with --corpus the third-party corpus and the optimized fixtures. */
async function inputs(): Promise<{ name: string; file: string; source: string }[]> {
  const args = process.argv.slice(2);
  const files = args.filter((a) => a !== '--corpus').map((file) => ({ name: path.basename(file, '.onnx'), file, source: 'torch.onnx (export_sweep.py)' }));
  if (!args.includes('--corpus')) return files;
  const corpus = fetchCorpus().map((m) => ({ name: m.id, file: m.file, source: `${m.toolchain} (${corpusSource(m)})` }));
  const optimized = (await optimizedCorpus()).map((m) => ({ name: m.id, file: m.file, source: m.file.startsWith(CORPUS_CACHE) ? "onnxruntime's optimizer (extended)" : "onnxruntime's fused attention" }));
  return [...files, ...corpus, ...optimized];
}

async function main() {
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'prune-gate-exporters-'));
  const checker = checkerAvailable();
  for (const { name, file, source } of await inputs()) {
    const row: Record<string, unknown> = { model: name, source };
    try {
      const base = OnnxModel.read(file);
      row.params = countParams(base);
      // What prune-gate says of a model it cannot prune (weights only inside control flow, say).
      const { skipped } = await findPrunable(base);
      if (skipped[0]?.where === 'the whole model') throw new Error(`nothing to prune: ${skipped[0].reason}`);
      // The share of parameters in weights that have a prunable axis (each weight counted once).
      const analysis = await analyze(base);
      const weights = new Set(analysis.groups.flatMap((g) => g.constantSlots.map((s) => s.tensor)));
      const inWeights = [...weights].reduce((sum, t) => sum + elementCount(base.constantInfo(t)!.dims), 0);
      row.prunableShare = inWeights / (row.params as number);
      row.groups = [...new Set(analysis.groups.map((g) => g.kind))].join(', ');
      // Dummy data at the sizes the model was traced at (some models only run on long inputs).
      const [t0, t1] = analysis.traces;
      const feeds = dummyFeeds(base, ...(t0.sizes as [number, number]));
      const want = await shapesOf(base, feeds);
      const calibration = () => [dummyFeeds(base, ...(t0.sizes as [number, number])), dummyFeeds(base, ...(t1.sizes as [number, number]))];
      const pruned = await pruneModel(base, { target: 0.3, structures: ['ffn', 'heads', 'channels'], importance: 'activation', compensate: 'bias', calibration });
      row.removed = 1 - pruned.paramsAfter / pruned.paramsBefore;
      const prunedFile = path.join(tmp, `${name}-pruned.onnx`);
      writeModel(pruned.model, prunedFile);
      row.pruned = (await shapesOf(prunedFile, feeds)) === want ? 'ok' : 'output shapes differ';
      if (checker) {
        const [before, after] = [checkModel(file), checkModel(prunedFile)];
        row.checker = before.status !== 'ok' ? `input: ${before.status}` : after.status === 'ok' ? 'ok' : `fails: ${'message' in after ? after.message : ''}`;
      }
      for (const mode of ['int8', 'int4'] as const) {
        const out = path.join(tmp, `${name}-${mode}.onnx`);
        writeModel((await quantizeArtifact(pruned.model, mode, { calibration })).model, out);
        row[mode] = (await shapesOf(out, feeds)) === want ? 'ok' : 'output shapes differ';
      }
    } catch (e) {
      row.error = (e as Error).message.split('\n')[0];
    }
    console.log(JSON.stringify(row));
  }
  fs.rmSync(tmp, { recursive: true, force: true });
}

main().catch((e) => {
  console.error(e);
  process.exit(1);
});
