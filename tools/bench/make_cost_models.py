#!/usr/bin/env python3
"""Generate the models and calibration sets of the cost benchmark (not committed).

Usage: /usr/bin/python3 tools/bench/make_cost_models.py [--out bench/large/cost]

- gpt2-2m: the fixture's GPT-2 module (tools/fixtures/export.py) at hidden 128, 10 layers, 4
  heads, inner 512 (about 2 M parameters), calibrated on 128 windows of 32 bytes of the fortunes
  text (the gpt2 fixture's held-out windows, cut in two).
- bert-base: the fixture's BERT module at BERT-base's shapes (hidden 768, 12 layers, 12 heads,
  FFN 3072, vocabulary 30522, 512 positions; about 110 M parameters), a 4-class classifier,
  calibrated on 64 random sequences of 128 tokens with random labels.

Weights are random (the fixtures' transformer initialisation, fixed seeds): the benchmark
measures what a gate costs, which does not depend on what the weights learned.
"""
import argparse
import json
import os
import sys

import numpy as np
import torch

ROOT = os.path.join(os.path.dirname(os.path.abspath(__file__)), "..", "..")
sys.path.insert(0, os.path.join(ROOT, "tools", "fixtures"))
import export as fx  # noqa: E402  (the fixtures' modules)


def save_set(folder, spec, arrays):
    os.makedirs(folder, exist_ok=True)
    for name, array in arrays.items():
        np.save(os.path.join(folder, name + ".npy"), array)
    with open(os.path.join(folder, "calibration.json"), "w") as f:
        json.dump(spec, f, indent=2)


def export(model, path, args, inputs, outputs, axes):
    with torch.no_grad():
        torch.onnx.export(model, args, path, input_names=inputs, output_names=outputs, dynamic_axes=axes,
                          opset_version=17, do_constant_folding=True)
    print(f"exported {path}: {sum(p.numel() for p in model.parameters()):,} parameters")


def gpt2(out):
    fx.seed_everything(7)
    model = fx.GPT2LMHeadModel(vocab=256, hidden=128, n_layer=10, n_head=4, inner=512, max_positions=64)
    fx.init_transformer(model)
    model.tie_weights()
    model.eval()
    path = os.path.join(out, "gpt2-2m.onnx")
    export(model, path, (torch.randint(0, 256, (2, 16)),), ["input_ids"], ["logits"],
           {"input_ids": {0: "batch", 1: "sequence"}, "logits": {0: "batch", 1: "sequence"}})
    windows = np.load(os.path.join(ROOT, "bench", "heldout", "gpt2", "input_ids.npy"))[:64]
    ids = windows.reshape(128, 32).astype(np.int64)
    save_set(os.path.join(out, "gpt2-2m-calibration"), {"task": "language-model", "inputs": {"input_ids": "input_ids.npy"}, "output": "logits", "batch_size": 16},
             {"input_ids": ids})


def bert(out, layers=12, name="bert-base"):
    fx.seed_everything(11)
    model = fx.BertForSequenceClassification(vocab=30522, hidden=768, n_layers=layers, n_heads=12, intermediate=3072,
                                             max_positions=512, num_labels=4)
    fx.init_transformer(model, embed_std=0.02)
    model.eval()
    path = os.path.join(out, name + ".onnx")
    ids = torch.randint(0, 30522, (2, 16))
    export(model, path, (ids, torch.ones_like(ids)), ["input_ids", "attention_mask"], ["logits"],
           {"input_ids": {0: "batch", 1: "sequence"}, "attention_mask": {0: "batch", 1: "sequence"}, "logits": {0: "batch"}})
    rng = np.random.default_rng(3)
    save_set(os.path.join(out, name + "-calibration"),
             {"task": "classification", "inputs": {"input_ids": "input_ids.npy", "attention_mask": "attention_mask.npy"}, "labels": "labels.npy", "output": "logits", "batch_size": 16},
             {"input_ids": rng.integers(0, 30522, (64, 128)).astype(np.int64), "attention_mask": np.ones((64, 128), np.int64),
              "labels": rng.integers(0, 4, 64).astype(np.int64)})


def main():
    parser = argparse.ArgumentParser()
    parser.add_argument("--out", default=os.path.join(ROOT, "bench", "large", "cost"))
    parser.add_argument("--only", choices=["gpt2", "bert", "bert-4"])
    args = parser.parse_args()
    os.makedirs(args.out, exist_ok=True)
    torch.set_num_threads(2)
    if args.only in (None, "gpt2"):
        gpt2(args.out)
    if args.only in (None, "bert"):
        bert(args.out)
    if args.only == "bert-4":  # BERT-base's widths in 4 layers: for quick measurements
        bert(args.out, layers=4, name="bert-base-4l")


if __name__ == "__main__":
    main()
