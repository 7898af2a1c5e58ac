"""``python benchmarks/bad_inputs.py``: what the shipped default pipeline does with bad inputs, measured.

Each case runs through ``spacy.blank("en")`` + ``nlp.add_pipe("padellm_ner")`` (the shipped default model) on
the CPU, the model loaded once for the cases that decode; the configuration cases build a pipeline of their
own, and ``annotate`` runs as a user runs it, in a process of its own. Every outcome is what happened in this
run: the exception's type and the first line of its message, or the spans and counters that came back,
compared where a case has something to compare with (a long doc against its sentence alone times the
repeats, ``nlp()`` against ``nlp.pipe``). Nothing in the table is written by hand.

Writes ``docs/robustness.md`` (a table: input | outcome) and the same rows with their details as JSON
(``benchmarks/results/bad_inputs.json``)::

    python benchmarks/bad_inputs.py [--md docs/robustness.md] [--json benchmarks/results/bad_inputs.json]

``spacy project run bad-inputs`` runs it.
"""

from __future__ import annotations

import argparse
import contextlib
import io
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time
from collections import Counter
from datetime import datetime, timezone
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

ROOT = Path(__file__).resolve().parents[1]
sys.path.insert(0, str(ROOT))  # this checkout's spacy_padellm, not an installed one

# CoNLL-2003 test sentences (tokens joined by spaces, as in the PaDeLLM JSONL)
SENTENCE = ("Japan began the defence of their Asian Cup title with a lucky 2-1 win against Syria in a Group C "
            "championship match on Friday .")
GOOD = ["Nadim Ladki reported from Amman .", "Peter Blackburn met Werner Zwingmann in Bonn .",
        "The European Commission said on Thursday it disagreed with German advice .",
        "China saw their luck desert them in the second match of the group ."]
SURROGATE = "\ud800"
LONG_CHARS = 20_000
JORDAN = "Jordan " * 30
MIXED_SCRIPT = "東京でJapanとSyriaが。"
MIXED_SCRIPT_NAMES = ("東京", "Japan", "Syria")  # Tokyo, Japan, Syria
PIPE_WITH_SURROGATE = GOOD[:2] + [SURROGATE] + GOOD[2:] + [SENTENCE, GOOD[0]]
MALFORMED_LINE = 7  # of the annotate input's 20 lines (1-based)

Outcome = Tuple[str, Dict[str, Any]]  # (the table's text, details for the JSON)


# -- what happened --------------------------------------------------------------------------------------------


def error_text(err: BaseException) -> str:
    """The exception's type and the first line of its message."""
    first = str(err).strip().splitlines()[0] if str(err).strip() else ""
    return f"`{type(err).__name__}`: {first}" if first else f"`{type(err).__name__}`"


def spans_text(doc) -> str:
    """The doc's entities as `text`/LABEL, repeats counted (``Jordan/PER ×30``)."""
    counts = Counter((e.text, e.label_) for e in doc.ents)
    if not counts:
        return "no entities"
    return ", ".join(f"{text}/{label}" + (f" ×{n}" if n > 1 else "") for (text, label), n in counts.items())


def counters_text(doc) -> str:
    """The non-zero counters of ``doc._.padellm``."""
    stats = doc._.padellm or {}
    return "{" + ", ".join(f"{k}: {v}" for k, v in stats.items() if v) + "}"


def md_cell(text: str) -> str:
    return text.replace("|", "\\|").replace("\n", " ")


def shown(text: str, limit: int = 40) -> str:
    """``text`` as a short Python literal for the table (escapes visible, long texts cut)."""
    lit = repr(text)
    return f"`{lit[:limit]}…` ({len(text)} chars)" if len(lit) > limit else f"`{lit}`"


# -- the cases ------------------------------------------------------------------------------------------------


def case_surrogate_alone(nlp, tmp: Path) -> Outcome:
    try:
        doc = nlp(SURROGATE)
    except Exception as err:  # noqa: BLE001 - what it raises is the outcome
        return f"raises {error_text(err)}", {"raised": type(err).__name__, "message": str(err)}
    return f"a doc: {spans_text(doc)}; `doc._.padellm` {counters_text(doc)}", {"ents": len(doc.ents)}


def case_surrogate_in_pipe(nlp, tmp: Path) -> Outcome:
    texts = PIPE_WITH_SURROGATE
    docs, error = [], None
    try:
        for doc in nlp.pipe(texts, batch_size=4):
            docs.append(doc)
    except Exception as err:  # noqa: BLE001 - what it raises is the outcome
        error = err
    text = f"`nlp.pipe` yielded {len(docs)} of {len(texts)} docs"
    if error is not None:
        good_lost = len(texts) - len(docs) - (len(docs) <= texts.index(SURROGATE))
        text += f", then raised {error_text(error)}; **{good_lost} good docs lost with it**" if good_lost else \
            f", then raised {error_text(error)}"
    else:
        failed = [i for i, d in enumerate(docs) if (d._.padellm or {}).get("failed")]
        replaced = [i for i, d in enumerate(docs) if (d._.padellm or {}).get("replaced")]
        keys = [[(e.start_char, e.end_char, e.label_) for e in d.ents] for d in docs]
        same = keys == [[(e.start_char, e.end_char, e.label_) for e in nlp(t).ents] for t in texts]
        text += (f"; docs marked failed: {failed or 'none'}; docs with characters replaced by U+FFFD: "
                 f"{replaced or 'none'}; " + ("the same spans as `nlp()` one text at a time" if same else
                                              "**spans that differ from `nlp()` one text at a time**"))
    return text, {"yielded": len(docs), "given": len(texts), "raised": type(error).__name__ if error else None}


def case_long_doc(nlp, tmp: Path) -> Outcome:
    repeats = LONG_CHARS // (len(SENTENCE) + 1)
    alone = nlp(SENTENCE)
    doc = nlp(" ".join([SENTENCE] * repeats))
    want = len(alone.ents) * repeats
    verdict = "all found" if len(doc.ents) == want else f"**{want - len(doc.ents)} lost**"
    text = (f"{len(doc.ents)} entities; the sentence alone has {len(alone.ents)} ({spans_text(alone)}), × {repeats} "
            f"repeats = {want}: {verdict}; `doc._.padellm` {counters_text(doc)}")
    return text, {"chars": len(doc.text), "repeats": repeats, "ents": len(doc.ents), "expected": want,
                  "padellm": dict(doc._.padellm or {})}


def case_jordan(nlp, tmp: Path) -> Outcome:
    single = nlp(JORDAN)
    alone = next(iter(nlp.pipe([JORDAN])))
    batched = list(nlp.pipe([JORDAN] + GOOD[:3], batch_size=4))[0]
    keys = [[(e.start_char, e.end_char, e.label_) for e in d.ents] for d in (single, alone, batched)]
    same = "the same spans" if keys[0] == keys[1] == keys[2] else "**different spans**"
    text = (f"`nlp()`: {spans_text(single)}; `nlp.pipe` alone: {spans_text(alone)}; `nlp.pipe` in a batch of 4: "
            f"{spans_text(batched)}: {same}")
    return text, {"nlp": keys[0], "pipe_alone": keys[1], "pipe_batched": keys[2]}


def case_mixed_script(nlp, tmp: Path) -> Outcome:
    doc = nlp(MIXED_SCRIPT)
    tokens = [t.text for t in doc]
    text = f"tokens {tokens}; {spans_text(doc)}; `doc._.padellm` {counters_text(doc)}"
    other = [e.text for e in doc.ents if e.text not in MIXED_SCRIPT_NAMES]
    if other:
        text += f"; **entities that are not one of the names {', '.join(MIXED_SCRIPT_NAMES)}: {other}**"
    return text, {"tokens": tokens, "ents": [(e.text, e.label_) for e in doc.ents],
                  "padellm": dict(doc._.padellm or {})}


def _add_pipe_outcome(config: Dict[str, Any]) -> Outcome:
    """What ``add_pipe`` with ``config`` does, and, if it builds, what the first doc does."""
    import spacy

    nlp = spacy.blank("en")
    try:
        nlp.add_pipe("padellm_ner", config=config)
    except Exception as err:  # noqa: BLE001 - what it raises is the outcome
        return f"`add_pipe` raises {error_text(err)}", {"raised": type(err).__name__, "message": str(err)}
    try:
        doc = nlp(SENTENCE)
    except Exception as err:  # noqa: BLE001
        return f"`add_pipe` builds; the first doc raises {error_text(err)}", {"raised": type(err).__name__}
    return f"**builds and decodes**: {spans_text(doc)}", {"ents": len(doc.ents)}


def case_missing_model(nlp, tmp: Path) -> Outcome:
    return _add_pipe_outcome({"model": "/nonexistent"})


def case_cuda(nlp, tmp: Path) -> Outcome:
    import torch

    text, details = _add_pipe_outcome({"device": "cuda"})
    if torch.cuda.is_available():
        text = "(this machine has CUDA) " + text
    return text, {**details, "cuda_available": torch.cuda.is_available()}


def case_truncated_adapter(nlp, tmp: Path) -> Outcome:
    from spacy_padellm.loading import SHIPPED_DIR

    folder = tmp / "truncated-model"
    shutil.copytree(SHIPPED_DIR / "conll03-smollm2-135m", folder)
    weights = folder / "adapter" / "adapter_model.safetensors"
    with weights.open("r+b") as f:
        f.truncate(weights.stat().st_size // 2)
    return _add_pipe_outcome({"model": str(folder)})


def _annotate_input(tmp: Path) -> Path:
    path = tmp / "input.jsonl"
    lines = [json.dumps({"text": GOOD[i % len(GOOD)]}) for i in range(20)]
    lines[MALFORMED_LINE - 1] = '{"text": "Japan beat Syria'  # cut short: not JSON
    path.write_text("\n".join(lines) + "\n", encoding="utf8")
    return path


def _annotate(tmp: Path, *options: str) -> Outcome:
    """``python -m spacy_padellm annotate`` on 20 JSONL lines, one of them malformed, in its own process."""
    from spacy.tokens import DocBin

    out = tmp / ("out" + "".join(options).replace("-", "_"))
    cmd = [sys.executable, "-m", "spacy_padellm", "annotate", "padellm:conll03-smollm2-135m", str(_annotate_input(tmp)),
           str(out), "--device", "cpu", "--no-progress", *options]
    env = dict(os.environ, PYTHONPATH=os.pathsep.join(filter(None, [str(ROOT), os.environ.get("PYTHONPATH")])))
    done = subprocess.run(cmd, capture_output=True, text=True, env=env, cwd=tmp)
    written = sum(len(DocBin().from_disk(p)) for p in out.glob("*.spacy")) if out.exists() else 0
    rejects = sum(1 for p in out.glob("*.rejects.jsonl") for _ in p.open(encoding="utf8")) if out.exists() else 0
    said = f"; it says: {_message(done.stderr)[:200]}" if _message(done.stderr) else ""
    text = f"exit code {done.returncode}; {written} docs written, {rejects} line(s) in the rejects file{said}"
    return text, {"exit_code": done.returncode, "docs_written": written, "rejects": rejects,
                  "stderr_tail": done.stderr[-2000:], "stdout_tail": done.stdout[-1000:]}


def _message(stderr: str) -> str:
    """What the command says about the bad line: the first line of its stderr naming an error or a skipped
    record, else its last line (progress bars and library warnings left out)."""
    lines = [line.strip() for line in stderr.splitlines()
             if line.strip() and not re.search(r"it/s\]|%\||Warning|warnings\.warn", line)]
    for i, line in enumerate(lines):
        if re.search(r"error|skipping|reject|malformed", line, re.I):
            return f"{line} {lines[i + 1]}" if line.endswith(":") and i + 1 < len(lines) else line
    return lines[-1] if lines else ""


def case_annotate_skip(nlp, tmp: Path) -> Outcome:
    return _annotate(tmp)


def case_annotate_fail(nlp, tmp: Path) -> Outcome:
    return _annotate(tmp, "--on-error", "fail")


def readme_usage_block() -> str:
    text = (ROOT / "README.md").read_text(encoding="utf8")
    usage = text[text.index("## Usage"):]
    return usage[usage.index("```python") + len("```python"): usage.index("```", usage.index("```python") + 9)]


def case_readme(nlp, tmp: Path) -> Outcome:
    here, out = os.getcwd(), io.StringIO()
    os.chdir(tmp)
    try:
        with contextlib.redirect_stdout(out):
            exec(compile(readme_usage_block(), "README.md", "exec"), {"__name__": "readme"})
    except Exception as err:  # noqa: BLE001 - what it raises is the outcome
        return f"raises {error_text(err)}", {"raised": type(err).__name__, "printed": out.getvalue()}
    finally:
        os.chdir(here)
    printed = out.getvalue().strip()
    return f"runs as written; prints `{printed}`", {"printed": printed}


# (the input as the table shows it, the case)
CASES: List[Tuple[str, Callable[[Any, Path], Outcome]]] = [
    (f"{shown(SURROGATE)} (a lone surrogate) alone: `nlp(text)`", case_surrogate_alone),
    (f"{shown(SURROGATE)} doc {PIPE_WITH_SURROGATE.index(SURROGATE) + 1} of {len(PIPE_WITH_SURROGATE)} in "
     "`nlp.pipe(texts, batch_size=4)`, the others good", case_surrogate_in_pipe),
    (f"one real sentence repeated to {LONG_CHARS:,} characters, `nlp(text)`", case_long_doc),
    (f"{shown(JORDAN)}: `nlp()` vs `nlp.pipe`", case_jordan),
    (f"{shown(MIXED_SCRIPT)} on `spacy.blank(\"en\")`", case_mixed_script),
    ('`config={"model": "/nonexistent"}`', case_missing_model),
    ('`config={"device": "cuda"}` on a machine without CUDA', case_cuda),
    ("a copy of the shipped SmolLM2 model folder with `adapter_model.safetensors` cut to half", case_truncated_adapter),
    (f"`annotate` on 20 JSONL lines, line {MALFORMED_LINE} malformed (default `--on-error skip`)", case_annotate_skip),
    (f"`annotate` on the same lines with `--on-error fail`", case_annotate_fail),
    ("the README's usage block, run as written", case_readme),
]


# -- the run --------------------------------------------------------------------------------------------------


def run_case(name: str, case: Callable[[Any, Path], Outcome], nlp) -> Dict[str, Any]:
    """One row; a case that raises where it did not expect to is a row saying so."""
    start = time.perf_counter()
    with tempfile.TemporaryDirectory() as tmp:
        try:
            text, details = case(nlp, Path(tmp))
        except Exception as err:  # noqa: BLE001 - an unexpected error is an outcome too
            text, details = f"**the case itself raised** {error_text(err)}", {"raised": type(err).__name__}
        text = text.replace(str(Path(tmp).resolve()), "<tmp>").replace(tmp, "<tmp>")
    return {"input": name, "outcome": text, "seconds": round(time.perf_counter() - start, 1), "details": details}


def shared_pipeline():
    """The shipped default pipeline on the CPU, loaded once for the cases that decode."""
    import spacy

    nlp = spacy.blank("en")
    nlp.add_pipe("padellm_ner", config={"device": "cpu"})
    nlp.get_pipe("padellm_ner")._ensure_loaded()
    return nlp


def render_markdown(rows: Sequence[Dict[str, Any]], meta: Dict[str, Any]) -> str:
    lines = ["# Bad inputs and what they do", "",
             "Every outcome below was measured by `python benchmarks/bad_inputs.py` (`spacy project run bad-inputs`) "
             "with the shipped default pipeline (`spacy.blank(\"en\")` + `nlp.add_pipe(\"padellm_ner\")`) on the "
             "CPU; rerun it to see what the code you have does. Exceptions are shown by type and the first line of "
             "their message; **bold** marks an outcome that is not what the input calls for.", "",
             f"spacy-padellm {meta['version']}, {meta['time']}; rows and details: `{meta['json']}`.", "",
             "| input | outcome |", "| --- | --- |"]
    lines += [f"| {md_cell(r['input'])} | {md_cell(r['outcome'])} |" for r in rows]
    return "\n".join(lines + memory_note()) + "\n"


def memory_note(path: Path = ROOT / "benchmarks" / "results" / "memory.json") -> List[str]:
    """Memory and load time, which take a process per size, from the last ``benchmarks/memory.py`` run (not
    measured by this script); nothing when that file is missing."""
    if not path.exists():
        return []
    runs = json.loads(path.read_text())["runs"]
    before, after = runs[0], runs[-1]
    cells = [f"{b['docs']} sentences: {_peak(b)} → {_peak(a)}" for b, a in zip(before["rows"], after["rows"])]
    return ["", "Memory of the SmolLM2 model's pipeline, from `python benchmarks/memory.py` (`spacy project run memory`; "
            f"[{os.path.relpath(path, ROOT / 'docs')}]({os.path.relpath(path, ROOT / 'docs')})), not this script: "
            f"peak of one `nlp.pipe` call, {before['label']} → {after['label']} `max_cache_mb`: " + "; ".join(cells)
            + "."]


def _peak(row: Dict[str, Any]) -> str:
    peak = row.get("call_peak_mb")
    if isinstance(peak, (int, float)):
        return f"{peak / 1000:.1f} GB"
    return "killed out of memory" if row.get("killed_by_signal") else "-"


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(prog="python benchmarks/bad_inputs.py", description=__doc__.splitlines()[0],
                                formatter_class=argparse.RawDescriptionHelpFormatter)
    p.add_argument("--md", type=Path, default=ROOT / "docs" / "robustness.md", help="the markdown table")
    p.add_argument("--json", type=Path, default=ROOT / "benchmarks" / "results" / "bad_inputs.json",
                   help="the rows with their details")
    return p


def main(argv: Optional[List[str]] = None) -> int:
    args = build_parser().parse_args(argv)
    from spacy_padellm.about import __version__

    nlp = shared_pipeline()
    rows = []
    for name, case in CASES:
        rows.append(run_case(name, case, nlp))
        print(f"| {rows[-1]['input']} | {rows[-1]['outcome']} | ({rows[-1]['seconds']} s)", flush=True)
    meta = {"version": __version__, "time": datetime.now(timezone.utc).isoformat(timespec="seconds"),
            "json": os.path.relpath(args.json, ROOT)}
    args.md.parent.mkdir(parents=True, exist_ok=True)
    args.md.write_text(render_markdown(rows, meta), encoding="utf8")
    args.json.parent.mkdir(parents=True, exist_ok=True)
    args.json.write_text(json.dumps({**meta, "rows": rows}, indent=1, ensure_ascii=False) + "\n", encoding="utf8")
    return 0


if __name__ == "__main__":
    sys.exit(main())
