"""``python benchmarks/attention_speed.py``: one layer's attention of a tree-decoding pass, through torch's
``scaled_dot_product_attention`` (the additive mask built from the boolean one included, as a pass builds it) and
through ``attention_kernel`` "triton" (``decoding/tree_attention.py``), side by side on one GPU.

Each shape is a pass of B documents x T tokens over S cache columns, with the heads of the default model (Gemma 3
270M: 4 query heads over 1 KV head of 256) or of ``--heads H,HKV,D``: batch-1 passes (one document: its wide first
pass, then narrow ones) and ``nlp.pipe``-wide ones. Each variant is captured in a CUDA graph of ``--repeat`` calls and
replayed; the time is the median replay over ``--rounds``, per call. The outputs are compared (max absolute
difference). Each shape comes with two masks: *dense* (every token sees 60% of the S columns at random) and *ragged*
(as a batch's pass lays them out: each document's row holds its own number of columns, S/8 to S, and of real tokens,
the rest padding that sees column 0 only), where whole blocks of columns go unseen by a tile of tokens: the Triton
kernel is timed skipping them (its default) and reading every block. Prints a markdown table; ``--output`` writes
the JSON, the table (.md) and a PNG.

    python benchmarks/attention_speed.py --output metrics/attention_speed.json   # or: spacy project run attention-speed
"""

from __future__ import annotations

import argparse
import itertools
import sys
from pathlib import Path
from typing import Any, Dict, List

import torch
import torch.nn.functional as F

sys.path.insert(0, str(Path(__file__).resolve().parent))
from report import paired_bars, publish  # noqa: E402
from timing import graph_us, kernel_options, kernel_report  # noqa: E402

from spacy_padellm.decoding import tree_attention  # noqa: E402
from spacy_padellm.decoding.static_lm import StaticLM  # noqa: E402

# (B, T, S): batch 1 (a first pass wide with drafts, then a few tokens per label), then nlp.pipe widths
SHAPES = [(1, 384, 128), (1, 64, 128), (1, 16, 128), (1, 16, 256), (64, 32, 128), (256, 16, 128), (256, 64, 256)]


def _inputs(B: int, T: int, S: int, H: int, Hkv: int, D: int, ragged: bool, seed: int = 0):
    g = torch.Generator(device="cuda").manual_seed(seed)
    q = torch.randn(B, T, H, D, device="cuda", generator=g, dtype=torch.bfloat16)
    k, v = (torch.randn(B, Hkv, S, D, device="cuda", generator=g, dtype=torch.bfloat16) for _ in range(2))
    mask = torch.rand(B, T, S, device="cuda", generator=g) < 0.6
    if ragged:  # each row its own columns and real tokens; the padding tokens see column 0 alone
        cols = torch.randint(max(S // 8, 1), S + 1, (B, 1, 1), device="cuda", generator=g)
        real = torch.randint(1, T + 1, (B, 1, 1), device="cuda", generator=g)
        mask &= torch.arange(S, device="cuda") < cols
        mask &= torch.arange(T, device="cuda")[:, None] < real
    mask[..., 0] = True
    return q, k, v, mask


def _every_block(q, k, v, mask, scale):
    return tree_attention.attend(q, k, v, mask, scale, skip_empty=False)


def _sdpa(q, k, v, mask, scale):
    """The engine's "sdpa" attention: its additive mask (one row per token), then grouped-query attention."""
    add = StaticLM._additive(mask, 1, q.dtype)
    o = F.scaled_dot_product_attention(q.transpose(1, 2), k, v, attn_mask=add, scale=scale,
                                       enable_gqa=q.shape[2] != k.shape[1])
    return o.transpose(1, 2)


def measure(heads, repeat: int, rounds: int) -> List[Dict[str, Any]]:
    H, Hkv, D = heads
    scale = D ** -0.5
    rows = []
    for (B, T, S), ragged in itertools.product(SHAPES, (False, True)):
        args = (*_inputs(B, T, S, H, Hkv, D, ragged), scale)
        got = tree_attention.attend(*args)
        diff = (got.float() - _sdpa(*args).float()).abs().max().item()
        same = torch.equal(got, _every_block(*args))
        sdpa_us = graph_us(_sdpa, args, repeat, rounds)
        triton_us = graph_us(tree_attention.attend, args, repeat, rounds)
        every_us = graph_us(_every_block, args, repeat, rounds)
        rows.append(dict(B=B, T=T, S=S, mask="ragged" if ragged else "dense", sdpa_us=round(sdpa_us, 2),
                         triton_us=round(triton_us, 2), every_block_us=round(every_us, 2),
                         speedup=round(sdpa_us / triton_us, 2), skip_speedup=round(every_us / triton_us, 2),
                         max_abs_diff=diff, skip_same=same))
        print(f"B={B} T={T} S={S} {rows[-1]['mask']}: sdpa {sdpa_us:.1f} us, triton {triton_us:.1f} us "
              f"(every block {every_us:.1f} us)", file=sys.stderr)
    return rows


def table(report: Dict[str, Any]) -> str:
    H, Hkv, D = report["heads"]
    lines = [f"## One layer's attention: {report['device']}, bf16, {H} query heads over {Hkv} KV heads of {D}", "",
             f"- command: `{report['command']}`", "",
             "| docs B | tokens T | columns S | mask | sdpa µs | triton µs | sdpa / triton | triton, every block µs "
             "| every block / skipping | max abs diff |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for r in report["rows"]:
        lines.append(f"| {r['B']} | {r['T']} | {r['S']} | {r['mask']} | {r['sdpa_us']:.1f} | {r['triton_us']:.1f} | "
                     f"{r['speedup']:.2f}x | {r['every_block_us']:.1f} | {r['skip_speedup']:.2f}x"
                     f"{'' if r['skip_same'] else ' (outputs differ)'} | {r['max_abs_diff']:.2g} |")
    return "\n".join(lines) + "\n"


def plot(report: Dict[str, Any], path: Path) -> None:
    rows = report["rows"]
    paired_bars(path, [f"B{r['B']} T{r['T']} S{r['S']} {r['mask']}" for r in rows], [r["sdpa_us"] for r in rows],
                [r["triton_us"] for r in rows], ["sdpa (+ additive mask)", "triton tree kernel"], "µs per layer call",
                f"One layer's attention, {report['device']}")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--heads", default="4,1,256", help="query heads, KV heads, head size (default: Gemma 3 270M)")
    kernel_options(p, repeat=50)
    args = p.parse_args(argv)
    report = kernel_report(p, args)
    heads = tuple(int(x) for x in args.heads.split(","))
    report.update(heads=heads, rows=measure(heads, args.repeat, args.rounds))
    return publish(report, table, args.output, plot)


if __name__ == "__main__":
    sys.exit(main())
