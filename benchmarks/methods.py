"""The decoding methods the speed benchmark compares, each a way to build a decoder from the component's engine.

A decoder is anything with the engine's ``decode(requests) -> List[DocResult]`` and ``stats`` (a
``DecoderStats``); the benchmark swaps it into the ``padellm_ner`` component for the time of its
measurements, so that everything but decoding is the same for every method.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Dict

from spacy_padellm.decoding.settings import limits_of

__all__ = ["Method", "METHODS", "DEFAULT_METHODS", "BASELINE", "PLAIN"]

BASELINE = "reference"  # speedups are measured against this method
PLAIN = "padellm_dynamic"  # greedy outputs of the other PaDeLLM methods are compared with this one


@dataclass(frozen=True)
class Method:
    """A decoding method to benchmark.

    ``build(engine)`` returns a decoder, given the component's own engine. ``slow`` methods are timed on
    ``--reference-docs`` docs instead of ``--latency-docs``; ``throughput`` methods also run ``nlp.pipe``
    at every ``--batch-sizes`` entry (on all ``--max-docs`` docs, which is also what their F1 is on).
    """

    build: Callable[[Any], Any]
    description: str
    slow: bool = False
    throughput: bool = False


def _dynamic(engine):
    """The eager two-step decoder (dynamic KV cache) on the engine's model and prompts."""
    from spacy_padellm.decoding.dynamic import TwoStepDecoder

    return TwoStepDecoder(engine.model, engine.encoder, **limits_of(engine))


def _generate_reference(engine):
    """The PaDeLLM repository's way of decoding: ``model.generate`` per count and per mention."""
    from spacy_padellm.decoding.reference import ReferenceDecoder

    return ReferenceDecoder(engine.model, engine.encoder, **limits_of(engine))


def _plain(engine):
    """Every sequence on its own, without any cache (``plain_decode``)."""
    from spacy_padellm.decoding.plain import PlainDecoder

    return PlainDecoder.like(engine)


def _tree_variant(method: str, **changes) -> Callable[[Any], Any]:
    """A builder of the component's tree engine (same weights, settings and KV caches) with ``changes``
    to its decoding settings."""

    def build(engine):
        from spacy_padellm.decoding.tree import TreeDecoder

        if not isinstance(engine, TreeDecoder):
            raise ValueError(f"method {method} needs the static tree engine (a Llama-family model, engine auto)")
        return engine.variant(**changes)

    return build


def _quantized(method: str, quantize: str) -> Callable[[Any], Any]:
    """A builder of the component's tree engine with its settings on a copy of the weights quantized by
    ``quantize`` (a StaticLM of its own, so it holds its own KV caches)."""

    def build(engine):
        from spacy_padellm.decoding.factory import make_static_lm
        from spacy_padellm.decoding.tree import TreeDecoder

        if not isinstance(engine, TreeDecoder):
            raise ValueError(f"method {method} needs the static tree engine (a Llama-family model, engine auto)")
        settings = engine.current_settings().replace(quantize=quantize)
        lm = make_static_lm(engine.model, settings)
        return TreeDecoder(lm, engine.encoder, settings, model=engine.model,
                           mention_trie_options=engine.levers.trie_options)

    return build


METHODS: Dict[str, Method] = {
    "padellm": Method(lambda engine: engine,
                      "the component's engine: tree decoding on a static KV cache with CUDA graphs (Llama-family "
                      "models), else the dynamic-cache engine", throughput=True),
    "padellm_nodraft": Method(_tree_variant("padellm_nodraft", draft_tokens=0),
                              "the same tree engine without drafts copied from the text: one pass per mention "
                              "token", throughput=True),
    "padellm_nospan": Method(_tree_variant("padellm_nospan", span_drafts=0),
                             "the same tree engine with count drafts but without span drafts (mentions start one "
                             "pass after their tags)", throughput=False),
    "padellm_words": Method(_tree_variant("padellm_words", span_source="words", span_draft_tokens=4),
                            "the same tree engine with span drafts from the next 4 tokens of each capitalised "
                            "word (the earlier default) instead of runs of capitalised words", throughput=False),
    "padellm_int8w": Method(_quantized("padellm_int8w", "int8-weight-only"),
                            "the same tree engine and settings on weights quantized to int8 (weight-only: every "
                            "matrix and the LM head per output channel)", throughput=True),
    "padellm_dynamic": Method(_dynamic, "plain eager two-step decoder: transformers forward, dynamic KV cache, "
                                        "prefix shared by copying, one pass per token", throughput=True),
    "reference": Method(_generate_reference,
                        "reference-style decoding (PaDeLLM repository): model.generate per count and per mention, "
                        "prompt re-encoded for every sequence", slow=True),
    "reference_nocache": Method(_plain, "each sequence alone, no KV cache at all, whole prompt re-encoded every "
                                        "step", slow=True),
}
DEFAULT_METHODS = ("padellm", "padellm_dynamic", "reference")
