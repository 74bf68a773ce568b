import { OnnxModel } from '../../src/onnx/model';
import { pruneModel } from '../../src/prune';
import { writeModel } from '../../src/onnx/write';
(async () => {
  const t0 = performance.now();
  const log = (l: string) => console.error(((performance.now() - t0) / 1000).toFixed(1), l);
  const m = OnnxModel.read(process.argv[2]);
  const r = await pruneModel(m, { target: 0.3, structures: ['ffn', 'heads'], importance: 'magnitude', compensate: 'none', log });
  log('pruned');
  writeModel(r.model, '/tmp/t/large-pruned.onnx', { externalData: true });
  log('written');
})();
