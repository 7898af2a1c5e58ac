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
        ``hidden`` (the pass's final hidden states, one row per output) and ``lm.logits``."""
        dev = hidden.device
        outs = np.unique(np.array(self._bias_out + self._allow_out, dtype=np.int64))
        where = np.full(int(outs[-1]) + 1, -1, dtype=np.int64)
        where[outs] = np.arange(len(outs))
        rows = torch.from_numpy(outs).to(dev)
        logp = torch.log_softmax(lm.logits(hidden.index_select(0, rows)), dim=-1)
        scores = logp
        if self._allow_out:
            allow_rows = torch.from_numpy(where[np.array(self._allow_out, dtype=np.int64)]).to(dev)
            allow_toks = torch.tensor(self._allow_tok, dtype=torch.long, device=dev)
            restricted = torch.zeros(len(outs), dtype=torch.bool, device=dev)
            restricted[allow_rows] = True
            mask = torch.zeros_like(logp).masked_fill_(restricted[:, None], float("-inf"))
            mask[allow_rows, allow_toks] = 0.0
            scores = logp + mask
        if self._bias_out:
            bias_rows = torch.from_numpy(where[np.array(self._bias_out, dtype=np.int64)]).to(dev)
            bias_toks = torch.tensor(self._bias_tok, dtype=torch.long, device=dev)
            scores = scores.clone() if scores is logp else scores
            scores[bias_rows, bias_toks] += torch.tensor(self._bias_val, dtype=logp.dtype, device=dev)
        chosen = scores.argmax(dim=-1)
        tokens[rows] = chosen.to(tokens.dtype)
        logps[rows] = logp.gather(1, chosen[:, None]).squeeze(1).to(logps.dtype)
