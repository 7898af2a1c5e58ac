"""From the spans a reader found to docs with their spans set.

:func:`set_doc_spans` renames and filters labels, drops duplicate spans, detects nesting, and sets the
spans on each doc: flat data in ``doc.ents``; with a ``spans_key``, or when spans overlap, all spans in
``doc.spans[spans_key or "sc"]`` and the non-overlapping subset (longest first,
:func:`spacy.util.filter_spans`) in ``doc.ents``. :func:`doc_spans` reads them back in reading order.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, List, Mapping, Optional, Sequence

from spacy.tokens import Doc, Span
from spacy.util import filter_spans

from .readers.raw import ConvertError, RawDoc, SpanTuple

NESTED_SPANS_KEY = "sc"
"""The span group that holds all spans of nested data when no ``spans_key`` is given."""


@dataclass
class ReadResult:
    """Docs read by :func:`~spacy_padellm.training.convert.read_docs`, with their spans set, and what
    was found on the way."""

    docs: List[Doc]
    fmt: str
    labels: List[str]
    spans_key: Optional[str]  # where all spans are: a span group, or None for doc.ents
    nested: bool
    n_spans: int
    n_skipped: int = 0
    n_trimmed: int = 0
    n_filtered: int = 0
    offsets: Optional[str] = None
    offset_matches: Dict[str, int] = field(default_factory=dict)  # spans matched per convention
    scheme: Optional[str] = None
    problems: List[str] = field(default_factory=list)


def doc_spans(doc: Doc, spans_key: Optional[str] = None) -> List[Span]:
    """The spans of a doc in reading order (start, then end): ``doc.spans[spans_key]`` or ``doc.ents``."""
    if spans_key is None:
        spans = list(doc.ents)
    else:
        spans = list(doc.spans[spans_key]) if spans_key in doc.spans else []
    return sorted(spans, key=lambda span: (span.start, span.end))


def set_doc_spans(
    raws: List[RawDoc],
    fmt: str,
    labels: Optional[Sequence[str]],
    spans_key: Optional[str],
    label_map: Optional[Mapping[str, str]],
    problems: List[str],
) -> ReadResult:
    """Rename and filter labels, drop duplicates, detect nesting and set the spans on the docs."""
    if isinstance(labels, str):
        labels = [label.strip() for label in labels.split(",") if label.strip()]
    if labels is not None:
        labels = list(labels)
        if len(set(labels)) != len(labels):
            raise ConvertError(f"The label set {labels} names a label twice")
    allowed = set(labels) if labels is not None else None
    label_map = dict(label_map or {})
    n_filtered = 0
    nested = False
    seen = set()
    cleaned: List[List[SpanTuple]] = []
    for raw in raws:
        spans: List[SpanTuple] = []
        unique = set()
        for start, end, label in sorted(raw.spans, key=lambda s: (s[0], s[1])):
            label = label_map.get(label, label)
            if allowed is not None and label not in allowed:
                n_filtered += 1
                continue
            if (start, end, label) in unique:
                problems.append(
                    f"{raw.where}: duplicate span {label} [{start}, {end}) ({raw.doc[start:end].text!r}); skipped"
                )
                continue
            unique.add((start, end, label))
            spans.append((start, end, label))
            seen.add(label)
        nested = nested or _overlaps(spans)
        cleaned.append(spans)
    key = spans_key if spans_key is not None else (NESTED_SPANS_KEY if nested else None)
    docs = []
    for raw, spans in zip(raws, cleaned):
        set_spans(raw.doc, spans, key)
        docs.append(raw.doc)
    return ReadResult(
        docs=docs,
        fmt=fmt,
        labels=labels if labels is not None else sorted(seen),
        spans_key=key,
        nested=nested,
        n_spans=sum(len(spans) for spans in cleaned),
        n_skipped=len(problems),  # every problem is one skipped span
        n_filtered=n_filtered,
        problems=problems,
    )


def _overlaps(spans: Sequence[SpanTuple]) -> bool:
    """Whether any two spans (sorted by start) share a token."""
    reach = -1
    for start, end, _ in spans:
        if start < reach:
            return True
        reach = max(reach, end)
    return False


def set_spans(doc: Doc, spans: Sequence[SpanTuple], key: Optional[str]) -> None:
    """Set ``spans`` (token offsets) on ``doc``: in ``doc.ents`` (``key`` None), or all in ``doc.spans[key]`` and the
    non-overlapping subset (longest first) in ``doc.ents``."""
    objs = [Span(doc, start, end, label=label) for start, end, label in spans]
    if key is None:
        doc.ents = objs
    else:
        doc.spans[key] = objs
        doc.ents = filter_spans(objs)
