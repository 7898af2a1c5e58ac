"""Decoding a batch of spaCy docs: each doc's windows in the text the model reads (within a ``WindowBudget``,
see ``context``), one decoder call for all of them, and the predictions mapped back to spans of each doc with
its counters. A doc that fails comes back without entities instead of failing its batch (``isolation``)."""

from __future__ import annotations

from typing import Any, Dict, List, Sequence, Tuple

from spacy.attrs import IDX, IS_SPACE, LENGTH
from spacy.tokens import Doc

from ..decoding.types import DocRequest
from ..text.align import AlignedSpan
from ..text.windows import make_windows, model_view, sentences_from_tokens
from .context import WindowBudget
from .isolation import decode_isolated, guarded, settle_failures
from .output import doc_spans, write_spans
from .safe_text import replaced_count

__all__ = ["STAT_KEYS", "AUTOREG_STAT_KEYS", "decode_docs", "doc_sentences", "text_and_tokens"]

STAT_KEYS = ("docs", "windows", "unparsable_counts", "capped_counts", "truncated_mentions", "not_found",
             "no_free_occurrence", "misaligned", "duplicates_removed", "overlaps_removed", "failed", "replaced")
# Added to doc._.padellm in the autoregressive decodings (see baselines.AutoRegResult).
AUTOREG_STAT_KEYS = ("unparsable_outputs", "unknown_labels", "truncated_outputs", "rewrite_mismatches")

Mapping = List[Tuple[int, int, int, int]]  # per token: (start, end) in the model's text, (start, end) in the doc


def decode_docs(docs: Sequence[Doc], decoder, labels: Sequence[str], *, budget: WindowBudget, text_format: str,
                spans_key, deduplicate: bool, alignment_mode: str, autoreg: bool,
                first: int = 0) -> List[Dict[str, int]]:
    """Annotate ``docs`` in place (``doc.ents`` or ``doc.spans[spans_key]``, ``doc._.padellm``) and return
    each doc's counters. ``alignment_mode``: for mentions that do not fall on the doc's token boundaries (see
    ``text.align``). ``first``: the index of ``docs[0]`` in the call, for warnings about failed docs."""
    keys = STAT_KEYS + (AUTOREG_STAT_KEYS if autoreg else ())
    doc_stats = [{key: 0 for key in keys} for _ in docs]
    failures: Dict[int, Exception] = {}
    views: List[Tuple[int, str, Mapping]] = []
    for i, doc in enumerate(docs):
        found = guarded(failures, i, lambda: doc_views(doc, budget, text_format), [])
        views.extend((i, view, mapping) for view, mapping in found)
    results = decode_isolated(decoder, [DocRequest(view, labels) for _, view, _ in views],
                              [i for i, _, _ in views], failures)
    per_doc: List[List[AlignedSpan]] = [[] for _ in docs]
    for (i, view, mapping), result in zip(views, results):
        if i not in failures:
            per_doc[i].extend(guarded(failures, i, lambda: _result_spans(view, mapping, result, alignment_mode,
                                                                         doc_stats[i]), []))
    settle_failures(failures, sorted({i for i, _, _ in views} | set(failures)), first)
    for i, (doc, spans, stats) in enumerate(zip(docs, per_doc, doc_stats)):
        if i in failures:
            spans, stats = [], {key: 0 for key in keys}
            stats["failed"] = 1
            doc_stats[i] = stats
        stats["docs"] = 1
        stats["replaced"] = replaced_count(doc)
        write_spans(doc, spans, spans_key, deduplicate, stats)
        doc._.padellm = stats
    return doc_stats


def doc_views(doc: Doc, budget: WindowBudget, text_format: str) -> List[Tuple[str, Mapping]]:
    """The model's view of each window of ``doc`` with its token mapping (windows of blank text left out)."""
    text, tokens = text_and_tokens(doc)
    token_texts = [(a, text[a:b]) for a, b in tokens]
    views = []
    for start, end in doc_windows(doc, text, tokens, budget):
        view, mapping = model_view(text, token_texts, start, end, text_format)
        if view.strip():
            views.append((view, mapping))
    return views


def _result_spans(view: str, mapping: Mapping, result: Any, alignment_mode: str,
                  stats: Dict[str, int]) -> List[AlignedSpan]:
    """The doc spans of one window's ``DocResult``, its counters added to ``stats``."""
    stats["windows"] += 1
    stats["unparsable_counts"] += result.unparsable_counts
    stats["capped_counts"] += result.capped_counts
    stats["truncated_mentions"] += result.truncated_mentions
    for key in AUTOREG_STAT_KEYS:
        if hasattr(result, key):
            stats[key] = stats.get(key, 0) + getattr(result, key)
    located, rest = _located_spans(mapping, result.predictions)
    preds = [(p.label, p.k, p.text, p.prob) for p in rest]
    return located + doc_spans(view, mapping, preds, stats, alignment_mode)


def doc_windows(doc: Doc, text: str, tokens: List[Tuple[int, int]], budget: WindowBudget) -> List[Tuple[int, int]]:
    """Character windows of ``text`` within ``budget``, cut at sentence boundaries (the doc's own sentences
    when it has them, else sentence-final punctuation)."""
    if not text.strip():
        return []
    sents = doc_sentences(doc, text, tokens)
    if len(sents) <= (budget.max_sentences or len(sents)) and budget.surely_fits(text):
        return [(0, len(text))]
    return make_windows(text, sents, tokens, budget.measure, budget.max_tokens, budget.max_sentences)


def doc_sentences(doc: Doc, text: str, tokens: List[Tuple[int, int]]) -> List[Tuple[int, int]]:
    """The (start, end) characters of ``doc``'s sentences: its own when it has them (a sentencizer, a parser),
    else cut after sentence-final punctuation among its non-space ``tokens`` (``text_and_tokens``)."""
    if doc.has_annotation("SENT_START"):
        return [(s.start_char, s.end_char) for s in doc.sents]
    return sentences_from_tokens([(a, b, text[a:b]) for a, b in tokens])


def _located_spans(mapping: Mapping, predictions: Sequence[Any]) -> Tuple[List[AlignedSpan], List[Any]]:
    """Spans of predictions whose character offsets in the model's text are known (AutoRegAug), mapped to
    the doc when they fall on token boundaries; the other predictions are returned for the aligner."""
    to_doc_start = {m[0]: m[2] for m in mapping}
    to_doc_end = {m[1]: m[3] for m in mapping}
    located, rest = [], []
    for p in predictions:
        start, end = getattr(p, "start", None), getattr(p, "end", None)
        if start in to_doc_start and end in to_doc_end and to_doc_start[start] < to_doc_end[end]:
            located.append(AlignedSpan(to_doc_start[start], to_doc_end[end], p.label, p.prob, p.text, p.k))
        else:
            rest.append(p)
    return located, rest


def text_and_tokens(doc: Doc) -> Tuple[str, List[Tuple[int, int]]]:
    """The doc's text and the (start, end) characters of its non-space tokens, read in one array call
    (iterating over Token objects costs more than the rest of the component's host work)."""
    arr = doc.to_array([IDX, LENGTH, IS_SPACE]).tolist() if len(doc) else []
    return doc.text, [(a, a + n) for a, n, space in arr if not space]
