"""``spacy_padellm.Local.v1``: the PaDeLLM prompts of a spacy-llm batch through the project's decoder
(``decoding.factory.make_decoder``) on a local model folder: prefix sharing, KV-cache reuse between the
two rounds and batched greedy decoding, i.e. the engine of the ``padellm_ner`` component."""

from __future__ import annotations

import warnings
from typing import Any, Dict, Iterable, List, Optional, Tuple

from ..decoding.settings import DecodeSettings, SettingsError
from ..devices import resolve_device
from ..loading import ModelFolderError, ModelSource, load_model, resolve_model
from ..text.protocol import Template, get_template
from .options import DEFAULT_CONTEXT_LENGTH, check_positive
from .task import PaDeLLMPrompt, PaDeLLMResponse

__all__ = ["LocalPaDeLLM"]


class LocalPaDeLLM:
    """Runs the PaDeLLM prompts of a batch through the project's decoder on a local model.

    model (str): a model folder written by spacy-padellm, a Hugging Face folder, a PEFT adapter folder,
        a .gguf file or a hub id (see ``loading.py``); checked here, the weights are loaded at the first
        call (or by :meth:`load`).
    device (Optional[str]): "cpu", "cuda", "cuda:1" (default: follow spacy.require_gpu/prefer_gpu).
    dtype (str): auto (bf16 on CUDA, fp32 on CPU), float32, bfloat16, float16.
    context_length (Optional[int]): longest prompt in words before docs are sharded (null: never).
    settings (DecodeSettings): how prompts are decoded, with ``changes`` (any of its keys: ``max_count``,
        ``max_batch_rows``, ``engine``, the levers...) applied; the same settings as ``padellm_ner``'s.
    """

    def __init__(self, model: str, *, device: Optional[str] = None, dtype: str = "auto",
                 trust_remote_code: bool = False, context_length: Optional[int] = DEFAULT_CONTEXT_LENGTH,
                 settings: Optional[DecodeSettings] = None, **changes: Any):
        if context_length is not None:
            check_positive("spacy_padellm.Local", context_length=context_length)
        try:
            self.settings = (settings or DecodeSettings()).replace(**changes)
        except SettingsError as err:
            raise SettingsError(f"[spacy_padellm.Local] {err}") from None
        self.source: ModelSource = resolve_model(model)
        self.device = device
        self.dtype = dtype
        self.trust_remote_code = trust_remote_code
        self._context_length = context_length
        self._runtime: Optional[Tuple[Any, Any]] = None  # (model, tokenizer)
        self._decoders: Dict[Template, Any] = {}
        self._warned: set = set()
        self.stats: Dict[str, int] = {"calls": 0, "prompts": 0}

    @property
    def decode_settings(self) -> DecodeSettings:
        """The settings decoding runs with: each decoding lever left null as the model folder records it."""
        from ..decoding.levers import recorded_levers

        try:
            return self.settings.replace(**recorded_levers(self.source.meta, self.settings))
        except ValueError as err:
            raise ModelFolderError(f"[spacy_padellm.Local] {self.source.location}: {err}") from None

    @property
    def max_count(self) -> int:
        return self.settings.max_count

    @property
    def max_batch_rows(self) -> int:
        return self.settings.max_batch_rows

    @property
    def context_length(self) -> Optional[int]:
        """The longest prompt (in words) before spacy-llm shards a doc; None: never shard."""
        return self._context_length

    def load(self) -> Tuple[Any, Any]:
        """(model, tokenizer), loaded on first use."""
        if self._runtime is None:
            self._runtime = load_model(self.source, resolve_device(self.device), self.dtype, self.trust_remote_code)
        return self._runtime

    def decoder(self, template: Template):
        """The PaDeLLM decoder for one prompt template (one per template, built on demand): the static
        tree engine for Llama-family models, else the dynamic-cache TwoStepDecoder (``decoding.factory``)."""
        if template not in self._decoders:
            from ..decoding.factory import make_decoder
            from ..text.protocol import PromptEncoder

            model, tokenizer = self.load()
            encoder = PromptEncoder(tokenizer, template, self.source.meta.get("bos"))
            self._decoders[template] = make_decoder(model, encoder, self.decode_settings)
        return self._decoders[template]

    def _check_prompt(self, prompt: PaDeLLMPrompt) -> None:
        """Warn (once) about labels and templates the model was not fine-tuned with."""
        trained = set(self.source.labels)
        unknown = [t for t in prompt.label_texts if trained and t not in trained and t not in self._warned]
        if unknown:
            self._warned.update(unknown)
            warnings.warn(f"[spacy_padellm.Local] labels {unknown} were not in the model's training labels "
                          f"{sorted(trained)}")
        if self.source.template and prompt.template not in self._warned:
            self._warned.add(prompt.template)
            trained_template = get_template(dict(self.source.template))
            if prompt.template != trained_template:
                warnings.warn(f"[spacy_padellm.Local] the task's prompt template {prompt.template.to_dict()} differs "
                              f"from the one the model was fine-tuned with {trained_template.to_dict()}")

    def __call__(self, prompts: Iterable[Iterable[PaDeLLMPrompt]]) -> Iterable[Iterable[PaDeLLMResponse]]:
        from ..decoding.types import DocRequest

        per_doc = [list(doc_prompts) for doc_prompts in prompts]
        responses = [[PaDeLLMResponse() for _ in doc_prompts] for doc_prompts in per_doc]
        groups: Dict[Template, List[Tuple[int, int, PaDeLLMPrompt]]] = {}
        for d, doc_prompts in enumerate(per_doc):
            for j, prompt in enumerate(doc_prompts):
                if not prompt.is_empty:
                    groups.setdefault(prompt.template, []).append((d, j, prompt))
        self.stats["calls"] += 1
        for template, items in groups.items():
            for _, _, prompt in items:
                self._check_prompt(prompt)
            results = self.decoder(template).decode([DocRequest(p.text, list(p.label_texts)) for _, _, p in items])
            for (d, j, prompt), result in zip(items, results):
                to_label = dict(zip(prompt.label_texts, prompt.labels))
                responses[d][j] = PaDeLLMResponse(
                    mentions=[(to_label[p.label], p.k, p.text, p.prob) for p in result.predictions],
                    counts={to_label[t]: n for t, n in result.counts.items()},
                    unparsable_counts=result.unparsable_counts,
                    capped_counts=result.capped_counts,
                    truncated_mentions=result.truncated_mentions,
                )
            self.stats["prompts"] += len(items)
        return responses
