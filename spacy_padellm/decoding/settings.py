"""Every decoding setting once: its default, type, check and meaning (no torch, no spaCy).

``DecodeSettings`` is what the component's config, a saved pipeline, ``make_decoder``, every engine, the
spacy-llm local backend, ``annotate`` and the benchmark take. A misspelt or out-of-range setting is one
``SettingsError`` naming the setting and what it accepts. ``settings_table()`` renders the table the README
shows.
"""

from __future__ import annotations

import dataclasses
import difflib
import inspect
import math
import typing
from dataclasses import dataclass, field
from typing import Any, Callable, Dict, Iterable, List, Mapping, Optional, Tuple, Union

__all__ = ["DECODINGS", "ENGINES", "AUTOREG_DECODINGS", "QUANTIZATIONS", "CountBias", "DecodeSettings", "SettingsError",
           "limits_of", "settings_parameters", "settings_table"]

DECODINGS = ("padellm", "reference", "autoreg_struct", "autoreg_aug")
AUTOREG_DECODINGS = ("autoreg_struct", "autoreg_aug")
ENGINES = ("auto", "static", "dynamic")
# what ``quantize`` takes (``decoding.quantize`` implements them)
QUANTIZATIONS = ("int8", "int8-head", "bf16", "int8-weight-only")
CountBias = Union[float, Dict[str, float]]


class SettingsError(ValueError):
    """A setting with a misspelt name, a wrong type or a value out of range."""


# -- checks: each returns the value to keep, or raises SettingsError ------------------------------------------


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _fail(key: str, expected: str, value: Any) -> SettingsError:
    return SettingsError(f"'{key}' must be {expected}, got {value!r}")


def positive(key: str, value: Any) -> int:
    if not _is_int(value) or value < 1:
        raise _fail(key, "a positive integer", value)
    return value


def non_negative(key: str, value: Any) -> int:
    if not _is_int(value) or value < 0:
        raise _fail(key, "a non-negative integer", value)
    return value


def optional(check: Callable[[str, Any], Any], meaning: str) -> Callable[[str, Any], Any]:
    def check_optional(key: str, value: Any) -> Any:
        if value is None:
            return None
        try:
            return check(key, value)
        except SettingsError:
            raise _fail(key, f"null ({meaning}) or {_EXPECTED[check]}", value) from None

    return check_optional


def boolean(key: str, value: Any) -> bool:
    if not isinstance(value, bool):
        raise _fail(key, "true or false", value)
    return value


def one_of(*choices: Optional[str]) -> Callable[[str, Any], Any]:
    def check_choice(key: str, value: Any) -> Any:
        if value not in choices:
            names = ", ".join(str(c) for c in choices if c is not None)
            raise _fail(key, ("null or one of " if None in choices else "one of ") + names, value)
        return value

    return check_choice


def probability(key: str, value: Any) -> float:
    if not _is_number(value) or not 0.0 <= value <= 1.0:
        raise _fail(key, "a number from 0 to 1", value)
    return float(value)


def count_bias(key: str, value: Any) -> CountBias:
    if _is_number(value):
        return float(value)
    if isinstance(value, Mapping) and all(isinstance(k, str) and k and _is_number(v) for k, v in value.items()):
        return {k: float(v) for k, v in value.items()}
    raise _fail(key, "a number or a dict of label -> number (added to the log-prob of the count \"0\")", value)


_EXPECTED = {positive: "a positive integer", non_negative: "a non-negative integer", boolean: "true or false"}


def _setting(default: Any, check: Callable[[str, Any], Any], doc: str) -> Any:
    return field(default=default, metadata={"check": check, "doc": doc})


@dataclass(frozen=True)
class DecodeSettings:
    """How documents are decoded. Build with keywords (``DecodeSettings(max_count=10)``), from a config
    (``DecodeSettings.from_config(cfg)``) or from another (``settings.replace(engine="dynamic")``)."""

    decoding: Optional[str] = _setting(None, one_of(None, *DECODINGS), (
        '`"padellm"` (the parallel engine), `"reference"` (the paper\'s reference implementation: '
        '`model.generate` per step, prompt re-encoded per mention; PaDeLLM models only), `"autoreg_struct"` / '
        '`"autoreg_aug"` (the paper\'s autoregressive baselines, for models trained with `[data] protocol` of '
        'that name); null: the protocol the model folder records, else `"padellm"`; a decoding that does not '
        'fit the recorded protocol is an error'))
    engine: str = _setting("auto", one_of(*ENGINES), (
        '`"static"`: tree decoding on a static KV cache, CUDA graphs on GPU (Llama, Mistral, Qwen2 and Gemma 3 '
        'text models: SmolLM2 is a Llama); `"dynamic"`: transformers\' forward with a dynamic cache (any causal '
        'LM); `"auto"`: static where it can run. Both give the same greedy entities'))
    batch_size: int = _setting(32, positive, (
        "docs per decoder call when the component's `pipe` is given no batch size; `nlp.pipe` always gives its "
        "own (`batch_size=`, else `nlp.batch_size`, 1000); memory is bounded by `max_cache_mb` and `max_batch_rows`, "
        "not by it"))
    max_batch_rows: int = _setting(256, positive, (
        "rows of one decoding batch: a document for the static engine (all its labels share one cache row), "
        "a (document, label) row for the dynamic one; bounds memory"))
    max_batch_tokens: int = _setting(131072, positive, (
        "static engine: KV-cache cells (rows x columns) of one batch; a batch that would need more is split"),)
    max_cache_mb: Optional[int] = _setting(None, optional(positive, "1024 on the CPU, no cap on CUDA"), (
        "static engine: MiB of KV cache per batch in flight, whatever the number of docs: a batch takes no "
        "more documents than fit at twice their estimated width (documents that decode longer still widen it "
        "past that for their rows still decoding; such a cache is freed when the call ends); null: 1024 on the "
        "CPU, no cap on CUDA"))
    inflight_batches: Optional[int] = _setting(None, optional(positive, "4 on CUDA, 1 on the CPU"), (
        "static engine: batches of an `nlp.pipe` call decoded at once, each on a KV cache of its own, so the "
        "host lays out one batch's pass while the device runs another's; null: 4 on CUDA, 1 on the CPU; "
        "1 or 2 save GPU memory"))
    max_context_tokens: Optional[int] = _setting(None, optional(positive, "the model's positions, at most 512"), (
        "model tokens of a window's longest sequence: the prompt with the window's text and the longest output "
        "the decoding may write (for `padellm`: a label, a count, a mention tag and `max_mention_tokens`); "
        "longer docs are cut into sentence-aligned windows that fit; at most the model's positions; null: the "
        "model's positions, at most 512"))
    window_sentences: Optional[int] = _setting(1, optional(positive, "as many as fit `max_context_tokens`"), (
        "sentences a window holds at most (a sentence longer than `max_context_tokens` is cut at tokens); spans "
        "are mapped back to the doc. Models trained on single sentences (the shipped ones) count the mentions "
        "of one sentence well and fall short on several; null: as many as fit `max_context_tokens`"))
    max_count: int = _setting(20, positive, (
        "count cap; larger counts are clipped and counted in `doc._.padellm`"))
    max_count_tokens: int = _setting(4, positive, "tokens a count may take")
    max_mention_tokens: int = _setting(40, positive, (
        "tokens a mention may take; longer ones are dropped and counted"))
    max_new_tokens: int = _setting(256, positive, (
        "output budget of `autoreg_struct`; `autoreg_aug` gets the text's own token count on top (its output "
        "copies the text); outputs cut by it are parsed as far as they go and counted"))
    deduplicate: bool = _setting(True, boolean, "one label per span: the most probable")
    constrain_mentions: Optional[bool] = _setting(None, optional(boolean, "the model's"), (
        "decoding lever: a mention can only be a span of the text (prefix trie over its spans); null: as the "
        "model folder records it (`levers` in its padellm.json: the shipped default model was chosen with it "
        "on), else false"))
    count_bias: CountBias = _setting(0.0, count_bias, (
        'decoding lever: added to the log-prob of the count "0" (negative: fewer zero counts); a number, or a '
        "dict label -> number"))
    dedupe_mentions: Optional[bool] = _setting(None, optional(boolean, "the model's"), (
        "decoding lever: a mention that repeats a string of its label more often than the text holds it is "
        "decoded again, constrained to the text's spans less the strings already taken (dropped if then "
        "improbable); null: as the model folder records it (as `constrain_mentions`), else false"))
    dedupe_rounds: int = _setting(20, positive, "`dedupe_mentions`: rounds of decoding repeats again")
    dedupe_min_prob: float = _setting(0.005, probability, (
        "`dedupe_mentions`: a mention decoded again below this probability is dropped"))
    draft_tokens: int = _setting(8, non_negative, (
        "static engine: tokens per draft copied from the text, verified in the same pass (same output, fewer "
        "passes); `0` turns all drafting off"))
    max_drafts: int = _setting(3, non_negative, (
        "static engine: drafts per mention, each continuing another occurrence of the mention so far"),)
    draft_max_docs: int = _setting(32, non_negative, (
        "static engine: batches of more documents decode without drafts (drafts make every pass wider)"),)
    count_drafts: Optional[int] = _setting(None, optional(non_negative, "3 on CUDA, 0 on the CPU"), (
        "static engine: the counts 0 .. n-1 drafted after every label prompt in the first pass; null: 3 on "
        "CUDA, 0 on the CPU"))
    span_drafts: Optional[int] = _setting(None, optional(non_negative, "4 on CUDA, 0 on the CPU"), (
        "static engine: candidate mentions copied from the text after each drafted mention tag; null: 4 on "
        "CUDA, 0 on the CPU"))
    span_draft_tokens: int = _setting(6, positive, "static engine: tokens per span draft")
    span_draft_budget: int = _setting(4096, non_negative, (
        "static engine: span-draft tokens in one batch's first pass at most"))
    span_source: str = _setting("runs", one_of("runs", "words"), (
        'static engine: span drafts from `"runs"` of capitalised words and numbers, or the next tokens after '
        'each capitalised `"words"`'))
    speculate: bool = _setting(True, boolean, (
        "static engine: the count terminator is fed with the count digit and verified in the same pass"),)
    cuda_graphs: bool = _setting(True, boolean, "static engine: replay each pass shape as a CUDA graph on GPU",)
    graph_max_tokens: Optional[int] = _setting(None, optional(positive, "every pass a CUDA graph"), (
        "static engine on CUDA: a pass with more real tokens than this runs eagerly, not as a CUDA graph, and on "
        "exactly its real tokens (its projections and MLPs packed, with no shape bucket to pad to), so a wide "
        "batch's first pass (every prefix and label prompt: most of `nlp.pipe`'s tokens, padded by about half in "
        "its bucket) does no work on padding, at the cost of the pass's kernel launches from the host; not "
        "bit-identical to the graph (float rounding); null: every pass a CUDA graph; passes without CUDA graphs "
        "(`cuda_graphs` false) are packed the same way when set; ignored by the CPU's segmented passes"))
    bucket_steps: int = _setting(1, positive, (
        "static engine on CUDA: shape buckets per doubling for a pass's tokens through the projections and "
        "MLPs and for its outputs through the LM head (1: powers of two, a batch's first pass padded by about half; "
        "4: ..., 64, 80, 96, 112, 128, 160, ...), so less of the device's work is padding, at the cost of more CUDA "
        "graphs captured (each once per process), and more passes packed (each whose bucket of tokens is smaller "
        "than its rows x places layout, with powers of two at most half of it); 4 pays where the GPU is the limit, "
        "with several pipeline processes on it (measured: docs/results-speed.md); not bit-identical to another "
        "value (float rounding); ignored by the CPU's segmented passes"))
    fused_kernels: Optional[bool] = _setting(None, optional(boolean, "on with CUDA graphs on CUDA"), (
        "static engine on CUDA: the element-wise steps between a layer's matrix products (norms, RoPE, the gated "
        "activation, residual sums, the LM head's log-softmax) compiled by `torch.compile` into one kernel each "
        "(decoding/fused.py; compiled on the first passes, a step that cannot be compiled runs unfused); not "
        "bit-identical to the unfused pass (float rounding; measured: docs/results-speed.md); null: on with CUDA "
        "graphs on CUDA; ignored on the CPU"))
    attention_kernel: Optional[str] = _setting(None, one_of(None, "sdpa", "triton"), (
        'static engine on CUDA: a layer\'s attention through `"sdpa"` (torch\'s `scaled_dot_product_attention` '
        'over an additive mask) or `"triton"` (two Triton kernels a layer: the query/key norm, RoPE and the KV-cache '
        "writes in one, attention over the pass's boolean tree mask in the other; decoding/tree_attention.py; a "
        "power-of-two head size, at most 16 query heads per KV head); not bit-identical to each other (float "
        'rounding; measured: docs/results-speed.md); null: `"triton"` where passes are CUDA graphs and the kernels '
        "run on the device (a first call compiles them and checks them against torch; where they do not run, the "
        'log says why: a warning, or an info line for heads they do not take), else `"sdpa"`; ignored on the CPU'))
    head_kernel: Optional[str] = _setting(None, one_of(None, "torch", "triton"), (
        'static engine on CUDA: the LM head\'s greedy step through `"torch"` (the head\'s matrix product writes '
        "every output's logits, and a compiled step reads them for the argmax and the log-softmax) or `\"triton\"` "
        "(two Triton kernels that keep per block of the vocabulary only its largest logit, first token and sum of "
        "exponentials, then combine the blocks; an output held to allowed tokens by the levers chooses among them in one "
        "more; decoding/head_kernel.py); not bit-identical to each other (float "
        'rounding; measured: docs/results-speed.md); null: `"triton"` where passes are CUDA graphs, the head is a '
        "float one (not `quantize`d) and the kernels run on the device (a first call compiles them and checks them "
        'against torch; where they do not run, a warning says why), else `"torch"`; ignored on the CPU'))
    quantize: Optional[str] = _setting(None, one_of(None, *QUANTIZATIONS), (
        'static engine: `"int8-weight-only"` (GPU or CPU) stores every matrix and the LM head in int8 per output '
        "channel and converts it for each product (activations, KV cache and attention keep their dtype): half the "
        "memory of bfloat16 matrices, with a conversion step in every product (no fused kernel; measured: "
        'docs/results-speed.md). On the CPU only: `"int8"` runs the attention projections and the MLP\'s gate and '
        "up projections in int8 (weights per output channel, after a LoRA adapter is merged; activations quantized "
        "per call), smoothed first by the activation ranges the model folder ships (`int8_ranges.safetensors`; the "
        "shipped model has them; `python -m spacy_padellm calibrate` writes them): faster, not exact "
        '(docs/results-speed.md); `"int8-head"`: the same and the output layer (LM head) in int8 too, which pays '
        "with a large vocabulary (Gemma 3: 262k entries, docs/results-nested-chinese.md); `\"bf16\"`: every matrix "
        "(the LM head too) and the KV cache in bfloat16, the residual stream, norms and softmax in float32: the "
        "fastest on a CPU with Intel AMX (measured: docs/results-speed.md), slower on one without bfloat16 matrix "
        "instructions; null: the model's own weights"))
    head_vocab: Optional[str] = _setting(None, one_of(None, "text", "all"), (
        'static engine: `"text"` computes the output layer (LM head) only over the '
        "tokens a batch's outputs can be made of: its prompts' tokens, each word of its texts encoded alone and "
        "every token whose text lies inside one, the counts and the special tokens (text/vocab.py); a token "
        "outside them can no longer be chosen and log-probabilities are normalised over them (steered outputs too, "
        "but for the count bias's, over the whole vocabulary). Faster with a large vocabulary (Gemma 3: 262k "
        "entries; the default model 1.8x as fast on a CPU; under CUDA graphs the rows are held in a buffer of a "
        "power of two rows, at least 1024), not exact (docs/results-conll03.md: the same dev F1); a float or "
        "bfloat16 head only (`\"int8-head\"` and `\"int8-weight-only\"` keep it whole); `\"all\"`: the whole "
        'vocabulary; null: `"text"` on the CPU for a vocabulary of at least 65,536 entries (Gemma 3\'s), else '
        '`"all"`'))

    def __post_init__(self) -> None:
        for f in dataclasses.fields(self):
            object.__setattr__(self, f.name, f.metadata["check"](f.name, getattr(self, f.name)))

    # -- building --

    @classmethod
    def keys(cls) -> Tuple[str, ...]:
        return tuple(f.name for f in dataclasses.fields(cls))

    @classmethod
    def from_config(cls, config: Mapping[str, Any]) -> "DecodeSettings":
        """Settings from a mapping of some of the keys; an unknown key is an error naming the closest one."""
        return cls().replace(**dict(config))

    def replace(self, **changes: Any) -> "DecodeSettings":
        """A copy with ``changes`` (checked like any settings; an unknown key names the closest one)."""
        unknown = [key for key in changes if key not in self.keys()]
        if unknown:
            raise SettingsError(_unknown_message(unknown[0], self.keys()))
        return dataclasses.replace(self, **changes)

    def to_config(self) -> Dict[str, Any]:
        """Every setting as a JSON-able dict (what ``from_config`` reads back)."""
        return {key: _plain(getattr(self, key)) for key in self.keys()}

    # -- what the settings imply --

    @property
    def levers(self) -> List[str]:
        """The decoding levers that are on (``levers.Levers.on``)."""
        from .levers import Levers

        return Levers.of(self).on


def _plain(value: Any) -> Any:
    return dict(value) if isinstance(value, dict) else value


def _unknown_message(key: str, known: Iterable[str]) -> str:
    close = difflib.get_close_matches(str(key), list(known), n=1)
    hint = f"; did you mean '{close[0]}'?" if close else ""
    return f"unknown setting '{key}'{hint} (settings: {', '.join(known)})"


def _cell(value: Any) -> str:
    if value is None:
        return "`null`"
    if isinstance(value, bool):
        return f"`{str(value).lower()}`"
    if isinstance(value, str):
        return f'`"{value}"`'
    return f"`{value}`"


def settings_table(extra: Iterable[Tuple[str, Any, str]] = ()) -> str:
    """A markdown table of the settings (key, default, meaning), after the ``extra`` rows given first."""
    rows = ["| key | default | meaning |", "| --- | --- | --- |"]
    rows += [f"| `{key}` | {_cell(default)} | {doc} |" for key, default, doc in extra]
    defaults = DecodeSettings()
    for f in dataclasses.fields(DecodeSettings):
        rows.append(f"| `{f.name}` | {_cell(getattr(defaults, f.name))} | {f.metadata['doc']} |")
    return "\n".join(rows) + "\n"


def settings_parameters() -> List[inspect.Parameter]:
    """One keyword-only parameter per setting, typed and with its default: what a registered factory's
    signature lists so that spaCy's config validation knows every setting (see ``pipeline.config``)."""
    hints = typing.get_type_hints(DecodeSettings)
    defaults = DecodeSettings()
    return [inspect.Parameter(key, inspect.Parameter.KEYWORD_ONLY, default=_plain(getattr(defaults, key)),
                              annotation=hints[key]) for key in DecodeSettings.keys()]


def limits_of(decoder: Any) -> Dict[str, int]:
    """The decode lengths a PaDeLLM decoder uses now (its attributes, which may be changed on a live one)."""
    return {"max_count": decoder.max_count, "max_count_tokens": decoder.max_count_tokens,
            "max_mention_tokens": decoder.max_mention_tokens}
