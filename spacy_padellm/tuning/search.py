"""Decoding settings chosen on dev data, the model loaded once.

For each lever variant (a set of boolean decoding settings), the dev docs are decoded once per value of a
global ``count_bias``; the per-label counts of those decodes choose one bias per label (``choose_biases``),
and that choice is decoded once more to measure it. The winner is the measured decode with the best dev
span F1 over every variant, grid value and per-label choice. Only the dev docs given are ever decoded.
"""

from __future__ import annotations

import time
from pathlib import Path
from typing import Any, Dict, List, Mapping, Optional, Sequence, Tuple

from .bias_choice import best_uniform, choose_biases, estimate, micro_f1
from .span_counts import label_counts

__all__ = ["Variant", "DEFAULT_VARIANTS", "DEFAULT_GRID", "parse_variants", "parse_grid", "tune", "winner"]

Variant = Tuple[str, Dict[str, bool]]
DEFAULT_VARIANTS = "plain,constrain_mentions,constrain_mentions+dedupe_mentions"
DEFAULT_GRID = "-2,-1.5,-1,-0.5,0"
PER_LABEL = "per-label"


def parse_variants(text: str) -> List[Variant]:
    """``plain,constrain_mentions,constrain_mentions+dedupe_mentions``: each variant turns on the boolean
    decoding settings it names (joined by ``+``) and the levers a model folder may record (``levers.RECORDED``)
    it does not name off; ``plain`` turns none on."""
    from ..decoding.levers import RECORDED
    from ..decoding.settings import DecodeSettings

    variants: List[Variant] = []
    for name in (item.strip() for item in text.split(",")):
        keys = [] if name == "plain" else [key.strip() for key in name.split("+")]
        # the levers it does not name are off (not left to the model folder's record)
        changes = {**{key: False for key in RECORDED}, **{key: True for key in keys}}
        DecodeSettings.from_config(changes)  # an unknown or non-boolean setting is an error here
        if not name or any(name == known for known, _ in variants):
            raise ValueError(f"--variants: empty or repeated variant in {text!r}")
        variants.append((name, changes))
    return variants


def parse_grid(text: str) -> List[float]:
    """``-2,-1.5,-1,-0.5,0`` as distinct numbers, in order."""
    try:
        grid = [float(item) for item in text.split(",")]
    except ValueError:
        raise ValueError(f"--grid expects numbers separated by commas, got {text!r}") from None
    if len(set(grid)) != len(grid):
        raise ValueError(f"--grid repeats a value: {text!r}")
    return grid


# -- one decode ---------------------------------------------------------------------------------------------


def measure(nlp, ner, gold: Sequence[Any], batch_size: int, bar) -> Dict[str, Any]:
    """Decode the gold docs' texts with the component's current settings: spaCy's span scores (micro, as
    ``spacy evaluate``) and per-label counts, P, R and F1."""
    from spacy.training import Example

    from ..pipeline.scoring import score_padellm, score_prefix

    start = time.perf_counter()
    preds = []
    for doc in nlp.pipe((nlp.make_doc(d.text) for d in gold), batch_size=batch_size):
        preds.append(doc)
        bar.update(1)
    seconds = time.perf_counter() - start
    examples = [Example(p, g) for p, g in zip(preds, gold)]
    prefix = score_prefix(ner.spans_key)
    scores = score_padellm(examples, spans_key=ner.spans_key)
    counts = label_counts(examples, ner.labels, ner.spans_key)
    return {"p": scores[f"{prefix}_p"] or 0.0, "r": scores[f"{prefix}_r"] or 0.0, "f": scores[f"{prefix}_f"] or 0.0,
            "per_label": {label: _label_row(c) for label, c in counts.items()}, "seconds": round(seconds, 3)}


def _label_row(counts: Tuple[int, int, int]) -> Dict[str, Any]:
    tp, fp, fn = counts
    return {"tp": tp, "fp": fp, "fn": fn, "p": tp / (tp + fp) if tp else 0.0, "r": tp / (tp + fn) if tp else 0.0,
            "f": micro_f1([counts])}


def _counts(row: Mapping[str, Any]) -> Dict[str, Tuple[int, int, int]]:
    return {label: (c["tp"], c["fp"], c["fn"]) for label, c in row["per_label"].items()}


# -- one variant --------------------------------------------------------------------------------------------


def tune_variant(nlp, ner, base, changes: Mapping[str, Any], grid: Sequence[float], gold, batch_size: int,
                 bar) -> Dict[str, Any]:
    """The variant's decode per grid value, its per-label choice and that choice's measured decode."""
    rows: Dict[float, Dict[str, Any]] = {}
    for bias in grid:
        bar.set_description(f"{_describe(changes)} count_bias={bias:g}")
        ner.use_settings(base.replace(**changes, count_bias=bias))
        rows[bias] = measure(nlp, ner, gold, batch_size, bar)
    # every label the counts hold: gold labels the model lacks add false negatives to every estimate
    table = {label: {bias: _counts(rows[bias])[label] for bias in grid} for label in rows[grid[0]]["per_label"]}
    full = choose_biases(table)
    choice = {label: bias for label, bias in full.items() if label in ner.labels}
    bar.set_description(f"{_describe(changes)} per-label count_bias")
    ner.use_settings(base.replace(**changes, count_bias=dict(choice)))
    checked = measure(nlp, ner, gold, batch_size, bar)
    return {"changes": dict(changes), "grid": {_key(b): row for b, row in rows.items()},
            "best_uniform": best_uniform(table) if table else None,
            PER_LABEL: {"count_bias": choice, "estimated_f": estimate(table, full), **checked}}


def _describe(changes: Mapping[str, Any]) -> str:
    """The variant's name as ``--variants`` writes it: the levers it turns on (the ones it turns off are not named)."""
    return "+".join(key for key, value in changes.items() if value) or "plain"


def _key(bias: float) -> str:
    return f"{bias:g}"


# -- the choice ---------------------------------------------------------------------------------------------


def candidates(variants: Mapping[str, Any], labels: Sequence[str]):
    """(variant, what, count_bias dict, measured row) for every measured decode, in measuring order."""
    for name, result in variants.items():
        for key, row in result["grid"].items():
            yield name, f"count_bias={key}", {label: float(key) for label in labels}, row
        per_label = result[PER_LABEL]
        yield name, PER_LABEL, dict(per_label["count_bias"]), per_label


def winner(variants: Mapping[str, Any], labels: Sequence[str]) -> Dict[str, Any]:
    """The measured decode with the best dev span F1 (ties: the one measured first)."""
    best = None
    for name, what, bias, row in candidates(variants, labels):
        if best is None or row["f"] > best[3]["f"]:
            best = (name, what, bias, row)
    name, what, bias, row = best
    return {"variant": name, "from": what, "count_bias": bias, "p": row["p"], "r": row["r"], "f": row["f"],
            "per_label": row["per_label"]}


# -- the whole search -----------------------------------------------------------------------------------------


def padellm_component(nlp):
    from ..pipeline.component import PaDeLLMNER

    found = [pipe for _, pipe in nlp.pipeline if isinstance(pipe, PaDeLLMNER)]
    if len(found) != 1:
        raise ValueError(f"tune needs a pipeline with one padellm_ner component, found {len(found)}")
    return found[0]


def load_dev(path: str, vocab, max_docs: Optional[int]) -> List[Any]:
    from spacy.tokens import DocBin

    if not Path(path).exists():
        raise FileNotFoundError(f"no such DocBin: {path}")
    docs = list(DocBin().from_disk(path).get_docs(vocab))
    return docs[:max_docs] if max_docs else docs


def tune(model: str, dev: str, *, variants: Sequence[Variant], grid: Sequence[float],
         settings: Optional[Mapping[str, Any]] = None, max_docs: Optional[int] = None, batch_size: int = 64,
         lang: Optional[str] = None, spans_key: Optional[str] = None, progress: bool = True) -> Dict[str, Any]:
    """Measure every variant on the dev docs with the model loaded once; the report with the ``chosen``
    settings (``settings`` and the winner's changes and per-label ``count_bias``)."""
    from tqdm.auto import tqdm

    from ..pipeline.load import load_pipeline

    settings = dict(settings or {})
    nlp = load_pipeline(model, lang=lang, spans_key=spans_key, config=settings)
    ner = padellm_component(nlp)
    gold = load_dev(dev, nlp.vocab, max_docs)
    base = ner.settings
    decodes = len(variants) * (len(grid) + 1)
    results: Dict[str, Any] = {}
    with tqdm(total=decodes * len(gold), unit="doc", disable=not progress) as bar:
        for name, changes in variants:
            results[name] = tune_variant(nlp, ner, base, changes, grid, gold, batch_size, bar)
    best = winner(results, ner.labels)
    chosen = {**settings, **results[best["variant"]]["changes"], "count_bias": best["count_bias"]}
    return {"pipeline": str(model), "dev": str(dev), "docs": len(gold), "max_docs": max_docs,
            "batch_size": batch_size, "labels": list(ner.labels), "grid": list(grid), "settings": settings,
            "decodes": decodes, "variants": results, "best": best, "chosen_settings": chosen}
