"""Batch-1 latency of decoder variants, interleaved document by document (diagnosis, GPU).

    python scripts/gpu_variants.py PIPELINE DATA.spacy OUT.json --variants '[{}, {"span_drafts": 6}]' \
        [--latency-docs 300] [--warmup 100]

A variant is a dict of TreeDecoder attributes (span_source, span_drafts, span_draft_tokens, count_drafts, ...) set
on the component's decoder. Warm-up as the benchmark does it (nlp.pipe at 256 and 2048 docs per call, then
``--warmup`` docs from the end of the data under each variant). Then each of the first ``--latency-docs`` docs is
decoded once under every variant, in an order rotated from doc to doc, so that a machine's drift touches all
variants alike. Per variant: median, p90 and mean ms per sentence, passes per sentence, the share of sentences
decoded in one pass, the real tokens of the first pass, and how many docs got other entities than the first
variant's (drafts do not change greedy output; bf16 near-ties in wider passes might).
"""

import json
import statistics
import time

import torch

from gpu_diag import Variants, arguments, load, warm_pipes
from spacy_padellm import static_lm

p = arguments(__doc__)
p.add_argument("--latency-docs", type=int, default=300)
p.add_argument("--warmup", type=int, default=100)
p.add_argument("--variants", default="[{}]", help="JSON list of decoder settings")
args = p.parse_args()

nlp, ner, texts, cuda, sync = load(args)
dec = ner.decoder
name = torch.cuda.get_device_name() if cuda else "cpu"
switch = Variants(dec, json.loads(args.variants))
variants = switch.variants
print("device", name, "docs", len(texts), "variants", variants, flush=True)

first_pass = []  # real tokens of each launched pass, per document call (reset per call)
launch = static_lm.StaticLM.launch


def counting_launch(self, *a, **k):
    pending = launch(self, *a, **k)
    first_pass.append(self.last_real_tokens)
    return pending


static_lm.StaticLM.launch = counting_launch


t0 = time.perf_counter()
warm_pipes(nlp, texts)
for variant in variants:
    switch.use(variant)
    for text in texts[-args.warmup:]:
        nlp(text)
print(f"warm-up {time.perf_counter() - t0:.1f} s", flush=True)

n = min(args.latency_docs, len(texts))
rows = [{"ms": [], "passes": [], "pass1_tokens": [], "differs": 0} for _ in variants]
for i, text in enumerate(texts[:n]):
    order = [(i + j) % len(variants) for j in range(len(variants))]
    ents = {}
    for v in order:
        switch.use(variants[v])
        first_pass.clear()
        passes0 = dec.stats.forward_passes
        sync()
        t = time.perf_counter()
        doc = nlp(text)
        ms = (time.perf_counter() - t) * 1000
        rows[v]["ms"].append(ms)
        rows[v]["passes"].append(dec.stats.forward_passes - passes0)
        rows[v]["pass1_tokens"].append(first_pass[0] if first_pass else 0)
        ents[v] = [(e.start_char, e.end_char, e.label_) for e in doc.ents]
    for v in range(1, len(variants)):
        rows[v]["differs"] += int(ents[v] != ents[0])

report = {"device": name, "torch": torch.__version__, "docs": n, "warmup": args.warmup, "variants": []}
print(f"{'variant':60} {'median':>7} {'p90':>7} {'mean':>7} {'passes':>7} {'1-pass':>7} {'pass1 tok':>9} {'differs':>7}")
for variant, r in zip(variants, rows):
    ms = sorted(r["ms"])
    summary = {
        "settings": switch.settings(variant),
        "median_ms": round(statistics.median(ms), 3),
        "p90_ms": round(ms[min(len(ms) - 1, int(0.9 * len(ms)))], 3),
        "mean_ms": round(statistics.fmean(ms), 3),
        "passes_per_sentence": round(statistics.fmean(r["passes"]), 3),
        "one_pass_share": round(sum(p == 1 for p in r["passes"]) / n, 3),
        "pass1_tokens_mean": round(statistics.fmean(r["pass1_tokens"]), 1),
        "docs_with_other_entities": r["differs"],
        "ms": [round(x, 3) for x in r["ms"]],
        "passes": r["passes"],
    }
    report["variants"].append(summary)
    print(f"{json.dumps(variant):60} {summary['median_ms']:7.2f} {summary['p90_ms']:7.2f} {summary['mean_ms']:7.2f} "
          f"{summary['passes_per_sentence']:7.2f} {summary['one_pass_share']:7.2f} {summary['pass1_tokens_mean']:9.0f} "
          f"{summary['docs_with_other_entities']:7d}", flush=True)
with open(args.out, "w") as f:
    json.dump(report, f, indent=1)
