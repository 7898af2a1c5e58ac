"""A text's mention trie built one path per start, from the ids of the text's whitespace chunks (no torch).

``constraints.candidate_strings`` lists every run of units of a text (about 130 strings for a CoNLL03 sentence),
and ``MentionTrie.build`` encodes each and inserts it from the root: the runs that start at one unit share all
but their last chunk, so most of that work is done again and again. Where a mention's ids are its whitespace
chunks' ids joined (``text.chunks``, checked for the tokenizer), the runs starting at one unit are a path through
the trie: the first word's part from that unit, then the whitespace and the next word, and so on, a candidate
ending at each unit boundary on the way. Walking that path inserts each candidate as one chunk from the node of
the run before it. The result holds the same sequences as the long way (a test checks it on varied texts,
``benchmarks/trie_build.py`` on CoNLL03 sentences). It applies to the common case only (single spaces between
words, no characters of a script written without spaces, nothing extra or excluded); ``build`` goes the long way
otherwise.
"""

from __future__ import annotations

from typing import Dict, List, Optional, Tuple

from .constraints import _UNIT_RE, _WORD_RE, MentionTrie, needs_char_spans

__all__ = ["chunk_paths", "walk_paths"]


def chunk_paths(text: str, max_words: int, split_punct: bool) -> Optional[List[Tuple[List[str], List[List[str]]]]]:
    """Per start unit: (the chunks of the start's own word, one per unit it can end at; then per later word, the
    chunks that end at each of its units, the whole word's last). None where the text is not the common case."""
    if " ".join(text.split()) != text.strip() or needs_char_spans(text):
        return None
    words = [(m.start(), m.end()) for m in _WORD_RE.finditer(text)]
    units: List[List[Tuple[int, int]]] = []  # per word, its units
    for ws, we in words:
        units.append([(m.start(), m.end()) for m in _UNIT_RE.finditer(text, ws, we)] if split_punct else [(ws, we)])
    # per word after the first: its chunks as a later word (the whitespace before it, then up to each unit's end)
    after = [[]] + [[text[words[v - 1][1]: ue] for _, ue in units[v]] for v in range(1, len(words))]
    paths = []
    for w in range(len(words)):
        later = after[w + 1: w + max_words]
        for i, (us, _) in enumerate(units[w]):
            paths.append(([text[us: ue] for _, ue in units[w][i:]], later))
    return paths


def walk_paths(trie: MentionTrie, paths, chunk_ids: Dict[str, Tuple[int, ...]]) -> None:
    """Insert every candidate of ``paths`` (``chunk_paths``) into ``trie``, chunk ids from ``chunk_ids``."""
    for own, later in paths:
        node = 0
        for chunk in own:  # ends within the start's word: each from the root
            node = trie._insert(0, chunk_ids[chunk])
            trie._end(node)
        for chunks in later:  # ``node``: the end of the run so far, the last word whole
            for chunk in chunks:
                end = trie._insert(node, chunk_ids[chunk])
                trie._end(end)
            node = end
