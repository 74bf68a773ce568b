#!/usr/bin/env python3
"""Generate a LLaMA-7B-shaped ONNX model for the scale benchmark (not committed: ~2.7 GB).

Usage: /usr/bin/python3 tools/bench/make_large.py [--out bench/large] [--layers 2] [--name llama7b-shape] [--fp16]

Layer shapes of LLaMA-7B (hidden 4096, FFN 11008, 32 heads, vocab 32000), random weights,
exported with torch.onnx.export (weights in external data, as any model above 2 GB is). With
--fp16 the float initializers are converted to float16 afterwards, each behind a Cast to
float32 (torch 1.13 cannot trace float16 on CPU, and onnxruntime's CPU kernels compute in
float32): the file holds float16 weights, as shipped half-precision models do.
"""
import argparse
import os
import shutil
import sys
import time

import numpy as np
import onnx
import torch
from onnx import helper, numpy_helper

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "fixtures"))
from export import LlamaForCausalLM  # noqa: E402  (the fixture's LLaMA module, written like HF's)


def export(out_dir, layers, name):
    torch.manual_seed(0)
    model = LlamaForCausalLM(vocab=32000, hidden=4096, n_layers=layers, n_heads=32, n_kv_heads=32, intermediate=11008)
    model.eval()
    # torch writes one file per tensor for large models: export into a folder of its own, then
    # gather them into one data file beside the model.
    work = os.path.join(out_dir, ".export-" + name)
    shutil.rmtree(work, ignore_errors=True)
    os.makedirs(work)
    exported = os.path.join(work, name + ".onnx")
    ids = torch.randint(0, 32000, (1, 8))
    t = time.time()
    with torch.no_grad():
        torch.onnx.export(model, (ids,), exported, input_names=["input_ids"], output_names=["logits"],
                          dynamic_axes={"input_ids": {0: "batch", 1: "sequence"}, "logits": {0: "batch", 1: "sequence"}},
                          opset_version=17, do_constant_folding=True)
    del model
    proto = onnx.load(exported, load_external_data=True)
    path = os.path.join(out_dir, name + ".onnx")
    onnx.save_model(proto, path, save_as_external_data=True, all_tensors_to_one_file=True,
                    location=name + ".onnx.data", size_threshold=1024)
    shutil.rmtree(work)
    print(f"exported {path} ({layers} layers) in {time.time() - t:.0f} s")
    return path


def to_fp16(fp32_path, out_dir):
    proto = onnx.load(fp32_path, load_external_data=True)  # saving moved the data out of the first copy
    graph = proto.graph
    casts = []
    for init in graph.initializer:
        if init.data_type != onnx.TensorProto.FLOAT or np.prod(init.dims) < 1024:
            continue
        arr = numpy_helper.to_array(init).astype(np.float16)
        name = init.name
        init.CopyFrom(numpy_helper.from_array(arr, name + "_fp16"))
        casts.append(helper.make_node("Cast", [name + "_fp16"], [name], to=onnx.TensorProto.FLOAT, name=name + "_cast"))
    nodes = casts + list(graph.node)
    del graph.node[:]
    graph.node.extend(nodes)
    path = os.path.join(out_dir, "llama7b-shape-fp16.onnx")
    onnx.save_model(proto, path, save_as_external_data=True, all_tensors_to_one_file=True,
                    location="llama7b-shape-fp16.onnx.data", size_threshold=1024)
    print(f"wrote {path}")


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--out", default="bench/large")
    ap.add_argument("--layers", type=int, default=2)
    ap.add_argument("--name", default="llama7b-shape", help="file name, without .onnx")
    ap.add_argument("--fp16", action="store_true", help="also write the float16 copy")
    ap.add_argument("--reuse", action="store_true", help="keep an existing float32 export")
    args = ap.parse_args()
    torch.set_num_threads(2)
    path = os.path.join(args.out, args.name + ".onnx")
    if not (args.reuse and os.path.exists(path)):
        path = export(args.out, args.layers, args.name)
    if args.fp16:
        to_fp16(path, args.out)


if __name__ == "__main__":
    main()
