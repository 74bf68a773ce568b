import { OnnxModel } from '../../src/onnx/model';
import { analyze } from '../../src/graph/analysis';
import { applyRemoval } from '../../src/prune/apply';
import { loadCalibration } from '../../src/eval/calibration';
import { Evaluator } from '../../src/eval/evaluator';
(async () => {
  const name = process.argv[2] ?? 'cnn';
  const base = OnnxModel.read(`test/fixtures/${name}.onnx`);
  const held = loadCalibration(`bench/heldout/${name}`, base);
  const ev = await Evaluator.create(base, held, { latency: { warmup: 0, runs: 1 } });
  const a = await analyze(base);
  for (const g of a.groups) {
    for (const k of [0, 1]) {
      const applied = applyRemoval(a, [{ group: g, units: [g.units[k]], params: 0 }]);
      const v = (await ev.evaluate(applied.model)).values.candidate;
      console.log(g.kind, g.units.length, 'remove unit', k, 'acc', v.accuracy?.toFixed(3), 'kl', v['kl-divergence']?.toFixed(3), g.where.slice(0, 60));
    }
  }
  await ev.close();
})();
