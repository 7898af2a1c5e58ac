"""One batch of documents as trees of branches in one static KV cache (torch only; no spaCy).

Each document owns one row of a ``StaticLM`` cache. A branch is a sequence of tokens that sees (attends to)
its parent's tokens as they were when it was forked, plus its own: a document's text is written once on its
root, and everything decoded after it forks from there, so the text's keys and values exist once per
document (prefix sharing without copying). A rejected guess is taken back by ``forget``-ting its columns.
All branches of all rows advance together in one forward pass; a row whose branches no longer feed tokens
drops out, and the cache rows still in use are compacted to the front when enough have finished (not on the
CPU's segmented layout, where a row that feeds nothing costs a pass nothing: ``StaticLM.compacts``).

Host-side work is kept small, since the model's passes are short: the queue of a pass is kept flat and
``TreeBatch.launch`` lays the pass out with whole-array numpy operations; a fixed tree of chains fed under
many branches alike (a ``_Subtree``) is worked out once and laid down in a few array operations.
"""

from __future__ import annotations

from typing import Dict, List, Optional, Sequence, Tuple

import numpy as np

from ..row_mask import RowMask
from ..static_lm import StaticLM
from .steering import Steering

__all__ = ["TreeBatch"]


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
        lm.cache.reserve(n_rows, cols_hint)
        self.n_rows = n_rows
        self.ncols = [0] * n_rows  # columns used per row
        self.slot: List[Optional[int]] = list(range(n_rows))  # cache row of each row (None when done)
        self._live: List[int] = list(range(n_rows))  # the rows of the last pass: the only ones that may feed again
        # what each branch sees; grown by doubling, so a good ``branches_hint`` saves copies
        self._vis = np.zeros((max(8, 4 * n_rows, branches_hint), lm.cache.cols), dtype=bool)
        self.b_row: List[int] = []
        self.b_pos: List[int] = []
        self._next_handle = 0
        self.passes = 0
        self.levers = None  # the decoding levers of the batch (``levers.BatchLevers``), set by its decoder
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
        self._q_steer: Optional[Steering] = None  # the decoding levers' changes to this pass's choices, by handle

    @property
    def steering(self) -> Steering:
        """The steering of the pass being queued, by handle (``Steering.bias`` and ``allow`` of a handle that
        ``feed`` returned for it); passes without any run as they would without levers."""
        if self._q_steer is None:
            self._q_steer = Steering()
        return self._q_steer

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
        if need > self.lm.cache.cols:
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
        return self.lm.cache.cols - 1 - self.ncols[self.b_row[branch]]

    def draft_room(self, branch: int) -> int:
        """Tokens of drafts the branch's row can still take: a quarter of the cache's columns stays free for
        the tokens decoding needs (confirmed tokens, tags), so drafts do not make the cache grow later."""
        return self.room(branch) - self.lm.cache.cols // 4

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
        if need > self.lm.cache.cols:
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
        if lm.cache.k is None:
            lm.cache.reserve(self.n_rows, need)
        elif lm.cache.max_cells is None:  # no memory cap: every row is kept, so the next batch may reuse the cache
            lm.cache.widen(need)
        else:  # only the rows of the last pass can still feed tokens: moved to the front, they alone are kept
            live = sorted(self._live, key=lambda r: self.slot[r])
            self._compact(live)
            lm.cache.widen(need, rows=len(live))
        vis = np.zeros((self._vis.shape[0], lm.cache.cols), dtype=bool)
        vis[:, : self._vis.shape[1]] = self._vis
        self._vis = vis

    # -- one forward pass --

    def _compact(self, rows: List[int]) -> None:
        """Bring the cache rows of ``rows`` (the ones still active) to the front: each one past the first len(rows)
        moves into a free row among them, the others stay where they are, so only the rows that move are copied."""
        n = len(rows)
        kept = {self.slot[r] for r in rows if self.slot[r] < n}
        movers = sorted((r for r in rows if self.slot[r] >= n), key=lambda r: self.slot[r])
        holes = [s for s in range(n) if s not in kept]
        if movers:
            self.lm.cache.move_rows(holes, [self.slot[r] for r in movers], max(self.ncols[r] for r in movers))
        live = set(rows)
        for r in range(self.n_rows):
            if r not in live:
                self.slot[r] = None
        for r, hole in zip(movers, holes):
            self.slot[r] = hole

    def run(self) -> Dict[int, Tuple[int, float]]:
        """One forward pass over everything queued: {handle: (token, logprob)}."""
        return self.launch().result()

    def launch(self) -> "_Pass":
        """Lay out and start one forward pass over everything queued (``run`` without waiting for it)."""
        q_row, q_len, h0 = self._q_row, self._q_len, self._q_handle0
        q_branch, q_col0, q_pos0, q_ids = self._q_branch, self._q_col0, self._q_pos0, self._q_ids
        q_out_chain, q_out_i = self._q_out_chain, self._q_out_i
        steer = self._q_steer.shifted(h0) if self._q_steer else None
        self._clear_queue()
        if not q_row:
            return _Pass(None, h0)
        slot = self.slot
        rows = sorted(set(q_row), key=lambda r: slot[r])
        self._live = rows
        B = slot[rows[-1]] + 1
        if self.lm.compacts and B > len(rows) and (B - len(rows)) * 4 >= B:  # a quarter or more of the slots are done
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
        slots = np.full((Bb, Tb), lm.cache.trash_col, dtype=np.int64)
        flat = tok_b * Tb + tok_t  # each token's place in the (Bb, Tb) layout
        tokens.flat[flat] = q_ids
        positions.flat[flat] = np.array(q_pos0, dtype=np.int64)[chain] + within
        slots.flat[flat] = tok_slot
        # The attention rows in place order (``RowMask``): what each token's branch sees, and its chain's columns
        order = np.argsort(flat, kind="stable")
        chain = chain[order]
        start = np.array(q_col0, dtype=np.int64)[chain]
        mask = RowMask(flat[order], self._vis[np.array(q_branch, dtype=np.int64)[chain], :Sb], (Bb, Tb, Sb),
                       chains=np.stack([start, start + n_c[chain]], axis=1), slots=tok_slot[order])
        args = (tokens, positions, slots, mask, out_b * Tb + out_t)
        pending = lm.launch(*args) if steer is None else lm.launch(*args, steer=steer)
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
        self.meta = None  # what the caller keeps about its nodes (``drafts.count_subtree``: the count drafts)

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

