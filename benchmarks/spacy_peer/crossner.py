"""``python benchmarks/spacy_peer/crossner.py CORPUS OUT``: spaCy's own ``ner`` on the five CrossNER domains.

CORPUS holds ``{domain}/{train,dev,test}.spacy`` as ``spacy project run crossner-convert`` writes them. Per
domain (``--jobs`` at a time): ``spacy train`` with ``benchmarks/spacy_peer/efficiency.cfg`` (``spacy init config
--lang en --pipeline ner --optimize efficiency``, unmodified; ``model-best`` is selected on dev), then ``spacy
evaluate`` of ``model-best`` on the test split. Writes OUT/{domain}/ (the trained pipelines and the evaluate
JSONs) and, with ``--output``, one report JSON of the shape of ``benchmarks/crossner_scores.py``; prints the
markdown table.
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import shlex
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any, Dict, List, Optional

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))  # benchmarks/: the shared CrossNER scores

from crossner_scores import DOMAINS, averages, count_gold, domain_row, write_report  # noqa: E402

CONFIG = Path(os.path.relpath(HERE / "efficiency.cfg"))  # as the command is shown


def train_command(corpus: Path, out: Path, domain: str, max_steps: int, gpu_id: int) -> List[str]:
    return [sys.executable, "-m", "spacy", "train", str(CONFIG), "--output", str(out / domain),
            "--paths.train", str(corpus / domain / "train.spacy"), "--paths.dev", str(corpus / domain / "dev.spacy"),
            "--training.max_steps", str(max_steps), "--gpu-id", str(gpu_id)]


def evaluate_command(out: Path, corpus: Path, domain: str, gpu_id: int) -> List[str]:
    return [sys.executable, "-m", "spacy", "evaluate", str(out / domain / "model-best"),
            str(corpus / domain / "test.spacy"), "--output", str(out / domain / "test.json"), "--gpu-id", str(gpu_id)]


def run_domain(corpus: Path, out: Path, domain: str, max_steps: int, gpu_id: int) -> Dict[str, Any]:
    """Train and evaluate one domain; its row, with the training seconds."""
    out.mkdir(parents=True, exist_ok=True)
    start = time.perf_counter()
    with open(out / f"{domain}.train.log", "w") as log:
        subprocess.run(train_command(corpus, out, domain, max_steps, gpu_id), stdout=log, stderr=subprocess.STDOUT,
                       check=True)
    seconds = time.perf_counter() - start
    subprocess.run(evaluate_command(out, corpus, domain, gpu_id), stdout=subprocess.DEVNULL, check=True)
    scores = json.loads((out / domain / "test.json").read_text())
    row = domain_row(scores, count_gold(corpus / domain / "test.spacy"))
    row["train_seconds"] = round(seconds, 1)
    print(f"{domain}: test P {row['p']:.4f} R {row['r']:.4f} F {row['f']:.4f}", file=sys.stderr, flush=True)
    return row


def shown(command: List[str]) -> str:
    return shlex.join(["python"] + command[1:])


def build_report(rows: Dict[str, Dict[str, Any]], corpus: Path, out: Path, max_steps: int, gpu_id: int,
                 jobs: int) -> Dict[str, Any]:
    import spacy

    example = DOMAINS[0]
    return {
        "system": "spaCy ner",
        "pipeline": ("spacy init config --lang en --pipeline ner --optimize efficiency "
                     "(benchmarks/spacy_peer/efficiency.cfg)"),
        "commands": [shown(train_command(corpus, out, example, max_steps, gpu_id)),
                     shown(evaluate_command(out, corpus, example, gpu_id))],
        "device": ("cpu" if gpu_id < 0 else f"gpu {gpu_id}") + f", {jobs} domain(s) at once",
        "max_steps": max_steps,
        "environment": {"spacy": spacy.__version__, "python": platform.python_version(),
                        "processor": platform.processor() or platform.machine()},
        "domains": rows,
        "average": averages(rows),
    }


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(prog="python benchmarks/spacy_peer/crossner.py", description=__doc__.splitlines()[0])
    p.add_argument("corpus", type=Path, help="folder of {domain}/{train,dev,test}.spacy")
    p.add_argument("out", type=Path, help="folder for the trained pipelines and evaluate JSONs")
    p.add_argument("--domains", default=",".join(DOMAINS))
    p.add_argument("--max-steps", type=int, default=4000,
                   help="spacy train's training.max_steps (default 4000; patience and eval_frequency: the config's)")
    p.add_argument("--gpu-id", type=int, default=-1)
    p.add_argument("--jobs", type=int, default=1, help="domains trained at once (default 1)")
    p.add_argument("--output", type=Path, default=None, help="the report JSON")
    args = p.parse_args(argv)
    domains = args.domains.split(",")
    with ThreadPoolExecutor(max_workers=args.jobs) as pool:
        found = pool.map(lambda d: run_domain(args.corpus, args.out, d, args.max_steps, args.gpu_id), domains)
        rows = dict(zip(domains, found))
    report = build_report(rows, args.corpus, args.out, args.max_steps, args.gpu_id, args.jobs)
    if args.output:
        print(write_report(report, args.output, extras=False))
    return 0


if __name__ == "__main__":
    sys.exit(main())
