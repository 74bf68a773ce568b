import { OnnxModel } from '../../src/onnx/model';
import { pruneModel } from '../../src/prune';
import { loadCalibration, calibrationFeeds } from '../../src/eval/calibration';
(async () => {
  const [file, cal, target, importance, compensate, steps] = process.argv.slice(2);
  const m = OnnxModel.read(file);
  const set = loadCalibration(cal, m);
  const t0 = Date.now();
  const r = await pruneModel(m, { target: Number(target), structures: ['ffn', 'heads', 'channels'], importance: importance as any, compensate: compensate as any, steps: Number(steps ?? 1), calibration: calibrationFeeds(set), log: (l) => console.error(l) });
  console.log('params', r.paramsBefore, '->', r.paramsAfter, (1 - r.paramsAfter / r.paramsBefore).toFixed(3), Date.now() - t0, 'ms');
  for (const p of r.pruned) console.log('PRUNED', p.kind, p.before, '->', p.after, p.params, p.where.slice(0, 80));
})().catch((e) => { console.error(e); process.exit(1); });
