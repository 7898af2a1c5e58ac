"""Choosing the decoder for a model and a decoding: the static-cache tree engine where it can run, else the
dynamic-cache one; the paper's reference implementation; the autoregressive baselines on either engine.
Every PaDeLLM engine returns the same greedy results (tests/decoding)."""

from __future__ import annotations

import logging
from functools import partial
from typing import Any, Callable, Optional

from .dynamic import TwoStepDecoder
from .settings import AUTOREG_DECODINGS, DecodeSettings
from ..text.protocol import PromptEncoder

__all__ = ["make_decoder", "make_static_lm", "build_decoder", "choose_attention", "choose_head", "PROTOCOL_FITS"]

logger = logging.getLogger("spacy_padellm")

# The decodings a model trained with a protocol (padellm.json "protocol") can be used with.
PROTOCOL_FITS = {"padellm": ("padellm", "reference"), "autoreg_struct": ("autoreg_struct",),
                 "autoreg_aug": ("autoreg_aug",)}


def make_static_lm(model, settings: Optional[DecodeSettings] = None, **changes):
    """A StaticLM over ``model``'s weights for ``settings`` (default ``DecodeSettings()``) with ``changes``:
    ``quantize``d if set, smoothed by the activation ranges its model folder shipped, ``model.padellm_int8_ranges``,
    if any; its element-wise steps compiled on CUDA unless ``fused_kernels`` is False; attention and the LM head's
    greedy step on CUDA as ``choose_attention`` and ``choose_head`` pick for ``attention_kernel`` and
    ``head_kernel``; passes of more than ``graph_max_tokens`` real tokens eager; ``bucket_steps`` shape buckets a
    doubling. None (with the reason logged) if
    it cannot run the model."""
    from .static_lm import StaticLM, static_lm_supported

    s = (settings or DecodeSettings()).replace(**changes)
    ok, why = static_lm_supported(model)
    if not ok:
        logger.info("spacy_padellm: static engine unavailable (%s); using the dynamic-cache engine", why)
        return None
    lm = StaticLM.from_hf(model, cuda_graphs=s.cuda_graphs)
    lm.graph_max_tokens = s.graph_max_tokens
    lm.bucket_steps = s.bucket_steps
    if s.quantize is not None:
        ranges = getattr(model, "padellm_int8_ranges", None)
        if ranges is None and s.quantize in ("int8", "int8-head"):
            logger.info("spacy_padellm: quantize %r without activation ranges (none in the model folder): "
                        "not smoothed", s.quantize)
        lm.quantize(s.quantize, ranges)
    if lm.device.type == "cuda" and (s.fused_kernels or (s.fused_kernels is None and lm.use_graphs)):
        lm.fuse()
    if lm.device.type == "cuda" and choose_attention(lm, s.attention_kernel) == "triton":
        lm.use_tree_attention()
    if lm.device.type == "cuda" and choose_head(lm, s.head_kernel) == "triton":
        lm.use_head_kernel()
    return lm


def choose_attention(lm, attention_kernel: Optional[str]) -> str:
    """The attention a StaticLM on CUDA runs for the setting ``attention_kernel``: as set, or for null "triton"
    where its passes are CUDA graphs and the kernels run on its device (``tree_attention.runs_on``: Triton, the
    model's heads, a first call that compiles and agrees with torch), else "sdpa" (logged: heads the kernels do not
    take at the info level, anything else as a warning)."""
    from . import tree_attention

    if attention_kernel is not None:
        return attention_kernel
    if not lm.use_graphs:
        return "sdpa"  # eager passes: a Triton kernel costs more to launch than torch's attention
    try:
        tree_attention.check_heads(lm.n_heads, lm.n_kv, lm.head_dim)
    except ValueError as err:  # by design, not a fault: the model's heads are not a shape the kernels take
        logger.info("spacy_padellm: attention through torch's scaled_dot_product_attention (%s)", err)
        return "sdpa"
    why = tree_attention.runs_on(str(lm.device), lm.dtype, lm.n_heads, lm.n_kv, lm.head_dim)
    if why is not None:
        logger.warning("spacy_padellm: attention through torch's scaled_dot_product_attention, not the Triton "
                       "kernels (%s); set attention_kernel to \"sdpa\" to skip trying them", why)
        return "sdpa"
    return "triton"


def choose_head(lm, head_kernel: Optional[str]) -> str:
    """The LM head's greedy step a StaticLM on CUDA runs for the setting ``head_kernel``: as set, or for null
    "triton" where its passes are CUDA graphs, its head is a float one and the kernels run on its device
    (``head_kernel.runs_on``: Triton, a first call that compiles and agrees with torch), else "torch" (a failed first
    call is logged as a warning)."""
    from . import head_kernel as kernels

    if head_kernel is not None:
        return head_kernel
    if not lm.use_graphs or not lm.gives_pairs:  # eager passes, or a quantized head (no float rows to multiply)
        return "torch"
    why = kernels.runs_on(str(lm.device), lm.dtype, int(lm.lm_head.shape[1]))
    if why is not None:
        logger.warning("spacy_padellm: the LM head through torch, not the Triton kernels (%s); set head_kernel to "
                       "\"torch\" to skip trying them", why)
        return "torch"
    return "triton"


def _static_only(settings: DecodeSettings, what: str) -> None:
    """``quantize`` runs on the static engine only: an error for ``what`` (another engine or decoding)."""
    if settings.quantize is not None:
        raise ValueError(f"quantize {settings.quantize!r} runs on the static engine only, not with {what}; "
                         "set quantize to null")


def _static_error(model) -> ValueError:
    """engine "static" asked of a model the static engine cannot run: the error naming what it lacks."""
    from .static_lm import static_lm_supported

    return ValueError(f"engine 'static' cannot run this model: {static_lm_supported(model)[1]}; "
                      "engine 'dynamic' (or 'auto') runs it on transformers' own forward")


def _tree_decoder(lm, encoder: PromptEncoder, settings: DecodeSettings, model):
    from .tree import TreeDecoder

    return TreeDecoder(lm, encoder, settings, model=model)


def make_decoder(model, encoder: PromptEncoder, settings: Optional[DecodeSettings] = None):
    """The PaDeLLM decoder for ``model``: ``settings.engine`` "static" (tree decoding on a static KV cache,
    CUDA graphs on GPU; Llama, Mistral, Qwen2 and Gemma 3 text models), "dynamic" (transformers' own forward and a
    dynamic cache; any causal LM), or "auto" (static where supported). Both engines implement the decoding
    levers, with the same results."""
    settings = settings or DecodeSettings()
    if settings.engine in ("auto", "static"):
        lm = make_static_lm(model, settings)
        if lm is not None:
            return _tree_decoder(lm, encoder, settings, model)
        if settings.engine == "static":
            raise _static_error(model)
    _static_only(settings, "the dynamic engine")
    return TwoStepDecoder(model, encoder, settings)


def _autoreg_generate(model, encoder: PromptEncoder, settings: DecodeSettings, eos_id: int) -> Callable:
    """Greedy generation for the autoregressive baselines: the static engine's where it runs."""
    from ..baselines import hf_greedy_generate

    lm = None
    if settings.engine != "dynamic":
        lm = make_static_lm(model, settings)
    if lm is None and settings.engine == "static":
        raise _static_error(model)
    if lm is not None:
        return partial(_tree_decoder(lm, encoder, settings, model).generate, eos_id=eos_id)
    _static_only(settings, "the dynamic engine")
    return partial(hf_greedy_generate, model, eos_id=eos_id, max_batch_rows=settings.max_batch_rows)


def build_decoder(model, encoder: PromptEncoder, settings: DecodeSettings, decoding: str, *,
                  autoreg_encoder: Any = None, generate: Optional[Callable] = None):
    """The decoder for ``decoding`` ("padellm", "reference", "autoreg_struct", "autoreg_aug").

    ``autoreg_encoder`` (a ``baselines.AutoRegEncoder``) is needed by the autoregressive decodings;
    ``generate`` replaces their greedy engine (``generate(prompts, *, max_new_tokens) -> [(ids without EOS,
    sum of log-probs, EOS reached)]``). The decoding levers apply to "padellm" only; the others ignore them."""
    if decoding in AUTOREG_DECODINGS:
        from ..baselines import AutoRegDecoder

        if generate is None:
            generate = _autoreg_generate(model, encoder, settings, autoreg_encoder.eos_id)
        return AutoRegDecoder(autoreg_encoder, generate, max_new_tokens=settings.max_new_tokens)
    if decoding == "reference":
        from .reference import ReferenceDecoder

        _static_only(settings, "decoding 'reference'")

        return ReferenceDecoder(model, encoder, settings)
    return make_decoder(model, encoder, settings)
