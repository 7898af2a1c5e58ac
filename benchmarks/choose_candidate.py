"""Choose the best candidate of ``train_candidates.py`` on dev, tune its decoding on dev, and score it once on test.

    python benchmarks/choose_candidate.py training/resume-candidates --dev corpus/resume/resume_dev.spacy \\
        --test corpus/resume/resume_test.spacy --lang zh --tune-docs 300 --gpu-id 0 \\
        --output benchmarks/results/resume_candidates.json

OUT (the folder ``train_candidates.py --out`` wrote) holds ``candidates.json``; the candidate with the best dev span
F1 there is the chosen one. ``tune`` then picks the lever variant and the count bias per label on the same dev docs
(``--variants``, ``--tune-docs``), and ``evaluate`` scores the chosen model on the whole test set twice: as trained
(plain decoding) and with the tuned settings; with ``--latency-docs`` also at batch size 1. Each stage writes its
JSON under ``OUT/chosen/`` and is skipped when that file is already there, so a report can be written again from
what a GPU machine sent back. The report (``--output``: JSON, a PNG of the candidates' dev curves beside it, and a
markdown table on stdout) holds every candidate's dev scores, the tuning and the test scores of the chosen one only.
"""

from __future__ import annotations

import argparse
import json
import subprocess
import sys
from pathlib import Path
from typing import Dict, List, Optional

sys.path.insert(0, str(Path(__file__).resolve().parent))
from train_candidates import render_plot  # noqa: E402

__all__ = ["chosen_row", "report", "render_markdown", "main"]


def chosen_row(rows: List[Dict]) -> Dict:
    """The candidate with the best dev span F1 (failed and pending candidates have none)."""
    scored = [r for r in rows if r.get("dev_f") is not None]
    if not scored:
        raise SystemExit("no candidate has a dev score: every training failed or is still running")
    return max(scored, key=lambda r: r["dev_f"])


def _run(cmd: List[str], log: Path) -> None:
    print("$ " + " ".join(cmd), flush=True)
    with open(log, "w") as out:
        code = subprocess.run(cmd, stdout=out, stderr=subprocess.STDOUT).returncode
    if code:
        raise SystemExit(f"failed ({code}); see {log}")


def _common(args, gpu: bool = True) -> List[str]:
    extra = ["--gpu-id", str(args.gpu_id)] if gpu and args.gpu_id is not None else []
    if args.lang:
        extra += ["--lang", args.lang]
    if args.spans_key:
        extra += ["--spans-key", args.spans_key]
    return extra


def _stages(args, model: Path, folder: Path) -> None:
    """tune on dev, then test (plain and tuned) and batch-1 timing; each stage skipped when its JSON exists."""
    py = [sys.executable, "-m", "spacy_padellm"]
    tuned = folder / "tuned"
    if not (folder / "tune.json").exists():
        cmd = [*py, "tune", str(model), str(args.dev), "--output", str(tuned), "--json", str(folder / "tune.json"),
               "--variants", args.variants, "--no-progress", *_common(args)]
        if args.tune_docs:
            cmd += ["--max-docs", str(args.tune_docs)]
        _run(cmd, folder / "tune.log")
    for name, pipeline in (("test-plain", model), ("test-tuned", tuned)):
        if not (folder / f"{name}.json").exists():
            _run([*py, "evaluate", str(pipeline), str(args.test), "--output", str(folder / f"{name}.json"),
                  "--no-progress", *_common(args)], folder / f"{name}.log")
    if args.latency_docs and not (folder / "batch1.json").exists():
        _run([*py, "evaluate", str(model), str(args.test), "--batch-size", "1", "--max-docs", str(args.latency_docs),
              "--output", str(folder / "batch1.json"), "--no-progress", *_common(args)], folder / "batch1.log")


def score_prefix_of(path: Path, spans_key: Optional[str]) -> str:
    """The prefix of the span scores in an ``evaluate`` JSON: ``spans_KEY`` for ``--spans-key``, else the span group
    the JSON holds (a model that records its key is scored nested without being told), else ``ents``."""
    from spacy_padellm.pipeline.scoring import score_prefix, scored_prefix

    if spans_key:
        return score_prefix(spans_key)
    return scored_prefix(json.loads(path.read_text()) if path.exists() else {})


def _scores(path: Path, prefix: str) -> Optional[Dict[str, float]]:
    if not path.exists():
        return None
    d = json.loads(path.read_text())
    keys = [f"{prefix}_p", f"{prefix}_r", f"{prefix}_f", "string_p", "string_r", "string_f", "docs", "docs_per_second"]
    return {k: d[k] for k in keys if k in d}


def report(cands: Dict, best: Dict, folder: Path, prefix: str) -> Dict:
    """The report: the candidates (``candidates.json``, dev), the chosen one ``best``, its tuning (dev) and its
    test scores (the stages' JSON in ``folder``)."""
    rows = cands["candidates"]
    tune = json.loads((folder / "tune.json").read_text()) if (folder / "tune.json").exists() else {}
    batch1 = _scores(folder / "batch1.json", prefix)
    return {
        "config": cands.get("config"), "max_minutes": cands.get("max_minutes"), "train_command": cands.get("command"),
        "candidates": [{k: v for k, v in r.items() if k != "history"} for r in rows],
        "chosen": best["name"], "chosen_on": f"best dev span F1 during training ({prefix}_f)",
        "tune": {k: tune.get(k) for k in ("docs", "grid", "best", "chosen_settings")} if tune else None,
        "tune_variants": sorted(tune.get("variants", {})) if tune else None,
        "test_plain": _scores(folder / "test-plain.json", prefix),
        "test_tuned": _scores(folder / "test-tuned.json", prefix),
        "batch1_ms": round(1000 / batch1["docs_per_second"], 1) if batch1 else None,
        "batch1_docs": batch1["docs"] if batch1 else None,
        "histories": {r["name"]: r.get("history", []) for r in rows},
    }


def _pct(value) -> str:
    return "–" if value is None else f"{100 * value:.2f}"


def render_markdown(rep: Dict, prefix: str) -> str:
    """Candidates on dev, then the chosen one on test."""
    lines = ["| candidate | steps | best step | dev span F1 |", "|---|---|---|---|"]
    for r in sorted(rep["candidates"], key=lambda r: -(r.get("dev_f") or -1)):
        steps = r.get("steps", "pending" if r.get("pending") else "failed")
        lines.append(f"| {r['name']}{' (chosen)' if r['name'] == rep['chosen'] else ''} | {steps} "
                     f"| {r.get('best_step', '–')} | {_pct(r.get('dev_f'))} |")
    lines += ["", "| chosen, test | span P | span R | span F1 | string F1 |", "|---|---|---|---|---|"]
    for name in ("test_plain", "test_tuned"):
        s = rep.get(name)
        if s:
            lines.append(f"| {name[5:]} | {_pct(s.get(prefix + '_p'))} | {_pct(s.get(prefix + '_r'))} "
                         f"| {_pct(s.get(prefix + '_f'))} | {_pct(s.get('string_f'))} |")
    return "\n".join(lines)


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("out", type=Path, help="the folder train_candidates.py --out wrote")
    p.add_argument("--dev", required=True, help="dev DocBin (the one the candidates were chosen on)")
    p.add_argument("--test", required=True, help="test DocBin, scored once for the chosen candidate")
    p.add_argument("--lang", default=None)
    p.add_argument("--spans-key", default=None, help="nested data: the span group scored (e.g. sc)")
    p.add_argument("--tune-docs", type=int, default=None, help="tune on the first N dev docs (default: all)")
    p.add_argument("--variants", default="plain,constrain_mentions,constrain_mentions+dedupe_mentions")
    p.add_argument("--gpu-id", type=int, default=None)
    p.add_argument("--latency-docs", type=int, default=0, help="batch-1 timing on this many test docs (0: none)")
    p.add_argument("--output", type=Path, required=True, help="report JSON; the PNG is written beside it")
    args = p.parse_args(argv)

    cands = json.loads((args.out / "candidates.json").read_text())
    rows = cands["candidates"]
    best = chosen_row(rows)
    folder = args.out / "chosen"
    folder.mkdir(parents=True, exist_ok=True)
    _stages(args, args.out / best["name"] / "best", folder)
    prefix = score_prefix_of(folder / "test-plain.json", args.spans_key)
    rep = report(cands, best, folder, prefix)
    given = argv if argv is not None else sys.argv[1:]
    rep["command"] = " ".join(["python", f"benchmarks/{Path(__file__).name}", *given])
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(rep, indent=1) + "\n")
    render_plot(rows, args.output.with_suffix(".png"))
    print(render_markdown(rep, prefix))
    print(f"report: {args.output}, plot: {args.output.with_suffix('.png')}")
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
