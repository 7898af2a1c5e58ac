"""Choosing the decoding engine for a model: the static-cache tree engine where it can run, else the
dynamic-cache one. Both return the same greedy results (tests/test_tree_decoder.py)."""

from __future__ import annotations

import logging
from typing import Optional

from .decoder import TwoStepDecoder
from .protocol import PromptEncoder

__all__ = ["ENGINES", "make_decoder", "make_static_lm"]

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


def make_decoder(model, encoder: PromptEncoder, *, engine: str = "auto", max_count: int = 20,
                 max_count_tokens: int = 4, max_mention_tokens: int = 40, max_batch_rows: int = 256,
                 max_batch_tokens: int = 131072, cuda_graphs: bool = True):
    """The PaDeLLM decoder for ``model``.

    ``engine``: "static" (tree decoding on a static KV cache, CUDA graphs on GPU; Llama, Mistral and
    Qwen2 models), "dynamic" (transformers' own forward and a dynamic cache; any causal LM), or
    "auto" (static where supported). ``max_batch_rows`` bounds the rows of one forward pass (documents
    for the static engine, (document, label) rows for the dynamic one); ``max_batch_tokens`` bounds
    the static engine's KV cache (rows x columns) per batch.
    """
    if engine not in ENGINES:
        raise ValueError(f"engine must be one of {ENGINES}, got {engine!r}")
    limits = dict(max_count=max_count, max_count_tokens=max_count_tokens, max_mention_tokens=max_mention_tokens)
    if engine in ("auto", "static"):
        lm = make_static_lm(model, cuda_graphs=cuda_graphs)
        if lm is not None:
            from .tree_decoder import TreeDecoder

            return TreeDecoder(lm, encoder, max_batch_docs=max_batch_rows, max_batch_tokens=max_batch_tokens,
                               model=model, **limits)
        if engine == "static":
            from .static_lm import static_lm_supported

            raise ValueError(f"engine 'static' cannot run this model: {static_lm_supported(model)[1]}")
    return TwoStepDecoder(model, encoder, max_batch_rows=max_batch_rows, **limits)
