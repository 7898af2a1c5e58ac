"""Reader of the JSONL of the PaDeLLM-NER authors.

One JSON array per line, ``[text, [start, end, mention, label], ...]``; a line without entities is
``[text]``. Files are split on ``"\\n"`` only, since some texts hold other Unicode line separators.

Offset conventions
------------------
The published sets do not agree on what ``start`` and ``end`` count. With ``tokens = text.split()``:

=================  ======================================  ===========================================
convention         text of the span                        published sets
=================  ======================================  ===========================================
token-inclusive    ``" ".join(tokens[start:end + 1])``     conll03
token-exclusive    ``" ".join(tokens[start:end])``         genia
char-inclusive     ``text[start:end + 1]``                 weibo, resume, youku, ecommerce, msra
char-exclusive     ``text[start:end]``                     (Python / spaCy style)
=================  ======================================  ===========================================

The ``mention`` string is authoritative. ``offsets="auto"`` tries every convention on every span of
the file and picks the one under which the most spans reproduce their mention (on a tie, token
conventions win for space-separated languages and character conventions for Chinese, Japanese and
Thai). A span that does not reproduce its mention under the chosen convention is reported as a
warning naming ``file:line`` and skipped. Character spans whose mention begins or ends with
whitespace (a few in ecommerce) are trimmed to their visible characters, because a spaCy span cannot
begin or end with whitespace.

Tokenisation
------------
Token offsets give ``Doc(vocab, words=tokens, spaces=...)`` with one space between tokens. Character
offsets: the text is tokenised by the language's blank pipeline (``spacy.blank("zh")`` segments
characters and needs no download), any token that a span boundary falls inside is split there, and
the spans are made with ``doc.char_span(start, end, alignment_mode="strict")``.
"""

from __future__ import annotations

import json
from pathlib import Path
from typing import Dict, Iterable, List, NamedTuple, Optional, Sequence, Tuple

from spacy.language import Language
from spacy.tokens import Doc
from tqdm import tqdm

from .raw import NO_SPACE_LANGS, ConvertError, RawDoc, SpanTuple, read_lines, words_doc

OFFSET_CONVENTIONS = ("token-inclusive", "token-exclusive", "char-inclusive", "char-exclusive")


class PadellmRecord(NamedTuple):
    line_no: int
    text: str
    spans: List[Tuple[int, int, str, str]]  # (start, end, mention, label) as in the file


def read_padellm_docs(
    path: Path, nlp: Language, offsets: str, problems: List[str], info: Dict[str, object], show_progress: bool
) -> List[RawDoc]:
    """The records of a PaDeLLM JSONL file as raw docs.

    Spans that do not reproduce their mention are appended to ``problems``; ``info`` receives the
    ``offsets`` convention used, ``offset_matches`` (with ``offsets="auto"``) and ``n_trimmed``.
    """
    if offsets != "auto" and offsets not in OFFSET_CONVENTIONS:
        raise ConvertError(f"Unknown offsets {offsets!r}; choose auto or one of: {', '.join(OFFSET_CONVENTIONS)}")
    records = read_padellm_records(path, show_progress)
    if offsets == "auto":
        offsets, matches = detect_offsets(records, nlp.lang)
        n_total = sum(len(rec.spans) for rec in records)
        if n_total and matches[offsets] == 0:
            raise ConvertError(
                f"{path}: no offset convention ({', '.join(OFFSET_CONVENTIONS)}) reproduces the mention "
                f"of any of its {n_total} spans"
            )
        info["offset_matches"] = matches
    info["offsets"] = offsets
    raws: List[RawDoc] = []
    n_trimmed = 0
    for rec in tqdm(records, desc=f"{path.name}: docs", unit="doc", disable=not show_progress, leave=False):
        raw, trimmed = _record_doc(rec, f"{path}:{rec.line_no}", nlp, offsets, problems)
        raws.append(raw)
        n_trimmed += trimmed
    info["n_trimmed"] = n_trimmed
    return raws


def _record_doc(rec: PadellmRecord, where: str, nlp: Language, offsets: str,
                problems: List[str]) -> Tuple[RawDoc, int]:
    """The raw doc of one record and how many of its spans were trimmed of whitespace."""
    kind, bound = offsets.split("-")
    extra = 1 if bound == "inclusive" else 0
    kept: List[SpanTuple] = []
    n_trimmed = 0
    tokens = rec.text.split() if kind == "token" else []
    for start, end, mention, label in rec.spans:
        got = _span_text(rec.text, tokens, start, end, offsets)
        if got != _expected(mention, offsets):
            shown = "nothing (out of range)" if got is None else repr(got)
            problems.append(
                f"{where}: span [{start}, {end}, {mention!r}, {label!r}] gives {shown} under {offsets} "
                "offsets, not its mention; skipped"
            )
            continue
        stop = end + extra
        if kind == "char":
            trimmed = _trim(rec.text, start, stop)
            if trimmed is None:
                problems.append(f"{where}: span [{start}, {end}, {mention!r}, {label!r}] is only whitespace; skipped")
                continue
            if trimmed != (start, stop):
                n_trimmed += 1
            start, stop = trimmed
        kept.append((start, stop, label))
    if kind == "token":
        return RawDoc(words_doc(nlp, tokens, space_between=True), where, kept), n_trimmed
    doc = _char_doc(nlp, rec.text, [b for s, e, _ in kept for b in (s, e)])
    spans = []
    for start, stop, label in kept:
        span = doc.char_span(start, stop, alignment_mode="strict")
        if span is None:  # cannot happen after the split in _char_doc, but never fail silently
            problems.append(f"{where}: characters [{start}, {stop}) do not align with tokens; skipped")
            continue
        spans.append((span.start, span.end, label))
    return RawDoc(doc, where, spans), n_trimmed


def read_padellm_records(path: Path, show_progress: bool) -> List[PadellmRecord]:
    """The records of a PaDeLLM JSONL file, checked for shape; blank lines are skipped."""
    records: List[PadellmRecord] = []
    lines = read_lines(path)
    for line_no, line in enumerate(
        tqdm(lines, desc=f"{path.name}: lines", unit="line", disable=not show_progress, leave=False), start=1
    ):
        if not line.strip():
            continue
        try:
            data = json.loads(line)
        except json.JSONDecodeError as err:
            raise ConvertError(f"{path}:{line_no}: not valid JSON ({err.msg}, column {err.colno})") from None
        records.append(_parse_record(data, f"{path}:{line_no}", line_no))
    if not records:
        raise ConvertError(f"{path} is empty")
    return records


def _parse_record(data: object, where: str, line_no: int) -> PadellmRecord:
    if not isinstance(data, list) or not data or not isinstance(data[0], str):
        raise ConvertError(
            f"{where}: expected a JSON array [text, [start, end, mention, label], ...], got {_short(data)}"
        )
    spans = []
    for i, item in enumerate(data[1:], start=1):
        ok = (
            isinstance(item, list)
            and len(item) == 4
            and all(isinstance(x, int) and not isinstance(x, bool) for x in item[:2])
            and isinstance(item[2], str)
            and isinstance(item[3], str)
            and item[3] != ""
        )
        if not ok:
            raise ConvertError(f"{where}: entity {i} is {_short(item)}; expected [start, end, mention, label]")
        spans.append((item[0], item[1], item[2], item[3]))
    return PadellmRecord(line_no, data[0], spans)


def detect_offsets(records: Sequence[PadellmRecord], lang: str = "en") -> Tuple[str, Dict[str, int]]:
    """The offset convention under which the most spans of ``records`` match their mention.

    Returns the convention and the number of matching spans per convention. Ties (and files without
    spans) go to token conventions, or to character conventions for languages written without spaces.
    """
    matches = {conv: 0 for conv in OFFSET_CONVENTIONS}
    for rec in records:
        tokens = rec.text.split()
        for start, end, mention, _ in rec.spans:
            for conv in OFFSET_CONVENTIONS:
                if _span_text(rec.text, tokens, start, end, conv) == _expected(mention, conv):
                    matches[conv] += 1
    preference = list(OFFSET_CONVENTIONS)
    if lang in NO_SPACE_LANGS:
        preference = preference[2:] + preference[:2]
    best = max(preference, key=lambda conv: (matches[conv], -preference.index(conv)))
    return best, matches


def _span_text(text: str, tokens: Sequence[str], start: int, end: int, convention: str) -> Optional[str]:
    """The text that (start, end) covers under ``convention``; None when out of range or empty."""
    kind, bound = convention.split("-")
    stop = end + 1 if bound == "inclusive" else end
    if start < 0 or stop <= start:
        return None
    if kind == "token":
        return " ".join(tokens[start:stop]) if stop <= len(tokens) else None
    return text[start:stop] if stop <= len(text) else None


def _expected(mention: str, convention: str) -> str:
    """The mention as a span under ``convention`` must spell it (token spans: single spaces)."""
    return " ".join(mention.split()) if convention.startswith("token") else mention


def _trim(text: str, start: int, stop: int) -> Optional[Tuple[int, int]]:
    while start < stop and text[start].isspace():
        start += 1
    while stop > start and text[stop - 1].isspace():
        stop -= 1
    return (start, stop) if start < stop else None


def _char_doc(nlp: Language, text: str, boundaries: Iterable[int]) -> Doc:
    """``nlp.make_doc(text)``, with any token that a boundary falls inside split there."""
    doc = nlp.make_doc(text)
    cuts = sorted(set(boundaries))
    edges = {tok.idx for tok in doc} | {tok.idx + len(tok) for tok in doc}
    if all(cut in edges for cut in cuts):
        return doc
    words: List[str] = []
    spaces: List[bool] = []
    for tok in doc:
        start, end = tok.idx, tok.idx + len(tok)
        points = [start] + [c for c in cuts if start < c < end] + [end]
        for a, b in zip(points, points[1:]):
            words.append(text[a:b])
            spaces.append(False)
        spaces[-1] = bool(tok.whitespace_)
    return Doc(nlp.vocab, words=words, spaces=spaces)


def _short(obj: object, limit: int = 80) -> str:
    text = json.dumps(obj, ensure_ascii=False)
    return text if len(text) <= limit else text[: limit - 3] + "..."
