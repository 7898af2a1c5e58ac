"""``python benchmarks/crossner.py --base BASE --data RAW --out OUT``: padellm on the five CrossNER domains.

RAW holds ``{domain}/{train,dev,test}.txt`` as published at github.com/zliucr/CrossNER (ner_data):
``token<TAB>BIO-tag`` per line, a blank line between sentences. Each stage is one subprocess per domain (and
candidate), all at once (one GPU is shared: a 135M model with LoRA takes a few GB):

1. ``python -m spacy_padellm convert`` of the three splits into OUT/corpus/{domain}/;
2. ``python -m spacy_padellm train configs/crossner.cfg`` (labels from the data, the best dev span F1
   kept), stopped after ``--max-minutes`` of training, into OUT/training/{candidate}/{domain}/, once per
   ``--candidate`` (training overrides of its own; one candidate, ``default``, without any); the model folders
   name the base by its path (``--paths.base_ref null``);
3. the candidate with the best mean dev span F1 over the domains is chosen (the test split is not looked at);
4. with ``--tune``: ``python -m spacy_padellm tune`` of the chosen models on each domain's dev split (a count bias
   per label and the decoding levers, chosen on dev) into OUT/tuned/{domain}/;
5. ``python -m spacy_padellm evaluate`` of the chosen OUT/training/{candidate}/{domain}/best (and of
   OUT/tuned/{domain}) on the test split (span P/R/F1 as ``spacy evaluate`` computes them) into OUT/metrics/.

Writes OUT/crossner.json (per-domain rows and the micro- and macro-average, the shape of
``benchmarks/crossner_scores.py``: the tuned pipelines' rows with ``--tune``, the models' plain decoding under
``untuned``; every candidate's dev scores under ``candidates``), OUT/crossner.md and OUT/crossner.png, and prints
the markdown table, side by side with ``--peer``'s report (spaCy's ``ner``, docs/results/crossner-spacy-ner.json)
when given. Each subprocess's output is in OUT/logs/.
"""

from __future__ import annotations

import argparse
import json
import sys
from functools import partial
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))  # the shared CrossNER scores

from crossner_scores import DOMAINS, averages, count_gold, domain_row, render_table, write_report  # noqa: E402
from stages import (Commands, add_arguments, concurrency, device_note, override, process_env,  # noqa: E402
                    run_stage, shown, visible_gpu_id)


def convert_commands(data: Path, corpus: Path, domains: Sequence[str]) -> Commands:
    return {d: ["-m", "spacy_padellm", "convert", *(str(data / d / f"{s}.txt") for s in ("train", "dev", "test")),
                str(corpus / d), "--lang", "en", "--no-progress"] for d in domains}


def train_commands(config: Path, base: str, corpus: Path, training: Path, device: str, max_minutes: float,
                   overrides: Sequence[str], domains: Sequence[str]) -> Commands:
    extra = [part for item in overrides for part in override(item)]
    return {d: ["-m", "spacy_padellm", "train", str(config), "--no-progress", "--paths.base_model", base,
                "--paths.train", str(corpus / d / "train.padellm.jsonl"), "--paths.dev", str(corpus / d / "dev.spacy"),
                "--paths.output", str(training / d), "--paths.base_ref", "null", "--training.device", device,
                "--training.max_minutes", str(max_minutes), *extra] for d in domains}


def evaluate_commands(models: Mapping[str, Path], corpus: Path, metrics: Path, device: str,
                      suffix: str = "test") -> Commands:
    """Score each domain's model folder or pipeline on its test split into metrics/{domain}.{suffix}.json."""
    return {d: ["-m", "spacy_padellm", "evaluate", str(model), str(corpus / d / "test.spacy"),
                "--output", str(metrics / f"{d}.{suffix}.json"), "--device", device, "--no-progress"]
            for d, model in models.items()}


def tune_commands(models: Mapping[str, Path], corpus: Path, tuned: Path, gpu_id: int) -> Commands:
    """Choose each domain's count bias per label and decoding levers on its dev split (never the test split)."""
    return {d: ["-m", "spacy_padellm", "tune", str(model), str(corpus / d / "dev.spacy"), "--output", str(tuned / d),
                "--gpu-id", str(visible_gpu_id(gpu_id)), "--no-progress"] for d, model in models.items()}


def parse_candidate(text: str) -> Tuple[str, List[str]]:
    """``NAME=SECTION.KEY=VALUE[,SECTION.KEY=VALUE...]`` (or a bare ``NAME``, no override) as (name, overrides)."""
    name, _, rest = text.partition("=")
    name = name.strip()
    if not name or not name.replace("-", "").replace("_", "").isalnum():
        raise ValueError(f"--candidate takes NAME=section.key=value[,section.key=value], got {text!r}")
    overrides = [item.strip() for item in rest.split(",") if item.strip()]
    for item in overrides:
        override(item)
    return name, overrides


def domain_result(domain: str, corpus: Path, training: Path, metrics: Path, suffix: str = "test") -> Dict[str, Any]:
    """The test row of one domain, with what its training reported (best dev F1 and step, steps run)."""
    scores = json.loads((metrics / f"{domain}.{suffix}.json").read_text())
    row = domain_row(scores, count_gold(corpus / domain / "test.spacy"))
    summary = json.loads((training / domain / "summary.json").read_text())
    row.update({"dev_f": summary["best"]["score"], "best_step": summary["best"]["step"], "steps": summary["steps"],
                "test_docs_per_second": scores.get("docs_per_second")})
    return row


def tuned_result(domain: str, corpus: Path, training: Path, metrics: Path, tuned: Path) -> Dict[str, Any]:
    """The tuned pipeline's test row, with what tuning chose on dev and the dev F1 it measured."""
    row = domain_result(domain, corpus, training, metrics, "tuned.test")
    best = json.loads((tuned / domain / "tune.json").read_text())["best"]
    row.update({"tuned_dev_f": best["f"], "variant": best["variant"], "count_bias": best["count_bias"]})
    return row


def dev_scores(training: Path, domains: Sequence[str], failed: Mapping[str, str]) -> Dict[str, float]:
    """Each trained domain's best dev span F1 (from its summary.json)."""
    return {d: json.loads((training / d / "summary.json").read_text())["best"]["score"]
            for d in domains if d not in failed}


def choose(candidates: Mapping[str, Mapping[str, Any]]) -> str:
    """The candidate trained on the most domains, then with the best mean dev F1 (ties: the first given)."""
    return max(candidates, key=lambda n: (len(candidates[n]["dev_f"]), candidates[n]["mean_dev_f"] or 0.0))


def train_candidates(args: argparse.Namespace, candidates: Sequence[Tuple[str, List[str]]], corpus: Path,
                     out: Path, device: str, domains: Sequence[str], env: Mapping[str, str],
                     failed: Mapping[str, str]) -> Tuple[Dict[str, Any], Dict[str, Dict[str, str]], float, str]:
    """Train every candidate on every converted domain at once; their dev scores, failures, seconds and the
    first train command."""
    commands: Commands = {}
    for name, overrides in candidates:
        trains = train_commands(args.config.resolve(), args.base, corpus, out / "training" / name, device,
                                args.max_minutes, [*args.set, *overrides], domains)
        commands.update({f"{name}.{d}": c for d, c in trains.items() if d not in failed})
    train_failed: Dict[str, str] = {}
    seconds = run_stage("train", commands, out / "logs", env, train_failed, args.at_once)
    report, failures = {}, {}
    for name, overrides in candidates:
        failures[name] = {d: train_failed[f"{name}.{d}"] for d in domains if f"{name}.{d}" in train_failed}
        dev = dev_scores(out / "training" / name, domains, {**failed, **failures[name]})
        mean = round(sum(dev.values()) / len(dev), 4) if dev else None
        report[name] = {"overrides": [*args.set, *overrides], "dev_f": dev, "mean_dev_f": mean}
    first = next(iter(commands.values()), [])
    return report, failures, seconds, shown(first)


def run(args: argparse.Namespace, command: str) -> Dict[str, Any]:
    out: Path = args.out.resolve()
    corpus, metrics, logs, tuned = out / "corpus", out / "metrics", out / "logs", out / "tuned"
    domains = [d for d in args.domains.split(",") if d]
    candidates = [parse_candidate(c) for c in args.candidate] or [("default", [])]
    device = "cpu" if args.gpu_id < 0 else "cuda"
    trainings = len(domains) * len(candidates)
    env = process_env(args.gpu_id, concurrency(args.at_once, trainings))
    stage = partial(run_stage, at_once=args.at_once)
    failed: Dict[str, str] = {}
    converts = convert_commands(args.data.resolve(), corpus, domains)
    seconds = {"convert": stage("convert", converts, logs, env, failed)}
    report, failures, seconds["train"], train_command = train_candidates(args, candidates, corpus, out, device,
                                                                         domains, env, failed)
    chosen = choose(report)
    failed.update({d: why for d, why in failures[chosen].items() if d not in failed})
    training = out / "training" / chosen
    models = {d: training / d / "best" for d in domains if d not in failed}
    seconds["evaluate"] = stage("evaluate", evaluate_commands(models, corpus, metrics, device), logs, env, failed)
    rows = {d: domain_result(d, corpus, training, metrics) for d in domains if d not in failed}
    result = {"system": "padellm", "command": command, "train_command": train_command,
              "config": str(args.config), "base": args.base, "max_minutes": args.max_minutes,
              "device": device_note(args.gpu_id, args.at_once, trainings),
              "candidates": report, "chosen": chosen}
    if args.tune:
        seconds["tune"] = stage("tune", tune_commands(models, corpus, tuned, args.gpu_id), logs, env, failed)
        pipelines = {d: tuned / d for d in domains if d not in failed}
        tuned_evaluations = evaluate_commands(pipelines, corpus, metrics, device, "tuned.test")
        seconds["evaluate_tuned"] = stage("evaluate_tuned", tuned_evaluations, logs, env, failed)
        result["untuned"] = {"domains": rows, "average": averages(rows)}
        rows = {d: tuned_result(d, corpus, training, metrics, tuned) for d in domains if d not in failed}
    result.update({"seconds": {k: round(v, 1) for k, v in seconds.items()}, "domains": rows,
                   "average": averages(rows), "failed": failed})
    return result


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python benchmarks/crossner.py", description=__doc__.splitlines()[0])
    add_arguments(p, "the CrossNER folder of {domain}/{train,dev,test}.txt", "domain")
    p.add_argument("--config", type=Path, default=ROOT / "configs" / "crossner.cfg")
    p.add_argument("--domains", default=",".join(DOMAINS))
    p.add_argument("--candidate", action="append", default=[], metavar="NAME=SECTION.KEY=VALUE[,...]",
                   help="a training candidate with overrides of its own (on top of --set); repeatable: all train at "
                        "once and the best mean dev span F1 is scored on test (default: one, without overrides)")
    p.add_argument("--tune", action="store_true",
                   help="tune the chosen models' count bias per label and decoding levers on each dev split "
                        "(python -m spacy_padellm tune) and score the tuned pipelines on test")
    p.add_argument("--peer", type=Path, default=None,
                   help="a report to print side by side, e.g. docs/results/crossner-spacy-ner.json")
    return p


def main(argv: Optional[List[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    try:
        for item in args.set:
            override(item)
        for item in args.candidate:
            parse_candidate(item)
    except ValueError as err:
        print(f"error: {err}", file=sys.stderr)
        return 2
    report = run(args, shown(["benchmarks/crossner.py", *argv]))
    write_report(report, args.out / "crossner.json")
    columns = {"padellm": report}
    if args.peer:
        peer = json.loads(args.peer.read_text())
        columns = {peer["system"]: peer, **columns}
    print(render_table(columns))
    print(f"wrote {args.out / 'crossner.json'} (.md, .png)", file=sys.stderr)
    return 1 if report["failed"] else 0


if __name__ == "__main__":
    sys.exit(main())
