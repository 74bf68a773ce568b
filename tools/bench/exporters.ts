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
import { pruneModel } from '../../src/prune';

async function shapesOf(file: string | OnnxModel, feeds: ReturnType<typeof dummyFeeds>): Promise<string> {
  const session = await createSession(typeof file === 'string' ? OnnxModel.read(file) : file);
  try {
    const out = await session.run(feeds);
    return JSON.stringify(Object.entries(out).map(([k, t]) => [k, t.dims]));
  } finally {
    await session.release();
  }
}

async function main() {
  const tmp = fs.mkdtempSync(path.join(os.tmpdir(), 'prune-gate-exporters-'));
  for (const file of process.argv.slice(2)) {
    const name = path.basename(file, '.onnx');
    const row: Record<string, unknown> = { model: name };
    try {
      const base = OnnxModel.read(file);
      // The share of parameters in weights that have a prunable axis (each weight counted once).
      const analysis = await analyze(base);
      const weights = new Set(analysis.groups.flatMap((g) => g.constantSlots.map((s) => s.tensor)));
      const inWeights = [...weights].reduce((sum, t) => sum + elementCount(base.constantInfo(t)!.dims), 0);
      row.params = countParams(base);
      row.prunableShare = inWeights / (row.params as number);
      row.groups = [...new Set(analysis.groups.map((g) => g.kind))].join(', ');
      const feeds = dummyFeeds(base, 2, 6);
      const want = await shapesOf(base, feeds);
      const calibration = () => [dummyFeeds(base, 3, 5), dummyFeeds(base, 2, 7)];
      const pruned = await pruneModel(base, { target: 0.3, structures: ['ffn', 'heads', 'channels'], importance: 'activation', compensate: 'bias', calibration });
      row.removed = 1 - pruned.paramsAfter / pruned.paramsBefore;
      const prunedFile = path.join(tmp, `${name}-pruned.onnx`);
      writeModel(pruned.model, prunedFile);
      row.pruned = (await shapesOf(prunedFile, feeds)) === want ? 'ok' : 'output shapes differ';
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
