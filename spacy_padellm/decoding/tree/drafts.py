"""Drafts: guesses fed as extra branches in the same pass as the tokens decoding needs, verified by the model.

A draft is a chain of tokens the decoder guesses the model will write next, fed on a child branch with a
prediction wanted at every token. The model's own predictions then verify it: the longest prefix of the
draft that agrees with them is kept (it is exactly what greedy decoding would have written), plus the
model's own next token, and the rest is forgotten. Greedy output never changes; a good guess saves passes.

* **mention drafts**, copied from the text: a mention is almost always a span of the text, so once its first
  token is known, the text's continuation after each occurrence of the mention so far (``MentionDrafter``:
  up to ``max_drafts`` with different next tokens, ``draft_tokens`` tokens each) is fed with the mention's
  confirmed token; a whole mention typically costs one pass after its first token instead of one per token.
  The draft sources of a pass are encoded in one tokenizer call (``MentionDrafter.prefetch``).
* **count drafts**: the counts 0 .. count_drafts - 1 (``count_chains``), each with its mention tags, are fed
  after every label prompt in the first pass, so a count the model confirms yields its mentions' first tokens
  in that same pass. A label's count drafts are one fixed tree of chains (``count_subtree``), laid down in one
  go (``feed_count_drafts``).
* **span drafts**: after each drafted mention tag, a few candidate mentions copied from the text (runs of
  capitalised words and numbers, ``span_starts``), so that a mention starting there is confirmed in the first
  pass too: a sentence whose counts and mentions are all drafted decodes in one pass.
* **prompt lookup** (``_PromptLookup``), for plain greedy ``generate``: the tokens that followed the last
  generated one or two in the prompt.
"""

from __future__ import annotations

import re
from typing import Dict, Iterator, List, Sequence, Tuple

from ..types import DecoderStats
from ...text.protocol import PromptEncoder, parse_count
from .batch import TreeBatch, _Subtree

# -- span drafts: candidate mentions copied from the text --

_WORD = re.compile(r"\S+")


def span_starts(text: str, source: str, n_drafts: int, max_words: int) -> List[str]:
    """Where a mention of the text may start, and what it may be: at most ``2 * n_drafts`` strings to encode.

    "runs" (``source``): each run of capitalised words or numbers (words split at whitespace), from its first
    word to its end, at most ``max_words`` words; runs in text order, then the same from each later word of a
    run ("SOCCER - JAPAN GET LUCKY WIN": "SOCCER", "JAPAN GET LUCKY WIN", then "GET LUCKY WIN", ...). A mention
    is mostly a whole run or its start ("Nadim Ladki", "German"), so a draft ends where its run does and single
    words cost one or two tokens. "words": the text's next 4 words from each capitalised word or number.
    """
    words = [(m.start(), m.end(), m.group()[0]) for m in _WORD.finditer(text)]
    cap = [c.isupper() or c.isdigit() for _, _, c in words]
    limit = 2 * n_drafts
    if source == "words":
        return [" ".join(text[start:].split(" ")[:4]) for (start, _, _), c in zip(words, cap) if c][:limit]
    n, most = len(words), max_words
    firsts, inner = [], []
    i = 0
    while i < n:
        if not cap[i]:
            i += 1
            continue
        j = i
        while j < n and cap[j]:
            j += 1
        for s in range(i, j):  # the run words[i:j], and its tails
            (firsts if s == i else inner).append(text[words[s][0]: words[min(j, s + most) - 1][1]])
        i = j
    return (firsts + inner)[:limit]


def span_drafts_of(starts: Sequence[List[str]], encoded: Sequence[List[int]], n_drafts: int,
                   max_tokens: int) -> List[List[List[int]]]:
    """The span drafts of each text from its ``starts`` and their encodings (``encoded``, all texts' in order):
    up to ``n_drafts`` per text, at most ``max_tokens`` tokens each, with different first tokens."""
    ids = iter(encoded)
    out = []
    for found in starts:
        drafts: Dict[int, List[int]] = {}
        for _ in found:
            d = next(ids)[:max_tokens]
            if d and len(drafts) < n_drafts:
                drafts.setdefault(d[0], d)
        out.append(list(drafts.values()))
    return out


def within_budget(drafts: List[List[int]], budget: int) -> List[List[int]]:
    """The first drafts whose tokens add up to at most ``budget``."""
    out, used = [], 0
    for d in drafts:
        if used + len(d) > budget:
            break
        out.append(d)
        used += len(d)
    return out


# -- mention drafts: how the text goes on after the mention so far --


def continuations(text: str, so_far: str, max_drafts: int, draft_tokens: int) -> Iterator[str]:
    """What follows each occurrence of ``so_far`` in ``text`` (a few words; at most 4 * max_drafts)."""
    start = text.find(so_far)
    tries = 0
    while start != -1 and tries < 4 * max_drafts:
        tries += 1
        rest = text[start + len(so_far): start + len(so_far) + 12 * draft_tokens]
        words = rest.split(" ")
        yield " ".join(words[:5]) if len(words) > 5 else rest
        start = text.find(so_far, start + 1)


class MentionDrafter:
    """Mention drafts copied from the text, with the caches of one drafting pass: the decoded mentions so far
    and the encoded draft sources (``prefetch`` fills them; pure functions of their keys)."""

    def __init__(self, encoder: PromptEncoder):
        self.encoder = encoder
        self._so_far_texts: Dict[Tuple[int, ...], str] = {}
        self._mention_ids: Dict[str, List[int]] = {}

    def so_far(self, ids: List[int]) -> str:
        """The decoded mention so far (cached for the pass)."""
        key = tuple(ids)
        text = self._so_far_texts.get(key)
        if text is None:
            text = self._so_far_texts[key] = self.encoder.tokenizer.decode(ids, skip_special_tokens=True)
        return text

    def prefetch(self, items: Sequence[Tuple[str, List[int]]], max_drafts: int, draft_tokens: int) -> None:
        """Encode in one tokenizer call every string ``drafts`` may encode for ``items`` (text, ids) this pass;
        it then finds them in ``_mention_ids``. Only saves time: the ids are the same."""
        self._so_far_texts = {}
        self._mention_ids = {}
        if not items:
            return
        wanted: Dict[str, None] = {}
        for text, ids in items:
            so_far = self.so_far(ids)
            if not so_far.strip() or "\ufffd" in so_far:
                continue
            for rest in continuations(text, so_far, max_drafts, draft_tokens):
                if rest:
                    wanted[so_far + rest] = None
        strings = list(wanted)
        self._mention_ids = dict(zip(strings, self.encoder.mentions(strings)))

    def drafts(self, text: str, ids: List[int], max_drafts: int, draft_tokens: int) -> List[List[int]]:
        """Up to ``max_drafts`` token sequences that would continue the mention ``ids`` if it went on as the text
        does after one of the occurrences of the mention so far (``draft_tokens`` tokens at most, with different
        first tokens); [] when the text has none."""
        enc = self.encoder
        so_far = self.so_far(ids)
        if not so_far.strip() or "\ufffd" in so_far:
            return []
        drafts: Dict[int, List[int]] = {}
        for rest in continuations(text, so_far, max_drafts, draft_tokens):
            if len(drafts) >= max_drafts:
                break
            if rest:
                full = self._mention_ids.get(so_far + rest)
                if full is None:
                    full = enc.mention(so_far + rest)
                if len(full) > len(ids) and full[: len(ids)] == ids:
                    d = full[len(ids): len(ids) + draft_tokens]
                    drafts.setdefault(d[0], d)
        return list(drafts.values())


# -- count drafts: the small counts and their mention tags, fed with the label prompts --


def count_chains(enc: PromptEncoder, count_drafts: int, max_count_tokens: int) -> List[Tuple[int, List[int]]]:
    """(n, the count's tokens as greedy decoding writes them) for each drafted count n < ``count_drafts``: only
    chains greedy decoding would write in full (no token before the last ends the count, the last does by
    itself, and it is not longer than ``max_count_tokens``, where plain decoding stops a count)."""
    return [(n, ids) for n, ids in ((n, enc.count(n)) for n in range(count_drafts))
            if ids and len(ids) <= max_count_tokens and enc.ends_count(ids[-1])
            and not any(enc.ends_count(t) for t in ids[:-1])
            and ids[-1] != enc.eos_id and parse_count(enc.decode(ids), enc.template) == n]


def count_draft_cols(enc: PromptEncoder, chains) -> int:
    """Columns one label's count drafts take with their mention tags (span drafts not included)."""
    return sum(len(ids) + sum(len(enc.mention_tag(k)) for k in range(1, n + 1)) for n, ids in chains)


def count_subtree(enc: PromptEncoder, chains, spans: Sequence[List[int]],
                  shapes: Dict[tuple, _Subtree]) -> Tuple[_Subtree, List[int]]:
    """The count drafts of one label as a ``_Subtree`` shape (what ``feed_count_draft`` feeds for each of
    ``chains``, in the same order; cached in ``shapes`` by the chains' lengths) and its token ids for a document
    with the span drafts ``spans``. The shape's ``meta``: per count (n, chain, its node, [(k, tag node, tag
    length, [(span node, index in spans)])])."""
    key = (tuple((n, len(chain)) for n, chain in chains), tuple(len(ids) for ids in spans))
    sub = shapes.get(key)
    if sub is None:
        if len(shapes) >= 1024:
            shapes.clear()
        sub = _Subtree()
        meta = []
        for n, chain in chains:
            node = sub.add(-1, len(chain), range(len(chain) - 1))
            tags = []
            for k in range(1, n + 1):
                tag = enc.mention_tag(k)
                g = sub.add(node, len(tag), [len(tag) - 1])
                tags.append((k, g, len(tag), [(sub.add(g, len(d), range(len(d))), j) for j, d in enumerate(spans)]))
            meta.append((n, chain, node, tags))
        sub.meta = meta
        sub = shapes[key] = sub.freeze()
    span_ids = [t for d in spans for t in d]
    ids: List[int] = []
    for n, chain in chains:
        ids += chain
        for k in range(1, n + 1):
            ids += enc.mention_tag(k)
            ids += span_ids
    return sub, ids


def feed_count_drafts(tb: TreeBatch, enc: PromptEncoder, branch: int, subtree: Tuple[_Subtree, List[int]], chains,
                      spans: Sequence[List[int]], stats: DecoderStats):
    """Feed a label's count drafts (``feed_count_draft`` for each of ``chains``) on ``branch``, in one go from
    their ``count_subtree`` when all of it fits in the row's draft room (span drafts that do not fit are
    dropped, so then chain by chain); the hypotheses ``TreeDecoder._advance_count`` verifies."""
    sub, ids = subtree
    if sub.width > tb.draft_room(branch):
        return [feed_count_draft(tb, enc, branch, n, chain, spans, stats) for n, chain in chains]
    b0, h0 = tb.feed_subtree(branch, sub, ids)
    stats.draft_tokens += sub.width
    hs = sub.handles
    hyps = []
    for n, chain, node, tags in sub.meta:
        def tag_branches(tags=tags):
            return [(k, b0 + g, h0 + hs[g][0], n_tag,
                     [(b0 + s, spans[j], [h0 + h for h in hs[s]]) for s, j in drafts])
                    for k, g, n_tag, drafts in tags]
        hyps.append((n, chain, b0 + node, [h0 + h for h in hs[node]], tag_branches))
    return hyps


def feed_count_draft(tb: TreeBatch, enc: PromptEncoder, branch: int, n: int, chain: List[int],
                     spans: Sequence[List[int]], stats: DecoderStats):
    """Feed the count ``n`` (its tokens ``chain``) on a child of the label's branch, and the mention tags
    k = 1..n on children of that; the predictions after the tags are the mentions' first tokens. After
    each tag, every span draft on a child branch of its own (verified as a mention's drafts are)."""
    child = tb.fork(branch)
    handles = tb.feed(child, chain, outputs=list(range(len(chain) - 1)))
    stats.draft_tokens += len(chain)
    tags = []
    for k in range(1, n + 1):
        g = tb.fork(child)
        tag = enc.mention_tag(k)
        (h,) = tb.feed(g, tag, outputs=[len(tag) - 1])
        stats.draft_tokens += len(tag)  # counted as drafts: used only if the count is n
        drafts = tb.feed_children(g, spans)
        stats.draft_tokens += sum(len(d) for _, d, _ in drafts)
        tags.append((k, g, h, len(tag), drafts))
    return n, chain, child, handles, lambda: tags


# -- prompt lookup, for plain greedy generation --


class _PromptLookup:
    """Drafts for prompt-lookup decoding: where the last generated token(s) occur in the prompt, the
    tokens that follow them there. Prefers a match of the last two tokens, and the first occurrence at
    or after where the previous draft was taken from (outputs that copy the prompt move forward)."""

    def __init__(self, prompt: Sequence[int]):
        self.prompt = list(prompt)
        self.where: Dict[int, List[int]] = {}
        for j, t in enumerate(self.prompt):
            self.where.setdefault(t, []).append(j)
        self.ptr = 0

    def draft(self, ids: Sequence[int], n: int) -> List[int]:
        if not ids:
            return []
        cands = self.where.get(ids[-1])
        if not cands:
            return []
        prompt = self.prompt
        two = [j for j in cands if len(ids) > 1 and j > 0 and prompt[j - 1] == ids[-2]]
        pool = two or cands
        after = [j for j in pool if j >= self.ptr]
        j = (after or pool)[0]
        self.ptr = j + 1
        return prompt[j + 1: j + 1 + n]
