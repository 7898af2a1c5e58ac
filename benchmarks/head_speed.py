"""``python benchmarks/head_speed.py``: the LM head's greedy step of a pass, through torch (the head's matrix product,
then the engine's compiled ``fused.greedy`` over the logits it wrote) and through ``head_kernel`` "triton"
(``decoding/head_kernel.py``: no logits written), side by side on one GPU.

The head is the default model's shape (Gemma 3 270M: 262,144 tokens x 640, bf16; ``--vocab``, ``--hidden`` for
another), with random weights, for a pass of M outputs: batch-1 passes want 1 to a few hundred (its first pass, wide
with drafts, the most), ``nlp.pipe`` passes up to a few thousand. Each variant is captured in a CUDA graph of
``--repeat`` calls and replayed; the time is the median replay over ``--rounds``, per call. The tokens chosen are
compared (the share that agree) and the log-sum-exps (max absolute difference). Prints a markdown table; ``--output``
writes the JSON, the table (.md) and a PNG.

    python benchmarks/head_speed.py --output metrics/head_speed.json   # or: spacy project run head-speed
"""

from __future__ import annotations

import argparse
import sys
from pathlib import Path
from typing import Any, Dict, List

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from report import paired_bars, publish  # noqa: E402
from timing import graph_us, kernel_options, kernel_report  # noqa: E402

from spacy_padellm.decoding import head_kernel  # noqa: E402
from spacy_padellm.decoding.fused import Kernels  # noqa: E402

OUTPUTS = [1, 4, 16, 64, 128, 256, 400, 1024, 2048]  # outputs M of a pass


def measure(vocab: int, hidden: int, repeat: int, rounds: int) -> List[Dict[str, Any]]:
    g = torch.Generator(device="cuda").manual_seed(0)
    head = (torch.randn(vocab, hidden, device="cuda", generator=g) * hidden ** -0.5).to(torch.bfloat16)
    step = Kernels(lambda t: t, compiled=True).greedy  # the engine's compiled step

    def torch_head(x):
        return step(x @ head.t(), None, None)

    def triton_head(x):
        return head_kernel.greedy(x, head, None, None)

    rows = []
    for M in OUTPUTS:
        x = torch.randn(M, hidden, device="cuda", generator=g).to(torch.bfloat16)
        want, got = torch_head(x), triton_head(x)
        torch_us, triton_us = graph_us(torch_head, (x,), repeat, rounds), graph_us(triton_head, (x,), repeat, rounds)
        rows.append(dict(M=M, torch_us=round(torch_us, 1), triton_us=round(triton_us, 1),
                         speedup=round(torch_us / triton_us, 2), tile=list(head_kernel.tiles(M)),
                         same_tokens=(got[0] == want[0]).float().mean().item(),
                         max_lse_diff=(got[2] - want[2]).abs().max().item()))
        print(f"M={M}: torch {torch_us:.1f} us, triton {triton_us:.1f} us", file=sys.stderr)
    return rows


def table(report: Dict[str, Any]) -> str:
    lines = [f"## The LM head's greedy step: {report['device']}, bf16, a head of {report['vocab']:,} x "
             f"{report['hidden']}", "", f"- command: `{report['command']}`", "",
             "| outputs M | torch µs | triton µs | torch / triton | same tokens | max lse diff |",
             "| --- | --- | --- | --- | --- | --- |"]
    for r in report["rows"]:
        lines.append(f"| {r['M']} | {r['torch_us']:.1f} | {r['triton_us']:.1f} | {r['speedup']:.2f}x | "
                     f"{100 * r['same_tokens']:.2f}% | {r['max_lse_diff']:.2g} |")
    return "\n".join(lines) + "\n"


def plot(report: Dict[str, Any], path: Path) -> None:
    rows = report["rows"]
    paired_bars(path, [str(r["M"]) for r in rows], [r["torch_us"] for r in rows], [r["triton_us"] for r in rows],
                ["torch: product + compiled greedy", "triton head kernels"], "µs per pass's head",
                f"The LM head's greedy step, {report['device']}", xlabel="outputs of the pass")


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("--vocab", type=int, default=262144, help="head rows (default: Gemma 3 270M's vocabulary)")
    p.add_argument("--hidden", type=int, default=640, help="hidden size (default: Gemma 3 270M's)")
    kernel_options(p, repeat=20)
    args = p.parse_args(argv)
    report = kernel_report(p, args)
    report.update(vocab=args.vocab, hidden=args.hidden, rows=measure(args.vocab, args.hidden, args.repeat, args.rounds))
    return publish(report, table, args.output, plot)


if __name__ == "__main__":
    sys.exit(main())
