"""How the speed benchmark runs a method: its decoder swapped into the component, wrapped to count what it decodes."""

from __future__ import annotations

import sys
from contextlib import contextmanager
from typing import Dict, Iterator

__all__ = ["Counting", "snapshot", "captures", "delta", "using", "COUNTERS"]

COUNTERS = ("forward_passes", "prompt_tokens", "generated_tokens", "sequences", "windows", "draft_tokens",
            "accepted_draft_tokens", "graph_captures")


class Counting:
    """Wraps a decoder and counts the requests and decoded sequences (count rows + mention rows)."""

    def __init__(self, inner):
        self.inner = inner
        self.windows = 0
        self.sequences = 0

    @property
    def stats(self):
        return self.inner.stats

    def __getattr__(self, name):
        return getattr(self.inner, name)

    def decode(self, requests):
        results = self.inner.decode(requests)
        self.windows += len(requests)
        self.sequences += sum(len(r.labels) for r in requests)
        self.sequences += sum(len(res.predictions) + res.truncated_mentions for res in results)
        return results


def snapshot(counting: Counting) -> Dict[str, int]:
    """Every counter of ``COUNTERS`` now: the decoder's ``DecoderStats``, the wrapper's and the process's captures."""
    s = counting.stats
    return {"forward_passes": int(getattr(s, "forward_passes", 0)),
            "prompt_tokens": int(getattr(s, "prompt_tokens", 0)),
            "generated_tokens": int(getattr(s, "generated_tokens", 0)), "sequences": counting.sequences,
            "windows": counting.windows, "draft_tokens": int(getattr(s, "draft_tokens", 0)),
            "accepted_draft_tokens": int(getattr(s, "accepted_draft_tokens", 0)),
            "graph_captures": captures()}


def captures() -> int:
    """CUDA graphs captured so far by the process's static engines (0 without the static engine loaded)."""
    static_lm = sys.modules.get("spacy_padellm.decoding.static_lm")
    return int(static_lm.StaticLM.all_captures) if static_lm is not None else 0


def delta(after: Dict[str, int], before: Dict[str, int]) -> Dict[str, int]:
    return {k: after[k] - before[k] for k in after}


@contextmanager
def using(ner, decoder) -> Iterator[None]:
    """Run the component with ``decoder`` in place of its engine (model and tokenizer unchanged)."""
    model, tokenizer, _ = ner._ensure_loaded()
    saved = ner._runtime
    ner._runtime = (model, tokenizer, decoder)
    try:
        yield
    finally:
        ner._runtime = saved
