import * as path from 'path';
import { OnnxModel } from '../src/onnx/model';
import { shapeOnlyProto } from '../src/onnx/skeleton';
import { createSession, dummyFeeds, sessionForProto } from '../src/onnx/runtime';
import { elementCount, toNumbers } from '../src/onnx/tensor';

const FIXTURES = path.join(__dirname, 'fixtures');

// Tracing and checking a pruned 7B model run its shape-only copy: if that copy made the
// embedding table at run time, every trace would allocate (and fill) the whole table.
describe.each(['gpt2.onnx', 'llama.onnx', 'bert.onnx'])('shape-only copy of %s', (file) => {
  const model = OnnxModel.read(path.join(FIXTURES, file));

  it('makes no tensor as large as the embedding table', () => {
    const { proto } = shapeOnlyProto(model);
    const table = model.initializers.find((t) => model.graph.node.some((n) => n.opType === 'Gather' && n.input?.[0] === t.name))!;
    expect(table).toBeDefined();
    const made = proto.graph!.node!.filter((n) => n.opType === 'ConstantOfShape');
    const skeleton = OnnxModel.fromProto(proto);
    for (const n of made) {
      const shape = skeleton.constant(n.input![0]); // (the model's own ConstantOfShape nodes take computed shapes)
      if (!shape) continue;
      const dims = toNumbers(shape);
      expect(elementCount(dims)).toBeLessThan(elementCount(table.dims.map(Number)));
    }
  });

  it('gives every output the shape the model gives it', async () => {
    const feeds = dummyFeeds(model, 2, 5);
    const full = await createSession(model);
    const skeleton = await sessionForProto(model, shapeOnlyProto(model).proto, { graphOptimizationLevel: 'disabled' });
    try {
      const [a, b] = [await full.run(feeds), await skeleton.run(feeds)];
      for (const name of full.outputNames) expect(b[name].dims).toEqual(a[name].dims);
    } finally {
      await full.release();
      await skeleton.release();
    }
  });
});
