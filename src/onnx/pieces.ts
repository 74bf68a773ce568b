import { onnx } from 'onnx-proto';
import { dtypeInfo } from './dtype';
import { OnnxModel } from './model';
import { nodeReads } from './reads';
import { Feeds, onnxType, ort, sessionForProto, withSessionForm } from './runtime';
import { elementCount } from './tensor';

/**
 * Runs `model` as written (no session form) on `feeds` one piece at a time, so a model whose
 * weights do not fit in memory together still runs exactly: its computing nodes, in the graph's
 * order, are cut into pieces whose weights (float16 counted as the float32 copies onnxruntime
 * makes) hold at most `maxWeightBytes`; each piece is a session of its own, opened, run and let
 * go, fed the tensors earlier pieces made. Nodes computed from constants alone (a float16
 * weight's Cast) go with each piece that reads them, so onnxruntime folds them there. Returns the
 * graph outputs named. The price: every piece's weights are read and widened once per call.
 */
export async function runInPieces(model: OnnxModel, feeds: Feeds, outputs: string[], maxWeightBytes: number, log?: (line: string) => void): Promise<Record<string, ort.Tensor>> {
  const nodes = model.graph.node;
  const constant = new Set(model.constantNames());
  const folding = new Map<string, onnx.INodeProto>(); // constant-derived name -> its node
  const computing: onnx.INodeProto[] = [];
  for (const n of nodes) {
    const inputs = (n.input ?? []).filter(Boolean);
    const hasBody = (n.attribute ?? []).some((a) => a.g || a.graphs?.length);
    if (n.opType === 'Constant' && (n.domain ?? '') === '') continue;
    if (inputs.length > 0 && !hasBody && inputs.every((i) => constant.has(i))) {
      for (const o of n.output ?? []) {
        constant.add(o);
        folding.set(o, n);
      }
    } else computing.push(n);
  }
  // The initializers and folding nodes a constant-derived name needs, and the bytes it is held in.
  const needs = (name: string, into: { nodes: Set<onnx.INodeProto>; names: Set<string> }): number => {
    if (into.names.has(name)) return 0;
    into.names.add(name);
    const node = folding.get(name);
    if (!node) {
      const info = model.constantInfo(name);
      return info ? elementCount(info.dims) * Math.max(4, dtypeInfo(info.dtype)?.bytes ?? 4) : 0;
    }
    into.nodes.add(node);
    return (node.input ?? []).filter(Boolean).reduce((t, i) => t + needs(i, into), 0);
  };
  // Only the nodes the outputs asked for depend on run (a probe of the first layers stops there).
  const needed = new Set(outputs);
  const used = new Set<onnx.INodeProto>();
  for (let i = computing.length - 1; i >= 0; i--) {
    const n = computing[i];
    if (!(n.output ?? []).some((o) => needed.has(o))) continue;
    used.add(n);
    for (const r of nodeReads(n)) if (r && !constant.has(r)) needed.add(r);
  }
  computing.splice(0, computing.length, ...computing.filter((n) => used.has(n)));
  // Cut: a piece ends before the node whose weights would take it past the budget.
  const pieces: { nodes: onnx.INodeProto[]; folded: Set<onnx.INodeProto>; names: Set<string> }[] = [];
  let bytes = 0;
  for (const n of computing) {
    const probe = { nodes: new Set<onnx.INodeProto>(), names: new Set<string>() };
    const cost = nodeReads(n).filter((i) => i && constant.has(i)).reduce((t, i) => t + needs(i, probe), 0);
    let piece = pieces[pieces.length - 1];
    if (!piece || (bytes + cost > maxWeightBytes && piece.nodes.length > 0)) {
      piece = { nodes: [], folded: new Set(), names: new Set() };
      pieces.push(piece);
      bytes = 0;
    }
    piece.nodes.push(n);
    for (const i of nodeReads(n)) if (i && constant.has(i)) bytes += needs(i, { nodes: piece.folded, names: piece.names });
  }
  // Which piece reads each computed name last: a tensor is let go after it.
  const lastReader = new Map<string, number>();
  pieces.forEach((p, k) => p.nodes.forEach((n) => nodeReads(n).forEach((i) => i && !constant.has(i) && lastReader.set(i, k))));
  const wanted = new Set(outputs);
  const live: Record<string, ort.Tensor> = { ...feeds };
  const initializers = new Map(model.initializers.map((t) => [t.name, t]));
  const constantNodes = nodes.filter((n) => n.opType === 'Constant' && (n.domain ?? '') === '');
  await withSessionForm(undefined, async () => {
    for (const [k, piece] of pieces.entries()) {
      const made = new Set(piece.nodes.flatMap((n) => n.output ?? []));
      const reads = [...new Set(piece.nodes.flatMap((n) => nodeReads(n)).filter((i) => i && !constant.has(i) && !made.has(i)))];
      const outs = [...made].filter((o) => o && (wanted.has(o) || (lastReader.get(o) ?? -1) > k));
      const valueInfo = (name: string, t?: ort.Tensor) =>
        onnx.ValueInfoProto.create({ name, ...(t ? { type: { tensorType: { elemType: onnxType(t.type), shape: { dim: t.dims.map((d) => ({ dimValue: d })) } } } } : {}) });
      const graph = onnx.GraphProto.create({
        name: `${model.graph.name ?? 'graph'}-piece-${k + 1}`,
        node: [...constantNodes.filter((n) => piece.names.has(n.output![0])), ...nodes.filter((n) => piece.folded.has(n)), ...piece.nodes],
        initializer: [...piece.names].flatMap((name) => (initializers.has(name) ? [initializers.get(name)!] : [])),
        input: reads.map((name) => valueInfo(name, live[name])),
        output: outs.map((name) => valueInfo(name)),
      });
      const session = await sessionForProto(model, onnx.ModelProto.create({ ...model.proto, graph }), { enableCpuMemArena: false });
      try {
        const fed: Feeds = {};
        for (const name of reads) fed[name] = live[name];
        Object.assign(live, await session.run(fed, outs));
      } finally {
        await session.release();
      }
      for (const name of Object.keys(live)) if (!wanted.has(name) && (lastReader.get(name) ?? -1) <= k) delete live[name];
      log?.(`float piece ${k + 1} of ${pieces.length} run`);
    }
  });
  const result: Record<string, ort.Tensor> = {};
  for (const name of outputs) result[name] = live[name];
  return result;
}
