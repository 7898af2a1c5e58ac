"""What every reader returns, and the helpers the readers share.

A reader turns one input file into :class:`RawDoc` objects: a ``Doc`` without spans set, where it
came from (``file:line``, for messages), and its spans as ``(start token, end token exclusive,
label)``. :func:`~spacy_padellm.training.spans.set_doc_spans` then filters the spans and sets them
on the docs.
"""

from __future__ import annotations

import warnings
from pathlib import Path
from typing import List, NamedTuple, Sequence, Tuple

from spacy.language import Language
from spacy.tokens import Doc

SpanTuple = Tuple[int, int, str]  # (start token, end token exclusive, label)

# Languages written without spaces between words: column tokens are joined without a space, and
# character offsets are preferred when ``offsets="auto"`` finds a tie.
NO_SPACE_LANGS = frozenset({"zh", "ja", "th"})
_MAX_WARNINGS = 20


class ConvertError(ValueError):
    """Input that cannot be converted; the message names the file (and line) at fault."""


class ConvertWarning(UserWarning):
    """A span that was skipped during conversion."""


class RawDoc(NamedTuple):
    """One doc before its spans are set: the spans are (start, end, label) token offsets."""

    doc: Doc
    where: str  # "file:line" of the doc, for messages
    spans: List[SpanTuple]


def read_lines(path: Path) -> List[str]:
    """The lines of a UTF-8 file split on "\\n" only (other Unicode line breaks may sit inside texts)."""
    try:
        with open(path, encoding="utf-8-sig", newline="") as f:
            content = f.read()
    except UnicodeDecodeError as err:
        raise ConvertError(f"{path} is not UTF-8 text ({err.reason} at byte {err.start})") from None
    if not content.strip():
        raise ConvertError(f"{path} is empty")
    return [line[:-1] if line.endswith("\r") else line for line in content.split("\n")]


def words_doc(nlp: Language, words: Sequence[str], space_between: bool) -> Doc:
    """A Doc of ``words``, one space between them when ``space_between``, none after the last."""
    spaces = [space_between] * len(words)
    if spaces:
        spaces[-1] = False
    return Doc(nlp.vocab, words=list(words), spaces=spaces)


def warn_skipped(problems: Sequence[str]) -> None:
    """One :class:`ConvertWarning` per skipped span, the first few only, then a count of the rest."""
    for message in problems[:_MAX_WARNINGS]:
        warnings.warn(message, ConvertWarning, stacklevel=3)
    if len(problems) > _MAX_WARNINGS:
        warnings.warn(
            f"... and {len(problems) - _MAX_WARNINGS} more skipped spans (ConvertReport.problems lists them all)",
            ConvertWarning,
            stacklevel=3,
        )
