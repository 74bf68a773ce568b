import { onnx } from 'onnx-proto';
import { Analysis, Group } from '../graph/analysis';
import { OnnxModel } from '../onnx/model';
import { fromFloat32 } from '../onnx/tensor';
import { nodeOverAxes } from '../onnx/axes';
import { ort, type Feeds } from '../onnx/runtime';
import { ConsumerEdit, weightChange } from './compensate';

/**
 * The sensitivity probe (docs/pruning.md, "Making layers comparable"): one pass over the
 * calibration set in which each sample sees one removal of one group and no other, so that the
 * damage the closed form predicts per group (an output error of its consumers) can be put in
 * the units of the model's output (KL divergence from the base), per group, from one pass.
 *
 * The probe model is the model with, after each consumer of a probed removal (a cell), its
 * output moved by mask · f(x; ΔW, Δb): f the consumer's own op with the change the removal makes
 * to its weight (the removed channels' weights negated, the refit rows' differences) and to its
 * bias. `mask` is one input per cell, one value per sample: 1 on the samples that probe that
 * cell, 0 elsewhere, so a sample sees exactly the compensated removal where it is 1 and the model
 * where 0.
 */
export interface Probe {
  model: OnnxModel;
  /** Per cell: the graph input that switches it on, and the output that says how far its consumers' outputs moved on each sample. */
  masks: string[];
  errors: string[];
  maskType: 'float32' | 'float16';
  /** Whether samples can be run in batches: every probed consumer's output has the samples on its first axis. */
  batched: boolean;
}

/** One removal probed: a group with its `count` cheapest units gone, compensated as `edits` say. */
export interface ProbeCell {
  group: Group;
  count: number;
  edits: ConsumerEdit[];
}

/**
 * The model with every cell's consumers moved by mask · f(x; ΔW, Δb), and for each cell an
 * output holding, per sample, the output error its removal makes on that sample, Σ over its
 * consumers of the squared change per output vector (the closed form's unit), whether or not
 * the sample probes it.
 */
export function probeModel(analysis: Analysis, cells: ProbeCell[]): Probe {
  const model = analysis.model.clone();
  const graph = model.graph as onnx.GraphProto;
  const unique = model.uniqueNames();
  // The copy's nodes are the analysed model's, by position.
  const copyOf = new Map(analysis.model.graph.node.map((n, i) => [n, graph.node[i]]));
  const masks: string[] = [];
  const errors: string[] = [];
  const dtype = cells.flatMap((c) => c.edits).map((e) => analysis.model.constantInfo(e.consumer.weight)?.dtype)[0] ?? onnx.TensorProto.DataType.FLOAT;
  const float = onnx.TensorProto.DataType.FLOAT;
  const int = (name: string, i: number) => onnx.AttributeProto.create({ name, type: onnx.AttributeProto.AttributeType.INT, i });
  const node = (opType: string, input: string[], output: string, attribute: onnx.IAttributeProto[] = []) =>
    onnx.NodeProto.create({ opType, name: output, input, output: [output], attribute });
  const ints = (name: string, values: number[]) =>
    graph.initializer.push(onnx.TensorProto.create({ name, dataType: onnx.TensorProto.DataType.INT64, dims: [values.length], int64Data: values }));
  // A sample's rows lead every probed output when the traced runs show the batch on axis 0.
  const [t0, t1] = analysis.traces;
  const leadsWithBatch = (y: string) => t0.get(y)?.dims[0] === t0.sizes?.[0] && t1.get(y)?.dims[0] === t1.sizes?.[0];
  let batched = true;
  const opset = analysis.model.defaultOpset ?? 13;
  cells.forEach((cell, k) => {
    const mask = unique(`prune_gate_probe_${k}`);
    graph.input.push(onnx.ValueInfoProto.create({ name: mask, type: { tensorType: { elemType: dtype, shape: { dim: [{ dimParam: 'batch' }] } } } }));
    masks.push(mask);
    const parts: string[] = [];
    for (const edit of cell.edits) {
      const original = copyOf.get(edit.consumer.node)!;
      const use = edit.consumer.use;
      // The output as the consumer writes it now (a cell before this one may have renamed it), and as traced.
      const y = original.output![0];
      const rank = t0.get(edit.consumer.node.output[0])?.dims.length ?? 2;
      if (!leadsWithBatch(edit.consumer.node.output[0])) batched = false;
      const base = unique(`${y}_probe_base`);
      const name = (what: string) => unique(`${y}_probe_${k}_${what}`);
      const change = weightChange(analysis, edit);
      const dw = name('dw');
      model.addInitializer(dw, fromFloat32(change.data, change.dtype, change.dims));
      const db = name('db');
      model.addInitializer(db, fromFloat32(Array.from(edit.biasDelta, (d) => d * (use.biasScale ?? 1)), change.dtype, [edit.biasDelta.length]));
      const delta = name('delta');
      const inputs = [...original.input!];
      inputs[1] = dw;
      const added: onnx.NodeProto[] = [];
      if (use.biasInput !== undefined) {
        while (inputs.length <= use.biasInput) inputs.push('');
        inputs[use.biasInput] = db;
        added.push(onnx.NodeProto.create({ ...original, name: name('op'), input: inputs, output: [delta] }));
      } else {
        added.push(onnx.NodeProto.create({ ...original, name: name('op'), input: inputs, output: [name('raw')] }));
        added.push(node('Add', [added[0].output[0], db], delta));
      }
      // The mask, one value per sample, broadcast over the sample's rows.
      const shape = name('mask_shape');
      ints(shape, [-1, ...Array(rank - 1).fill(1)]);
      const perSample = name('mask_rows');
      added.push(node('Reshape', [mask, shape], perSample));
      const masked = name('masked');
      added.push(node('Mul', [delta, perSample], masked));
      added.push(node('Add', [base, masked], y));
      // Squared change per output vector of each sample: the mean of change² over the sample's
      // elements, times the outputs per vector. Computed on every sample (the mask only decides
      // whether it is added), in float32.
      const deltaF = dtype === float ? delta : name('delta_f');
      if (deltaF !== delta) added.push(node('Cast', [delta], deltaF, [int('to', float)]));
      const sq = name('sq');
      added.push(node('Mul', [deltaF, deltaF], sq));
      const mean = name('mean');
      added.push(nodeOverAxes('ReduceMean', sq, mean, [...Array(rank).keys()].slice(1), opset, graph.initializer, [int('keepdims', 0)]));
      const outs = name('outs');
      model.addInitializer(outs, fromFloat32([change.dims[use.weightOut]], float, []));
      const per = name('per');
      added.push(node('Mul', [mean, outs], per));
      original.output![0] = base;
      graph.node.splice(graph.node.indexOf(original) + 1, 0, ...added);
      parts.push(per);
    }
    let total = parts[0];
    for (const p of parts.slice(1)) {
      const sum = unique(`prune_gate_probe_${k}_error`);
      graph.node.push(node('Add', [total, p], sum));
      total = sum;
    }
    const out = unique(`prune_gate_probe_${k}_error_out`);
    graph.node.push(node('Identity', [total], out));
    graph.output.push(onnx.ValueInfoProto.create({ name: out }));
    errors.push(out);
  });
  return { model, masks, errors, maskType: dtype === onnx.TensorProto.DataType.FLOAT16 ? 'float16' : 'float32', batched };
}

/**
 * Which cell each sample probes: every sample one, cells in turn (listed count by count, so that
 * with few samples every group gets its first count first); with more cells than samples,
 * several a sample.
 */
export function probeAssignment(samples: number, cells: number): number[][] {
  const out: number[][] = Array.from({ length: samples }, () => []);
  if (samples === 0) return out;
  if (cells <= samples) for (let i = 0; i < samples; i++) out[i].push(i % cells);
  else for (let c = 0; c < cells; c++) out[c % samples].push(c);
  return out;
}

/** The mask feeds of samples [start, start + size). */
export function probeFeeds(probe: Probe, assignment: number[][], start: number, size: number): Feeds {
  return Object.fromEntries(
    probe.masks.map((m, k) => {
      const on = Array.from({ length: size }, (_, i) => (assignment[start + i]?.includes(k) ? 1 : 0));
      const tensor = probe.maskType === 'float16' ? new ort.Tensor('float16', Uint16Array.from(on, (v) => (v ? 0x3c00 : 0)), [size]) : new ort.Tensor('float32', Float32Array.from(on), [size]);
      return [m, tensor];
    }),
  );
}
