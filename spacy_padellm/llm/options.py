"""What the two spacy-llm model backends share: the default prompt length before docs are sharded and
the check of their numeric options."""

from __future__ import annotations

from typing import Any

__all__ = ["DEFAULT_CONTEXT_LENGTH", "check_positive"]

DEFAULT_CONTEXT_LENGTH = 512


def check_positive(name: str, **values: Any) -> None:
    """A ValueError naming the backend ``name`` and the option unless every value is a positive number."""
    for key, value in values.items():
        if isinstance(value, bool) or not isinstance(value, (int, float)) or value <= 0:
            raise ValueError(f"[{name}] '{key}' must be a positive number, got {value!r}")
