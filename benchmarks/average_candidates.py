"""Checkpoint averaging candidates of two LoRA model folders, compared on dev.

The two folders (a model and the same model trained further) are averaged each way ``--candidate`` names (mode
and weights, ``python -m spacy_padellm average``), every average and the two inputs are scored on the first
``--max-docs`` dev documents on the CPU, and the script prints one row each, writes ``candidates.json`` and plots
dev span F1 per candidate (``candidates.png``). Selection is on dev only: the script never reads a test set.

    python benchmarks/average_candidates.py training/conll03-gemma/best training/conll03-gemma-continued/best \\
        corpus/conll03/conll03_dev.spacy --max-docs 1000 --out training/average-candidates
"""

from __future__ import annotations

import argparse
import json
import sys
from pathlib import Path
from typing import Dict, List, Tuple

__all__ = ["parse_candidate", "render_markdown", "render_plot", "main"]

DEFAULT_CANDIDATES = ("factors:1,1", "factors:1,3", "exact:1,1", "exact:1,3")


def parse_candidate(text: str) -> Tuple[str, List[float]]:
    """``MODE:W1,W2`` as (mode, weights)."""
    mode, sep, weights = text.partition(":")
    if not sep or mode not in ("exact", "factors"):
        raise ValueError(f"a candidate is MODE:W1,W2 with MODE exact or factors, got {text!r}")
    return mode, [float(w) for w in weights.split(",")]


def render_markdown(rows: List[Dict]) -> str:
    lines = ["| candidate | mode | weights | dev P | dev R | **dev span F1** |", "| --- | --- | --- | --- | --- | --- |"]
    best = max(r["ents_f"] for r in rows)
    for r in rows:
        f1 = f"**{r['ents_f']:.4f}**" if r["ents_f"] == best else f"{r['ents_f']:.4f}"
        lines.append(f"| {r['name']} | {r['mode']} | {r['weights']} | {r['ents_p']:.4f} | {r['ents_r']:.4f} | {f1} |")
    return "\n".join(lines)


def render_plot(rows: List[Dict], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 3.5))
    names = [r["name"] for r in rows]
    ax.barh(names, [r["ents_f"] for r in rows], color=["#888" if r["mode"] == "input" else "#3a7" for r in rows])
    low = min(r["ents_f"] for r in rows)
    ax.set_xlim(low - 0.01, max(r["ents_f"] for r in rows) + 0.005)
    ax.set_xlabel("dev span F1")
    ax.invert_yaxis()
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def main(argv=None) -> int:
    sys.path.insert(0, str(Path(__file__).resolve().parent.parent))
    from spacy_padellm.cli.evaluate import evaluate
    from spacy_padellm.training.adapter_average import average_models

    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    p.add_argument("first", help="LoRA model folder (e.g. the first stage)")
    p.add_argument("second", help="LoRA model folder of the same base and task (e.g. the first trained further)")
    p.add_argument("dev", help="dev .spacy DocBin (never the test set)")
    p.add_argument("--max-docs", type=int, default=None)
    p.add_argument("--candidate", action="append", default=None,
                   help=f"MODE:W1,W2 (repeatable; default: {' '.join(DEFAULT_CANDIDATES)})")
    p.add_argument("--out", type=Path, default=Path("training/average-candidates"))
    p.add_argument("--device", default="cpu")
    args = p.parse_args(argv)
    candidates = [parse_candidate(c) for c in args.candidate or DEFAULT_CANDIDATES]
    args.out.mkdir(parents=True, exist_ok=True)
    runs = [("first", "input", [1.0, 0.0], args.first), ("second", "input", [0.0, 1.0], args.second)]
    for mode, weights in candidates:
        name = f"{mode}-{':'.join(f'{w:g}' for w in weights)}"
        folder = args.out / name
        if not folder.exists():
            average_models([args.first, args.second], str(folder), weights, mode)
        runs.append((name, mode, weights, str(folder)))
    rows = []
    for name, mode, weights, model in runs:
        scores = evaluate(model, args.dev, max_docs=args.max_docs, device=args.device)
        rows.append({"name": name, "mode": mode, "weights": weights, "model": model,
                     **{k: scores[k] for k in ("ents_p", "ents_r", "ents_f", "string_f", "docs", "seconds")}})
        print(f"{name}: dev span F1 {scores['ents_f']:.4f}", flush=True)
    table = render_markdown(rows)
    print(table)
    best = max(rows, key=lambda r: r["ents_f"])
    report = {"first": args.first, "second": args.second, "dev": args.dev, "max_docs": args.max_docs,
              "device": args.device, "rows": rows, "chosen": best["name"]}
    (args.out / "candidates.json").write_text(json.dumps(report, indent=1))
    render_plot(rows, args.out / "candidates.png")
    print(f"chosen on dev: {best['name']} ({best['ents_f']:.4f})")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
