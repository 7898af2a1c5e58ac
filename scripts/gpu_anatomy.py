"""Where a sentence's time goes at batch size 1, and what batches in flight do for nlp.pipe (diagnosis, GPU).

    python scripts/gpu_anatomy.py PIPELINE DATA.spacy OUT.json [--latency-docs 150] [--warmup 100]

1. Warm-up as the benchmark does it (nlp.pipe at 256 and 2048, then batch-1 docs from the end of the data).
2. Latency anatomy: the first ``--latency-docs`` docs one at a time, with wall-clock timers around the
   steps of the data's path (spaCy's tokenizer, prompt encoding, span candidates, count drafts, pass layout
   and launch, the wait for the device, reading counts and mentions, alignment); per step the median and
   mean ms per sentence. "wait" is the host blocked on the device (about the GPU time of the passes).
3. nlp.pipe over all docs at 256 and 2048 docs per call with 1 batch in flight and the decoder's own number
   (twice each), with the host's total wait for the device: with several in flight, the device runs one batch's
   pass while the host lays out the others', so the wait shrinks.
"""

import json
import statistics
import time
from collections import defaultdict

import torch

from gpu_diag import Timers, Variants, arguments, load, warm_pipes
from spacy_padellm.decoding import static_lm, tree as tree_decoder
from spacy_padellm.text import protocol

p = arguments(__doc__)
p.add_argument("--latency-docs", type=int, default=150)
p.add_argument("--warmup", type=int, default=100)
p.add_argument("--rows", default="256", help="docs per batch (max_batch_docs) for the throughput part, comma-separated")
p.add_argument("--variants", default="[{}]", help="JSON list of decoder settings for the latency part")
p.add_argument("--no-throughput", action="store_true", help="leave out part 3 (nlp.pipe)")
args = p.parse_args()

nlp, ner, texts, cuda, sync = load(args)
name = torch.cuda.get_device_name() if cuda else "cpu"
dec = ner.decoder
print("device", name, "docs", len(texts), "inflight", dec.inflight_batches, flush=True)

timers = Timers(active=False)
acc = timers.acc
timed = timers.wrap

timed(nlp, "make_doc", "spacy tokenizer")
timed(protocol.PromptEncoder, "prefixes", "encode prefixes")
timed(tree_decoder.TreeDecoder, "_span_candidates", "span candidates")
timed(tree_decoder.TreeDecoder, "_feed_count_drafts", "feed count drafts")
timed(tree_decoder.TreeDecoder, "_feed_count_draft", "feed count drafts")  # before session 7: one count at a time
timed(tree_decoder.TreeBatch, "launch", "layout + launch")
timed(static_lm.StaticLM, "launch", "launch (staging, replay)")
timed(static_lm._Graph, "replay", "graph replay (host side)")
timed(static_lm.Pending, "result", "wait")
timed(tree_decoder.TreeDecoder, "_advance_count", "read counts")
timed(tree_decoder.TreeDecoder, "_advance_mention", "read mentions")
timed(tree_decoder.TreeDecoder, "_feed_mentions", "feed mentions + drafts")
timed(tree_decoder.TreeDecoder, "decode", "decode (all)")
timed(type(ner), "set_annotations", "component (all)")

report = {"device": name, "torch": torch.__version__, "docs": len(texts)}
t0 = time.perf_counter()
warm_pipes(nlp, texts)
for text in texts[-args.warmup:]:
    nlp(text)
print(f"warm-up {time.perf_counter() - t0:.1f} s", flush=True)

# 2. latency anatomy, per variant of the decoder's settings (the first is the component's own)
variants = Variants(dec, json.loads(args.variants))
report["variants"] = []
n = min(args.latency_docs, len(texts))
for variant in variants.variants:
    variants.use(variant)
    for text in texts[-args.warmup:]:
        nlp(text)
    rows = defaultdict(list)
    passes0 = dec.stats.forward_passes
    for text in texts[:n]:
        acc.clear()
        timers.active = True
        sync()
        t0 = time.perf_counter()
        nlp(text)
        total = time.perf_counter() - t0
        timers.active = False
        rows["total"].append(total * 1000)
        for key, value in acc.items():
            rows[key].append(value * 1000)
        for key in list(rows):
            if key not in acc and key != "total":
                rows[key].append(0.0)
    anatomy = {}
    for key, values in rows.items():
        values = values + [0.0] * (n - len(values))
        anatomy[key] = {"median_ms": round(statistics.median(values), 3), "mean_ms": round(statistics.fmean(values), 3)}
    zero = {"median_ms": 0.0, "mean_ms": 0.0}
    anatomy = {k: anatomy.get(k, zero) for k in list(anatomy) + [k for k in (
        "encode prefixes", "span candidates", "feed count drafts", "layout + launch", "launch (staging, replay)", "wait",
        "read counts", "read mentions", "feed mentions + drafts", "decode (all)", "component (all)") if k not in anatomy]}
    derived = {
        "launch layout (TreeBatch, host)": anatomy["layout + launch"]["mean_ms"] - anatomy["launch (staging, replay)"]["mean_ms"],
        "decoder other (host)": anatomy["decode (all)"]["mean_ms"] - sum(anatomy[k]["mean_ms"] for k in (
            "encode prefixes", "span candidates", "feed count drafts", "layout + launch", "wait", "read counts",
            "read mentions", "feed mentions + drafts")),
        "component outside decode": anatomy["component (all)"]["mean_ms"] - anatomy["decode (all)"]["mean_ms"],
        "outside the component": anatomy["total"]["mean_ms"] - anatomy["component (all)"]["mean_ms"],
    }
    passes = (dec.stats.forward_passes - passes0) / n
    report["variants"].append({"settings": variants.settings(variant), "docs": n, "passes_per_sentence": round(passes, 3),
                             "steps": anatomy, "derived_mean_ms": {k: round(v, 3) for k, v in derived.items()}})
    print(f"latency anatomy over {n} docs (ms per sentence), {variant or 'defaults'}, {passes:.2f} passes/sentence")
    for key, v in sorted(anatomy.items(), key=lambda kv: -kv[1]["mean_ms"]):
        print(f"  {key:32} median {v['median_ms']:7.3f}  mean {v['mean_ms']:7.3f}")
    for key, v in derived.items():
        print(f"  {key:32} mean {v:7.3f}")

# 3. throughput with 1 batch in flight and the decoder's own number, and with more docs per batch (``--rows``;
# each setting's first run is a warm-up when it is new: CUDA graphs of new shapes)
report["throughput"] = []
rows0 = dec.max_batch_docs
inflight0 = max(2, dec.inflight_batches)  # the decoder's own setting (4 on CUDA since session 7)
for rows in [] if args.no_throughput else [int(r) for r in args.rows.split(",")]:
    dec.max_batch_docs = rows
    if rows != rows0:
        list(nlp.pipe(texts, batch_size=2048))
    for bs in (256, 2048):
        for inflight in (1, inflight0, 1, inflight0):
            dec.inflight_batches = inflight
            acc.clear()
            timers.active = True
            sync()
            t0 = time.perf_counter()
            list(nlp.pipe(texts, batch_size=bs))
            sync()
            dt = time.perf_counter() - t0
            timers.active = False
            row = {"rows": rows, "batch_size": bs, "inflight": inflight, "seconds": round(dt, 3),
                   "sentences_per_second": round(len(texts) / dt, 1), "wait_s": round(acc["wait"], 3),
                   "captures": sum(lm.captures for lm in dec._lms)}
            report["throughput"].append(row)
            print(json.dumps(row), flush=True)
dec.max_batch_docs = rows0
variants.use({})
dec.inflight_batches = inflight0
report["peak_gpu_memory_mb"] = round(torch.cuda.max_memory_allocated() / 2**20) if cuda else None
json.dump(report, open(args.out, "w"), indent=1)
print("peak GPU MB", report["peak_gpu_memory_mb"])
