"""Many mention strings encoded from the cached ids of their whitespace chunks (no torch, no spaCy).

The mention trie of a document holds every candidate span of its text (about 130 strings for a CoNLL03
sentence), and encoding them one by one costs more host time than the model's forward on a GPU. Candidates
overlap: "United Arab Emirates" is "United" + " Arab" + " Emirates", each of which recurs in other candidates
and other documents. A byte-level BPE tokenizer whose pre-tokenizer splits before whitespace encodes a string as
the concatenation of its chunks' encodings (a chunk: the whitespace before a word, and the word), so the ids of
each chunk are cached and joined.

Whether a tokenizer behaves so is checked, never assumed: on probe strings before the first use, then on
every string of the first ``CHECKED_CALLS`` calls. Any difference turns composition off for good and every
string is encoded whole, as before.
"""

from __future__ import annotations

import re
from itertools import chain
from typing import Callable, Dict, List, Optional, Sequence, Tuple

__all__ = ["ChunkedEncoder", "CHUNK_PROBES", "CHECKED_CALLS", "chunks_of"]

_CHUNK_RE = re.compile(r"\s*\S+")
# Strings composition is checked on before the first use: spaces, tabs and newlines between words, runs of
# spaces, punctuation and digits inside and between words, contractions, accents, CJK, long words.
CHUNK_PROBES = (
    "United Arab Emirates", "EU rejects German call to boycott British lamb .", "New York-based Mc Donald's",
    "1996-12-06 results : 3-1 ( 2-0 )", "two  spaces\tand a\ntab", "Ärzte in São Paulo , Köln", "U.S. Open",
    "日本 東京 大阪", "don't we'll I'm", "x" * 40 + " yy", "a\n\nb  \tc", "$ 1,234.5 million",
)
CHECKED_CALLS = 4
MAX_CACHED_CHUNKS = 200_000


def chunks_of(text: str) -> Optional[List[str]]:
    """``text`` cut before each run of whitespace that precedes a word; None when it ends with whitespace
    (the chunks could not hold it)."""
    if text[-1:].isspace():
        return None
    return _CHUNK_RE.findall(text)  # the chunks cover a text that does not end with whitespace


class ChunkedEncoder:
    """``encode(strings)`` gives what ``encode_many(strings)`` gives, composed from cached chunk ids once
    composition has been checked to agree (see the module doc)."""

    def __init__(self, encode_many: Callable[[Sequence[str]], List[List[int]]]):
        self._encode_many = encode_many
        self._ids: Dict[str, Tuple[int, ...]] = {}
        self.ok: Optional[bool] = None  # None: not checked yet
        self.checked_calls = 0

    def encode(self, strings: Sequence[str]) -> List[List[int]]:
        strings = list(strings)
        if self.ok is None:
            self.ok = self._agrees(list(CHUNK_PROBES))
        if not self.ok or not strings:
            return self._encode_many(strings)
        if self.checked_calls < CHECKED_CALLS:
            self.checked_calls += 1
            direct = self._encode_many(strings)
            self.ok = self._compose(strings) == direct
            return direct
        return self._compose(strings)

    @property
    def composes(self) -> bool:
        """Whether composition has been checked on probes and on the first ``CHECKED_CALLS`` calls and agreed."""
        return bool(self.ok) and self.checked_calls >= CHECKED_CALLS

    def chunk_ids(self, chunks: Sequence[str]) -> List[Tuple[int, ...]]:
        """The cached ids of each chunk (a string ``chunks_of`` gives as one chunk), encoding the missing ones in
        one call. Only meaningful where ``composes``."""
        self._cache(set(chunks))
        return [self._ids[c] for c in chunks]

    def _agrees(self, strings: List[str]) -> bool:
        return self._compose(strings) == self._encode_many(strings)

    def _compose(self, strings: List[str]) -> List[List[int]]:
        chunked = [chunks_of(s) for s in strings]
        whole = [s for s, chunks in zip(strings, chunked) if chunks is None]
        self._cache({c for chunks in chunked if chunks for c in chunks})
        whole_ids = iter(self._encode_many(whole)) if whole else iter(())
        ids = self._ids
        return [next(whole_ids) if chunks is None else list(chain.from_iterable(map(ids.__getitem__, chunks)))
                for chunks in chunked]

    def _cache(self, chunks: set) -> None:
        """Encode the ``chunks`` not cached yet (the cache starts again when it would grow too large)."""
        missing = [c for c in chunks if c not in self._ids]
        if len(self._ids) + len(missing) > MAX_CACHED_CHUNKS:
            self._ids.clear()
            missing = list(chunks)
        for chunk, ids in zip(missing, self._encode_many(missing) if missing else []):
            self._ids[chunk] = tuple(ids)
