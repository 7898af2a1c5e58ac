"""``python -m spacy_padellm convert INPUT OUTPUT_DIR``: corpora to DocBins and PaDeLLM examples."""

from __future__ import annotations

import json
from pathlib import Path

from ..training import convert


def add_parser(sub) -> None:
    p = sub.add_parser("convert", help="convert CoNLL/IOB, PaDeLLM JSONL or DocBin files",
                       description="Write OUTPUT_DIR/{stem}.spacy, {stem}.padellm.jsonl and {stem}.labels.json.")
    p.add_argument("input", nargs="+", help="input file(s)")
    p.add_argument("output_dir")
    p.add_argument("--format", dest="fmt", choices=["conll", "padellm", "spacy"], default=None,
                   help="input format (default: from the extension)")
    p.add_argument("--lang", default="en", help="spaCy language code (zh: character segmentation)")
    p.add_argument("--labels", default=None, help="comma-separated label set (default: labels in the file)")
    p.add_argument("--spans-key", default=None, help="write spans to doc.spans[KEY] (nested data)")
    p.add_argument("--offsets", default="auto",
                   choices=["auto", "token-inclusive", "token-exclusive", "char-inclusive", "char-exclusive"])
    p.add_argument("--scheme", default="auto", choices=["auto", "bio", "iob1", "bioes"])
    p.add_argument("--label-map", default=None, help='JSON object renaming labels, e.g. \'{"person": "PER"}\'')
    p.add_argument("--augment-mentions", type=int, default=0, metavar="N",
                   help="training files only: also write up to N copies of each sentence with its outermost mentions "
                        "swapped for other mentions of the same label from the same file (more data from a small set)")
    p.add_argument("--augment-rate", type=float, default=0.5,
                   help="--augment-mentions: the chance that each mention of a copy is swapped (default 0.5)")
    p.add_argument("--augment-seed", type=int, default=0)
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=run)
    add_head_parser(sub)


def run(args) -> int:
    if len(args.input) > 1 and Path(args.output_dir).suffix:
        raise ValueError(f"OUTPUT_DIR {args.output_dir} looks like a file")
    label_map = json.loads(args.label_map) if args.label_map else None
    labels = [x.strip() for x in args.labels.split(",") if x.strip()] if args.labels else None
    for path in args.input:
        report = convert(path, args.output_dir, fmt=args.fmt, lang=args.lang, labels=labels,
                         spans_key=args.spans_key, offsets=args.offsets, scheme=args.scheme, label_map=label_map,
                         show_progress=not args.no_progress, augment=args.augment_mentions,
                         augment_rate=args.augment_rate, augment_seed=args.augment_seed)
        print(report.summary())
    return 0


def add_head_parser(sub) -> None:
    p = sub.add_parser("head", help="the first N docs of a DocBin (for quick evaluations)")
    p.add_argument("input")
    p.add_argument("output")
    p.add_argument("--n", type=int, default=100)
    p.set_defaults(func=run_head)


def run_head(args) -> int:
    import spacy
    from spacy.tokens import DocBin

    vocab = spacy.blank("xx").vocab
    docs = []
    for doc in DocBin().from_disk(args.input).get_docs(vocab):
        if len(docs) >= args.n:
            break
        docs.append(doc)
    DocBin(docs=docs, store_user_data=True).to_disk(args.output)
    print(f"{len(docs)} docs -> {args.output}")
    return 0
