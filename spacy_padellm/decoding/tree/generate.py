"""Plain greedy generation on the tree engine (for the autoregressive baselines): ``TreeDecoder.generate``.

Each prompt is one branch in a row of its own; every pass feeds each sequence's last token. With
``draft_tokens`` > 0 (and a batch of at most ``draft_max_docs`` prompts), each step also feeds a draft found
by n-gram lookup in the prompt (prompt-lookup decoding, ``drafts._PromptLookup``), verified in the same
pass: the output is the same, in fewer passes when the output copies the prompt.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from typing import List, Optional, Sequence, Tuple

from ..gc_pause import gc_paused
from ..static_lm import StaticLM
from .batch import TreeBatch
from .drafts import _PromptLookup


@dataclass
class _Sequence:
    branch: int
    handles: List[int]
    ids: List[int]
    lookup: Optional[_PromptLookup]
    lp: float = 0.0
    draft: List[int] = field(default_factory=list)


class GenerateMixin:
    """``generate`` for ``TreeDecoder``: it uses the decoder's settings (``draft_tokens``, ``draft_max_docs``),
    stats, batching (``_chunks``) and KV caches (``_drive``, ``_pool``)."""

    def generate(self, prompts: Sequence[Sequence[int]], *, eos_id: int, max_new_tokens: int
                 ) -> List[Tuple[List[int], float, bool]]:
        """Greedy continuation of each prompt until EOS or ``max_new_tokens``: (ids, log-prob, ended with EOS)
        per prompt (EOS not included); prompt-lookup drafts (see the module) change nothing but the passes."""
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
        lm.restrict_head(None)  # free text: the whole vocabulary
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

