"""How long a window may be: ``max_context_tokens`` bounds the longest sequence a decoding runs for a window
(its prompt with the window's text, then the longest output it may write), so that no window needs more
positions than the model has; ``window_sentences`` bounds the sentences it holds. The cutting itself is
``text.windows``."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any, Callable, Optional, Sequence

from ..decoding.settings import DecodeSettings, SettingsError

__all__ = ["WindowBudget", "window_budget", "window_length", "check_context", "model_positions"]

# Tokens a tokenizer may add around a text beyond one per byte of it (a SentencePiece word marker, a merge
# across the template's edge): the margin of ``WindowBudget.surely_fits``.
_MARGIN = 4


@dataclass(frozen=True)
class WindowBudget:
    """What a window may hold: ``length(text)`` model tokens of at most ``max_tokens``, ``max_sentences``
    sentences at most (None: any number); ``overhead`` is ``length("")``."""

    length: Callable[[str], int]
    max_tokens: int
    max_sentences: Optional[int]
    overhead: int

    def surely_fits(self, text: str) -> bool:
        """Whether ``text`` fits, known without tokenizing it: a model token holds at least one byte of text
        (byte-level BPE, SentencePiece with byte fallback)."""
        return len(text.encode("utf-8", "surrogatepass")) + self.overhead + _MARGIN <= self.max_tokens

    def measure(self, text: str) -> int:
        """``length(text)``, or 0 for a text that surely fits, not tokenized: what ``make_windows`` needs, as it
        only compares lengths with ``max_tokens``."""
        return 0 if self.surely_fits(text) else self.length(text)


def window_budget(decoding: str, encoder: Any, labels: Sequence[str], settings: DecodeSettings,
                  autoreg_encoder: Any = None) -> WindowBudget:
    length = window_length(decoding, encoder, labels, settings, autoreg_encoder)
    return WindowBudget(length, settings.max_context_tokens, settings.window_sentences, length(""))


def window_length(decoding: str, encoder: Any, labels: Sequence[str], settings: DecodeSettings,
                  autoreg_encoder: Any = None) -> Callable[[str], int]:
    """``length(text)``: the model tokens of the longest sequence ``decoding`` runs for a window of ``text``.

    PaDeLLM: the prompt with the text, then the longest branch: a label, a count, a mention tag and a mention
    of ``max_mention_tokens`` with its EOS (drafts stay within it). AutoRegStruct: the prompt and
    ``max_new_tokens``; AutoRegAug: the text once more on top, as its output copies the text."""
    if decoding == "autoreg_struct":
        return lambda text: len(autoreg_encoder.prompt(text)) + settings.max_new_tokens
    if decoding == "autoreg_aug":
        return lambda text: (len(autoreg_encoder.prompt(text)) + autoreg_encoder.text_length(text)
                             + settings.max_new_tokens)
    branch = _longest_branch(encoder, labels, settings)
    return lambda text: len(encoder.prefixes([text])[0]) + branch


def _longest_branch(encoder: Any, labels: Sequence[str], settings: DecodeSettings) -> int:
    label = max((len(encoder.label(label)) for label in labels), default=0)
    count = max(settings.max_count_tokens, len(encoder.count(settings.max_count)))
    tag = max(len(encoder.mention_tag(k)) for k in range(settings.max_count + 1))
    return label + count + tag + settings.max_mention_tokens + 1


def model_positions(model: Any) -> Optional[int]:
    """The positions the model was built for (``max_position_embeddings``), if its config says."""
    value = getattr(getattr(model, "config", None), "max_position_embeddings", None)
    return value if isinstance(value, int) and value > 0 else None


def check_context(budget: WindowBudget, positions: Optional[int]) -> None:
    """Raise ``SettingsError`` unless windows can fit: ``max_context_tokens`` within the model's
    ``positions``, and more than the prompt and output of an empty text."""
    if positions is not None and budget.max_tokens > positions:
        raise SettingsError(f"'max_context_tokens' is {budget.max_tokens}, more than the {positions} positions "
                            f"the model has; set it to {positions} or less")
    if budget.overhead >= budget.max_tokens:
        raise SettingsError(f"'max_context_tokens' is {budget.max_tokens}, but the prompt and the longest output "
                            f"take {budget.overhead} tokens without any text; set it above {budget.overhead} "
                            "(or lower 'max_mention_tokens' or 'max_new_tokens')")
