"""CUDA-graph captures, cache reallocations and time per phase of a benchmark-like sequence (diagnosis).

    python scripts/gpu_phases.py PIPELINE DATA.spacy OUT.json [--config JSON]
"""

import json
import sys
import time

import spacy
import torch
from spacy.tokens import DocBin

import spacy_padellm  # noqa: F401

pipeline, data, out = sys.argv[1:4]
config = json.loads(sys.argv[5]) if len(sys.argv) > 5 and sys.argv[4] == "--config" else {}
nlp = spacy.blank("en")
nlp.add_pipe("padellm_ner", config={"model": pipeline, "device": "cuda", **config})
ner = nlp.get_pipe("padellm_ner")
texts = [d.text for d in DocBin().from_disk(data).get_docs(nlp.vocab)]
lm = ner.decoder.lm
forgets = [0]
orig = lm._forget_graphs


def counted():
    forgets[0] += 1
    orig()


lm._forget_graphs = counted
rows = []


def phase(name, fn, n):
    c0 = lm.captures
    torch.cuda.synchronize()
    t0 = time.perf_counter()
    fn()
    torch.cuda.synchronize()
    dt = time.perf_counter() - t0
    row = {"phase": name, "seconds": round(dt, 3), "docs_per_s": round(n / dt, 1), "captures": lm.captures - c0,
           "forgets_total": forgets[0], "cache": [lm.rows, lm.cols], "graphs": len(lm._graphs),
           "passes": lm.passes, "packed": lm.packed_passes}
    rows.append(row)
    print(json.dumps(row), flush=True)


phase("warm pipe 256", lambda: list(nlp.pipe(texts, batch_size=256)), len(texts))
phase("warm pipe 2048", lambda: list(nlp.pipe(texts, batch_size=2048)), len(texts))
phase("warm batch-1 x100 (end)", lambda: [nlp(t) for t in texts[-100:]], 100)
phase("latency batch-1 x150", lambda: [nlp(t) for t in texts[:150]], 150)
phase("pipe 256", lambda: list(nlp.pipe(texts, batch_size=256)), len(texts))
phase("pipe 2048", lambda: list(nlp.pipe(texts, batch_size=2048)), len(texts))
phase("latency batch-1 x150 again", lambda: [nlp(t) for t in texts[:150]], 150)
phase("pipe 256 again", lambda: list(nlp.pipe(texts, batch_size=256)), len(texts))
json.dump(rows, open(out, "w"), indent=1)
