"""Text spaCy's tokenizer can take: lone surrogates replaced before it sees them.

spaCy's tokenizer raises ``UnicodeEncodeError`` on a text holding a lone surrogate (``"\\ud800"``, from
``surrogateescape`` reads or JSON escapes), in ``Language.make_doc``, before any component runs: ``nlp(text)``
fails and ``nlp.pipe`` loses every doc of its call. ``padellm_ner`` wraps ``nlp.tokenizer`` in a
``SafeTokenizer`` (``guard_tokenizer``): a text UTF-8 can hold goes to the tokenizer unchanged; any other has
each lone surrogate replaced by U+FFFD, one character for one (``text.encodable``), and the doc records how
many (``replaced_count``). Everything else (``pipe``, serialisation, attributes read or set, pickling) is the
wrapped tokenizer's; ``nlp.tokenizer = other`` later removes the guard.
"""

from __future__ import annotations

from collections import deque
from typing import Any, Iterable, Iterator, Tuple

from spacy.language import Language
from spacy.tokens import Doc

from ..text.encodable import encodable

__all__ = ["REPLACED_KEY", "SafeTokenizer", "guard_tokenizer", "replaced_count"]

REPLACED_KEY = "padellm_replaced"  # doc.user_data: the characters replaced by U+FFFD, when any were


def guard_tokenizer(nlp: Language) -> None:
    """Wrap ``nlp.tokenizer`` in a ``SafeTokenizer``, unless it is one already."""
    if not isinstance(nlp.tokenizer, SafeTokenizer):
        nlp.tokenizer = SafeTokenizer(nlp.tokenizer)


def replaced_count(doc: Doc) -> int:
    """How many characters of the text were replaced by U+FFFD before ``doc`` was made."""
    return doc.user_data.get(REPLACED_KEY, 0)


def _clean(text: Any) -> Tuple[Any, int]:
    """``text`` UTF-8 can hold (unchanged when it already can), and how many characters were replaced."""
    if not isinstance(text, str) or text.isascii():
        return text, 0
    try:
        text.encode("utf-8")
    except UnicodeEncodeError:
        return encodable(text)
    return text, 0


def _marked(doc: Doc, replaced: int) -> Doc:
    if replaced:
        doc.user_data[REPLACED_KEY] = replaced
    return doc


class SafeTokenizer:
    """A tokenizer that takes any ``str``: the wrapped one (``inner``) on the text with lone surrogates
    replaced. Attributes not its own are read from and written to ``inner``."""

    __slots__ = ("inner",)

    def __init__(self, inner: Any):
        object.__setattr__(self, "inner", inner)

    def __call__(self, text: str) -> Doc:
        text, replaced = _clean(text)
        return _marked(self.inner(text), replaced)

    def pipe(self, texts: Iterable[str], *args: Any, **kwargs: Any) -> Iterator[Doc]:
        counts: deque = deque()

        def cleaned():
            for text in texts:
                text, replaced = _clean(text)
                counts.append(replaced)
                yield text

        for doc in self.inner.pipe(cleaned(), *args, **kwargs):
            yield _marked(doc, counts.popleft())

    # Serialisation is the wrapped tokenizer's: the files and bytes are its own, ``from_*`` keeps the guard.
    def to_disk(self, path, **kwargs: Any) -> None:
        self.inner.to_disk(path, **kwargs)

    def from_disk(self, path, **kwargs: Any) -> "SafeTokenizer":
        self.inner.from_disk(path, **kwargs)
        return self

    def to_bytes(self, **kwargs: Any) -> bytes:
        return self.inner.to_bytes(**kwargs)

    def from_bytes(self, bytes_data: bytes, **kwargs: Any) -> "SafeTokenizer":
        self.inner.from_bytes(bytes_data, **kwargs)
        return self

    def __getattr__(self, name: str) -> Any:
        if name == "inner":  # not set yet (while unpickling): no recursion through self.inner
            raise AttributeError(name)
        return getattr(self.inner, name)

    def __setattr__(self, name: str, value: Any) -> None:
        setattr(self.inner, name, value)

    def __delattr__(self, name: str) -> None:
        delattr(self.inner, name)

    def __reduce__(self):
        return (SafeTokenizer, (self.inner,))

    def __repr__(self) -> str:
        return f"SafeTokenizer({self.inner!r})"
