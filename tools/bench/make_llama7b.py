#!/usr/bin/env python3
"""Generate a LLaMA-2-7B-shaped float16 ONNX model of any depth, streamed (not committed).

Usage: /usr/bin/python3 tools/bench/make_llama7b.py --out DIR --layers 32 [--name llama7b-32l-fp16]

torch.onnx.export of the whole model would hold it in float32 (28 GB for 32 layers). Instead the
fixture's LLaMA module (tools/fixtures/export.py, written like Hugging Face's) is exported at the
real widths (hidden 4096, FFN 11008, 32 heads, vocabulary 32000) with 2 layers, so the graph is
torch's own; its second layer's nodes are then repeated for layers 2 .. N-1 (names renamed, each
copy reading the one before), and every weight is written afresh: random values (fixed seed,
torch's default initialisation: uniform +-1/sqrt(fan_in) for linear layers, N(0, 1) for the
embedding, ones for the norms), float16 behind a Cast to float32 as make_large.py --fp16 writes
them, one tensor at a time into one external data file (offsets aligned to 4 KiB). Memory: the
2-layer export (about 3 GB) and then one weight at a time.
"""
import argparse
import os
import shutil
import sys
import time

import numpy as np
import onnx
import torch
from onnx import external_data_helper, helper

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "fixtures"))
from export import LlamaForCausalLM  # noqa: E402

VOCAB, HIDDEN, HEADS, FFN = 32000, 4096, 32, 11008


def export_two_layers(work):
    torch.manual_seed(0)
    model = LlamaForCausalLM(vocab=VOCAB, hidden=HIDDEN, n_layers=2, n_heads=HEADS, n_kv_heads=HEADS, intermediate=FFN).eval()
    path = os.path.join(work, "two.onnx")
    ids = torch.randint(0, VOCAB, (1, 8))
    with torch.no_grad():
        torch.onnx.export(model, (ids,), path, input_names=["input_ids"], output_names=["logits"],
                          dynamic_axes={"input_ids": {0: "batch", 1: "sequence"}, "logits": {0: "batch", 1: "sequence"}},
                          opset_version=17, do_constant_folding=True)
    del model
    return onnx.load(path, load_external_data=False), path


def small_value(init, work):
    """The value of a small initializer of the export (its data may be in a file of `work`)."""
    t = onnx.TensorProto()
    t.CopyFrom(init)
    if external_data_helper.uses_external_data(t):
        external_data_helper.load_external_data_for_tensor(t, work)
    return onnx.numpy_helper.to_array(t)


def deepen(graph, layers):
    """Repeats layer 1's nodes so the graph has `layers` layers; returns {new weight: source weight}."""
    nodes = list(graph.node)
    inits = {i.name: i for i in graph.initializer}
    # Identity nodes aliasing one norm weight (torch deduplicates equal tensors): real initializers.
    aliases = {n.output[0]: n.input[0] for n in nodes if n.op_type == "Identity" and n.input[0] in inits}
    nodes = [n for n in nodes if not (n.op_type == "Identity" and n.output[0] in aliases)]
    weight_of = {name: src for name, src in aliases.items()}
    scoped = [i for i, n in enumerate(nodes) if n.name.startswith("/model/layers.1/")]
    first0 = min(i for i, n in enumerate(nodes) if n.name.startswith("/model/layers.0/"))
    start, end = max(i for i, n in enumerate(nodes) if n.name.startswith("/model/layers.0/")) + 1, max(scoped) + 1
    layer0 = nodes[first0:start]
    block = nodes[start:end]
    made0 = {o for n in layer0 for o in n.output}
    made = {o for n in block for o in n.output}
    reads = [i for n in block for i in n.input if i]
    # The residual stream: layer 0's last output. Other reads of layer 0 (the rotary tables it
    # unsqueezed, which torch shares between layers) stay shared.
    carried = [layer0[-1].output[0]]
    assert carried[0] in reads, f"layer 1 does not read {carried[0]}"
    after_reads = {i for n in nodes[end:] for i in n.input}
    outs = sorted(made & after_reads)
    assert len(outs) == 1, f"the layers after read {outs}"
    weights = sorted({i for i in reads if i in inits or i in aliases})
    prev_out = outs[0]
    copies = []
    for layer in range(2, layers):
        rename = {o: f"{o}.L{layer}" for o in made}
        rename[carried[0]] = prev_out
        for w in weights:
            new = w.replace("layers.1.", f"layers.{layer}.") if "layers.1." in w else f"{w}.L{layer}"
            rename[w] = new
            weight_of[new] = weight_of.get(w, w)
        for n in block:
            c = onnx.NodeProto()
            c.CopyFrom(n)
            c.name = (n.name.replace("/model/layers.1/", f"/model/layers.{layer}/") if n.name.startswith("/model/layers.1/") else f"{n.name}.L{layer}")
            c.input[:] = [rename.get(i, i) for i in n.input]
            c.output[:] = [rename.get(o, o) for o in n.output]
            copies.append(c)
        prev_out = rename[outs[0]]
    tail = nodes[end:]
    for n in tail:
        n.input[:] = [prev_out if i == outs[0] else i for i in n.input]
    graph.ClearField("node")
    graph.node.extend(nodes[:end] + copies + tail)
    for name, src in weight_of.items():
        if name not in inits:
            t = onnx.TensorProto()
            t.CopyFrom(inits[src])
            t.name = name
            graph.initializer.append(t)
    return graph


def random_weight(rng, name, dims):
    n = int(np.prod(dims))
    if "embed_tokens" in name:
        return rng.standard_normal(n, dtype=np.float32)
    if len(dims) == 1:
        return np.ones(n, dtype=np.float32)
    bound = 1.0 / np.sqrt(dims[0])  # a MatMul's B is [in, out]
    return rng.uniform(-bound, bound, n).astype(np.float32)


def write(graph_proto, model, work, out_dir, name):
    os.makedirs(out_dir, exist_ok=True)
    data_name = name + ".onnx.data"
    data_path = os.path.join(out_dir, data_name)
    rng = np.random.default_rng(0)
    casts = []
    offset = 0
    with open(data_path + ".tmp", "wb") as f:
        for init in graph_proto.initializer:
            dims = list(init.dims)
            n = int(np.prod(dims)) if dims else 1
            if init.data_type != onnx.TensorProto.FLOAT or n < 1024:
                value = small_value(init, work)
                init.CopyFrom(onnx.numpy_helper.from_array(value, init.name))
                continue
            values = random_weight(rng, init.name, dims).astype(np.float16).tobytes()
            pad = (-offset) % 4096
            f.write(b"\0" * pad)
            offset += pad
            f.write(values)
            original = init.name
            init.Clear()
            init.name = original + "_fp16"
            init.data_type = onnx.TensorProto.FLOAT16
            init.dims.extend(dims)
            init.data_location = onnx.TensorProto.EXTERNAL
            for key, value in (("location", data_name), ("offset", str(offset)), ("length", str(len(values)))):
                entry = init.external_data.add()
                entry.key, entry.value = key, value
            offset += len(values)
            casts.append(helper.make_node("Cast", [original + "_fp16"], [original], to=onnx.TensorProto.FLOAT, name=original + "_cast"))
    nodes = casts + list(graph_proto.node)
    graph_proto.ClearField("node")
    graph_proto.node.extend(nodes)
    path = os.path.join(out_dir, name + ".onnx")
    onnx.save_model(model, path + ".tmp")
    os.replace(data_path + ".tmp", data_path)
    os.replace(path + ".tmp", path)
    return path, offset


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", required=True)
    ap.add_argument("--layers", type=int, default=32)
    ap.add_argument("--name", default=None)
    args = ap.parse_args()
    torch.set_num_threads(2)
    name = args.name or f"llama7b-{args.layers}l-fp16"
    t = time.time()
    work = os.path.join(args.out, ".export-" + name)
    shutil.rmtree(work, ignore_errors=True)
    os.makedirs(work)
    try:
        model, _ = export_two_layers(work)
        if args.layers != 2:
            deepen(model.graph, args.layers)
        path, size = write(model.graph, model, work, args.out, name)
    finally:
        shutil.rmtree(work, ignore_errors=True)
    print(f"wrote {path} ({args.layers} layers, {size / 2**30:.2f} GiB of float16 weights) in {time.time() - t:.0f} s")


if __name__ == "__main__":
    main()
