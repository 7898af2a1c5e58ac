"""The decoding levers on the tree engine: one batch's count bias, mention constraint and de-duplication.

The levers are the dynamic engine's (``dynamic.TwoStepDecoder``), with the same shared rules: the bias of a
label's count "0" (``counts.count_bias_for``), the mention trie of a document's text (``counts.build_trie``),
which repeats to decode again and what they must avoid (``constraints.redecode_plan``). Here they steer the
choices of the batch's passes on the device (``steering.Steering``, registered on the ``TreeBatch`` by handle):

* the count bias at every label prompt's output (a count's first token, drafted counts are verified against it);
* the trie node's allowed tokens at every output of a mention: after its tag, its confirmed tokens and each token
  of its drafts (drafts are first cut to the part the trie allows: the rest could never be confirmed);
* de-duplication per (document, label): once every mention of a count has ended, the repeats are decoded again
  from the count's branch (its tokens, terminator included) with a new tag branch each, constrained to the text's
  spans less the strings taken, in the batch's next passes; a round's results settle before the next round.
"""

from __future__ import annotations

import math
from typing import Any, Dict, List, Optional, Sequence, Tuple

from ..constraints import MentionTrie, redecode_plan
from ..counts import count_bias_for, zero_count_token

__all__ = ["BatchLevers"]


class _Group:
    """The mentions of one count under de-duplication: open ones, the latest decoding of each k, rounds."""

    __slots__ = ("doc", "parent", "open", "latest", "ended", "redo", "dropped", "rounds")

    def __init__(self, doc: int, parent: int):
        self.doc = doc
        self.parent = parent  # the branch that has seen the count and its terminator (tags fork from it)
        self.open = 0
        self.latest: Dict[int, Any] = {}  # k -> its latest mention (decoder._Mention)
        self.ended: Dict[int, bool] = {}  # k -> ended with EOS (False: cut at max_mention_tokens)
        self.redo: List[int] = []  # the ks of the round in flight
        self.dropped: set = set()
        self.rounds = 0


class BatchLevers:
    """The levers of one batch of ``texts``, with the decoder's levers as they are when the batch starts."""

    def __init__(self, decoder, texts: Sequence[str]):
        self.decoder = decoder
        self.encoder = decoder.encoder
        self.texts = texts
        self.levers = decoder.levers  # a ``Levers`` (frozen: the batch keeps these)
        self.zero = zero_count_token(self.encoder)
        self._tries: Dict[Tuple[int, Tuple[str, ...]], MentionTrie] = {}
        # (trie, node, draft) -> what each of the draft's outputs may choose: a document's span drafts follow
        # every tag of every label, so each is walked down its trie once per batch
        self._draft_allowed: Dict[Tuple[int, Optional[int], Tuple[int, ...]], List[List[int]]] = {}
        self._groups: Dict[Tuple[int, str], _Group] = {}
        self._settling: List[_Group] = []

    # -- tries --

    def trie(self, doc: int, exclude: Tuple[str, ...] = ()) -> MentionTrie:
        """The mention trie of document ``doc``'s text, less ``exclude`` (built once per batch)."""
        key = (doc, exclude)
        if key not in self._tries:
            self._tries[key] = self.levers.trie(self.texts[doc], self.encoder, exclude)
        return self._tries[key]

    def mention_trie(self, doc: int) -> Optional[MentionTrie]:
        """The trie a first decoding of a mention of ``doc`` is held to (None: unconstrained)."""
        return self.trie(doc) if self.levers.constrain_mentions else None

    def cut(self, trie: Optional[MentionTrie], node: Optional[int], draft: Sequence[int]) -> List[int]:
        """The part of ``draft`` the trie allows after ``node`` (all of it when unconstrained)."""
        if trie is None:
            return list(draft)
        out = []
        for tok in draft:
            node = trie.advance(node, tok)
            if node is None:
                break
            out.append(tok)
        return out

    # -- steering (by handle, on the pass being queued) --

    def steer_count(self, tb, handle: int, label: str) -> None:
        bias = count_bias_for(self.levers.count_bias, label)
        if bias:
            tb.steering.bias(handle, self.zero, bias)

    def steer_mention(self, tb, handle: int, trie: Optional[MentionTrie], node: Optional[int]) -> None:
        """The output ``handle`` of a mention at trie ``node`` chooses among what the node allows (EOS alone
        where it allows nothing, e.g. an empty trie; nothing changes when unconstrained)."""
        if trie is not None:
            tb.steering.allow(handle, self._allowed(trie, node))

    def _allowed(self, trie: MentionTrie, node: Optional[int]) -> List[int]:
        """What an output at trie ``node`` may choose: the node's allowed ids, EOS alone where it allows nothing."""
        ids = trie.allowed_ids(node) if node is not None else []
        return ids or [self.encoder.eos_id]

    def steer_draft(self, tb, handles: Sequence[int], trie: Optional[MentionTrie], node: Optional[int],
                    draft: Sequence[int]) -> None:
        """Steer each output of a draft (fed after ``node``; ``handles[i]`` follows ``draft[:i + 1]``)."""
        if trie is None:
            return
        key = (id(trie), node, tuple(draft))  # the batch keeps its tries, so their ids stay theirs
        allowed = self._draft_allowed.get(key)
        if allowed is None:
            allowed = self._draft_allowed[key] = self._allowed_along(trie, node, draft)
        tb.steering.allow_each(handles, allowed)

    def _allowed_along(self, trie: MentionTrie, node: Optional[int], draft: Sequence[int]) -> List[List[int]]:
        """What the output after each token of ``draft`` (fed after ``node``) may choose, as ``steer_mention``
        gives it."""
        out = []
        for tok in draft:
            node = trie.advance(node, tok)
            out.append(self._allowed(trie, node))
        return out

    def steer_tags(self, tb, doc: int, tags) -> None:
        """Steer drafted mention tags and their span drafts (``(k, branch, handle, length, [(branch, ids,
        handles)])`` each): a tag's output is a mention's first token."""
        trie = self.mention_trie(doc)
        if trie is None:
            return
        for _, _, h, _, drafts in tags:
            self.steer_mention(tb, h, trie, trie.root)
            for _, ids, hs in drafts:
                self.steer_draft(tb, hs, trie, trie.root, ids)

    # -- mentions opened and ended --

    def opened(self, m, parent: Optional[int], trie: Optional[MentionTrie]) -> None:
        """A mention ``m`` (decoder._Mention) starts, held to ``trie``; ``parent``: its tag's parent branch (the
        count's; None for a mention decoded again, whose count's group exists)."""
        m.trie = trie
        m.node = trie.root if trie is not None else None
        if self.levers.dedupe_mentions:
            group = self._groups.get((m.doc, m.label))
            if group is None:
                group = self._groups[(m.doc, m.label)] = _Group(m.doc, parent)
            group.open += 1

    def ended(self, m, done: bool) -> None:
        """Mention ``m`` ended: with EOS (``done``) or cut at ``max_mention_tokens``."""
        if not self.levers.dedupe_mentions:
            return
        group = self._groups[(m.doc, m.label)]
        group.latest[m.k] = m
        group.ended[m.k] = done
        group.open -= 1
        if not group.open:
            self._settling.append(group)

    # -- de-duplication --

    def settle(self, tb, results) -> List[Tuple[Any, int, int, MentionTrie, int]]:
        """Settle the counts whose mentions have all ended: drop the last round's improbable ones, plan the next
        round (``redecode_plan``), or record the predictions. Returns the repeats to decode again as (count,
        k, tag branch, trie, handle), their tags queued and steered. The kept mentions of every count settling are
        decoded in one call; a count whose strings are all different has nothing to decode again."""
        again = []
        settling, self._settling = self._settling, []
        kept = [self._kept(group, results) for group in settling]
        texts = self.decoder.mention_texts([m for ms in kept for m in ms])
        at = 0
        for group, mentions in zip(settling, kept):
            mine, at = texts[at: at + len(mentions)], at + len(mentions)
            redo, exclude = [], ()
            doc = group.doc
            if group.rounds < self.levers.dedupe_rounds and len(set(mine)) < len(mine):
                redo, claimed = redecode_plan(self.texts[doc], [(m.k, t, m.lp) for m, t in zip(mentions, mine)])
                exclude = tuple(sorted(claimed))
            if not redo:
                self.decoder._record_mentions(mentions, results, mine)
                continue
            group.rounds += 1
            group.redo = list(redo)
            results[doc].redecoded_mentions += len(redo)
            trie = self.trie(doc, exclude)
            tags = [self.encoder.mention_tag(k) for k in redo]
            for k, (branch, (h,)) in zip(redo, tb.fork_feed(group.parent, tags)):
                self.steer_mention(tb, h, trie, trie.root)
                again.append((group.latest[k].count, k, branch, trie, h))
            self.decoder.stats.prompt_tokens += sum(len(tag) for tag in tags)
        return again

    def _kept(self, group: _Group, results) -> List[Any]:
        """The mentions a settling count keeps, in k order: the last round's improbable ones dropped, and those
        cut at ``max_mention_tokens`` left out."""
        for k in group.redo:
            m = group.latest[k]
            if group.ended[k] and math.exp(m.lp) < self.levers.dedupe_min_prob:
                group.dropped.add(k)
                results[m.doc].redecoded_dropped += 1
        group.redo = []
        return [group.latest[k] for k in sorted(group.latest) if group.ended[k] and k not in group.dropped]
