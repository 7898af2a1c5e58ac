"""Choosing the decoding engine for a model: the static-cache tree engine where it can run, else the
dynamic-cache one. Both return the same greedy results (tests/test_tree_decoder.py).

The decoding levers (``constrain_mentions``, ``count_bias``, ``dedupe_mentions``; see ``decoder.py``) are
implemented by the dynamic-cache ``TwoStepDecoder`` only: with any of them on, "auto" picks it and
"static" is an error."""

from __future__ import annotations

import logging
from typing import List, Optional

from .counts import CountBias
from .dynamic import TwoStepDecoder
from ..text.protocol import PromptEncoder

__all__ = ["ENGINES", "active_levers", "make_decoder", "make_static_lm"]

ENGINES = ("auto", "static", "dynamic")
logger = logging.getLogger("spacy_padellm")


def make_static_lm(model, *, cuda_graphs: bool = True):
    """A StaticLM over ``model``'s weights, or None (with the reason logged) if it cannot run it."""
    from .static_lm import StaticLM, static_lm_supported

    ok, why = static_lm_supported(model)
    if not ok:
        logger.info("spacy_padellm: static engine unavailable (%s); using the dynamic-cache engine", why)
        return None
    return StaticLM.from_hf(model, cuda_graphs=cuda_graphs)


def active_levers(constrain_mentions: bool = False, count_bias: CountBias = 0.0,
                  dedupe_mentions: bool = False) -> List[str]:
    """The names of the decoding levers that are on (a count bias is on when any of its values is non-zero)."""
    biases = count_bias.values() if isinstance(count_bias, dict) else [count_bias or 0.0]
    on = [("constrain_mentions", bool(constrain_mentions)), ("count_bias", any(float(b) != 0.0 for b in biases)),
          ("dedupe_mentions", bool(dedupe_mentions))]
    return [name for name, value in on if value]


def make_decoder(model, encoder: PromptEncoder, *, engine: str = "auto", max_count: int = 20,
                 max_count_tokens: int = 4, max_mention_tokens: int = 40, max_batch_rows: int = 256,
                 max_batch_tokens: int = 131072, cuda_graphs: bool = True, constrain_mentions: bool = False,
                 count_bias: CountBias = 0.0, dedupe_mentions: bool = False, draft_tokens: int = 8,
                 inflight_batches: Optional[int] = None):
    """The PaDeLLM decoder for ``model``.

    ``engine``: "static" (tree decoding on a static KV cache, CUDA graphs on GPU; Llama, Mistral and
    Qwen2 models), "dynamic" (transformers' own forward and a dynamic cache; any causal LM), or
    "auto" (static where supported). ``max_batch_rows`` bounds the rows of one forward pass (documents
    for the static engine, (document, label) rows for the dynamic one); ``max_batch_tokens`` bounds
    the static engine's KV cache (rows x columns) per batch.

    ``constrain_mentions``, ``count_bias``, ``dedupe_mentions``: the decoding levers of ``TwoStepDecoder``
    (off by default); with any of them on, "auto" uses the dynamic engine and "static" raises ValueError.
    ``draft_tokens``: the static engine's drafts copied from the text (0: off); the dynamic engine has none.
    ``inflight_batches``: the static engine's batches decoded at once, each on a KV cache of its own (None: 4 on
    CUDA, 1 on the CPU).
    """
    if engine not in ENGINES:
        raise ValueError(f"engine must be one of {ENGINES}, got {engine!r}")
    limits = dict(max_count=max_count, max_count_tokens=max_count_tokens, max_mention_tokens=max_mention_tokens)
    levers = active_levers(constrain_mentions, count_bias, dedupe_mentions)
    if levers and engine == "static":
        raise ValueError(f"the decoding levers {', '.join(levers)} are implemented by the dynamic-cache engine "
                         "only: use engine 'dynamic' or 'auto', or turn them off")
    if levers and engine == "auto":
        logger.info("spacy_padellm: using the dynamic-cache engine, since the static engine does not implement "
                    "the decoding levers %s", ", ".join(levers))
    elif engine in ("auto", "static"):
        lm = make_static_lm(model, cuda_graphs=cuda_graphs)
        if lm is not None:
            from .tree import TreeDecoder

            return TreeDecoder(lm, encoder, max_batch_docs=max_batch_rows, max_batch_tokens=max_batch_tokens,
                               draft_tokens=draft_tokens, inflight_batches=inflight_batches, model=model,
                               **limits)
        if engine == "static":
            from .static_lm import static_lm_supported

            raise ValueError(f"engine 'static' cannot run this model: {static_lm_supported(model)[1]}")
    return TwoStepDecoder(model, encoder, max_batch_rows=max_batch_rows, constrain_mentions=bool(constrain_mentions),
                          count_bias=count_bias, dedupe_mentions=bool(dedupe_mentions), **limits)
