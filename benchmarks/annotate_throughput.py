"""Steps of benchmarks/annotate_throughput.sh: throughput of plain ``nlp.pipe`` against ``annotate`` (local and ``--ray``).

    python benchmarks/annotate_throughput.py corpus   DOCBIN N TEXTS.jsonl          # N texts, the DocBin's docs repeated
    python benchmarks/annotate_throughput.py pipe     PIPELINE TEXTS.jsonl RESULT.json ENTS.jsonl [--batch-size B]
                                         [--device D] [--max-seconds S]
    python benchmarks/annotate_throughput.py plan     RESULT.json --max-docs N --seconds S --multiple M   # prints a doc count
    python benchmarks/annotate_throughput.py shards   TEXTS.jsonl N SHARD_DOCS DIR  # the first N texts as JSONL shards
    python benchmarks/annotate_throughput.py report   WORK OUT_DIR                  # results.json + results.md

``pipe`` is the baseline: one process, the pipeline loaded as ``annotate`` loads it, ``nlp.pipe(texts,
batch_size=B)``, stopped after the batch that passes ``--max-seconds``. ``report`` reads the ``annotate``
outputs of every mode under WORK (``out_<mode>/part-*.spacy``), checks that each shard holds its input texts
in order, compares the entities with ``pipe``'s, and parses the timing line ``annotate`` prints.
"""

from __future__ import annotations

import argparse
import importlib
import json
import platform
import re
import sys
import time
from pathlib import Path


def ents_of(doc):
    return [[e.start_char, e.end_char, e.label_] for e in doc.ents]


def read_texts(path, n=None):
    texts = []
    with open(path, encoding="utf8") as f:
        for line in f:
            if n is not None and len(texts) >= n:
                break
            texts.append(json.loads(line)["text"])
    return texts


def cmd_corpus(args):
    import spacy
    from spacy.tokens import DocBin

    vocab = spacy.blank("en").vocab
    base = [doc.text for doc in DocBin().from_disk(args.docbin).get_docs(vocab)]
    base = [t for t in base if t.strip()]
    if not base:
        raise SystemExit(f"{args.docbin}: no non-empty docs")
    with open(args.out, "w", encoding="utf8") as f:
        for i in range(args.n):
            f.write(json.dumps({"id": i, "text": base[i % len(base)]}, ensure_ascii=False) + "\n")
    print(f"corpus: {args.n} docs ({len(base)} distinct sentences from {args.docbin}, repeated) -> {args.out}")


def environment(device):
    env = {"python": platform.python_version()}
    for name in ("torch", "transformers", "spacy", "ray", "pyarrow"):
        try:
            env[name] = __import__(name).__version__
        except Exception:  # not installed (ray on a machine without it)
            env[name] = None
    try:
        import torch

        if str(device).startswith("cuda") and torch.cuda.is_available():
            env["gpu"] = torch.cuda.get_device_name(0)
            env["gpus"] = torch.cuda.device_count()
    except Exception:
        pass
    import os

    env["cpus"] = os.cpu_count()
    return env


def cmd_pipe(args):
    t0 = time.perf_counter()
    from spacy_padellm.annotate import load_annotation_pipeline
    from spacy_padellm.devices import prefer_gpu_device

    device = prefer_gpu_device(args.device)
    nlp = load_annotation_pipeline(args.pipeline, device)
    ner = nlp.get_pipe("padellm_ner")
    t_loaded = time.perf_counter()
    texts = read_texts(args.texts)
    print(f"pipe: pipeline loaded on {device} in {t_loaded - t0:.1f} s; {len(texts)} docs, batch size "
          f"{args.batch_size}, max_batch_rows {ner.cfg.get('max_batch_rows')}", flush=True)
    out = open(args.ents, "w", encoding="utf8")
    start = time.perf_counter()
    first = None  # (seconds, docs) when the first batch came back
    n = 0
    last_print = start
    stopped_early = False
    for doc in nlp.pipe(texts, batch_size=args.batch_size):
        out.write(json.dumps(ents_of(doc)) + "\n")
        n += 1
        if n % args.batch_size == 0 or n == len(texts):
            now = time.perf_counter()
            if first is None:
                first = (now - start, n)
            if now - last_print >= 5 or n == len(texts):
                print(f"pipe: {n} docs in {now - start:.1f} s, {n / (now - start):.1f} docs/s", flush=True)
                last_print = now
            if args.max_seconds and now - start >= args.max_seconds and n < len(texts):
                stopped_early = True
                break
    seconds = time.perf_counter() - start
    out.close()
    steady = None
    if first is not None and n > first[1] and seconds > first[0]:
        steady = (n - first[1]) / (seconds - first[0])
    peak = None
    try:
        import torch

        if device.startswith("cuda"):
            peak = round(torch.cuda.max_memory_allocated() / 2**20)
    except Exception:
        pass
    result = {
        "mode": "pipe", "docs": n, "batch_size": args.batch_size, "device": device,
        "max_batch_rows": ner.cfg.get("max_batch_rows"), "load_seconds": round(t_loaded - t0, 2),
        "seconds": round(seconds, 2), "docs_per_s": round(n / seconds, 2) if seconds else None,
        "first_batch_seconds": round(first[0], 2) if first else None,
        "docs_per_s_after_first_batch": round(steady, 2) if steady else None,
        "stopped_at_max_seconds": stopped_early, "peak_gpu_mib": peak, "environment": environment(device),
    }
    Path(args.result).write_text(json.dumps(result, indent=2))
    print("pipe: " + json.dumps({k: result[k] for k in ("docs", "seconds", "docs_per_s",
                                                        "docs_per_s_after_first_batch")}), flush=True)


def cmd_plan(args):
    """Docs for each annotate mode: what the baseline does in --seconds, a multiple of --multiple, at most
    --max-docs and at most what the baseline annotated (so that every doc can be compared)."""
    r = json.loads(Path(args.result).read_text())
    rate = r.get("docs_per_s_after_first_batch") or r.get("docs_per_s") or 0
    n = min(args.max_docs, r["docs"], int(rate * args.seconds))
    n = max(args.multiple, n // args.multiple * args.multiple)
    print(min(n, r["docs"]) if r["docs"] else 0)


def cmd_shards(args):
    texts = read_texts(args.texts, args.n)
    out = Path(args.dir)
    out.mkdir(parents=True, exist_ok=True)
    for k, i in enumerate(range(0, len(texts), args.shard_docs)):
        with open(out / f"part-{k:05d}.jsonl", "w", encoding="utf8") as f:
            for j, text in enumerate(texts[i:i + args.shard_docs]):
                f.write(json.dumps({"id": i + j, "text": text}, ensure_ascii=False) + "\n")
    print(f"shards: {len(texts)} docs in {-(-len(texts) // args.shard_docs)} shard(s) of {args.shard_docs} -> {out}")


# "annotated 8192 docs in 40.1 s (204.3 docs/s; 230.2 docs/s after the first batch, 5.2 s of startup); ..."
SUMMARY = re.compile(r"annotated (\d+) docs in ([\d.]+) s \(([\d.]+) docs/s"
                     r"(?:; ([\d.]+) docs/s after the first batch, ([\d.]+) s of startup)?\)")

MODES = {  # mode -> what it is, in the table
    "pipe": "plain `nlp.pipe`, one process",
    "local": "`annotate`, one process",
    "ray1": "`annotate --ray`, 1 actor",
    "ray2": "`annotate --ray`, 2 actors",
}


def _read(path, default=None):
    try:
        return Path(path).read_text().strip()
    except OSError:
        return default


def check_mode(work: Path, mode: str, pipe_ents):
    """Outputs of one annotate mode against its input shards and the baseline's entities."""
    import spacy
    from spacy.tokens import DocBin

    importlib.import_module("spacy_padellm.annotate")  # registers doc._.padellm_error

    vocab = spacy.blank("en").vocab
    out_dir = work / f"out_{mode}"
    shards = sorted((work / "shards").glob("part-*.jsonl"))
    written = docs = text_mismatch = ents_mismatch = compared = failed = 0
    missing = []
    first_diff = None
    offset = 0
    for shard in shards:
        expected_texts = read_texts(shard)
        out = out_dir / (shard.stem + ".spacy")
        if not out.exists():
            missing.append(shard.stem)
            offset += len(expected_texts)
            continue
        written += 1
        got = list(DocBin().from_disk(out).get_docs(vocab))
        docs += len(got)
        if len(got) != len(expected_texts):
            text_mismatch += abs(len(got) - len(expected_texts))
        for i, (doc, text) in enumerate(zip(got, expected_texts)):
            if doc.text != text:
                text_mismatch += 1
            if doc._.padellm_error:
                failed += 1
            g = offset + i
            if g < len(pipe_ents):
                compared += 1
                if ents_of(doc) != pipe_ents[g]:
                    ents_mismatch += 1
                    if first_diff is None:
                        first_diff = {"doc": g, "text": text, "pipe": pipe_ents[g], mode: ents_of(doc)}
        offset += len(expected_texts)
    return {"shards_written": written, "shards_missing": len(missing), "docs_written": docs,
            "text_or_order_mismatches": text_mismatch, "failed_docs": failed, "docs_compared_with_pipe": compared,
            "ents_differ_from_pipe": ents_mismatch, "first_difference": first_diff}


def gpu_samples(path: Path):
    """Mean GPU utilization (%, over the samples taken while busy) and peak memory (MiB) from nvidia-smi."""
    try:
        rows = [[float(x) for x in line.split(",")] for line in path.read_text().splitlines() if line.strip()]
    except (OSError, ValueError):
        return None
    if not rows:
        return None
    busy = [u for u, _ in rows if u > 0]
    return {"samples": len(rows), "util_mean_busy": round(sum(busy) / len(busy), 1) if busy else 0.0,
            "util_mean": round(sum(u for u, _ in rows) / len(rows), 1), "mem_max_mib": max(m for _, m in rows)}


def cmd_report(args):
    work, out = Path(args.work), Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    pipe = json.loads(_read(work / "pipe.json", "null") or "null")
    pipe_ents = []
    if (work / "pipe_ents.jsonl").exists():
        pipe_ents = [json.loads(line) for line in (work / "pipe_ents.jsonl").read_text().splitlines()]
    settings = json.loads(_read(work / "settings.json", "{}"))
    rows = []
    if pipe:
        rows.append({"mode": "pipe", "setup": MODES["pipe"], "rc": int(_read(work / "pipe.rc", "0")),
                     "docs": pipe["docs"], "wall_s": float(_read(work / "pipe.wall", "nan")),
                     "startup_s": round(pipe["load_seconds"] + (pipe["first_batch_seconds"] or 0), 1),
                     "run_s": pipe["seconds"], "docs_per_s": pipe["docs_per_s"],
                     "docs_per_s_after_first_batch": pipe["docs_per_s_after_first_batch"]})
    elif (work / "pipe.rc").exists():
        rows.append({"mode": "pipe", "setup": MODES["pipe"], "rc": int(_read(work / "pipe.rc", "0")), "docs": 0})
    for mode in ("local", "ray1", "ray2"):
        rc = _read(work / f"{mode}.rc")
        if rc is None:
            continue
        extra = (_read(work / f"{mode}.args", "") or "").replace("--ray", "").strip()
        row = {"mode": mode, "setup": MODES[mode] + (f" (`{extra}`)" if extra else ""), "rc": int(rc),
               "wall_s": float(_read(work / f"{mode}.wall", "nan")), "args": extra}
        log = _read(work / f"{mode}.log", "")
        m = SUMMARY.search(log)
        if m:
            row.update(docs=int(m.group(1)), run_s=float(m.group(2)), docs_per_s=float(m.group(3)))
            if m.group(4):
                row.update(docs_per_s_after_first_batch=float(m.group(4)), startup_s=float(m.group(5)))
        ray_line = re.search(r"Ray: .*", log)
        if ray_line:
            row["ray"] = ray_line.group(0)
        row["check"] = check_mode(work, mode, pipe_ents)
        if not m:  # timed out or crashed: what finished shards say
            row["docs"] = row["check"]["docs_written"]
            row["note"] = "no summary line (timed out or failed); docs = docs in finished shards"
        rows.append(row)
    for row in rows:
        gpu = gpu_samples(work / f"{row['mode']}.gpu")
        if gpu:
            row["gpu"] = gpu
    result = {"settings": settings, "environment": (pipe or {}).get("environment"), "modes": rows}
    (out / "results.json").write_text(json.dumps(result, indent=2))

    env = result["environment"] or {}
    lines = [
        f"Measured {settings.get('date', '')} on {env.get('gpu') or settings.get('device', '?')}"
        f" ({env.get('cpus', '?')} CPUs); torch {env.get('torch')}, transformers {env.get('transformers')}, "
        f"spaCy {env.get('spacy')}, Ray {env.get('ray')}.",
        f"Pipeline: `{settings.get('model', '?')}` assembled with `max_batch_rows` {settings.get('max_batch_rows')}; "
        f"batch size {settings.get('batch_size')} everywhere; input: CoNLL-2003 test sentences repeated, "
        f"JSONL shards of {settings.get('shard_docs')} docs.",
        "",
        "| setup | docs | docs/s (after the first batch) | docs/s (whole run) | startup s | process wall s "
        "| GPU util % | GPU MiB |",
        "| --- | --- | --- | --- | --- | --- | --- | --- |",
    ]

    def fmt(x, spec=".1f"):
        return "–" if x is None else format(x, spec)

    for r in rows:
        flag = "" if r["rc"] == 0 else f" (exit {r['rc']})"
        lines.append(f"| {r['setup']}{flag} | {r.get('docs', 0)} | {fmt(r.get('docs_per_s_after_first_batch'))} | "
                     f"{fmt(r.get('docs_per_s'))} | {fmt(r.get('startup_s'))} | {fmt(r.get('wall_s'))} | "
                     f"{fmt((r.get('gpu') or {}).get('util_mean'), '.0f')} | "
                     f"{fmt((r.get('gpu') or {}).get('mem_max_mib'), ',.0f')} |")
    lines.append("")
    for r in rows:
        c = r.get("check")
        if c:
            lines.append(f"- {r['mode']}: {c['docs_written']} docs in {c['shards_written']} shard(s) "
                         f"({c['shards_missing']} missing), {c['text_or_order_mismatches']} text/order mismatches, "
                         f"{c['failed_docs']} failed docs; entities differ from `nlp.pipe` on "
                         f"{c['ents_differ_from_pipe']} of {c['docs_compared_with_pipe']} docs")
    (out / "results.md").write_text("\n".join(lines) + "\n")
    print("\n".join(lines))
    bad = [r["mode"] for r in rows if r["rc"] != 0 or (r.get("check") or {}).get("text_or_order_mismatches")]
    return 1 if bad else 0


def main(argv=None):
    p = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    sub = p.add_subparsers(dest="cmd", required=True)
    s = sub.add_parser("corpus")
    s.add_argument("docbin"), s.add_argument("n", type=int), s.add_argument("out")
    s = sub.add_parser("pipe")
    for a in ("pipeline", "texts", "result", "ents"):
        s.add_argument(a)
    s.add_argument("--batch-size", type=int, default=512)
    s.add_argument("--device", default=None)
    s.add_argument("--max-seconds", type=float, default=0)
    s = sub.add_parser("plan")
    s.add_argument("result")
    s.add_argument("--max-docs", type=int, required=True)
    s.add_argument("--seconds", type=float, required=True)
    s.add_argument("--multiple", type=int, default=1)
    s = sub.add_parser("shards")
    s.add_argument("texts"), s.add_argument("n", type=int), s.add_argument("shard_docs", type=int), s.add_argument("dir")
    s = sub.add_parser("report")
    s.add_argument("work"), s.add_argument("out")
    args = p.parse_args(argv)
    return {"corpus": cmd_corpus, "pipe": cmd_pipe, "plan": cmd_plan, "shards": cmd_shards,
            "report": cmd_report}[args.cmd](args) or 0


if __name__ == "__main__":
    sys.exit(main())
