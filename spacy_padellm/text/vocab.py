"""The tokens a batch's outputs can be made of, from its texts alone (no torch, no spaCy): what ``head_vocab``
"text" computes the LM head over.

A mention is a span of its text, so its tokens are those of the text's words written alone, with or without the
whitespace before them, or of pieces of them: a model may also write a word in pieces other than its own encoding
("SAND" "S" for "SANDS"), so every token whose text lies inside a word counts too. Add the prompts' tokens, the
counts the decoder reads and the tokenizer's special tokens (EOS among them).
"""

from __future__ import annotations

import re
from itertools import chain
from typing import TYPE_CHECKING, Dict, Iterable, List, Optional, Sequence, Set, Tuple

from .chunks import chunks_of

if TYPE_CHECKING:
    from .protocol import PromptEncoder

__all__ = ["batch_vocabulary", "pieces_within", "MAX_PIECE_WORD"]

MAX_PIECE_WORD = 24  # ``pieces_within`` looks inside the first 24 characters of a word
MEMO_WORDS = 200_000  # words whose pieces an encoder keeps (``pieces_within``'s memo)
_PIECES = re.compile(r"\w+|[^\w\s]")  # runs of letters or digits, and every other character but whitespace


def batch_vocabulary(encoder: "PromptEncoder", docs: Sequence[Tuple[str, Sequence[str]]],
                     prefixes: Iterable[Sequence[int]], max_count: int) -> List[int]:
    """The sorted token ids a batch of ``docs`` ((text, labels) each, with their prompt ``prefixes``) can be
    decoded into: the prompts' and label prompts' tokens; each whitespace chunk of the texts encoded alone, with
    and without the whitespace before it, and each run of letters or digits and each other character alone; every
    token whose text lies inside one of those words (``pieces_within``); the counts 0 .. ``max_count``; and the
    tokenizer's special tokens."""
    ids: Set[int] = set(chain.from_iterable(prefixes))
    words: Set[str] = set()
    for text, labels in docs:
        ids.update(chain.from_iterable(encoder.label(label) for label in labels))
        found = chunks_of(text) or text.split()
        words.update(found)
        words.update(w.lstrip() for w in found)
        words.update(_PIECES.findall(text))  # a mention may start or end inside a chunk ("'Macho'")
    words.discard("")
    ids.update(chain.from_iterable(encoder.mentions(sorted(words))))
    ids.update(pieces_within(encoder.token_texts(), words, encoder.memo("pieces_within")))
    ids.update(chain.from_iterable(encoder.count(n) for n in range(max_count + 1)))
    ids.add(encoder.eos_id)
    ids.update(getattr(encoder.tokenizer, "all_special_ids", ()))
    return sorted(ids)


def pieces_within(token_texts: dict, words: Iterable[str], memo: Optional[Dict[str, Tuple[int, ...]]] = None
                  ) -> Set[int]:
    """The ids of every token whose text (``token_texts``: text -> ids) is part of one of ``words`` (stripped, their
    first ``MAX_PIECE_WORD`` characters), or a space and a beginning of one; ``memo``: each word's ids, kept
    across calls with the same ``token_texts`` (at most ``MEMO_WORDS`` words)."""
    found: Set[int] = set()
    for word in {w.strip()[:MAX_PIECE_WORD] for w in words}:
        ids = memo.get(word) if memo is not None else None
        if ids is None:
            ids = _pieces_of(token_texts, word)
            if memo is not None and len(memo) < MEMO_WORDS:
                memo[word] = ids
        found.update(ids)
    return found


def _pieces_of(token_texts: dict, word: str) -> Tuple[int, ...]:
    """``pieces_within`` of one stripped word."""
    found: Set[int] = set()
    for i in range(len(word)):
        for j in range(i + 1, len(word) + 1):
            found.update(token_texts.get(word[i:j], ()))
        found.update(token_texts.get(" " + word[: i + 1], ()))
    return tuple(found)
