"""``python benchmarks/gpu_time.py PIPELINE DATA.spacy --gpu-id 0``: where a pipeline's time goes on a GPU.

For the levers as the model records them, with them off, and for each ``--variant`` of the settings: ``nlp.pipe``
over every doc of DATA (a DocBin) after two warm-up runs, its wall time split into the time the host waits for the
device (a pass's result not ready) and the rest (host work); then one run under the torch profiler: the device's kernel
time in all, by kind of kernel (matrix products, attention, the LM head's softmax reductions, the fused element-wise
steps, cache writes, strided copies) and the kernels that took the most. The same for ``--latency-docs`` docs one at
a time (batch size 1), per sentence.
Prints a markdown table; ``--output`` writes the JSON, the table (.md) and a PNG (kernel time by kind) next to it.
On the CPU (``--device cpu``) it gives the times alone, without kernel figures.

    python benchmarks/gpu_time.py padellm:conll03-gemma3-270m corpus/conll03/conll03_test.spacy --gpu-id 0 \\
        --output metrics/gpu_time.json      # or: spacy project run gpu-time
"""

from __future__ import annotations

import argparse
import statistics
import sys
import time
from contextlib import contextmanager
from pathlib import Path
from typing import Any, Callable, Dict, List, Tuple

sys.path.insert(0, str(Path(__file__).resolve().parent))
from measure import forward_passes, load_gold, open_pipeline, select_device  # noqa: E402
from report import publish  # noqa: E402
from settings_sweep import variant_arg_except  # noqa: E402

VARIANTS = {"recorded": {}, "off": {"constrain_mentions": False, "dedupe_mentions": False}}
# kind of kernel -> what its name holds (the first kind that matches; the norms before the softmax reductions)
KINDS = [("attention", ("sdpa", "attention", "fmha")),
         ("query/key norm, RoPE, cache writes (one Triton kernel)", ("rope_cache",)),
         ("LM head (Triton kernels)", ("head_blocks", "head_combine", "choose_among")),
         ("matrix products", ("nvjet", "gemm", "cutlass", "sm90_xmma")),
         ("residual + norm", ("add_mean_mul_pow_rsqrt",)),
         ("query/key norm", ("mean_mul_pow_rsqrt",)),
         ("LM head softmax", ("logsumexp", "triton_red_fused__to_copy_max", "_exp_", "_log_", "_max_")),
         ("RoPE", ("add_cat_mul_neg",)),
         ("gated activation", ("gelu", "silu")),
         ("cache writes, gathers", ("index", "gather", "scatter")),
         ("strided copies", ("elementwise_kernel<128",))]


def kind_of(name: str) -> str:
    for kind, marks in KINDS:
        if any(mark in name for mark in marks):
            return kind
    return "other"


@contextmanager
def waits(clock: List[float]):
    """Adds to ``clock[0]`` the seconds the host spends waiting for a queued pass's result (``Pending.result``). A pass
    run eagerly (on the CPU, or not captured in a CUDA graph) has its result when launched: its time is host work."""
    from spacy_padellm.decoding import static_lm

    result = static_lm.Pending.result

    def timed(self):
        if self.values is not None:
            return self.values
        start = time.perf_counter()
        try:
            return result(self)
        finally:
            clock[0] += time.perf_counter() - start

    static_lm.Pending.result = timed
    try:
        yield
    finally:
        static_lm.Pending.result = result


def kernel_time(run: Callable[[], Any], top: int, cuda: bool) -> Dict[str, Any]:
    """The device's kernel time of ``run()`` (ms): in all, by kind, its ``top`` kernels, and the number of kernels
    (on the CPU, no kernels: zeros)."""
    import torch
    from torch.profiler import ProfilerActivity, profile

    if not cuda:
        run()
        return {"ms": 0.0, "kernels": 0, "by_kind_ms": {}, "top": []}
    with profile(activities=[ProfilerActivity.CUDA]) as prof:
        run()
        torch.cuda.synchronize()
    per: Dict[str, List[float]] = {}
    for event in prof.events():
        if event.device_type.name == "CUDA":
            entry = per.setdefault(event.name, [0.0, 0])
            entry[0] += event.device_time_total / 1e3
            entry[1] += 1
    kinds: Dict[str, float] = {}
    for name, (ms, _) in per.items():
        kinds[kind_of(name)] = kinds.get(kind_of(name), 0.0) + ms
    ranked = sorted(per.items(), key=lambda item: -item[1][0])[:top]
    return {"ms": round(sum(ms for ms, _ in per.values()), 2), "kernels": sum(n for _, n in per.values()),
            "by_kind_ms": {k: round(v, 2) for k, v in sorted(kinds.items(), key=lambda item: -item[1])},
            "top": [{"kernel": name[:120], "ms": round(ms, 2), "calls": n} for name, (ms, n) in ranked]}


def measure(nlp, ner, texts: List[str], changes: Dict[str, Any], base, args, cuda: bool) -> Dict[str, Any]:
    import torch

    sync = torch.cuda.synchronize if cuda else (lambda: None)
    ner.use_settings(base.replace(**changes))
    passes = lambda: forward_passes(ner.decoder, 0)  # noqa: E731
    pipe = lambda: list(nlp.pipe(texts, batch_size=args.batch_size))  # noqa: E731
    nlp(texts[0])
    pipe()
    pipe()
    runs = []
    for _ in range(args.rounds):
        clock = [0.0]
        before = passes()
        sync()
        start = time.perf_counter()
        with waits(clock):
            pipe()
        sync()
        wall = time.perf_counter() - start
        runs.append({"sentences_per_s": round(len(texts) / wall, 1), "wall_s": round(wall, 3),
                     "wait_s": round(clock[0], 3), "host_s": round(wall - clock[0], 3), "passes": passes() - before})
    best = max(runs, key=lambda r: r["sentences_per_s"])
    single = texts[args.warm_docs: args.warm_docs + args.latency_docs]
    for text in texts[: args.warm_docs]:
        nlp(text)
    times, waited, n_passes = [], [], []
    for text in single:
        clock = [0.0]
        before = passes()
        sync()
        start = time.perf_counter()
        with waits(clock):
            nlp(text)
        sync()
        times.append(1e3 * (time.perf_counter() - start))
        waited.append(1e3 * clock[0])
        n_passes.append(passes() - before)
    one = kernel_time(lambda: [nlp(text) for text in single], args.top, cuda)
    per_sentence = {"ms": round(one["ms"] / len(single), 3), "kernels": round(one["kernels"] / len(single), 1),
                    "by_kind_ms": {k: round(v / len(single), 3) for k, v in one["by_kind_ms"].items()}}
    return {"changes": changes, "pipe_runs": runs, "pipe": best, "pipe_kernels": kernel_time(pipe, args.top, cuda),
            "batch1": {"docs": len(single), "median_ms": round(statistics.median(times), 3),
                       "wait_mean_ms": round(statistics.mean(waited), 3),
                       "passes_mean": round(statistics.mean(n_passes), 3), "kernels_per_sentence": per_sentence,
                       "top": one["top"]}}


def table(report: Dict[str, Any]) -> str:
    lines = [f"Device: {report['device']}; {report['docs']} docs of `{report['data']}`, `{report['pipeline']}`.", "",
             "| levers | nlp.pipe sent/s | wall s | host waits s | kernel ms | kernels | batch-1 median ms | "
             "batch-1 kernel ms / sentence | kernels / sentence |",
             "| --- | --- | --- | --- | --- | --- | --- | --- | --- |"]
    for name, row in report["rows"].items():
        pipe, kern, one = row["pipe"], row["pipe_kernels"], row["batch1"]
        lines.append(f"| {name} | {pipe['sentences_per_s']:,.0f} | {pipe['wall_s']} | {pipe['wait_s']} | "
                     f"{kern['ms']:,.0f} | {kern['kernels']:,} | {one['median_ms']} | "
                     f"{one['kernels_per_sentence']['ms']} | {one['kernels_per_sentence']['kernels']} |")
    lines += ["", "| kind of kernel | " + " | ".join(f"{n}: nlp.pipe ms" for n in report["rows"]) + " | "
              + " | ".join(f"{n}: batch-1 ms / sentence" for n in report["rows"]) + " |",
              "| --- |" + " --- |" * (2 * len(report["rows"]))]
    for kind in _kinds(report["rows"], lambda row: row["pipe_kernels"]["by_kind_ms"]):
        cells = [str(row["pipe_kernels"]["by_kind_ms"].get(kind, 0.0)) for row in report["rows"].values()]
        cells += [str(row["batch1"]["kernels_per_sentence"]["by_kind_ms"].get(kind, 0.0))
                  for row in report["rows"].values()]
        lines.append(f"| {kind} | " + " | ".join(cells) + " |")
    return "\n".join(lines) + "\n"


def _kinds(rows: Dict[str, Any], get: Callable[[Dict[str, Any]], Dict[str, float]]) -> List[str]:
    """Every kind of kernel of the rows, each once, in the order of first appearance."""
    return list(dict.fromkeys(kind for row in rows.values() for kind in get(row)))


def plot(report: Dict[str, Any], path: Path) -> None:
    import matplotlib

    matplotlib.use("Agg")
    import matplotlib.pyplot as plt

    rows = report["rows"]
    fig, axes = plt.subplots(1, 2, figsize=(12, 4.5))
    panels = [("nlp.pipe over the test set: kernel ms", lambda r: r["pipe_kernels"]["by_kind_ms"]),
              ("batch 1: kernel ms per sentence", lambda r: r["batch1"]["kernels_per_sentence"]["by_kind_ms"])]
    for ax, (title, get) in zip(axes, panels):
        kinds = _kinds(rows, get)
        width = 0.8 / len(rows)
        for i, (name, row) in enumerate(rows.items()):
            values = [get(row).get(k, 0.0) for k in kinds]
            ax.barh([y + i * width for y in range(len(kinds))], values, height=width, label=f"levers {name}")
        ax.set_yticks([y + 0.4 - width / 2 for y in range(len(kinds))], kinds)
        ax.invert_yaxis()
        ax.set_title(title)
        ax.legend()
    fig.suptitle(f"{report['pipeline']} on {report['device']}")
    fig.tight_layout()
    fig.savefig(path, dpi=120)


def run(args) -> Dict[str, Any]:
    import torch

    device = select_device(args.device, args.gpu_id)
    nlp, ner, _ = open_pipeline(args.pipeline, None, None, device, None)
    engine = getattr(ner.decoder, "device", None)  # where the component runs (its own setting when none is given)
    cuda = engine is not None and torch.device(engine).type == "cuda"  # on the CPU: the times without kernel figures
    gold = load_gold(args.data, nlp.vocab, args.max_docs)
    texts = [doc.text for doc in gold]
    if len(texts) <= args.warm_docs or args.latency_docs < 1:
        raise SystemExit(f"{len(texts)} docs: batch 1 needs more than --warm-docs ({args.warm_docs}) and "
                         f"--latency-docs of at least 1")
    base = ner.settings
    variants = {**VARIANTS, **dict(args.variant)}
    rows = {name: measure(nlp, ner, texts, changes, base, args, cuda) for name, changes in variants.items()}
    return {"pipeline": args.pipeline, "data": args.data, "docs": len(texts),
            "device": torch.cuda.get_device_name(torch.device(engine)) if cuda else "cpu",
            "batch_size": args.batch_size,
            "command": " ".join(sys.argv), "rows": rows}


def main(argv=None) -> int:
    p = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    p.add_argument("pipeline", help="spaCy pipeline folder, PaDeLLM model folder or padellm:NAME")
    p.add_argument("data", help="docs (DocBin)")
    p.add_argument("--device", default=None,
                   help="cuda, cuda:1, cpu (default: --gpu-id, else the CPU, without kernel figures)")
    p.add_argument("--gpu-id", type=int, default=-1)
    p.add_argument("--max-docs", type=int, default=None)
    p.add_argument("--batch-size", type=int, default=1024, help="nlp.pipe batch size")
    p.add_argument("--rounds", type=int, default=2, help="timed nlp.pipe runs per variant (the fastest is kept)")
    p.add_argument("--warm-docs", type=int, default=100, help="docs run one at a time before the timed ones")
    p.add_argument("--latency-docs", type=int, default=300, help="docs timed one at a time")
    p.add_argument("--top", type=int, default=25, help="kernels listed by time")
    p.add_argument("--output", default=None, help="JSON path (.md and .png written next to it)")
    p.add_argument("--variant", action="append", default=[], type=variant_arg_except(*VARIANTS), metavar="NAME:KEY=VALUE,...",
                   help="also the settings of NAME, over the component's own (repeatable; e.g. "
                        "triton:attention_kernel=triton)")
    args = p.parse_args(argv)
    return publish(run(args), table, args.output, plot)


if __name__ == "__main__":
    sys.exit(main())
