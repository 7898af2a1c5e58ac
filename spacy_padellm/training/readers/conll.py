"""Reader of CoNLL/IOB column files.

One token per line with its tag in the LAST column (tab or space separated), a blank line between
sentences, ``-DOCSTART-`` lines skipped. Any label names. The tags follow one of three schemes:

* BIO (IOB2): every entity starts with ``B-``;
* IOB1: entities start with ``I-``; ``B-`` only separates two adjacent entities of one label;
* BIOES: ``S-`` marks a one-token entity and ``E-`` the last token of a longer one (BILOU's
  ``L-``/``U-`` are read as ``E-``/``S-``).

``scheme="auto"`` reports BIOES if any ``S-``/``E-`` tag occurs, IOB1 if some ``I-`` tag starts
an entity (it follows neither ``B-`` nor ``I-`` of its label), else BIO. One tolerant decoder
reads all three (``B-`` and ``S-`` always start an entity, ``I-``/``E-`` continue one of their
label or else start one, ``E-``/``S-``/``O`` end one), so the scheme only decides which tag
prefixes are allowed when it is given explicitly.

The tokens become ``Doc(vocab, words=tokens, spaces=...)`` with one space between tokens, so
``doc.text == " ".join(tokens)``; for Chinese, Japanese and Thai the tokens are joined without spaces.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Dict, Iterable, List, Optional, Sequence, Tuple

from spacy.language import Language
from tqdm import tqdm

from .raw import NO_SPACE_LANGS, ConvertError, RawDoc, SpanTuple, read_lines, words_doc

SCHEMES = ("bio", "iob1", "bioes")

_SCHEME_ALIASES = {"iob2": "bio", "bilou": "bioes", "iobes": "bioes"}
_TAG_RE = re.compile(r"^([BIESLU])-(\S.*)$")
_PREFIX = {"B": "B", "I": "I", "E": "E", "L": "E", "S": "S", "U": "S"}


def read_conll_docs(
    path: Path, nlp: Language, scheme: str, info: Dict[str, object], show_progress: bool
) -> List[RawDoc]:
    """The sentences of a column file as raw docs; ``info["scheme"]`` is set to the scheme used."""
    scheme = scheme.lower()
    scheme = _SCHEME_ALIASES.get(scheme, scheme)
    if scheme != "auto" and scheme not in SCHEMES:
        raise ConvertError(f"Unknown tag scheme {scheme!r}; choose auto or one of: {', '.join(SCHEMES)}")
    sentences = _read_sentences(path, scheme, show_progress)
    info["scheme"] = detect_scheme(tags for _, _, tags in sentences) if scheme == "auto" else scheme
    space_between = nlp.lang not in NO_SPACE_LANGS
    return [
        RawDoc(words_doc(nlp, toks, space_between), f"{path}:{line_no}", tags_to_spans(tgs))
        for line_no, toks, tgs in sentences
    ]


def _read_sentences(path: Path, scheme: str, show_progress: bool) -> List[Tuple[int, List[str], List[str]]]:
    """(first line, tokens, tags) of each sentence; tags outside an explicit ``scheme`` are an error."""
    sentences: List[Tuple[int, List[str], List[str]]] = []
    tokens: List[str] = []
    tags: List[str] = []
    first = 0

    def flush() -> None:
        nonlocal tokens, tags
        if tokens:
            sentences.append((first, tokens, tags))
        tokens, tags = [], []

    lines = read_lines(path)
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
        prefix, _ = split_tag(tag, f"{path}:{line_no}")
        if scheme in ("bio", "iob1") and prefix in ("E", "S"):
            raise ConvertError(f"{path}:{line_no}: tag {tag!r} is not part of the {scheme.upper()} scheme")
        if not tokens:
            first = line_no
        tokens.append(token)
        tags.append(tag)
    flush()
    if not sentences:
        raise ConvertError(f"{path} is empty (no tokens)")
    return sentences


def detect_scheme(tag_sequences: Iterable[Sequence[str]]) -> str:
    """``"bioes"`` if any S-/E- (or U-/L-) tag occurs, ``"iob1"`` if an I- tag starts an entity, else ``"bio"``."""
    iob1 = False
    for tags in tag_sequences:
        prev_label: Optional[str] = None  # label of the B-/I- tag before, None after O
        for tag in tags:
            prefix, label = split_tag(tag)
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
        prefix, tag_label = split_tag(tag)
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


def split_tag(tag: str, where: Optional[str] = None) -> Tuple[str, Optional[str]]:
    """(prefix, label) of a tag, the prefix normalised to B/I/E/S; ("O", None) for O."""
    if tag == "O":
        return "O", None
    match = _TAG_RE.match(tag)
    if match is None:
        place = f"{where}: " if where else ""
        raise ConvertError(f"{place}invalid tag {tag!r}; expected O or B-, I-, E-, S- (L-, U-) and a label")
    return _PREFIX[match.group(1)], match.group(2)
