"""Map predicted (label, k, mention) triples to character spans of the text (no torch, no spaCy).

The model writes mentions as strings. The k-th mention of a label goes to the k-th fitting occurrence
of that string in reading order, so "Jordan ... Jordan" predicted twice under one label gives two
distinct spans. Matching tolerates differences of case and whitespace (first with whitespace runs
collapsed, then with whitespace ignored altogether); occurrences that start and end on token
boundaries are preferred. When a mention occurs only across token boundaries (``"Japan"`` inside the
one token ``"東京でJapanとSyriaが"``), the alignment mode decides, as spaCy's ``Doc.char_span`` modes do:
``"strict"`` drops it, ``"contract"`` keeps the tokens wholly inside it, ``"expand"`` widens it to the
tokens it touches. A mention that cannot be found, that cannot be aligned, or whose every occurrence is
already taken by its label, is dropped and counted.
"""

from __future__ import annotations

import bisect
import re
from dataclasses import dataclass
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

__all__ = ["ALIGNMENT_MODES", "AlignedSpan", "AlignStats", "align_mentions", "normalize"]

ALIGNMENT_MODES = ("strict", "contract", "expand")


@dataclass(frozen=True)
class AlignedSpan:
    start: int  # character offsets into the text, end exclusive
    end: int
    label: str
    prob: float
    mention: str
    k: int


@dataclass
class AlignStats:
    aligned: int = 0
    not_found: int = 0  # the string does not occur in the text
    no_free_occurrence: int = 0  # every occurrence already holds a mention of this label
    empty: int = 0  # empty mention strings
    misaligned: int = 0  # every occurrence cuts a token, and the alignment mode cannot make it whole

    def add(self, other: "AlignStats") -> None:
        for name in ("aligned", "not_found", "no_free_occurrence", "empty", "misaligned"):
            setattr(self, name, getattr(self, name) + getattr(other, name))


_NOT_PLAIN = re.compile(r"\s\s|[^\S ]|\u03a3")  # a whitespace run, whitespace other than " ", or a capital sigma


def normalize(text: str, drop_spaces: bool = False) -> Tuple[str, List[int]]:
    """Lower-cased text with whitespace runs collapsed (or dropped), and each char's original index."""
    if not drop_spaces and not _NOT_PLAIN.search(text) and not text[:1].isspace() and not text[-1:].isspace():
        # The common case at C speed: single spaces only, nothing to collapse. (Capital sigma lower-cases by
        # context in str.lower() but not char by char, and a char that lower-cases to two changes the length.)
        lowered = text.lower()
        if len(lowered) == len(text):
            return lowered, list(range(len(text)))
    chars: List[str] = []
    index: List[int] = []
    in_space = False
    for i, ch in enumerate(text):
        if ch.isspace():
            if drop_spaces:
                continue
            if not in_space and chars:
                chars.append(" ")
                index.append(i)
            in_space = True
            continue
        in_space = False
        lowered = ch.lower()  # one char, or several ("İ" -> "i̇"): each points back to ch
        chars.append(lowered)
        index.extend([i] * len(lowered))
    if chars and chars[-1] == " ":
        chars.pop()
        index.pop()
    return "".join(chars), index


class TextIndex:
    """Occurrence finder over one text, at two levels of whitespace tolerance."""

    def __init__(self, text: str):
        self.text = text
        self._levels: Dict[bool, Tuple[str, List[int]]] = {}  # normalised lazily: most mentions match at level 0
        self._cache: Dict[str, List[Tuple[int, int]]] = {}

    def level(self, drop_spaces: bool) -> Tuple[str, List[int]]:
        if drop_spaces not in self._levels:
            self._levels[drop_spaces] = normalize(self.text, drop_spaces)
        return self._levels[drop_spaces]

    def occurrences(self, mention: str) -> List[Tuple[int, int]]:
        if mention in self._cache:
            return self._cache[mention]
        found: List[Tuple[int, int]] = []
        for drop in (False, True):
            needle, _ = normalize(mention, drop)
            if not needle:
                break
            norm_text, index = self.level(drop)
            pos = norm_text.find(needle)
            while pos != -1:
                found.append((index[pos], index[pos + len(needle) - 1] + 1))
                pos = norm_text.find(needle, pos + 1)
            if found:
                break
        self._cache[mention] = found
        return found


def _snap(start: int, end: int, starts: Sequence[int], ends: Sequence[int]) -> Tuple[int, int]:
    """Expand [start, end) to the enclosing token boundaries (starts and ends sorted)."""
    i = bisect.bisect_right(starts, start) - 1
    new_start = starts[i] if i >= 0 else start
    j = bisect.bisect_left(ends, end)
    new_end = ends[j] if j < len(ends) else end
    return new_start, new_end


def _contract(start: int, end: int, starts: Sequence[int], ends: Sequence[int]) -> Optional[Tuple[int, int]]:
    """Contract [start, end) to the tokens wholly inside it (starts and ends sorted); None if there are none."""
    i = bisect.bisect_left(starts, start)
    j = bisect.bisect_right(ends, end) - 1
    if i == len(starts) or j < 0 or starts[i] >= ends[j]:
        return None
    return starts[i], ends[j]


def _off_bounds(occ: List[Tuple[int, int]], mode: str, starts: Sequence[int],
                ends: Sequence[int]) -> List[Tuple[int, int]]:
    """The spans ``mode`` makes of occurrences that cut a token (none in "strict" mode)."""
    if mode == "expand":
        return list(dict.fromkeys(_snap(s, e, starts, ends) for s, e in occ))
    if mode == "contract":
        return list(dict.fromkeys(c for c in (_contract(s, e, starts, ends) for s, e in occ) if c))
    return []


def align_mentions(
    text: str,
    predictions: Iterable[Tuple[str, int, str, float]],
    token_offsets: Optional[Sequence[Tuple[int, int]]] = None,
    mode: str = "expand",
) -> Tuple[List[AlignedSpan], AlignStats]:
    """Character spans for (label, k, mention, prob) predictions, in reading order.

    ``token_offsets`` are the (start, end) character offsets of the text's tokens; when given,
    occurrences on token boundaries are preferred and every span is made of whole tokens, by ``mode``
    (one of ``ALIGNMENT_MODES``) when the mention occurs only across token boundaries.
    """
    if mode not in ALIGNMENT_MODES:
        raise ValueError(f"alignment mode must be one of {', '.join(ALIGNMENT_MODES)}, got {mode!r}")
    stats = AlignStats()
    index = TextIndex(text)
    starts: List[int] = []
    ends: List[int] = []
    boundary_starts: set = set()
    boundary_ends: set = set()
    if token_offsets:
        starts = sorted(s for s, _ in token_offsets)
        ends = sorted(e for _, e in token_offsets)
        boundary_starts, boundary_ends = set(starts), set(ends)
    by_label: Dict[str, List[Tuple[int, str, float]]] = {}
    for label, k, mention, prob in predictions:
        by_label.setdefault(label, []).append((k, mention, prob))
    spans: List[AlignedSpan] = []
    for label, items in by_label.items():
        used: set = set()
        last_start = -1
        for k, mention, prob in sorted(items, key=lambda x: x[0]):
            if not mention.strip():
                stats.empty += 1
                continue
            occ = index.occurrences(mention)
            if not occ:
                stats.not_found += 1
                continue
            if token_offsets:
                on_bounds = [o for o in occ if o[0] in boundary_starts and o[1] in boundary_ends]
                occ = on_bounds or _off_bounds(occ, mode, starts, ends)
                if not occ:
                    stats.misaligned += 1
                    continue
            free = [o for o in occ if o not in used]
            if not free:
                stats.no_free_occurrence += 1
                continue
            after = [o for o in free if o[0] > last_start]
            chosen = after[0] if after else free[0]
            used.add(chosen)
            last_start = chosen[0]
            spans.append(AlignedSpan(chosen[0], chosen[1], label, prob, mention, k))
            stats.aligned += 1
    spans.sort(key=lambda s: (s.start, s.end, s.label))
    return spans, stats
