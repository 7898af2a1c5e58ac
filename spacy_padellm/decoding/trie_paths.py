"""A text's mention trie as paths of whitespace chunks, its nodes made as decoding reaches them (no torch).

``constraints.candidate_strings`` lists every run of units of a text (about 130 strings for a CoNLL03 sentence), and
``MentionTrie.build`` the long way encodes each and inserts it from the root. Where a mention's ids are its whitespace
chunks' ids joined (``text.chunks``, checked for the tokenizer), the runs starting at one unit are a path: the first
word's part from that unit (one alternative per unit it can end at), then for each later word the whitespace and
that word up to one of its units; a candidate ends at each alternative, and the path goes on from the whole word
only. ``PathTrie`` holds those paths as chunk ids and lists a node's children only when they are asked for, making
a child a node when decoding moves to it: a node is the set of places (path, word, alternative, tokens read) its
token prefix reaches, so it holds the same sequences as the long way (a test checks it on varied texts,
``benchmarks/trie_build.py`` on CoNLL03 sentences), while decoding a sentence's mentions makes a few dozen nodes
instead of every node of ~130 candidates. Strings to exclude (``dedupe_mentions``) leave out the candidates
``candidate_strings`` leaves out, and the places that lead to none but those; each candidate's string is checked
when decoding first reaches it (``Kept``). It applies to the common case only (single spaces between words, no
characters of a script written without spaces, nothing extra); ``build`` goes the long way otherwise. There a
word's paths depend on the word alone, so the trie is assembled from each word's chunk ids, kept with the encoder
across texts.
"""

from __future__ import annotations

from typing import Dict, List, Optional, Sequence, Tuple, Union

from .constraints import _UNIT_RE, MentionTrie, exclusions, is_excluded, needs_char_spans

__all__ = ["PathTrie", "chunk_paths", "path_trie"]


Start = Tuple[int, int, List[str]]  # a path's start: (its word, its offset in the text, its chunks in that word)
Later = Tuple[int, List[str]]  # a later word: (the offset its chunks start at, its chunks)


def chunk_paths(text: str, split_punct: bool) -> Optional[Tuple[List[Start], List[Later]]]:
    """The text's chunks, or None where it is not the common case: per start unit, (its word, its offset, the chunks
    of its word from it, one per unit it can end at, the whole rest of the word last); and per word, (the end of the
    word before it, its chunks as a later word of a path: the whitespace before it, then the word up to each of its
    units, the whole word last). Each word is cut by ``_word_chunks``; in the common case one space lies between
    words."""
    if not _common(text):
        return None
    starts: List[Start] = []
    after: List[Later] = []
    at = len(text) - len(text.lstrip())  # where the word starts
    for w, word in enumerate(text.split()):
        owns, later = _word_chunks(word, split_punct)
        starts.extend((w, at + len(word) - len(own[-1]), own) for own in owns)  # own[-1]: the rest of the word
        after.append((at - 1, later) if w else (at, []))
        at += len(word) + 1
    return starts, after


def _common(text: str) -> bool:
    """Whether ``text`` is the common case: single spaces between words, no script written without spaces."""
    return " ".join(text.split()) == text.strip() and not needs_char_spans(text)


Ids = Tuple[int, ...]
Cursor = Tuple[int, int, int, int]  # (path, level, alternative, tokens of it read)


class PathTrie(MentionTrie):
    """The trie of every candidate of the paths ``starts`` (per path: the alternatives' ids within its start's word,
    the whole rest of the word last; and that word's index) and ``after`` (per word: its alternatives' ids as a later
    word of a path, the whole word last), a path going on over at most ``max_words`` words; given ``kept`` (a
    ``Kept``: whether a candidate (path, level, alternative) is kept), the others are left out. A node's children are
    listed when they are first asked for (``_kids``: token id -> the child's places), and a child is made a node when
    decoding moves to it (``advance``); everything else is ``MentionTrie``'s."""

    def __init__(self, starts: Sequence[Tuple[Sequence[Ids], int]], after: Sequence[Sequence[Ids]], max_words: int,
                 eos_id: Optional[int] = None, kept: Optional["Kept"] = None):
        super().__init__(eos_id=eos_id)
        self._starts = starts
        self._after = after
        self._max_words = max_words
        self._kept = kept
        # per node: None until listed, then token id -> the child's node, or its places until it is made one
        self._children: List[Optional[Dict[int, Union[int, List[Cursor]]]]] = [None]
        self._cursors: List[List[Cursor]] = [[]]  # the root's children come from every path's first level
        self._allowed: Dict[int, List[int]] = {}  # node -> allowed_ids(node)

    def _kids(self, node: int) -> Dict[int, Union[int, List[Cursor]]]:
        kids = self._children[node]
        return kids if kids is not None else self._expand(node)

    def allowed_ids(self, node: int) -> List[int]:
        """As ``MentionTrie.allowed_ids``, listed once per node (the trie's own list: not to be changed)."""
        ids = self._allowed.get(node)
        if ids is None:
            ids = self._allowed[node] = super().allowed_ids(node)
        return ids

    def advance(self, node: Optional[int], token_id: int) -> Optional[int]:
        if node is None:
            return None
        kids = self._kids(node)
        tok = int(token_id)
        child = kids.get(tok)
        if child is None or type(child) is int:
            return child
        child = kids[tok] = self._node(child)
        return child

    def _keeps(self, p: int, lv: int, a: int, n_alts: int) -> bool:
        """Whether a place on candidate (p, lv, a) leads to a kept candidate: itself, or one the whole word goes on to."""
        kept = self._kept
        return kept is None or kept(p, lv, a) or (a == n_alts - 1 and kept.on(p, lv))

    def _expand(self, node: int) -> Dict[int, Union[int, List[Cursor]]]:
        nexts: Dict[int, List[Cursor]] = {}
        starts, after, keeps = self._starts, self._after, self._keeps
        free = self._kept is None  # every candidate kept
        if node == self.root:
            for p, (own, _) in enumerate(starts):
                n = len(own)
                for a, ids in enumerate(own):
                    if free or keeps(p, 0, a, n):
                        nexts.setdefault(ids[0], []).append((p, 0, a, 1))
        last = len(after) - 1
        for p, lv, a, i in self._cursors[node]:
            own, w = starts[p]
            alts = own if lv == 0 else after[w + lv]
            ids = alts[a]
            if i < len(ids):
                nexts.setdefault(ids[i], []).append((p, lv, a, i + 1))
            elif a == len(alts) - 1 and lv + 1 < self._max_words and w + lv < last:
                more = after[w + lv + 1]  # the whole word: on to the next
                n = len(more)
                for b, ids in enumerate(more):
                    if free or keeps(p, lv + 1, b, n):
                        nexts.setdefault(ids[0], []).append((p, lv + 1, b, 1))
        self._children[node] = nexts
        self._cursors[node] = []  # not needed again
        return nexts

    def _node(self, cursors: List[Cursor]) -> int:
        node = len(self._children)
        self._children.append(None)
        self._cursors.append(cursors)
        starts, after, kept = self._starts, self._after, self._kept
        ends = False
        for p, lv, a, i in cursors:
            own, w = starts[p]
            if i == len((own if lv == 0 else after[w + lv])[a]) and (kept is None or kept(p, lv, a)):
                ends = True
                break
        self._ends.append(ends)
        return node

    def _expand_all(self) -> None:
        """Every node made and its children listed."""
        node = 0
        while node < len(self._children):
            kids = self._kids(node)
            for tok, child in kids.items():
                if type(child) is not int:
                    kids[tok] = self._node(child)
            node += 1

    def sequences(self) -> set:
        self._expand_all()
        return super().sequences()

    def __len__(self) -> int:
        self._expand_all()
        return sum(self._ends)

    @property
    def n_nodes(self) -> int:
        self._expand_all()
        return len(self._children)

    def add(self, ids: Sequence[int]) -> None:
        raise TypeError("a PathTrie holds its text's candidates only")

    def add_all(self, sequences) -> None:
        raise TypeError("a PathTrie holds its text's candidates only")


def path_trie(text: str, encoder, max_words: int, split_punct: bool, exclude: Sequence[str] = ()) -> Optional[PathTrie]:
    """The ``PathTrie`` of ``text``'s candidates less those ``exclude`` rules out (``constraints.candidate_strings``);
    None where it does not apply (the text is not the common case, or the encoder has not shown that its mentions'
    ids compose). The paths are assembled from each word's cached ids (``_word_ids``)."""
    chunk_ids = getattr(encoder, "mention_chunk_ids", None)
    if chunk_ids is None or not _common(text):
        return None
    entries = _word_ids(encoder, chunk_ids, text.split(), split_punct)
    if entries is None or None in entries:
        return None
    starts = [(own, w) for w, (owns, _) in enumerate(entries) for own in owns]
    after = [later if w else [] for w, (_, later) in enumerate(entries)]  # no path goes on to the first word
    excluded = exclusions(exclude)
    kept = Kept(text, *chunk_paths(text, split_punct), excluded, max_words) if excluded else None
    return PathTrie(starts, after, max_words, encoder.eos_id, kept)


class Kept:
    """Whether ``is_excluded`` keeps each candidate of a text's paths (``chunk_paths``' ``starts`` and ``after``):
    ``kept(p, lv, a)``, the string from path ``p``'s start to the end of alternative ``a`` of its level ``lv``; and
    ``on(p, lv)``, whether a kept candidate lies beyond that level. Each is worked out when first asked (decoding
    reaches a few dozen of a text's candidates, and most strings exclude nothing)."""

    def __init__(self, text: str, starts: List[Start], after: List[Later], excluded, max_words: int):
        self._text, self._starts, self._after, self._excluded = text, starts, after, excluded
        self._max_words = max_words
        self._kept: Dict[Tuple[int, int, int], bool] = {}
        self._on: Dict[Tuple[int, int], bool] = {}

    def __call__(self, p: int, lv: int, a: int) -> bool:
        key = (p, lv, a)
        found = self._kept.get(key)
        if found is None:
            w, us, own = self._starts[p]
            if lv == 0:
                end = us + len(own[a])
            else:
                begin, word = self._after[w + lv]
                end = begin + len(word[a])
            found = self._kept[key] = not is_excluded(self._text[us: end], self._excluded)
        return found

    def on(self, p: int, lv: int) -> bool:
        key = (p, lv)
        found = self._on.get(key)
        if found is None:
            w = self._starts[p][0]
            found = any(self(p, level, a) for level in range(lv + 1, min(self._max_words, len(self._after) - w))
                        for a in range(len(self._after[w + level][1])))
            self._on[key] = found
        return found


# A word's paths depend on the word alone where words are single-space separated (the common case): kept with the
# encoder (its ``memo``), per ``split_punct``, word -> (its start alternatives' ids, one list per unit; its
# alternatives' ids as a later word), or None where a chunk has no ids. Chunk ids never change once an encoder
# composes, so they are kept across texts.
MAX_CACHED_WORDS = 100_000  # per encoder and split_punct: the memo starts again beyond it
WordIds = Optional[Tuple[List[List[Ids]], List[Ids]]]


def _word_ids(encoder, chunk_ids, words: Sequence[str], split_punct: bool) -> Optional[List[WordIds]]:
    """Each word's entry (kept with the encoder, see above), the missing ones encoded in one ``chunk_ids`` call;
    None where the encoder gives no chunk ids."""
    memo = encoder.memo("trie_words").setdefault(split_punct, {}) if hasattr(encoder, "memo") else {}
    missing = [w for w in dict.fromkeys(words) if w not in memo]
    if missing:
        if len(memo) + len(missing) > MAX_CACHED_WORDS:  # start again, with this text's words
            memo.clear()
            missing = list(dict.fromkeys(words))
        parts = [_word_chunks(w, split_punct) for w in missing]
        flat = [c for owns, later in parts for c in [*(c for own in owns for c in own), *later]]
        ids = chunk_ids(flat)
        if ids is None:
            return None
        at = iter(ids)
        for word, (owns, later) in zip(missing, parts):
            own_ids = [[next(at) for _ in own] for own in owns]
            later_ids = [next(at) for _ in later]
            ok = all(all(own) for own in own_ids) and all(later_ids)
            memo[word] = (own_ids, later_ids) if ok else None
    return [memo[w] for w in words]


def _word_chunks(word: str, split_punct: bool) -> Tuple[List[List[str]], List[str]]:
    """A word's chunks: per unit it can start at, the word from there up to each later unit's end (the whole rest
    last); and the word as a later word of a path (after one space), up to each unit's end."""
    units = [m.span() for m in _UNIT_RE.finditer(word)] if split_punct else [(0, len(word))]
    ends = [ue for _, ue in units]
    return [[word[us: ue] for ue in ends[i:]] for i, (us, _) in enumerate(units)], [" " + word[:ue] for ue in ends]
