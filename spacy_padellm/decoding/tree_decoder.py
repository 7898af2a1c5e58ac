"""PaDeLLM decoding as a tree in one static KV cache row per document (torch only; no spaCy).

Each document owns one row of a ``StaticLM`` cache. Its text prefix is written once; every label is a
branch that attends to the prefix and to its own tokens only; every (label, k) mention is a branch of
its label's branch. All branches of all documents in a batch advance together, one forward pass per
step, and a branch that has finished (EOS, or the end of its count) simply stops feeding tokens. So:

* **prefix sharing** without copying: the text's keys and values exist once per document;
* **step 2 continues step 1's cache**: a mention branch sees its label's prompt and count in place;
* **fewer sequential passes**: the prefix and all label prompts go in one pass (pass 1, which yields
  every count's first token); the count's terminator and every ``<mention k>`` tag go in the next
  (pass 2, which yields every mention's first token) — the terminator is *speculated* after the count
  digit and verified against the model's own prediction in the same pass, so greedy output is exactly
  what plain decoding gives; then one pass per mention token;
* **drafts copied from the text**: a mention is almost always a span of the text, so once its first
  token is known, the text's continuation after each occurrence of the mention-so-far (up to
  ``max_drafts`` with different next tokens, ``draft_tokens`` tokens each) is fed as a draft branch in
  the same pass as the confirmed token; the model's predictions verify them: the draft that starts
  with the model's choice becomes the mention's branch, its longest agreeing prefix is kept plus the
  model's own next token (usually the mention's EOS), and the rest is forgotten. Greedy output is unchanged; a whole mention
  typically costs one pass after its first token instead of one per token. ``generate`` does the same
  with n-gram lookup in the prompt (prompt-lookup decoding);
* **early exit** per sequence, and rows of finished documents are compacted away so the batch shrinks.

Host-side work is kept small, since the model's passes are short: a pass is laid out with whole-array
numpy operations (``TreeBatch.run``), the prefixes of a batch and the draft sources of a pass are each
encoded in one tokenizer call (``_prefetch_drafts``), and decoded counts are cached.

``TreeDecoder.decode`` returns the same ``DocResult`` objects as ``decoder.TwoStepDecoder`` and
``plain.plain_decode``; the tests check that all three agree. ``TreeDecoder.generate`` is plain
greedy decoding of single sequences on the same engine (used by the autoregressive baselines).
"""

from __future__ import annotations

import math
import re
from collections import deque
from dataclasses import dataclass, field
from typing import Callable, Dict, List, Optional, Sequence, Tuple

import numpy as np

from .counts import read_count
from .gc_pause import gc_paused
from .types import DecoderStats, DocRequest, DocResult, MentionPrediction
from ..text.protocol import PromptEncoder, parse_count, parse_mention
from .static_lm import StaticLM

__all__ = ["TreeBatch", "TreeDecoder"]


class TreeBatch:
    """Bookkeeping of branches, cache columns and attention rows for one batch of rows.

    ``feed(branch, ids, outputs)`` queues a chain of tokens on a branch for the next pass and returns
    handles for the positions whose next-token prediction is wanted; ``fork(branch)`` starts a branch
    that sees everything its parent has seen so far; ``run()`` makes one forward pass and returns
    {handle: (token, logprob)}.

    The queue is kept flat (one entry per chain, token ids in one list), and ``run`` lays the pass out
    with whole-array numpy operations: a row's chains go one after the other in the order they were
    fed; each token attends to what its branch sees (``_vis``, which already holds the chain's own
    columns) less the columns of its chain that come after it (the causal part). The arrays are built
    at the shape bucket ``StaticLM.run`` takes, so nothing is padded again.
    """

    def __init__(self, lm: StaticLM, n_rows: int, cols_hint: int, branches_hint: int = 0):
        self.lm = lm
        lm.reserve(n_rows, cols_hint)
        self.n_rows = n_rows
        self.ncols = [0] * n_rows  # columns used per row
        self.slot: List[Optional[int]] = list(range(n_rows))  # cache row of each row (None when done)
        # what each branch sees; grown by doubling, so a good ``branches_hint`` saves copies
        self._vis = np.zeros((max(8, 4 * n_rows, branches_hint), lm.cols), dtype=bool)
        self.b_row: List[int] = []
        self.b_pos: List[int] = []
        self._next_handle = 0
        self.passes = 0
        self._clear_queue()

    def _clear_queue(self) -> None:
        # one entry per queued chain: its row, branch, first cache column, first position, length
        self._q_row: List[int] = []
        self._q_branch: List[int] = []
        self._q_col0: List[int] = []
        self._q_pos0: List[int] = []
        self._q_len: List[int] = []
        self._q_ids: List[int] = []  # the chains' tokens, one after the other
        # one entry per wanted output: its chain (index in the queue) and its index in the chain
        self._q_out_chain: List[int] = []
        self._q_out_i: List[int] = []
        self._q_handle0 = self._next_handle  # outputs get consecutive handles in queue order

    # -- branches --

    def _room_for_branches(self, n: int) -> None:
        """Grow ``_vis`` (doubling) until it has rows for ``n`` more branches."""
        while len(self.b_row) + n > self._vis.shape[0]:
            grown = np.zeros((2 * self._vis.shape[0], self._vis.shape[1]), dtype=bool)
            grown[: self._vis.shape[0]] = self._vis
            self._vis = grown

    def _new_branch(self, row: int, pos: int, vis: Optional[np.ndarray]) -> int:
        b = len(self.b_row)
        self._room_for_branches(1)
        if vis is not None:
            self._vis[b] = vis
        self.b_row.append(row)
        self.b_pos.append(pos)
        return b

    def root(self, row: int) -> int:
        return self._new_branch(row, 0, None)

    def fork(self, branch: int) -> int:
        return self._new_branch(self.b_row[branch], self.b_pos[branch], self._vis[branch])

    def forget(self, branch: int, n_last: int) -> None:
        """Remove the branch's last ``n_last`` tokens from what it sees (a rejected speculation)."""
        row = self.b_row[branch]
        cols = np.nonzero(self._vis[branch, : self.ncols[row]])[0][-n_last:]
        self._vis[branch, cols] = False
        self.b_pos[branch] -= n_last

    def feed(self, branch: int, ids: Sequence[int], outputs: Sequence[int] = ()) -> List[int]:
        """Queue ``ids`` on ``branch``; returns one handle per index in ``outputs`` (chain positions)."""
        row = self.b_row[branch]
        n = len(ids)
        col0 = self.ncols[row]
        need = col0 + n + 1  # +1: the trash column
        if need > self.lm.cols:
            self._grow(need)
        self.ncols[row] = col0 + n
        self._vis[branch, col0 : col0 + n] = True
        pos0 = self.b_pos[branch]
        self.b_pos[branch] = pos0 + n
        chain = len(self._q_row)
        self._q_row.append(row)
        self._q_branch.append(branch)
        self._q_col0.append(col0)
        self._q_pos0.append(pos0)
        self._q_len.append(n)
        self._q_ids.extend(ids)
        h0 = self._next_handle
        k = len(outputs)
        if k == 1:  # the common case (a prompt, a tag, a confirmed token): one prediction
            self._q_out_chain.append(chain)
            self._q_out_i.append(outputs[0] % n)
            self._next_handle = h0 + 1
            return [h0]
        if k:
            self._q_out_chain.extend([chain] * k)
            self._q_out_i.extend([i % n for i in outputs])
            self._next_handle = h0 + k
        return list(range(h0, h0 + k))

    def room(self, branch: int) -> int:
        """Tokens the branch's row can still take without growing the cache."""
        return self.lm.cols - 1 - self.ncols[self.b_row[branch]]

    def draft_room(self, branch: int) -> int:
        """Tokens of drafts the branch's row can still take: a quarter of the cache's columns stays free for
        the tokens decoding needs (confirmed tokens, tags), so drafts do not make the cache grow later."""
        return self.room(branch) - self.lm.cols // 4

    def feed_children(self, parent: int, chains: Sequence[Sequence[int]]) -> List[Tuple[int, List[int], List[int]]]:
        """``[(b, ids, feed(b, ids, outputs=range(len(ids)))) for b = fork(parent) per ids in chains]`` in one
        go (drafts: short chains on children of one branch, each wanting a prediction at every token).

        Drafts are optional: only the first chains that fit in ``draft_room`` are fed (the cache is never
        grown for them, since growing it forgets every captured CUDA graph)."""
        room = self.draft_room(parent)
        fit = 0
        for ids in chains:
            if len(ids) > room:
                break
            room -= len(ids)
            fit += 1
        chains = chains[:fit]
        return [(b, ids, hs) for (b, hs), ids in zip(self.fork_feed(parent, chains, every=True), chains)]

    def fork_feed(self, parent: int, chains: Sequence[Sequence[int]], every: bool = False) -> List[Tuple[int, List[int]]]:
        """``[(b, feed(b, ids, outputs)) for b = fork(parent) per ids in chains]`` in one go: each chain on a child
        branch of ``parent``, wanting a prediction at every token (``every``: drafts) or at its last (tags)."""
        n = len(chains)
        if not n:
            return []
        row = self.b_row[parent]
        col0 = self.ncols[row]
        lens = [len(ids) for ids in chains]
        if not all(lens):
            raise ValueError("fork_feed: an empty chain has no token to predict after")
        need = col0 + sum(lens) + 1  # +1: the trash column
        if need > self.lm.cols:
            self._grow(need)
        pos = self.b_pos[parent]
        b0 = len(self.b_row)
        self._room_for_branches(n)
        vis = self._vis
        vis[b0: b0 + n] = vis[parent]
        starts = []
        c = col0
        for i, length in enumerate(lens):
            vis[b0 + i, c: c + length] = True
            starts.append(c)
            c += length
        self.ncols[row] = c
        self.b_row.extend([row] * n)
        self.b_pos.extend([pos + length for length in lens])
        chain0 = len(self._q_row)
        self._q_row.extend([row] * n)
        self._q_branch.extend(range(b0, b0 + n))
        self._q_col0.extend(starts)
        self._q_pos0.extend([pos] * n)
        self._q_len.extend(lens)
        out = []
        h = self._next_handle
        q_ids, q_out_chain, q_out_i = self._q_ids, self._q_out_chain, self._q_out_i
        for i, ids in enumerate(chains):
            q_ids.extend(ids)
            length = lens[i]
            if every:
                q_out_chain.extend([chain0 + i] * length)
                q_out_i.extend(range(length))
                out.append((b0 + i, list(range(h, h + length))))
                h += length
            else:
                q_out_chain.append(chain0 + i)
                q_out_i.append(length - 1)
                out.append((b0 + i, [h]))
                h += 1
        self._next_handle = h
        return out

    def feed_subtree(self, parent: int, sub: "_Subtree", ids: Sequence[int]) -> Tuple[int, int]:
        """Lay down ``sub`` (the shape of a fixed tree of chains, see ``_Subtree``) under ``parent``, its chains'
        tokens ``ids`` one after the other in node order: what forking and feeding each chain in turn would do,
        in a few array operations. Returns (first branch, first handle): node i is branch ``b0 + i`` and its
        predictions are handles ``h0 + sub.handles[i]``. It must fit in the row's draft room (``sub.width <=
        draft_room(parent)``; the caller checks, else ValueError)."""
        if sub.width > self.draft_room(parent):
            raise ValueError(f"feed_subtree: {sub.width} columns do not fit in the row's draft room")
        row = self.b_row[parent]
        col0 = self.ncols[row]
        pos = self.b_pos[parent]
        n = sub.n
        b0 = len(self.b_row)
        self._room_for_branches(n)
        vis = self._vis
        vis[b0: b0 + n] = vis[parent]
        vis[b0: b0 + n, col0: col0 + sub.width] = sub.vis
        self.ncols[row] = col0 + sub.width
        self.b_row.extend([row] * n)
        self.b_pos.extend([pos + e for e in sub.pos_end])
        chain0 = len(self._q_row)
        self._q_row.extend([row] * n)
        self._q_branch.extend(range(b0, b0 + n))
        self._q_col0.extend([col0 + c for c in sub.starts])
        self._q_pos0.extend([pos + p for p in sub.pos0])
        self._q_len.extend(sub.lens)
        self._q_ids.extend(ids)
        self._q_out_chain.extend([chain0 + c for c in sub.out_chain])
        self._q_out_i.extend(sub.out_i)
        h0 = self._next_handle
        self._next_handle = h0 + len(sub.out_i)
        return b0, h0

    def _grow(self, need: int) -> None:
        lm = self.lm
        old_k, old_v, old_cols = lm.k_cache, lm.v_cache, lm.cols
        lm.release()
        lm.reserve(self.n_rows if old_k is None else old_k.shape[1], need)
        if old_k is not None:
            lm.k_cache[:, : old_k.shape[1], :, :old_cols] = old_k
            lm.v_cache[:, : old_v.shape[1], :, :old_cols] = old_v
        vis = np.zeros((self._vis.shape[0], lm.cols), dtype=bool)
        vis[:, : self._vis.shape[1]] = self._vis
        self._vis = vis

    # -- one forward pass --

    def _compact(self, rows: List[int]) -> None:
        """Move the cache rows of ``rows`` (the ones still active) to the front."""
        src = [self.slot[r] for r in rows]
        if src == list(range(len(rows))):
            return
        self.lm.move_rows(src, max(self.ncols[r] for r in rows))
        for r in range(self.n_rows):
            self.slot[r] = None
        for i, r in enumerate(rows):
            self.slot[r] = i

    def run(self) -> Dict[int, Tuple[int, float]]:
        """One forward pass over everything queued: {handle: (token, logprob)}."""
        return self.launch().result()

    def launch(self) -> "_Pass":
        """Lay out and start one forward pass over everything queued (``run`` without waiting for it)."""
        q_row, q_len, h0 = self._q_row, self._q_len, self._q_handle0
        q_branch, q_col0, q_pos0, q_ids = self._q_branch, self._q_col0, self._q_pos0, self._q_ids
        q_out_chain, q_out_i = self._q_out_chain, self._q_out_i
        self._clear_queue()
        if not q_row:
            return _Pass(None, h0)
        slot = self.slot
        rows = sorted(set(q_row), key=lambda r: slot[r])
        B = slot[rows[-1]] + 1
        if B > len(rows) and (B - len(rows)) * 4 >= B:  # a quarter or more of the slots are done
            self._compact(rows)
            B = len(rows)
        lm = self.lm
        S = max(self.ncols[r] for r in rows)
        # per token: its chain, its index in the chain, its batch row and its place in that row
        n_c = np.array(q_len, dtype=np.int64)
        chain = np.repeat(np.arange(len(q_len)), n_c)
        first = np.cumsum(n_c) - n_c  # each chain's first token
        within = np.arange(len(chain)) - first[chain]
        b_c = np.array([slot[r] for r in q_row], dtype=np.int64)
        tok_b = b_c[chain]
        tok_t = _rank_within(tok_b)
        tok_slot = np.array(q_col0, dtype=np.int64)[chain] + within
        out_chain = np.array(q_out_chain, dtype=np.int64)
        out_b = b_c[out_chain]
        out_t = tok_t[first[out_chain] + np.array(q_out_i, dtype=np.int64)]
        T = int(tok_t.max()) + 1
        Bb, Tb, Sb, _ = lm.padded_shape(B, T, S, 1)
        tokens = np.zeros((Bb, Tb), dtype=np.int64)
        positions = np.zeros((Bb, Tb), dtype=np.int64)
        slots = np.full((Bb, Tb), lm.trash_col, dtype=np.int64)
        mask = np.zeros((Bb * Tb, Sb), dtype=bool)
        flat = tok_b * Tb + tok_t  # each token's row of the (Bb * Tb, Sb) attention mask
        tokens.flat[flat] = q_ids
        positions.flat[flat] = np.array(q_pos0, dtype=np.int64)[chain] + within
        slots.flat[flat] = tok_slot
        # What the token's branch sees; in a chain of several tokens, token i sees the chain's columns 0..i (a
        # lower triangle over the chain's block, written for the tokens of all such chains at once).
        seen = self._vis[np.array(q_branch, dtype=np.int64)[chain], :S]
        n_tok = n_c[chain]  # per token: the length of its chain
        long_tok = np.flatnonzero(n_tok > 1)
        if len(long_tok):
            width = n_tok[long_tok]
            tok = np.repeat(long_tok, width)
            j = np.arange(len(tok)) - np.repeat(np.cumsum(width) - width, width)  # 0 .. n-1 per token
            seen[tok, tok_slot[tok] - within[tok] + j] = j <= within[tok]
        mask[flat, :S] = seen
        pad = np.ones(Bb * Tb, dtype=bool)
        pad[flat] = False
        mask[:, 0] |= pad  # padding tokens attend to column 0 only (their outputs are dropped)
        mask = mask.reshape(Bb, Tb, Sb)
        pending = lm.launch(tokens, positions, slots, mask, out_b * Tb + out_t)
        self.passes += 1
        return _Pass(pending, h0)


class _Pass:
    """A launched pass of a TreeBatch: ``result()`` is {handle: (token, logprob)}."""

    __slots__ = ("pending", "h0")

    def __init__(self, pending, h0: int):
        self.pending, self.h0 = pending, h0

    def result(self) -> Dict[int, Tuple[int, float]]:
        if self.pending is None:
            return {}
        tok, logp = self.pending.result()
        return dict(zip(range(self.h0, self.h0 + len(tok)), zip(tok.tolist(), logp.tolist())))


def _send(gen, value):
    """``gen.send(value)``, or None when the generator has finished."""
    try:
        return gen.send(value)
    except StopIteration:
        return None


_WORD = re.compile(r"\S+")


def _within(drafts: List[List[int]], budget: int) -> List[List[int]]:
    """The first drafts whose tokens add up to at most ``budget``."""
    out, used = [], 0
    for d in drafts:
        if used + len(d) > budget:
            break
        out.append(d)
        used += len(d)
    return out


def _rank_within(groups: np.ndarray) -> np.ndarray:
    """For each element, how many earlier elements have the same value (its place in its group)."""
    n = len(groups)
    if not n:
        return np.zeros(0, dtype=np.int64)
    order = np.argsort(groups, kind="stable")
    g = groups[order]
    idx = np.arange(n)
    starts = np.zeros(n, dtype=np.int64)
    new = np.empty(n, dtype=bool)
    new[0] = True
    new[1:] = g[1:] != g[:-1]
    starts[new] = idx[new]
    np.maximum.accumulate(starts, out=starts)
    rank = np.empty(n, dtype=np.int64)
    rank[order] = idx - starts
    return rank


class _Subtree:
    """The shape of a fixed tree of token chains fed under many branches alike (a label's count drafts, their
    mention tags and a document's span drafts after each tag): its layout relative to the branch it goes
    under is worked out once, and ``TreeBatch.feed_subtree`` lays it down, with the chains' token ids, in a
    few array operations. It depends on the chains' lengths only, so documents whose span drafts have the
    same lengths share one.

    ``add(parent, length, outputs)`` adds a chain of ``length`` tokens as a child of node ``parent`` (-1: the
    branch the subtree goes under), wanting predictions at the chain positions ``outputs``; nodes go in the
    order they are added, as the same ``fork``/``feed`` calls would queue them, so the pass is laid out the
    same way."""

    def __init__(self):
        self.parents: List[int] = []
        self.lens: List[int] = []
        self.outputs: List[List[int]] = []
        self.meta = None  # what the caller keeps about its nodes (``_count_subtree``: the count drafts)

    def add(self, parent: int, length: int, outputs: Sequence[int]) -> int:
        self.parents.append(parent)
        self.lens.append(length)
        self.outputs.append([i % length for i in outputs])
        return len(self.parents) - 1

    def freeze(self) -> "_Subtree":
        n = self.n = len(self.lens)
        self.starts = np.concatenate([[0], np.cumsum(self.lens)[:-1]]).astype(int).tolist() if n else []
        self.width = sum(self.lens)
        self.vis = np.zeros((n, self.width), dtype=bool)
        self.pos0, self.pos_end = [], []
        for i, parent in enumerate(self.parents):
            if parent >= 0:
                self.vis[i] = self.vis[parent]
            self.vis[i, self.starts[i]: self.starts[i] + self.lens[i]] = True
            self.pos0.append(self.pos_end[parent] if parent >= 0 else 0)
            self.pos_end.append(self.pos0[i] + self.lens[i])
        self.out_chain = [i for i, outs in enumerate(self.outputs) for _ in outs]
        self.out_i = [o for outs in self.outputs for o in outs]
        self.handles, h = [], 0
        for outs in self.outputs:
            self.handles.append(list(range(h, h + len(outs))))
            h += len(outs)
        return self


@dataclass
class _Count:
    doc: int
    label: str
    branch: int
    gen: List[int] = field(default_factory=list)
    lp: float = 0.0
    handle: Optional[int] = None
    spec: Optional[List[Tuple[int, int, int]]] = None  # speculative children: (k, branch, handle)
    # count drafts fed with the label prompt: (n, chain, branch, handles after chain[:-1], tags), where tags()
    # gives each tag as (k, branch, handle, its length, span drafts after it) (built only for a confirmed count)
    hyps: Optional[List[Tuple[int, List[int], int, List[int], Callable[[], List[Tuple]]]]] = None


@dataclass
class _Mention:
    doc: int
    label: str
    k: int
    count: _Count
    branch: int
    handle: int  # the prediction after the last confirmed token
    ids: List[int] = field(default_factory=list)
    lp: float = 0.0
    # drafts fed after the last confirmed token, each on a child branch: (branch, ids, handles)
    drafts: List[Tuple[int, List[int], List[int]]] = field(default_factory=list)
    next_tok: Optional[int] = None  # the confirmed token to feed in the next pass


class TreeDecoder:
    """Greedy PaDeLLM decoding on a StaticLM: the same results as TwoStepDecoder, in fewer passes."""

    def __init__(self, lm: StaticLM, encoder: PromptEncoder, *, max_count: int = 20, max_count_tokens: int = 4,
                 max_mention_tokens: int = 40, max_batch_docs: int = 64, max_batch_tokens: int = 65536,
                 speculate: bool = True, draft_tokens: int = 8, max_drafts: int = 3, draft_max_docs: int = 32,
                 count_drafts: Optional[int] = None, span_drafts: Optional[int] = None, span_draft_tokens: int = 6,
                 span_draft_budget: int = 4096, span_source: str = "runs", inflight_batches: Optional[int] = None,
                 model=None):
        self.lm = lm
        self.model = model  # the transformers model whose weights ``lm`` uses (for other decoders)
        self.encoder = encoder
        self.max_count = max_count
        self.max_count_tokens = max_count_tokens
        self.max_mention_tokens = max_mention_tokens
        self.max_batch_docs = max(1, max_batch_docs)
        self.max_batch_tokens = max(1, max_batch_tokens)
        self.draft_tokens = max(0, int(draft_tokens))
        self.max_drafts = max(0, int(max_drafts))
        # Drafts cut sequential passes (latency) but make every pass wider (more tokens, more mask columns):
        # on an H100, nlp.pipe at 256+ docs per batch ran 13% slower with them. So a batch of more than
        # ``draft_max_docs`` documents decodes without drafts (same output either way).
        self.draft_max_docs = max(0, int(draft_max_docs))
        # Count drafts: the counts 0 .. count_drafts - 1 (with their mention tags) are fed after every label
        # prompt in the first pass, so a verified count yields its mentions' first tokens in that same pass.
        # Part of drafting: off with draft_tokens=0 and for batches of more than draft_max_docs documents.
        # None: on CUDA only, where a pass costs about the same at any width; on the CPU a wider pass costs more.
        gpu = lm.device.type == "cuda"
        count_drafts = (3 if gpu else 0) if count_drafts is None else count_drafts
        # 4 span drafts per tag, not 8: on the H100 the median batch-1 sentence took 5.35 ms against 5.60 (a narrower
        # first pass; 1.76 passes per sentence against 1.69), scripts/gpu_anatomy.py
        span_drafts = (4 if gpu else 0) if span_drafts is None else span_drafts
        self.count_drafts = max(0, int(count_drafts)) if self.draft_tokens else 0
        # Span drafts: after each drafted mention tag, up to ``span_drafts`` candidate mentions copied from the
        # text (runs of capitalised words and numbers, at most ``span_draft_tokens`` tokens each, see _span_starts),
        # so a mention that starts there can be confirmed in pass 1 too: a sentence whose counts and mentions are
        # all drafted decodes in one pass. (CPU oracle, benchmarks/host_overhead.py's workload, first 1000 test
        # sentences: runs of up to 6 tokens decode 78% of them in one pass against 60% for the next 4 tokens of
        # each capitalised word, with as many tokens in pass 1: 310 against 303 on average.)
        self.span_drafts = max(0, int(span_drafts)) if self.count_drafts else 0
        self.span_draft_tokens = max(1, int(span_draft_tokens))
        if span_source not in ("runs", "words"):
            raise ValueError(f"span_source must be 'runs' or 'words', got {span_source!r}")
        self.span_source = span_source  # where span drafts come from (see _span_starts)
        # at most this many span-draft tokens in a batch's first pass (every one asks for a prediction, so a
        # batch of many documents and labels would otherwise make that pass very wide)
        self.span_draft_budget = max(0, int(span_draft_budget))
        # Batches in flight: with 2 or more, one batch's pass runs on the device while the host lays out the others'
        # (each has its own KV cache, a StaticLM ``twin``). It helps only when a call has several batches
        # (nlp.pipe) and the device runs passes asynchronously. None: 4 on CUDA, 1 elsewhere. (H100, CoNLL03 test
        # set at 2048 docs per call, means of 3 runs, scripts/gpu_pipe_profile.py: 1,666 and 1,747 sentences/s
        # with 2, 1,755 and 1,864 with 3, 2,026 with 4 (one round). A batch's first pass is long on the device and
        # its later ones short, so with two batches the device or the host often waits.)
        self.inflight_batches = max(1, int(inflight_batches if inflight_batches is not None else (4 if gpu else 1)))
        # KV caches: ``lm`` and its twins (batches in flight). With CUDA graphs, calls that draft (at most
        # draft_max_docs documents: nlp(text)) and wide calls (nlp.pipe) keep caches of their own: a drafting
        # batch wants few rows but many columns, a wide one many rows and fewer columns, and a cache grown for
        # one forgot every graph captured for the other (the graphs then had to be captured again in use).
        self._pools: Dict[str, List[StaticLM]] = {"draft": [lm]}
        self._pools["wide"] = [] if lm.use_graphs else self._pools["draft"]
        self.stats = DecoderStats()
        # Host-side caches (pure functions of their keys): count readings, count-draft subtree shapes, and per
        # drafting pass the decoded mentions-so-far and the encoded draft sources (see _prefetch_drafts).
        self._count_readings: Dict[Tuple[int, ...], Tuple[int, int, int]] = {}
        self._subtrees: Dict[tuple, _Subtree] = {}  # count-draft subtree shapes (see _count_subtree)
        self._so_far_texts: Dict[Tuple[int, ...], str] = {}
        self._mention_ids: Dict[str, List[int]] = {}
        self.speculate = speculate
        term = encoder._encode(encoder.template.count_terminator)
        # Speculate the terminator only when it is one token that ends a count by itself.
        self._term = term[0] if speculate and len(term) == 1 and self.encoder.ends_count(term[0]) else None

    @property
    def device(self):
        return self.lm.device

    _SETTINGS = ("max_count", "max_count_tokens", "max_mention_tokens", "max_batch_docs", "max_batch_tokens",
                 "draft_tokens", "max_drafts", "draft_max_docs", "count_drafts", "span_drafts", "span_draft_tokens",
                 "span_draft_budget", "span_source", "inflight_batches", "speculate")

    def variant(self, **changes) -> "TreeDecoder":
        """A decoder with this one's settings but ``changes``, on the same weights and the same KV caches (so a
        variant costs no GPU memory of its own; the two must not decode at the same time)."""
        settings = {key: getattr(self, key) for key in self._SETTINGS}
        other = TreeDecoder(self.lm, self.encoder, model=self.model, **{**settings, **changes})
        other._pools = self._pools
        return other

    # -- batching --

    def _chunks(self, items: Sequence[int], sizes: Sequence[int]) -> List[List[int]]:
        chunks, cur, tokens = [], [], 0
        for i, size in zip(items, sizes):
            if cur and (len(cur) >= self.max_batch_docs or tokens + size > self.max_batch_tokens):
                chunks.append(cur)
                cur, tokens = [], 0
            cur.append(i)
            tokens += size
        if cur:
            chunks.append(cur)
        return chunks

    def decode(self, requests: Sequence[DocRequest]) -> List[DocResult]:
        results = [DocResult() for _ in requests]
        todo = [i for i, r in enumerate(requests) if r.labels]
        enc = self.encoder
        texts = [requests[i].text for i in todo]
        spans: Dict[int, List[List[int]]] = {}
        if todo and self._span_drafting(len(todo)):
            # every batch (of at most as many docs) drafts: span candidates go in the prefixes' tokenizer call
            starts = [self._span_starts(t) for t in texts]
            encoded, found = enc.prefixes_and_mentions(texts, [s for st in starts for s in st])
            spans = dict(zip(todo, self._span_drafts_of(starts, found)))
        else:
            encoded = enc.prefixes(texts)
        prefixes = dict(zip(todo, encoded))
        sizes = {i: self._estimate(prefixes[i], requests[i].labels) for i in todo}
        # Documents of like size decode together: a pass is as wide as its widest row, so a batch sorted by
        # size wastes less of every pass on padding (results go back to their documents either way). (Largest
        # first, so that the first chunk sizes the KV cache, measured slower on the H100: 1144 against 1503
        # sentences/s, with more CUDA-graph captures in warm runs.)
        todo.sort(key=lambda i: sizes[i])

        def job(chunk):
            return lambda lm: self._decode_chunk(lm, [requests[i] for i in chunk], [prefixes[i] for i in chunk],
                                                 [results[i] for i in chunk], max(sizes[i] for i in chunk),
                                                 [spans[i] for i in chunk] if spans else None)

        with gc_paused():
            self._drive((job(chunk) for chunk in self._chunks(todo, [sizes[i] for i in todo])), self._pool(len(todo)))
        return results

    def _span_drafting(self, n_docs: int) -> bool:
        """Whether a batch of ``n_docs`` documents feeds span drafts (after its drafted counts' tags)."""
        return n_docs <= self.draft_max_docs and bool(self.span_drafts) and bool(self._count_chains())

    def _lm(self, i: int, pool: str = "draft") -> StaticLM:
        """The i-th KV cache of the batches in flight of a drafting or a wide call (``pool``; "draft" 0 is
        ``self.lm``, the others are twins made on first use)."""
        lms = self._pools[pool]
        while len(lms) <= i:
            lms.append(self.lm.twin())
        return lms[i]

    def _pool(self, n_docs: int) -> str:
        """The caches a call of ``n_docs`` documents (or prompts) runs on."""
        return "draft" if n_docs <= self.draft_max_docs else "wide"

    @property
    def _lms(self) -> List[StaticLM]:
        """Every KV cache of the decoder, once each."""
        return list({id(lm): lm for pool in self._pools.values() for lm in pool}.values())

    def _drive(self, jobs, pool: str = "draft") -> None:
        """Run batches, ``inflight_batches`` at a time. Each job, given a StaticLM, is a generator that yields
        its TreeBatch whenever a pass is queued on it and is sent that pass's outputs back. With two in flight,
        one batch's pass is launched before the other's result is waited for, so the device runs one while
        the host lays out the other; each batch decodes exactly as it would alone."""
        jobs = iter(jobs)
        free = list(range(self.inflight_batches))[::-1]
        flying = deque()

        def start() -> bool:
            for job in jobs:
                i = free.pop()
                gen = job(self._lm(i, pool))
                tb = next(gen, None)
                if tb is None:
                    free.append(i)
                    continue
                flying.append((gen, tb.launch(), i))
                return True
            return False

        try:
            while free and start():
                pass
            while flying:
                gen, launched, i = flying.popleft()
                out = launched.result()
                self.stats.forward_passes += 1
                tb = _send(gen, out)
                if tb is None:  # the batch is done
                    free.append(i)
                    start()
                else:
                    flying.append((gen, tb.launch(), i))
        except BaseException:
            for _, launched, _ in flying:  # a failing batch: let the others' queued passes finish before their
                try:  # caches and pinned buffers are used again
                    launched.result()
                except Exception:  # noqa: BLE001 - the first error is the one raised
                    pass
            raise

    def _estimate(self, prefix: List[int], labels: Sequence[str]) -> int:
        """Columns a document will likely use without drafts: prefix, label prompts, counts, a few short
        mentions (what batches are cut by)."""
        enc = self.encoder
        return len(prefix) + sum(len(enc.label(l)) + 2 for l in labels) + 2 * (len(enc.mention_tag(1)) + 8)

    def _draft_cols(self, n_labels: int, n_docs: int = 1) -> int:
        """Columns a document's drafts may add when its batch drafts: count drafts with their tags, span
        drafts after each tag, a few mention drafts (so the cache is not grown mid-batch)."""
        cols = 2 * self.max_drafts * self.draft_tokens if self.draft_tokens and self.max_drafts else 0
        if self.count_drafts:
            tags = sum(n for n, _ in self._count_chains())
            spans = min(n_labels * tags * self.span_drafts * self.span_draft_tokens,
                        self.span_draft_budget // max(1, n_docs))
            cols += n_labels * self._count_draft_cols() + spans
        return cols

    def _count_chains(self) -> List[Tuple[int, List[int]]]:
        """(n, the count's tokens as greedy decoding writes them) for each drafted count n: the tokens of
        the count piece, whose last token must end the count by itself."""
        key = (self.count_drafts, self.max_count_tokens)
        if getattr(self, "_chains_key", None) != key:
            enc = self.encoder
            # a chain greedy decoding would write in full: no token before the last ends the count, and it is
            # not longer than max_count_tokens (where plain decoding stops a count)
            self._chains = [(n, ids) for n, ids in ((n, enc.count(n)) for n in range(self.count_drafts))
                            if ids and len(ids) <= self.max_count_tokens and enc.ends_count(ids[-1])
                            and not any(enc.ends_count(t) for t in ids[:-1])
                            and ids[-1] != enc.eos_id and parse_count(enc.decode(ids), enc.template) == n]
            self._chains_key = key
        return self._chains

    def _count_draft_cols(self) -> int:
        enc = self.encoder
        return sum(len(ids) + sum(len(enc.mention_tag(k)) for k in range(1, n + 1)) for n, ids in self._count_chains())

    def _decode_chunk(self, lm: StaticLM, requests, prefixes, results, cols_hint: int, spans=None):
        """Decode one batch on ``lm`` (a generator for ``_drive``: yields the TreeBatch for each pass); ``spans``:
        each document's span drafts when already found (``_span_candidates``)."""
        enc = self.encoder
        drafting = len(requests) <= self.draft_max_docs
        if drafting:
            cols_hint += self._draft_cols(max(len(req.labels) for req in requests), len(requests))
        texts = [req.text for req in requests]
        chains = self._count_chains() if drafting else []
        if not self._span_drafting(len(requests)):
            spans = [[] for _ in requests]
        else:
            if spans is None:
                spans = self._span_candidates(texts)
            # the batch's budget of span-draft tokens, shared by its tags
            n_tags = sum(n for n, _ in chains) * sum(len(req.labels) for req in requests)
            per_tag = self.span_draft_budget // max(1, n_tags)
            spans = [_within(found, per_tag) for found in spans]
        # branches of pass 1 and a few more: a root and a branch per label, with each label's count drafts
        drafted = sum(n for n, _ in chains) * (1 + max(map(len, spans), default=0)) + len(chains)
        tb = TreeBatch(lm, len(requests), cols_hint, sum(1 + len(r.labels) * (2 + drafted) for r in requests))
        stats = self.stats
        counts: List[_Count] = []
        for d, (req, prefix) in enumerate(zip(requests, prefixes)):
            root = tb.root(d)
            tb.feed(root, prefix)
            stats.prompt_tokens += len(prefix)
            sub = self._count_subtree(chains, spans[d]) if chains else None
            for label in req.labels:
                branch = tb.fork(root)
                ids = enc.label(label)
                (h,) = tb.feed(branch, ids, outputs=[len(ids) - 1])
                stats.prompt_tokens += len(ids)
                c = _Count(d, label, branch, handle=h)
                if chains:
                    c.hyps = self._feed_count_drafts(tb, branch, sub, chains, spans[d])
                counts.append(c)
        out = yield tb
        mentions: List[_Mention] = []
        while True:
            next_counts: List[_Count] = []
            waiting: List[_Mention] = []  # tags fed in this round: their first token comes next pass
            for c in counts:
                self._advance_count(tb, c, out, results, mentions, waiting, next_counts)
            counts = next_counts
            next_mentions: List[_Mention] = []
            finished: List[_Mention] = []
            for m in mentions:
                self._advance_mention(tb, m, out, results, next_mentions, finished)
            self._record_mentions(finished, results)
            self._feed_mentions(tb, next_mentions, texts, drafting)
            mentions = next_mentions + waiting
            if not counts and not mentions:
                break
            out = yield tb
        for req, res in zip(requests, results):  # in label order, then k
            order = {label: i for i, label in enumerate(req.labels)}
            res.predictions.sort(key=lambda p: (order[p.label], p.k))

    def _feed_generated(self, tb, branch, ids, outputs):
        self.stats.generated_tokens += len(ids)
        return tb.feed(branch, ids, outputs)

    def _count_subtree(self, chains, spans: Sequence[List[int]]) -> Tuple[_Subtree, List[int]]:
        """The count drafts of one label as a ``_Subtree`` shape (what ``_feed_count_draft`` feeds for each of
        ``chains``, in the same order; cached by the chains' lengths) and its token ids for a document with the
        span drafts ``spans``. The shape's ``meta``: per count (n, chain, its node, [(k, tag node, tag length,
        [(span node, index in spans)])])."""
        key = (tuple((n, len(chain)) for n, chain in chains), tuple(len(ids) for ids in spans))
        sub = self._subtrees.get(key)
        if sub is None:
            if len(self._subtrees) >= 1024:
                self._subtrees.clear()
            sub = _Subtree()
            meta = []
            for n, chain in chains:
                node = sub.add(-1, len(chain), range(len(chain) - 1))
                tags = []
                for k in range(1, n + 1):
                    tag = self.encoder.mention_tag(k)
                    g = sub.add(node, len(tag), [len(tag) - 1])
                    tags.append((k, g, len(tag), [(sub.add(g, len(d), range(len(d))), j) for j, d in enumerate(spans)]))
                meta.append((n, chain, node, tags))
            sub.meta = meta
            sub = self._subtrees[key] = sub.freeze()
        span_ids = [t for d in spans for t in d]
        ids: List[int] = []
        for n, chain in chains:
            ids += chain
            for k in range(1, n + 1):
                ids += self.encoder.mention_tag(k)
                ids += span_ids
        return sub, ids

    def _feed_count_drafts(self, tb, branch: int, subtree: Tuple[_Subtree, List[int]], chains,
                           spans: Sequence[List[int]]):
        """Feed a label's count drafts (``_feed_count_draft`` for each of ``chains``) on ``branch``, in one go
        from their ``_count_subtree`` when all of it fits in the row's draft room (span drafts that do not fit
        are dropped, so then chain by chain); the hypotheses ``_advance_count`` verifies."""
        sub, ids = subtree
        if sub.width > tb.draft_room(branch):
            return [self._feed_count_draft(tb, branch, n, chain, spans) for n, chain in chains]
        b0, h0 = tb.feed_subtree(branch, sub, ids)
        self.stats.draft_tokens += sub.width
        hs = sub.handles
        hyps = []
        for n, chain, node, tags in sub.meta:
            def tag_branches(tags=tags):
                return [(k, b0 + g, h0 + hs[g][0], n_tag,
                         [(b0 + s, spans[j], [h0 + h for h in hs[s]]) for s, j in drafts])
                        for k, g, n_tag, drafts in tags]
            hyps.append((n, chain, b0 + node, [h0 + h for h in hs[node]], tag_branches))
        return hyps

    def _feed_count_draft(self, tb, branch: int, n: int, chain: List[int], spans: Sequence[List[int]] = ()):
        """Feed the count ``n`` (its tokens ``chain``) on a child of the label's branch, and the mention tags
        k = 1..n on children of that; the predictions after the tags are the mentions' first tokens. After
        each tag, every span draft on a child branch of its own (verified as a mention's drafts are)."""
        child = tb.fork(branch)
        handles = tb.feed(child, chain, outputs=list(range(len(chain) - 1)))
        self.stats.draft_tokens += len(chain)
        tags = []
        for k in range(1, n + 1):
            g = tb.fork(child)
            tag = self.encoder.mention_tag(k)
            (h,) = tb.feed(g, tag, outputs=[len(tag) - 1])
            self.stats.draft_tokens += len(tag)  # counted as drafts: used only if the count is n
            drafts = tb.feed_children(g, spans)
            self.stats.draft_tokens += sum(len(d) for _, d, _ in drafts)
            tags.append((k, g, h, len(tag), drafts))
        return n, chain, child, handles, lambda: tags

    def _span_candidates(self, texts: Sequence[str]) -> List[List[List[int]]]:
        """Per text, up to ``span_drafts`` token sequences (``span_draft_tokens`` each, different first tokens)
        that a mention would start with if it began at a capitalised word or a number of the text."""
        starts = [self._span_starts(text) for text in texts]
        flat = [s for found in starts for s in found]
        return self._span_drafts_of(starts, self.encoder.mentions(flat) if flat else [])

    def _span_starts(self, text: str) -> List[str]:
        """Where a mention of the text may start, and what it may be: at most ``2 * span_drafts`` strings to encode.

        "runs" (``span_source``): each run of capitalised words or numbers (words split at whitespace), from
        its first word to its end, at most ``span_draft_tokens`` words; runs in text order, then the same from
        each later word of a run ("SOCCER - JAPAN GET LUCKY WIN": "SOCCER", "JAPAN GET LUCKY WIN", then "GET
        LUCKY WIN", ...). A mention is mostly a whole run or its start ("Nadim Ladki", "German"), so a draft
        ends where its run does and single words cost one or two tokens. "words": the text's next 4 words from
        each capitalised word or number (sessions 5-7).
        """
        words = [(m.start(), m.end(), m.group()[0]) for m in _WORD.finditer(text)]
        cap = [c.isupper() or c.isdigit() for _, _, c in words]
        limit = 2 * self.span_drafts
        if self.span_source == "words":
            return [" ".join(text[start:].split(" ")[:4]) for (start, _, _), c in zip(words, cap) if c][:limit]
        n, most = len(words), self.span_draft_tokens
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

    def _span_drafts_of(self, starts: Sequence[List[str]], encoded: Sequence[List[int]]) -> List[List[List[int]]]:
        """The span drafts of each text from its ``starts`` and their encodings (``encoded``, all texts' in order)."""
        ids = iter(encoded)
        room = max(1, min(self.span_draft_tokens, self.max_mention_tokens - 1))
        out = []
        for found in starts:
            drafts: Dict[int, List[int]] = {}
            for _ in found:
                d = next(ids)[:room]
                if d and len(drafts) < self.span_drafts:
                    drafts.setdefault(d[0], d)
            out.append(list(drafts.values()))
        return out

    def _advance_count(self, tb, c: _Count, out, results, mentions, waiting, next_counts) -> None:
        tok, lp = out[c.handle]
        if c.hyps is not None:
            hyps, c.hyps = c.hyps, None
            # the drafted count whose tokens the model confirms furthest (counts may share a first token)
            best, confirmed = None, 0
            for hyp in hyps:
                chain, handles = hyp[1], hyp[3]
                i = 0
                while i < len(chain) and chain[i] == (tok if i == 0 else out[handles[i - 1]][0]):
                    i += 1
                if i > confirmed:
                    best, confirmed = hyp, i
            if best is not None:
                n, chain, child, handles, tags = best
                # chain[:confirmed] is the model's own output: take it with its log-probs
                c.gen.extend(chain[:confirmed])
                c.lp += lp
                for h in handles[: confirmed - 1]:
                    c.lp += out[h][1]
                self.stats.accepted_draft_tokens += confirmed
                if confirmed == len(chain):  # the whole count, terminator included: its mentions started this pass
                    m = self._finish_count(c, results)
                    self.stats.generated_tokens += len(chain) - (0 if m > 0 else 1)  # as if fed one by one
                    for k, g, h, n_tag, drafts in tags():
                        if k <= m:
                            mentions.append(_Mention(c.doc, c.label, k, c, g, h, drafts=drafts))
                            self.stats.accepted_draft_tokens += n_tag
                    return
                # The count goes on past the draft (a longer number): continue on the draft's branch with the
                # model's token after the confirmed part.
                c.branch = child
                tb.forget(child, len(chain) - confirmed)
                self.stats.generated_tokens += confirmed
                tok, lp = out[handles[confirmed - 1]]
        self._count_token(tb, c, tok, lp, results, mentions, waiting, next_counts)

    def _count_token(self, tb, c: _Count, tok: int, lp: float, results, mentions, waiting, next_counts) -> None:
        """Take the count's next token ``tok`` (predicted after everything its branch has been fed)."""
        enc = self.encoder
        if c.spec is not None:
            spec, c.spec = c.spec, None
            if tok == self._term:  # the speculated terminator was right: its children are real
                c.gen.append(tok)
                c.lp += lp
                n = self._finish_count(c, results)
                for k, branch, handle in spec:
                    if k <= n:
                        mentions.append(_Mention(c.doc, c.label, k, c, branch, handle))
                return
            tb.forget(c.branch, 1)
            self.stats.generated_tokens -= 1
        c.gen.append(tok)
        c.lp += lp
        ends = enc.ends_count(tok)
        if ends or len(c.gen) >= self.max_count_tokens:
            n = self._finish_count(c, results)
            if ends and tok != enc.eos_id and n > 0:
                # Feed the terminator and open every mention branch in the next pass.
                self._feed_generated(tb, c.branch, [tok], ())
                tags = [enc.mention_tag(k) for k in range(1, n + 1)]
                for k, (child, (h,)) in enumerate(tb.fork_feed(c.branch, tags), 1):
                    waiting.append(_Mention(c.doc, c.label, k, c, child, h))
                self.stats.prompt_tokens += sum(len(tag) for tag in tags)
            return
        # The count goes on: feed its last token, and if the terminator can be speculated, the
        # terminator and the mention tags of the count it would complete.
        n_spec = self._speculated_count(c.gen) if self._term is not None else None
        if n_spec is None:
            (c.handle,) = self._feed_generated(tb, c.branch, [tok], outputs=[0])
        else:
            (c.handle,) = self._feed_generated(tb, c.branch, [tok, self._term], outputs=[0])
            tags = [enc.mention_tag(k) for k in range(1, n_spec + 1)]
            c.spec = [(k, child, h) for k, (child, (h,)) in enumerate(tb.fork_feed(c.branch, tags), 1)]
            self.stats.prompt_tokens += sum(len(tag) for tag in tags)
        next_counts.append(c)

    def _count_reading(self, ids: Sequence[int]) -> Tuple[int, int, int]:
        """(count, unparsable, capped) of a count output ``ids`` as ``_read_count`` reads it, cached (counts are a
        few short token sequences): one decode and one parse per distinct output, not per label."""
        key = (self.max_count, *ids)
        reading = self._count_readings.get(key)
        if reading is None:
            if len(self._count_readings) >= 4096:
                self._count_readings.clear()
            probe = DocResult()
            n = read_count(self.encoder.decode(ids), self.encoder, self.max_count, probe)
            reading = self._count_readings[key] = (n, probe.unparsable_counts, probe.capped_counts)
        return reading

    def _speculated_count(self, gen: List[int]) -> Optional[int]:
        """The count ``gen`` would be if the terminator came next, when it is a number above 0 (else None)."""
        n, unparsable, _ = self._count_reading(gen + [self._term])
        return None if unparsable or not n else n

    def _finish_count(self, c: _Count, results) -> int:
        res = results[c.doc]
        n, unparsable, capped = self._count_reading(c.gen)
        res.unparsable_counts += unparsable
        res.capped_counts += capped
        res.counts[c.label] = n
        return n

    def _advance_mention(self, tb, m: _Mention, out, results, next_mentions, finished) -> None:
        """Take the mention's predictions of the last pass; a mention that ended (EOS) goes to ``finished``."""
        enc = self.encoder
        tok, lp = out[m.handle]
        draft, handles = [], []
        for child, d, hs in m.drafts:  # the draft (if any) that starts with the model's choice
            if d[0] == tok:
                m.branch, draft, handles = child, d, hs
                break
        m.drafts = []
        i = 0  # (tok, lp) follows the confirmed tokens and the first i tokens of the draft
        while True:
            m.lp += lp
            if tok == enc.eos_id:
                finished.append(m)
                return
            m.ids.append(tok)
            self.stats.generated_tokens += 1
            if len(m.ids) >= self.max_mention_tokens:
                results[m.doc].truncated_mentions += 1
                return
            if i < len(draft) and draft[i] == tok:  # the drafted token was the model's choice: already fed
                self.stats.accepted_draft_tokens += 1
                tok, lp = out[handles[i]]
                i += 1
                continue
            break
        if i < len(draft):
            tb.forget(m.branch, len(draft) - i)  # the rejected rest of the draft
        m.next_tok = tok  # fed by _feed_mentions, with the drafts after it
        next_mentions.append(m)

    def _record_mentions(self, finished: List[_Mention], results) -> None:
        """The predictions of the mentions that ended in a pass (their texts decoded in one call)."""
        for m, text in zip(finished, self.encoder.decode_many([m.ids for m in finished])):
            res = results[m.doc]
            res.predictions.append(MentionPrediction(m.label, m.k, parse_mention(text), math.exp(m.lp),
                                                     res.counts[m.label], math.exp(m.count.lp)))

    def _feed_mentions(self, tb, mentions: List[_Mention], texts: Sequence[str], drafting: bool) -> None:
        """Feed each going-on mention's confirmed token and, when the batch drafts, its drafts (in the order
        of ``mentions``; ``texts``: the batch's document texts)."""
        drafting = drafting and bool(self.draft_tokens and self.max_drafts)  # the only check: callees trust it
        if not drafting:
            for m in mentions:
                (m.handle,) = tb.feed(m.branch, [m.next_tok], outputs=[0])
            return
        self._prefetch_drafts([(texts[m.doc], m.ids) for m in mentions])
        for m in mentions:
            (m.handle,) = tb.feed(m.branch, [m.next_tok], outputs=[0])
            room = max(0, self.max_mention_tokens - len(m.ids) - 1)
            drafts = [d[:room] for d in self._mention_drafts(texts[m.doc], m.ids) if d[:room]]
            # each draft on a branch of its own: the one the model agrees with replaces the mention's
            m.drafts = tb.feed_children(m.branch, drafts)
            self.stats.draft_tokens += sum(len(d) for _, d, _ in m.drafts)

    def _so_far(self, ids: List[int]) -> str:
        """The decoded mention so far (cached for the pass)."""
        key = tuple(ids)
        text = self._so_far_texts.get(key)
        if text is None:
            text = self._so_far_texts[key] = self.encoder.tokenizer.decode(ids, skip_special_tokens=True)
        return text

    def _continuations(self, text: str, so_far: str):
        """What follows each occurrence of ``so_far`` in ``text`` (a few words; at most 4 * max_drafts)."""
        start = text.find(so_far)
        tries = 0
        while start != -1 and tries < 4 * self.max_drafts:
            tries += 1
            rest = text[start + len(so_far): start + len(so_far) + 12 * self.draft_tokens]
            words = rest.split(" ")
            yield " ".join(words[:5]) if len(words) > 5 else rest
            start = text.find(so_far, start + 1)

    def _prefetch_drafts(self, items: Sequence[Tuple[str, List[int]]]) -> None:
        """Encode in one tokenizer call every string ``_mention_drafts`` may encode for ``items`` (text, ids)
        this pass; it then finds them in ``_mention_ids``. Only saves time: the ids are the same."""
        self._so_far_texts = {}
        self._mention_ids = {}
        if not items:
            return
        wanted: Dict[str, None] = {}
        for text, ids in items:
            so_far = self._so_far(ids)
            if not so_far.strip() or "\ufffd" in so_far:
                continue
            for rest in self._continuations(text, so_far):
                if rest:
                    wanted[so_far + rest] = None
        strings = list(wanted)
        self._mention_ids = dict(zip(strings, self.encoder.mentions(strings)))

    def _mention_drafts(self, text: str, ids: List[int]) -> List[List[int]]:
        """Up to ``max_drafts`` token sequences that would continue the mention ``ids`` if it went on as
        the text does after one of the occurrences of the mention so far (a few words each, with
        different first tokens); [] when the text has none."""
        enc = self.encoder
        so_far = self._so_far(ids)
        if not so_far.strip() or "\ufffd" in so_far:
            return []
        drafts: Dict[int, List[int]] = {}
        for rest in self._continuations(text, so_far):
            if len(drafts) >= self.max_drafts:
                break
            if rest:
                full = self._mention_ids.get(so_far + rest)
                if full is None:
                    full = enc.mention(so_far + rest)
                if len(full) > len(ids) and full[: len(ids)] == ids:
                    d = full[len(ids): len(ids) + self.draft_tokens]
                    drafts.setdefault(d[0], d)
        return list(drafts.values())

    # -- plain greedy generation on the same engine --

    def generate(self, prompts: Sequence[Sequence[int]], *, eos_id: int, max_new_tokens: int
                 ) -> List[Tuple[List[int], float, bool]]:
        """Greedy continuation of each prompt until EOS or ``max_new_tokens`` (EOS not included).

        With ``draft_tokens`` > 0, each step also feeds a draft found by n-gram lookup in the prompt
        (the tokens that followed the last one or two generated tokens there), verified in the same pass:
        the output is the same, in fewer passes when the output copies the prompt."""
        results: List[Tuple[List[int], float, bool]] = [([], 0.0, False)] * len(prompts)
        todo = [i for i, p in enumerate(prompts) if len(p)]
        sizes = [len(prompts[i]) + max_new_tokens for i in todo]
        def job(chunk):
            return lambda lm: self._generate_chunk(lm, chunk, prompts, results, eos_id, max_new_tokens)

        with gc_paused():
            self._drive((job(chunk) for chunk in self._chunks(todo, sizes)), self._pool(len(todo)))
        return results

    def _generate_chunk(self, lm: StaticLM, chunk: List[int], prompts, results, eos_id: int, max_new_tokens: int):
        """``generate`` for the prompts of one batch on ``lm`` (a generator for ``_drive``)."""
        tb = TreeBatch(lm, len(chunk), max(len(prompts[i]) for i in chunk) + 16)
        live = {}
        for d, i in enumerate(chunk):
            branch = tb.root(d)
            ids = list(prompts[i])
            (h,) = tb.feed(branch, ids, outputs=[len(ids) - 1])
            self.stats.prompt_tokens += len(ids)
            drafting = self.draft_tokens and len(chunk) <= self.draft_max_docs
            live[i] = _Sequence(branch, [h], [], _PromptLookup(ids) if drafting else None)
        while live:
            out = yield tb
            for i in list(live):
                seq = live[i]
                done = None
                k = 0  # predictions[k] follows the confirmed token and the first k drafted ones
                while True:
                    tok, tlp = out[seq.handles[k]]
                    seq.lp += tlp
                    if tok == eos_id:
                        done = (seq.ids, seq.lp, True)
                        break
                    seq.ids.append(tok)
                    self.stats.generated_tokens += 1
                    if len(seq.ids) >= max_new_tokens:
                        done = (seq.ids, seq.lp, False)
                        break
                    if k < len(seq.draft) and seq.draft[k] == tok:
                        self.stats.accepted_draft_tokens += 1
                        k += 1
                        continue
                    break
                if done is not None:
                    results[i] = done
                    del live[i]
                    continue
                if k < len(seq.draft):
                    tb.forget(seq.branch, len(seq.draft) - k)
                draft = seq.lookup.draft(seq.ids, self.draft_tokens) if seq.lookup is not None else []
                # a draft is cut to what the cache holds (growing it would forget the CUDA graphs)
                draft = draft[: max(0, min(max_new_tokens - len(seq.ids) - 1, tb.draft_room(seq.branch) - 1))]
                seq.handles = tb.feed(seq.branch, [tok] + draft, outputs=list(range(len(draft) + 1)))
                seq.draft = draft
                self.stats.draft_tokens += len(draft)


@dataclass
class _Sequence:
    branch: int
    handles: List[int]
    ids: List[int]
    lookup: Optional["_PromptLookup"]
    lp: float = 0.0
    draft: List[int] = field(default_factory=list)


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
