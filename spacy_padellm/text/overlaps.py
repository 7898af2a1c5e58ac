"""One label per span and overlap resolution for flat output (no torch, no spaCy).

PaDeLLM asks for every label independently, so one string can come back under several labels. The
paper keeps the most probable label for such a mention; here that is done on aligned spans (the same
character span under several labels keeps its most probable label), which equals the paper's rule for
strings that occur once and stays correct for strings that occur several times.
"""

from __future__ import annotations

from typing import Dict, List, Sequence, Tuple, TypeVar

__all__ = ["one_label_per_span", "resolve_overlaps"]

S = TypeVar("S")


def _rank(span) -> Tuple[float, int, int]:
    # Most probable first; then the longer span; then the earlier one.
    return (-span.prob, -(span.end - span.start), span.start)


def one_label_per_span(spans: Sequence[S]) -> Tuple[List[S], int]:
    """Keep one label per character span, the most probable; returns (spans, number removed)."""
    best: Dict[Tuple[int, int], S] = {}
    for span in spans:
        key = (span.start, span.end)
        if key not in best or _rank(span) < _rank(best[key]):
            best[key] = span
    kept = sorted(best.values(), key=lambda s: (s.start, s.end))
    return kept, len(spans) - len(kept)


def resolve_overlaps(spans: Sequence[S]) -> Tuple[List[S], int]:
    """A non-overlapping subset, most probable first; returns (spans in order, number removed)."""
    taken: List[S] = []
    for span in sorted(spans, key=_rank):
        if all(span.end <= t.start or span.start >= t.end for t in taken):
            taken.append(span)
    taken.sort(key=lambda s: (s.start, s.end))
    return taken, len(spans) - len(taken)
