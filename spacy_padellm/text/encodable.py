"""Text a tokenizer can encode (no torch, no spaCy).

A Python string may hold code points that UTF-8 cannot hold: lone surrogates (U+D800 to U+DFFF), which
reach a doc from ``errors="surrogateescape"`` reads or from JSON escapes such as ``"\\ud800"``. A fast
tokenizer raises ``UnicodeEncodeError`` on them. ``encodable`` replaces each with U+FFFD, one character for
one, so every offset of the model's view is an offset of the original text and spans map back unchanged.
"""

from __future__ import annotations

import re
from typing import Tuple

__all__ = ["REPLACEMENT", "encodable"]

REPLACEMENT = "\ufffd"
_UNENCODABLE = re.compile("[\ud800-\udfff]")


def encodable(text: str) -> Tuple[str, int]:
    """``text`` with every code point UTF-8 cannot encode replaced by U+FFFD (same length), and how many."""
    return _UNENCODABLE.subn(REPLACEMENT, text)
