"""Where the tree engine's time goes on the GPU: host layout, input copies, CUDA-graph captures, replays.

    python scripts/gpu_profile_engine.py DATA.spacy OUT.json [--docs 1024] [--latency-docs 100] [--config JSON]

Loads the shipped default model (``padellm:conll03-smollm2-135m``) on CUDA and times, with a device
synchronisation around each part (so the parts add up; this costs a little speed):

* ``nlp.pipe`` over ``--docs`` test sentences at each ``--batch-sizes``, twice (cold: graphs are
  captured on first use of a shape bucket; warm: every bucket already captured), and once with
  CUDA graphs off (eager);
* ``nlp(text)`` one sentence at a time (batch size 1) over ``--latency-docs`` sentences, after the pipe
  runs (so its buckets are mostly warm);

and splits each into: time in ``TreeBatch.run`` before the step (host layout), ``StaticLM.step`` split
into graph capture, input copies + replay + output copy, and everything else (component, tokenizer,
alignment). It also counts passes, captures and distinct buckets, and sums the real tokens against
the padded bucket sizes (the compute wasted on padding). A diagnostic, not a benchmark: the numbers
in docs/ come from ``python -m spacy_padellm benchmark``.
"""

from __future__ import annotations

import argparse
import json
import statistics
import sys
import time
from collections import Counter, defaultdict
from pathlib import Path

import numpy as np
import torch


def main(argv=None) -> int:
    p = argparse.ArgumentParser()
    p.add_argument("data")
    p.add_argument("output", type=Path)
    p.add_argument("--model", default="padellm:conll03-smollm2-135m")
    p.add_argument("--docs", type=int, default=1024)
    p.add_argument("--latency-docs", type=int, default=100)
    p.add_argument("--batch-sizes", default="256,1024")
    p.add_argument("--config", default="{}", help="extra padellm_ner config (JSON)")
    p.add_argument("--eager", action="store_true", help="also run nlp.pipe with CUDA graphs off")
    p.add_argument("--device", default="cuda", help="cuda (the point), or cpu for a smoke test")
    p.add_argument("--no-profile", action="store_true")
    args = p.parse_args(argv)

    from spacy.tokens import DocBin

    from spacy_padellm.decoding import static_lm, tree as tree_decoder
    from spacy_padellm.cli.evaluate import load_pipeline

    nlp = load_pipeline(args.model, config={"device": args.device, **json.loads(args.config)})
    ner = nlp.get_pipe("padellm_ner")
    docs = list(DocBin().from_disk(args.data).get_docs(nlp.vocab))[: args.docs]
    texts = [d.text for d in docs]

    acc = defaultdict(float)
    cnt = Counter()
    buckets = Counter()
    sync = torch.cuda.synchronize if args.device.startswith("cuda") else (lambda: None)

    orig_step = static_lm.StaticLM.run
    orig_graph_init = static_lm._Graph.__init__
    orig_run = tree_decoder.TreeBatch.run

    def graph_init(self, *a, **k):
        sync()
        t = time.perf_counter()
        orig_graph_init(self, *a, **k)
        sync()
        acc["capture_s"] += time.perf_counter() - t
        cnt["captures"] += 1

    def step(self, tokens, positions, slots, mask, outputs, *rest, **kw):
        sync()
        t = time.perf_counter()
        cap0 = acc["capture_s"]
        out = orig_step(self, tokens, positions, slots, mask, outputs, *rest, **kw)
        acc["step_s"] += time.perf_counter() - t - (acc["capture_s"] - cap0)
        cnt["passes"] += 1
        shape = tuple(int(x) for x in getattr(self, "last_shape", ()) or ())
        buckets[shape] += 1
        cnt["real_tokens"] += int(getattr(self, "last_real_tokens", 0))
        cnt["bucket_tokens"] += int(getattr(self, "last_bucket_tokens", 0))
        cnt["packed_passes"] += int(bool(shape and shape[0]))
        return out

    def run(self):
        t = time.perf_counter()
        s0, c0 = acc["step_s"], acc["capture_s"]
        out = orig_run(self)
        acc["run_s"] += time.perf_counter() - t
        acc["run_host_s"] += (time.perf_counter() - t) - (acc["step_s"] - s0) - (acc["capture_s"] - c0)
        return out

    static_lm._Graph.__init__ = graph_init
    static_lm.StaticLM.run = step
    tree_decoder.TreeBatch.run = run

    def measure(fn):
        acc.clear(), cnt.clear(), buckets.clear()
        sync()
        t = time.perf_counter()
        fn()
        sync()
        wall = time.perf_counter() - t
        row = {"wall_s": round(wall, 4), **{k: round(v, 4) for k, v in acc.items()}, **dict(cnt),
               "distinct_buckets": len(buckets)}
        row["other_s"] = round(wall - acc["run_s"], 4)
        if cnt["bucket_tokens"]:
            row["padding_factor"] = round(cnt["bucket_tokens"] / max(1, cnt["real_tokens"]), 2)
        return row

    report = {"device": torch.cuda.get_device_name() if args.device.startswith("cuda") else "cpu", "torch": torch.__version__, "docs": len(texts),
              "config": json.loads(args.config), "pipe": {}, "latency": {}}
    lm = getattr(ner.decoder, "lm", None)
    for bs in [int(b) for b in args.batch_sizes.split(",")]:
        for phase in ("cold", "warm"):
            row = measure(lambda: list(nlp.pipe(texts, batch_size=bs)))
            row["sentences_per_second"] = round(len(texts) / row["wall_s"], 1)
            report["pipe"][f"{bs}_{phase}"] = row
            print(f"pipe bs {bs} {phase}: {json.dumps(row)}", flush=True)
    if args.eager and lm is not None:
        lm.use_graphs = False
        bs = int(args.batch_sizes.split(",")[-1])
        row = measure(lambda: list(nlp.pipe(texts, batch_size=bs)))
        row["sentences_per_second"] = round(len(texts) / row["wall_s"], 1)
        report["pipe"][f"{bs}_eager"] = row
        print(f"pipe bs {bs} eager: {json.dumps(row)}", flush=True)
        lm.use_graphs = True

    rows = []
    for text in texts[: args.latency_docs]:
        rows.append(measure(lambda: nlp(text)))
    keys = sorted({k for r in rows for k in r if isinstance(r[k], (int, float))})
    lat = {k: {"median": round(statistics.median([r.get(k, 0) for r in rows]), 5),
               "mean": round(statistics.fmean([r.get(k, 0) for r in rows]), 5)} for k in keys}
    report["latency"] = lat
    print("batch 1 (median, mean):", json.dumps(lat), flush=True)

    if not args.no_profile:  # a kernel-level look at a few warm batch-1 sentences
        from torch.profiler import ProfilerActivity, profile

        cuda = args.device.startswith("cuda")
        acts = [ProfilerActivity.CPU] + ([ProfilerActivity.CUDA] if cuda else [])
        with profile(activities=acts) as prof:
            for text in texts[:10]:
                nlp(text)
        table = prof.key_averages().table(sort_by="self_cuda_time_total" if cuda else "self_cpu_time_total",
                                          row_limit=25)
        print(table)
        report["profile_batch1_top"] = table
    args.output.parent.mkdir(parents=True, exist_ok=True)
    args.output.write_text(json.dumps(report, indent=1))
    return 0


if __name__ == "__main__":
    sys.exit(main())
