"""How a model's test score grows with its training data: the data's subsets, then one model per subset scored.

``split`` writes every k-th line of a PaDeLLM JSONL file as a subset of its own (``NAME_everyK.jsonl``: spread over
the whole file, as the full file is). Train one candidate per subset and on the whole file with
``train_candidates.py`` (the same settings and time for each, chosen on the same dev set); then ``score`` scores each
candidate's best model once on test and fits the test score to the log of the training sentences. The fit says how
much a doubling of the data gives and how many sentences a target score would take at that rate: whether a model
falls short of a target for want of data. No candidate is chosen by its test score: the curve is the result.

    python benchmarks/learning_curve.py split corpus/genia/genia_dev90.jsonl corpus/genia-curve --every 8,4,2
    python benchmarks/learning_curve.py score training/genia-curve --test corpus/genia/genia_test.spacy \\
        --spans-key sc --target 0.704 --at 15022 --gpu-id 0 --output metrics/genia_learning_curve.json
"""

from __future__ import annotations

import argparse
import json
import math
import sys
from pathlib import Path
from typing import Dict, List, Optional, Sequence, Tuple

sys.path.insert(0, str(Path(__file__).resolve().parent))
from choose_candidate import _common, _pct, _run, score_prefix_of  # noqa: E402
from report import publish  # noqa: E402

__all__ = ["split", "fit_log2", "sentences_needed", "score", "render_markdown", "render_plot", "main"]


def split(source: Path, out_dir: Path, every: Sequence[int]) -> Dict[int, Path]:
    """Every k-th non-empty line of ``source`` (starting with the first) as ``out_dir/STEM_everyK.jsonl``, for each
    k of ``every``; the files written, by k. Lines are split on "\\n" only (some texts hold other line breaks)."""
    if not every or min(every) < 1:
        raise SystemExit(f"--every takes positive integers, got {list(every)}")
    lines = [line for line in source.read_text(encoding="utf-8").split("\n") if line.strip()]
    out_dir.mkdir(parents=True, exist_ok=True)
    written = {}
    for k in every:
        path = out_dir / f"{source.stem}_every{k}.jsonl"
        path.write_text("\n".join(lines[::k]) + "\n", encoding="utf-8")
        written[k] = path
        print(f"{path}: {len(lines[::k])} of {len(lines)} lines")
    return written


def fit_log2(points: Sequence[Tuple[int, float]]) -> Tuple[float, float]:
    """Least squares of score = a + b * log2(sentences) over ``points`` (sentences, score): (a, b)."""
    if len({n for n, _ in points}) < 2:
        raise ValueError("a fit needs at least two training sizes")
    xs = [math.log2(n) for n, _ in points]
    ys = [s for _, s in points]
    mx, my = sum(xs) / len(xs), sum(ys) / len(ys)
    b = sum((x - mx) * (y - my) for x, y in zip(xs, ys)) / sum((x - mx) ** 2 for x in xs)
    return my - b * mx, b


def sentences_needed(a: float, b: float, target: float) -> Optional[float]:
    """The training sentences at which the fit a + b * log2(n) reaches ``target`` (None where it never rises, or
    not within 2 ** 64 sentences)."""
    if b <= 0 or (target - a) / b > 64:
        return None
    return 2 ** ((target - a) / b)


def _sentences(train_path: str) -> int:
    """Documents in the DocBin written beside a training file (``X.padellm.jsonl`` -> ``X.spacy``)."""
    from spacy.tokens import DocBin

    path = Path(train_path)
    if not path.name.endswith(".padellm.jsonl"):
        raise SystemExit(f"{path}: not a training file written by convert (NAME.padellm.jsonl beside NAME.spacy)")
    return len(DocBin().from_disk(path.with_name(path.name[: -len(".padellm.jsonl")] + ".spacy")))


def _evaluate(model: Path, test: str, output: Path, args) -> Dict:
    """``evaluate`` of ``model`` on ``test`` into ``output`` (kept, and not run again, while newer than the model)."""
    newest = max(f.stat().st_mtime for f in model.rglob("*") if f.is_file())
    if not output.exists() or output.stat().st_mtime < newest:
        _run([sys.executable, "-m", "spacy_padellm", "evaluate", str(model), test, "--output", str(output),
              "--no-progress", *_common(args)], output.with_suffix(".log"))
    return json.loads(output.read_text())


def score(args) -> Dict:
    """Each candidate of ``args.out``: its training sentences, dev score (from training) and test scores; the fit."""
    cands = json.loads((args.out / "candidates.json").read_text())
    rows = []
    for cand in cands["candidates"]:
        best = args.out / cand["name"] / "best"
        if "steps" not in cand or not best.exists():
            print(f"{cand['name']}: {cand.get('error') or 'no finished training'}; left out")
            continue
        scored = args.out / cand["name"] / "test.json"
        test = _evaluate(best, args.test, scored, args)
        prefix = score_prefix_of(scored, args.spans_key)
        rows.append({"name": cand["name"], "sentences": _sentences(cand["settings"]["paths.train"]),
                     "steps": cand.get("steps"), "best_step": cand.get("best_step"), "dev_span_f": cand.get("dev_f"),
                     "test_span_p": test.get(f"{prefix}_p"), "test_span_r": test.get(f"{prefix}_r"),
                     "test_span_f": test.get(f"{prefix}_f"), "test_string_f": test.get("string_f")})
    rows.sort(key=lambda r: r["sentences"])
    report = {"candidates_command": cands.get("command"), "max_minutes": cands.get("max_minutes"),
              "test": args.test, "command": args.command, "rows": rows}
    points = [(r["sentences"], r["test_string_f"]) for r in rows if r["test_string_f"] is not None]
    if len({n for n, _ in points}) >= 2:
        a, b = fit_log2(points)
        report["fit"] = {"form": "test string F1 = a + b * log2(training sentences)", "a": round(a, 5),
                         "b_per_doubling": round(b, 5)}
        if args.target is not None:
            need = sentences_needed(a, b, args.target)
            report["fit"].update(target=args.target, sentences_for_target=None if need is None else round(need))
        if args.at is not None:
            report["fit"].update(at_sentences=args.at, string_f_at=round(a + b * math.log2(args.at), 4))
    return report


def _int(value) -> str:
    return "–" if value is None else f"{value:,}"


def render_markdown(report: Dict) -> str:
    lines = ["| training sentences | candidate | steps (best) | dev span F1 | test span P | test span R | test span F1 "
             "| test string F1 |", "|---|---|---|---|---|---|---|---|"]
    for r in report["rows"]:
        lines.append(f"| {r['sentences']:,} | {r['name']} | {_int(r['steps'])} ({_int(r['best_step'])}) "
                     f"| {_pct(r['dev_span_f'])} "
                     f"| {_pct(r['test_span_p'])} | {_pct(r['test_span_r'])} | {_pct(r['test_span_f'])} "
                     f"| {_pct(r['test_string_f'])} |")
    fit = report.get("fit")
    if fit:
        lines += ["", f"Fit: test string F1 = {100 * fit['a']:.2f} + {100 * fit['b_per_doubling']:.2f} "
                  "x log2(sentences) (points per doubling of the data)."]
        if fit.get("sentences_for_target"):
            lines.append(f"At that rate, {_pct(fit['target'])} takes about {fit['sentences_for_target']:,} sentences.")
        if "string_f_at" in fit:
            lines.append(f"At {fit['at_sentences']:,} sentences the fit gives {_pct(fit['string_f_at'])}.")
    return "\n".join(lines)


def render_plot(report: Dict, path: Path) -> None:
    """Test string F1 (and dev span F1) against training sentences on a log axis, the fit and the target."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = report["rows"]
    fig, ax = plt.subplots(figsize=(7, 4.5))
    ns = [r["sentences"] for r in rows] or [1]
    for key, style, label in (("test_string_f", "o-", "test string F1"), ("dev_span_f", "s--", "dev span F1 (choice)")):
        points = [(r["sentences"], 100 * r[key]) for r in rows if r[key] is not None]
        if points:
            ax.plot(*zip(*points), style, alpha=1.0 if key.startswith("test") else 0.6, label=label)
    fit = report.get("fit")
    if fit:
        far = max([*ns, fit.get("at_sentences") or 0, min(fit.get("sentences_for_target") or 0, 1e6)])
        xs = [min(ns) * (far / min(ns)) ** (i / 50) for i in range(51)]
        ax.plot(xs, [100 * (fit["a"] + fit["b_per_doubling"] * math.log2(x)) for x in xs], ":", color="gray",
                label=f"fit: {100 * fit['b_per_doubling']:.2f} points a doubling")
        if fit.get("target") is not None:
            ax.axhline(100 * fit["target"], color="red", alpha=0.5, label=f"target {100 * fit['target']:.1f}")
    ax.set_xscale("log")
    ax.set_xlabel("training sentences")
    ax.set_ylabel("F1")
    ax.set_title("Score against training data")
    ax.grid(alpha=0.3)
    if ax.get_legend_handles_labels()[0]:
        ax.legend(fontsize=8)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = p.add_subparsers(dest="step", required=True)
    s = sub.add_parser("split", help="every k-th line of a JSONL file as a subset")
    s.add_argument("source", type=Path)
    s.add_argument("out_dir", type=Path)
    s.add_argument("--every", default="8,4,2", help="comma-separated k values")
    c = sub.add_parser("score", help="score each candidate on test and fit the curve")
    c.add_argument("out", type=Path, help="the folder train_candidates.py --out wrote")
    c.add_argument("--test", required=True)
    c.add_argument("--lang", default=None)
    c.add_argument("--spans-key", default=None, help="nested data: the span group scored (default: the model's)")
    c.add_argument("--gpu-id", type=int, default=None)
    c.add_argument("--target", type=float, default=None, help="a test string F1 to reach (0-1)")
    c.add_argument("--at", type=int, default=None, help="also the fit's score at this many training sentences")
    c.add_argument("--output", type=Path, required=True, help="JSON path (.md and .png written next to it)")
    args = p.parse_args(argv)
    args.command = " ".join(["benchmarks/learning_curve.py", *(sys.argv[1:] if argv is None else argv)])
    if args.step == "split":
        split(args.source, args.out_dir, [int(k) for k in args.every.split(",") if k.strip()])
        return 0
    return publish(score(args), render_markdown, str(args.output), render_plot)


if __name__ == "__main__":
    raise SystemExit(main())
