"""Long docs cut into shards for the spacy-llm task: consecutive token slices of whole sentences that cover the
doc, so that the task can fuse their answers back into one doc with its exact text.

A shard holds at most ``window_sentences`` sentences (1 by default, as ``padellm_ner``'s windows: the models are
trained on single sentences), and its longest prompt fits the model's ``context_length`` in words
(spacy-llm's estimate), measured by the task's ``longest_prompt``; a ``shard_mapper`` given to the task
does the second cut instead.
"""

from __future__ import annotations

from typing import Callable, List, Optional, Sequence, Tuple

from spacy.tokens import Doc

from ..pipeline.doc_decoding import doc_sentences, text_and_tokens
from ..text.windows import make_windows

__all__ = ["check_window_sentences", "shard_doc"]


def check_window_sentences(value: Optional[int]) -> Optional[int]:
    if value is not None and (isinstance(value, bool) or not isinstance(value, int) or value < 1):
        raise ValueError(f"[spacy_padellm.NER] 'window_sentences' must be null or a positive integer, got {value!r}")
    return value


def shard_doc(doc: Doc, i_doc: int, window_sentences: Optional[int], context_length: Optional[int],
              longest_prompt: Callable[[str], str], shard_mapper: Optional[Callable] = None) -> List[Doc]:
    """``doc`` itself, or its shards: groups of ``window_sentences`` sentences, each cut again where its longest
    prompt does not fit ``context_length`` words."""
    if not doc.text.strip():
        return [doc]
    group_starts = [start for start, _ in sentences(doc)[::window_sentences or len(doc) + 1]]
    return [shard for group in slices(doc, group_starts)
            for shard in _fitting(group, i_doc, context_length, longest_prompt, shard_mapper)]


def _fitting(doc: Doc, i_doc: int, context_length: Optional[int], longest_prompt: Callable[[str], str],
             shard_mapper: Optional[Callable]) -> List[Doc]:
    """``doc`` itself, or shards of whole sentences whose longest prompt fits ``context_length`` words."""
    if context_length is None or not doc.text.strip():
        return [doc]
    if shard_mapper is not None:
        render = lambda shard, i_shard, i, n_shards: longest_prompt(shard.text)  # noqa: E731
        return list(shard_mapper(doc, i_doc, context_length, render))

    def length(text: str) -> int:
        return int(len(longest_prompt(text).split()) * 1.1)  # spacy-llm's estimate and buffer

    if length(doc.text) <= context_length:
        return [doc]
    text, tokens = text_and_tokens(doc)
    windows = make_windows(text, doc_sentences(doc, text, tokens), tokens, length, context_length)
    return slices(doc, [start for start, _ in windows])


def sentences(doc: Doc) -> List[Tuple[int, int]]:
    """The doc's sentences as character offsets (``pipeline.doc_decoding.doc_sentences``)."""
    return doc_sentences(doc, *text_and_tokens(doc))


def slices(doc: Doc, starts: Sequence[int]) -> List[Doc]:
    """``doc`` cut before the tokens that begin at the character offsets ``starts``: consecutive token slices
    covering it (the doc itself when there is nothing to cut)."""
    first_token = {t.idx: t.i for t in doc}
    bounds = sorted({0} | {first_token[start] for start in starts if start in first_token}) + [len(doc)]
    if len(bounds) == 2:
        return [doc]
    return [doc[a:b].as_doc(copy_user_data=True) for a, b in zip(bounds, bounds[1:]) if b > a]
