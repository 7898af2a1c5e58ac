"""``python benchmarks/memory.py``: peak resident memory (RSS) of one ``nlp.pipe`` call on the CPU against the
number of docs it is given, with the pipeline's load time.

For each N of ``--docs`` a fresh process builds ``spacy.blank("en")`` + ``padellm_ner`` (the shipped default
model; ``--set KEY=VALUE`` changes a config key, VALUE read as JSON where it can be), loads it, and runs one
``nlp.pipe`` call over the first N sentences of DATA (the PaDeLLM JSONL of CoNLL-2003 test) with spaCy's
default batch size, as a user's ``list(nlp.pipe(texts))`` does. Per N: the load's seconds and peak RSS, the
call's peak RSS (the kernel's high-water mark, reset after loading), the RSS after it, sentences/s and the
entities found; a process the kernel kills (out of memory) is a row saying so. Prints a markdown table;
``--json`` writes the rows with the settings and the machine::

    python benchmarks/memory.py --docs 50,200,800 --json benchmarks/results/memory.json
    python benchmarks/memory.py --checkout ../other-checkout --label other --json other.json

``--checkout`` measures the ``spacy_padellm`` of another checkout of this repository (default: this one).
"""

from __future__ import annotations

import argparse
import json
import os
import platform
import subprocess
import sys
import time
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Dict, List, Optional

ROOT = Path(__file__).resolve().parents[1]
DATA = ROOT.parent / "shared" / "data" / "padellm" / "conll03" / "conll03_test.jsonl"  # data_dir of project.yml
COLUMNS = ("docs", "load_s", "load_peak_mb", "call_peak_mb", "after_call_mb", "docs_per_s", "entities")


def rss_mb(field: str = "VmRSS") -> float:
    """The process's resident memory (``VmRSS``) or its high-water mark (``VmHWM``) in MiB (Linux)."""
    with open("/proc/self/status", encoding="ascii") as f:
        for line in f:
            if line.startswith(field + ":"):
                return int(line.split()[1]) / 1024
    raise RuntimeError(f"/proc/self/status has no {field}")


def reset_peak() -> bool:
    """Reset the high-water mark to the current RSS (``/proc/self/clear_refs``); whether the kernel allowed it."""
    try:
        with open("/proc/self/clear_refs", "w", encoding="ascii") as f:
            f.write("5")
        return True
    except OSError:
        return False


def read_texts(path: Path, n: int) -> List[str]:
    """The first ``n`` texts of a PaDeLLM JSONL (each line ``[text, [start, end, mention, label], ...]``)."""
    texts = []
    with path.open(encoding="utf8") as f:
        for line in f:
            if line.strip():
                texts.append(json.loads(line)[0])
            if len(texts) >= n:
                break
    return texts


def measure(n_docs: int, data: Path, config: Dict[str, Any]) -> Dict[str, Any]:
    """One row: load the pipeline, then one ``nlp.pipe`` call over ``n_docs`` texts (in this process)."""
    import spacy

    texts = read_texts(data, n_docs)
    start = time.perf_counter()
    nlp = spacy.blank("en")
    nlp.add_pipe("padellm_ner", config=config)
    nlp.get_pipe("padellm_ner")._ensure_loaded()
    load_s = time.perf_counter() - start
    load_peak = rss_mb("VmHWM")
    reset = reset_peak()
    start = time.perf_counter()
    entities = sum(len(doc.ents) for doc in nlp.pipe(texts))
    call_s = time.perf_counter() - start
    return {"docs": len(texts), "load_s": round(load_s, 1), "load_peak_mb": round(load_peak),
            "call_peak_mb": round(rss_mb("VmHWM")), "after_call_mb": round(rss_mb()),
            "docs_per_s": round(len(texts) / call_s, 2), "entities": entities, "peak_reset": reset}


def run_child(n_docs: int, args) -> Dict[str, Any]:
    """``measure`` in a fresh process of ``args.checkout``'s code (so that each row's peak is its own)."""
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(args.checkout), os.environ.get("PYTHONPATH")])))
    cmd = [sys.executable, __file__, "--child", str(n_docs), "--data", str(args.data)]
    for item in args.set:
        cmd += ["--set", item]
    done = subprocess.run(cmd, env=env, capture_output=True, text=True, cwd=args.checkout)
    if done.returncode < 0:  # killed: by the kernel when memory ran out (see dmesg)
        return {**{c: "-" for c in COLUMNS}, "docs": n_docs, "killed_by_signal": -done.returncode}
    if done.returncode != 0:
        raise RuntimeError(f"{' '.join(cmd)} failed:\n{done.stderr[-3000:]}")
    return json.loads(done.stdout.strip().splitlines()[-1])


def parse_set(items: List[str]) -> Dict[str, Any]:
    config = {}
    for item in items:
        key, sep, value = item.partition("=")
        if not sep:
            raise SystemExit(f"--set takes KEY=VALUE, got {item!r}")
        try:
            config[key.strip()] = json.loads(value)
        except ValueError:
            config[key.strip()] = value
    return config


def render_table(rows: List[Dict[str, Any]]) -> str:
    lines = ["| " + " | ".join(COLUMNS) + " |", "|" + " --- |" * len(COLUMNS)]
    lines += ["| " + " | ".join(str(row[c]) for c in COLUMNS) + " |"
              + (f" killed (signal {row['killed_by_signal']})" if "killed_by_signal" in row else "") for row in rows]
    return "\n".join(lines) + "\n"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python benchmarks/memory.py", description=__doc__.splitlines()[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--docs", default="50,200,800", help="comma-separated numbers of docs, one process each")
    p.add_argument("--data", type=Path, default=DATA, help="PaDeLLM JSONL (default: CoNLL-2003 test)")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE", help="a padellm_ner config key")
    p.add_argument("--checkout", type=Path, default=ROOT, help="the checkout whose spacy_padellm is measured")
    p.add_argument("--label", default=None, help="a name for the rows in the JSON")
    p.add_argument("--json", type=Path, default=None,
                   help="add the rows, settings and machine to this JSON's runs (a run of the same --label replaced)")
    p.add_argument("--child", type=int, default=None, help=argparse.SUPPRESS)
    return p


def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    if args.child is not None:
        print(json.dumps(measure(args.child, args.data, parse_set(args.set))))
        return 0
    args.checkout = args.checkout.resolve()
    rows = []
    for n in (int(x) for x in args.docs.split(",")):
        rows.append(run_child(n, args))
        print(render_table(rows).splitlines()[-1], flush=True)
    table = render_table(rows)
    print(table)
    if args.json is not None:
        run = {"label": args.label, "checkout": str(args.checkout), "config": parse_set(args.set),
               "data": str(args.data), "time": datetime.now(timezone.utc).isoformat(timespec="seconds"),
               "machine": {"python": platform.python_version(), "cpus": os.cpu_count(), "system": platform.system()},
               "rows": rows}
        write_run(args.json, run)
    return 0


def write_run(path: Path, run: Dict[str, Any]) -> None:
    """Add ``run`` to the JSON's ``runs``, replacing a run of the same label (so runs of two versions of the
    code can sit side by side)."""
    report = json.loads(path.read_text(encoding="utf8")) if path.exists() else {}
    runs = [r for r in report.get("runs", []) if r.get("label") != run["label"] or run["label"] is None]
    report["runs"] = runs + [run]
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(report, indent=1) + "\n", encoding="utf8")


if __name__ == "__main__":
    sys.exit(main())
