"""Whether spaCy is building a component from a whole pipeline config (``spacy.load``, ``spacy train``)
rather than from ``add_pipe``: a saved pipeline's model comes with ``from_disk`` after the component is
built, so the model path its config names need not exist yet."""

from __future__ import annotations

import sys

from spacy.language import Language

__all__ = ["building_from_config"]

_FROM_CONFIG = Language.from_config.__func__.__code__


def building_from_config() -> bool:
    """True when ``Language.from_config`` is on the call stack (``spacy.blank`` returns before ``add_pipe``)."""
    frame = sys._getframe(1)
    while frame is not None:
        if frame.f_code is _FROM_CONFIG:
            return True
        frame = frame.f_back
    return False
