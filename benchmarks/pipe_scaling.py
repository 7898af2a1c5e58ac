"""``python benchmarks/pipe_scaling.py PIPELINE DATA.spacy --gpu-id 0``: ``nlp.pipe`` throughput on one device by batch
geometry and by worker processes.

*Geometries* (``--geometry NAME:pipe=N,KEY=VALUE,...``): the ``nlp.pipe`` batch size ``pipe`` and decoding settings
(``max_batch_rows``, ``max_batch_tokens``, ``inflight_batches``...; ``python -m spacy_padellm settings`` lists them),
one after the other in this process on the same weights: two warm-up runs, then ``--rounds`` timed runs over the docs
of DATA repeated ``--repeat`` times (the fastest is kept), sentences/s, forward passes, peak GPU memory, span F1 on
DATA and the share of docs whose entities equal the first geometry's.

*Workers* (``--workers 1,2,4``): that many processes at once, each with its own pipeline on the same device (the
first geometry's settings) and a slice of the docs (every k-th), started together after their warm-up; sentences/s
of them all (docs over the time from the first start to the last end), and whether their entities equal the
first geometry's. This is what ``annotate --ray --gpus-per-worker 0.5`` (two actors on a GPU) does on a cluster.
``--workers-geometry NAME`` (repeatable) runs them with those geometries' settings instead, one geometry's processes
after the other's (``workers`` holds the first's rows, ``workers_also`` the others'): several processes side by side
with different settings in one run.

*Processes of ``nlp.pipe``* (``--n-process 1,2,3``): the same with spaCy's own ``nlp.pipe(texts, n_process=k)``, one
call each (the "spawn" start method; k = 1 runs in this process): every process loads the model and captures its
graphs within the call, so the rate is taken over the middle 80% of the docs as they come back (the time from the
10% mark to the 90% mark), and the whole call's time is reported beside it.
Each worker holds its own KV caches and CUDA graphs (the JSON keeps the GiB each reserved after its warm-up): with the
default model at 256 rows and 4 batches in flight, about 9.5 GiB on an H100 after the warm-up and more as longer
batches come, so four fit an 80 GB card and six did not. A worker count that fails (out of memory) is reported as
failed, and the larger ones are not run.

*The encoder anchor* (``--anchor 256,1024,4096``): RoBERTa-base's token classifier (``encoder_anchor.py``) timed on the
same docs in this process after the geometries, and the best single process and the best worker count as fractions
of it (``best_vs_anchor``).

Prints a markdown table; ``--output`` writes the JSON, the table (.md) and a PNG next to it.

    python benchmarks/pipe_scaling.py padellm:conll03-gemma3-270m corpus/conll03/conll03_test.spacy --gpu-id 0 \\
        --geometry base:pipe=1024 --geometry rows1024:pipe=4096,max_batch_rows=1024,max_batch_tokens=524288 \\
        --workers 1,2 --n-process 1,2 --anchor 256,1024,4096 --output metrics/pipe_scaling.json
        # or: spacy project run pipe-scaling
"""

from __future__ import annotations

import argparse
import gc
import json
import multiprocessing
import sys
import time
from pathlib import Path
from typing import Any, Callable, Dict, List, Optional, Sequence, Tuple

sys.path.insert(0, str(Path(__file__).resolve().parent))
from encoder_anchor import EncoderAnchor, time_anchor  # noqa: E402
from measure import forward_passes, load_gold, open_pipeline, select_device  # noqa: E402
from report import publish  # noqa: E402
from results import _scores, _spans, agreement  # noqa: E402
from settings_sweep import parse_variant  # noqa: E402
from timing import Clock  # noqa: E402

Geometry = Tuple[str, int, Dict[str, Any]]  # (name, nlp.pipe batch size, decoding settings)
Spans = List[Tuple[int, int, str]]  # results._spans: a doc's spans, sorted


def parse_geometry(text: str) -> Geometry:
    """``NAME:pipe=N,KEY=VALUE,...`` as (name, N, settings); ``pipe`` defaults to 1024."""
    name, sep, rest = text.partition(":")
    items = [item for item in rest.split(",") if item.strip()]
    pipe = [item for item in items if item.split("=")[0].strip() == "pipe"]
    others = [item for item in items if item not in pipe]
    try:
        batch = int(pipe[-1].split("=", 1)[1]) if pipe else 1024
    except ValueError:
        raise ValueError(f"geometry {name!r}: pipe= takes a whole number, got {pipe[-1]!r}") from None
    if batch < 1:
        raise ValueError(f"geometry {name!r}: pipe= must be positive, got {batch}")
    name, settings = parse_variant(f"{name}{sep}{','.join(others)}")
    return name, batch, settings


def _geometry_arg(text: str) -> Geometry:
    try:
        return parse_geometry(text)
    except ValueError as err:
        raise argparse.ArgumentTypeError(str(err)) from None


def _clock(ner) -> Clock:
    """A clock that waits for the component's device (``timing.Clock``)."""
    import torch

    return Clock(torch.device(ner.decoder.device))


def time_geometry(nlp, ner, texts: List[str], geometry: Geometry, base, rounds: int) -> Tuple[Dict[str, Any], list]:
    """Two warm-up runs, then ``rounds`` timed ``nlp.pipe`` runs over ``texts``: the rows of each and the docs of
    the last."""
    name, batch, settings = geometry
    ner.use_settings(base.replace(**settings))
    clock = _clock(ner)
    clock.reset_peak()
    start = time.perf_counter()
    for _ in range(2):
        list(nlp.pipe(texts, batch_size=batch))
    warm = time.perf_counter() - start
    runs = []
    for _ in range(rounds):
        passes, start = forward_passes(ner.decoder, 0), clock.now()
        docs = list(nlp.pipe(texts, batch_size=batch))
        seconds = clock.now() - start
        runs.append({"sent_s": round(len(texts) / seconds, 1), "wall_s": round(seconds, 3),
                     "passes": forward_passes(ner.decoder, 0) - passes})
    best = max(runs, key=lambda r: r["sent_s"])
    peak = clock.peak_mb()
    return {"pipe_batch": batch, "settings": settings, "warm_s": round(warm, 1), "runs": runs,
            "sent_s": best["sent_s"], "passes": best["passes"],
            "peak_gib": None if peak is None else round(peak / 1024, 2)}, docs


def _worker(index: int, args: argparse.Namespace, geometry: Geometry, texts: List[str], jobs, results, ready) -> None:
    """A worker process: its pipeline warmed up on ``texts``, then each job (k, part) run on ``texts[part::k]``."""
    try:
        device = select_device(args.device, args.gpu_id)
        nlp, ner, _ = open_pipeline(args.pipeline, None, args.spans_key, device, geometry[2])
        for _ in range(2):  # its share of the docs at the most workers: the caches it will need, no more
            list(nlp.pipe(texts[index::args.workers[-1]], batch_size=geometry[1]))
    except BaseException as err:  # noqa: BLE001 - the parent reports it
        ready.put((index, f"{type(err).__name__}: {err}", None))
        return
    ready.put((index, None, _reserved_gib(ner)))
    clock = _clock(ner)
    for k, part in iter(jobs.get, None):
        start = clock.now()
        try:
            docs = list(nlp.pipe(texts[part::k], batch_size=geometry[1]))
        except BaseException as err:  # noqa: BLE001 - e.g. out of memory beside the others: the parent reports it
            results.put((part, start, None, f"{type(err).__name__}: {err}"))
            continue
        results.put((part, start, clock.now(), [_spans(doc, args.spans_key) for doc in docs]))


def _next(queue_, procs: Sequence, poll_s: float):
    """The next item of ``queue_``, or None once one of ``procs`` has died while it waited (checked every ``poll_s``
    seconds): a worker killed by the system for lack of memory never answers."""
    import queue

    while True:
        try:
            return queue_.get(timeout=poll_s)
        except queue.Empty:
            if any(not proc.is_alive() for proc in procs):
                return None


def _started(ready, procs: Sequence, poll_s: float = 5.0) -> List[Tuple[int, Optional[str], Any]]:
    """Each worker's start report (index, error or None, GiB), sorted; a worker process that died before it reported
    gets an error of its own."""
    got: Dict[int, tuple] = {}
    while len(got) < len(procs):
        report = _next(ready, [proc for i, proc in enumerate(procs) if i not in got], poll_s)
        if report is not None:
            got[report[0]] = report
            continue
        for i, proc in enumerate(procs):
            if i not in got and not proc.is_alive():
                got[i] = (i, f"died before it started (exit code {proc.exitcode})", None)
    return [got[i] for i in sorted(got)]


def gather(results, k: int, procs: Sequence, poll_s: float = 5.0) -> Tuple[List[tuple], Optional[str]]:
    """The k workers' results of one run, sorted by part, and the first error among them (a worker's exception,
    or a worker process that died without answering; ``procs`` are checked every ``poll_s`` seconds)."""
    got = []
    while len(got) < k:
        item = _next(results, procs, poll_s)
        if item is None:
            dead = next(i for i, proc in enumerate(procs) if not proc.is_alive())
            return sorted(got, key=lambda g: g[0]), f"worker {dead} died (exit code {procs[dead].exitcode})"
        got.append(item)
    got.sort(key=lambda g: g[0])
    errors = [g[3] for g in got if g[2] is None]
    return got, errors[0] if errors else None


def _reserved_gib(ner) -> Optional[float]:
    """GiB the caching allocator of the component's CUDA device holds at most (None on the CPU): what one more
    process on the device would need."""
    import torch

    device = torch.device(ner.decoder.device)
    if device.type != "cuda":
        return None
    return round(torch.cuda.max_memory_reserved(device) / 2 ** 30, 2)


def time_anchor_on(ner, texts: List[str], batch_sizes: Sequence[int], latency_docs: int = 100) -> Dict[str, Any]:
    """The encoder anchor (``encoder_anchor.py``) timed on ``texts`` on the component's device, with its tokenizer;
    the anchor is freed afterwards."""
    import torch

    device = torch.device(ner.decoder.device)
    dtype = "bfloat16" if device.type == "cuda" else "float32"
    anchor = EncoderAnchor(ner._ensure_loaded()[1], str(device), dtype)
    try:
        return time_anchor(anchor, texts, batch_sizes, latency_docs, _clock(ner).now)
    finally:
        del anchor
        gc.collect()


def runnable_counts(started: Sequence[Tuple[int, Optional[str], Any]], counts: Sequence[int]
                    ) -> Tuple[List[int], Dict[str, str], List[int]]:
    """From the workers' start reports (index, error or None, GiB): the indices of those that started, the others'
    errors by index, and the counts that can run on those started (a worker out of memory beside the others leaves
    the smaller counts measurable). No worker started: an error."""
    alive = [i for i, err, _ in started if not err]
    errors = {str(i): err for i, err, _ in started if err}
    if not alive:
        raise RuntimeError(f"no worker could start: {next(iter(errors.values()))}")
    return alive, errors, [k for k in counts if k <= len(alive)]


def time_workers(args: argparse.Namespace, geometry: Geometry, texts: List[str], counts: Sequence[int],
                 reference: List[Spans], measured: Callable[[Dict[str, Any]], None]) -> Dict[str, Any]:
    """``k`` worker processes at once for each k of ``counts`` (``--rounds`` times), on one set of processes; the
    rows so far go to ``measured`` after each k. Workers that could not start (e.g. out of GPU memory) are left out
    and the counts above those that did are reported as not run; a count whose run fails (a worker's error, or a
    worker process that died) is reported as failed, and the larger counts are not run."""
    ctx = multiprocessing.get_context("spawn")  # CUDA cannot be used in a forked child
    n = max(counts)
    jobs = [ctx.Queue() for _ in range(n)]
    results, ready = ctx.Queue(), ctx.Queue()
    procs = [ctx.Process(target=_worker, args=(i, args, geometry, texts, jobs[i], results, ready), daemon=True)
             for i in range(n)]
    start = time.perf_counter()
    for proc in procs:
        proc.start()
    try:
        started = _started(ready, procs)
        alive, errors, runnable = runnable_counts(started, counts)
        rows = {"geometry": geometry[0], "start_s": round(time.perf_counter() - start, 1),
                "reserved_gib": [gib for _, _, gib in started], "counts": {}, "failed_to_start": errors,
                "not_run": {str(k): f"{len(errors)} of the workers could not start"
                            for k in counts if k not in runnable}}
        for i, err in errors.items():
            print(f"worker {i} could not start: {err}", file=sys.stderr, flush=True)
        for k in runnable:
            runs, failed = [], None
            for _ in range(args.rounds):
                for part in range(k):
                    jobs[alive[part]].put((k, part))
                got, failed = gather(results, k, [procs[i] for i in alive[:k]])
                if failed:
                    break
                seconds = max(g[2] for g in got) - min(g[1] for g in got)
                spans: List[Optional[Spans]] = [None] * len(texts)
                for part, _, _, part_spans in got:
                    spans[part::k] = part_spans
                runs.append({"sent_s": round(len(texts) / seconds, 1), "wall_s": round(seconds, 3),
                             "worker_s": [round(g[2] - g[1], 3) for g in got],
                             "same_as_first": agreement(spans, reference)})
            if failed:  # the larger counts would fail the same way: stop here, with what was measured
                rows["failed"] = {"workers": k, "error": failed}
                rows["not_run"].update({str(c): f"{k} workers failed" for c in runnable if c > k})
                print(f"workers {k}: failed ({failed}); larger counts not run", file=sys.stderr, flush=True)
                measured(rows)
                break
            best = max(runs, key=lambda r: r["sent_s"])
            rows["counts"][str(k)] = {"runs": runs, "sent_s": best["sent_s"], "same_as_first": best["same_as_first"]}
            print(f"workers {k}: {best['sent_s']} sentences/s", file=sys.stderr, flush=True)
            measured(rows)
    finally:
        for queue in jobs:
            queue.put(None)
        for proc in procs:
            proc.join(timeout=60)
    return rows


def time_n_process(args: argparse.Namespace, geometry: Geometry, texts: List[str], counts: Sequence[int],
                   reference: Optional[List[Spans]], measured: Callable[[Dict[str, Any]], None]) -> Dict[str, Any]:
    """``nlp.pipe(texts, n_process=k)`` for each k of ``counts`` (spawned processes), on a pipeline with
    ``geometry``'s settings; the rows so far go to ``measured`` after each k."""
    device = select_device(args.device, args.gpu_id)
    nlp, _, _ = open_pipeline(args.pipeline, None, args.spans_key, device, geometry[2])
    before = multiprocessing.get_start_method(allow_none=True)
    multiprocessing.set_start_method("spawn", force=True)  # CUDA cannot be used in a forked child
    rows: Dict[str, Any] = {"geometry": geometry[0], "counts": {}}
    try:
        for k in counts:
            start = time.perf_counter()
            arrived, spans = [], []
            for doc in nlp.pipe(texts, batch_size=geometry[1], n_process=k):
                arrived.append(time.perf_counter())
                spans.append(_spans(doc, args.spans_key))
            lo, hi = len(texts) // 10, len(texts) - 1 - len(texts) // 10
            steady = (hi - lo) / max(arrived[hi] - arrived[lo], 1e-9)
            rows["counts"][str(k)] = {"sent_s": round(steady, 1), "call_s": round(arrived[-1] - start, 3),
                                      "call_sent_s": round(len(texts) / (arrived[-1] - start), 1),
                                      "same_as_first": agreement(spans, reference) if reference else None}
            print(f"n_process {k}: {steady:.1f} sentences/s (middle 80%), whole call {arrived[-1] - start:.1f} s",
                  file=sys.stderr, flush=True)
            measured(rows)
    finally:
        multiprocessing.set_start_method(before, force=True)
    return rows


def _save_partial(args, rows: Dict[str, Any]) -> None:
    """The rows measured so far, in OUTPUT.partial.json (a run stopped by a time limit keeps them)."""
    if args.output:
        path = Path(args.output).with_suffix(".partial.json")
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(json.dumps({"command": " ".join(sys.argv), **rows}, indent=1))


def run(args) -> Dict[str, Any]:
    import torch

    device = select_device(args.device, args.gpu_id)
    nlp, ner, _ = open_pipeline(args.pipeline, None, args.spans_key, device, None)
    gold = load_gold(args.data, nlp.vocab, args.max_docs)
    texts = [doc.text for doc in gold] * args.repeat
    base = ner.settings
    geometries, reference = {}, None
    for geometry in args.geometry:
        row, docs = time_geometry(nlp, ner, texts, geometry, base, args.rounds)
        spans = [_spans(doc, args.spans_key) for doc in docs]
        reference = reference or spans
        row["span_f"] = _scores(docs[: len(gold)], gold, args.spans_key)["span_f"]
        row["same_as_first"] = agreement(spans, reference)
        geometries[geometry[0]] = row
        print(f"{geometry[0]}: {row['sent_s']} sentences/s, span F1 {row['span_f']:.4f}, same entities "
              f"{row['same_as_first']:.4f}, {row['passes']} passes", file=sys.stderr, flush=True)
        _save_partial(args, {"geometries": geometries})
    anchor = time_anchor_on(ner, texts, args.anchor) if args.anchor else None
    if anchor:
        print(f"encoder anchor: {anchor['best']['sentences_per_second']} sentences/s (batch "
              f"{anchor['best']['batch_size']})", file=sys.stderr, flush=True)
        _save_partial(args, {"geometries": geometries, "anchor": anchor})
    engine = ner.decoder.device
    del nlp, ner, docs  # the workers' pipelines take the device's memory
    gc.collect()
    if torch.cuda.is_available():
        torch.cuda.empty_cache()
    by_name = {g[0]: g for g in args.geometry}
    measured: List[Dict[str, Any]] = []  # the worker rows of each geometry in --workers-geometry, in turn
    for name in (args.workers_geometry or [args.geometry[0][0]]) if args.workers else []:
        done = list(measured)
        measured.append(time_workers(args, by_name[name], texts, args.workers, reference,
                                     lambda rows, done=done: _save_partial(
                                         args, {"geometries": geometries, **_workers_keys(done + [rows])})))
    workers, workers_also = (measured[0], measured[1:]) if measured else (None, [])
    n_process = time_n_process(args, args.geometry[0], texts, args.n_process, reference,
                               lambda rows: _save_partial(args, {"geometries": geometries,
                                                                 **_workers_keys(measured), "n_process": rows})
                               ) if args.n_process else None
    cuda = torch.device(engine).type == "cuda"
    return {"pipeline": args.pipeline, "data": args.data, "docs": len(texts), "repeat": args.repeat,
            "device": torch.cuda.get_device_name(torch.device(engine)) if cuda else "cpu",
            "command": " ".join(sys.argv), "geometries": geometries, "workers": workers, "workers_also": workers_also,
            "n_process": n_process, "anchor": anchor,
            "best_vs_anchor": best_vs_anchor(geometries, [workers, *workers_also], anchor)}


def _workers_keys(measured: Sequence[Dict[str, Any]]) -> Dict[str, Any]:
    """The worker rows measured so far as the report's keys: ``workers`` the first geometry's, ``workers_also`` the
    others'."""
    return {"workers": measured[0] if measured else None, "workers_also": list(measured[1:])}


def _worker_sets(report: Dict[str, Any]) -> List[Dict[str, Any]]:
    """The report's worker rows, one per geometry they ran with (``_workers_keys`` the other way)."""
    return [report["workers"], *report.get("workers_also", [])] if report.get("workers") else []


def best_vs_anchor(geometries: Dict[str, Any], workers: Sequence[Optional[Dict[str, Any]]],
                   anchor: Optional[Dict[str, Any]]) -> Optional[Dict[str, Any]]:
    """The best sentences/s of one process (a geometry) and of worker processes (over every geometry they ran
    with), each as a fraction of the encoder anchor's best in the same run (None without the anchor)."""
    if not anchor:
        return None
    best = anchor["best"]["sentences_per_second"]
    one = max(row["sent_s"] for row in geometries.values())
    out = {"one_process": round(one / best, 3)}
    counts = [(w["geometry"], k, row) for w in workers if w for k, row in w["counts"].items()]
    if counts:
        name, k, row = max(counts, key=lambda c: c[2]["sent_s"])
        out.update(workers=int(k), workers_geometry=name, several_processes=round(row["sent_s"] / best, 3))
    return out


def table(report: Dict[str, Any]) -> str:
    lines = [f"`nlp.pipe` over {report['docs']:,} docs on {report['device']}", "",
             "| geometry | nlp.pipe batch | settings | sentences/s | passes | peak GiB | span F1 | same entities |",
             "|---|---|---|---|---|---|---|---|"]
    for name, row in report["geometries"].items():
        settings = ", ".join(f"{k}={v}" for k, v in row["settings"].items()) or "as configured"
        lines.append(f"| {name} | {row['pipe_batch']} | {settings} | **{row['sent_s']:,.0f}** | {row['passes']} | "
                     f"{row['peak_gib'] if row['peak_gib'] is not None else '–'} | {row['span_f']:.4f} | "
                     f"{100 * row['same_as_first']:.2f}% |")
    for w in _worker_sets(report):
        lines += _worker_lines(w)
    if report.get("n_process"):
        w = report["n_process"]
        one = w["counts"][min(w["counts"], key=int)]["sent_s"]
        lines += ["", f"`nlp.pipe(n_process=k)` ({w['geometry']}'s settings; sentences/s over the middle 80% of the docs, "
                  "and over the whole call with each process's start):", "",
                  "| n_process | sentences/s | x one | whole call s | whole call sentences/s | same entities |",
                  "|---|---|---|---|---|---|"]
        for k, row in w["counts"].items():
            same = "–" if row["same_as_first"] is None else f"{100 * row['same_as_first']:.2f}%"
            lines.append(f"| {k} | **{row['sent_s']:,.0f}** | {row['sent_s'] / one:.2f}x | {row['call_s']} | "
                         f"{row['call_sent_s']:,.0f} | {same} |")
    if report.get("anchor"):
        a, frac = report["anchor"], report["best_vs_anchor"]
        lines += ["", f"Encoder anchor in the same run ({a['model']}, {a['dtype']}): "
                  f"**{a['best']['sentences_per_second']:,.0f}** sentences/s at batch {a['best']['batch_size']}; "
                  f"the best single process is {frac['one_process']:.3f}x of it"
                  + (f", {frac['workers']} worker processes ({frac['workers_geometry']}) "
                     f"{frac['several_processes']:.3f}x" if "workers" in frac else "") + "."]
    return "\n".join(lines) + "\n"


def _worker_lines(w: Dict[str, Any]) -> List[str]:
    """The table of one geometry's worker processes."""
    one = w["counts"][min(w["counts"], key=int)]["sent_s"] if w["counts"] else None
    reserved = ", ".join(str(g) for g in w.get("reserved_gib") or [] if g is not None)
    lines = ["", f"Worker processes on the one device ({w['geometry']}'s settings each"
             + (f"; GiB reserved by each after its warm-up: {reserved}" if reserved else "") + "):", "",
             "| processes | sentences/s | x one | same entities |", "|---|---|---|---|"]
    for k, row in w["counts"].items():
        lines.append(f"| {k} | **{row['sent_s']:,.0f}** | {row['sent_s'] / one:.2f}x | "
                     f"{100 * row['same_as_first']:.2f}% |")
    failed = w.get("failed")
    if failed:
        lines.append(f"| {failed['workers']} | failed: {failed['error'][:120]} | – | – |")
    for k, why in sorted((w.get("not_run") or {}).items(), key=lambda kv: int(kv[0])):
        lines.append(f"| {k} | not run: {why} | – | – |")
    return lines


def plot(report: Dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    panels = [("batch geometry (one process)", {n: r["sent_s"] for n, r in report["geometries"].items()})]
    workers = _worker_sets(report)
    if workers:
        several = len(workers) > 1
        panels.append(("worker processes", {(f"{w['geometry']} " if several else "") + f"{k} x": r["sent_s"]
                                            for w in workers for k, r in w["counts"].items()}))
    if report.get("n_process"):
        panels.append(("nlp.pipe(n_process=k), middle 80%",
                       {f"n_process={k}": r["sent_s"] for k, r in report["n_process"]["counts"].items()}))
    fig, axes = plt.subplots(1, len(panels), figsize=(5 * len(panels), 3.6), squeeze=False)
    for ax, (title, values) in zip(axes[0], panels):
        ax.bar(list(values), list(values.values()), color="tab:blue")
        for i, v in enumerate(values.values()):
            ax.text(i, v, f"{v:,.0f}", ha="center", va="bottom", fontsize=8)
        ax.set_title(title, fontsize=10)
        ax.set_ylabel("sentences/s")
        ax.tick_params(axis="x", labelsize=8, rotation=20)
    fig.suptitle(f"nlp.pipe, {report['docs']:,} docs, {report['device']}", fontsize=10)
    fig.tight_layout()
    fig.savefig(path, dpi=120)
    plt.close(fig)


def build_parser() -> argparse.ArgumentParser:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("pipeline", help="spaCy pipeline folder, PaDeLLM model folder or padellm:NAME")
    p.add_argument("data", help="docs (DocBin)")
    p.add_argument("--device", default=None, help="cuda, cuda:1, cpu (default: --gpu-id, else the CPU)")
    p.add_argument("--gpu-id", type=int, default=-1)
    p.add_argument("--spans-key", default=None, help="score doc.spans[KEY] (nested sets) instead of doc.ents")
    p.add_argument("--max-docs", type=int, default=None)
    p.add_argument("--repeat", type=int, default=1, help="the docs this many times over (a longer steady state)")
    p.add_argument("--rounds", type=int, default=2, help="timed runs per geometry and worker count (fastest kept)")
    p.add_argument("--geometry", type=_geometry_arg, action="append", default=None, metavar="NAME:pipe=N,KEY=VALUE",
                   help="nlp.pipe batch size and decoding settings (repeatable; default: base:pipe=1024)")
    p.add_argument("--workers", default="", help="worker process counts, e.g. 1,2,4 (default: none)")
    p.add_argument("--workers-geometry", action="append", default=None, metavar="NAME",
                   help="the geometry whose settings the workers take (repeatable: each in turn; default: the first)")
    p.add_argument("--n-process", default="", help="nlp.pipe n_process values, e.g. 1,2 (default: none)")
    p.add_argument("--anchor", default="", help="also time the encoder anchor (RoBERTa-base token classifier, random "
                   "weights; encoder_anchor.py) on the same docs at these batch sizes, e.g. 256,1024,4096")
    p.add_argument("--output", default=None, help="JSON path (.md and .png written next to it)")
    return p


def _counts(option: str, text: str) -> List[int]:
    """Process counts like "1,2,4", sorted (an empty text: none)."""
    try:
        counts = sorted({int(k) for k in text.split(",") if k.strip()})
    except ValueError:
        raise SystemExit(f"{option} takes counts like 1,2,4, got {text!r}") from None
    if any(k < 1 for k in counts):
        raise SystemExit(f"{option} counts must be positive, got {counts}")
    return counts


def main(argv=None) -> int:
    args = build_parser().parse_args(argv)
    args.geometry = args.geometry or [parse_geometry("base:pipe=1024")]
    names = [g[0] for g in args.geometry]
    if len(set(names)) < len(names):
        raise SystemExit(f"geometry names must differ: {names}")
    args.workers = _counts("--workers", args.workers)
    unknown = [n for n in args.workers_geometry or [] if n not in names]
    if unknown:
        raise SystemExit(f"--workers-geometry {unknown[0]!r} is not a --geometry name ({', '.join(names)})")
    args.n_process = _counts("--n-process", args.n_process)
    args.anchor = _counts("--anchor", args.anchor)
    return publish(run(args), table, args.output, plot)


if __name__ == "__main__":
    sys.exit(main())
