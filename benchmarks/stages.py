"""Stages of subprocesses run side by side: one ``python -m spacy_padellm ...`` per dataset (or domain), all
at once on one GPU (small models leave most of it idle) or a few at a time (``--at-once``: one on a CPU), each
logging to its own file.

Shared by ``benchmarks/crossner.py`` and ``benchmarks/nested_chinese.py``.
"""

from __future__ import annotations

import argparse
import os
import shlex
import subprocess
import sys
import time
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Dict, List, Mapping, Sequence, Tuple

__all__ = ["Commands", "add_arguments", "concurrency", "device_note", "override", "run_parallel", "run_stage",
           "process_env", "visible_gpu_id", "shown"]

ROOT = Path(__file__).resolve().parents[1]

Commands = Dict[str, List[str]]


def override(item: str) -> List[str]:
    """``section.key=value`` as the two arguments ``--section.key value`` of ``train``."""
    key, sep, value = item.partition("=")
    if not sep or "." not in key:
        raise ValueError(f"--set takes section.key=value, got {item!r}")
    return [f"--{key.strip()}", value.strip()]


def run_parallel(stage: str, commands: Commands, logs: Path, env: Mapping[str, str],
                 at_once: int = 0) -> Dict[str, int]:
    """Run the commands (``python`` being this interpreter), ``at_once`` at a time (0: all at once), each logging
    to ``logs/{domain}.{stage}.log``; their return codes, in the commands' order, once all have ended."""
    logs.mkdir(parents=True, exist_ok=True)

    def run_one(item: Tuple[str, List[str]]) -> Tuple[str, int]:
        domain, args = item
        with open(logs / f"{domain}.{stage}.log", "w") as log:
            return domain, subprocess.run([sys.executable, *args], stdout=log, stderr=subprocess.STDOUT,
                                          env=dict(env), cwd=ROOT).returncode

    with ThreadPoolExecutor(max_workers=max(1, concurrency(at_once, len(commands)))) as pool:
        return dict(pool.map(run_one, commands.items()))


def process_env(gpu_id: int, n_parallel: int) -> Dict[str, str]:
    """This environment for the subprocesses: on a GPU, only that one visible; on the CPU, the cores shared out
    (``OMP_NUM_THREADS``, unless set) so that parallel processes do not fight over them."""
    env = dict(os.environ)
    if gpu_id >= 0:
        env["CUDA_VISIBLE_DEVICES"] = str(gpu_id)
    else:
        env.setdefault("OMP_NUM_THREADS", str(max(1, (os.cpu_count() or 1) // n_parallel)))
    return env


def concurrency(at_once: int, n: int) -> int:
    """How many of ``n`` processes run at a time under ``--at-once`` ``at_once``."""
    return min(at_once or n, n)


def device_note(gpu_id: int, at_once: int, n: int) -> str:
    """Where a report's ``n`` trainings ran: the device and how many at a time."""
    device = "cpu" if gpu_id < 0 else f"cuda (GPU {gpu_id})"
    return f"{device}, {concurrency(at_once, n)} of {n} trainings at once"


def visible_gpu_id(gpu_id: int) -> int:
    """The ``--gpu-id`` a subprocess of ``process_env(gpu_id, ...)`` takes: the chosen GPU is its device 0."""
    return 0 if gpu_id >= 0 else -1


def add_arguments(p: argparse.ArgumentParser, data_help: str, unit: str) -> None:
    """The arguments every script of stages takes: base model, data, output folder, GPU, time limit per
    ``unit`` (a domain, a set) and training config overrides."""
    p.add_argument("--base", required=True, help="base model: a GGUF file, Hugging Face folder or hub id")
    p.add_argument("--data", type=Path, required=True, help=data_help)
    p.add_argument("--out", type=Path, required=True, help="folder for the corpus, models, logs and the report")
    p.add_argument("--gpu-id", type=int, default=0, help=f"the GPU all {unit}s share; -1: CPU")
    p.add_argument("--max-minutes", type=float, default=20.0, help=f"training time limit per {unit} (default 20)")
    p.add_argument("--at-once", type=int, default=0,
                   help=f"processes a stage runs at a time (default 0: one per {unit}, all at once; on a CPU 1 "
                        "gives each process every core)")
    p.add_argument("--set", action="append", default=[], metavar="SECTION.KEY=VALUE",
                   help=f"a training config override for every {unit}, e.g. training.epochs=20; repeatable")


def shown(args: Sequence[str]) -> str:
    return shlex.join(["python", *args])


def run_stage(name: str, commands: Commands, logs: Path, env: Mapping[str, str], failed: Dict[str, str],
              at_once: int = 0) -> float:
    """Run a stage for the domains that have not failed, ``at_once`` processes at a time (0: all); record the new
    failures; its wall seconds."""
    start = time.perf_counter()
    todo = {d: c for d, c in commands.items() if d not in failed}
    print(f"{name}: {', '.join(todo)}", file=sys.stderr, flush=True)
    for domain, code in run_parallel(name, todo, logs, env, at_once).items():
        if code != 0:
            failed[domain] = f"{name} exited with {code}; see {logs / f'{domain}.{name}.log'}"
            print(f"{domain}: {failed[domain]}", file=sys.stderr, flush=True)
    return time.perf_counter() - start
