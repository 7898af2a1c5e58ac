"""Mention replacement: more training sentences from a small set, each a copy of a sentence whose outermost
mentions are swapped for other mentions of the same label from the same set.

A known help for low-resource NER (Dai and Adel, COLING 2020, "An Analysis of Simple Data Augmentation for Named
Entity Recognition"): the model sees each context with other names in it and each name in other contexts. Nested
data keeps its structure: a mention is replaced with everything nested inside it (the donor's inner mentions come
along, the replaced one's go), and only outermost mentions are replaced, so a copy never breaks a mention in two.
A mention whose extent another one crosses, or shares with a mention of another label, is never replaced.
"""

from __future__ import annotations

import random
from dataclasses import dataclass
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

from spacy.tokens import Doc

from .readers.raw import SpanTuple
from .spans import doc_spans, set_spans

__all__ = ["Mention", "mention_bank", "augment_docs", "check_augment", "replace_mentions", "replaceable"]


@dataclass(frozen=True)
class Mention:
    """An outermost mention as a donor: its words, the spaces after each but the last, its label and the mentions
    nested inside it (offsets from its first word)."""

    words: Tuple[str, ...]
    spaces: Tuple[bool, ...]
    label: str
    inner: Tuple[SpanTuple, ...]


def _tuples(doc: Doc, spans_key: Optional[str]) -> List[SpanTuple]:
    return [(span.start, span.end, span.label_) for span in doc_spans(doc, spans_key)]


def replaceable(spans: Sequence[SpanTuple]) -> List[SpanTuple]:
    """The outermost spans that can be replaced whole: contained in no other span, crossed by none, and sharing
    their extent with no span of another label."""
    out = []
    for start, end, label in spans:
        ok = True
        for s, e, lab in spans:
            if (s, e, lab) == (start, end, label) or e <= start or s >= end:
                continue
            inside = start <= s and e <= end
            if (s, e) == (start, end) or not inside:  # same extent (another label), around it, or crossing it
                ok = False
                break
        if ok:
            out.append((start, end, label))
    return out


def mention_bank(docs: Iterable[Doc], spans_key: Optional[str] = None) -> Dict[str, List[Mention]]:
    """Every replaceable mention of ``docs`` by label, in reading order, each distinct text once."""
    bank: Dict[str, List[Mention]] = {}
    seen = set()
    for doc in docs:
        spans = _tuples(doc, spans_key)
        for start, end, label in replaceable(spans):
            tokens = doc[start:end]
            mention = Mention(words=tuple(t.text for t in tokens),
                              spaces=tuple(bool(t.whitespace_) for t in tokens[:-1]), label=label,
                              inner=tuple((s - start, e - start, lab) for s, e, lab in spans
                                          if start <= s and e <= end and (s, e, lab) != (start, end, label)))
            if (label, mention.words) not in seen:
                seen.add((label, mention.words))
                bank.setdefault(label, []).append(mention)
    return bank


def replace_mentions(doc: Doc, bank: Dict[str, List[Mention]], rng: random.Random, rate: float = 0.5,
                     spans_key: Optional[str] = None) -> Optional[Doc]:
    """A copy of ``doc`` in which each replaceable mention is, with probability ``rate``, swapped for another of
    its label drawn from ``bank`` (a different text); None when nothing was swapped. The copy has the doc's words,
    spaces, sentence starts and spans; other annotations (tags, other span groups) are not carried over."""
    spans = _tuples(doc, spans_key)
    chosen: Dict[int, Tuple[SpanTuple, Mention]] = {}
    for start, end, label in replaceable(spans):
        words = tuple(t.text for t in doc[start:end])
        donors = [m for m in bank.get(label, ()) if m.words != words]
        if donors and rng.random() < rate:
            chosen[start] = ((start, end, label), rng.choice(donors))
    if not chosen:
        return None
    sents = doc.has_annotation("SENT_START")
    words: List[str] = []
    spaces: List[bool] = []
    starts: List[Optional[bool]] = []  # sentence starts, where the doc has them
    new_spans: List[SpanTuple] = []
    shift: Dict[int, int] = {}  # old token index -> new, for the tokens kept
    i = 0
    while i < len(doc):
        if i in chosen:
            (start, end, label), donor = chosen[i]
            at = len(words)
            words.extend(donor.words)
            spaces.extend(donor.spaces + (bool(doc[end - 1].whitespace_),))
            starts.extend([doc[start].is_sent_start] + [False] * (len(donor.words) - 1))
            new_spans.append((at, at + len(donor.words), label))
            new_spans.extend((at + s, at + e, lab) for s, e, lab in donor.inner)
            i = end
            continue
        shift[i] = len(words)
        words.append(doc[i].text)
        spaces.append(bool(doc[i].whitespace_))
        starts.append(doc[i].is_sent_start)
        i += 1
    replaced = [span for span, _ in chosen.values()]
    for start, end, label in spans:
        if any(s <= start and end <= e for s, e, _ in replaced):
            continue  # a replaced span or one inside it: the donor's spans stand in its place
        new_spans.append((shift[start], shift[end - 1] + 1, label))
    out = Doc(doc.vocab, words=words, spaces=spaces, sent_starts=starts if sents else None)
    set_spans(out, sorted(set(new_spans), key=lambda s: (s[0], s[1], s[2])), spans_key)
    return out


def check_augment(copies: int, rate: float) -> None:
    """Raise ``ValueError`` for a number of copies below 0 or a rate outside (0, 1]."""
    if copies < 0:
        raise ValueError(f"copies must be 0 or more, got {copies}")
    if not 0.0 < rate <= 1.0:
        raise ValueError(f"rate must be in (0, 1], got {rate}")


def augment_docs(docs: Sequence[Doc], copies: int, rate: float = 0.5, seed: int = 0,
                 spans_key: Optional[str] = None) -> List[Doc]:
    """``docs`` followed by up to ``copies`` mention-replaced copies of each (``replace_mentions``; the donors are
    the replaceable mentions of ``docs`` themselves). Copies that swapped nothing, or repeat a text already there,
    are left out. The same ``seed`` gives the same copies."""
    check_augment(copies, rate)
    bank = mention_bank(docs, spans_key)
    rng = random.Random(seed)
    texts = {doc.text for doc in docs}
    out = list(docs)
    for _ in range(copies):
        for doc in docs:
            copy = replace_mentions(doc, bank, rng, rate, spans_key)
            if copy is not None and copy.text not in texts:
                texts.add(copy.text)
                out.append(copy)
    return out
