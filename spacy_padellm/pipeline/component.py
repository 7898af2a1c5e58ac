"""The ``padellm_ner`` spaCy component: the spaCy API over a decoder.

A batch of docs goes: windows and the model's view of each (``doc_decoding``, within the budget of
``context``), one decoder call (chosen by ``decoding.factory.build_decoder`` from ``DecodeSettings``), spans
mapped back, de-duplicated and written (``output``). Which model, labels, template and decoding:
``model_spec.ModelSpec``. Every config key and its meaning: ``config`` (and the README's table, made from it).
"""


import copyreg
import logging
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, Iterator, List, Optional, Sequence, Tuple

import srsly
from spacy.language import Language
from spacy.pipeline import Pipe
from spacy.tokens import Doc, Span
from spacy.training import Example, validate_get_examples
from spacy.util import minibatch

from ..decoding.gc_pause import gc_paused
from ..decoding.heap import trim_heap
from ..decoding.settings import AUTOREG_DECODINGS, DecodeSettings, SettingsError
from ..devices import DeviceError, check_device_available, check_device_name, resolve_device
from ..loading import META_FILE, ModelFolderError, ModelSource, export_model_folder, load_model
from .config import DEFAULT_CONFIG, with_config_signature
from .config_build import building_from_config
from .context import WindowBudget, check_context, model_positions, window_budget
from .doc_decoding import STAT_KEYS, decode_docs
from .model_spec import ModelSpec
from .output import check_alignment_mode
from .safe_text import guard_tokenizer
from .scoring import score_padellm

__all__ = ["PaDeLLMNER", "make_padellm_ner", "DEFAULT_CONFIG"]

logger = logging.getLogger("spacy_padellm")

_NAMED = 20  # the docs a warning names at most

if not Span.has_extension("padellm_prob"):
    Span.set_extension("padellm_prob", default=None)
if not Doc.has_extension("padellm"):
    Doc.set_extension("padellm", default=None)


@Language.factory(
    "padellm_ner",
    default_config=DEFAULT_CONFIG,
    assigns=["doc.ents", "doc.spans", "span._.padellm_prob", "doc._.padellm"],
    default_score_weights={"ents_f": 1.0, "ents_p": 0.0, "ents_r": 0.0, "ents_per_type": None},
)
@with_config_signature
def make_padellm_ner(nlp: Language, name: str, **config: Any) -> "PaDeLLMNER":
    """Build ``padellm_ner``; the config keys and their meaning are in ``pipeline/config.py`` (and the
    README's table): the component's own keys, then every ``DecodeSettings`` key. ``nlp.tokenizer`` is wrapped
    so that a text UTF-8 cannot hold is cleaned instead of failing (``safe_text``)."""
    settings = {key: config.pop(key) for key in DecodeSettings.keys() if key in config}
    try:
        decode = DecodeSettings.from_config(settings)
    except SettingsError as err:
        raise SettingsError(f"[{name}] {err}") from None
    component = PaDeLLMNER(nlp, name, settings=decode, wait_for_disk=building_from_config(), **config)
    guard_tokenizer(nlp)
    return component


class PaDeLLMNER(Pipe):
    """Named entity recognition with a PaDeLLM-tuned causal LM and parallel two-step decoding.

    Flat mode writes ``doc.ents``; nested mode (``spans_key`` set, or left null with a model trained on nested
    data, which records its key) writes every span, overlaps kept, to ``doc.spans[spans_key]``. Each span's
    probability is ``span._.padellm_prob`` (and, in nested mode,
    ``doc.spans[key].attrs["scores"]``); per-doc counters are in ``doc._.padellm``.
    """

    def __init__(self, nlp: Language, name: str = "padellm_ner", *, settings: Optional[DecodeSettings] = None,
                 model: Optional[str] = None, labels: Sequence[str] = (), template: Any = None,
                 spans_key: Optional[str] = None, text_format: Optional[str] = None,
                 alignment_mode: str = "strict", device: Optional[str] = None, dtype: str = "auto",
                 trust_remote_code: bool = False, scorer: Optional[Callable] = score_padellm,
                 wait_for_disk: bool = False, **changes: Any):
        """``settings`` (default ``DecodeSettings()``) with ``changes`` (any of its keys) applied.

        The model location (its files and safetensors headers) and the device are checked here, before any
        weights load. ``wait_for_disk``: a model path that does not exist is left for ``from_disk`` to bring
        (spaCy building a saved pipeline) and reported before the first doc if it does not."""
        self.vocab = nlp.vocab
        self.name = name
        try:
            self.settings = (settings or DecodeSettings()).replace(**changes)
            check_device_name(device)
            check_alignment_mode(alignment_mode)
        except ValueError as err:
            raise SettingsError(f"[{name}] {err}") from None
        self.cfg: Dict[str, Any] = {"spans_key": spans_key, "alignment_mode": alignment_mode, "device": device,
                                    "dtype": dtype, "trust_remote_code": trust_remote_code,
                                    **self.settings.to_config()}
        self.scorer = scorer
        self.spec = ModelSpec(name, nlp.lang, labels=labels, template=template, text_format=text_format,
                              decoding=self.settings.decoding)
        self._runtime: Optional[Tuple[Any, Any, Any]] = None  # (model, tokenizer, decoder)
        # (PromptEncoder, AutoRegEncoder or None, the model's positions or None) of the runtime
        self._encoders: Tuple[Any, Any, Optional[int]] = (None, None, None)
        self._budget: Optional[Tuple[Tuple[str, ...], WindowBudget]] = None  # (labels, their window budget)
        self._warned_levers = False
        # a copy for another process: the device its original resolved (None: resolve it here; see __getstate__)
        self._device_of_original: Optional[str] = None
        self.stats: Dict[str, int] = {key: 0 for key in STAT_KEYS}
        if model is not None:
            self.spec.set_location(model, wait_for_disk=wait_for_disk)
        try:
            check_device_available(device)
        except DeviceError as err:
            raise DeviceError(f"[{name}] {err}") from None

    def __getstate__(self) -> Dict[str, Any]:
        """The component for another process (``nlp.pipe(n_process=...)`` under the "spawn" start method, the
        one CUDA works with): everything but the loaded model, which the copy loads again from the model's
        location before its first doc, onto the device this one uses when none is configured (a process started by
        ``nlp.pipe`` runs on thinc's CPU ops, whatever its parent's). A model handed over in memory (``set_model``
        without a location) cannot go: save it with ``to_disk`` first."""
        if self._runtime is not None and self.spec.in_memory:
            raise TypeError(f"[{self.name}] this component's model was set in memory (set_model without a location) "
                            "and cannot be copied to another process; save the pipeline with nlp.to_disk and load it")
        state = self.__dict__.copy()
        state.update(_runtime=None, _encoders=(None, None, None), _budget=None,
                     _device_of_original=self._device_for_copy())
        return state

    def __setstate__(self, state: Dict[str, Any]) -> None:
        self.__dict__.update(state)

    def __reduce__(self):
        # spaCy's ``Pipe`` pickles its whole ``__dict__`` (Cython's own pickling): this goes through __getstate__
        return copyreg.__newobj__, (type(self),), self.__getstate__()

    # -- what it decodes with --

    @property
    def labels(self) -> Tuple[str, ...]:
        return tuple(self.spec.labels)

    def add_label(self, label: str) -> int:
        if not isinstance(label, str) or not label:
            raise ValueError(f"[{self.name}] a label must be a non-empty string, got {label!r}")
        if label in self.spec.labels:
            return 0
        self.spec.labels.append(label)
        return 1

    @property
    def spans_key(self) -> Optional[str]:
        """The span group nested mode writes, or None (flat: ``doc.ents``): the configured key; if it is null, the
        one the model folder records (a model trained on nested data); ``""`` is flat whatever the model records."""
        key = self.cfg["spans_key"]
        if key is None:
            key = self.spec.recorded_spans_key
        return key or None

    @property
    def alignment_mode(self) -> str:
        return self.cfg["alignment_mode"]

    @property
    def source(self) -> Optional[ModelSource]:
        return self.spec.source

    @property
    def template(self):
        return self.spec.template

    @property
    def text_format(self) -> str:
        return self.spec.text_format

    @property
    def decoding(self) -> str:
        return self.spec.decoding

    @property
    def decode_settings(self) -> DecodeSettings:
        """The settings decoding runs with: the configured ones, with each decoding lever left null as the model
        folder records it (``ModelSpec.recorded_levers``), else off."""
        return self.settings.replace(**self.spec.recorded_levers(self.settings))

    @property
    def levers(self) -> List[str]:
        """The decoding levers that are on."""
        return self.decode_settings.levers

    @property
    def decoder(self):
        return self._ensure_loaded()[2]

    def _ensure_loaded(self):
        self.spec.check_ready()
        if self._runtime is None:
            device = self._device_for_loading()
            model, tokenizer = load_model(self.spec.source, device, self.cfg["dtype"], self.cfg["trust_remote_code"])
            self.set_model(model, tokenizer, self.spec.source)
            trim_heap()  # the temporaries of loading (de-quantised GGUF tensors, weights fused by the engine)
        return self._runtime

    def _device_for_copy(self) -> Optional[str]:
        """The device a copy for another process should load onto when no device is configured (None: a configured
        one, which the copy keeps): the one the model is on, else the one this component inherited, else the one it
        would resolve now (the GPU thinc's ops are on, else the CPU)."""
        if self.cfg["device"] is not None:
            return None
        device = getattr(self._runtime[0], "device", None) if self._runtime is not None else None
        if device is not None:
            return device.type if device.type == "mps" else str(device)  # "mps", the name `device` takes
        inherited = self.__dict__.get("_device_of_original")
        if inherited is not None:
            return inherited
        try:
            return str(resolve_device(None))
        except DeviceError:
            return None

    def _device_for_loading(self):
        """The device to load the model onto: the configured one; in a copy made for another process with no device
        configured, the one its original had (a process of ``nlp.pipe(n_process=...)`` starts on thinc's CPU ops,
        so the GPU the parent used is taken here), if this process has it."""
        original = self.__dict__.get("_device_of_original")
        if self.cfg["device"] is None and original not in (None, "cpu"):
            try:
                return resolve_device(original)
            except DeviceError:
                logger.warning("[%s] this copy's original ran on %s, which this process does not have; resolving the "
                               "device here", self.name, original)
        return resolve_device(self.cfg["device"])

    def set_model(self, model, tokenizer, source: Optional[ModelSource] = None, *,
                  generate: Optional[Callable] = None) -> None:
        """Use a model that is already loaded (the trainer evaluates this way); ``source`` says where it is
        on disk, if anywhere, for ``to_disk``, and what protocol the model was trained with (and the span key it
        records: without a source, nested mode needs ``spans_key`` set). ``generate``
        replaces the greedy engine of the autoregressive decodings (see ``decoding.factory.build_decoder``)."""
        from ..decoding.factory import build_decoder
        from ..text.protocol import PromptEncoder

        self.spec.set_loaded(source)
        if self.decoding != "padellm" and self.settings.levers and not self._warned_levers:
            self._warned_levers = True
            logger.warning("[%s] the decoding levers %s apply to decoding 'padellm' only; ignored with decoding "
                           "'%s'", self.name, ", ".join(self.settings.levers), self.decoding)
        encoder = PromptEncoder(tokenizer, self.spec.template, self.spec.bos)
        autoreg_encoder = None
        if self.decoding in AUTOREG_DECODINGS:
            from ..baselines import AutoRegEncoder

            autoreg_encoder = AutoRegEncoder(tokenizer, self.decoding, self.spec.autoreg_template(), self.spec.bos)
        settings = self.decode_settings
        try:
            decoder = build_decoder(model, encoder, settings, self.decoding, autoreg_encoder=autoreg_encoder,
                                    generate=generate)
        except ValueError as err:
            raise ValueError(f"[{self.name}] {err}") from None
        self._encoders, self._budget = (encoder, autoreg_encoder, model_positions(model)), None
        try:
            check_context(self.window_budget(), self._encoders[2])
        except SettingsError as err:
            raise SettingsError(f"[{self.name}] {err}") from None
        self._runtime = (model, tokenizer, decoder)

    def window_budget(self) -> WindowBudget:
        """What a window of a doc may hold with the current labels and settings (see ``context``)."""
        labels = tuple(self.spec.labels)
        if self._budget is None or self._budget[0] != labels:
            encoder, autoreg_encoder, positions = self._encoders
            self._budget = (labels, window_budget(self.decoding, encoder, labels, self.settings, autoreg_encoder,
                                                  positions))
        return self._budget[1]

    def use_settings(self, settings: DecodeSettings) -> None:
        """Decode with ``settings`` from now on, on the weights already loaded (they load now if they were not):
        one model measured under several settings. ``nlp.config`` and ``to_disk`` keep the settings the
        component was built with; a pipeline saved with others is built with them (``load_pipeline``)."""
        model, tokenizer, _ = self._ensure_loaded()
        self.settings = settings
        self.cfg.update(settings.to_config())
        self.spec.configured_decoding = settings.decoding
        self.spec.check_decoding()
        self.set_model(model, tokenizer, self.source)

    # -- spaCy API --

    def initialize(self, get_examples: Optional[Callable[[], Iterable[Example]]] = None, *,
                   nlp: Optional[Language] = None, labels: Optional[Sequence[str]] = None,
                   model: Optional[str] = None) -> None:
        """Set the labels (given, else from the examples, else from the model) and load the model."""
        if model is not None:
            self.spec.set_location(model)
            self._runtime = None
        if labels:
            self.spec.labels = list(dict.fromkeys(labels))
        elif not self.spec.labels and get_examples is not None:
            validate_get_examples(get_examples, f"{self.name}.initialize")
            found: Dict[str, None] = {}
            for example in get_examples():
                spans = example.reference.spans.get(self.spans_key, []) if self.spans_key else example.reference.ents
                for span in spans:
                    found[span.label_] = None
            self.spec.labels = sorted(found)
        self._ensure_loaded()

    def __call__(self, doc: Doc) -> Doc:
        docs = self.pipe([doc], batch_size=1)
        try:
            return next(iter(docs))
        finally:
            docs.close()  # the call's warnings now

    def pipe(self, stream: Iterable[Doc], *, batch_size: Optional[int] = None) -> Iterator[Doc]:
        error_handler = self.get_error_handler()
        first = 0  # the index of the batch's first doc in the call
        warned = False
        replaced: List[int] = []  # the docs of the call whose text had characters replaced
        try:
            for docs in minibatch(stream, size=batch_size or self.settings.batch_size):
                self._ensure_loaded()  # configuration errors stop the run before any doc is processed
                try:
                    self.set_annotations(docs, first=first)
                    warned = warned or self._warn_capped(docs, first)
                    replaced += [first + i for i, doc in enumerate(docs) if doc._.padellm["replaced"]]
                    yield from docs
                except Exception as err:
                    error_handler(self.name, self, docs, err)
                first += len(docs)
        finally:
            self._warn_replaced(replaced)

    def _warn_replaced(self, replaced: Sequence[int]) -> None:
        """Warn once per ``pipe`` call, when it ends, naming the docs (their index in the call) whose text had
        characters UTF-8 cannot hold, replaced by U+FFFD before tokenizing (``safe_text``)."""
        if not replaced:
            return
        named = ", ".join(map(str, replaced[:_NAMED]))
        if len(replaced) > _NAMED:
            named += f" and {len(replaced) - _NAMED} more"
        plural = "s" if len(replaced) > 1 else ""
        logger.warning("[%s] %d doc%s had characters UTF-8 cannot hold (lone surrogates), replaced by U+FFFD "
                       "(doc._.padellm['replaced']): doc%s %s of this call", self.name, len(replaced), plural,
                       plural, named)

    def _warn_capped(self, docs: Sequence[Doc], first: int) -> bool:
        """Warn (once per ``pipe`` call: the caller keeps the answer) when a count above ``max_count`` was
        clipped in ``docs``: those mentions are lost."""
        capped = [first + i for i, doc in enumerate(docs) if (doc._.padellm or {}).get("capped_counts")]
        if capped:
            logger.warning("[%s] a mention count above max_count=%d was clipped (doc %d of this call, "
                           "doc._.padellm['capped_counts']): the mentions beyond it are lost; lower "
                           "'window_sentences' or raise 'max_count'", self.name, self.settings.max_count, capped[0])
        return bool(capped)

    def predict(self, docs: Sequence[Doc]):
        raise NotImplementedError("padellm_ner annotates in set_annotations; call nlp() or nlp.pipe()")

    def set_annotations(self, docs: Sequence[Doc], _unused=None, *, first: int = 0) -> None:
        """Decode and annotate ``docs``; ``first``: the index of ``docs[0]`` in the call (named in warnings)."""
        _, _, decoder = self._ensure_loaded()
        with gc_paused():
            per_doc = decode_docs(docs, decoder, self.spec.labels, budget=self.window_budget(),
                                  text_format=self.text_format, spans_key=self.spans_key,
                                  deduplicate=self.settings.deduplicate, alignment_mode=self.alignment_mode,
                                  autoreg=self.decoding in AUTOREG_DECODINGS, first=first)
        for stats in per_doc:
            for key, value in stats.items():
                self.stats[key] = self.stats.get(key, 0) + value

    def score(self, examples: Iterable[Example], **kwargs) -> Dict[str, Any]:
        return self.scorer(list(examples), spans_key=self.spans_key, **kwargs)

    # -- serialisation --

    def to_disk(self, path, *, exclude: Iterable[str] = tuple()) -> None:
        """Write cfg.json and a self-contained model folder (base, adapter, tokenizer) under ``path``."""
        path = Path(path)
        path.mkdir(parents=True, exist_ok=True)
        self.spec.check_ready()
        local = self.spec.source.base_dir is not None
        model, tokenizer, _ = (None, None, None) if local else self._ensure_loaded()
        meta = {**self.spec.source.meta, **self.spec.meta()}
        export_model_folder(self.spec.source, path / "model", meta, model=model, tokenizer=tokenizer)
        srsly.write_json(path / "cfg.json", {**self.cfg, **self.spec.meta()})

    def from_disk(self, path, *, exclude: Iterable[str] = tuple()) -> "PaDeLLMNER":
        path = Path(path)
        if not (path / "cfg.json").exists() or not (path / "model" / META_FILE).exists():
            raise ModelFolderError(f"[{self.name}] {path} is not a saved padellm_ner component (cfg.json, model/)")
        cfg = srsly.read_json(path / "cfg.json")
        self.spec.labels = list(cfg.get("labels") or self.spec.labels)
        self.spec.template_spec = cfg.get("template") or self.spec.template_spec
        self.spec.text_format_spec = cfg.get("text_format") or self.spec.text_format_spec
        self.spec.set_location(str(path / "model"))
        self._runtime = None
        self._ensure_loaded()
        return self

    def to_bytes(self, *, exclude: Iterable[str] = tuple()) -> bytes:
        raise NotImplementedError(
            f"[{self.name}] holds a whole language model: save it with nlp.to_disk(), not to_bytes(); "
            "for several processes, give each its own spacy.load()"
        )

    def from_bytes(self, bytes_data: bytes, *, exclude: Iterable[str] = tuple()) -> "PaDeLLMNER":
        raise NotImplementedError(f"[{self.name}] load it with spacy.load(path), not from_bytes()")
