"""``python benchmarks/nested_chinese.py --base BASE --data DATA --out OUT``: GENIA (nested) and the Chinese sets
trained side by side on one GPU, chosen on dev, scored once on test.

DATA holds the PaDeLLM-NER authors' processed sets as ``{set}/{set}_{split}.jsonl`` (``project.yml`` names the
public source). Each stage is one subprocess per set, all at once (a model of a few hundred million parameters
leaves most of a GPU idle):

1. GENIA's published train split is not among these files: its dev split is cut into the first 90% (training)
   and the last 10% (model selection), as the ``genia-split`` project command does; then
   ``python -m spacy_padellm convert`` of each set's three splits into OUT/corpus/{set}/ (GENIA with every span
   in ``doc.spans["sc"]``, the Chinese sets segmented into characters);
2. ``python -m spacy_padellm train`` with the set's config (configs/genia.cfg, configs/zh.cfg) and the ``--set``
   overrides, stopped after ``--max-minutes`` (the model folders name the base by its path unless a ``--set
   paths.base_ref=...`` names it otherwise), into OUT/training/{set}/ (the best dev F1 kept: ``spans_sc_f`` for
   GENIA, ``ents_f`` for the others);
3. with ``--tune``: ``python -m spacy_padellm tune`` on the dev split (a count bias per label and the decoding
   levers) into OUT/tuned/{set}/; the tuned pipeline is reported when its dev F1 beats the plain model's;
4. ``python -m spacy_padellm evaluate`` of each model (and tuned pipeline) on the test split into OUT/metrics/;
5. batch-1 speed: ``evaluate --batch-size 1`` on the first ``--latency-docs`` test sentences, one set at a time
   with nothing else running (milliseconds per sentence, the model's load excluded).

Writes OUT/nested_chinese.json (every row, score, setting and command), OUT/nested_chinese.md (the table, next to
the paper's 7B figures) and OUT/nested_chinese.png (each set's dev F1 against training time), and prints the
table. Each subprocess's output is in OUT/logs/.
"""

from __future__ import annotations

import argparse
import json
import sys
from dataclasses import dataclass
from functools import partial
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence

sys.path.insert(0, str(Path(__file__).resolve().parent))

from stages import (ROOT, Commands, add_arguments, concurrency, device_note, override, process_env,  # noqa: E402
                    run_stage, shown, visible_gpu_id)

from spacy_padellm.pipeline.scoring import score_prefix  # noqa: E402

__all__ = ["SETS", "PAPER_F1", "split_genia", "main"]


@dataclass(frozen=True)
class DataSet:
    """Where a set's files are and how it is read: the raw split names, its config, language and span key."""

    name: str
    config: str
    lang: str
    splits: Sequence[str]  # raw file stems of train, dev, test (in DATA/{name}/, or OUT/corpus/{name}/ for GENIA)
    spans_key: Optional[str] = None

    @property
    def metric(self) -> str:
        return score_prefix(self.spans_key)


SETS: Dict[str, DataSet] = {
    "genia": DataSet("genia", "configs/genia.cfg", "en", ("genia_dev90", "genia_dev10", "genia_test"), "sc"),
    **{name: DataSet(name, "configs/zh.cfg", "zh", tuple(f"{name}_{s}" for s in ("train", "dev", "test")))
       for name in ("weibo", "resume", "youku", "ecommerce")},
}
# The paper's string-level micro F1 (LLaMA-2-7B for GENIA, Baichuan2-7B for the Chinese sets).
PAPER_F1 = {"genia": 77.66, "weibo": 67.36, "resume": 94.98, "youku": 87.91, "ecommerce": 81.85}


def split_genia(source: Path, train: Path, dev: Path) -> None:
    """The first 90% of GENIA's dev lines for training, the last 10% for model selection."""
    lines = [line for line in source.read_text(encoding="utf-8").split("\n") if line.strip()]
    n = len(lines) - len(lines) // 10
    train.parent.mkdir(parents=True, exist_ok=True)
    train.write_text("\n".join(lines[:n]) + "\n", encoding="utf-8")
    dev.write_text("\n".join(lines[n:]) + "\n", encoding="utf-8")


def _raw_files(spec: DataSet, data: Path, corpus: Path) -> List[Path]:
    if spec.name == "genia":
        return [corpus / "genia" / f"{s}.jsonl" for s in spec.splits[:2]] + [data / "genia" / "genia_test.jsonl"]
    return [data / spec.name / f"{s}.jsonl" for s in spec.splits]


def _scoring(spec: DataSet) -> List[str]:
    return ["--lang", spec.lang, *(["--spans-key", spec.spans_key] if spec.spans_key else [])]


def convert_commands(sets: Sequence[DataSet], data: Path, corpus: Path) -> Commands:
    return {s.name: ["-m", "spacy_padellm", "convert", *map(str, _raw_files(s, data, corpus)), str(corpus / s.name),
                     *_scoring(s), "--no-progress"] for s in sets}


def train_commands(sets: Sequence[DataSet], base: str, corpus: Path, training: Path, device: str,
                   max_minutes: float, overrides: Sequence[str]) -> Commands:
    extra = [part for item in overrides for part in override(item)]
    return {s.name: ["-m", "spacy_padellm", "train", str(ROOT / s.config), "--no-progress", "--paths.base_model", base,
                     "--paths.train", str(corpus / s.name / f"{s.splits[0]}.padellm.jsonl"),
                     "--paths.dev", str(corpus / s.name / f"{s.splits[1]}.spacy"),
                     "--paths.output", str(training / s.name), "--training.device", device,
                     "--training.max_minutes", str(max_minutes), "--paths.base_ref", "null", *extra] for s in sets}


def tune_commands(sets: Sequence[DataSet], training: Path, corpus: Path, tuned: Path, gpu_id: int,
                  max_docs: Optional[int]) -> Commands:
    limit = ["--max-docs", str(max_docs)] if max_docs else []
    return {s.name: ["-m", "spacy_padellm", "tune", str(training / s.name / "best"),
                     str(corpus / s.name / f"{s.splits[1]}.spacy"), "--output", str(tuned / s.name),
                     "--gpu-id", str(visible_gpu_id(gpu_id)), *limit, *_scoring(s), "--no-progress"] for s in sets}


def evaluate_commands(models: Mapping[str, Path], corpus: Path, metrics: Path, device: str, suffix: str,
                      extra: Sequence[str] = ()) -> Commands:
    return {name: ["-m", "spacy_padellm", "evaluate", str(model), str(corpus / name / f"{SETS[name].splits[2]}.spacy"),
                   "--output", str(metrics / f"{name}.{suffix}.json"), "--device", device, *_scoring(SETS[name]),
                   *extra, "--no-progress"] for name, model in models.items()}


def _scores(path: Path, spec: DataSet) -> Dict[str, Any]:
    scores = json.loads(path.read_text())
    row = {k: round(100 * float(scores.get(f"{spec.metric}_{k}") or 0.0), 2) for k in ("p", "r", "f")}
    row.update({f"string_{k}": round(100 * float(scores.get(f"string_{k}") or 0.0), 2) for k in ("p", "r", "f")})
    row["docs"], row["docs_per_second"] = scores.get("docs"), scores.get("docs_per_second")
    return row


def set_row(spec: DataSet, out: Path, tuned: bool) -> Dict[str, Any]:
    """A set's training summary, its plain (and tuned) test scores, and which of the two dev chose."""
    summary = json.loads((out / "training" / spec.name / "summary.json").read_text())
    row: Dict[str, Any] = {"train_seconds": summary["train_seconds"], "steps": summary["steps"],
                           "examples": summary["examples"], "dev_f": round(100 * summary["best"]["score"], 2),
                           "best_step": summary["best"]["step"], "paper_f": PAPER_F1[spec.name],
                           "plain": _scores(out / "metrics" / f"{spec.name}.test.json", spec),
                           "adapter_mib": _adapter_mib(out / "training" / spec.name / "best")}
    row["chosen"] = "plain"
    tune_file = out / "tuned" / spec.name / "tune.json"
    if tuned and tune_file.exists():
        tuning = json.loads(tune_file.read_text())
        best = tuning["best"]
        row["tuned_dev_f"] = round(100 * best["f"], 2)
        row["tuning"] = {"variant": best["variant"], "count_bias": best["count_bias"]}
        row["tuned"] = _scores(out / "metrics" / f"{spec.name}.tuned.test.json", spec)
        # plain decoding measured by tune on the same dev docs (training's dev_f may cover fewer)
        plain = tuning["variants"].get("plain", {}).get("grid", {}).get("0")
        row["plain_tune_dev_f"] = round(100 * plain["f"], 2) if plain else None
        row["chosen"] = "tuned" if row["tuned_dev_f"] > (row["plain_tune_dev_f"] or row["dev_f"]) else "plain"
    row["test"] = row[row["chosen"]]
    speed = out / "metrics" / f"{spec.name}.batch1.json"
    if speed.exists():
        dps = json.loads(speed.read_text()).get("docs_per_second")
        row["batch1_ms"] = round(1000 / dps, 1) if dps else None
    return row


def _adapter_mib(folder: Path) -> Optional[float]:
    files = list((folder / "adapter").glob("*.safetensors"))
    return round(sum(f.stat().st_size for f in files) / 2**20, 2) if files else None


def render_markdown(rows: Mapping[str, Mapping[str, Any]]) -> str:
    head = ("| set | steps | train s | dev F1 | decoding (chosen on dev) | span P | span R | **span F1** | "
            "**string F1** | paper F1 (7B) | halfway | test docs/s | batch-1 ms |")
    lines = [head, "|" + "---|" * 13]
    for name, r in rows.items():
        t = r["test"]
        halfway = "" if r.get("previous_f") is None else f"{(r['previous_f'] + r['paper_f']) / 2:.1f}"
        lines.append(f"| {name} | {r['steps']} | {r['train_seconds']:.0f} | {r['dev_f']:.2f} | {r['chosen']} | "
                     f"{t['p']:.2f} | {t['r']:.2f} | **{t['f']:.2f}** | **{t['string_f']:.2f}** | {r['paper_f']:.2f} | "
                     f"{halfway} | {t.get('docs_per_second') or ''} | {r.get('batch1_ms') or ''} |")
    return "\n".join(lines) + "\n"


def render_plot(out: Path, names: Sequence[str], path: Path) -> None:
    """Each set's dev F1 (the selection metric) against training time."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, ax = plt.subplots(figsize=(7, 4.5))
    for name in names:
        history = out / "training" / name / "history.json"
        points = [h for h in json.loads(history.read_text()) if "dev_f" in h] if history.exists() else []
        if points:
            ax.plot([h["elapsed_s"] / 60 for h in points], [100 * h["dev_f"] for h in points], marker="o", label=name)
    ax.set_xlabel("training minutes")
    ax.set_ylabel("dev F1 (selection metric)")
    ax.grid(alpha=0.3)
    ax.legend()
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def report_rows(args: argparse.Namespace, names: Sequence[str], failed: Mapping[str, str]) -> Dict[str, Any]:
    """The rows of the sets in ``names`` that did not fail, read from OUT's training summaries and metrics."""
    out: Path = args.out.resolve()
    rows = {name: set_row(SETS[name], out, args.tune or args.report_only) for name in names if name not in failed}
    for name, row in rows.items():
        row["previous_f"] = args.previous.get(name)
    return rows


def run(args: argparse.Namespace, command: str) -> Dict[str, Any]:
    out: Path = args.out.resolve()
    corpus, logs, metrics = out / "corpus", out / "logs", out / "metrics"
    sets = [SETS[name] for name in args.sets.split(",") if name]
    device = "cpu" if args.gpu_id < 0 else "cuda"
    env = process_env(args.gpu_id, concurrency(args.at_once, len(sets)))
    stage = partial(run_stage, at_once=args.at_once)
    failed: Dict[str, str] = {}
    if any(s.name == "genia" for s in sets):
        split_genia(args.data / "genia" / "genia_dev.jsonl", corpus / "genia" / "genia_dev90.jsonl",
                    corpus / "genia" / "genia_dev10.jsonl")
    seconds = {"convert": stage("convert", convert_commands(sets, args.data.resolve(), corpus), logs, env, failed)}
    trains = train_commands(sets, args.base, corpus, out / "training", device, args.max_minutes, args.set)
    seconds["train"] = stage("train", trains, logs, env, failed)
    live = [s for s in sets if s.name not in failed]
    models = {s.name: out / "training" / s.name / "best" for s in live}
    seconds["evaluate"] = stage("evaluate", evaluate_commands(models, corpus, metrics, device, "test"), logs, env,
                                failed)
    if args.tune:
        tunes = tune_commands(live, out / "training", corpus, out / "tuned", args.gpu_id, args.tune_docs)
        seconds["tune"] = stage("tune", tunes, logs, env, failed)
        pipelines = {s.name: out / "tuned" / s.name for s in live if s.name not in failed}
        seconds["evaluate_tuned"] = stage("evaluate_tuned", evaluate_commands(
            pipelines, corpus, metrics, device, "tuned.test"), logs, env, failed)
    latency_failed: Dict[str, str] = {}
    if args.latency_docs:
        seconds["batch1"] = batch1_stage(models, failed, corpus, metrics, logs, env, device, args.latency_docs,
                                         latency_failed)
    rows = report_rows(args, [s.name for s in sets], failed)
    return {"command": command, "base": args.base, "overrides": list(args.set), "max_minutes": args.max_minutes,
            "device": device_note(args.gpu_id, args.at_once, len(sets)),
            "commands": {"train": shown(next(iter(trains.values()))) if trains else None},
            "seconds": {k: round(v, 1) for k, v in seconds.items()}, "sets": rows, "failed": failed,
            "latency_failed": latency_failed}


def batch1_stage(models: Mapping[str, Path], failed: Mapping[str, str], corpus: Path, metrics: Path, logs: Path,
                 env: Mapping[str, str], device: str, docs: int, latency_failed: Dict[str, str]) -> float:
    """``evaluate --batch-size 1`` of each trained set's model, one at a time (nothing else running); its
    failures go to ``latency_failed`` (the scores stand without a timing); the stage's seconds."""
    seconds = 0.0
    for name, model in models.items():
        if name in failed:
            continue
        (metrics / f"{name}.batch1.json").unlink(missing_ok=True)
        seconds += run_stage(f"batch1.{name}", evaluate_commands(
            {name: model}, corpus, metrics, device, "batch1", ["--batch-size", "1", "--max-docs", str(docs)]),
            logs, env, latency_failed)
    return seconds


def _previous(text: str) -> Dict[str, float]:
    """``set=F1,set=F1`` (string F1 in percent) as a dict."""
    out = {}
    for item in filter(None, text.split(",")):
        name, _, value = item.partition("=")
        out[name.strip()] = float(value)
    return out


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python benchmarks/nested_chinese.py", description=__doc__.splitlines()[0])
    add_arguments(p, "folder of {set}/{set}_{split}.jsonl", "set")
    p.add_argument("--sets", default=",".join(SETS), help=f"comma-separated, of {', '.join(SETS)}")
    p.add_argument("--tune", action="store_true", help="also tune the decoding on dev and score the tuned pipelines")
    p.add_argument("--tune-docs", type=int, default=None, help="tune on the first N dev docs (default: all)")
    p.add_argument("--latency-docs", type=int, default=100, help="batch-1 timing on this many test docs (0: none)")
    p.add_argument("--report-only", action="store_true",
                   help="run nothing: write the report again from what OUT holds (e.g. after copying it back)")
    p.add_argument("--previous", type=_previous, default={},
                   help="earlier string F1 per set (set=F1,...) for the halfway-to-the-paper column")
    return p


def main(argv: Optional[List[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    unknown = [name for name in args.sets.split(",") if name and name not in SETS]
    if unknown:
        print(f"error: unknown set(s) {unknown}; known: {', '.join(SETS)}", file=sys.stderr)
        return 2
    try:
        for item in args.set:
            override(item)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    if args.report_only:
        report = json.loads((args.out / "nested_chinese.json").read_text()) if (
            args.out / "nested_chinese.json").exists() else {"command": None, "failed": {}}
        names = list(report.get("sets") or {}) or [n for n in args.sets.split(",") if n]
        report["sets"] = report_rows(args, names, report.get("failed", {}))
    else:
        report = run(args, shown(["benchmarks/nested_chinese.py", *argv]))
    args.out.mkdir(parents=True, exist_ok=True)
    (args.out / "nested_chinese.json").write_text(json.dumps(report, indent=1, ensure_ascii=False))
    table = render_markdown(report["sets"])
    (args.out / "nested_chinese.md").write_text(table)
    render_plot(args.out.resolve(), list(report["sets"]), args.out / "nested_chinese.png")
    print(table)
    print(f"wrote {args.out / 'nested_chinese.json'} (.md, .png)", file=sys.stderr)
    return 1 if report["failed"] else 0


if __name__ == "__main__":
    sys.exit(main())
