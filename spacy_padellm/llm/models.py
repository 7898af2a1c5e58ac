"""The spacy-llm models of the PaDeLLM task, registered under ``[components.llm.model] @llm_models``:
the two decoding rounds run inside one model call.

spacy-llm calls its model once per batch of docs with the task's prompts. A PaDeLLM prompt
(:class:`~spacy_padellm.llm.task.PaDeLLMPrompt`) is a whole document's worth of requests: the mention
count of every label (round 1), then the k-th mention of every label with count n, k = 1..n (round 2).
Both backends answer every prompt of the batch with a :class:`~spacy_padellm.llm.task.PaDeLLMResponse`.

* ``spacy_padellm.Local.v1`` (:class:`~spacy_padellm.llm.local.LocalPaDeLLM`): the project's decoder on a
  local model folder.
* ``spacy_padellm.OpenAICompletions.v1`` (:class:`~spacy_padellm.llm.openai.OpenAICompletionsPaDeLLM`):
  any server speaking the OpenAI ``/v1/completions`` API.
"""

from __future__ import annotations

import inspect
import os
from typing import Any, Dict, List, Optional

from spacy_llm.registry import registry

from ..decoding.settings import settings_parameters
from .local import LocalPaDeLLM
from .openai import CompletionsAPIError, CompletionsTimeout, OpenAICompletionsPaDeLLM
from .options import DEFAULT_CONTEXT_LENGTH

__all__ = [
    "LocalPaDeLLM",
    "OpenAICompletionsPaDeLLM",
    "CompletionsAPIError",
    "CompletionsTimeout",
    "make_local_model",
    "make_openai_completions_model",
]


@registry.llm_models("spacy_padellm.Local.v1")
def make_local_model(model: str, **options: Any) -> LocalPaDeLLM:
    """PaDeLLM on a local model: :class:`~spacy_padellm.llm.local.LocalPaDeLLM`'s options (device, dtype,
    context_length, ...) and every decoding setting of ``padellm_ner`` (``max_count``, ``engine``, ...)."""
    return LocalPaDeLLM(model, **options)


# The config is validated against the factory's signature: the class's own options, then every decoding
# setting (``DecodeSettings``), so that each is written once and a misspelt option is a config error.
_own = [p for name, p in inspect.signature(LocalPaDeLLM.__init__, eval_str=True).parameters.items()
        if name not in ("self", "settings", "changes")]
make_local_model.__signature__ = inspect.Signature(_own + settings_parameters(), return_annotation=LocalPaDeLLM)


@registry.llm_models("spacy_padellm.OpenAICompletions.v1")
def make_openai_completions_model(
    name: Optional[str] = None,
    api_base: Optional[str] = None,
    api_key: Optional[str] = None,
    config: Dict[str, Any] = {},
    max_count: int = 20,
    max_count_tokens: int = 4,
    max_mention_tokens: int = 40,
    stop: List[str] = ["\n"],
    logprobs: bool = True,
    concurrency: int = 8,
    timeout: float = 30.0,
    max_tries: int = 5,
    interval: float = 1.0,
    context_length: Optional[int] = DEFAULT_CONTEXT_LENGTH,
) -> OpenAICompletionsPaDeLLM:
    """PaDeLLM against an OpenAI-compatible ``/v1/completions`` endpoint.

    name (Optional[str]): the served model name (default: $PADELLM_MODEL).
    api_base (Optional[str]): base URL up to and including ``/v1`` (default: $PADELLM_API_BASE, else
        $OPENAI_BASE_URL, else https://api.openai.com/v1).
    api_key (Optional[str]): bearer token (default: $PADELLM_API_KEY, else $OPENAI_API_KEY, else none).
        Prefer the environment: config values are saved with the pipeline.
    config (Dict[str, Any]): extra request fields (temperature is 0 unless set here).
    max_count (int): mention counts above it are clipped.
    max_count_tokens, max_mention_tokens (int): ``max_tokens`` of the count and mention requests.
    stop (List[str]): stop sequences of the mention requests (the count requests stop at the template's
        count terminator); add the model's EOS string if the server prints it.
    logprobs (bool): ask for token logprobs, the mention probability (1.0 if the server sends none).
    concurrency (int): requests in flight at once.
    timeout (float): seconds to wait for the connection and for each read of an answer.
    max_tries (int): tries per request (1 = no retry); waits ``interval`` seconds, doubled each retry.
    context_length (Optional[int]): longest prompt in words before docs are sharded (null: never).
    """
    return OpenAICompletionsPaDeLLM(
        name=name or os.environ.get("PADELLM_MODEL", ""),
        api_base=api_base or os.environ.get("PADELLM_API_BASE") or os.environ.get("OPENAI_BASE_URL")
        or "https://api.openai.com/v1",
        api_key=api_key or os.environ.get("PADELLM_API_KEY") or os.environ.get("OPENAI_API_KEY"),
        config=config, max_count=max_count, max_count_tokens=max_count_tokens,
        max_mention_tokens=max_mention_tokens, stop=stop, logprobs=logprobs, concurrency=concurrency,
        timeout=timeout, max_tries=max_tries, interval=interval, context_length=context_length,
    )
