#!/usr/bin/env python3
"""Train and export the repository's examples (examples/<name>/model.onnx), and write their
calibration sets (calibration/<name>/) and held-out sets (examples/<name>/heldout/).

Usage:
    /usr/bin/python3 tools/examples/train.py [--only fortunes-llama,digits-cnn] [--jobs 2] [--threads 1]
                                             [--steps N] [--sets-only]

| example | model | data | params |
|---|---|---|---|
| fortunes-llama | LLaMA (HF LlamaForCausalLM shape): hidden 128, 4 layers, 4 query heads sharing 2 KV heads (GQA, head_dim 32), rotary embeddings, RMSNorm, SwiGLU FFN 128->344->128, untied LM head, byte vocabulary (256) | byte-level causal LM on the fortunes text (train split of tools/fixtures/data.py) | 791,680 (3.3 MB) |
| digits-cnn | VGG-style CNN for 8x8 digits: conv 1->32, 32->32, 32->64 stride 2, 64->64 (3x3 + BN + ReLU each, BN folded by the exporter), global average pool, Linear 64->128, ReLU, Linear 128->10 | sklearn load_digits (train split of data.py), random 1-pixel shifts | 74,602 once BN is folded (301 KB) |

Everything else is reused from tools/fixtures/: the model modules (LlamaForCausalLM, ConvBNAct),
the training loop (AdamW, warm-up + cosine, gradient clipping: export.optimise via
export.train_lm / export.train_digits), the evaluation (export.lm_perplexity,
export.classifier_accuracy), the ONNX export (export.export_model: opset 17, constant folding,
onnx.checker) and the deterministic, disjoint train / calibration / held-out splits (data.py).
The test fixtures are not touched.

Sets (all from splits the models never train on):
- fortunes-llama: calibration/fortunes-llama/ = 64 windows of 64 bytes of the calibration split;
  examples/fortunes-llama/heldout/ = 256 windows of 128 bytes of the held-out split.
- digits-cnn: calibration/digits-cnn/ = the 128 calibration digits, labelled;
  examples/digits-cnn/heldout/ = the 360 held-out digits.

Training is seeded and runs on --threads threads per model (default 1: on a loaded 2-core machine
two OpenMP threads per process were ten times slower than one, as the threads wait for each
other), the two examples in parallel processes (--jobs 2), so re-running gives the same weights
on the same CPU and torch build. examples/<name>/training.json records the hyper-parameters,
wall and CPU seconds and the torch metrics on the held-out and calibration sets.

Needs Debian's python3-torch (1.13), python3-onnx, python3-numpy, python3-sklearn and fortunes.
"""

import argparse
import json
import os
import sys
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.normpath(os.path.join(HERE, "..", ".."))
sys.path.insert(0, os.path.join(ROOT, "tools", "fixtures"))
import calibration  # noqa: E402  (write_set)
import data  # noqa: E402  (splits)
import export  # noqa: E402  (modules, training loop, export)

OPSET = 17


# ---------------------------------------------------------------------------------------------
# Models
# ---------------------------------------------------------------------------------------------

LLAMA = dict(hidden=128, n_layers=4, n_heads=4, n_kv_heads=2, intermediate=344)


def build_fortunes_llama():
    export.seed_everything(2101)
    model = export.LlamaForCausalLM(**LLAMA)
    return export.init_for_training(model).eval()  # PyTorch init, embeddings N(0, 0.02)


class DigitsConvNet(nn.Module):
    """A plain VGG-style stack: every conv's output channels are one prunable group."""

    def __init__(self, widths=(32, 32, 64, 64), hidden=128, num_classes=10):
        super().__init__()
        a, b, c, d = widths
        self.features = nn.Sequential(
            export.ConvBNAct(1, a, 3),
            export.ConvBNAct(a, b, 3),
            export.ConvBNAct(b, c, 3, stride=2),  # 8x8 -> 4x4
            export.ConvBNAct(c, d, 3),
        )
        self.avgpool = nn.AdaptiveAvgPool2d(1)
        self.classifier = nn.Sequential(nn.Linear(d, hidden), nn.ReLU(inplace=True), nn.Linear(hidden, num_classes))

    def forward(self, pixels):
        x = self.features(pixels)
        x = torch.flatten(self.avgpool(x), 1)
        return self.classifier(x)


def build_digits_cnn():
    export.seed_everything(2102)
    return export.init_for_training(DigitsConvNet()).eval()


SEQ_AXES = {0: "batch", 1: "sequence"}

EXAMPLES = {
    "fortunes-llama": dict(
        build=build_fortunes_llama,
        # 2,000 AdamW steps of 16 random 129-byte windows of the train split (4.1 M tokens,
        # about 2.2 passes over the 1.86 M train bytes)
        train=dict(kind="lm", steps=2000, batch=16, seq=128, lr=3e-3, warmup=100, weight_decay=0.01, seed=21),
        inputs=lambda: export.lm_inputs(2, 7),
        input_names=["input_ids"], output_names=["logits"],
        dynamic_axes={"input_ids": SEQ_AXES, "logits": SEQ_AXES},
    ),
    "digits-cnn": dict(
        build=build_digits_cnn,
        train=dict(kind="digits", epochs=60, batch=64, lr=3e-3, warmup=50, weight_decay=1e-4, shift=1, seed=22),
        inputs=lambda: export.cnn_inputs(4),
        input_names=["pixels"], output_names=["logits"],
        dynamic_axes={"pixels": {0: "batch"}, "logits": {0: "batch"}},
    ),
}


# ---------------------------------------------------------------------------------------------
# Calibration and held-out sets
# ---------------------------------------------------------------------------------------------

# language model: (windows, bytes per window, seed) per split
LM_SETS = {"calibration": (64, 64, 301), "heldout": (256, 128, 302)}


def example_set(name, split):
    """(calibration.json dict, {file: array}) of an example's set on `split`."""
    if name == "fortunes-llama":
        n, seq, seed = LM_SETS[split]
        spec = {"task": "language-model", "inputs": {"input_ids": "input_ids.npy"}, "output": "logits",
                "batch_size": 16}
        return spec, {"input_ids.npy": data.lm_windows(split, n, seq, seed)}
    if name == "digits-cnn":
        images, labels = data.digits(split)
        spec = {"task": "classification", "inputs": {"pixels": "pixels.npy"}, "labels": "labels.npy",
                "output": "logits", "batch_size": 64}
        return spec, {"pixels.npy": images[:, None, :, :], "labels.npy": labels}
    raise KeyError(name)


def write_sets(name):
    spec, arrays = example_set(name, "calibration")
    calibration.write_set(os.path.join(ROOT, "calibration"), name, spec, arrays)
    spec, arrays = example_set(name, "heldout")
    calibration.write_set(os.path.join(ROOT, "examples", name), "heldout", spec, arrays)


# ---------------------------------------------------------------------------------------------
# Training and evaluation
# ---------------------------------------------------------------------------------------------

def lm_next_token_accuracy(model, ids, batch=32):
    hit, count = 0, 0
    with torch.no_grad():
        for i in range(0, len(ids), batch):
            x = ids[i:i + batch]
            pred = model(x)[:, :-1].argmax(-1)
            hit += int((pred == x[:, 1:]).sum())
            count += x[:, 1:].numel()
    return hit / count


def evaluate(name, model):
    out = {}
    for split in ("heldout", "calibration"):
        spec, arrays = example_set(name, split)
        x = torch.from_numpy(arrays[spec["inputs"][EXAMPLES[name]["input_names"][0]]])
        if spec["task"] == "language-model":
            out[split] = dict(samples=len(x), tokens=int(x.shape[1]),
                              perplexity=round(export.lm_perplexity(model, x), 4),
                              next_token_accuracy=round(lm_next_token_accuracy(model, x), 4))
        else:
            acc = export.classifier_accuracy(model, [x], torch.from_numpy(arrays[spec["labels"]]))
            out[split] = dict(samples=len(x), accuracy=round(acc, 4))
    return out


def train_example(job):
    """Build, train and evaluate one example (in a worker process)."""
    name, threads, steps = job
    torch.set_num_threads(threads)
    spec = EXAMPLES[name]
    cfg = dict(spec["train"])
    if steps and cfg["kind"] == "lm":
        cfg["steps"] = steps

    def log(msg):
        print(f"  [{name}] {msg}", flush=True)

    model = spec["build"]()
    wall, cpu = time.time(), time.process_time()
    if cfg["kind"] == "lm":
        final_loss = export.train_lm(model, cfg, log)
    else:
        final_loss = export.train_digits(model, cfg, log, flatten=False)
    wall, cpu = time.time() - wall, time.process_time() - cpu
    metrics = evaluate(name, model)
    log(f"trained in {wall:.1f} s (cpu {cpu:.1f} s): held-out {metrics['heldout']}")
    record = dict(config=cfg, seconds=round(wall, 1), cpu_seconds=round(cpu, 1), threads=threads,
                  final_train_loss=round(final_loss, 4), **metrics)
    state = {k: v.detach().numpy().copy() for k, v in model.state_dict().items()}
    return name, state, record


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--only", default="", help="comma-separated subset of: " + ",".join(EXAMPLES))
    ap.add_argument("--jobs", type=int, default=2, help="examples trained in parallel (default 2)")
    ap.add_argument("--threads", type=int, default=1, help="torch threads per example (default 1)")
    ap.add_argument("--steps", type=int, default=0, help="override the language model's training steps")
    ap.add_argument("--sets-only", action="store_true", help="write the calibration and held-out sets only")
    args = ap.parse_args(argv)
    names = [n for n in args.only.split(",") if n] or list(EXAMPLES)
    unknown = [n for n in names if n not in EXAMPLES]
    if unknown:
        ap.error(f"--only: unknown example {', '.join(unknown)} (expected some of {', '.join(EXAMPLES)})")

    for name in names:
        write_sets(name)
    if args.sets_only:
        return 0

    t0 = time.time()
    print(f"training {', '.join(names)} ({args.jobs} jobs, {args.threads} thread(s) each)", flush=True)
    jobs = [(n, args.threads, args.steps) for n in names]
    if args.jobs <= 1 or len(jobs) == 1:
        results = list(map(train_example, jobs))
    else:
        import multiprocessing as mp
        with mp.get_context("spawn").Pool(min(args.jobs, len(jobs))) as pool:
            results = list(pool.imap_unordered(train_example, jobs))
    print(f"training done in {time.time() - t0:.1f} s", flush=True)

    torch.set_num_threads(args.threads)
    for name, state, record in results:
        spec = EXAMPLES[name]
        model = spec["build"]()
        model.load_state_dict({k: torch.from_numpy(v) for k, v in state.items()})
        model.eval()
        folder = os.path.join(ROOT, "examples", name)
        os.makedirs(folder, exist_ok=True)
        path = os.path.join(folder, "model.onnx")
        proto = export.export_model(model, spec["inputs"](), path, spec["input_names"], spec["output_names"],
                                    spec["dynamic_axes"], OPSET)
        params = sum(p.numel() for p in model.parameters())
        record = dict(generator="tools/examples/train.py", torch=torch.__version__.split("+")[0],
                      params=params, bytes=os.path.getsize(path), nodes=len(proto.graph.node),
                      ops=export.op_histogram(proto.graph), training=record)
        with open(os.path.join(folder, "training.json"), "w") as f:
            json.dump(record, f, indent=1)
            f.write("\n")
        print(f"{os.path.relpath(path, ROOT)}: {params:,} params, {record['bytes']:,} bytes, "
              f"held-out {record['training']['heldout']}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
