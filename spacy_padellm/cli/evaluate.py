"""``python -m spacy_padellm evaluate MODEL DATA.spacy``: span and string-level scores with timing.

MODEL is a spaCy pipeline folder (``config.cfg`` inside) or a PaDeLLM model folder, which is wrapped in
``spacy.blank(lang)`` + ``padellm_ner``. Span scores are spaCy's (exact character spans, the same as
``spacy evaluate``); string scores are the PaDeLLM repository's per-sentence (label, mention) sets.
"""

from __future__ import annotations

import json
import time
from pathlib import Path
from typing import Any, Dict, Optional


def evaluate(model: str, data: str, *, max_docs: Optional[int] = None, batch_size: int = 64,
             spans_key: Optional[str] = None, lang: Optional[str] = None, device: Optional[str] = None,
             settings: Optional[Dict[str, Any]] = None, progress: bool = True) -> Dict[str, Any]:
    from spacy.tokens import DocBin
    from spacy.training import Example
    from tqdm.auto import tqdm

    from ..pipeline.load import load_pipeline
    from ..pipeline.scoring import score_padellm, string_level_scores

    config = {**(settings or {}), **({"device": device} if device else {})}
    start = time.perf_counter()
    nlp = load_pipeline(model, lang=lang, spans_key=spans_key, config=config)
    ner = nlp.get_pipe("padellm_ner") if "padellm_ner" in nlp.pipe_names else None
    key = spans_key or (ner.spans_key if ner is not None else None)
    gold = list(DocBin().from_disk(data).get_docs(nlp.vocab))
    if max_docs:
        gold = gold[:max_docs]
    if ner is not None:
        ner.decoder  # the weights load now (if the pipeline did not load them), not in the first batch's time
    load_seconds = time.perf_counter() - start
    start = time.perf_counter()
    preds = list(tqdm(nlp.pipe((nlp.make_doc(d.text) for d in gold), batch_size=batch_size), total=len(gold),
                      desc="evaluate", disable=not progress))
    seconds = time.perf_counter() - start
    examples = [Example(p, g) for p, g in zip(preds, gold)]
    scores = score_padellm(examples, spans_key=key)
    scores.update(string_level_scores(examples, key))
    n_words = sum(len(d) for d in gold)
    scores.update({"docs": len(gold), "load_seconds": round(load_seconds, 3), "seconds": round(seconds, 3),
                   "docs_per_second": round(len(gold) / seconds, 2), "words_per_second": round(n_words / seconds, 1),
                   "batch_size": batch_size,
                   "model": str(model), "data": str(data)})
    if ner is not None:
        scores["component_stats"] = dict(ner.stats)
        scores["decoder_stats"] = vars(ner.decoder.stats).copy()
    return scores


def add_parser(sub) -> None:
    p = sub.add_parser("evaluate", help="span + string-level F1 and speed on a DocBin")
    p.add_argument("model", help="spaCy pipeline folder or PaDeLLM model folder")
    p.add_argument("data", help=".spacy DocBin with gold entities")
    p.add_argument("--output", default=None, help="write the metrics JSON here")
    p.add_argument("--max-docs", type=int, default=None)
    p.add_argument("--batch-size", type=int, default=64)
    p.add_argument("--spans-key", default=None,
                   help="nested mode: the span group written and scored (default: the model's, else flat)")
    p.add_argument("--lang", default=None)
    p.add_argument("--device", default=None, help="cpu, cuda, cuda:1 (default: follow spaCy/thinc)")
    p.add_argument("--gpu-id", type=int, default=-1, help="like spacy evaluate: use this GPU")
    p.add_argument("--set", action="append", default=[], metavar="KEY=VALUE",
                   help="a decoding setting for padellm_ner (python -m spacy_padellm settings lists them); repeatable")
    p.add_argument("--no-progress", action="store_true")
    p.set_defaults(func=run)


def run(args) -> int:
    if args.gpu_id >= 0:
        import spacy

        spacy.require_gpu(args.gpu_id)
    from ..pipeline.load import parse_settings
    from ..pipeline.scoring import scored_prefix

    scores = evaluate(args.model, args.data, max_docs=args.max_docs, batch_size=args.batch_size,
                      spans_key=args.spans_key, lang=args.lang, device=args.device,
                      settings=parse_settings(args.set), progress=not args.no_progress)
    prefix = scored_prefix(scores)
    keys = [k for k in (f"{prefix}_p", f"{prefix}_r", f"{prefix}_f", "string_p", "string_r", "string_f")
            if scores.get(k) is not None]
    print("  ".join(f"{k} {scores[k]:.4f}" for k in keys))
    for label, prf in (scores.get(f"{prefix}_per_type") or {}).items():
        print(f"  {label:10s} p {prf['p']:.4f} r {prf['r']:.4f} f {prf['f']:.4f}")
    print(f"{scores['docs']} docs in {scores['seconds']} s ({scores['docs_per_second']} docs/s)")
    if args.output:
        Path(args.output).parent.mkdir(parents=True, exist_ok=True)
        Path(args.output).write_text(json.dumps(scores, indent=2))
    return 0
