"""Parsers of autoregressive outputs, which never raise on garbage: they return what they can read and
count what they cannot (:class:`ParsedOutput`).

AutoRegAug: brackets in the text need no escaping: a mention ends only at ``" | LABEL ]"`` (an opener
``"[ "`` is markup only when a closer matches it, innermost first); unmatched openers and closers are
literal text. Since the output minus its markup is the input, each mention's character offsets come
straight out of the parse; when the stripped output is not the input (the model changed the text), the
(label, mention) strings are returned without offsets and the aligner finds them, as for PaDeLLM.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, field
from typing import Dict, List, Optional, Sequence, Tuple

from .templates import AUTOREG_TEMPLATES, CLOSE, MID, OPEN, AutoRegTemplate

__all__ = ["ParsedOutput", "parse_struct", "parse_aug"]


@dataclass
class ParsedOutput:
    """What a parser found in one output.

    ``mentions`` are (label, mention, start, end) in output order; start/end are character offsets in
    the input text, or None when they are not known (AutoRegStruct, or an AutoRegAug output whose
    text differs from the input). ``unparsable``: struct lines without a label separator, aug markup
    that matches nothing (stray openers/closers) or encloses nothing; ``unknown_labels``: mentions
    (aug) or lines (struct) under a label not in ``labels``, dropped; ``text_mismatch``: the aug output
    minus its markup is not the input (offsets unknown, strings aligned instead).
    """

    mentions: List[Tuple[str, str, Optional[int], Optional[int]]] = field(default_factory=list)
    unparsable: int = 0
    unknown_labels: int = 0
    text_mismatch: bool = False


_LABEL_SEPS = re.compile(r"[:：]")


def parse_struct(output: str, labels: Sequence[str], template: AutoRegTemplate = AUTOREG_TEMPLATES["en"],
                 truncated: bool = False) -> ParsedOutput:
    """(label, mention) pairs of an AutoRegStruct output; never raises on garbage.

    A line is ``LABEL: m1; m2``; the label separator may be ASCII or full-width (``:`` / ``：``),
    mentions are split at the template's separator and stripped. Lines of a label outside ``labels``
    are dropped and counted; lines without a separator are counted as unparsable. With
    ``truncated`` (no EOS) the last line, which may be cut, is dropped.
    """
    result = ParsedOutput()
    if not isinstance(output, str):
        result.unparsable += 1
        return result
    wanted = set(labels)
    lines = output.split("\n")
    if truncated and lines:
        lines = lines[:-1]
    sep = template.mention_sep
    known = sorted(wanted, key=len, reverse=True)  # a label that itself holds a colon is read whole
    for line in lines:
        if not line.strip():
            continue
        body = None
        stripped = line.lstrip()
        for label in known:
            if stripped.startswith(label):
                match = _LABEL_SEPS.match(stripped[len(label):].lstrip())
                if match is not None:
                    body = stripped[len(label):].lstrip()[match.end():]
                    break
        if body is None:
            match = _LABEL_SEPS.search(line)
            if match is None:
                result.unparsable += 1
                continue
            label = line[: match.start()].strip()
            if label not in wanted:
                result.unknown_labels += 1
                continue
            body = line[match.end():]
        for piece in body.split(sep):
            mention = piece.strip()
            if mention:
                result.mentions.append((label, mention, None, None))
    return result


def _closer_regex(labels: Sequence[str], any_label: bool) -> "re.Pattern[str]":
    alts = [re.escape(label) for label in sorted(set(labels), key=len, reverse=True) if label]
    if any_label:
        alts.append(r"[^\s\[\]|]+")
    if not alts:
        alts = [r"(?!)"]
    return re.compile(re.escape(MID) + "(" + "|".join(alts) + ")" + re.escape(CLOSE))


def _aug_events(output: str, closer: "re.Pattern[str]") -> List[Tuple[str, ...]]:
    """The output as events, left to right: ("text", text), ("open", opener) and ("close", label, closer)."""
    events: List[Tuple[str, ...]] = []
    i = 0
    buf: List[str] = []
    while i < len(output):
        if output.startswith(OPEN, i):
            if buf:
                events.append(("text", "".join(buf)))
                buf = []
            events.append(("open", OPEN))
            i += len(OPEN)
            continue
        match = closer.match(output, i)
        if match is not None:
            if buf:
                events.append(("text", "".join(buf)))
                buf = []
            events.append(("close", match.group(1), match.group(0)))
            i = match.end()
            continue
        buf.append(output[i])
        i += 1
    if buf:
        events.append(("text", "".join(buf)))
    return events


def _pair_markup(events: Sequence[Tuple[str, ...]]) -> Dict[int, int]:
    """Openers and closers matched innermost first: opener event -> its closer, closer event -> -1."""
    stack: List[int] = []
    partner: Dict[int, int] = {}
    for idx, ev in enumerate(events):
        if ev[0] == "open":
            stack.append(idx)
        elif ev[0] == "close" and stack:
            partner[stack.pop()] = idx
            partner[idx] = -1
    return partner


def _scan_aug(output: str, labels: Sequence[str], wanted: set, any_label: bool, drop_unmatched_opens: bool):
    """One reading: (stripped text, [(label, start, end)], markup kept as literal text, markup dropped or
    enclosing nothing, mentions of unknown labels)."""
    events = _aug_events(output, _closer_regex(labels, any_label))
    partner = _pair_markup(events)
    literal = 0
    unparsable = 0
    unknown = 0
    pieces: List[str] = []
    pos = 0
    starts: Dict[int, int] = {}
    found: List[Tuple[str, int, int]] = []
    for idx, ev in enumerate(events):
        kind = ev[0]
        if kind == "text":
            pieces.append(ev[1])
            pos += len(ev[1])
        elif kind == "open":
            if idx in partner:
                starts[partner[idx]] = pos
            elif drop_unmatched_opens:
                unparsable += 1
            else:
                literal += 1
                pieces.append(ev[1])
                pos += len(ev[1])
        elif idx in partner:  # a closer with its opener
            label, start = ev[1], starts[idx]
            if label not in wanted:
                unknown += 1
            elif start == pos:
                unparsable += 1
            else:
                found.append((label, start, pos))
        else:  # a closer without an opener: literal text
            literal += 1
            pieces.append(ev[2])
            pos += len(ev[2])
    return "".join(pieces), found, literal, unparsable, unknown


def _aug_candidates(output: str, labels: Sequence[str], truncated: bool) -> List[str]:
    """The output, and with ``truncated`` also the output without a cut opener or closer at its end."""
    candidates = [output]
    if truncated:  # the budget may have cut an opener or a closer: read without the cut piece as well
        pieces = [OPEN] + [MID + label + CLOSE for label in labels]
        longest = max(len(p) for p in pieces)
        for j in range(1, min(len(output), longest) + 1):
            tail = output[-j:]
            if any(p.startswith(tail) for p in pieces):
                candidates.append(output[:-j])
        if MID in output:
            candidates.append(output[: output.rindex(MID)])
    return candidates


def _read_aug(output: str, text: str, labels: Sequence[str], truncated: bool):
    """(the first reading whose text matches ``text``, or None; the very first reading)."""
    wanted = set(labels)
    first = None
    for candidate in _aug_candidates(output, labels, truncated):
        for any_label in (True, False):
            for drop in (False, True):
                reading = _scan_aug(candidate, labels, wanted, any_label, drop)
                first = first or reading
                if reading[0] == text or (truncated and text.startswith(reading[0])):
                    return reading, first
    return None, first


def parse_aug(output: str, text: str, labels: Sequence[str], truncated: bool = False) -> ParsedOutput:
    """(label, mention, start, end) of an AutoRegAug output; never raises on garbage.

    Offsets are exact when the output minus its markup is ``text`` (or, with ``truncated``, a prefix
    of it); otherwise they are None and ``text_mismatch`` is set. Mentions under a label outside
    ``labels`` are dropped and counted. Several readings are tried (closers of any label or of known
    labels only; unmatched openers as literal text or as markup of a cut mention) and the first whose
    text matches the input wins.
    """
    result = ParsedOutput()
    if not isinstance(output, str) or not isinstance(text, str):
        result.unparsable += 1
        return result
    chosen, first = _read_aug(output, text, labels, truncated)
    stripped, found, literal, unparsable, unknown = chosen or first
    exact = chosen is not None
    # Openers and closers read as literal text are the input's own brackets when the text matches.
    result.unparsable = unparsable + (0 if exact else literal)
    result.unknown_labels = unknown
    result.text_mismatch = not exact
    for label, start, end in sorted(found, key=lambda f: (f[1], -f[2])):
        mention = stripped[start:end]
        if not mention.strip():
            result.unparsable += 1
            continue
        if exact:
            # Offsets of the mention without surrounding whitespace.
            lead = len(mention) - len(mention.lstrip())
            trail = len(mention) - len(mention.rstrip())
            result.mentions.append((label, mention.strip(), start + lead, end - trail))
        else:
            result.mentions.append((label, mention.strip(), None, None))
    return result
