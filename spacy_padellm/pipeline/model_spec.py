"""What a ``padellm_ner`` component decodes with: the model's location, its labels, prompt template, text
format, the decoding its training protocol fits and the decoding levers it records as its own (no spaCy, no
torch)."""

from __future__ import annotations

from typing import Any, Dict, List, Optional, Sequence

from ..decoding.factory import PROTOCOL_FITS
from ..decoding.settings import AUTOREG_DECODINGS, DecodeSettings
from ..loading import ModelFolderError, ModelSource, resolve_model
from ..text.protocol import Template, TemplateError, get_template

__all__ = ["ModelSpec"]


IN_MEMORY = "<in memory>"  # the location of a model handed over loaded


class ModelSpec:
    """The model, labels, template and decoding of one component, checked as early as they can be.

    A model location that does not exist is an error when it is set, unless ``set_location`` is told to wait
    for a saved pipeline's ``from_disk`` to bring the model; ``check_ready`` reports it before the first doc
    then."""

    def __init__(self, name: str, lang: str, *, labels: Sequence[str] = (), template: Any = None,
                 text_format: Optional[str] = None, decoding: Optional[str] = None):
        if isinstance(labels, str) or not all(isinstance(x, str) and x for x in labels):
            raise ValueError(f"[{name}] 'labels' must be a list of non-empty strings, got {labels!r}")
        if text_format not in (None, "raw", "tokens"):
            raise ValueError(f"[{name}] 'text_format' must be 'raw' or 'tokens', got {text_format!r}")
        self.name = name
        self.lang = lang
        self.labels: List[str] = list(dict.fromkeys(labels))
        self.template_spec = template
        self.text_format_spec = text_format
        self.configured_decoding = decoding
        self.source: Optional[ModelSource] = None
        self.pending_error: Optional[str] = None
        self.template = self._build_template()

    # -- the model --

    def set_location(self, model: str, *, wait_for_disk: bool = False) -> None:
        """Resolve ``model`` (no weights are read); labels and template follow the model's unless given.
        ``wait_for_disk``: a model that is missing (not broken) is reported by ``check_ready`` instead."""
        self.pending_error = None
        try:
            self.source = resolve_model(model)
        except ModelFolderError as err:
            if not (err.missing and wait_for_disk):
                raise ModelFolderError(f"[{self.name}] {err}") from None
            self.pending_error = f"[{self.name}] {err}"
            return
        if not self.labels and self.source.labels:
            self.labels = list(self.source.labels)
        self.template = self._build_template()
        self.check_decoding()
        self.recorded_levers(DecodeSettings())  # a bad record of levers is reported with the model's location
        self.check_spans_key()  # and so is a bad span key

    def set_loaded(self, source: Optional[ModelSource]) -> None:
        """Use a model that is already loaded (``source`` says where it is on disk, if anywhere)."""
        self.source = source or ModelSource(location=IN_MEMORY, meta={"labels": list(self.labels)})
        self.pending_error = None
        self.check_decoding()

    def recorded_levers(self, settings) -> Dict[str, bool]:
        """The decoding levers ``settings`` (a ``DecodeSettings``) leave null, as the model folder records them
        (``levers.recorded_levers``)."""
        from ..decoding.levers import recorded_levers

        if self.source is None:
            return recorded_levers({}, settings)
        try:
            return recorded_levers(self.source.meta, settings)
        except ValueError as err:
            raise ModelFolderError(f"[{self.name}] {self.source.location}: {err}") from None

    def check_spans_key(self) -> None:
        """Raise ``ModelFolderError`` if the model folder records a span key that is not a non-empty string."""
        self.recorded_spans_key

    @property
    def recorded_spans_key(self) -> Optional[str]:
        """The span group the model folder records (a model trained on nested data), else None."""
        if self.source is None:
            return None
        try:
            return self.source.spans_key
        except ModelFolderError as err:
            raise ModelFolderError(f"[{self.name}] {err}") from None

    @property
    def in_memory(self) -> bool:
        """Whether the model was handed over loaded, with no location on disk (``set_loaded(None)``)."""
        return self.source is not None and self.source.location == IN_MEMORY

    def _build_template(self) -> Template:
        """The prompt template: the one given as 'template', else the model's, else by language."""
        recorded = self.source.template if self.source is not None else None
        return self._template(get_template, self.template_spec, recorded)

    def autoreg_template(self):
        """The autoregressive template: a name given as 'template', else the model's, else by language."""
        from ..baselines import get_autoreg_template

        given = self.template_spec if isinstance(self.template_spec, str) else None
        recorded = self.source.meta.get("autoreg_template") if self.source is not None else None
        return self._template(get_autoreg_template, given, recorded)

    def _template(self, build, given: Any, recorded: Any):
        spec = given if given is not None else (recorded or None)
        if spec is None:
            spec = "zh" if self.lang == "zh" else "en"
        try:
            return build(spec)
        except TemplateError as err:
            raise TemplateError(f"[{self.name}] {err}") from None

    @property
    def text_format(self) -> str:
        if self.text_format_spec:
            return self.text_format_spec
        if self.source is not None and self.source.meta.get("text_format"):
            return self.source.meta["text_format"]
        return "raw"

    @property
    def bos(self) -> Optional[bool]:
        """Whether training prompts started with BOS (None: not recorded)."""
        return self.source.meta.get("bos") if self.source is not None else None

    # -- the decoding --

    @property
    def recorded_protocol(self) -> Optional[str]:
        """The protocol the model was trained with, as its folder records it (None: not recorded)."""
        return self.source.meta.get("protocol") if self.source is not None else None

    @property
    def decoding(self) -> str:
        """The decoding in use: the configured one, else the model's protocol, else "padellm"."""
        return self.configured_decoding or self.recorded_protocol or "padellm"

    def check_decoding(self) -> None:
        recorded = self.recorded_protocol
        if recorded is None:
            return
        if recorded not in PROTOCOL_FITS:
            raise ModelFolderError(f"[{self.name}] the model {self.source.location} records an unknown protocol "
                                   f"{recorded!r}; this version knows {', '.join(PROTOCOL_FITS)}")
        if self.decoding not in PROTOCOL_FITS[recorded]:
            fits = " or ".join(f"'{d}'" for d in PROTOCOL_FITS[recorded])
            raise ValueError(
                f"[{self.name}] decoding '{self.decoding}' does not fit the model {self.source.location}, which was "
                f"trained with protocol '{recorded}': use decoding {fits} (or null, the model's own)")

    def check_ready(self) -> None:
        """Raise what stands between the component and its first doc: no model, no labels."""
        if self.pending_error:
            raise ModelFolderError(self.pending_error)
        if self.source is None:
            raise ModelFolderError(f"[{self.name}] no model: set config 'model' to a model folder, GGUF file or hub id")
        self.check_decoding()
        if not self.labels:
            raise ValueError(f"[{self.name}] no labels: give config 'labels', call nlp.initialize() with examples, "
                             "or use a model folder that records its labels")
        trained = set(self.source.labels)
        unknown = [label for label in self.labels if trained and label not in trained]
        if unknown:
            import warnings

            warnings.warn(f"[{self.name}] labels {unknown} were not in the model's training labels {sorted(trained)}")

    def meta(self) -> Dict[str, Any]:
        """What a saved pipeline records about the model (labels, template, protocol, ...)."""
        decoding = self.decoding
        protocol = self.recorded_protocol or (decoding if decoding in AUTOREG_DECODINGS else "padellm")
        meta = {"labels": list(self.labels), "template": self.template.to_dict(), "lang": self.lang,
                "text_format": self.text_format, "protocol": protocol}
        if protocol in AUTOREG_DECODINGS:
            meta["autoreg_template"] = self.autoreg_template().to_dict()
        return meta
