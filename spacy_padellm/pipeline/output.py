"""From decoded mentions to a Doc, shared by ``padellm_ner`` and the spacy-llm task.

``doc_spans`` aligns (label, k, mention, prob) predictions in the text the model read and maps them back
to character offsets of the doc (mentions that cut a token by the alignment mode, see ``text.align``); ``write_spans`` de-duplicates them and writes ``doc.ents`` (overlaps
resolved, most probable first) or ``doc.spans[spans_key]`` (overlaps kept), with ``span._.padellm_prob``.
Both add to a per-doc ``stats`` dict (the counters of ``doc._.padellm``).
"""

from typing import Dict, List, Optional, Sequence, Tuple

from spacy.tokens import Doc, SpanGroup

from ..text.align import ALIGNMENT_MODES, AlignedSpan, align_mentions
from ..text.overlaps import one_label_per_span, resolve_overlaps

__all__ = ["check_alignment_mode", "doc_spans", "write_spans"]


def check_alignment_mode(mode: str) -> str:
    """``mode`` if it is an alignment mode, else a ``ValueError`` naming them."""
    if mode not in ALIGNMENT_MODES:
        raise ValueError(f"'alignment_mode' must be one of {', '.join(ALIGNMENT_MODES)}, got {mode!r}")
    return mode


def doc_spans(text: str, mapping: Sequence[Tuple[int, int, int, int]], predictions: Sequence[Tuple[str, int, str, float]],
              stats: Dict[str, int], alignment_mode: str) -> List[AlignedSpan]:
    """Align predictions in ``text`` (the model's view) and map them to doc offsets through ``mapping``
    ((start, end) in ``text``, (start, end) in the doc, per token). ``alignment_mode``: "strict",
    "contract" or "expand", for mentions that do not fall on token boundaries."""
    aligned, align_stats = align_mentions(text, predictions, [(m[0], m[1]) for m in mapping], alignment_mode)
    stats["not_found"] = stats.get("not_found", 0) + align_stats.not_found + align_stats.empty
    stats["no_free_occurrence"] = stats.get("no_free_occurrence", 0) + align_stats.no_free_occurrence
    stats["misaligned"] = stats.get("misaligned", 0) + align_stats.misaligned
    to_doc_start = {m[0]: m[2] for m in mapping}
    to_doc_end = {m[1]: m[3] for m in mapping}
    return [AlignedSpan(to_doc_start[s.start], to_doc_end[s.end], s.label, s.prob, s.mention, s.k) for s in aligned]


def write_spans(doc: Doc, spans: Sequence[AlignedSpan], spans_key: Optional[str], dedupe: bool,
                stats: Dict[str, int]) -> None:
    """De-duplicate (one label per span, the most probable) and write the spans to ``doc``."""
    spans = list(spans)
    if dedupe:
        spans, removed = one_label_per_span(spans)
        stats["duplicates_removed"] = stats.get("duplicates_removed", 0) + removed
    if spans_key:
        made = [(doc.char_span(s.start, s.end, label=s.label, alignment_mode="strict"), s) for s in spans]
        made = [(m, s) for m, s in made if m is not None]
        for m, s in made:
            m._.padellm_prob = s.prob
        doc.spans[spans_key] = SpanGroup(doc, name=spans_key, spans=[m for m, _ in made],
                                         attrs={"scores": [s.prob for _, s in made]})
        return
    spans, removed = resolve_overlaps(spans)
    stats["overlaps_removed"] = stats.get("overlaps_removed", 0) + removed
    ents = []
    for s in spans:
        ent = doc.char_span(s.start, s.end, label=s.label, alignment_mode="strict")
        if ent is not None:
            ent._.padellm_prob = s.prob
            ents.append(ent)
    doc.ents = ents
