"""Train several candidate models side by side on one GPU and compare them on dev.

Each candidate is ``python -m spacy_padellm train CONFIG`` with its own overrides, run as its own process
(small models leave most of a GPU idle, so several train at once at nearly full speed each; ``--one-at-a-time``
runs them one after the other instead, for a comparison of their speed). The script waits for all, then prints
one row per candidate (its settings, steps, examples and tokens per second, best dev span P/R/F1 and when it was
reached), writes ``candidates.json`` and plots every candidate's dev F1 against training time
(``candidates.png``). Selection is on dev only: the script never reads a test set.

    python benchmarks/train_candidates.py configs/conll03.cfg --out training/candidates --max-minutes 7 \\
        --common paths.base_model=assets/base/SmolLM2-135M-Instruct.Q4_1.gguf \\
        --candidate r16:lora.lora_r=16 --candidate r24-nz2:lora.lora_r=24,lora.lora_alpha=48,data.nonzero_repeat=2
"""

from __future__ import annotations

import argparse
import json
import os
import subprocess
import sys
import time
from pathlib import Path
from typing import Callable, Dict, List, Optional, Sequence, Tuple

__all__ = ["parse_overrides", "parse_candidate", "train_command", "collect", "render_markdown", "render_plot", "main"]

# The settings a results row shows, in this order (section.key as in the config file).
SHOWN = ("paths.base_model", "training.method", "lora.lora_r", "training.lr", "training.epochs",
         "data.nonzero_repeat", "data.shared_prompts", "training.batch_size")


def parse_overrides(text: str) -> Dict[str, str]:
    """``section.key=value,section.key=value`` as a dict (values stay strings; ``train`` parses them)."""
    out: Dict[str, str] = {}
    for item in filter(None, (part.strip() for part in text.split(","))):
        key, sep, value = item.partition("=")
        if not sep or "." not in key:
            raise SystemExit(f"not a section.key=value override: {item!r}")
        out[key.strip()] = value.strip()
    return out


def parse_candidate(text: str) -> Tuple[str, Dict[str, str]]:
    """``NAME:section.key=value,...`` as (name, overrides); the name must be usable as a folder name."""
    name, _, rest = text.partition(":")
    if not name or not all(c.isalnum() or c in "-_." for c in name):
        raise SystemExit(f"candidate name must be letters, digits, '-', '_' or '.': {text!r}")
    return name, parse_overrides(rest)


def train_command(config: str, output: Path, overrides: Dict[str, str], max_minutes: Optional[float]) -> List[str]:
    """The ``train`` command line of one candidate."""
    cmd = [sys.executable, "-m", "spacy_padellm", "train", config, "--no-progress", "--paths.output", str(output)]
    if max_minutes is not None:
        cmd += ["--training.max_minutes", str(max_minutes)]
    for key, value in overrides.items():
        cmd += [f"--{key}", value]
    return cmd


def _launch(args, candidates: Dict[str, Dict[str, str]]) -> Dict[str, Tuple[subprocess.Popen, float]]:
    env = dict(os.environ)
    if args.gpu_id is not None:
        env["CUDA_VISIBLE_DEVICES"] = str(args.gpu_id)
    procs = {}
    for name, overrides in candidates.items():
        out = args.out / name
        out.mkdir(parents=True, exist_ok=True)
        for stale in ("summary.json", "history.json"):  # an earlier run's, which collect would take for this one's
            (out / stale).unlink(missing_ok=True)
        cmd = train_command(args.config, out, overrides, args.max_minutes)
        (out / "command.txt").write_text(" ".join(cmd) + "\n")
        log = open(out / "train.log", "w")
        procs[name] = (subprocess.Popen(cmd, stdout=log, stderr=subprocess.STDOUT, env=env), time.time())
    return procs


def _run(args, candidates: Dict[str, Dict[str, str]],
         on_done: Callable[[Dict[str, Dict[str, float]]], None]) -> Dict[str, Dict[str, float]]:
    """Every candidate at once, or with ``--one-at-a-time`` each alone, in the order given; ``on_done`` is called
    with the candidates finished so far each time one finishes."""
    if not args.one_at_a_time:
        return _wait(_launch(args, candidates), on_done)
    done: Dict[str, Dict[str, float]] = {}
    for name, overrides in candidates.items():
        done.update(_wait(_launch(args, {name: overrides}), lambda now: on_done({**done, **now})))
    return done


def _wait(procs: Dict[str, Tuple[subprocess.Popen, float]],
          on_done: Callable[[Dict[str, Dict[str, float]]], None]) -> Dict[str, Dict[str, float]]:
    from tqdm.auto import tqdm

    done: Dict[str, Dict[str, float]] = {}
    with tqdm(total=len(procs), desc="candidates", unit="model") as bar:
        while len(done) < len(procs):
            for name, (proc, start) in procs.items():
                if name not in done and proc.poll() is not None:
                    done[name] = {"returncode": proc.returncode, "started": round(start, 1),
                                  "wall_s": round(time.time() - start, 1)}
                    bar.update(1)
                    on_done(done)
            time.sleep(2)
    return done


def _write_atomic(path: Path, text: str) -> None:
    """``path.write_text(text)``, through a temporary file renamed over it: a reader never sees half of it."""
    tmp = path.with_name(path.name + ".tmp")
    tmp.write_text(text)
    os.replace(tmp, path)


def _adapter_mib(folder: Path) -> Optional[float]:
    files = list(folder.glob("**/adapter_model.safetensors")) or list(folder.glob("**/model.safetensors"))
    return round(files[0].stat().st_size / 2**20, 2) if files else None


def collect(out: Path, candidates: Dict[str, Dict[str, str]], common: Dict[str, str],
            finished: Dict[str, Dict[str, float]], running: Sequence[str] = ()) -> List[Dict]:
    """One record per candidate from its summary.json and history.json (a failed one keeps its log tail; one of
    ``running``, still training, is marked ``pending`` and its files are not read)."""
    rows = []
    for name, overrides in candidates.items():
        folder = out / name
        row = {"name": name, "settings": {**common, **overrides}, **finished.get(name, {})}
        summary, history = folder / "summary.json", folder / "history.json"
        if name in running:  # its files may be half written: read once it has finished
            row["pending"] = True
            rows.append(row)
            continue
        if summary.exists():
            s = json.loads(summary.read_text())
            best = s["best"]
            row.update(steps=s["steps"], examples=s["examples"], train_seconds=s["train_seconds"],
                       examples_per_second=s.get("examples_per_second"), tokens_per_second=s.get("tokens_per_second"),
                       best_step=best["step"], dev=(best.get("scores") or {}), dev_f=best["score"],
                       adapter_mib=_adapter_mib(folder / "best"))
        else:
            log = (folder / "train.log").read_text().splitlines() if (folder / "train.log").exists() else []
            row["error"] = "\n".join(log[-15:])
        row["history"] = json.loads(history.read_text()) if history.exists() else []
        rows.append(row)
    return rows


def _cell(row: Dict, key: str, config_defaults: Dict[str, str]) -> str:
    value = row["settings"].get(key, config_defaults.get(key, ""))
    return Path(value).name if key == "paths.base_model" and value else str(value)


def render_markdown(rows: List[Dict], config_defaults: Optional[Dict[str, str]] = None) -> str:
    """One table row per candidate, best dev span F1 first."""
    config_defaults = config_defaults or {}
    head = ["candidate", *(k.split(".")[1] for k in SHOWN), "steps", "train s", "examples/s", "tokens/s",
            "best step", "dev P", "dev R", "dev span F1", "adapter MiB"]
    lines = ["| " + " | ".join(head) + " |", "|" + "---|" * len(head)]
    for row in sorted(rows, key=lambda r: -(r.get("dev_f") or -1)):
        dev = row.get("dev") or {}
        cells = [row["name"], *(_cell(row, k, config_defaults) for k in SHOWN),
                 row.get("steps", "pending" if row.get("pending") else "failed"),
                 row.get("train_seconds", "–"), row.get("examples_per_second") or "–",
                 row.get("tokens_per_second") or "–", row.get("best_step", "–"), _num(_score(dev, "p")),
                 _num(_score(dev, "r")), _num(row.get("dev_f")), row.get("adapter_mib", "–")]
        lines.append("| " + " | ".join(str(c) for c in cells) + " |")
    return "\n".join(lines)


def _score(dev: Dict, which: str):
    """Dev precision (``which`` "p") or recall ("r"): of ``doc.ents``, else of the span group scored (nested)."""
    from spacy_padellm.pipeline.scoring import scored_prefix

    return dev.get(f"{scored_prefix(dev)}_{which}")


def _num(value) -> str:
    return "–" if value is None else f"{value:.4f}"


def render_plot(rows: List[Dict], path: Path) -> None:
    """Dev span F1 against training minutes, one line per candidate; beside it, each candidate's examples per
    second (training alone, the dev evaluations left out)."""
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    fig, (ax, speed) = plt.subplots(1, 2, figsize=(11, 4.5), gridspec_kw={"width_ratios": [3, 2]})
    plotted = 0
    for row in rows:
        points = [(h["elapsed_s"] / 60, h["dev_f"]) for h in row["history"] if "dev_f" in h]
        if points:
            ax.plot(*zip(*points), marker="o", label=f"{row['name']} ({max(p[1] for p in points):.4f})")
            plotted += 1
    ax.set_xlabel("training minutes")
    ax.set_ylabel("dev span F1")
    ax.set_title("Dev span F1 of each candidate")
    ax.grid(alpha=0.3)
    if plotted:
        ax.legend(fontsize=8)
    rated = [r for r in rows if r.get("examples_per_second")]
    bars = speed.barh([r["name"] for r in rated], [r["examples_per_second"] for r in rated], color="#4c72b0")
    for bar in bars:
        speed.text(bar.get_width(), bar.get_y() + bar.get_height() / 2, f" {bar.get_width():.2f}", va="center",
                   fontsize=8)
    speed.invert_yaxis()
    speed.set_xlabel("training examples per second")
    speed.set_title("Training speed")
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def _config_defaults(config: str) -> Dict[str, str]:
    from confection import Config

    cfg = Config().from_disk(config, interpolate=False)
    return {f"{section}.{key}": str(value) for section, values in cfg.items() for key, value in values.items()}


def main(argv: Optional[List[str]] = None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("config", help="the training config every candidate starts from, e.g. configs/conll03.cfg")
    p.add_argument("--candidate", action="append", required=True, help="NAME:section.key=value,... (repeatable)")
    p.add_argument("--common", default="", help="section.key=value,... applied to every candidate")
    p.add_argument("--out", type=Path, default=Path("training/candidates"))
    p.add_argument("--max-minutes", type=float, default=None, help="each candidate's training time limit")
    p.add_argument("--gpu-id", default=None, help="the GPU every candidate trains on (CUDA_VISIBLE_DEVICES)")
    p.add_argument("--one-at-a-time", action="store_true",
                   help="train the candidates one after the other (to compare their speed), not all at once")
    args = p.parse_args(argv)
    common = parse_overrides(args.common)
    candidates = dict(parse_candidate(c) for c in args.candidate)
    if len(candidates) != len(args.candidate):
        raise SystemExit("candidate names must differ")
    candidates = {name: {**common, **overrides} for name, overrides in candidates.items()}
    defaults = _config_defaults(args.config)

    def write(finished: Dict[str, Dict[str, float]]) -> Tuple[List[Dict], str]:
        """candidates.json and .md as they stand: written each time a candidate finishes, so that a run stopped
        early still leaves the finished ones for choose_candidate.py (the others ``pending``)."""
        rows = collect(args.out, candidates, common, finished, running=[n for n in candidates if n not in finished])
        table = render_markdown(rows, defaults)
        report = {"config": args.config, "max_minutes": args.max_minutes, "command": " ".join(sys.argv),
                  "candidates": rows}
        _write_atomic(args.out / "candidates.json", json.dumps(report, indent=1))
        _write_atomic(args.out / "candidates.md", table + "\n")
        return rows, table

    rows, table = write(_run(args, candidates, write))
    print(table)
    render_plot(rows, args.out / "candidates.png")
    failed = [r["name"] for r in rows if "error" in r]
    for name in failed:
        print(f"candidate {name} failed:\n{next(r['error'] for r in rows if r['name'] == name)}", file=sys.stderr)
    return 1 if failed else 0


if __name__ == "__main__":
    sys.exit(main())
