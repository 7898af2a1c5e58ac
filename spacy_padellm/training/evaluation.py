"""Scoring during training: span scores and the string-level metric of a pipeline on gold docs."""

from __future__ import annotations

from typing import Any, Dict, Optional

__all__ = ["evaluate_pipeline", "small_scores"]


def evaluate_pipeline(nlp, docs, batch_size: int = 64, spans_key: Optional[str] = None) -> Dict[str, Any]:
    """Span scores (spaCy) and the string-level metric of ``nlp`` on gold ``docs``."""
    from spacy.training import Example

    from ..pipeline.scoring import score_padellm, string_level_scores

    preds = list(nlp.pipe((nlp.make_doc(d.text) for d in docs), batch_size=batch_size))
    examples = [Example(p, g) for p, g in zip(preds, docs)]
    scores = score_padellm(examples, spans_key=spans_key)
    scores.update(string_level_scores(examples, spans_key))
    return scores


def small_scores(scores: Optional[Dict[str, Any]]) -> Optional[Dict[str, Any]]:
    """The scores kept in ``best.json`` and ``padellm.json``: precision, recall, F and per-type scores."""
    if scores is None:
        return None
    keep = ("ents_p", "ents_r", "ents_f", "string_p", "string_r", "string_f", "ents_per_type")
    return {k: v for k, v in scores.items() if k in keep or (k.startswith("spans_") and k.endswith(("_p", "_r", "_f", "_per_type")))}
