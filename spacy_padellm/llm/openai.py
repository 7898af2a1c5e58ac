"""``spacy_padellm.OpenAICompletions.v1``: the PaDeLLM prompts of a spacy-llm batch against any server
speaking the OpenAI ``/v1/completions`` API (vLLM, llama.cpp server, TGI, OpenAI).

Round 1 sends one request per (doc, label), concurrently; round 2 one request per (doc, label, k),
concurrently; ``concurrency`` bounds the requests in flight. Requests that fail with a connection error,
a timeout, HTTP 408/409/429/5xx or an answer that is not a completions response are retried with
exponential backoff; then a :class:`CompletionsAPIError` (:class:`CompletionsTimeout` for timeouts) says
what the server did.

The HTTP prompts are plain strings: the count prompt is ``prefix(text) + label(label)`` and stops at
the template's count terminator ("\\n"); the k-th mention prompt is the count prompt + ``count(n)`` +
``mention(k)`` and stops at ``stop`` (default ``["\\n"]``; the server also stops at its EOS token; add
the EOS string, e.g. ``"</s>"``, to ``stop`` for servers that print it). A mention's probability is the
exponent of the sum of its token logprobs when the server returns them (``logprobs: true``), else 1.0.
"""

from __future__ import annotations

import math
import threading
import time
from concurrent.futures import FIRST_EXCEPTION, Future, ThreadPoolExecutor, wait
from typing import Any, Dict, Iterable, List, Optional, Sequence, Tuple

from ..text.protocol import parse_count, parse_mention
from .options import DEFAULT_CONTEXT_LENGTH, check_positive
from .task import PaDeLLMPrompt, PaDeLLMResponse

__all__ = ["OpenAICompletionsPaDeLLM", "CompletionsAPIError", "CompletionsTimeout"]


class CompletionsAPIError(RuntimeError):
    """The completions server could not be reached, refused the request, or answered garbage."""


class CompletionsTimeout(CompletionsAPIError, TimeoutError):
    """The completions server did not answer within the configured timeout."""


_RETRY_STATUS = {408, 409, 429, 500, 502, 503, 504}


class _Retryable(Exception):
    def __init__(self, error: CompletionsAPIError, retry_after: Optional[float] = None):
        super().__init__(str(error))
        self.error = error
        self.retry_after = retry_after


def _snippet(text: str, size: int = 200) -> str:
    text = " ".join(str(text).split())
    return text if len(text) <= size else text[:size] + "..."


def _logprob(choice: Dict[str, Any]) -> Optional[float]:
    """Sum of the returned tokens' logprobs (legacy ``token_logprobs`` or ``content[].logprob``), or None."""
    data = choice.get("logprobs")
    if not isinstance(data, dict):
        return None
    values = data.get("token_logprobs")
    if values is None and isinstance(data.get("content"), list):
        values = [item.get("logprob") for item in data["content"] if isinstance(item, dict)]
    if not isinstance(values, list):
        return None
    numbers = [v for v in values if isinstance(v, (int, float)) and not isinstance(v, bool)]
    if values and not numbers:
        return None
    return float(sum(numbers))


class OpenAICompletionsPaDeLLM:
    """Runs the PaDeLLM prompts of a batch against an OpenAI-compatible ``/completions`` endpoint."""

    def __init__(
        self,
        name: str,
        api_base: str,
        api_key: Optional[str] = None,
        *,
        config: Optional[Dict[str, Any]] = None,
        max_count: int = 20,
        max_count_tokens: int = 4,
        max_mention_tokens: int = 40,
        stop: Sequence[str] = ("\n",),
        logprobs: bool = True,
        concurrency: int = 8,
        timeout: float = 30.0,
        max_tries: int = 5,
        interval: float = 1.0,
        context_length: Optional[int] = DEFAULT_CONTEXT_LENGTH,
    ):
        label = "spacy_padellm.OpenAICompletions"
        check_positive(label, max_count=max_count, max_count_tokens=max_count_tokens,
                        max_mention_tokens=max_mention_tokens, concurrency=concurrency, timeout=timeout,
                        max_tries=max_tries, interval=interval)
        if context_length is not None:
            check_positive(label, context_length=context_length)
        if isinstance(stop, str) or not all(isinstance(s, str) and s for s in stop):
            raise ValueError(f"[{label}] 'stop' must be a list of non-empty strings, got {stop!r}")
        if not name:
            raise ValueError(f"[{label}] no model name: set 'name' in the config or PADELLM_MODEL")
        if not api_base or not api_base.startswith(("http://", "https://")):
            raise ValueError(f"[{label}] 'api_base' must be an http(s) URL such as http://127.0.0.1:8000/v1, "
                             f"got {api_base!r}")
        self.name = name
        self.api_base = api_base.rstrip("/")
        self.url = self.api_base + "/completions"
        self._api_key = api_key
        self.config = dict(config or {})
        self.max_count = int(max_count)
        self.max_count_tokens = int(max_count_tokens)
        self.max_mention_tokens = int(max_mention_tokens)
        self.stop = list(stop)
        self.logprobs = logprobs
        self.concurrency = int(concurrency)
        self.timeout = float(timeout)
        self.max_tries = int(max_tries)
        self.interval = float(interval)
        self._context_length = context_length
        self._local = threading.local()
        self._lock = threading.Lock()
        self._executor: Optional[ThreadPoolExecutor] = None
        self.stats: Dict[str, int] = {"calls": 0, "prompts": 0, "count_requests": 0, "mention_requests": 0,
                                      "http_requests": 0, "retries": 0}

    @property
    def context_length(self) -> Optional[int]:
        """The longest prompt (in words) before spacy-llm shards a doc; None: never shard."""
        return self._context_length

    def __repr__(self) -> str:  # never shows the key
        return f"{type(self).__name__}(name={self.name!r}, url={self.url!r})"

    # -- one request ---------------------------------------------------------------------------

    def _http(self):
        """This thread's HTTP client, which keeps its connections open between requests."""
        import requests

        http = getattr(self._local, "http", None)
        if http is None:
            http = self._local.http = requests.Session()
        return http

    def _count(self, key: str, n: int = 1) -> None:
        with self._lock:
            self.stats[key] += n

    def _attempt(self, body: Dict[str, Any]) -> Dict[str, Any]:
        """One POST; returns the first choice, or raises _Retryable / CompletionsAPIError."""
        import requests

        headers = {"Content-Type": "application/json"}
        if self._api_key:
            headers["Authorization"] = f"Bearer {self._api_key}"
        self._count("http_requests")
        try:
            r = self._http().post(self.url, json=body, headers=headers, timeout=(self.timeout, self.timeout))
        except requests.Timeout as err:
            raise _Retryable(CompletionsTimeout(f"{self.url} did not answer within {self.timeout:g} s")) from err
        except requests.ConnectionError as err:
            raise _Retryable(CompletionsAPIError(
                f"cannot reach {self.url} ({_snippet(err, 160)}); check that the server runs and 'api_base' "
                "(or PADELLM_API_BASE) points at it")) from err
        if r.status_code in _RETRY_STATUS:
            retry_after = None
            try:
                retry_after = min(float(r.headers.get("Retry-After", "")), 60.0)
            except ValueError:
                pass
            raise _Retryable(CompletionsAPIError(f"{self.url} answered HTTP {r.status_code}: {_snippet(r.text)}"),
                             retry_after)
        if r.status_code >= 400:
            detail = r.text
            try:
                detail = r.json().get("error", {}).get("message") or detail
            except (ValueError, AttributeError):
                pass
            raise CompletionsAPIError(f"{self.url} refused the request with HTTP {r.status_code}: {_snippet(detail)}")
        try:
            data = r.json()
        except ValueError:
            raise _Retryable(CompletionsAPIError(
                f"{self.url} answered something that is not JSON (is 'api_base' an OpenAI-compatible /v1 "
                f"endpoint?): {_snippet(r.text)}")) from None
        choices = data.get("choices") if isinstance(data, dict) else None
        if not isinstance(choices, list) or not choices or not isinstance(choices[0], dict) \
                or not isinstance(choices[0].get("text"), str):
            if isinstance(data, dict) and data.get("error"):
                raise _Retryable(CompletionsAPIError(f"{self.url} answered an error: {_snippet(data['error'])}"))
            raise _Retryable(CompletionsAPIError(
                f"{self.url} answered JSON that is not a completions response (no choices[0].text): "
                f"{_snippet(r.text)}"))
        return choices[0]

    def complete(self, prompt: str, max_tokens: int, stop: Sequence[str], logprobs: bool = False,
                 cancel: Optional[threading.Event] = None):
        """(text, finish_reason, logprob or None) of one completion, with retries and backoff.

        ``cancel``, once set, stops further retries (another request of the batch has failed).
        """
        body: Dict[str, Any] = {"temperature": 0.0, **self.config, "model": self.name, "prompt": prompt,
                                "max_tokens": max_tokens, "stop": list(stop)}
        if logprobs:
            body["logprobs"] = 1
        delay = self.interval
        for attempt in range(1, self.max_tries + 1):
            try:
                choice = self._attempt(body)
            except _Retryable as retry:
                if attempt == self.max_tries or (cancel is not None and cancel.is_set()):
                    error = retry.error
                    raise type(error)(f"{error} (after {attempt} tries)") from retry.__cause__
                self._count("retries")
                pause = max(delay, retry.retry_after or 0.0)
                if cancel is not None:
                    cancel.wait(pause)
                else:
                    time.sleep(pause)
                delay *= 2
                continue
            return choice["text"], choice.get("finish_reason"), _logprob(choice)
        raise AssertionError("unreachable")

    # -- a batch ---------------------------------------------------------------------------------

    def _run(self, jobs: List[Tuple[Any, ...]]) -> List[Tuple[str, Optional[str], Optional[float]]]:
        """Run complete(*job) for every job, ``concurrency`` at a time; the first failure stops the rest."""
        if not jobs:
            return []
        if self._executor is None:
            self._executor = ThreadPoolExecutor(max_workers=self.concurrency, thread_name_prefix="padellm-http")
        cancel = threading.Event()
        futures: List[Future] = [self._executor.submit(self.complete, *job, cancel=cancel) for job in jobs]
        _, pending = wait(futures, return_when=FIRST_EXCEPTION)
        for future in futures:
            if future.done() and not future.cancelled() and future.exception() is not None:
                cancel.set()
                for other in pending:
                    other.cancel()
                raise future.exception()
        return [future.result() for future in futures]

    def _cut(self, text: str, stops: Sequence[str]) -> Tuple[str, bool]:
        """Text before the first stop string (for servers that ignore ``stop``), and whether one was found."""
        cut = min((text.find(s) for s in stops if s in text), default=-1)
        return (text[:cut], True) if cut >= 0 else (text, False)

    def __call__(self, prompts: Iterable[Iterable[PaDeLLMPrompt]]) -> Iterable[Iterable[PaDeLLMResponse]]:
        per_doc = [list(doc_prompts) for doc_prompts in prompts]
        flat = [(d, j, p) for d, doc_prompts in enumerate(per_doc) for j, p in enumerate(doc_prompts)]
        responses = {(d, j): PaDeLLMResponse() for d, j, _ in flat}
        self._count("calls")
        self._count("prompts", sum(1 for _, _, p in flat if not p.is_empty))
        # Round 1: every label's mention count.
        branches = [(d, j, p, i) for d, j, p in flat if not p.is_empty for i in range(len(p.labels))]
        count_jobs = [(p.count_prompt(i), self.max_count_tokens, [p.template.count_terminator], False)
                      for _, _, p, i in branches]
        self._count("count_requests", len(count_jobs))
        mention_branches = []
        for (d, j, p, i), (text, finish, _) in zip(branches, self._run(count_jobs)):
            response = responses[(d, j)]
            text, found = self._cut(text, [p.template.count_terminator])
            ended = found or finish != "length"
            n = parse_count(text, p.template)
            if n is None:
                response.unparsable_counts += 1
                n = 0
            elif n > self.max_count:
                response.capped_counts += 1
                n = self.max_count
            response.counts[p.labels[i]] = n
            if ended:
                mention_branches.extend((d, j, p, i, n, k) for k in range(1, n + 1))
        # Round 2: the k-th mention of every label with count n, k = 1..n.
        mention_jobs = [(p.mention_prompt(i, n, k), self.max_mention_tokens, self.stop, self.logprobs)
                        for _, _, p, i, n, k in mention_branches]
        self._count("mention_requests", len(mention_jobs))
        for (d, j, p, i, n, k), (text, finish, logprob) in zip(mention_branches, self._run(mention_jobs)):
            response = responses[(d, j)]
            text, found = self._cut(text, self.stop)
            if finish == "length" and not found:
                response.truncated_mentions += 1
                continue
            prob = math.exp(logprob) if logprob is not None else 1.0
            response.mentions.append((p.labels[i], k, parse_mention(text), prob))
        return [[responses[(d, j)] for j in range(len(doc_prompts))] for d, doc_prompts in enumerate(per_doc)]

    def close(self) -> None:
        """Stop the worker threads (a later call starts new ones)."""
        if self._executor is not None:
            self._executor.shutdown(wait=False, cancel_futures=True)
            self._executor = None
