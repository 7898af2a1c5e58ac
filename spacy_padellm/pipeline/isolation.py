"""One document cannot fail another's batch.

The windows of a batch's docs go to the decoder in one call. When that call raises, each doc's windows are
decoded again on their own: the docs that decode come back with their results, a doc that still fails comes
back without entities, counted (``doc._.padellm["failed"]``) and named in a warning by its index in the
``nlp.pipe`` call. Only when every doc that had text to decode fails on its own is the error raised: then it
is no one doc's fault (the model, the device, memory).
"""

from __future__ import annotations

import logging
from typing import Callable, Dict, List, Optional, Sequence, TypeVar

__all__ = ["decode_isolated", "guarded", "settle_failures"]

logger = logging.getLogger("spacy_padellm")

T = TypeVar("T")


def guarded(failures: Dict[int, Exception], doc: int, fn: Callable[[], T], default: T) -> T:
    """``fn()``, or ``default`` with the error recorded under ``doc`` in ``failures``."""
    try:
        return fn()
    except Exception as err:  # noqa: BLE001 - any error of one doc's work is that doc's
        failures.setdefault(doc, err)
        return default


def decode_isolated(decoder, requests: Sequence, owners: Sequence[int],
                    failures: Dict[int, Exception]) -> List[Optional[object]]:
    """``decoder.decode(requests)``; if it raises, each doc's requests (``owners[n]``: the doc of request n)
    decoded on their own. A doc that fails alone is recorded in ``failures`` and its results are None."""
    if not requests:
        return []
    docs = list(dict.fromkeys(owners))
    try:
        return list(decoder.decode(list(requests)))
    except Exception as err:  # noqa: BLE001 - retried doc by doc below
        if len(docs) == 1:
            failures.setdefault(docs[0], err)
            return [None] * len(requests)
    results: List[Optional[object]] = [None] * len(requests)
    for doc in docs:
        rows = [n for n, owner in enumerate(owners) if owner == doc]
        out = guarded(failures, doc, lambda: decoder.decode([requests[n] for n in rows]), None)
        for n, result in zip(rows, out or ()):
            results[n] = result
    return results


def settle_failures(failures: Dict[int, Exception], attempted: Sequence[int], first: int) -> None:
    """Raise when every doc of ``attempted`` (the batch's docs with text to decode) failed; else warn once per
    failed doc, named by its index in the call (``first``: the index of the batch's first doc)."""
    if not failures:
        return
    if set(attempted) <= set(failures):
        raise next(iter(failures.values()))
    for doc, err in sorted(failures.items()):
        logger.warning("spacy_padellm: doc %d of the call could not be decoded (%s: %s); it comes back without "
                       "entities, doc._.padellm['failed'] = 1", first + doc, type(err).__name__, err)
