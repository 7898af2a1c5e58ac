"""Training targets of the autoregressive protocols: sentences grouped from PaDeLLM's per-(label, k)
records, their mentions located in the text, and the AutoRegStruct and AutoRegAug output strings.

The AutoRegAug markup adds exactly ``"[ "`` before a mention and ``" | LABEL ]"`` after it, so the
output minus its markup is the input, character for character. Nested mentions nest:
``[ [ IL-2 | protein ] gene | DNA ]``; crossing spans cannot be written and are dropped from the targets.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

from ..text.protocol import TrainingExample
from .templates import AUTOREG_TEMPLATES, CLOSE, MID, OPEN, AutoRegTemplate

__all__ = ["Sentence", "group_records", "locate_mentions", "struct_target", "aug_target"]


@dataclass
class Sentence:
    """One training sentence: its text, (label, mention) pairs (reading order within a label), and the
    character spans (start, end, label) when they are known exactly (training from a DocBin)."""

    text: str
    mentions: List[Tuple[str, str]] = field(default_factory=list)
    spans: Optional[List[Tuple[int, int, str]]] = None


def group_records(records: Iterable[TrainingExample]) -> List[Sentence]:
    """Sentences from the per-(label, k) records of a ``.padellm.jsonl`` file, in file order.

    ``convert`` writes, for each doc, one record per (label, k) (or one count-0 record per empty label),
    so a text repeats once per label. Records are grouped by text; a (label, k) that the open group of
    that text already has starts a new sentence (the same text occurring again as another doc).
    """
    groups: List[Tuple[str, Dict[str, Dict[int, str]]]] = []
    open_: Dict[str, int] = {}
    for rec in records:
        g = open_.get(rec.text)
        key_k = rec.k if rec.count > 0 else 0
        if g is None or key_k in groups[g][1].get(rec.label, {}):
            g = len(groups)
            groups.append((rec.text, {}))
            open_[rec.text] = g
        groups[g][1].setdefault(rec.label, {})[key_k] = rec.mention
    sentences = []
    for text, by_label in groups:
        mentions = [(label, by_k[k]) for label, by_k in by_label.items() for k in sorted(by_k) if k > 0]
        sentences.append(Sentence(text, mentions))
    return sentences


def _on_word_bounds(text: str, start: int, end: int) -> bool:
    return (start == 0 or not text[start - 1].isalnum()) and (end == len(text) or not text[end].isalnum())


def locate_mentions(text: str, mentions: Sequence[Tuple[str, str]]) -> Tuple[List[Tuple[int, int, str]], int]:
    """Character spans for (label, mention) pairs listed in reading order within each label.

    The k-th mention of a label takes the next occurrence of its string after the label's previous
    mention, preferring occurrences on word boundaries and not yet taken by another label. Returns
    (spans, number of mentions not found in the text).
    """
    taken_any: set = set()
    last: Dict[str, int] = {}
    used: Dict[str, set] = {}
    spans: List[Tuple[int, int, str]] = []
    missing = 0
    for label, mention in mentions:
        if not mention:
            missing += 1
            continue
        occ = []
        pos = text.find(mention)
        while pos != -1:
            occ.append((pos, pos + len(mention)))
            pos = text.find(mention, pos + 1)
        mine = used.setdefault(label, set())
        free = [o for o in occ if o not in mine]
        if not free:
            missing += 1
            continue

        def rank(o):
            return (o[0] <= last.get(label, -1), not _on_word_bounds(text, *o), o in taken_any, o[0])

        chosen = min(free, key=rank)
        mine.add(chosen)
        taken_any.add(chosen)
        last[label] = chosen[0]
        spans.append((chosen[0], chosen[1], label))
    return spans, missing


def struct_target(mentions: Sequence[Tuple[str, str]], labels: Sequence[str],
                  template: AutoRegTemplate = AUTOREG_TEMPLATES["en"]) -> str:
    """The AutoRegStruct output string (EOS not included): one line per label with mentions."""
    by_label: Dict[str, List[str]] = {}
    for label, mention in mentions:
        if label not in labels:
            raise ValueError(f"Mention {mention!r} has label {label!r}, which is not in the label set {list(labels)}")
        by_label.setdefault(label, []).append(mention)
    lines = [label + template.label_sep + template.mention_sep.join(by_label[label])
             for label in labels if by_label.get(label)]
    return "\n".join(lines)


def _nestable(spans: Sequence[Tuple[int, int, str]]) -> Tuple[List[Tuple[int, int, str]], int]:
    """Spans without crossings (outer first); crossing and empty spans are dropped and counted."""
    kept: List[Tuple[int, int, str]] = []
    dropped = 0
    for s in sorted(dict.fromkeys(spans), key=lambda s: (s[0], -s[1])):
        if s[1] <= s[0] or any(a[0] < s[0] < a[1] < s[1] or s[0] < a[0] < s[1] < a[1] for a in kept):
            dropped += 1
            continue
        kept.append(s)
    return kept, dropped


def aug_target(text: str, spans: Sequence[Tuple[int, int, str]]) -> Tuple[str, int]:
    """The AutoRegAug output string (EOS not included) for character spans (start, end, label), and the
    number of spans dropped because they cross another one (or are empty)."""
    kept, dropped = _nestable(spans)
    opens: Dict[int, List[int]] = {}
    closes: Dict[int, List[int]] = {}
    for i, (start, end, _) in enumerate(kept):  # kept is outer-first: open in this order, close in reverse
        opens.setdefault(start, []).append(i)
        closes.setdefault(end, []).append(i)
    out: List[str] = []
    for pos in range(len(text) + 1):
        for i in sorted(closes.get(pos, ()), reverse=True):
            out.append(MID + kept[i][2] + CLOSE)
        for _ in opens.get(pos, ()):
            out.append(OPEN)
        if pos < len(text):
            out.append(text[pos])
    return "".join(out), dropped
