"""Mentions that can only be spans of the text: a prefix trie over the token ids of candidate substrings.

The mention step of PaDeLLM writes a string that the aligner must then find in the text; a string that is
not there is dropped. Constrained decoding rules that out: for one document text, every candidate
substring is encoded exactly as ``PromptEncoder.mention()`` encodes a training target (on its own, no
leading space), and the id sequences go into a prefix trie. At each mention step the allowed next tokens
are the children of the current trie node, plus EOS when the node ends a candidate.

Candidates (all of them, so the trie accepts any span the aligner can place):

* runs of up to ``max_words`` whitespace-separated words (as they are in the text, and with whitespace
  runs collapsed to one space when that differs);
* with ``split_punct`` (default), the same over finer units: runs of word characters and single
  punctuation marks, so ``Japan`` is a candidate in ``Japan's`` and ``U.S.`` in ``U.S.-based``;
* for texts in scripts written without spaces (Chinese, Japanese, Thai, ...; ``char_spans=None`` detects
  them), every substring of up to ``max_chars`` characters that neither starts nor ends with whitespace;
* any ``extra`` strings given;

less the ``exclude`` strings, every candidate that contains one of them (on unit boundaries), and every
candidate whose words are all words of one of them (with ``exclude={"Naoki Soma"}``, none of ``Naoki``,
``Soma ,``, ``Naoki Soma`` and ``Naoki Soma , Norio`` is a candidate, but ``Somalia`` and
``Masami Soma`` are).

``redecode_plan`` is the de-duplication lever's rule, shared by the engines: which mentions of one label
repeat a string more often than the text holds it, and must be decoded again with the strings already
claimed excluded.

The trie knows nothing of torch or of an engine: a node is an int, ``allowed(node)`` gives the ids a
step may write, ``advance(node, id)`` moves on, and ``pick(node, candidates)`` chooses the best allowed
id among an engine's top-k candidates (in score order), or None when none of them is allowed (the
engine then decides: mask the full distribution, force EOS when ``eos_ok``, or drop the mention).
"""

from __future__ import annotations

import re
from bisect import bisect_left
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

__all__ = ["MentionTrie", "candidate_strings", "needs_char_spans", "redecode_plan"]

_WORD_RE = re.compile(r"\S+")
_UNIT_RE = re.compile(r"\w+|[^\w\s]", re.UNICODE)
_WORD_CHARS_RE = re.compile(r"\w+", re.UNICODE)

# Scripts written without spaces between words: character spans are candidates there.
_NO_SPACE_RANGES = (
    (0x0E00, 0x0EFF),  # Thai, Lao
    (0x1000, 0x109F),  # Myanmar
    (0x1780, 0x17FF),  # Khmer
    (0x2E80, 0x2FDF),  # CJK radicals
    (0x3000, 0x30FF),  # CJK punctuation, Hiragana, Katakana
    (0x3100, 0x31FF),  # Bopomofo, Katakana extensions
    (0x3400, 0x4DBF),  # CJK extension A
    (0x4E00, 0x9FFF),  # CJK unified ideographs
    (0xF900, 0xFAFF),  # CJK compatibility ideographs
    (0xFF00, 0xFFEF),  # full-width forms
    (0x20000, 0x3134F),  # CJK extensions B-G
)


_NO_SPACE_RE = re.compile("[" + "".join(f"{chr(lo)}-{chr(hi)}" for lo, hi in _NO_SPACE_RANGES) + "]")


def needs_char_spans(text: str) -> bool:
    """Whether ``text`` has characters of a script written without spaces (CJK, Thai, ...)."""
    return _NO_SPACE_RE.search(text) is not None


def _run_texts(text: str, units: Sequence[Tuple[int, int]], word_of: Sequence[int], max_words: int) -> List[str]:
    """The text of each run of consecutive ``units`` that covers at most ``max_words`` words (``word_of``: each
    unit's word, non-decreasing), by start then end."""
    ends = [end for _, end in units]
    out: List[str] = []
    for i, (start, _) in enumerate(units):
        stop = bisect_left(word_of, word_of[i] + max_words, i)
        out.extend([text[start:end] for end in ends[i:stop]])
    return out


def candidate_strings(
    text: str,
    *,
    max_words: int = 12,
    split_punct: bool = True,
    char_spans: Optional[bool] = None,
    max_chars: int = 24,
    extra: Iterable[str] = (),
    exclude: Iterable[str] = (),
) -> List[str]:
    """The candidate mention strings of ``text`` (see the module doc), de-duplicated, in a stable order."""
    found: Dict[str, None] = {}
    # in a text whose only inner whitespace is single spaces, no run of units (never empty, never with whitespace at
    # either end) collapses to another string: ``put`` adds them as they are
    collapses = " ".join(text.split()) != text.strip()

    def add(s: str) -> None:
        if s and not s[0].isspace() and not s[-1].isspace():
            found[s] = None
            collapsed = " ".join(s.split())
            if collapsed != s:
                found[collapsed] = None

    words = [(m.start(), m.end()) for m in _WORD_RE.finditer(text)]
    put = add if collapses else found.setdefault
    for s in _run_texts(text, words, range(len(words)), max_words):
        put(s)
    if split_punct:
        units: List[Tuple[int, int]] = []
        word_of: List[int] = []
        for w, (ws, we) in enumerate(words):
            for m in _UNIT_RE.finditer(text, ws, we):
                units.append((m.start(), m.end()))
                word_of.append(w)
        for s in _run_texts(text, units, word_of, max_words):
            put(s)
    if char_spans is None:
        char_spans = needs_char_spans(text)
    if char_spans:
        for i in range(len(text)):
            for j in range(i + 1, min(len(text), i + max_chars) + 1):
                add(text[i:j])
    for s in extra:
        add(s)
    excluded = exclusions(exclude)
    if excluded:
        return [c for c in found if not is_excluded(c, excluded)]
    return list(found)


def exclusions(exclude: Iterable[str]) -> List[Tuple[str, set]]:
    """The strings to exclude (``candidate_strings``' ``exclude``), each with the set of its words, for ``is_excluded``."""
    return [(e, set(_WORD_CHARS_RE.findall(e))) for e in dict.fromkeys(exclude) if e]


def is_excluded(candidate: str, excluded: Sequence[Tuple[str, set]]) -> bool:
    """Whether the rule of ``candidate_strings`` leaves ``candidate`` out: its words are all words of an excluded
    string, or it holds one on unit boundaries (``excluded``: from ``exclusions``)."""
    words = set(_WORD_CHARS_RE.findall(candidate))
    return any(words <= theirs or _contains(candidate, e) for e, theirs in excluded)


def _contains(big: str, small: str) -> bool:
    """Whether ``small`` occurs in ``big`` without cutting a run of letters or digits."""
    start = big.find(small)
    while start != -1:
        end = start + len(small)
        if (start == 0 or not (big[start - 1].isalnum() and big[start].isalnum())) and \
                (end == len(big) or not (big[end - 1].isalnum() and big[end].isalnum())):
            return True
        start = big.find(small, start + 1)
    return False


def redecode_plan(text: str, mentions: Sequence[Tuple[object, str, float]]) -> Tuple[List[object], List[str]]:
    """Which mentions of one (text, label) to decode again, and the strings to exclude when doing so.

    ``mentions`` are (key, mention string, probability), in k order. A string written more often than
    it occurs in the text (occurrences as the aligner finds them: case- and whitespace-tolerant) keeps
    its most probable mentions, as many as it has occurrences; the others are returned (their keys, in
    the order given) to be decoded again. The strings to exclude are those whose occurrences are all
    claimed by the mentions kept. Strings that do not occur at all are left alone (the aligner drops
    them; constrained decoding never writes them).
    """
    from ..text.align import TextIndex

    index = TextIndex(text)
    by_string: Dict[str, List[Tuple[int, object, float]]] = {}
    for pos, (key, mention, prob) in enumerate(mentions):
        by_string.setdefault(mention, []).append((pos, key, prob))
    redo: List[Tuple[int, object]] = []
    excluded: List[str] = []
    for mention, items in by_string.items():
        if not mention.strip():
            continue
        n = len(index.occurrences(mention))
        if n == 0:
            continue
        if len(items) >= n:
            excluded.append(mention)
        if len(items) > n:
            ranked = sorted(items, key=lambda x: (-x[2], x[0]))
            redo.extend((pos, key) for pos, key, _ in ranked[n:])
    return [key for _, key in sorted(redo, key=lambda x: x[0])], excluded


class MentionTrie:
    """A prefix trie over token id sequences; nodes are ints, ``root`` is 0.

    ``allowed(node)`` -> (child token ids, whether EOS may follow); ``advance(node, id)`` -> the next node
    (None when ``id`` is not allowed there); ``pick(node, candidate_ids)`` -> the first allowed id of
    ``candidate_ids`` (EOS included when the node ends a sequence), or None.
    """

    root = 0

    def __init__(self, sequences: Iterable[Sequence[int]] = (), eos_id: Optional[int] = None):
        self.eos_id = eos_id
        self._children: List[Dict[int, int]] = [{}]
        self._ends: List[bool] = [False]
        self.n_sequences = 0
        for ids in sequences:
            self.add(ids)

    @classmethod
    def build(
        cls,
        text: str,
        encoder,
        *,
        max_words: int = 12,
        split_punct: bool = True,
        char_spans: Optional[bool] = None,
        max_chars: int = 24,
        extra: Iterable[str] = (),
        exclude: Iterable[str] = (),
    ) -> "MentionTrie":
        """The trie of every candidate substring of ``text``, each encoded as ``encoder.mention()`` does
        (a ``PromptEncoder``: the tokenisation a mention has in training targets)."""
        if not extra and not char_spans:
            from .trie_paths import path_trie

            trie = path_trie(text, encoder, max_words, split_punct, tuple(exclude))
            if trie is not None:
                return trie
        trie = cls(eos_id=encoder.eos_id)
        strings = candidate_strings(text, max_words=max_words, split_punct=split_punct, char_spans=char_spans,
                                    max_chars=max_chars, extra=extra, exclude=exclude)
        trie.add_all(encoder.mentions(strings))  # one tokenizer call for all (the same ids as mention())
        return trie

    def add(self, ids: Sequence[int]) -> None:
        """Add one sequence (empty sequences are ignored: a mention has at least one token)."""
        if ids:
            self._end(self._insert(0, ids))

    def add_all(self, sequences: Iterable[Sequence[int]]) -> None:
        """``add`` each of ``sequences`` in turn; one that extends the sequence before it (a run of words one word
        longer) goes on from the node where that one ended instead of walking its prefix again."""
        prev: List[int] = []
        node = 0
        for ids in sequences:
            ids = ids if type(ids) is list else list(ids)
            n = len(prev)
            if n and len(ids) > n and ids[:n] == prev:
                node = self._insert(node, ids[n:])
            elif ids:
                node = self._insert(0, ids)
            else:
                continue
            self._end(node)
            prev = ids

    def _insert(self, node: int, ids: Sequence[int]) -> int:
        """The node after ``ids`` from ``node``, adding the nodes missing on the way."""
        children, ends = self._children, self._ends
        for tok in ids:
            tok = int(tok)
            nxt = children[node].get(tok)
            if nxt is None:
                nxt = children[node][tok] = len(children)
                children.append({})
                ends.append(False)
            node = nxt
        return node

    def _end(self, node: int) -> None:
        if not self._ends[node]:
            self._ends[node] = True
            self.n_sequences += 1

    def _kids(self, node: int) -> Dict[int, int]:
        """The children of ``node`` (token id -> node)."""
        return self._children[node]

    def __len__(self) -> int:
        return self.n_sequences

    @property
    def n_nodes(self) -> int:
        return len(self._children)

    def allowed(self, node: int) -> Tuple[List[int], bool]:
        """(token ids that may come next, whether the sequence may end here with EOS)."""
        return list(self._kids(node)), self._ends[node]

    def allowed_ids(self, node: int) -> List[int]:
        """The ids that may come next, EOS included when the node ends a sequence."""
        ids = list(self._kids(node))
        if self._ends[node] and self.eos_id is not None:
            ids.append(self.eos_id)
        return ids

    def advance(self, node: Optional[int], token_id: int) -> Optional[int]:
        """The node after ``token_id``; None when it is not allowed (or ``node`` is None)."""
        if node is None:
            return None
        return self._kids(node).get(int(token_id))

    def walk(self, ids: Sequence[int], node: int = 0) -> Optional[int]:
        """The node reached by ``ids`` from ``node``; None when they leave the trie."""
        for tok in ids:
            node = self.advance(node, tok)
            if node is None:
                return None
        return node

    def ends(self, node: int) -> bool:
        return self._ends[node]

    def sequences(self) -> set:
        """Every whole sequence of the trie, as tuples of ids."""
        out, stack = set(), [(0, ())]
        while stack:
            node, path = stack.pop()
            if self._ends[node]:
                out.add(path)
            stack.extend((child, path + (tok,)) for tok, child in self._kids(node).items())
        return out

    def contains(self, ids: Sequence[int]) -> bool:
        """Whether ``ids`` is a whole sequence of the trie (not only a prefix)."""
        node = self.walk(ids)
        return node is not None and self._ends[node]

    def pick(self, node: int, candidate_ids: Iterable[int]) -> Optional[int]:
        """The first of ``candidate_ids`` (best first) that is allowed at ``node``; None when none is.

        EOS (``self.eos_id``) counts as allowed where the node ends a sequence.
        """
        children = self._kids(node)
        ends = self._ends[node]
        for tok in candidate_ids:
            tok = int(tok)
            if tok in children or (ends and tok == self.eos_id):
                return tok
        return None
