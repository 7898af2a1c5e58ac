"""Steering a pass's choices on the device: a bias on one token, or a set of allowed tokens, per output.

The decoding levers change what greedy decoding picks at some positions: the count bias adds to the log-prob of
the count "0" before the argmax of a count's first token, the mention constraint allows only the tokens a trie
node allows (``constraints.MentionTrie``). A ``Steering`` collects those changes for one pass (by output index)
and ``apply`` makes them after the model's forward (outside its CUDA graph): the LM head runs again over the
pass's final hidden states, and the steered outputs' tokens and log-probs are replaced by the argmax of the
changed log-probs and the model's own log-prob of that token, as the dynamic engine chooses them. (One exception, for
outputs held to allowed tokens alone: where none of them has a finite log-prob, the choice is token 0, as the
argmax gives, with that non-finite log-prob rather than token 0's own; a finite head never gives this.)
"""

from __future__ import annotations

from itertools import chain
from typing import Iterable, List, Optional, Sequence, Tuple

import numpy as np
import torch

__all__ = ["Steering"]


class Steering:
    """The steered outputs of one pass: ``bias(i, token, value)`` and ``allow(i, ids)`` by output index."""

    __slots__ = ("_bias_out", "_bias_tok", "_bias_val", "_allow_out", "_allow_ids")

    def __init__(self):
        self._bias_out: List[int] = []
        self._bias_tok: List[int] = []
        self._bias_val: List[float] = []
        self._allow_out: List[int] = []  # one entry per held output
        self._allow_ids: List[List[int]] = []  # its allowed tokens (a list it is given is kept, not copied)

    def __bool__(self) -> bool:
        return bool(self._bias_out or self._allow_out)

    def bias(self, i: int, token: int, value: float) -> None:
        """Add ``value`` to the log-prob of ``token`` before output ``i``'s argmax."""
        self._bias_out.append(i)
        self._bias_tok.append(token)
        self._bias_val.append(value)

    def allow(self, i: int, ids: Iterable[int]) -> None:
        """Output ``i`` may only choose among ``ids`` (non-empty; a list is kept as it is, and must not change until
        the pass is launched)."""
        self._allow_out.append(i)
        self._allow_ids.append(ids if type(ids) is list else list(ids))

    def allow_each(self, outputs: Sequence[int], ids: Sequence[List[int]]) -> None:
        """``allow(outputs[i], ids[i])`` for each pair (as far as the shorter goes; each list is kept, not copied)."""
        n = min(len(outputs), len(ids))
        self._allow_out.extend(outputs[:n])
        self._allow_ids.extend(ids[:n])

    def shifted(self, offset: int) -> "Steering":
        """The same steering with every output index less ``offset`` (handles to a pass's output indices)."""
        other = Steering()
        other._bias_out = [i - offset for i in self._bias_out]
        other._bias_tok, other._bias_val = self._bias_tok, self._bias_val
        other._allow_out = [i - offset for i in self._allow_out]
        other._allow_ids = self._allow_ids
        return other

    def apply(self, lm, hidden: torch.Tensor, lse: Optional[torch.Tensor], tokens: torch.Tensor,
              logps: torch.Tensor) -> None:
        """Replace ``tokens[i]`` and ``logps[i]`` of every steered output ``i`` (in place, on the device), from
        ``hidden`` (the pass's final hidden states, one row per output), ``lse`` (the log of each output's softmax
        denominator, as the pass computed it; None: not kept) and ``lm``'s LM head. Every index goes to the device
        in one copy that does not wait for the pass (pinned memory), so the host goes on laying out other passes
        while this one runs.

        An output held to allowed tokens alone (no bias) needs only their logits: ``lm.pair_logits`` gives them
        from the head's rows of those tokens, and the pass's own ``lse`` makes them log-probs, so the head is not
        run again over the whole vocabulary (under a restricted head, ``StaticLM.restrict_head``, that ``lse`` is
        over its tokens: the log-probs are normalised over them, as the unsteered outputs' are). Biased outputs, and
        every output where the head cannot give pairs (an int8 or bfloat16-packed head), take the head's whole row of
        logits again."""
        outs = np.unique(np.array(self._bias_out + self._allow_out, dtype=np.int64))
        where = np.full(int(outs[-1]) + 1, -1, dtype=np.int64)
        where[outs] = np.arange(len(outs))
        lens = np.fromiter(map(len, self._allow_ids), dtype=np.int64, count=len(self._allow_ids))
        allow_rows = np.repeat(where[np.array(self._allow_out, dtype=np.int64)], lens)
        allow_toks = np.fromiter(chain.from_iterable(self._allow_ids), dtype=np.int64, count=int(lens.sum()))
        bias_rows = where[np.array(self._bias_out, dtype=np.int64)]
        biased = np.zeros(len(outs), dtype=bool)
        biased[bias_rows] = True
        paired = ~biased[allow_rows]  # pairs of outputs held to allowed tokens alone
        if lse is not None and lm.gives_pairs and paired.any():
            _apply_pairs(lm, hidden, lse, outs, allow_rows[paired], allow_toks[paired], tokens, logps)
            whole = np.flatnonzero(biased)
            keep = ~paired
            allow_rows, allow_toks = allow_rows[keep], allow_toks[keep]
        else:
            whole = np.arange(len(outs))
        if len(whole):
            _apply_whole(lm, hidden, outs, whole, allow_rows, allow_toks, bias_rows,
                         np.array(self._bias_tok, dtype=np.int64), np.array(self._bias_val, dtype=np.float32),
                         tokens, logps)


def _apply_pairs(lm, hidden, lse, outs, rows, toks, tokens, logps) -> None:
    """The choice of each output ``outs[rows]`` among its allowed ``toks`` (pairs), from their logits alone: in one
    Triton kernel where the LM head runs on them (``StaticLM.head_kernel``), else in torch."""
    if getattr(lm, "head_kernel", False):
        return _choose_in_kernel(lm, hidden, lse, outs, rows, toks, tokens, logps)
    held = np.unique(rows)
    local = np.zeros(int(held[-1]) + 1, dtype=np.int64)
    local[held] = np.arange(len(held))
    r_out, t, r_held, h_out = upload(hidden.device, [outs[rows], toks, local[rows], outs[held]])
    vals = lm.pair_logits(hidden.index_select(0, r_out), t) - lse.index_select(0, r_out).float()
    best, chosen = allowed_argmax(vals, r_held, t, len(held), lm.vocab_size)
    if lm.head_restricted:
        # an allowed token outside a restricted head's set (none on CoNLL03's texts) is still chosen by its logit;
        # its log-prob, over a denominator without it, is capped at 0
        best = best.clamp(max=0.0)
    tokens[h_out] = chosen.to(tokens.dtype)
    logps[h_out] = best.to(logps.dtype)  # the chosen token's log-prob (not finite where the choice fell to token 0)


def _choose_in_kernel(lm, hidden, lse, outs, rows, toks, tokens, logps) -> None:
    """``_apply_pairs`` through ``head_kernel.choose_among``: the pairs grouped by output (in their order within
    each), one upload, one kernel."""
    from .. import head_kernel

    order = np.argsort(rows, kind="stable")
    held, starts = np.unique(rows[order], return_index=True)
    o, st, t = upload(hidden.device, [outs[held], np.append(starts, len(order)), toks[order]])
    head_kernel.choose_among(hidden, lse, lm.lm_head, lm.final_softcap, o, st, t, tokens, logps,
                             clamp=lm.head_restricted)


def _apply_whole(lm, hidden, outs, whole, allow_rows, allow_toks, bias_rows, bias_toks, bias_vals, tokens,
                 logps) -> None:
    """The choice of each output ``outs[whole]`` from its whole row of log-probs, held to its allowed tokens
    (``allow_rows``/``allow_toks``, indices into ``outs``) and biased (``bias_rows``/...)."""
    dev = hidden.device
    pos = np.full(len(outs), -1, dtype=np.int64)
    pos[whole] = np.arange(len(whole))
    biased = np.zeros(len(whole), dtype=bool)
    biased[pos[bias_rows]] = True
    a_rows = pos[allow_rows]
    only_allowed = ~biased[a_rows]  # rows held to allowed tokens: their argmax over those alone
    dense = np.flatnonzero(biased)  # biased rows: a copy of their log-probs, changed and searched whole
    local = np.full(len(whole), -1, dtype=np.int64)
    local[dense] = np.arange(len(dense))
    rest = ~only_allowed
    held = np.unique(a_rows[only_allowed])
    h_local = np.zeros(int(held[-1]) + 1 if len(held) else 0, dtype=np.int64)
    h_local[held] = np.arange(len(held))
    rows, o_rows, o_toks, o_held, held_d, d_rows, c_rows, c_toks, b_rows, b_toks = upload(dev, [
        outs[whole], a_rows[only_allowed], allow_toks[only_allowed], h_local[a_rows[only_allowed]], held, dense,
        local[a_rows[rest]], allow_toks[rest], local[pos[bias_rows]], bias_toks])
    logp = torch.log_softmax(lm.logits(hidden.index_select(0, rows)), dim=-1)
    chosen = torch.zeros(len(whole), dtype=torch.long, device=dev)
    if len(held):
        chosen[held_d] = allowed_argmax(logp[o_rows, o_toks], o_held, o_toks, len(held), logp.shape[1])[1]
    if len(dense):
        values = upload(dev, [bias_vals], torch.float32)[0]
        scores = _changed(logp.index_select(0, d_rows), c_rows, c_toks, b_rows, b_toks, values)
        chosen[d_rows] = scores.argmax(dim=-1)
    tokens[rows] = chosen.to(tokens.dtype)
    logps[rows] = logp.gather(1, chosen[:, None]).squeeze(1).to(logps.dtype)


def upload(dev: torch.device, arrays: List[np.ndarray], dtype: torch.dtype = torch.long) -> List[torch.Tensor]:
    """``arrays`` on ``dev`` as ``dtype``: one copy of their concatenation, from pinned memory on CUDA (it does not
    wait for the device: a copy from pageable memory would wait for the pass in flight), split back on the device."""
    flat = torch.from_numpy(np.concatenate(arrays)).to(dtype)
    if dev.type == "cuda":
        flat = flat.pin_memory().to(dev, non_blocking=True)
    else:
        flat = flat.to(dev)
    return list(torch.split(flat, [len(a) for a in arrays]))


def allowed_argmax(vals: torch.Tensor, r: torch.Tensor, t: torch.Tensor, n: int,
                   vocab: int) -> Tuple[torch.Tensor, torch.Tensor]:
    """For each of ``n`` rows, the best value of its allowed pairs and the token of that pair: pair ``i`` gives row
    ``r[i]`` the value ``vals[i]`` for token ``t[i]``; the lowest id among equal best ones; token 0 where none of its
    values is finite (as the argmax of a row of -inf or NaN gives). All on the device."""
    dev = vals.device
    best = torch.full((n,), float("-inf"), dtype=vals.dtype, device=dev).scatter_reduce_(0, r, vals, "amax")
    ties = torch.where(vals == best[r], t, vocab)
    first = torch.full((n,), vocab, dtype=torch.long, device=dev).scatter_reduce_(0, r, ties, "amin")
    return best, torch.where(torch.isfinite(best), first, 0)


def _changed(scores: torch.Tensor, allow_rows: torch.Tensor, allow_toks: torch.Tensor, bias_rows: torch.Tensor,
             bias_toks: torch.Tensor, bias_vals: torch.Tensor) -> torch.Tensor:
    """``scores`` (a copy, changed in place) with the tokens not allowed in a row that has allowed ones at -inf,
    and the biases added (every index a device tensor)."""
    if len(allow_rows):
        restricted = torch.zeros(len(scores), dtype=torch.bool, device=scores.device)
        restricted[allow_rows] = True
        mask = torch.zeros_like(scores).masked_fill_(restricted[:, None], float("-inf"))
        mask[allow_rows, allow_toks] = 0.0
        scores += mask
    scores[bias_rows, bias_toks] += bias_vals.to(scores.dtype)
    return scores
