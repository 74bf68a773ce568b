#!/usr/bin/env python3
"""Reference greedy decoder for the fortunes-llama example, independent of prune-gate's TypeScript.

Usage:
    /usr/bin/python3 tools/examples/reference_decode.py [--model examples/fortunes-llama/model.onnx]
        [--set examples/fortunes-llama/generation] [--heldout examples/fortunes-llama/heldout]
        [--out <set>/reference-generations.jsonl] [--threads 1] [--verify-only]

1. Rebuilds the model in torch from the ONNX file: the module is tools/fixtures/export.py's
   LlamaForCausalLM with the example's shape (tools/examples/train.py LLAMA); its parameters are
   read from the ONNX initializers with the onnx package. The named initializers (embedding,
   RMSNorm weights) map by name. The exporter stores every Linear weight as an anonymous,
   transposed initializer (onnx::MatMul_NNN), so those are mapped by the MatMul node that consumes
   them: the node's name is the module's scope (/model/layers.0/self_attn/q_proj/MatMul ->
   model.layers.0.self_attn.q_proj.weight = initializer^T), and the shape must agree. Every
   parameter must be assigned exactly once and every initializer used.
2. Verifies the reconstruction: its perplexity on the held-out windows (input_ids.npy) must equal
   the committed figure in examples/fortunes-llama/training.json (heldout.perplexity, rounded to 4
   decimals there) to within 5e-4.
3. Decodes every prompt of the generation set (calibration.json + its samples file) one at a
   time, greedily in float32, without a cache: each step runs the whole sequence (prompt plus what
   was generated so far), takes the argmax of the last position's logits (first index on ties,
   done in numpy), stops when that is eos-token-id (not emitted) or after max-new-tokens tokens.
   Writes one line {"generation": [ids]} per prompt, in order, and prints the exact-match count
   and the mean ROUGE-L (LCS F-measure on token ids; both empty = 1, one empty = 0) against the
   references, for information.

Needs Debian's python3-torch (1.13), python3-onnx and python3-numpy.
"""

import argparse
import json
import math
import os
import sys
import time

import numpy as np
import onnx
import torch
from onnx import numpy_helper

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.normpath(os.path.join(HERE, "..", ".."))
sys.path.insert(0, os.path.join(ROOT, "tools", "fixtures"))
import export  # noqa: E402  (LlamaForCausalLM, lm_perplexity)

# the example's shape (tools/examples/train.py LLAMA; not imported so that this file does not
# depend on the training script's other imports)
LLAMA = dict(hidden=128, n_layers=4, n_heads=4, n_kv_heads=2, intermediate=344)
VERIFY_TOLERANCE = 5e-4


# ---------------------------------------------------------------------------------------------
# The model, rebuilt from the ONNX initializers
# ---------------------------------------------------------------------------------------------

def onnx_state_dict(path):
    """{parameter name: float32 array} of the module, from the ONNX file's initializers."""
    graph = onnx.load(path).graph
    inits = {i.name: numpy_helper.to_array(i) for i in graph.initializer}
    state, used = {}, set()
    for name, arr in inits.items():
        if not name.startswith("onnx::"):  # kept its module name: embedding, RMSNorm weights
            state[name] = arr
            used.add(name)
    for node in graph.node:
        if node.op_type != "MatMul" or len(node.input) != 2 or node.input[1] not in inits:
            continue
        scope = node.name.strip("/").split("/")
        if scope[-1] != "MatMul" or len(scope) < 2:
            raise ValueError(f"MatMul {node.name} with an initializer does not name its module")
        param = ".".join(scope[:-1]) + ".weight"
        if param in state:
            raise ValueError(f"{param} assigned twice ({node.name})")
        state[param] = inits[node.input[1]].T  # Linear: y = x W^T, the MatMul holds W^T
        used.add(node.input[1])
    unused = sorted(set(inits) - used)
    if unused:
        raise ValueError(f"initializers not mapped to a parameter: {unused}")
    return state


def load_model(path):
    model = export.LlamaForCausalLM(**LLAMA).eval()
    state = onnx_state_dict(path)
    own = model.state_dict()
    missing = sorted(set(own) - set(state))
    extra = sorted(set(state) - set(own))
    if missing or extra:
        raise ValueError(f"parameter mismatch: missing {missing}, unexpected {extra}")
    for k, v in state.items():
        if tuple(own[k].shape) != v.shape:
            raise ValueError(f"{k}: module shape {tuple(own[k].shape)}, ONNX {v.shape}")
    model.load_state_dict({k: torch.from_numpy(np.array(v, dtype=np.float32)) for k, v in state.items()})
    return model


# ---------------------------------------------------------------------------------------------
# Decoding and metrics
# ---------------------------------------------------------------------------------------------

def greedy(model, prompt, max_new, eos):
    """Greedy continuation of `prompt` (list of ids), no cache, float32. Returns the generated ids
    and the smallest gap between the best and the second-best logit over the steps (how close the
    decode came to a tie another implementation could break the other way)."""
    seq = list(prompt)
    out, margin = [], math.inf
    with torch.no_grad():
        for _ in range(max_new):
            logits = model(torch.tensor([seq], dtype=torch.int64))[0, -1].numpy()
            tok = int(np.argmax(logits))  # first index of the maximum
            margin = min(margin, float(logits[tok] - np.max(np.delete(logits, tok))))
            if tok == eos:
                break
            out.append(tok)
            seq.append(tok)
    return out, margin


def lcs(a, b):
    prev = [0] * (len(b) + 1)
    for x in a:
        cur = [0]
        for j, y in enumerate(b):
            cur.append(prev[j] + 1 if x == y else max(prev[j + 1], cur[j]))
        prev = cur
    return prev[-1]


def rouge_l(gen, ref):
    """ROUGE-L F-measure (beta 1) on token ids; both empty = 1, one empty = 0."""
    if not gen and not ref:
        return 1.0
    if not gen or not ref:
        return 0.0
    n = lcs(gen, ref)
    if n == 0:
        return 0.0
    p, r = n / len(gen), n / len(ref)
    return 2 * p * r / (p + r)


def load_set(folder):
    with open(os.path.join(folder, "calibration.json")) as f:
        spec = json.load(f)
    if spec.get("task") != "generation":
        raise ValueError(f"{folder}: task {spec.get('task')!r}, expected 'generation'")
    with open(os.path.join(folder, spec["samples"])) as f:
        samples = [json.loads(line) for line in f if line.strip()]
    return spec, samples


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--model", default=os.path.join(ROOT, "examples", "fortunes-llama", "model.onnx"))
    ap.add_argument("--set", default=os.path.join(ROOT, "examples", "fortunes-llama", "generation"))
    ap.add_argument("--heldout", default=os.path.join(ROOT, "examples", "fortunes-llama", "heldout"))
    ap.add_argument("--training", default=os.path.join(ROOT, "examples", "fortunes-llama", "training.json"),
                    help="training record holding the expected held-out perplexity")
    ap.add_argument("--out", default="", help="default: <set>/reference-generations.jsonl")
    ap.add_argument("--threads", type=int, default=1)
    ap.add_argument("--verify-only", action="store_true", help="check the reconstruction and stop")
    args = ap.parse_args(argv)
    torch.set_num_threads(args.threads)

    model = load_model(args.model)
    params = sum(p.numel() for p in model.parameters())
    ids = torch.from_numpy(np.load(os.path.join(args.heldout, "input_ids.npy")).astype(np.int64))
    t0 = time.time()
    ppl = export.lm_perplexity(model, ids)
    with open(args.training) as f:
        expected = json.load(f)["training"]["heldout"]["perplexity"]
    ok = abs(ppl - expected) <= VERIFY_TOLERANCE
    print(f"{os.path.relpath(args.model, ROOT)}: {params:,} parameters rebuilt from the ONNX initializers; "
          f"held-out perplexity {ppl:.5f} ({tuple(ids.shape)} ids, {time.time() - t0:.1f} s), "
          f"training.json {expected} -> {'match' if ok else 'MISMATCH'}")
    if not ok:
        return 1
    if args.verify_only:
        return 0

    spec, samples = load_set(args.set)
    max_new, eos = int(spec["max-new-tokens"]), int(spec["eos-token-id"])
    out_path = args.out or os.path.join(args.set, "reference-generations.jsonl")
    t0, cpu0 = time.time(), time.process_time()
    gens, margins = [], []
    for i, s in enumerate(samples):
        g, m = greedy(model, s["prompt"], max_new, eos)
        gens.append(g)
        margins.append(m)
        if (i + 1) % 25 == 0:
            print(f"  {i + 1}/{len(samples)} ({time.time() - t0:.0f} s)", flush=True)
    wall, cpu = time.time() - t0, time.process_time() - cpu0
    with open(out_path, "w") as f:
        for g in gens:
            f.write(json.dumps({"generation": g}, separators=(",", ":")) + "\n")

    exact = sum(g == s["reference"] for g, s in zip(gens, samples))
    rouge = sum(rouge_l(g, s["reference"]) for g, s in zip(gens, samples)) / len(samples)
    stopped = sum(len(g) < max_new for g in gens)
    tokens = sum(len(g) for g in gens)
    distinct = len({tuple(g) for g in gens})
    print(f"{len(samples)} prompts, max-new-tokens {max_new}, eos {eos}: {tokens} tokens generated in "
          f"{wall:.1f} s (cpu {cpu:.1f} s, {args.threads} thread(s)); {stopped} stopped at eos; "
          f"{distinct} distinct generations; smallest top-2 logit gap {min(margins):.4f} "
          f"(prompt {int(np.argmin(margins))})")
    print(f"exact match {exact}/{len(samples)}, mean ROUGE-L {rouge:.4f}")
    print(f"wrote {os.path.relpath(out_path, ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
