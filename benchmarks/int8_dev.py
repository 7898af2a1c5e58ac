"""``python benchmarks/int8_dev.py``: int8 variants of the shipped model scored on CoNLL03 dev, to choose one.

Calibrates SmoothQuant's activation ranges by decoding ``--calib`` CoNLL03 training sentences (every
``--stride``-th) in float32, then decodes the first ``--dev`` dev sentences with each variant: fp32, int8 (as
``quantize`` "int8" without smoothing), int8 with ``wo`` in float32, and SmoothQuant int8 at each ``--alphas``.
Prints span F1/P/R and the share of sentences whose entities equal the first variant's; ``--output`` writes them,
and the entities, as JSON. ``--ranges`` keeps the calibration between runs.
"""

from __future__ import annotations

import argparse
import dataclasses
import json
import sys
import time
from pathlib import Path

import torch

sys.path.insert(0, str(Path(__file__).resolve().parent))
from cpu_speed import ROOT, load_conll03, span_f1  # noqa: E402
from instrument import using  # noqa: E402

CONLL = ROOT.parent / "shared" / "data" / "padellm" / "conll03"


def calibrate(nlp, ner, decoder, texts):
    """Per layer (wqkv, wgu) input ranges while ``decoder`` (fp32, swapped into ``ner``) decodes ``texts``."""
    from spacy_padellm.decoding.calibration import recording_decoder

    with using(ner, decoder), recording_decoder(decoder) as recs:
        list(nlp.pipe(texts))
        return [(a.max, b.max) for a, b in recs]


def set_layers(decoder, layers):
    decoder.lm.layers = layers
    for lm in decoder._lms:
        lm.layers = layers


def decode(nlp, ner, decoder, texts):
    with using(ner, decoder):
        docs = list(nlp.pipe(texts))
    for lm in decoder._lms:
        lm.cache.release()
    return docs


def main() -> None:
    p = argparse.ArgumentParser(prog="python benchmarks/int8_dev.py", description=__doc__.splitlines()[0])
    p.add_argument("--data", type=Path, default=CONLL,
                   help=f"folder of conll03_train.jsonl and conll03_dev.jsonl, PaDeLLM JSONL (default {CONLL})")
    p.add_argument("--calib", type=int, default=200, help="training sentences the ranges are measured on")
    p.add_argument("--stride", type=int, default=70, help="every N-th training sentence")
    p.add_argument("--dev", type=int, default=250, help="the first N dev sentences")
    p.add_argument("--alphas", default="0.5,0.8", help="SmoothQuant migration strengths, comma-separated")
    p.add_argument("--variants", default="fp32,int8,int8-wo32,smooth", help="comma-separated; the first is the "
                   "reference of the 'same entities' share")
    p.add_argument("--threads", type=int, default=1)
    p.add_argument("--ranges", type=Path, default=Path("metrics/int8_calibration.pt"),
                   help="the measured ranges, kept between runs (measured again when missing)")
    p.add_argument("--output", type=Path, default=None, help="JSON of the scores and entities")
    args = p.parse_args()
    torch.set_num_threads(args.threads)
    import spacy

    from spacy_padellm.decoding.factory import build_decoder
    from spacy_padellm.decoding.quantize import Int8Weight
    from spacy_padellm.decoding.smoothing import smooth_layer

    nlp = spacy.blank("en")
    ner = nlp.add_pipe("padellm_ner", config={"model": "padellm:conll03-smollm2-135m", "device": "cpu"})
    weights, _, engine = ner._ensure_loaded()
    decoder = build_decoder(weights, engine.encoder, ner.decode_settings, "padellm")
    base = decoder.lm.layers
    if args.ranges.exists():
        ranges = torch.load(args.ranges)
    else:
        train = load_conll03(args.data / "conll03_train.jsonl", args.calib * args.stride)[:: args.stride]
        start = time.perf_counter()
        ranges = calibrate(nlp, ner, decoder, [t for t, _ in train])
        args.ranges.parent.mkdir(parents=True, exist_ok=True)
        torch.save(ranges, args.ranges)
        print(f"calibrated on {len(train)} train sentences in {time.perf_counter() - start:.0f}s", flush=True)
    top = [float(a.max() / a.median()) for a, _ in ranges]
    print("max/median of wqkv input ranges per layer:", [round(t) for t in top], flush=True)

    def int8(layers, names=("wqkv", "wo", "wgu")):
        return [dataclasses.replace(l, **{n: Int8Weight(getattr(l, n)) for n in names}) for l in layers]

    variants = {}
    for name in args.variants.split(","):
        if name == "fp32":
            variants[name] = lambda: base
        elif name == "int8":
            variants[name] = lambda: int8(base)
        elif name == "int8-wo32":
            variants[name] = lambda: int8(base, ("wqkv", "wgu"))
        elif name == "smooth":
            for a in map(float, args.alphas.split(",")):
                variants[f"smooth-{a}"] = lambda a=a: int8([smooth_layer(l, r1, r2, a)
                                                           for l, (r1, r2) in zip(base, ranges)])
    gold = load_conll03(args.data / "conll03_dev.jsonl", args.dev)
    texts = [t for t, _ in gold]
    out, ref = {}, None
    for name, make in variants.items():
        set_layers(decoder, make())
        start = time.perf_counter()
        docs = decode(nlp, ner, decoder, texts)
        ents = [sorted((e.start_char, e.end_char, e.label_) for e in d.ents) for d in docs]
        ref = ents if ref is None else ref
        row = dict(span_f1(docs, gold), same_as_first=round(sum(a == b for a, b in zip(ents, ref)) / len(ents), 4),
                   seconds=round(time.perf_counter() - start, 1))
        out[name] = dict(row, entities=ents)
        print(name, row, flush=True)
        if args.output:
            args.output.write_text(json.dumps({"dev": args.dev, "calib": args.calib, "results": out}) + "\n")


if __name__ == "__main__":
    main()
