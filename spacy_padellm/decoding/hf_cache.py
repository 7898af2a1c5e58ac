"""Handing a KV cache to a transformers model's forward pass: transformers 5.25 names the argument ``cache``
(``past_key_values`` is deprecated there and goes in 5.40), older versions ``past_key_values``."""

from __future__ import annotations

import inspect
from functools import lru_cache
from typing import Any, Dict

__all__ = ["cache_kwargs", "returned_cache"]


@lru_cache(maxsize=None)
def _argument(forward_owner: type) -> str:
    params = inspect.signature(forward_owner.forward).parameters
    return "cache" if "cache" in params else "past_key_values"


def cache_kwargs(model: Any, cache: Any) -> Dict[str, Any]:
    """``{name: cache}`` for ``model(**inputs, **cache_kwargs(model, cache), use_cache=True)``."""
    return {_argument(type(model)): cache}


def returned_cache(output: Any, cache: Any) -> Any:
    """The cache a forward pass returned (under either name; read as a mapping, which warns of no deprecation), or
    ``cache`` itself, which transformers' caches update in place."""
    for key in ("cache", "past_key_values"):
        found = output.get(key) if hasattr(output, "get") else None
        if found is not None:
            return found
    return cache
