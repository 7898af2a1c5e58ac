"""The ``padellm_ner`` spaCy component: a thin layer over the decoder, aligner and de-duplication.

Data path for a batch of docs: windows (``windows.py``) -> prompts and parallel two-step decoding
(``protocol.py``, ``decoder.py``) -> character spans (``aligner.py``) -> de-duplication and overlap
resolution (``dedup.py``) -> ``doc.ents`` or ``doc.spans[spans_key]``.

The ``decoding`` setting swaps the middle step: ``"padellm"`` (the engine), ``"reference"`` (the paper's
reference implementation, ``model.generate`` per step, ``reference.py``) for PaDeLLM-trained models, and
``"autoreg_struct"`` / ``"autoreg_aug"`` (the paper's autoregressive baselines, ``autoreg.py``) for
models trained with those protocols. Everything around it (windows, alignment, de-duplication, output,
counters) is shared.
"""


import logging
import math
import warnings
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, Iterator, List, Optional, Sequence, Tuple, Union

import srsly
from spacy.attrs import IDX, IS_SPACE, LENGTH
from spacy.language import Language
from spacy.pipeline import Pipe
from spacy.tokens import Doc, Span
from spacy.training import Example, validate_get_examples
from spacy.util import minibatch

from ..loading import (DEFAULT_MODEL, META_FILE, ModelFolderError, ModelSource, export_model_folder, load_model,
                      resolve_model)
from ..decoding.factory import ENGINES, active_levers, make_decoder, make_static_lm
from .output import doc_spans, write_spans
from ..text.protocol import PromptEncoder, Template, TemplateError, get_template
from .scoring import score_padellm
from ..text.windows import make_windows, model_view, sentences_from_tokens

__all__ = ["PaDeLLMNER", "make_padellm_ner", "DEFAULT_CONFIG"]

logger = logging.getLogger("spacy_padellm")

if not Span.has_extension("padellm_prob"):
    Span.set_extension("padellm_prob", default=None)
if not Doc.has_extension("padellm"):
    Doc.set_extension("padellm", default=None)

DEFAULT_CONFIG: Dict[str, Any] = {
    "model": DEFAULT_MODEL,
    "labels": [],
    "template": None,
    "spans_key": None,
    "text_format": None,
    "device": None,
    "dtype": "auto",
    "batch_size": 32,
    "max_batch_rows": 256,
    "max_count": 20,
    "max_count_tokens": 4,
    "max_mention_tokens": 40,
    "decoding": None,
    "engine": "auto",
    "constrain_mentions": False,
    "count_bias": 0.0,
    "dedupe_mentions": False,
    "draft_tokens": 8,
    "inflight_batches": None,
    "max_new_tokens": 256,
    "max_context_tokens": 512,
    "deduplicate": True,
    "trust_remote_code": False,
    "scorer": {"@scorers": "spacy_padellm.scorer.v1"},
}

_STAT_KEYS = ("docs", "windows", "unparsable_counts", "capped_counts", "truncated_mentions",
              "not_found", "no_free_occurrence", "duplicates_removed", "overlaps_removed")
# Added to doc._.padellm in the autoregressive decodings (see autoreg.AutoRegResult).
_AUTOREG_STAT_KEYS = ("unparsable_outputs", "unknown_labels", "truncated_outputs", "rewrite_mismatches")

DECODINGS = ("padellm", "reference", "autoreg_struct", "autoreg_aug")
_AUTOREG = ("autoreg_struct", "autoreg_aug")
# The decodings a model trained with a protocol (padellm.json "protocol") can be used with.
_FITS = {"padellm": ("padellm", "reference"), "autoreg_struct": ("autoreg_struct",), "autoreg_aug": ("autoreg_aug",)}


@Language.factory(
    "padellm_ner",
    default_config=DEFAULT_CONFIG,
    assigns=["doc.ents", "doc.spans", "span._.padellm_prob", "doc._.padellm"],
    default_score_weights={"ents_f": 1.0, "ents_p": 0.0, "ents_r": 0.0, "ents_per_type": None},
)
def make_padellm_ner(
    nlp: Language,
    name: str,
    model: Optional[str],
    labels: List[str],
    template: Any,
    spans_key: Optional[str],
    text_format: Optional[str],
    device: Optional[str],
    dtype: str,
    batch_size: int,
    max_batch_rows: int,
    max_count: int,
    max_count_tokens: int,
    max_mention_tokens: int,
    decoding: Optional[str],
    engine: str,
    constrain_mentions: bool,
    count_bias: Union[float, Dict[str, float]],
    dedupe_mentions: bool,
    draft_tokens: int,
    inflight_batches: Optional[int],
    max_new_tokens: int,
    max_context_tokens: int,
    deduplicate: bool,
    trust_remote_code: bool,
    scorer: Optional[Callable],
) -> "PaDeLLMNER":
    """Build ``padellm_ner``. ``model``: a model folder, GGUF file, hub id, or ``padellm:NAME`` for a model
    shipped with the package (default ``padellm:conll03-smollm2-135m``); ``labels``: the entity types
    (may be empty when the model folder records them); ``template``: a name ("en", "zh") or a dict of the
    four pieces (default: the model's, else by language); ``spans_key``: nested mode, spans go to
    ``doc.spans[spans_key]``; ``text_format``: "raw" (doc text) or "tokens" (tokens joined by spaces,
    as CoNLL-style training data); ``device``: "cpu", "cuda", "cuda:1" (default: follow
    ``spacy.require_gpu``/``prefer_gpu``); ``dtype``: auto (bf16 on CUDA, fp32 on CPU), float32,
    bfloat16, float16; ``batch_size``: docs per decoder batch; ``max_batch_rows``: sequences decoded at
    once; ``max_count``: the count cap; ``max_count_tokens``/``max_mention_tokens``: decode lengths;
    ``decoding``: "padellm" (the parallel engine), "reference" (``model.generate`` per step, as the
    paper's reference implementation; PaDeLLM-trained models), "autoreg_struct" or "autoreg_aug" (the
    paper's autoregressive baselines, for models trained with that protocol); null: the protocol the
    model folder records, else "padellm"; ``max_new_tokens``: output budget of the autoregressive
    decodings (autoreg_aug: on top of the text's own token count, which its output copies);
    ``engine``: "auto" (the static-cache tree engine with CUDA graphs where the model is Llama-family,
    else the dynamic-cache engine), "static" or "dynamic"; ``constrain_mentions`` (mentions limited to
    spans of the text), ``count_bias`` (added to the log-prob of the count "0"; a float, or a dict label ->
    float) and ``dedupe_mentions`` (a mention repeating a string more often than the text holds it is
    decoded again): the decoding levers of the dynamic-cache engine, off by default; with one on, "auto"
    uses that engine and "static" is an error; decodings other than "padellm" ignore them (a warning);
    ``draft_tokens``: tokens per draft copied from the text, verified in the same pass; with it the static
    engine on CUDA also drafts counts 0-2 and candidate mentions in the first pass (0: all drafting off);
    ``inflight_batches``: the static engine's batches decoded at once in ``nlp.pipe`` (the host lays out one
    batch's pass while the device runs another's), each with a KV cache of its own (null: 4 on CUDA, 1 on
    the CPU; 1 or 2 to save GPU memory);
    ``max_context_tokens``: the window size for long docs, in model tokens; ``deduplicate``: one label per
    span, the most probable.
    """
    return PaDeLLMNER(
        nlp, name, model=model, labels=labels, template=template, spans_key=spans_key, text_format=text_format,
        device=device, dtype=dtype, batch_size=batch_size, max_batch_rows=max_batch_rows, max_count=max_count,
        max_count_tokens=max_count_tokens, max_mention_tokens=max_mention_tokens, decoding=decoding, engine=engine,
        constrain_mentions=constrain_mentions, count_bias=count_bias, dedupe_mentions=dedupe_mentions,
        draft_tokens=draft_tokens, inflight_batches=inflight_batches, max_new_tokens=max_new_tokens,
        max_context_tokens=max_context_tokens, deduplicate=deduplicate, trust_remote_code=trust_remote_code,
        scorer=scorer,
    )


class PaDeLLMNER(Pipe):
    """Named entity recognition with a PaDeLLM-tuned causal LM and parallel two-step decoding.

    Flat mode writes ``doc.ents``; nested mode (``spans_key`` set) writes every span, overlaps kept, to
    ``doc.spans[spans_key]``. ``decoding`` picks the decoder (see ``make_padellm_ner``). Each span's
    probability is ``span._.padellm_prob`` (and, in nested mode,
    ``doc.spans[key].attrs["scores"]``); per-doc counters are in ``doc._.padellm``.
    """

    def __init__(
        self,
        nlp: Language,
        name: str = "padellm_ner",
        *,
        model: Optional[str] = None,
        labels: Sequence[str] = (),
        template: Any = None,
        spans_key: Optional[str] = None,
        text_format: Optional[str] = None,
        device: Optional[str] = None,
        dtype: str = "auto",
        batch_size: int = 32,
        max_batch_rows: int = 256,
        max_count: int = 20,
        max_count_tokens: int = 4,
        max_mention_tokens: int = 40,
        decoding: Optional[str] = None,
        engine: str = "auto",
        constrain_mentions: bool = False,
        count_bias: Union[float, Dict[str, float]] = 0.0,
        dedupe_mentions: bool = False,
        draft_tokens: int = 8,
        inflight_batches: Optional[int] = None,
        max_new_tokens: int = 256,
        max_context_tokens: int = 512,
        deduplicate: bool = True,
        trust_remote_code: bool = False,
        scorer: Optional[Callable] = score_padellm,
    ):
        self.vocab = nlp.vocab
        self.name = name
        self.lang = nlp.lang
        for key, value in (("batch_size", batch_size), ("max_batch_rows", max_batch_rows), ("max_count", max_count),
                           ("max_count_tokens", max_count_tokens), ("max_mention_tokens", max_mention_tokens),
                           ("max_new_tokens", max_new_tokens), ("max_context_tokens", max_context_tokens)):
            if not isinstance(value, int) or value < 1:
                raise ValueError(f"[{name}] '{key}' must be a positive integer, got {value!r}")
        if engine not in ENGINES:
            raise ValueError(f"[{name}] 'engine' must be one of {', '.join(ENGINES)}, got {engine!r}")
        for key, value in (("constrain_mentions", constrain_mentions), ("dedupe_mentions", dedupe_mentions)):
            if not isinstance(value, bool):
                raise ValueError(f"[{name}] '{key}' must be true or false, got {value!r}")
        count_bias = _check_count_bias(name, count_bias)
        if not isinstance(draft_tokens, int) or isinstance(draft_tokens, bool) or draft_tokens < 0:
            raise ValueError(f"[{name}] 'draft_tokens' must be a non-negative integer (0: no drafts), "
                             f"got {draft_tokens!r}")
        if inflight_batches is not None and (not isinstance(inflight_batches, int) or isinstance(inflight_batches, bool)
                                             or inflight_batches < 1):
            raise ValueError(f"[{name}] 'inflight_batches' must be null (4 on CUDA, 1 on the CPU) or a positive "
                             f"integer, got {inflight_batches!r}")
        if decoding not in (None,) + DECODINGS:
            raise ValueError(f"[{name}] 'decoding' must be null or one of {', '.join(DECODINGS)}, got {decoding!r}")
        if text_format not in (None, "raw", "tokens"):
            raise ValueError(f"[{name}] 'text_format' must be 'raw' or 'tokens', got {text_format!r}")
        if isinstance(labels, str) or not all(isinstance(x, str) and x for x in labels):
            raise ValueError(f"[{name}] 'labels' must be a list of non-empty strings, got {labels!r}")
        self.cfg: Dict[str, Any] = {
            "spans_key": spans_key,
            "device": device,
            "dtype": dtype,
            "batch_size": batch_size,
            "max_batch_rows": max_batch_rows,
            "max_count": max_count,
            "max_count_tokens": max_count_tokens,
            "max_mention_tokens": max_mention_tokens,
            "decoding": decoding,
            "engine": engine,
            "constrain_mentions": constrain_mentions,
            "count_bias": count_bias,
            "dedupe_mentions": dedupe_mentions,
            "draft_tokens": draft_tokens,
            "inflight_batches": inflight_batches,
            "max_new_tokens": max_new_tokens,
            "max_context_tokens": max_context_tokens,
            "deduplicate": deduplicate,
            "trust_remote_code": trust_remote_code,
        }
        self.scorer = scorer
        self._labels: List[str] = list(dict.fromkeys(labels))
        self._template_spec = template
        self._text_format = text_format
        self.source: Optional[ModelSource] = None
        self._pending_error: Optional[str] = None
        self._runtime: Optional[Tuple[Any, Any, Any]] = None  # (model, tokenizer, decoder)
        self.stats: Dict[str, int] = {key: 0 for key in _STAT_KEYS}
        self._warned_levers = False
        if model is not None:
            self._set_source(model)
        self.template = self._build_template()
        if self.source is not None:
            self._check_decoding()
        levers = self.levers
        if levers and engine == "static" and self.decoding == "padellm":
            raise ValueError(f"[{name}] the decoding levers {', '.join(levers)} are implemented by the "
                             "dynamic-cache engine only: set 'engine' to 'dynamic' or 'auto', or turn them off")

    # -- configuration ---------------------------------------------------------------------------

    def _set_source(self, model: str) -> None:
        try:
            self.source = resolve_model(model)
        except ModelFolderError as err:
            if not err.missing:
                raise ModelFolderError(f"[{self.name}] {err}") from None
            # Something missing is fine while a saved pipeline is being loaded (from_disk brings the
            # model); otherwise it is reported by initialize() or before the first doc is processed.
            self._pending_error = f"[{self.name}] {err}"
            return
        if not self._labels and self.source.labels:
            self._labels = list(self.source.labels)
        self._runtime = None

    def _build_template(self) -> Template:
        spec = self._template_spec
        if spec is None and self.source is not None and self.source.template:
            spec = self.source.template
        if spec is None:
            spec = "zh" if self.lang == "zh" else "en"
        try:
            return get_template(spec)
        except TemplateError as err:
            raise TemplateError(f"[{self.name}] {err}") from None

    @property
    def recorded_protocol(self) -> Optional[str]:
        """The protocol the model was trained with, as its folder records it (None: not recorded)."""
        return self.source.meta.get("protocol") if self.source is not None else None

    @property
    def decoding(self) -> str:
        """The decoding in use: the configured one, else the model's protocol, else "padellm"."""
        return self.cfg["decoding"] or self.recorded_protocol or "padellm"

    def _check_decoding(self) -> None:
        recorded = self.recorded_protocol
        if recorded is None:
            return
        if recorded not in _FITS:
            raise ModelFolderError(f"[{self.name}] the model {self.source.location} records an unknown protocol "
                                   f"{recorded!r}; this version knows {', '.join(_FITS)}")
        if self.decoding not in _FITS[recorded]:
            raise ValueError(
                f"[{self.name}] decoding '{self.decoding}' does not fit the model {self.source.location}, which was "
                f"trained with protocol '{recorded}': use decoding " + " or ".join(f"'{d}'" for d in _FITS[recorded])
                + " (or null, the model's own)"
            )

    def _autoreg_template(self):
        """The autoregressive template: a name given as 'template', else the model's, else by language."""
        from ..baselines import get_autoreg_template

        spec = self._template_spec if isinstance(self._template_spec, str) else None
        if spec is None and self.source is not None:
            spec = self.source.meta.get("autoreg_template")
        if spec is None:
            spec = "zh" if self.lang == "zh" else "en"
        try:
            return get_autoreg_template(spec)
        except TemplateError as err:
            raise TemplateError(f"[{self.name}] {err}") from None

    @property
    def levers(self) -> List[str]:
        """The decoding levers that are on (``constrain_mentions``, ``count_bias``, ``dedupe_mentions``)."""
        return active_levers(self.cfg["constrain_mentions"], self.cfg["count_bias"], self.cfg["dedupe_mentions"])

    @property
    def labels(self) -> Tuple[str, ...]:
        return tuple(self._labels)

    def add_label(self, label: str) -> int:
        if not isinstance(label, str) or not label:
            raise ValueError(f"[{self.name}] a label must be a non-empty string, got {label!r}")
        if label in self._labels:
            return 0
        self._labels.append(label)
        return 1

    @property
    def spans_key(self) -> Optional[str]:
        return self.cfg["spans_key"]

    @property
    def text_format(self) -> str:
        if self._text_format:
            return self._text_format
        if self.source is not None and self.source.meta.get("text_format"):
            return self.source.meta["text_format"]
        return "raw"

    def _device(self):
        import torch

        if self.cfg["device"]:
            return torch.device(self.cfg["device"])
        from thinc.api import get_current_ops

        ops = get_current_ops()
        if getattr(ops, "device_type", "cpu") == "gpu" and torch.cuda.is_available():
            return torch.device(f"cuda:{max(0, int(getattr(ops, 'device_id', 0)))}")
        return torch.device("cpu")

    def _check_ready(self) -> None:
        if self._pending_error:
            raise ModelFolderError(self._pending_error)
        if self.source is None:
            raise ModelFolderError(f"[{self.name}] no model: set config 'model' to a model folder, GGUF file or hub id")
        self._check_decoding()
        if not self._labels:
            raise ValueError(
                f"[{self.name}] no labels: give config 'labels', call nlp.initialize() with examples, "
                "or use a model folder that records its labels"
            )
        trained = set(self.source.labels)
        unknown = [label for label in self._labels if trained and label not in trained]
        if unknown:
            warnings.warn(f"[{self.name}] labels {unknown} were not in the model's training labels {sorted(trained)}")

    def _ensure_loaded(self):
        self._check_ready()
        if self._runtime is None:
            model, tokenizer = load_model(self.source, self._device(), self.cfg["dtype"], self.cfg["trust_remote_code"])
            self.set_model(model, tokenizer, self.source)
        return self._runtime

    def set_model(self, model, tokenizer, source: Optional[ModelSource] = None, *,
                  generate: Optional[Callable] = None) -> None:
        """Use a model that is already loaded (the trainer evaluates this way); ``source`` says where it is
        on disk, if anywhere, for ``to_disk``, and what protocol the model was trained with. ``generate``
        replaces the greedy engine of the autoregressive decodings (``autoreg.GenerateFn``:
        ``generate(prompts, *, max_new_tokens) -> [(ids without EOS, sum of log-probs, EOS reached)]``)."""
        self.source = source or ModelSource(location="<in memory>", meta={"labels": list(self._labels)})
        self._pending_error = None
        self._check_decoding()
        decoding = self.decoding
        bos = self.source.meta.get("bos")  # whether training prompts started with BOS (None: not recorded)
        if decoding != "padellm" and self.levers and not self._warned_levers:
            self._warned_levers = True
            logger.warning("[%s] the decoding levers %s apply to decoding 'padellm' only; ignored with decoding "
                           "'%s'", self.name, ", ".join(self.levers), decoding)
        rows = self.cfg["max_batch_rows"]
        if decoding in _AUTOREG:
            from functools import partial

            from ..baselines import AutoRegDecoder, AutoRegEncoder, hf_greedy_generate

            encoder = AutoRegEncoder(tokenizer, decoding, self._autoreg_template(), bos)
            if generate is None:
                lm = make_static_lm(model) if self.cfg["engine"] != "dynamic" else None
                if lm is None and self.cfg["engine"] == "static":
                    raise ValueError(f"[{self.name}] engine 'static' cannot run this model")
                if lm is not None:  # the same static-cache engine as PaDeLLM decoding
                    from ..decoding.tree import TreeDecoder

                    tree = TreeDecoder(lm, PromptEncoder(tokenizer, self.template, bos),
                                       max_batch_docs=rows,
                                       draft_tokens=self.cfg["draft_tokens"],
                                       inflight_batches=self.cfg["inflight_batches"], model=model)
                    generate = partial(tree.generate, eos_id=encoder.eos_id)
                else:
                    generate = partial(hf_greedy_generate, model, eos_id=encoder.eos_id,
                                       max_batch_rows=rows)
            decoder: Any = AutoRegDecoder(encoder, generate, max_new_tokens=self.cfg["max_new_tokens"])
        elif decoding == "reference":
            from ..decoding.reference import ReferenceDecoder

            decoder = ReferenceDecoder(
                model,
                PromptEncoder(tokenizer, self.template, bos),
                max_count=self.cfg["max_count"],
                max_count_tokens=self.cfg["max_count_tokens"],
                max_mention_tokens=self.cfg["max_mention_tokens"],
                max_batch_rows=rows,
            )
        else:
            try:
                decoder = make_decoder(
                    model,
                    PromptEncoder(tokenizer, self.template, bos),
                    engine=self.cfg["engine"],
                    max_count=self.cfg["max_count"],
                    max_count_tokens=self.cfg["max_count_tokens"],
                    max_mention_tokens=self.cfg["max_mention_tokens"],
                    max_batch_rows=rows,
                    constrain_mentions=self.cfg["constrain_mentions"],
                    count_bias=self.cfg["count_bias"],
                    dedupe_mentions=self.cfg["dedupe_mentions"],
                    draft_tokens=self.cfg["draft_tokens"],
                    inflight_batches=self.cfg["inflight_batches"],
                )
            except ValueError as err:
                raise ValueError(f"[{self.name}] {err}") from None
        self._runtime = (model, tokenizer, decoder)

    @property
    def decoder(self):
        return self._ensure_loaded()[2]

    # -- spaCy API -------------------------------------------------------------------------------

    def initialize(self, get_examples: Optional[Callable[[], Iterable[Example]]] = None, *,
                   nlp: Optional[Language] = None, labels: Optional[Sequence[str]] = None,
                   model: Optional[str] = None) -> None:
        """Set the labels (given, else from the examples, else from the model) and load the model."""
        if model is not None:
            self._pending_error = None
            self._set_source(model)
            self.template = self._build_template()
        if labels:
            self._labels = list(dict.fromkeys(labels))
        elif not self._labels and get_examples is not None:
            validate_get_examples(get_examples, f"{self.name}.initialize")
            found: Dict[str, None] = {}
            for example in get_examples():
                spans = example.reference.spans.get(self.spans_key, []) if self.spans_key else example.reference.ents
                for span in spans:
                    found[span.label_] = None
            self._labels = sorted(found)
        self._ensure_loaded()

    def __call__(self, doc: Doc) -> Doc:
        return next(iter(self.pipe([doc], batch_size=1)))

    def pipe(self, stream: Iterable[Doc], *, batch_size: Optional[int] = None) -> Iterator[Doc]:
        error_handler = self.get_error_handler()
        for docs in minibatch(stream, size=batch_size or self.cfg["batch_size"]):
            self._ensure_loaded()  # configuration errors stop the run before any doc is processed
            try:
                self.set_annotations(docs)
                yield from docs
            except Exception as err:
                error_handler(self.name, self, docs, err)

    def predict(self, docs: Sequence[Doc]):
        raise NotImplementedError("padellm_ner annotates in set_annotations; call nlp() or nlp.pipe()")

    def _model_view(self, text: str, tokens: List[Tuple[int, int]], start: int,
                    end: int) -> Tuple[str, List[Tuple[int, int, int, int]]]:
        """The text the model sees for doc chars [start, end), and per token (model span, doc span)."""
        return model_view(text, [(a, text[a:b]) for a, b in tokens], start, end, self.text_format)

    def _windows(self, doc: Doc, text: str, tokens: List[Tuple[int, int]], tokenizer) -> List[Tuple[int, int]]:
        if not text.strip():
            return []
        max_len = self.cfg["max_context_tokens"]

        def length(part: str) -> int:
            return len(tokenizer(part, add_special_tokens=False)["input_ids"])

        if len(text) <= max_len:  # a model token covers at least one character
            return [(0, len(text))]
        if doc.has_annotation("SENT_START"):
            sents = [(s.start_char, s.end_char) for s in doc.sents]
        else:
            sents = sentences_from_tokens([(a, b, text[a:b]) for a, b in tokens])
        return make_windows(text, sents, tokens, length, max_len)

    def set_annotations(self, docs: Sequence[Doc], _unused=None) -> None:
        from ..decoding.gc_pause import gc_paused

        with gc_paused():
            self._annotate(docs)

    def _annotate(self, docs: Sequence[Doc]) -> None:
        from ..decoding.types import DocRequest

        _, tokenizer, decoder = self._ensure_loaded()
        views = []  # (doc index, model text, token mapping)
        for i, doc in enumerate(docs):
            doc_text, tokens = _text_and_tokens(doc)
            for start, end in self._windows(doc, doc_text, tokens, tokenizer):
                text, mapping = self._model_view(doc_text, tokens, start, end)
                if text.strip():
                    views.append((i, text, mapping))
        results = decoder.decode([DocRequest(text, self._labels) for _, text, _ in views]) if views else []
        keys = _STAT_KEYS + (_AUTOREG_STAT_KEYS if self.decoding in _AUTOREG else ())
        per_doc: List[List] = [[] for _ in docs]
        doc_stats = [{key: 0 for key in keys} for _ in docs]
        for (i, text, mapping), result in zip(views, results):
            stats = doc_stats[i]
            stats["windows"] += 1
            stats["unparsable_counts"] += result.unparsable_counts
            stats["capped_counts"] += result.capped_counts
            stats["truncated_mentions"] += result.truncated_mentions
            for key in _AUTOREG_STAT_KEYS:
                if hasattr(result, key):
                    stats[key] = stats.get(key, 0) + getattr(result, key)
            located, rest = _located_spans(mapping, result.predictions)
            preds = [(p.label, p.k, p.text, p.prob) for p in rest]
            per_doc[i].extend(located)
            per_doc[i].extend(doc_spans(text, mapping, preds, stats))
        for doc, spans, stats in zip(docs, per_doc, doc_stats):
            stats["docs"] = 1
            write_spans(doc, spans, self.spans_key, self.cfg["deduplicate"], stats)
            doc._.padellm = stats
            for key, value in stats.items():
                self.stats[key] = self.stats.get(key, 0) + value

    def score(self, examples: Iterable[Example], **kwargs) -> Dict[str, Any]:
        validate_examples = list(examples)
        return self.scorer(validate_examples, spans_key=self.spans_key, **kwargs)

    # -- serialisation ---------------------------------------------------------------------------

    def _meta(self) -> Dict[str, Any]:
        protocol = self.recorded_protocol or (self.decoding if self.decoding in _AUTOREG else "padellm")
        meta = {"labels": list(self._labels), "template": self.template.to_dict(), "lang": self.lang,
                "text_format": self.text_format, "protocol": protocol}
        if protocol in _AUTOREG:
            meta["autoreg_template"] = self._autoreg_template().to_dict()
        return meta

    def to_disk(self, path, *, exclude: Iterable[str] = tuple()) -> None:
        """Write cfg.json and a self-contained model folder (base, adapter, tokenizer) under ``path``."""
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        self._check_ready()
        local = self.source.base_dir is not None
        model, tokenizer, _ = (None, None, None) if local else self._ensure_loaded()
        source_meta = dict(self.source.meta)
        source_meta.update(self._meta())
        export_model_folder(self.source, path / "model", source_meta, model=model, tokenizer=tokenizer)
        srsly.write_json(path / "cfg.json", {**self.cfg, **self._meta()})

    def from_disk(self, path, *, exclude: Iterable[str] = tuple()) -> "PaDeLLMNER":
        path = Path(path)
        if not (path / "cfg.json").exists() or not (path / "model" / META_FILE).exists():
            raise ModelFolderError(f"[{self.name}] {path} is not a saved padellm_ner component (cfg.json, model/)")
        cfg = srsly.read_json(path / "cfg.json")
        self._labels = list(cfg.get("labels") or self._labels)
        self._template_spec = cfg.get("template") or self._template_spec
        self._text_format = cfg.get("text_format") or self._text_format
        self._pending_error = None
        self._set_source(str(path / "model"))
        self.template = self._build_template()
        self._ensure_loaded()
        return self

    def to_bytes(self, *, exclude: Iterable[str] = tuple()) -> bytes:
        raise NotImplementedError(
            f"[{self.name}] holds a whole language model: save it with nlp.to_disk(), not to_bytes(); "
            "for several processes, give each its own spacy.load()"
        )

    def from_bytes(self, bytes_data: bytes, *, exclude: Iterable[str] = tuple()) -> "PaDeLLMNER":
        raise NotImplementedError(f"[{self.name}] load it with spacy.load(path), not from_bytes()")


def _check_count_bias(name: str, value: Any) -> Union[float, Dict[str, float]]:
    """``count_bias`` as a float, or a dict label -> float; a clear error for anything else."""

    def number(x: Any) -> bool:
        return isinstance(x, (int, float)) and not isinstance(x, bool) and math.isfinite(x)

    if number(value):
        return float(value)
    if isinstance(value, dict) and all(isinstance(k, str) and k and number(v) for k, v in value.items()):
        return {k: float(v) for k, v in value.items()}
    raise ValueError(f"[{name}] 'count_bias' must be a number or a dict of label -> number (added to the "
                     f"log-prob of the count \"0\"), got {value!r}")


def _located_spans(mapping: Sequence[Tuple[int, int, int, int]], predictions: Sequence[Any]) -> Tuple[List, List]:
    """Spans of predictions whose character offsets in the model's text are known (AutoRegAug), mapped to
    the doc when they fall on token boundaries; the other predictions are returned for the aligner."""
    from ..text.align import AlignedSpan

    to_doc_start = {m[0]: m[2] for m in mapping}
    to_doc_end = {m[1]: m[3] for m in mapping}
    located, rest = [], []
    for p in predictions:
        start, end = getattr(p, "start", None), getattr(p, "end", None)
        if start in to_doc_start and end in to_doc_end and to_doc_start[start] < to_doc_end[end]:
            located.append(AlignedSpan(to_doc_start[start], to_doc_end[end], p.label, p.prob, p.text, p.k))
        else:
            rest.append(p)
    return located, rest


def _text_and_tokens(doc: Doc) -> Tuple[str, List[Tuple[int, int]]]:
    """The doc's text and the (start, end) characters of its non-space tokens, read in one array call
    (iterating over Token objects costs more than the rest of the component's host work)."""
    arr = doc.to_array([IDX, LENGTH, IS_SPACE]).tolist() if len(doc) else []
    return doc.text, [(a, a + n) for a, n, space in arr if not space]

