import { OnnxModel } from '../../src/onnx/model';
import { analyze } from '../../src/graph/analysis';
(async () => {
  const m = OnnxModel.read(process.argv[2]);
  const a = await analyze(m);
  for (const g of a.groups) console.log('GROUP', g.kind, g.units.length, 'units', g.units[0].params, 'params/unit', g.where, '| slots', g.slots.length);
  for (const s of a.skipped) console.log('SKIP', s.params, s.where, '--', s.reason);
})().catch((e) => { console.error(e); process.exit(1); });
