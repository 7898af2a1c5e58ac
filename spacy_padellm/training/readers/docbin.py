"""Reader of spaCy DocBins (``.spacy``): the spans are ``doc.ents``, or ``doc.spans[spans_key]``."""

from __future__ import annotations

from pathlib import Path
from typing import List, Optional

from spacy.language import Language
from spacy.tokens import DocBin
from tqdm import tqdm

from ..spans import doc_spans
from .raw import ConvertError, RawDoc


def read_docbin_docs(path: Path, nlp: Language, spans_key: Optional[str], show_progress: bool) -> List[RawDoc]:
    """The docs of a DocBin as raw docs; a ``spans_key`` that no doc has is an error."""
    try:
        docbin = DocBin().from_disk(path)
    except Exception as err:  # spaCy raises assorted errors on a file that is not a DocBin
        raise ConvertError(f"{path} is not a spaCy DocBin ({type(err).__name__}: {err})") from None
    if len(docbin) == 0:
        raise ConvertError(f"{path} is empty (no docs)")
    raws: List[RawDoc] = []
    keys_seen = set()
    for i, doc in enumerate(
        tqdm(docbin.get_docs(nlp.vocab), total=len(docbin), desc=f"{path.name}: docs", unit="doc",
             disable=not show_progress, leave=False)
    ):
        keys_seen.update(doc.spans.keys())
        spans = [(s.start, s.end, s.label_) for s in doc_spans(doc, spans_key)]
        raws.append(RawDoc(doc, f"{path}: doc {i}", spans))
    if spans_key is not None and spans_key not in keys_seen:
        found = ", ".join(repr(k) for k in sorted(keys_seen)) or "none"
        raise ConvertError(f"{path} has no span group {spans_key!r} (span groups found: {found})")
    return raws
