"""Where nlp.pipe's host time goes on the GPU machine (diagnosis for issue #5's throughput target).

    python scripts/gpu_pipe_profile.py PIPELINE DATA.spacy OUT.json [--batch-size 2048] [--runs 3] [--top 60]

1. Warm-up: nlp.pipe over all docs twice (every CUDA-graph shape of the timed runs is captured).
2. ``--runs`` timed runs of nlp.pipe over all docs, each with its wall time, the host's wait for the
   device (``Pending.result``), the time inside ``TreeDecoder.decode`` and in spaCy's tokenizer, and the
   CUDA graphs captured during the run (0 when the warm-up covered every shape).
3. One run under cProfile: the functions with the most own time and the most cumulative time.
"""

import cProfile
import json
import pstats
import sys
import time
from pathlib import Path

import torch

from gpu_diag import Timers, arguments, load
from spacy_padellm.decoding import static_lm, tree as tree_decoder

p = arguments(__doc__)
p.add_argument("--batch-size", type=int, default=2048)
p.add_argument("--runs", type=int, default=3)
p.add_argument("--top", type=int, default=60, help="0: no cProfile run")
p.add_argument("--decoder", default="{}", help="JSON: decoder attributes to set (e.g. max_batch_docs)")
args = p.parse_args()

nlp, ner, texts, cuda, sync = load(args)
dec = ner.decoder
for key, value in json.loads(args.decoder).items():
    setattr(dec, key, value)
timers = Timers()
acc = timers.acc
timed = timers.wrap

timed(nlp, "make_doc", "spacy tokenizer")
timed(static_lm.Pending, "result", "wait")
timed(tree_decoder.TreeDecoder, "decode", "decode")
timed(type(ner), "set_annotations", "component")

report = {"device": torch.cuda.get_device_name() if cuda else "cpu", "torch": torch.__version__, "docs": len(texts),
          "batch_size": args.batch_size, "decoder": {k: getattr(dec, k) for k in (
              "max_batch_docs", "inflight_batches", "draft_max_docs", "count_drafts", "span_drafts")}}
t0 = time.perf_counter()
for _ in range(2):
    list(nlp.pipe(texts, batch_size=args.batch_size))
report["warmup_s"] = round(time.perf_counter() - t0, 2)
print(f"warm-up {report['warmup_s']} s", flush=True)


def captures():
    return sum(lm.captures for lm in dec._lms)


report["runs"] = []
for _ in range(args.runs):
    acc.clear()
    c0, p0 = captures(), dec.stats.forward_passes
    sync()
    t0 = time.perf_counter()
    list(nlp.pipe(texts, batch_size=args.batch_size))
    sync()
    dt = time.perf_counter() - t0
    row = {"seconds": round(dt, 3), "sentences_per_second": round(len(texts) / dt, 1),
           "captures": captures() - c0, "passes": dec.stats.forward_passes - p0,
           **{f"{k}_s": round(v, 3) for k, v in acc.items()}}
    row["host_ms_per_sentence"] = round(1000 * (dt - acc["wait"]) / len(texts), 4)
    report["runs"].append(row)
    print(json.dumps(row), flush=True)

Path(args.out).parent.mkdir(parents=True, exist_ok=True)
if not args.top:  # timings only
    Path(args.out).write_text(json.dumps(report, indent=1))
    sys.exit(0)
prof = cProfile.Profile()
prof.enable()
list(nlp.pipe(texts, batch_size=args.batch_size))
prof.disable()
stats = pstats.Stats(prof)
rows = []
for (file, line, name), (cc, nc, tt, ct, _) in stats.stats.items():
    rows.append({"function": f"{Path(file).name}:{line}({name})", "calls": nc, "tottime_s": round(tt, 4),
                 "cumtime_s": round(ct, 4)})
report["profile_tottime"] = sorted(rows, key=lambda r: -r["tottime_s"])[: args.top]
report["profile_cumtime"] = sorted(rows, key=lambda r: -r["cumtime_s"])[: args.top]
for key in ("profile_tottime", "profile_cumtime"):
    print(f"\n{key}:")
    for r in report[key]:
        print(f"  {r['tottime_s']:8.3f} {r['cumtime_s']:8.3f} {r['calls']:8d}  {r['function']}")
Path(args.out).write_text(json.dumps(report, indent=1))
sys.exit(0)
