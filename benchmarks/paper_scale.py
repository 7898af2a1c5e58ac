"""Latency at the paper's scale: a LLaMA-2-7B-shaped model (random weights, bf16) on the static engine,
decode lengths forced to each method's gold output on the CoNLL03 test set.

The PaDeLLM-NER paper reports, on an A100 with LLaMA-2-7B, 229.74 ms per sentence for PaDeLLM,
753.36 ms for AutoRegStruct and 992.70 ms for AutoRegAug. Random weights cannot predict anything, so
every method is driven through its *gold* output instead of its own predictions (teacher forcing, one
token per sequential pass, exactly as greedy decoding would feed them):

* ``padellm``: pass 1 = text prefix + every label prompt (one tree); pass 2 = each label's count and
  terminator + every ``<mention k>`` tag; then one pass per mention token (the longest mention sets the
  number of passes; EOS is the prediction after the last one);
* ``autoreg_struct`` / ``autoreg_aug``: pass 1 = the prompt; then one pass per output token.

Token counts come from the SmolLM2 tokenizer (LLaMA-2's is not available here). Writes JSON and a
markdown table (with the physical floor: weight bytes per pass / measured memory bandwidth x passes).

    python benchmarks/paper_scale.py TEST.padellm.jsonl TOKENIZER_GGUF_OR_DIR OUT_DIR [--docs 200]
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from pathlib import Path

import numpy as np
import torch

PAPER_A100_MS = {"padellm": 229.74, "autoreg_struct": 753.36, "autoreg_aug": 992.70}
# Vocabulary: the SmolLM2 tokenizer's 49152 ids (its token ids are what is fed), not LLaMA-2's 32000; the
# larger LM head adds 0.2 GB (1.5%) of weights per pass to the 7B shape.
SHAPES = {
    "llama2-7b": dict(hidden=4096, layers=32, n_heads=32, n_kv_heads=32, intermediate=11008),
    "smollm2-135m": dict(hidden=576, layers=30, n_heads=9, n_kv_heads=3, intermediate=1536),
    "tiny": dict(hidden=64, layers=2, n_heads=4, n_kv_heads=2, intermediate=128),
}


def load_sentences(path: Path, limit: int):
    from spacy_padellm.baselines import group_records
    from spacy_padellm.text.protocol import TrainingExample

    records = [TrainingExample(**json.loads(line)) for line in path.open(encoding="utf8") if line.strip()]
    return group_records(records)[:limit]


def load_tokenizer(spec: str):
    from transformers import AutoTokenizer

    path = Path(spec)
    if path.suffix == ".gguf":
        return AutoTokenizer.from_pretrained(str(path.parent), gguf_file=path.name, clean_up_tokenization_spaces=False)
    return AutoTokenizer.from_pretrained(spec, clean_up_tokenization_spaces=False)


def plan(sentence, labels, enc, struct_enc, aug_enc):
    """Token chains of each method for one sentence (what teacher forcing feeds)."""
    gold = {label: [m for l, m in sentence.mentions if l == label] for label in labels}
    padellm = dict(prefix=enc.prefix(sentence.text), labels=[enc.label(l) for l in labels],
                   counts=[enc.count(len(gold[l])) for l in labels],
                   mentions=[[(enc.mention_tag(k), enc.mention(m)) for k, m in enumerate(gold[l], 1)] for l in labels])
    out = {"padellm": padellm}
    for name, aenc in (("autoreg_struct", struct_enc), ("autoreg_aug", aug_enc)):
        target, _ = aenc.target(sentence, labels)
        out[name] = dict(prompt=aenc.prompt(sentence.text), target=target[:-1])  # EOS is predicted, not fed
    return out


def run_padellm(lm, p) -> int:
    from spacy_padellm.decoding.tree import TreeBatch

    tb = TreeBatch(lm, 1, len(p["prefix"]) + 256)
    root = tb.root(0)
    tb.feed(root, p["prefix"])
    branches = []
    for ids in p["labels"]:
        b = tb.fork(root)
        tb.feed(b, ids, outputs=[len(ids) - 1])
        branches.append(b)
    tb.run()
    streams = []
    for b, count, mentions in zip(branches, p["counts"], p["mentions"]):
        if not mentions:  # count 0: the digit is fed, the terminator is its prediction
            tb.feed(b, count[:1], outputs=[0])
            continue
        tb.feed(b, count, outputs=[0])
        for tag, mention in mentions:
            child = tb.fork(b)
            tb.feed(child, tag, outputs=[len(tag) - 1])
            streams.append((child, mention))
    tb.run()
    step = 0
    while True:
        live = [(b, m) for b, m in streams if step < len(m)]
        if not live:
            break
        for b, m in live:
            tb.feed(b, [m[step]], outputs=[0])
        tb.run()
        step += 1
    return tb.passes


def run_autoreg(lm, p) -> int:
    from spacy_padellm.decoding.tree import TreeBatch

    tb = TreeBatch(lm, 1, len(p["prompt"]) + len(p["target"]) + 8)
    b = tb.root(0)
    tb.feed(b, p["prompt"], outputs=[len(p["prompt"]) - 1])
    tb.run()
    for tok in p["target"]:
        tb.feed(b, [tok], outputs=[0])
        tb.run()
    return tb.passes


def bandwidth_gbps(device) -> float:
    x = torch.empty(int(2e9), dtype=torch.uint8, device=device)
    x.clone()
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    for _ in range(10):
        x.clone()
    torch.cuda.synchronize()
    return 2 * 2e9 * 10 / (time.perf_counter() - t0) / 1e9


def main(argv=None) -> int:
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("test_jsonl", type=Path)
    ap.add_argument("tokenizer")
    ap.add_argument("out_dir", type=Path)
    ap.add_argument("--docs", type=int, default=200)
    ap.add_argument("--warmup", type=int, default=20)
    ap.add_argument("--shape", choices=sorted(SHAPES), default="llama2-7b")
    ap.add_argument("--device", default="cuda")
    args = ap.parse_args(argv)
    from tqdm import tqdm

    from spacy_padellm.baselines import AutoRegEncoder
    from spacy_padellm.text.protocol import PromptEncoder
    from spacy_padellm.decoding.static_lm import StaticLM

    tok = load_tokenizer(args.tokenizer)
    enc = PromptEncoder(tok)
    struct_enc, aug_enc = AutoRegEncoder(tok, "autoreg_struct"), AutoRegEncoder(tok, "autoreg_aug")
    sentences = load_sentences(args.test_jsonl, args.docs + args.warmup)
    labels = ["PER", "LOC", "ORG", "MISC"]
    plans = [plan(s, labels, enc, struct_enc, aug_enc) for s in sentences]
    shape = dict(SHAPES[args.shape], vocab=len(tok))
    dtype = torch.bfloat16 if args.device.startswith("cuda") else torch.float32
    lm = StaticLM.random(**shape, device=args.device, dtype=dtype)
    runners = {"padellm": run_padellm, "autoreg_struct": run_autoreg, "autoreg_aug": run_autoreg}
    for p in tqdm(plans[: args.warmup], desc="warm-up (graph capture)"):
        for name, fn in runners.items():
            fn(lm, p[name])
    ms = {n: [] for n in runners}
    passes = {n: [] for n in runners}
    for p in tqdm(plans[args.warmup :], desc="latency, methods interleaved"):
        for name, fn in runners.items():
            if args.device.startswith("cuda"):
                torch.cuda.synchronize()
            t0 = time.perf_counter()
            n = fn(lm, p[name])
            ms[name].append((time.perf_counter() - t0) * 1000)
            passes[name].append(n)
    bw = bandwidth_gbps(args.device) if args.device.startswith("cuda") else None
    floor_per_pass = lm.weight_bytes / (bw * 1e9) * 1000 if bw else None
    report = {"device": torch.cuda.get_device_name(0) if args.device.startswith("cuda") else "cpu",
              "torch": torch.__version__, "shape": args.shape, "dtype": str(dtype), "docs": len(plans) - args.warmup,
              "weight_GB": round(lm.weight_bytes / 1e9, 2), "bandwidth_GBps": round(bw, 1) if bw else None,
              "command": " ".join([Path(sys.argv[0]).name] + (argv or sys.argv[1:])), "methods": {}}
    for name in runners:
        mean_passes = statistics.mean(passes[name])
        row = {"median_ms": round(statistics.median(ms[name]), 2), "p90_ms": round(float(np.percentile(ms[name], 90)), 2),
               "mean_ms": round(statistics.mean(ms[name]), 2), "mean_passes": round(mean_passes, 2),
               "paper_a100_ms": PAPER_A100_MS[name]}
        if floor_per_pass:
            floor = statistics.mean(p * floor_per_pass for p in passes[name])
            row["floor_mean_ms"] = round(floor, 2)
            row["x_floor"] = round(row["mean_ms"] / floor, 2)
        report["methods"][name] = row
    base = report["methods"]["padellm"]["mean_ms"]
    for name, row in report["methods"].items():
        row["padellm_speedup_mean"] = round(row["mean_ms"] / base, 2)
    args.out_dir.mkdir(parents=True, exist_ok=True)
    (args.out_dir / f"paper_scale_{args.shape}.json").write_text(json.dumps(report, indent=1))
    lines = [f"Device: {report['device']}, {args.shape} shape, random weights, {report['dtype']}, "
             f"{report['docs']} CoNLL03 test sentences, batch size 1, decode lengths forced to the gold output.",
             "", "| method | median ms | p90 ms | mean ms | passes | floor ms | × floor | PaDeLLM speedup (mean) | paper A100 ms |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for name, r in report["methods"].items():
        lines.append(f"| {name} | {r['median_ms']} | {r['p90_ms']} | {r['mean_ms']} | {r['mean_passes']} | "
                     f"{r.get('floor_mean_ms', '–')} | {r.get('x_floor', '–')} | {r['padellm_speedup_mean']} | {r['paper_a100_ms']} |")
    table = "\n".join(lines)
    (args.out_dir / f"paper_scale_{args.shape}.md").write_text(table + "\n")
    print(table)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
