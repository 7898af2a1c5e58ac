"""``python benchmarks/crossner.py --base BASE --data RAW --out OUT``: padellm on the five CrossNER domains.

RAW holds ``{domain}/{train,dev,test}.txt`` as published at github.com/zliucr/CrossNER (ner_data):
``token<TAB>BIO-tag`` per line, a blank line between sentences. Three stages, each one subprocess per
domain, all domains at once (one GPU is shared: a 135M model with LoRA takes a few GB):

1. ``python -m spacy_padellm convert`` of the three splits into OUT/corpus/{domain}/;
2. ``python -m spacy_padellm train configs/crossner.cfg`` (labels from the data, the best dev span F1
   kept), stopped after ``--max-minutes`` of training, into OUT/training/{domain}/; the model folders
   name the base by its path (``--paths.base_ref null``);
3. ``python -m spacy_padellm evaluate`` of OUT/training/{domain}/best on the test split (span P/R/F1 as
   ``spacy evaluate`` computes them) into OUT/metrics/{domain}.test.json.

Writes OUT/crossner.json (per-domain rows and the micro- and macro-average, the shape of
``benchmarks/crossner_scores.py``), OUT/crossner.md and OUT/crossner.png, and prints the markdown table,
side by side with ``--peer``'s report (spaCy's ``ner``, docs/results/crossner-spacy-ner.json) when given.
Each subprocess's output is in OUT/logs/.
"""

from __future__ import annotations

import argparse
import json
import os
import shlex
import subprocess
import sys
import time
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(Path(__file__).resolve().parent))  # the shared CrossNER scores

from crossner_scores import DOMAINS, averages, count_gold, domain_row, render_table, write_report  # noqa: E402

Commands = Dict[str, List[str]]


def convert_commands(data: Path, corpus: Path, domains: Sequence[str]) -> Commands:
    return {d: ["-m", "spacy_padellm", "convert", *(str(data / d / f"{s}.txt") for s in ("train", "dev", "test")),
                str(corpus / d), "--lang", "en", "--no-progress"] for d in domains}


def train_commands(config: Path, base: str, corpus: Path, training: Path, device: str, max_minutes: float,
                   overrides: Sequence[str], domains: Sequence[str]) -> Commands:
    extra = [part for item in overrides for part in _override(item)]
    return {d: ["-m", "spacy_padellm", "train", str(config), "--no-progress", "--paths.base_model", base,
                "--paths.train", str(corpus / d / "train.padellm.jsonl"), "--paths.dev", str(corpus / d / "dev.spacy"),
                "--paths.output", str(training / d), "--paths.base_ref", "null", "--training.device", device,
                "--training.max_minutes", str(max_minutes), *extra] for d in domains}


def evaluate_commands(training: Path, corpus: Path, metrics: Path, device: str, domains: Sequence[str]) -> Commands:
    return {d: ["-m", "spacy_padellm", "evaluate", str(training / d / "best"), str(corpus / d / "test.spacy"),
                "--output", str(metrics / f"{d}.test.json"), "--device", device, "--no-progress"] for d in domains}


def _override(item: str) -> List[str]:
    """``section.key=value`` as the two arguments ``--section.key value`` of ``train``."""
    key, sep, value = item.partition("=")
    if not sep or "." not in key:
        raise ValueError(f"--set takes section.key=value, got {item!r}")
    return [f"--{key.strip()}", value.strip()]


def run_parallel(stage: str, commands: Commands, logs: Path, env: Mapping[str, str]) -> Dict[str, int]:
    """Start every command at once (``python`` being this interpreter), each logging to
    ``logs/{domain}.{stage}.log``; their return codes once all have ended."""
    logs.mkdir(parents=True, exist_ok=True)
    procs = {}
    for domain, args in commands.items():
        log = open(logs / f"{domain}.{stage}.log", "w")
        procs[domain] = (subprocess.Popen([sys.executable, *args], stdout=log, stderr=subprocess.STDOUT,
                                          env=dict(env), cwd=ROOT), log)
    codes = {}
    for domain, (proc, log) in procs.items():
        codes[domain] = proc.wait()
        log.close()
    return codes


def process_env(gpu_id: int, n_parallel: int) -> Dict[str, str]:
    """This environment for the subprocesses: on a GPU, only that one visible; on the CPU, the cores shared out
    (``OMP_NUM_THREADS``, unless set) so that parallel processes do not fight over them."""
    env = dict(os.environ)
    if gpu_id >= 0:
        env["CUDA_VISIBLE_DEVICES"] = str(gpu_id)
    else:
        env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // n_parallel)))
    return env


def shown(args: Sequence[str]) -> str:
    return shlex.join(["python", *args])


def domain_result(domain: str, corpus: Path, training: Path, metrics: Path) -> Dict[str, Any]:
    """The test row of one domain, with what its training reported (best dev F1 and step, steps run)."""
    scores = json.loads((metrics / f"{domain}.test.json").read_text())
    row = domain_row(scores, count_gold(corpus / domain / "test.spacy"))
    summary = json.loads((training / domain / "summary.json").read_text())
    row.update({"dev_f": summary["best"]["score"], "best_step": summary["best"]["step"], "steps": summary["steps"],
                "test_docs_per_second": scores.get("docs_per_second")})
    return row


def _stage(name: str, commands: Commands, logs: Path, env: Mapping[str, str], failed: Dict[str, str]) -> float:
    """Run a stage for the domains that have not failed; record the new failures; its wall seconds."""
    start = time.perf_counter()
    todo = {d: c for d, c in commands.items() if d not in failed}
    print(f"{name}: {', '.join(todo)}", file=sys.stderr, flush=True)
    for domain, code in run_parallel(name, todo, logs, env).items():
        if code != 0:
            failed[domain] = f"{name} exited with {code}; see {logs / f'{domain}.{name}.log'}"
            print(f"{domain}: {failed[domain]}", file=sys.stderr, flush=True)
    return time.perf_counter() - start


def run(args: argparse.Namespace, command: str) -> Dict[str, Any]:
    out: Path = args.out.resolve()
    corpus, training, metrics, logs = out / "corpus", out / "training", out / "metrics", out / "logs"
    domains = [d for d in args.domains.split(",") if d]
    device = "cpu" if args.gpu_id < 0 else "cuda"
    env = process_env(args.gpu_id, len(domains))
    trains = train_commands(args.config.resolve(), args.base, corpus, training, device, args.max_minutes, args.set,
                            domains)
    failed: Dict[str, str] = {}
    seconds = {"convert": _stage("convert", convert_commands(args.data.resolve(), corpus, domains), logs, env, failed)}
    seconds["train"] = _stage("train", trains, logs, env, failed)
    seconds["evaluate"] = _stage("evaluate", evaluate_commands(training, corpus, metrics, device, domains), logs, env,
                                 failed)
    rows = {d: domain_result(d, corpus, training, metrics) for d in domains if d not in failed}
    return {"system": "padellm", "command": command, "train_command": shown(trains[domains[0]]),
            "config": str(args.config), "base": args.base, "max_minutes": args.max_minutes,
            "device": device if args.gpu_id < 0 else f"cuda (GPU {args.gpu_id}), {len(domains)} domains at once",
            "seconds": {k: round(v, 1) for k, v in seconds.items()},
            "domains": rows, "average": averages(rows), "failed": failed}


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python benchmarks/crossner.py", description=__doc__.splitlines()[0])
    p.add_argument("--base", required=True, help="base model: a GGUF file, Hugging Face folder or hub id")
    p.add_argument("--data", type=Path, required=True, help="the CrossNER folder of {domain}/{train,dev,test}.txt")
    p.add_argument("--out", type=Path, required=True, help="folder for the corpus, models, logs and the report")
    p.add_argument("--gpu-id", type=int, default=0, help="the GPU all domains share; -1: CPU")
    p.add_argument("--max-minutes", type=float, default=20.0, help="training time limit per domain (default 20)")
    p.add_argument("--config", type=Path, default=ROOT / "configs" / "crossner.cfg")
    p.add_argument("--domains", default=",".join(DOMAINS))
    p.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help="a training config override, e.g. training.epochs=20; repeatable")
    p.add_argument("--peer", type=Path, default=None,
                   help="a report to print side by side, e.g. docs/results/crossner-spacy-ner.json")
    return p


def main(argv: Optional[List[str]] = None) -> int:
    argv = list(sys.argv[1:] if argv is None else argv)
    args = build_parser().parse_args(argv)
    try:
        for item in args.set:
            _override(item)
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
