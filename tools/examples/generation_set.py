#!/usr/bin/env python3
"""Build the fortunes-llama generation set (examples/fortunes-llama/generation/) from the
question-and-answer fortunes of Debian's `fortunes` package.

Usage:
    /usr/bin/python3 tools/examples/generation_set.py [--out examples/fortunes-llama/generation]
        [--max-new-tokens 48] [--max-prompt 112] [--limit 150] [--list]

Writes <out>/calibration.json and <out>/prompts.jsonl (the `task: generation` format: one line
{"prompt": [ids], "reference": [ids]} per sample; ids are UTF-8 bytes, the model's vocabulary).

Source: /usr/share/games/fortunes/riddles first, then the other fortune files (sorted by name)
for their Q:/A: pairs. A fortune (the text between `%` lines) holds one or more blocks that start
with a marker line, `Q:` / `A:` (or `Q.` / `A.`) then a tab or spaces, and continue on the
following lines up to a blank line, another marker, a speaker label (`Name:`) or an attribution
(`-- ...`). Two adjacent blocks make a pair: question then answer (`Q:` ... `A:` ...), or, in a
fortune whose first block is `A:` (the Jeopardy-style "FORTUNE PROVIDES QUESTIONS FOR THE GREAT
ANSWERS"), answer then question. The first block of a pair is the prompt, the second the
reference to generate.

The text is written the way the model read it in training: tools/fixtures/data.py collapses each
fortune's whitespace (newlines, tabs, runs of spaces) to single spaces and separates fortunes with
a newline, so the model never saw a tab or a newline inside a fortune, and a newline (the set's
eos-token-id, 10) is where a fortune ends. A prompt is the fortune's own text from its start up
to where the second block's text begins, whitespace collapsed, ending with the marker and a space:

    "Q: How do you save a drowning lawyer? A: "                    -> "Throw him a rock."
    "FORTUNE PROVIDES ... ANSWERS: #15 A: The Royal Canadian Mounted Police. Q: "
                                                                   -> "What was the greatest ..."

so a prompt includes the fortune's lead-in and any earlier pairs (the courtroom quotes of `law`
need them for context). The reference is the second block's text, collapsed, without the
newline. Pairs are dropped when the prompt is longer than --max-prompt bytes (prompt +
max-new-tokens stays within 160 bytes), the reference is longer than --max-new-tokens bytes (so
every reference can be generated in full) or empty, either block does not start its line cleanly
(a marker with no partner, text that is not valid UTF-8 or holds control characters), or a prompt
repeats an earlier one (the same riddle in two files, or one question with several answers: the
first that passes the other tests is kept). Samples are in file order, riddles first; at most
--limit of them.

With the defaults (48 new tokens, prompts up to 112 bytes) riddles gives 82 pairs, law 20, linux
2 and cookie 1: 105 samples, prompts 22-110 bytes, references 3-48 bytes. The script also prints
which split of tools/fixtures/data.py each sample's fortune is in (the model trained on "train").
"""

import argparse
import json
import os
import re
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.normpath(os.path.join(HERE, "..", ".."))
sys.path.insert(0, os.path.join(ROOT, "tools", "fixtures"))
import data  # noqa: E402  (fortune files, splits)

FIRST_FILE = "riddles"
EOS = 10  # "\n": the separator between fortunes in the training text
MARKER = re.compile(r"^([QA])([:.])[ \t]+(\S.*)$")
SPEAKER = re.compile(r"^[A-Za-z][A-Za-z .'-]{0,30}:(\s|$)")  # "Pee Wee:", "MR. BROOKS:", "K:"
OUT = os.path.join(ROOT, "examples", "fortunes-llama", "generation")


def collapse(text):
    return " ".join(text.split())


def blocks(item):
    """The marker blocks of one fortune, in order: dicts with the marker ("Q" / "A"), its
    punctuation (":" / "."), the start and end offsets of the block's text in `item`, and whether
    only blank lines separate it from the previous block (adjacent)."""
    out = []
    lines = item.split("\n")
    offset, cur = 0, None
    gap_since_block = True  # something other than blank lines since the last block
    for line in lines:
        start = offset
        offset += len(line) + 1
        m = MARKER.match(line)
        if m:
            if cur is not None:
                out.append(cur)
            text_start = start + m.start(3)
            cur = dict(marker=m.group(1), punct=m.group(2), start=text_start, end=start + len(line),
                       adjacent=not gap_since_block)
            gap_since_block = False
            continue
        if cur is None:
            if line.strip():
                gap_since_block = True
            continue
        stripped = line.strip()
        if not stripped:
            out.append(cur)
            cur = None  # a blank line ends the block; only blank lines so far, still adjacent
            continue
        if stripped.startswith("--") or SPEAKER.match(line):
            out.append(cur)
            cur = None
            gap_since_block = True
            continue
        cur["end"] = start + len(line)  # continuation line
    if cur is not None:
        out.append(cur)
    return out


def pairs(item):
    """(prompt text, reference text) of each clean pair of one fortune."""
    bs = blocks(item)
    if not bs:
        return []
    first, second = ("A", "Q") if bs[0]["marker"] == "A" else ("Q", "A")
    out = []
    for a, b in zip(bs, bs[1:]):
        if a["marker"] != first or b["marker"] != second or not b["adjacent"] or a["punct"] != b["punct"]:
            continue
        prompt = collapse(item[:b["start"]]) + " "
        reference = collapse(item[b["start"]:b["end"]])
        if reference:
            out.append((prompt, reference))
    return out


def read_items(name):
    """The fortunes of one file as text; None for one that is not valid UTF-8."""
    with open(os.path.join(data.FORTUNES, name), "rb") as f:
        raw = f.read()
    out = []
    for chunk in raw.split(b"\n%\n"):
        try:
            out.append(chunk.decode("utf-8").strip("\n"))
        except UnicodeDecodeError:
            out.append(None)
    return out


def clean(text):
    return all(ch >= " " and ch != "\x7f" for ch in text)


def build(max_new, max_prompt, limit):
    """[(prompt, reference, file, split of the fortune)] and the counts of what was dropped."""
    files = [FIRST_FILE] + [f for f in data.fortune_files() if f != FIRST_FILE and f not in data.LM_EXCLUDE]
    samples, seen = [], set()
    dropped = dict(prompt_too_long=0, reference_too_long=0, unclean=0, repeated_prompt=0)
    for name in files:
        for item in read_items(name):
            if item is None:
                continue
            for prompt, reference in pairs(item):
                if not (clean(prompt) and clean(reference)):
                    dropped["unclean"] += 1
                elif len(prompt.encode("utf-8")) > max_prompt:
                    dropped["prompt_too_long"] += 1
                elif len(reference.encode("utf-8")) > max_new:
                    dropped["reference_too_long"] += 1
                elif prompt in seen:
                    dropped["repeated_prompt"] += 1
                else:
                    seen.add(prompt)
                    samples.append((prompt, reference, name, data.text_split(collapse(item))))
    return samples[:limit], dropped, len(samples)


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default=OUT)
    ap.add_argument("--max-new-tokens", type=int, default=48)
    ap.add_argument("--max-prompt", type=int, default=112, help="longest prompt kept, in bytes")
    ap.add_argument("--limit", type=int, default=150, help="most samples kept (the first, in file order)")
    ap.add_argument("--list", action="store_true", help="print the samples")
    args = ap.parse_args(argv)

    samples, dropped, found = build(args.max_new_tokens, args.max_prompt, args.limit)
    os.makedirs(args.out, exist_ok=True)
    spec = {"task": "generation", "samples": "prompts.jsonl", "max-new-tokens": args.max_new_tokens,
            "eos-token-id": EOS, "tokenizer": "bytes"}
    with open(os.path.join(args.out, "calibration.json"), "w") as f:
        json.dump(spec, f, indent=2)
        f.write("\n")
    with open(os.path.join(args.out, "prompts.jsonl"), "w") as f:
        for prompt, reference, _, _ in samples:
            f.write(json.dumps({"prompt": list(prompt.encode("utf-8")), "reference": list(reference.encode("utf-8"))},
                               separators=(",", ":")) + "\n")

    if args.list:
        for prompt, reference, name, split in samples:
            print(f"{name:10s} {split:11s} {prompt!r} -> {reference!r}")
    plen = [len(p.encode("utf-8")) for p, _, _, _ in samples]
    rlen = [len(r.encode("utf-8")) for _, r, _, _ in samples]
    per_file, per_split = {}, {}
    for _, _, name, split in samples:
        per_file[name] = per_file.get(name, 0) + 1
        per_split[split] = per_split.get(split, 0) + 1
    print(f"{len(samples)} samples ({found} clean pairs found; dropped {dropped}) from {per_file}")
    print(f"prompt {min(plen)}-{max(plen)} bytes, reference {min(rlen)}-{max(rlen)} bytes "
          f"(mean {sum(rlen) / len(rlen):.1f}), max-new-tokens {args.max_new_tokens}")
    print(f"fortunes' splits (tools/fixtures/data.py): {per_split}")
    print(f"wrote {os.path.relpath(args.out, ROOT)}/calibration.json, prompts.jsonl")
    return 0


if __name__ == "__main__":
    sys.exit(main())
