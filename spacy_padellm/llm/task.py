"""The PaDeLLM task for spacy-llm: ``[components.llm.task] @llm_tasks = "spacy_padellm.NER.v1"``.

spacy-llm calls a task's ``generate_prompts`` on a batch of docs, hands the prompts to the configured
model in one call, and gives the model's responses to ``parse_responses``. PaDeLLM needs two rounds of
generation per document (the mention count of every label, then every mention), so a prompt here is not
a string but a structured request, :class:`PaDeLLMPrompt` (the text, the labels and the template), and
the two rounds run inside the model (``spacy_padellm.Local.v1`` or ``spacy_padellm.OpenAICompletions.v1``,
see ``llm/models.py``), which answers with a :class:`PaDeLLMResponse` per prompt: the (label, k, mention,
probability) predictions. Parsing them into ``doc.ents`` or ``doc.spans[spans_key]`` uses the same
aligner, de-duplication and scorer as the ``padellm_ner`` component.

Long docs are split into shards of whole sentences when the model reports a ``context_length`` (the
longest prompt, in whitespace-separated words, spacy-llm's token estimate), and the shards are fused
back into one doc after parsing.

Label definitions (``label_definitions`` or ``add_label(label, definition)``) are written in the
template's ``{label}`` slot instead of the label name, e.g. ``{"PER": "person"}`` asks for "person"
and reports the mentions as ``PER``; ``description`` is put before the prompt's text, for models
prompted zero-shot. A model fine-tuned on label names wants neither.
"""

from __future__ import annotations

import json
from dataclasses import asdict, dataclass, field
from pathlib import Path
from typing import Any, Callable, Dict, Iterable, List, Optional, Sequence, Tuple, Union

import srsly
from spacy import util
from spacy.language import Language
from spacy.tokens import Doc, Span
from spacy.training import Example
from spacy_llm.registry import registry
from spacy_llm.ty import ShardMapper
from spacy_llm.util import split_labels

from ..pipeline.output import check_alignment_mode, doc_spans, write_spans
from ..text.protocol import Template, TemplateError, get_template
from ..pipeline.scoring import score_padellm
from ..text.windows import model_view
from .shards import check_window_sentences, shard_doc

__all__ = ["PaDeLLMPrompt", "PaDeLLMResponse", "PaDeLLMTask", "make_padellm_task", "STAT_KEYS"]

if not Span.has_extension("padellm_prob"):
    Span.set_extension("padellm_prob", default=None)
if not Doc.has_extension("padellm"):
    Doc.set_extension("padellm", default=None)

#: Per-doc counters written to ``doc._.padellm`` (the same keys as the ``padellm_ner`` component).
STAT_KEYS = ("docs", "windows", "unparsable_counts", "capped_counts", "truncated_mentions",
             "not_found", "no_free_occurrence", "misaligned", "duplicates_removed", "overlaps_removed")

_TEXT_FORMATS = ("raw", "tokens")


# --- What the task gives the model and what it gets back ------------------------------------------


@dataclass(frozen=True)
class PaDeLLMPrompt:
    """The PaDeLLM requests of one doc (shard): every label's count, then every (label, k) mention.

    ``labels`` are the spaCy labels; ``label_texts`` what the template's ``{label}`` slot holds for each
    (the label itself, or its definition). Backends report predictions under ``labels``.
    """

    text: str
    labels: Tuple[str, ...]
    label_texts: Tuple[str, ...]
    template: Template

    @property
    def is_empty(self) -> bool:
        """Nothing to ask: blank text or no labels."""
        return not self.labels or not self.text.strip()

    def prefix(self) -> str:
        return self.template.prefix.format(text=self.text)

    def count_prompt(self, i: int) -> str:
        """The full prompt for the mention count of label ``i``: prefix + label part."""
        return self.prefix() + self.template.label.format(label=self.label_texts[i])

    def mention_prompt(self, i: int, n: int, k: int) -> str:
        """The full prompt for the ``k``-th of ``n`` mentions of label ``i``: count prompt + count + tag."""
        return self.count_prompt(i) + self.template.count.format(n=n) + self.template.mention.format(k=k)

    def __str__(self) -> str:  # what spacy-llm stores in doc.user_data["llm_io"] with save_io
        return json.dumps({"text": self.text, "labels": list(self.labels), "label_texts": list(self.label_texts),
                           "template": self.template.to_dict()}, ensure_ascii=False)


@dataclass
class PaDeLLMResponse:
    """A model's answer to one :class:`PaDeLLMPrompt`.

    ``mentions`` are (label, k, mention string, probability) with the spaCy label; ``counts`` the mention
    count read for each label; the other fields count what went wrong (unparsable counts are taken as 0,
    counts above the model's ``max_count`` are clipped, mentions cut at the token limit are dropped).
    """

    mentions: List[Tuple[str, int, str, float]] = field(default_factory=list)
    counts: Dict[str, int] = field(default_factory=dict)
    unparsable_counts: int = 0
    capped_counts: int = 0
    truncated_mentions: int = 0

    def __str__(self) -> str:
        return json.dumps(asdict(self), ensure_ascii=False)


# --- The task ------------------------------------------------------------------------------------


def _escape(text: str) -> str:
    return text.replace("{", "{{").replace("}", "}}")


def _model_view(doc: Doc, text_format: str) -> Tuple[str, List[Tuple[int, int, int, int]]]:
    """The text the model reads for ``doc`` (outer whitespace dropped), and per token (start, end in that
    text, start, end in doc)."""
    tokens = [(t.idx, t.text) for t in doc if not t.is_space]
    if not tokens:
        return "", []
    start, end = tokens[0][0], tokens[-1][0] + len(tokens[-1][1])  # without outer whitespace
    return model_view(doc.text, tokens, start, end, text_format)


class PaDeLLMTask:
    """PaDeLLM-NER as a spacy-llm task (a sharding, labelled, scorable, serialisable task)."""

    def __init__(
        self,
        labels: Sequence[str] = (),
        template: Union[str, Dict[str, str], Template, None] = "en",
        label_definitions: Optional[Dict[str, str]] = None,
        description: Optional[str] = None,
        spans_key: Optional[str] = None,
        text_format: str = "raw",
        deduplicate: bool = True,
        shard_mapper: Optional[ShardMapper] = None,
        scorer: Optional[Callable[..., Dict[str, Any]]] = None,
        alignment_mode: str = "strict",
        window_sentences: Optional[int] = 1,
    ):
        if text_format not in _TEXT_FORMATS:
            raise ValueError(f"[spacy_padellm.NER] 'text_format' must be 'raw' or 'tokens', got {text_format!r}")
        try:
            self._alignment_mode = check_alignment_mode(alignment_mode)
        except ValueError as err:
            raise ValueError(f"[spacy_padellm.NER] {err}") from None
        self._window_sentences = check_window_sentences(window_sentences)
        if isinstance(labels, str) or not all(isinstance(x, str) and x.strip() for x in labels):
            raise ValueError(f"[spacy_padellm.NER] 'labels' must be a list of non-empty strings, got {labels!r}")
        try:
            self._base_template = get_template(template)
        except TemplateError as err:
            raise TemplateError(f"[spacy_padellm.NER] {err}") from None
        self._labels: List[str] = list(dict.fromkeys(labels))
        self._label_definitions: Dict[str, str] = dict(label_definitions or {})
        self._description = description or None
        self._spans_key = spans_key or None
        self._text_format = text_format
        self._deduplicate = deduplicate
        self._shard_mapper = shard_mapper
        self._scorer = scorer or score_padellm
        self._check_label_texts()

    # -- labels and prompt pieces ----------------------------------------------------------------

    @property
    def labels(self) -> Tuple[str, ...]:
        return tuple(self._labels)

    @property
    def label_definitions(self) -> Dict[str, str]:
        return dict(self._label_definitions)

    def add_label(self, label: str, label_definition: Optional[str] = None) -> int:
        """Add a label (and what to write in the prompt for it); returns 1 if it is new, else 0."""
        if not isinstance(label, str) or not label.strip():
            raise ValueError(f"[spacy_padellm.NER] a label must be a non-empty string, got {label!r}")
        if label_definition is not None:
            self._label_definitions[label] = label_definition
        new = label not in self._labels
        if new:
            self._labels.append(label)
        self._check_label_texts()
        return int(new)

    def clear(self) -> None:
        """Remove every label (and its definition)."""
        self._labels = []
        self._label_definitions = {}

    def label_text(self, label: str) -> str:
        """What the template's ``{label}`` slot holds for ``label``."""
        return self._label_definitions.get(label, label)

    def _check_label_texts(self) -> None:
        seen: Dict[str, str] = {}
        for label in self._labels:
            text = self.label_text(label)
            if not text.strip():
                raise ValueError(f"[spacy_padellm.NER] the definition of label {label!r} is empty")
            if text in seen:
                raise ValueError(
                    f"[spacy_padellm.NER] labels {seen[text]!r} and {label!r} would be asked with the same prompt "
                    f"text {text!r}; give them different definitions"
                )
            seen[text] = label

    @property
    def template(self) -> Template:
        """The protocol template the model is prompted with (the description, if any, before the prefix)."""
        base = self._base_template
        if not self._description:
            return base
        return Template(prefix=_escape(self._description.rstrip()) + "\n\n" + base.prefix, label=base.label,
                        count=base.count, mention=base.mention)

    @property
    def spans_key(self) -> Optional[str]:
        return self._spans_key

    @property
    def prompt_template(self) -> str:
        """Everything that shapes the prompts, for spacy-llm's cache to check that cached docs still fit."""
        return json.dumps({"task": "spacy_padellm.NER.v1", "template": self.template.to_dict(),
                           "label_texts": {label: self.label_text(label) for label in self._labels},
                           "text_format": self._text_format}, ensure_ascii=False, sort_keys=True)

    def make_prompt(self, text: str) -> PaDeLLMPrompt:
        return PaDeLLMPrompt(text=text, labels=tuple(self._labels),
                             label_texts=tuple(self.label_text(label) for label in self._labels),
                             template=self.template)

    # -- prompts -------------------------------------------------------------------------------

    def _longest_prompt(self, text: str) -> str:
        """A prompt at least as long as any this task sends for ``text`` (for the shard size)."""
        label = max((self.label_text(label) for label in self._labels), key=len, default="")
        template = self.template
        return (template.prefix.format(text=text) + template.label.format(label=label)
                + template.count.format(n=99) + template.mention.format(k=99))

    def _shards(self, doc: Doc, i_doc: int, context_length: Optional[int]) -> List[Doc]:
        """``doc`` cut into shards of whole sentences (see ``llm.shards``)."""
        return shard_doc(doc, i_doc, self._window_sentences, context_length, self._longest_prompt,
                         self._shard_mapper)

    def generate_prompts(
        self, docs: Iterable[Doc], context_length: Optional[int] = None
    ) -> Iterable[Tuple[Iterable[PaDeLLMPrompt], Iterable[Doc]]]:
        """One prompt per doc shard (one shard unless the doc is longer than ``context_length``)."""
        if not self._labels:
            raise ValueError(
                "[spacy_padellm.NER] no labels: set 'labels' in the task config, call nlp.initialize() with "
                "examples, or add_label()"
            )
        for i_doc, doc in enumerate(docs):
            shards = self._shards(doc, i_doc, context_length)
            yield [self.make_prompt(_model_view(shard, self._text_format)[0]) for shard in shards], shards

    # -- responses -----------------------------------------------------------------------------

    def parse_responses(
        self, shards: Iterable[Iterable[Doc]], responses: Iterable[Iterable[PaDeLLMResponse]]
    ) -> Iterable[Doc]:
        """Align each shard's predicted mentions to its tokens, set them, and fuse the shards of a doc."""
        for shards_for_doc, responses_for_doc in zip(shards, responses):
            shards_for_doc = list(shards_for_doc)
            responses_for_doc = list(responses_for_doc)
            if len(shards_for_doc) != len(responses_for_doc):
                raise ValueError(
                    f"[spacy_padellm.NER] the model answered {len(responses_for_doc)} responses for "
                    f"{len(shards_for_doc)} prompts of a doc"
                )
            stats = {key: 0 for key in STAT_KEYS}
            for shard, response in zip(shards_for_doc, responses_for_doc):
                self._annotate(shard, response, stats)
            doc = shards_for_doc[0] if len(shards_for_doc) == 1 else self._fuse(shards_for_doc)
            stats["docs"] = 1
            doc._.padellm = stats
            yield doc

    def _annotate(self, doc: Doc, response: PaDeLLMResponse, stats: Dict[str, int]) -> None:
        if not isinstance(response, PaDeLLMResponse):
            raise TypeError(
                f"[spacy_padellm.NER] expected PaDeLLMResponse objects from the model, got {type(response).__name__}; "
                "use a spacy_padellm model (spacy_padellm.Local.v1, spacy_padellm.OpenAICompletions.v1)"
            )
        text, mapping = _model_view(doc, self._text_format)
        spans = []
        if text.strip() and mapping:
            stats["windows"] += 1
            stats["unparsable_counts"] += response.unparsable_counts
            stats["capped_counts"] += response.capped_counts
            stats["truncated_mentions"] += response.truncated_mentions
            spans = doc_spans(text, mapping, response.mentions, stats, self._alignment_mode)
        write_spans(doc, spans, self._spans_key, self._deduplicate, stats)

    def _fuse(self, shards: List[Doc]) -> Doc:
        for shard in shards:  # doc-level extensions cannot be merged; the fused doc gets the sums
            shard.user_data.pop(("._.", "padellm", None, None), None)
        doc = Doc.from_docs(shards, ensure_whitespace=False)
        if self._spans_key and self._spans_key in doc.spans:
            group = doc.spans[self._spans_key]
            group.attrs["scores"] = [span._.padellm_prob for span in group]
        return doc

    # -- initialisation and scoring -------------------------------------------------------------

    def initialize(
        self,
        get_examples: Callable[[], Iterable[Example]],
        nlp: Language,
        labels: List[str] = [],
        label_definitions: Optional[Dict[str, str]] = None,
        **kwargs: Any,
    ) -> None:
        """Set the labels: those given here (``[initialize.components.llm]``), else the configured ones,
        else the labels found in the examples (``doc.ents``, or ``doc.spans[spans_key]``)."""
        if label_definitions:
            self._label_definitions.update(label_definitions)
        if labels:
            self._labels = list(dict.fromkeys(split_labels(labels)))
        elif not self._labels and get_examples is not None:
            found: Dict[str, None] = {}
            for example in get_examples():
                ref = example.reference
                spans = ref.spans.get(self._spans_key, []) if self._spans_key else ref.ents
                for span in spans:
                    found[span.label_] = None
            self._labels = sorted(found)
        self._check_label_texts()

    def scorer(self, examples: Iterable[Example]) -> Dict[str, Any]:
        """``ents_p/r/f`` and ``ents_per_type`` (flat), ``spans_<key>_p/r/f`` (with ``spans_key``)."""
        if self._spans_key:
            return self._scorer(examples, spans_key=self._spans_key)
        return self._scorer(examples)

    # -- serialisation ---------------------------------------------------------------------------

    def get_cfg(self) -> Dict[str, Any]:
        return {
            "labels": list(self._labels),
            "label_definitions": dict(self._label_definitions),
            "template": self._base_template.to_dict(),
            "description": self._description,
            "spans_key": self._spans_key,
            "text_format": self._text_format,
            "deduplicate": self._deduplicate,
            "alignment_mode": self._alignment_mode,
            "window_sentences": self._window_sentences,
        }

    def set_cfg(self, cfg: Dict[str, Any]) -> None:
        self._labels = list(cfg.get("labels", self._labels))
        self._label_definitions = dict(cfg.get("label_definitions") or {})
        if cfg.get("template"):
            self._base_template = get_template(dict(cfg["template"]))
        self._description = cfg.get("description", self._description)
        self._spans_key = cfg.get("spans_key", self._spans_key)
        self._text_format = cfg.get("text_format", self._text_format)
        self._deduplicate = cfg.get("deduplicate", self._deduplicate)
        self._alignment_mode = cfg.get("alignment_mode", self._alignment_mode)
        self._window_sentences = cfg.get("window_sentences", self._window_sentences)
        self._check_label_texts()

    def to_bytes(self, *, exclude: Tuple[str, ...] = tuple()) -> bytes:
        return util.to_bytes({"cfg": lambda: srsly.json_dumps(self.get_cfg())}, exclude)

    def from_bytes(self, bytes_data: bytes, *, exclude: Tuple[str, ...] = tuple()) -> "PaDeLLMTask":
        util.from_bytes(bytes_data, {"cfg": lambda b: self.set_cfg(srsly.json_loads(b))}, exclude)
        return self

    def to_disk(self, path: Path, *, exclude: Tuple[str, ...] = tuple()) -> None:
        util.to_disk(path, {"cfg": lambda p: srsly.write_json(p, self.get_cfg())}, exclude)

    def from_disk(self, path: Path, *, exclude: Tuple[str, ...] = tuple()) -> "PaDeLLMTask":
        util.from_disk(path, {"cfg": lambda p: self.set_cfg(srsly.read_json(p))}, exclude)
        return self


@registry.llm_tasks("spacy_padellm.NER.v1")
def make_padellm_task(
    labels: Union[List[str], str] = [],
    template: Optional[Union[str, Dict[str, str]]] = "en",
    label_definitions: Optional[Dict[str, str]] = None,
    description: Optional[str] = None,
    spans_key: Optional[str] = None,
    text_format: str = "raw",
    deduplicate: bool = True,
    shard_mapper: Optional[ShardMapper] = None,
    scorer: Optional[Callable[..., Dict[str, Any]]] = None,
    alignment_mode: str = "strict",
    window_sentences: Optional[int] = 1,
) -> PaDeLLMTask:
    """PaDeLLM-NER task for the ``llm`` component; pair it with a ``spacy_padellm.*`` model.

    labels (Union[List[str], str]): entity labels, a list or a comma-separated string; may be left empty
        and set at ``nlp.initialize()`` (from ``[initialize.components.llm] labels`` or the examples).
    template (Union[str, Dict[str, str]]): protocol template, "en", "zh" or the four pieces
        (prefix/label/count/mention); it must match the one the model was fine-tuned with.
    label_definitions (Optional[Dict[str, str]]): label -> text written in the ``{label}`` slot instead
        of the label name (e.g. ``{"PER": "person"}``); mentions are still reported under the label.
    description (Optional[str]): instructions put before the prompt (zero-shot prompting of a general
        model); leave unset for a PaDeLLM fine-tuned model.
    spans_key (Optional[str]): nested mode: all spans, overlaps kept, go to ``doc.spans[spans_key]``;
        unset: ``doc.ents`` (overlaps resolved, most probable first).
    text_format (str): "raw" (the doc text) or "tokens" (tokens joined by single spaces, as CoNLL data).
    deduplicate (bool): keep one label per character span, the most probable.
    shard_mapper (Optional[ShardMapper]): how to split docs longer than the model's context length
        (default: whole sentences, measured with spacy-llm's word count estimate).
    scorer (Optional[Callable]): scorer (default: ``spacy_padellm.scorer.v1``).
    alignment_mode (str): a mention that does not fall on token boundaries is dropped and counted in
        ``doc._.padellm["misaligned"]`` ("strict"), cut to the tokens inside it ("contract") or widened to the
        tokens it touches ("expand"), as spaCy's ``Doc.char_span`` modes.
    window_sentences (Optional[int]): sentences a shard holds at most (1: each sentence asked about alone, as
        the shipped models were trained; null: as many as fit the model's ``context_length``).
    """
    return PaDeLLMTask(
        labels=split_labels(labels), template=template, label_definitions=label_definitions,
        description=description, spans_key=spans_key, text_format=text_format, deduplicate=deduplicate,
        shard_mapper=shard_mapper, scorer=scorer, alignment_mode=alignment_mode, window_sentences=window_sentences,
    )
