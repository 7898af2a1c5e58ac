"""Handing a KV cache to a transformers model's forward pass: transformers 5.25 names the argument ``cache``
(``past_key_values`` is deprecated there and goes in 5.40), older versions ``past_key_values``."""

from __future__ import annotations

import inspect
from functools import lru_cache
from typing import Any, Dict

__all__ = ["cache_kwargs"]


@lru_cache(maxsize=None)
def _argument(forward_owner: type) -> str:
    params = inspect.signature(forward_owner.forward).parameters
    return "cache" if "cache" in params else "past_key_values"


def cache_kwargs(model: Any, cache: Any) -> Dict[str, Any]:
    """``{name: cache}`` for ``model(**inputs, **cache_kwargs(model, cache), use_cache=True)``; the cache object
    is updated in place, so callers keep using it (the output's attribute is renamed as well)."""
    return {_argument(type(model)): cache}
