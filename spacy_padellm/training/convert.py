"""Convert NER corpora into spaCy DocBins and PaDeLLM training examples.

Input formats
-------------
``spacy``
    A DocBin (``.spacy``). The spans are ``doc.ents``, or ``doc.spans[spans_key]`` when a
    ``spans_key`` is given.
``conll``
    Column files: one token per line with its tag in the LAST column (tab or space separated), a
    blank line between sentences, ``-DOCSTART-`` lines skipped. Any label names. The tags follow
    one of three schemes:

    * BIO (IOB2): every entity starts with ``B-``;
    * IOB1: entities start with ``I-``; ``B-`` only separates two adjacent entities of one label;
    * BIOES: ``S-`` marks a one-token entity and ``E-`` the last token of a longer one (BILOU's
      ``L-``/``U-`` are read as ``E-``/``S-``).

    ``scheme="auto"`` reports BIOES if any ``S-``/``E-`` tag occurs, IOB1 if some ``I-`` tag starts
    an entity (it follows neither ``B-`` nor ``I-`` of its label), else BIO. One tolerant decoder
    reads all three (``B-`` and ``S-`` always start an entity, ``I-``/``E-`` continue one of their
    label or else start one, ``E-``/``S-``/``O`` end one), so the scheme only decides which tag
    prefixes are allowed when it is given explicitly.
``padellm``
    The JSONL of the PaDeLLM-NER authors: one JSON array per line,
    ``[text, [start, end, mention, label], ...]``; a line without entities is ``[text]``. Files are
    split on ``"\\n"`` only, since some texts hold other Unicode line separators.

Offset conventions of the padellm format
----------------------------------------
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
Token data (column files, token offsets) becomes ``Doc(vocab, words=tokens, spaces=...)`` with one
space between tokens, so ``doc.text == " ".join(tokens)``; for Chinese, Japanese and Thai column
files the tokens are joined without spaces. Character data is tokenised by the language's blank
pipeline (``spacy.blank("zh")`` segments characters and needs no download), any token that a span
boundary falls inside is split there, and the spans are made with
``doc.char_span(start, end, alignment_mode="strict")``.

Outputs
-------
:func:`convert` writes into ``output_dir``, named after the input's stem:

* ``{stem}.spacy``: a DocBin. Flat data is in ``doc.ents``. When a ``spans_key`` is given, or the
  file has overlapping (nested) spans, all spans go to ``doc.spans[spans_key or "sc"]`` and
  ``doc.ents`` holds the non-overlapping subset (longest first, :func:`spacy.util.filter_spans`).
* ``{stem}.padellm.jsonl``: one :class:`~spacy_padellm.text.protocol.TrainingExample` per line, built with
  :func:`~spacy_padellm.text.protocol.build_examples` from the spans in reading order.
* ``{stem}.labels.json``: the label set (the ``labels`` argument, else the labels seen, sorted).
"""

from __future__ import annotations

import json
import re
import sys
import warnings
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Iterable, Iterator, List, Mapping, NamedTuple, Optional, Sequence, Tuple, Union

import spacy
from spacy.language import Language
from spacy.tokens import Doc, DocBin, Span
from spacy.util import filter_spans
from tqdm import tqdm

from ..text.protocol import TrainingExample, build_examples

__all__ = [
    "FORMATS",
    "OFFSET_CONVENTIONS",
    "SCHEMES",
    "NESTED_SPANS_KEY",
    "ConvertError",
    "ConvertWarning",
    "ConvertReport",
    "ReadResult",
    "PadellmRecord",
    "convert",
    "read_docs",
    "docs_to_examples",
    "doc_spans",
    "detect_format",
    "detect_offsets",
    "detect_scheme",
    "tags_to_spans",
]

FORMATS = ("conll", "padellm", "spacy")
OFFSET_CONVENTIONS = ("token-inclusive", "token-exclusive", "char-inclusive", "char-exclusive")
SCHEMES = ("bio", "iob1", "bioes")
NESTED_SPANS_KEY = "sc"
"""The span group that holds all spans of nested data when no ``spans_key`` is given."""

_SCHEME_ALIASES = {"iob2": "bio", "bilou": "bioes", "iobes": "bioes"}
# Languages written without spaces between words: column tokens are joined without a space, and
# character offsets are preferred when ``offsets="auto"`` finds a tie.
_NO_SPACE_LANGS = frozenset({"zh", "ja", "th"})
_MAX_WARNINGS = 20
_TAG_RE = re.compile(r"^([BIESLU])-(\S.*)$")
_PREFIX = {"B": "B", "I": "I", "E": "E", "L": "E", "S": "S", "U": "S"}
# Line breaks that str.splitlines() honours but JSON does not escape: written as \\u escapes so the
# output JSONL survives any line splitter.
_LINE_BREAK_ESCAPES = {"\x85": "\\u0085", "\u2028": "\\u2028", "\u2029": "\\u2029"}

PathLike = Union[str, Path]
SpanTuple = Tuple[int, int, str]  # (start token, end token exclusive, label)


class ConvertError(ValueError):
    """Input that cannot be converted; the message names the file (and line) at fault."""


class ConvertWarning(UserWarning):
    """A span that was skipped during conversion."""


@dataclass
class ConvertReport:
    """What :func:`convert` read and wrote."""

    input: Path
    fmt: str
    offsets: Optional[str]  # the padellm offset convention used; None for other formats
    n_docs: int
    n_spans: int  # spans written
    n_skipped: int  # spans dropped because they did not match their mention (or were duplicates)
    n_examples: int
    labels: List[str]
    nested: bool
    outputs: List[Path] = field(default_factory=list)
    scheme: Optional[str] = None  # the tag scheme of a conll file
    spans_key: Optional[str] = None  # the span group holding all spans; None: doc.ents
    n_trimmed: int = 0  # character spans trimmed of surrounding whitespace
    n_filtered: int = 0  # spans dropped because their label is not in ``labels``
    problems: List[str] = field(default_factory=list)  # one message per skipped span

    def summary(self) -> str:
        how = self.fmt
        if self.offsets:
            how += f", offsets {self.offsets}"
        if self.scheme:
            how += f", scheme {self.scheme.upper()}"
        lines = [
            f"Converted {self.input} ({how}): {self.n_docs} docs, {self.n_spans} spans, "
            f"{self.n_examples} examples",
            f"  labels ({len(self.labels)}): {', '.join(self.labels)}",
        ]
        if self.nested or self.spans_key:
            where = f"doc.spans[{self.spans_key!r}]" if self.spans_key else "doc.ents"
            kind = "nested spans" if self.nested else "spans"
            lines.append(f"  all {kind} in {where}; doc.ents holds the non-overlapping ones")
        if self.n_trimmed:
            lines.append(f"  {self.n_trimmed} spans trimmed of surrounding whitespace")
        if self.n_filtered:
            lines.append(f"  {self.n_filtered} spans dropped: label not in the label set")
        lines.append(f"  {self.n_skipped} spans skipped" + (" (see the warnings)" if self.n_skipped else ""))
        lines.extend(f"  -> {path}" for path in self.outputs)
        return "\n".join(lines)


@dataclass
class ReadResult:
    """Docs read by :func:`read_docs`, with their spans set, and what was found on the way."""

    docs: List[Doc]
    fmt: str
    labels: List[str]
    spans_key: Optional[str]  # where all spans are: a span group, or None for doc.ents
    nested: bool
    n_spans: int
    n_skipped: int = 0
    n_trimmed: int = 0
    n_filtered: int = 0
    offsets: Optional[str] = None
    offset_matches: Dict[str, int] = field(default_factory=dict)  # spans matched per convention
    scheme: Optional[str] = None
    problems: List[str] = field(default_factory=list)


class _Raw(NamedTuple):
    """One doc before its spans are set: the spans are (start, end, label) token offsets."""

    doc: Doc
    where: str  # "file:line" of the doc, for messages
    spans: List[SpanTuple]


class PadellmRecord(NamedTuple):
    line_no: int
    text: str
    spans: List[Tuple[int, int, str, str]]  # (start, end, mention, label) as in the file


# --------------------------------------------------------------------------------------------------
# Public API


def convert(
    input_path: PathLike,
    output_dir: PathLike,
    *,
    fmt: Optional[str] = None,
    lang: str = "en",
    labels: Optional[Sequence[str]] = None,
    spans_key: Optional[str] = None,
    offsets: str = "auto",
    scheme: str = "auto",
    label_map: Optional[Mapping[str, str]] = None,
    show_progress: bool = True,
) -> ConvertReport:
    """Convert one NER file into ``{stem}.spacy``, ``{stem}.padellm.jsonl`` and ``{stem}.labels.json``.

    ``fmt`` is ``"conll"``, ``"padellm"`` or ``"spacy"`` (None: from the extension or content);
    ``lang`` picks the blank spaCy pipeline; ``labels`` fixes the label set and its order (spans of
    other labels are dropped); ``spans_key`` reads (spacy input) and writes all spans in
    ``doc.spans[spans_key]``; ``offsets`` is a padellm offset convention or ``"auto"``; ``scheme``
    is ``"bio"``, ``"iob1"``, ``"bioes"`` or ``"auto"`` for conll files; ``label_map`` renames labels.
    With ``show_progress`` a progress bar is shown and the number of skipped spans printed at the end.
    """
    path = Path(input_path)
    out_dir = Path(output_dir)
    result = read_docs(
        path,
        lang,
        fmt=fmt,
        labels=labels,
        spans_key=spans_key,
        offsets=offsets,
        scheme=scheme,
        label_map=label_map,
        show_progress=show_progress,
    )
    out_dir.mkdir(parents=True, exist_ok=True)
    stem = path.stem
    docbin_path = out_dir / f"{stem}.spacy"
    examples_path = out_dir / f"{stem}.padellm.jsonl"
    labels_path = out_dir / f"{stem}.labels.json"
    if docbin_path.resolve() == path.resolve():
        raise ConvertError(f"Writing {docbin_path} would overwrite the input; choose another output folder")

    DocBin(docs=result.docs, store_user_data=False).to_disk(docbin_path)
    n_examples = 0
    with open(examples_path, "w", encoding="utf-8", newline="\n") as f:
        for example in _iter_examples(result.docs, result.labels, result.spans_key):
            f.write(_json_line(example.to_dict()))
            n_examples += 1
    labels_path.write_text(json.dumps(result.labels, ensure_ascii=False, indent=2) + "\n", encoding="utf-8")

    report = ConvertReport(
        input=path,
        fmt=result.fmt,
        offsets=result.offsets,
        n_docs=len(result.docs),
        n_spans=result.n_spans,
        n_skipped=result.n_skipped,
        n_examples=n_examples,
        labels=list(result.labels),
        nested=result.nested,
        outputs=[docbin_path, examples_path, labels_path],
        scheme=result.scheme,
        spans_key=result.spans_key,
        n_trimmed=result.n_trimmed,
        n_filtered=result.n_filtered,
        problems=list(result.problems),
    )
    if show_progress:
        print(f"{path.name}: {report.n_skipped} span(s) skipped", file=sys.stderr)
    return report


def read_docs(
    path: PathLike,
    nlp: Union[Language, str] = "en",
    *,
    fmt: Optional[str] = None,
    labels: Optional[Sequence[str]] = None,
    spans_key: Optional[str] = None,
    offsets: str = "auto",
    scheme: str = "auto",
    label_map: Optional[Mapping[str, str]] = None,
    show_progress: bool = False,
) -> ReadResult:
    """Read an NER file into Docs with their spans set (see the module docstring for the layout).

    ``nlp`` is a Language or a language code for :func:`spacy.blank`. The other arguments are those
    of :func:`convert`. Skipped spans are reported as :class:`ConvertWarning` after reading.
    """
    path = Path(path)
    if not path.exists():
        raise ConvertError(f"{path} does not exist")
    if path.is_dir():
        raise ConvertError(f"{path} is a folder; give one file")
    fmt = detect_format(path) if fmt is None else fmt.lower()
    if fmt not in FORMATS:
        raise ConvertError(f"Unknown format {fmt!r}; the formats are: {', '.join(FORMATS)}")
    nlp = _get_nlp(nlp)
    problems: List[str] = []
    info: Dict[str, object] = {}
    if fmt == "padellm":
        raws = _read_padellm_docs(path, nlp, offsets, problems, info, show_progress)
    elif fmt == "conll":
        raws = _read_conll_docs(path, nlp, scheme, info, show_progress)
    else:
        raws = _read_docbin_docs(path, nlp, spans_key, show_progress)
    result = _finish(raws, fmt, labels, spans_key, label_map, problems)
    result.offsets = info.get("offsets")  # type: ignore[assignment]
    result.offset_matches = info.get("offset_matches", {})  # type: ignore[assignment]
    result.scheme = info.get("scheme")  # type: ignore[assignment]
    result.n_trimmed = int(info.get("n_trimmed", 0))  # type: ignore[arg-type]
    _emit_warnings(problems)
    return result


def doc_spans(doc: Doc, spans_key: Optional[str] = None) -> List[Span]:
    """The spans of a doc in reading order (start, then end): ``doc.spans[spans_key]`` or ``doc.ents``."""
    if spans_key is None:
        spans = list(doc.ents)
    else:
        spans = list(doc.spans[spans_key]) if spans_key in doc.spans else []
    return sorted(spans, key=lambda span: (span.start, span.end))


def docs_to_examples(
    docs: Iterable[Doc], labels: Optional[Sequence[str]] = None, spans_key: Optional[str] = None
) -> List[TrainingExample]:
    """The PaDeLLM training examples of ``docs``: one per (label, mention), a count-0 one per empty label.

    The spans are ``doc.ents``, or ``doc.spans[spans_key]`` (use :data:`NESTED_SPANS_KEY` for nested
    data converted without a key). ``labels`` defaults to the sorted labels of the spans; a span
    whose label is not in ``labels`` raises ``ValueError``.
    """
    docs = list(docs)
    if labels is None:
        labels = sorted({span.label_ for doc in docs for span in doc_spans(doc, spans_key)})
    return list(_iter_examples(docs, labels, spans_key))


def detect_format(path: PathLike) -> str:
    """``"spacy"`` for ``.spacy``, ``"padellm"`` for ``.jsonl`` or a file of JSON arrays, else ``"conll"``."""
    path = Path(path)
    suffix = path.suffix.lower()
    if suffix == ".spacy":
        return "spacy"
    if suffix in (".jsonl", ".json"):
        return "padellm"
    try:
        with open(path, encoding="utf-8-sig", newline="\n") as f:
            for line in f:
                if line.strip():
                    try:
                        return "padellm" if isinstance(json.loads(line), list) else "conll"
                    except json.JSONDecodeError:
                        return "conll"
    except (OSError, UnicodeDecodeError):
        pass
    return "conll"


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
    if lang in _NO_SPACE_LANGS:
        preference = preference[2:] + preference[:2]
    best = max(preference, key=lambda conv: (matches[conv], -preference.index(conv)))
    return best, matches


def detect_scheme(tag_sequences: Iterable[Sequence[str]]) -> str:
    """``"bioes"`` if any S-/E- (or U-/L-) tag occurs, ``"iob1"`` if an I- tag starts an entity, else ``"bio"``."""
    iob1 = False
    for tags in tag_sequences:
        prev_label: Optional[str] = None  # label of the B-/I- tag before, None after O
        for tag in tags:
            prefix, label = _split_tag(tag)
            if prefix in ("E", "S"):
                return "bioes"
            if prefix == "I" and label != prev_label:
                iob1 = True
            prev_label = label if prefix in ("B", "I") else None
    return "iob1" if iob1 else "bio"


def tags_to_spans(tags: Sequence[str]) -> List[SpanTuple]:
    """(start, end exclusive, label) entities of a BIO, IOB1 or BIOES tag sequence, read tolerantly.

    ``B-``/``S-`` start an entity; ``I-``/``E-`` continue an open entity of their label or else start
    one; ``E-``, ``S-`` and ``O`` close the open entity.
    """
    spans: List[SpanTuple] = []
    start: Optional[int] = None
    label: Optional[str] = None

    def close(end: int) -> None:
        nonlocal start, label
        if start is not None:
            spans.append((start, end, label))  # type: ignore[arg-type]
        start, label = None, None

    for i, tag in enumerate(tags):
        prefix, tag_label = _split_tag(tag)
        if prefix == "O":
            close(i)
            continue
        continues = start is not None and label == tag_label and prefix in ("I", "E")
        if not continues:
            close(i)
            start, label = i, tag_label
        if prefix in ("E", "S"):
            close(i + 1)
    close(len(tags))
    return spans


# --------------------------------------------------------------------------------------------------
# Readers: each returns _Raw docs with token-offset spans


def _read_padellm_docs(
    path: Path, nlp: Language, offsets: str, problems: List[str], info: Dict[str, object], show_progress: bool
) -> List[_Raw]:
    if offsets != "auto" and offsets not in OFFSET_CONVENTIONS:
        raise ConvertError(f"Unknown offsets {offsets!r}; choose auto or one of: {', '.join(OFFSET_CONVENTIONS)}")
    records = _read_padellm_records(path, show_progress)
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
    kind, bound = offsets.split("-")
    extra = 1 if bound == "inclusive" else 0
    raws: List[_Raw] = []
    n_trimmed = 0
    for rec in tqdm(records, desc=f"{path.name}: docs", unit="doc", disable=not show_progress, leave=False):
        where = f"{path}:{rec.line_no}"
        kept: List[Tuple[int, int, str]] = []
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
                    problems.append(
                        f"{where}: span [{start}, {end}, {mention!r}, {label!r}] is only whitespace; skipped"
                    )
                    continue
                if trimmed != (start, stop):
                    n_trimmed += 1
                start, stop = trimmed
            kept.append((start, stop, label))
        if kind == "token":
            doc = _words_doc(nlp, tokens, space_between=True)
            spans = kept
        else:
            doc = _char_doc(nlp, rec.text, [b for s, e, _ in kept for b in (s, e)])
            spans = []
            for start, stop, label in kept:
                span = doc.char_span(start, stop, alignment_mode="strict")
                if span is None:  # cannot happen after the split in _char_doc, but never fail silently
                    problems.append(f"{where}: characters [{start}, {stop}) do not align with tokens; skipped")
                    continue
                spans.append((span.start, span.end, label))
        raws.append(_Raw(doc, where, spans))
    info["n_trimmed"] = n_trimmed
    return raws


def _read_padellm_records(path: Path, show_progress: bool) -> List[PadellmRecord]:
    records: List[PadellmRecord] = []
    lines = _read_lines(path)
    for line_no, line in enumerate(
        tqdm(lines, desc=f"{path.name}: lines", unit="line", disable=not show_progress, leave=False), start=1
    ):
        if not line.strip():
            continue
        try:
            data = json.loads(line)
        except json.JSONDecodeError as err:
            raise ConvertError(f"{path}:{line_no}: not valid JSON ({err.msg}, column {err.colno})") from None
        records.append(_parse_padellm_record(data, f"{path}:{line_no}", line_no))
    if not records:
        raise ConvertError(f"{path} is empty")
    return records


def _parse_padellm_record(data: object, where: str, line_no: int) -> PadellmRecord:
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


def _read_conll_docs(
    path: Path, nlp: Language, scheme: str, info: Dict[str, object], show_progress: bool
) -> List[_Raw]:
    scheme = scheme.lower()
    scheme = _SCHEME_ALIASES.get(scheme, scheme)
    if scheme != "auto" and scheme not in SCHEMES:
        raise ConvertError(f"Unknown tag scheme {scheme!r}; choose auto or one of: {', '.join(SCHEMES)}")
    sentences: List[Tuple[int, List[str], List[str]]] = []  # (first line, tokens, tags)
    tokens: List[str] = []
    tags: List[str] = []
    first = 0

    def flush() -> None:
        nonlocal tokens, tags
        if tokens:
            sentences.append((first, tokens, tags))
        tokens, tags = [], []

    lines = _read_lines(path)
    for line_no, line in enumerate(
        tqdm(lines, desc=f"{path.name}: lines", unit="line", disable=not show_progress, leave=False), start=1
    ):
        fields = [f.strip() for f in line.split("\t")] if "\t" in line else line.split()
        if not any(fields):
            flush()
            continue
        if fields[0] == "-DOCSTART-":
            flush()
            continue
        if len(fields) < 2:
            raise ConvertError(f"{path}:{line_no}: expected a token and a tag column, got {line.strip()!r}")
        token, tag = fields[0], fields[-1]
        if not token:
            raise ConvertError(f"{path}:{line_no}: empty token")
        prefix, _ = _split_tag(tag, f"{path}:{line_no}")
        if scheme in ("bio", "iob1") and prefix in ("E", "S"):
            raise ConvertError(f"{path}:{line_no}: tag {tag!r} is not part of the {scheme.upper()} scheme")
        if not tokens:
            first = line_no
        tokens.append(token)
        tags.append(tag)
    flush()
    if not sentences:
        raise ConvertError(f"{path} is empty (no tokens)")
    info["scheme"] = detect_scheme(tags for _, _, tags in sentences) if scheme == "auto" else scheme
    space_between = nlp.lang not in _NO_SPACE_LANGS
    return [
        _Raw(_words_doc(nlp, toks, space_between), f"{path}:{line_no}", tags_to_spans(tgs))
        for line_no, toks, tgs in sentences
    ]


def _read_docbin_docs(path: Path, nlp: Language, spans_key: Optional[str], show_progress: bool) -> List[_Raw]:
    try:
        docbin = DocBin().from_disk(path)
    except Exception as err:  # spaCy raises assorted errors on a file that is not a DocBin
        raise ConvertError(f"{path} is not a spaCy DocBin ({type(err).__name__}: {err})") from None
    if len(docbin) == 0:
        raise ConvertError(f"{path} is empty (no docs)")
    raws: List[_Raw] = []
    keys_seen = set()
    for i, doc in enumerate(
        tqdm(docbin.get_docs(nlp.vocab), total=len(docbin), desc=f"{path.name}: docs", unit="doc",
             disable=not show_progress, leave=False)
    ):
        keys_seen.update(doc.spans.keys())
        spans = [(s.start, s.end, s.label_) for s in doc_spans(doc, spans_key)]
        raws.append(_Raw(doc, f"{path}: doc {i}", spans))
    if spans_key is not None and spans_key not in keys_seen:
        found = ", ".join(repr(k) for k in sorted(keys_seen)) or "none"
        raise ConvertError(f"{path} has no span group {spans_key!r} (span groups found: {found})")
    return raws


# --------------------------------------------------------------------------------------------------
# Shared steps


def _finish(
    raws: List[_Raw],
    fmt: str,
    labels: Optional[Sequence[str]],
    spans_key: Optional[str],
    label_map: Optional[Mapping[str, str]],
    problems: List[str],
) -> ReadResult:
    """Rename and filter labels, drop duplicates, detect nesting and set the spans on the docs."""
    if isinstance(labels, str):
        labels = [label.strip() for label in labels.split(",") if label.strip()]
    if labels is not None:
        labels = list(labels)
        if len(set(labels)) != len(labels):
            raise ConvertError(f"The label set {labels} names a label twice")
    allowed = set(labels) if labels is not None else None
    label_map = dict(label_map or {})
    n_filtered = 0
    nested = False
    seen = set()
    cleaned: List[List[SpanTuple]] = []
    for raw in raws:
        spans: List[SpanTuple] = []
        unique = set()
        for start, end, label in sorted(raw.spans, key=lambda s: (s[0], s[1])):
            label = label_map.get(label, label)
            if allowed is not None and label not in allowed:
                n_filtered += 1
                continue
            if (start, end, label) in unique:
                problems.append(
                    f"{raw.where}: duplicate span {label} [{start}, {end}) ({raw.doc[start:end].text!r}); skipped"
                )
                continue
            unique.add((start, end, label))
            spans.append((start, end, label))
            seen.add(label)
        nested = nested or _overlaps(spans)
        cleaned.append(spans)
    key = spans_key if spans_key is not None else (NESTED_SPANS_KEY if nested else None)
    docs = []
    for raw, spans in zip(raws, cleaned):
        _set_spans(raw.doc, spans, key)
        docs.append(raw.doc)
    return ReadResult(
        docs=docs,
        fmt=fmt,
        labels=labels if labels is not None else sorted(seen),
        spans_key=key,
        nested=nested,
        n_spans=sum(len(spans) for spans in cleaned),
        n_skipped=len(problems),  # every problem is one skipped span
        n_filtered=n_filtered,
        problems=problems,
    )


def _overlaps(spans: Sequence[SpanTuple]) -> bool:
    """Whether any two spans (sorted by start) share a token."""
    reach = -1
    for start, end, _ in spans:
        if start < reach:
            return True
        reach = max(reach, end)
    return False


def _set_spans(doc: Doc, spans: Sequence[SpanTuple], key: Optional[str]) -> None:
    objs = [Span(doc, start, end, label=label) for start, end, label in spans]
    if key is None:
        doc.ents = objs
    else:
        doc.spans[key] = objs
        doc.ents = filter_spans(objs)


def _iter_examples(docs: Iterable[Doc], labels: Sequence[str], spans_key: Optional[str]) -> Iterator[TrainingExample]:
    for doc in docs:
        mentions = [(span.label_, span.text) for span in doc_spans(doc, spans_key)]
        yield from build_examples(doc.text, mentions, labels)


def _get_nlp(nlp: Union[Language, str]) -> Language:
    if isinstance(nlp, Language):
        return nlp
    try:
        return spacy.blank(nlp)
    except Exception as err:
        raise ConvertError(f"Cannot make a blank spaCy pipeline for language {nlp!r}: {err}") from None


def _words_doc(nlp: Language, words: Sequence[str], space_between: bool) -> Doc:
    spaces = [space_between] * len(words)
    if spaces:
        spaces[-1] = False
    return Doc(nlp.vocab, words=list(words), spaces=spaces)


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


def _split_tag(tag: str, where: Optional[str] = None) -> Tuple[str, Optional[str]]:
    """(prefix, label) of a tag, the prefix normalised to B/I/E/S; ("O", None) for O."""
    if tag == "O":
        return "O", None
    match = _TAG_RE.match(tag)
    if match is None:
        place = f"{where}: " if where else ""
        raise ConvertError(f"{place}invalid tag {tag!r}; expected O or B-, I-, E-, S- (L-, U-) and a label")
    return _PREFIX[match.group(1)], match.group(2)


def _read_lines(path: Path) -> List[str]:
    """The lines of a UTF-8 file split on "\\n" only (other Unicode line breaks may sit inside texts)."""
    try:
        with open(path, encoding="utf-8-sig", newline="") as f:
            content = f.read()
    except UnicodeDecodeError as err:
        raise ConvertError(f"{path} is not UTF-8 text ({err.reason} at byte {err.start})") from None
    if not content.strip():
        raise ConvertError(f"{path} is empty")
    return [line[:-1] if line.endswith("\r") else line for line in content.split("\n")]


def _json_line(obj: object) -> str:
    line = json.dumps(obj, ensure_ascii=False)
    for char, escape in _LINE_BREAK_ESCAPES.items():
        if char in line:
            line = line.replace(char, escape)
    return line + "\n"


def _short(obj: object, limit: int = 80) -> str:
    text = json.dumps(obj, ensure_ascii=False)
    return text if len(text) <= limit else text[: limit - 3] + "..."


def _emit_warnings(problems: Sequence[str]) -> None:
    for message in problems[:_MAX_WARNINGS]:
        warnings.warn(message, ConvertWarning, stacklevel=3)
    if len(problems) > _MAX_WARNINGS:
        warnings.warn(
            f"... and {len(problems) - _MAX_WARNINGS} more skipped spans (ConvertReport.problems lists them all)",
            ConvertWarning,
            stacklevel=3,
        )
