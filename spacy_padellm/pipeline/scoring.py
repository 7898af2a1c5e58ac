"""Scorers: spaCy's span scores (exact character spans) and the paper's string-level metric."""

from __future__ import annotations

from typing import Any, Callable, Dict, Iterable, Optional, Set, Tuple

from spacy.scorer import PRFScore, Scorer, get_ner_prf
from spacy.training import Example
from spacy.util import registry

__all__ = ["score_padellm", "score_prefix", "scored_prefix", "make_scorer", "string_level_prf", "gold_spans"]


def gold_spans(doc, spans_key: Optional[str] = None):
    return list(doc.spans.get(spans_key, [])) if spans_key else list(doc.ents)


def score_prefix(spans_key: Optional[str] = None) -> str:
    """The prefix of the span scores' keys: ``ents`` in flat mode, ``spans_<key>`` in nested mode."""
    return f"spans_{spans_key}" if spans_key else "ents"


def scored_prefix(scores: Dict[str, Any]) -> str:
    """The prefix of the span scores a dict of scores holds: ``spans_<key>`` (nested mode), else ``ents``."""
    return next((k[: -len("_f")] for k in scores if k.startswith("spans_") and k.endswith("_f")), "ents")


def score_padellm(examples: Iterable[Example], spans_key: Optional[str] = None, **kwargs) -> Dict[str, Any]:
    """``ents_p/r/f`` and ``ents_per_type`` in flat mode, ``spans_<key>_p/r/f`` in nested mode."""
    if not spans_key:
        return get_ner_prf(examples, **kwargs)
    return Scorer.score_spans(
        examples,
        score_prefix(spans_key),
        getter=lambda doc, attr: doc.spans.get(spans_key, []),
        has_annotation=lambda doc: spans_key in doc.spans,
        allow_overlap=True,
        **kwargs,
    )


@registry.scorers("spacy_padellm.scorer.v1")
def make_scorer() -> Callable[..., Dict[str, Any]]:
    return score_padellm


def _string_set(spans) -> Set[Tuple[str, str]]:
    return {(span.label_, " ".join(span.text.split())) for span in spans}


def string_level_prf(pairs: Iterable[Tuple[Iterable, Iterable]]) -> Dict[str, Any]:
    """The PaDeLLM repository's metric: per sentence, sets of (label, mention string).

    ``pairs`` yields (predicted spans, gold spans) per sentence; returns micro P/R/F and per label.
    """
    total = PRFScore()
    per_label: Dict[str, PRFScore] = {}
    for pred, gold in pairs:
        p, g = _string_set(pred), _string_set(gold)
        total.tp += len(p & g)
        total.fp += len(p - g)
        total.fn += len(g - p)
        for label in {x[0] for x in p | g}:
            score = per_label.setdefault(label, PRFScore())
            score.tp += sum(1 for x in p & g if x[0] == label)
            score.fp += sum(1 for x in p - g if x[0] == label)
            score.fn += sum(1 for x in g - p if x[0] == label)
    return {
        "string_p": total.precision,
        "string_r": total.recall,
        "string_f": total.fscore,
        "string_per_type": {label: s.to_dict() for label, s in sorted(per_label.items())},
    }


def string_level_scores(examples: Iterable[Example], spans_key: Optional[str] = None) -> Dict[str, Any]:
    return string_level_prf(
        (gold_spans(ex.predicted, spans_key), gold_spans(ex.reference, spans_key)) for ex in examples
    )
