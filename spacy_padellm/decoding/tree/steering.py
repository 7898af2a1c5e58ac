"""Steering a pass's choices on the device: a bias on one token, or a set of allowed tokens, per output.

The decoding levers change what greedy decoding picks at some positions: the count bias adds to the log-prob of
the count "0" before the argmax of a count's first token, the mention constraint allows only the tokens a trie
node allows (``constraints.MentionTrie``). A ``Steering`` collects those changes for one pass (by output index)
and ``apply`` makes them after the model's forward (outside its CUDA graph): the LM head runs again over the
pass's final hidden states, and the steered outputs' tokens and log-probs are replaced by the argmax of the
changed log-probs and the model's own log-prob of that token, as the dynamic engine chooses them.
"""

from __future__ import annotations

from typing import Iterable, List

import numpy as np
import torch

__all__ = ["Steering"]


class Steering:
    """The steered outputs of one pass: ``bias(i, token, value)`` and ``allow(i, ids)`` by output index."""

    __slots__ = ("_bias_out", "_bias_tok", "_bias_val", "_allow_out", "_allow_tok")

    def __init__(self):
        self._bias_out: List[int] = []
        self._bias_tok: List[int] = []
        self._bias_val: List[float] = []
        self._allow_out: List[int] = []  # one entry per allowed (output, token)
        self._allow_tok: List[int] = []

    def __bool__(self) -> bool:
        return bool(self._bias_out or self._allow_out)

    def bias(self, i: int, token: int, value: float) -> None:
        """Add ``value`` to the log-prob of ``token`` before output ``i``'s argmax."""
        self._bias_out.append(i)
        self._bias_tok.append(token)
        self._bias_val.append(value)

    def allow(self, i: int, ids: Iterable[int]) -> None:
        """Output ``i`` may only choose among ``ids`` (non-empty)."""
        ids = list(ids)
        self._allow_out.extend([i] * len(ids))
        self._allow_tok.extend(ids)

    def shifted(self, offset: int) -> "Steering":
        """The same steering with every output index less ``offset`` (handles to a pass's output indices)."""
        other = Steering()
        other._bias_out = [i - offset for i in self._bias_out]
        other._bias_tok, other._bias_val = self._bias_tok, self._bias_val
        other._allow_out = [i - offset for i in self._allow_out]
        other._allow_tok = self._allow_tok
        return other

    def apply(self, lm, hidden: torch.Tensor, tokens: torch.Tensor, logps: torch.Tensor) -> None:
        """Replace ``tokens[i]`` and ``logps[i]`` of every steered output ``i`` (in place, on the device), from
        ``hidden`` (the pass's final hidden states, one row per output) and ``lm.logits``. Every index goes to the
        device in one copy that does not wait for the pass (pinned memory), so the host goes on laying out
        other passes while this one runs."""
        dev = hidden.device
        outs = np.unique(np.array(self._bias_out + self._allow_out, dtype=np.int64))
        where = np.full(int(outs[-1]) + 1, -1, dtype=np.int64)
        where[outs] = np.arange(len(outs))
        allow_rows = where[np.array(self._allow_out, dtype=np.int64)]
        allow_toks = np.array(self._allow_tok, dtype=np.int64)
        bias_rows = where[np.array(self._bias_out, dtype=np.int64)]
        biased = np.zeros(len(outs), dtype=bool)
        biased[bias_rows] = True
        only_allowed = ~biased[allow_rows]  # rows held to allowed tokens: their argmax over those alone
        dense = np.flatnonzero(biased)  # biased rows: a copy of their log-probs, changed and searched whole
        local = np.full(len(outs), -1, dtype=np.int64)
        local[dense] = np.arange(len(dense))
        rest = ~only_allowed
        rows, a_rows, a_toks, held, d_rows, c_rows, c_toks, b_rows, b_toks = upload(dev, [
            outs, allow_rows[only_allowed], allow_toks[only_allowed], np.unique(allow_rows[only_allowed]), dense,
            local[allow_rows[rest]], allow_toks[rest], local[bias_rows], np.array(self._bias_tok, dtype=np.int64)])
        logp = torch.log_softmax(lm.logits(hidden.index_select(0, rows)), dim=-1)
        chosen = torch.zeros(len(outs), dtype=torch.long, device=dev)
        if only_allowed.any():
            allowed_argmax(logp, a_rows, a_toks, held, chosen)
        if len(dense):
            values = upload(dev, [np.array(self._bias_val, dtype=np.float32)], torch.float32)[0]
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


def allowed_argmax(logp: torch.Tensor, r: torch.Tensor, t: torch.Tensor, held: torch.Tensor,
                   chosen: torch.Tensor) -> None:
    """``chosen[i]`` for each row ``i`` of ``held`` (the distinct rows of ``r``): the argmax of ``logp[i]`` with
    every token but the ``t`` paired with it in ``r`` at -inf (the lowest id among equal best ones; token 0 where
    all its allowed log-probs are -inf or NaN, as the argmax of such a row gives), from the allowed log-probs
    alone. All on the device."""
    dev, (n, vocab) = logp.device, logp.shape
    vals = logp[r, t]
    best = torch.full((n,), float("-inf"), dtype=logp.dtype, device=dev).scatter_reduce_(0, r, vals, "amax")
    ties = torch.where(vals == best[r], t, vocab)
    first = torch.full((n,), vocab, dtype=torch.long, device=dev).scatter_reduce_(0, r, ties, "amin")
    picked = torch.where(torch.isfinite(best), first, 0)
    chosen[held] = picked[held]


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
