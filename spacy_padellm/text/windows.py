"""Split a long text into sentence-aligned windows that fit the model's context (no torch, no spaCy).

Units (sentences, or tokens of a sentence that is itself too long) are packed greedily into windows
whose length, measured by ``length_fn`` (model tokens), stays within ``max_len``, and that hold at most
``max_sentences`` units when it is given. Each window is a (start, end) character range of the original
text, so spans found in a window map back by adding its start.
"""

from __future__ import annotations

from typing import Callable, List, Optional, Sequence, Tuple

__all__ = ["make_windows", "model_view", "sentences_from_tokens", "SENTENCE_END"]

Mapping = List[Tuple[int, int, int, int]]

SENTENCE_END = {".", "!", "?", "。", "！", "？", "…", ";", "；"}


def _split_long(unit: Tuple[int, int], tokens: Sequence[Tuple[int, int]], text: str,
                length_fn: Callable[[str], int], max_len: int) -> List[Tuple[int, int]]:
    inside = [t for t in tokens if t[0] >= unit[0] and t[1] <= unit[1]]
    pieces: List[Tuple[int, int]] = []
    start = None
    end = None
    for tok_start, tok_end in inside:
        if start is None:
            start, end = tok_start, tok_end
            continue
        if length_fn(text[start:tok_end]) > max_len:
            pieces.append((start, end))
            start = tok_start
        end = tok_end
    if start is not None:
        pieces.append((start, end))
    return pieces or [unit]


def make_windows(
    text: str,
    sentences: Sequence[Tuple[int, int]],
    tokens: Sequence[Tuple[int, int]],
    length_fn: Callable[[str], int],
    max_len: int,
    max_sentences: Optional[int] = None,
) -> List[Tuple[int, int]]:
    """Windows of whole sentences, each at most ``max_len`` by ``length_fn`` when possible and of at most
    ``max_sentences`` sentences (None: as many as fit)."""
    if not text.strip():
        return []
    if (max_sentences is None or len(sentences) <= max_sentences) and length_fn(text) <= max_len:
        return [(0, len(text))]
    units: List[Tuple[int, int]] = []
    for sent in sentences:
        if length_fn(text[sent[0]:sent[1]]) > max_len:
            units.extend(_split_long(sent, tokens, text, length_fn, max_len))
        else:
            units.append(sent)
    windows: List[Tuple[int, int]] = []
    cur_start, cur_end, held = None, None, 0
    for start, end in units:
        if cur_start is None:
            cur_start, cur_end, held = start, end, 1
        elif (max_sentences is None or held < max_sentences) and length_fn(text[cur_start:end]) <= max_len:
            cur_end, held = end, held + 1
        else:
            windows.append((cur_start, cur_end))
            cur_start, cur_end, held = start, end, 1
    if cur_start is not None:
        windows.append((cur_start, cur_end))
    return [w for w in windows if text[w[0]:w[1]].strip()]


def sentences_from_tokens(tokens: Sequence[Tuple[int, int, str]]) -> List[Tuple[int, int]]:
    """Sentence ranges from (start, end, text) tokens, ending at sentence-final punctuation."""
    sents: List[Tuple[int, int]] = []
    start = None
    for tok_start, tok_end, tok_text in tokens:
        if start is None:
            start = tok_start
        if tok_text in SENTENCE_END:
            sents.append((start, tok_end))
            start = None
    if start is not None:
        sents.append((start, tokens[-1][1]))
    return sents


def model_view(text: str, tokens: Sequence[Tuple[int, str]], start: int, end: int,
               text_format: str = "raw") -> Tuple[str, Mapping]:
    """The text a model reads for ``text[start:end]``, and per token (start, end in that text, start, end in
    ``text``). ``tokens`` are (char offset, token text) of the non-space tokens; ``text_format`` "raw" keeps
    the text as it is, "tokens" joins the tokens with single spaces (CoNLL-style)."""
    inside = [(idx, tok) for idx, tok in tokens if idx >= start and idx + len(tok) <= end]
    if text_format == "tokens":
        pieces: List[str] = []
        mapping: Mapping = []
        pos = 0
        for idx, tok in inside:
            if pieces:
                pieces.append(" ")
                pos += 1
            pieces.append(tok)
            mapping.append((pos, pos + len(tok), idx, idx + len(tok)))
            pos += len(tok)
        return "".join(pieces), mapping
    return text[start:end], [(idx - start, idx + len(tok) - start, idx, idx + len(tok)) for idx, tok in inside]
