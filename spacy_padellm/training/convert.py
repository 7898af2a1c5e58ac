"""Convert NER corpora into spaCy DocBins and PaDeLLM training examples.

Input formats
-------------
``spacy``
    A DocBin (``.spacy``). The spans are ``doc.ents``, or ``doc.spans[spans_key]`` when a
    ``spans_key`` is given (:mod:`.readers.docbin`).
``conll``
    Column files: one token per line with its tag in the LAST column, a blank line between
    sentences; BIO, IOB1 or BIOES tags, detected or given (:mod:`.readers.conll`).
``padellm``
    The JSONL of the PaDeLLM-NER authors: one JSON array per line,
    ``[text, [start, end, mention, label], ...]``, with token or character offsets, inclusive or
    exclusive ends, detected or given (:mod:`.readers.padellm_jsonl`).

Each reader returns docs without spans set and their spans as token offsets; :mod:`.spans` filters
the labels, drops duplicates, detects nesting and sets the spans on the docs.

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
import sys
from dataclasses import dataclass, field
from pathlib import Path
from typing import Dict, Iterable, Iterator, List, Mapping, Optional, Sequence, Union

import spacy
from spacy.language import Language
from spacy.tokens import Doc, DocBin

from ..text.protocol import TrainingExample, build_examples
from .augment import augment_docs, check_augment
from .readers.conll import SCHEMES, detect_scheme, read_conll_docs, tags_to_spans
from .readers.docbin import read_docbin_docs
from .readers.padellm_jsonl import OFFSET_CONVENTIONS, PadellmRecord, detect_offsets, read_padellm_docs
from .readers.raw import ConvertError, ConvertWarning, warn_skipped
from .spans import NESTED_SPANS_KEY, ReadResult, doc_spans, set_doc_spans

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
# Line breaks that str.splitlines() honours but JSON does not escape: written as \\u escapes so the
# output JSONL survives any line splitter.
_LINE_BREAK_ESCAPES = {"\x85": "\\u0085", "\u2028": "\\u2028", "\u2029": "\\u2029"}

PathLike = Union[str, Path]


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
    n_augmented: int = 0  # mention-replaced copies written after the docs read (``augment``)
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
        if self.n_augmented:
            lines.append(f"  {self.n_augmented} mention-replaced copies added (written after the {self.n_docs} docs; "
                         f"the {self.n_examples} examples include theirs)")
        if self.n_trimmed:
            lines.append(f"  {self.n_trimmed} spans trimmed of surrounding whitespace")
        if self.n_filtered:
            lines.append(f"  {self.n_filtered} spans dropped: label not in the label set")
        lines.append(f"  {self.n_skipped} spans skipped" + (" (see the warnings)" if self.n_skipped else ""))
        lines.extend(f"  -> {path}" for path in self.outputs)
        return "\n".join(lines)


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
    augment: int = 0,
    augment_rate: float = 0.5,
    augment_seed: int = 0,
) -> ConvertReport:
    """Convert one NER file into ``{stem}.spacy``, ``{stem}.padellm.jsonl`` and ``{stem}.labels.json``.

    ``fmt`` is ``"conll"``, ``"padellm"`` or ``"spacy"`` (None: from the extension or content);
    ``lang`` picks the blank spaCy pipeline; ``labels`` fixes the label set and its order (spans of
    other labels are dropped); ``spans_key`` reads (spacy input) and writes all spans in
    ``doc.spans[spans_key]``; ``offsets`` is a padellm offset convention or ``"auto"``; ``scheme``
    is ``"bio"``, ``"iob1"``, ``"bioes"`` or ``"auto"`` for conll files; ``label_map`` renames labels.
    With ``show_progress`` a progress bar is shown and the number of skipped spans printed at the end.
    ``augment`` > 0 (training files only) adds up to that many copies of each doc with its outermost mentions
    replaced, each with probability ``augment_rate``, by other mentions of their label from the same file
    (:mod:`.augment`); both outputs hold them after the docs read.
    """
    if augment:
        check_augment(augment, augment_rate)
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
    n_read = len(result.docs)
    if augment:
        result.docs = augment_docs(result.docs, augment, augment_rate, augment_seed, result.spans_key)
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
        n_docs=n_read,
        n_spans=result.n_spans,
        n_augmented=len(result.docs) - n_read,
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
        raws = read_padellm_docs(path, nlp, offsets, problems, info, show_progress)
    elif fmt == "conll":
        raws = read_conll_docs(path, nlp, scheme, info, show_progress)
    else:
        raws = read_docbin_docs(path, nlp, spans_key, show_progress)
    result = set_doc_spans(raws, fmt, labels, spans_key, label_map, problems)
    result.offsets = info.get("offsets")  # type: ignore[assignment]
    result.offset_matches = info.get("offset_matches", {})  # type: ignore[assignment]
    result.scheme = info.get("scheme")  # type: ignore[assignment]
    result.n_trimmed = int(info.get("n_trimmed", 0))  # type: ignore[arg-type]
    warn_skipped(problems)
    return result


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


def _json_line(obj: object) -> str:
    line = json.dumps(obj, ensure_ascii=False)
    for char, escape in _LINE_BREAK_ESCAPES.items():
        if char in line:
            line = line.replace(char, escape)
    return line + "\n"
