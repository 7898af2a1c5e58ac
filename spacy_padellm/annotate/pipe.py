"""The pipeline of an annotation run: loading it, and annotating docs so that one failing doc costs only
itself (it comes back unannotated, its error in ``doc._.padellm_error``)."""

from __future__ import annotations

import logging
import sys
from typing import Any, List, Mapping, Optional, Sequence

from spacy.tokens import Doc

from .shards import Item

__all__ = ["ERROR_ATTR", "load_annotation_pipeline", "annotate_docs"]

logger = logging.getLogger(__name__)

#: Doc extension that holds the error message of a doc that could not be annotated (None otherwise).
ERROR_ATTR = "padellm_error"
if not Doc.has_extension(ERROR_ATTR):
    Doc.set_extension(ERROR_ATTR, default=None)


def load_annotation_pipeline(model: str, device: Optional[str] = None,
                             settings: Optional[Mapping[str, Any]] = None):
    """Load PIPELINE with every ``padellm_ner`` component on ``device``, with the decoding ``settings`` given
    (some ``DecodeSettings`` keys) and its model loaded, so that configuration errors (missing model, no
    labels) stop the run before any doc is processed.

    PIPELINE is a spaCy pipeline folder (``config.cfg`` inside) or a PaDeLLM model folder, which is wrapped
    in ``spacy.blank(lang)`` + ``padellm_ner`` (see :func:`spacy_padellm.pipeline.load.load_pipeline`)."""
    from ..pipeline.load import load_pipeline

    nlp = load_pipeline(model, config={**(settings or {}), **({"device": device} if device else {})})
    for _, pipe in nlp.pipeline:
        if hasattr(pipe, "_ensure_loaded"):
            pipe._ensure_loaded()
    return nlp


def _fresh(nlp, item: Item) -> Doc:
    return nlp.make_doc(item) if isinstance(item, str) else item.copy()


def _error_doc(nlp, item: Item, err: BaseException) -> Doc:
    """The input doc, unannotated, with the error in ``doc._.padellm_error``."""
    if isinstance(item, str):
        try:
            doc = nlp.tokenizer(item)  # no max_length check: a too-long text still comes back whole
        except Exception:
            doc = Doc(nlp.vocab, words=[item], spaces=[False]) if item else Doc(nlp.vocab)
    else:
        doc = item.copy()
    message = f"{type(err).__name__}: {err}".strip()
    doc._.set(ERROR_ATTR, message[:2000])
    return doc


def _free_gpu_memory() -> None:
    torch = sys.modules.get("torch")
    if torch is not None and torch.cuda.is_available():
        torch.cuda.empty_cache()


def _one_at_a_time(nlp, chunk: Sequence[Item]) -> List[Doc]:
    """The docs of a failed batch, each annotated alone; those that still fail come back marked."""
    docs: List[Doc] = []
    for item in chunk:
        try:
            docs.extend(nlp.pipe([_fresh(nlp, item)], batch_size=1))
        except Exception as one_err:
            _free_gpu_memory()
            docs.append(_error_doc(nlp, item, one_err))
    return docs


def annotate_docs(nlp, items: Sequence[Item], batch_size: int = 64) -> List[Doc]:
    """Run ``nlp.pipe`` over ``items`` and return exactly one Doc per item, in order.

    Each batch of ``batch_size`` docs is tried whole; if it raises, its docs are retried one at a time and
    only the ones that still raise come back unannotated, with ``doc._.padellm_error`` set. The items are
    never modified (Docs are copied).
    """
    out: List[Doc] = []
    for start in range(0, len(items), batch_size):
        chunk = items[start:start + batch_size]
        try:
            docs = list(nlp.pipe([_fresh(nlp, item) for item in chunk], batch_size=batch_size))
            if len(docs) != len(chunk):
                raise RuntimeError(f"the pipeline returned {len(docs)} docs for {len(chunk)}")
        except Exception as err:
            logger.warning("a batch of %d docs failed (%s: %s); retrying them one at a time",
                           len(chunk), type(err).__name__, err)
            _free_gpu_memory()
            docs = _one_at_a_time(nlp, chunk)
        out.extend(docs)
    return out
