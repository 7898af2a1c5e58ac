"""``python -m spacy_padellm assemble MODEL OUTPUT``: a spaCy pipeline folder around a PaDeLLM model folder.

The pipeline is ``spacy.blank(lang)`` + ``padellm_ner``; ``nlp.to_disk`` copies the model (base weights,
adapter, tokenizer) inside, so the folder works with ``spacy.load``, ``spacy evaluate`` and
``spacy package`` on a machine that has only this package installed.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Dict, Optional


def assemble(model: str, output: str, lang: str = None, spans_key: str = None, name: str = None,
             settings: Optional[Dict[str, Any]] = None) -> Path:
    """Write the pipeline; ``settings`` (decoding settings) go into its config.cfg."""
    from ..pipeline.load import load_pipeline

    nlp = load_pipeline(model, lang=lang, spans_key=spans_key, config=settings)
    nlp.initialize()
    meta = nlp.get_pipe("padellm_ner").source.meta
    nlp.meta["name"] = name or f"padellm_{Path(model).name}".replace("-", "_").replace(":", "_")
    nlp.meta["description"] = "PaDeLLM-NER (parallel decoding LLM NER) built with spacy-padellm"
    if meta.get("dev_scores"):
        nlp.meta["performance"] = meta["dev_scores"]
    Path(output).parent.mkdir(parents=True, exist_ok=True)
    nlp.to_disk(output)
    return Path(output)


def add_parser(sub) -> None:
    p = sub.add_parser("assemble", help="write a spaCy pipeline folder around a PaDeLLM model folder")
    p.add_argument("model", help="PaDeLLM model folder (from train) or padellm:NAME")
    p.add_argument("output", help="pipeline folder to write")
    p.add_argument("--lang", default=None)
    p.add_argument("--spans-key", default=None,
                   help="nested mode: the span group the pipeline writes (default: the model's, else flat)")
    p.add_argument("--name", default=None)
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="a decoding setting written into the pipeline's config (python -m spacy_padellm settings "
                        "lists them); repeatable")
    p.set_defaults(func=run)


def run(args) -> int:
    from ..pipeline.load import parse_settings

    out = assemble(args.model, args.output, args.lang, args.spans_key, args.name, parse_settings(args.set))
    print(f"pipeline written to {out}")
    return 0
