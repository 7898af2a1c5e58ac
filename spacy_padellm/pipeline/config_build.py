"""Whether spaCy is building a component from a whole pipeline config (``spacy.load``, ``spacy train``,
``spacy.util.load_model_from_config``) rather than from ``add_pipe``.

Why it matters: a saved pipeline's config names the model path the pipeline was built with, and its model comes
with ``from_disk`` after the component is built, so under a config that path need not exist yet; under
``add_pipe`` a missing path is an error at once, before any weights load.

Why the call stack: spaCy gives a factory no sign of which call built it. ``Language.from_config`` adds each
component with ``nlp.add_pipe(factory, name=..., config=..., raw_config=...)``, and ``Language.create_pipe``
hands the factory the resolved config with ``nlp`` and ``name`` only, the same for both calls (spaCy 3.x). So
``Language.from_config`` on the call stack is the sign. ``spacy.blank`` runs ``from_config`` too, but it has
returned before any ``add_pipe`` on the blank pipeline.
"""

from __future__ import annotations

import sys

from spacy.language import Language

__all__ = ["building_from_config"]

_FROM_CONFIG = Language.from_config.__func__.__code__


def building_from_config() -> bool:
    """True when ``Language.from_config`` is on the call stack."""
    frame = sys._getframe(1)
    while frame is not None and frame.f_code is not _FROM_CONFIG:
        frame = frame.f_back
    return frame is not None
