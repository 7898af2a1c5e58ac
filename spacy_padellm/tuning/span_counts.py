"""Per-label (tp, fp, fn) of predicted spans against gold, counted as spaCy's scorers count them.

Flat mode (``doc.ents``) follows ``spacy.scorer.get_ner_prf``: a predicted entity is mapped onto the gold
tokens, and one over gold tokens without entity annotation is neither right nor wrong. Nested mode
(``doc.spans[key]``) follows ``Scorer.score_spans`` with overlaps allowed, as ``score_padellm`` calls it.
So the micro F1 of the summed counts is ``score_padellm``'s ``ents_f`` / ``spans_<key>_f``.
"""

from __future__ import annotations

from collections import Counter
from typing import Dict, Iterable, Optional, Sequence

from spacy.training import Example

from .bias_choice import Counts

__all__ = ["label_counts"]


def label_counts(examples: Iterable[Example], labels: Sequence[str] = (),
                 spans_key: Optional[str] = None) -> Dict[str, Counts]:
    """label -> (tp, fp, fn) over ``examples``; every label in ``labels`` is present (zeros if unseen)."""
    tally: Dict[str, Counter] = {label: Counter() for label in labels}
    count = _count_spans if spans_key else _count_ents
    for example in examples:
        count(example, spans_key, tally)
    return {label: (c["tp"], c["fp"], c["fn"]) for label, c in sorted(tally.items())}


def _add(tally: Dict[str, Counter], label: str, kind: str) -> None:
    tally.setdefault(label, Counter())[kind] += 1


def _count_ents(example: Example, _key: None, tally: Dict[str, Counter]) -> None:
    gold_doc, pred_doc = example.reference, example.predicted
    if not gold_doc.has_annotation("ENT_IOB"):
        return
    golds = {(e.label_, e.start, e.end) for e in gold_doc.ents}
    x2y = example.alignment.x2y
    for ent in pred_doc.ents:
        tally.setdefault(ent.label_, Counter())
        indices = x2y[ent.start:ent.end]
        if not len(indices) or not all(t.ent_iob != 0 for t in gold_doc[indices[0]:indices[-1] + 1]):
            continue  # over unannotated gold tokens: not scored
        key = (ent.label_, int(indices[0]), int(indices[-1]) + 1)
        if key in golds:
            golds.remove(key)
            _add(tally, ent.label_, "tp")
        else:
            _add(tally, ent.label_, "fp")
    for label, _, _ in golds:
        _add(tally, label, "fn")


def _count_spans(example: Example, key: str, tally: Dict[str, Counter]) -> None:
    gold_doc, pred_doc = example.reference, example.predicted
    if key not in gold_doc.spans:
        return
    golds = {(s.label_, s.start, s.end) for s in gold_doc.spans[key]}
    preds = set()
    if key in pred_doc.spans:
        preds = {(s.label_, s.start, s.end) for s in example.get_aligned_spans_x2y(pred_doc.spans[key], True)}
    for label, _, _ in preds & golds:
        _add(tally, label, "tp")
    for label, _, _ in preds - golds:
        _add(tally, label, "fp")
    for label, _, _ in golds - preds:
        _add(tally, label, "fn")
