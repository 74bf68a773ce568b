import { OnnxModel } from '../../src/onnx/model';
import { pruneModel } from '../../src/prune';
import { writeModel } from '../../src/onnx/write';
(async () => {
  const m = OnnxModel.read(process.argv[2]);
  const r = await pruneModel(m, { target: Number(process.argv[3] ?? 0.3), structures: ['ffn', 'heads', 'channels'], importance: 'magnitude', compensate: 'none', log: (l) => console.error(l) });
  console.log('params', r.paramsBefore, '->', r.paramsAfter, (1 - r.paramsAfter / r.paramsBefore).toFixed(3));
  for (const p of r.pruned) console.log('PRUNED', p.kind, p.before, '->', p.after, p.params, p.where);
  if (process.argv[4]) writeModel(r.model, process.argv[4]);
})().catch((e) => { console.error(e); process.exit(1); });
