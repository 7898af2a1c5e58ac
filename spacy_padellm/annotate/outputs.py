"""Output shards: the DocBin (with user data), the optional JSONL of offsets, labels and probabilities,
the input records skipped as unreadable (``<name>.rejects.jsonl``, only if there are any) and the per-shard
summary, each written under a temporary name and moved into place with ``os.replace``, the DocBin last. A
shard whose DocBin exists is finished, so a re-run skips it and a crash loses no finished shard; the
summary tells a re-run how many of its docs failed and how many records were rejected."""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any, Dict, List, Optional, Sequence, Tuple

from spacy.tokens import Doc, DocBin

from .pipe import ERROR_ATTR
from .shards import Reject, Shard, read_shard

__all__ = ["doc_to_record", "write_shard", "finished_failures", "finished_rejects", "complete_jsonl"]


def _span_record(span) -> Dict[str, Any]:
    prob = span._.get("padellm_prob") if span.has_extension("padellm_prob") else None
    return {"start": span.start_char, "end": span.end_char, "label": span.label_, "text": span.text,
            "prob": prob}


def doc_to_record(doc: Doc, index: int, line: Optional[int] = None) -> Dict[str, Any]:
    """One JSONL output record: the doc's position in its shard, text, entities with character offsets,
    labels and probabilities, span groups (nested mode) and the error, if the doc failed."""
    record: Dict[str, Any] = {"index": index, "line": line, "text": doc.text,
                              "ents": [_span_record(ent) for ent in doc.ents]}
    if doc.spans:
        record["spans"] = {key: [_span_record(span) for span in group] for key, group in doc.spans.items()}
    record["error"] = doc._.get(ERROR_ATTR)
    return record


def atomic_write(path: Path, data: bytes) -> None:
    """Write ``data`` to a temporary file beside ``path``, flush it to disk, then ``os.replace`` it."""
    path.parent.mkdir(parents=True, exist_ok=True)
    tmp = path.with_name(f".{path.name}.tmp-{os.getpid()}")
    try:
        with open(tmp, "wb") as f:
            f.write(data)
            f.flush()
            os.fsync(f.fileno())
        os.replace(tmp, path)
    finally:
        if tmp.exists():
            tmp.unlink()


def _jsonl_bytes(docs: Sequence[Doc], lines: Sequence[Optional[int]]) -> bytes:
    return "".join(json.dumps(doc_to_record(doc, i, line), ensure_ascii=False) + "\n"
                   for i, (doc, line) in enumerate(zip(docs, lines))).encode("utf8")


def _write_rejects(shard: Shard) -> None:
    """The shard's rejected records, one JSON object a line; no file (an earlier one removed) if none."""
    if shard.rejects:
        atomic_write(shard.rejects_out, "".join(json.dumps(r.record(), ensure_ascii=False) + "\n"
                                                for r in shard.rejects).encode("utf8"))
    elif shard.rejects_out.exists():
        shard.rejects_out.unlink()


def write_shard(shard: Shard, docs: Sequence[Doc], lines: Sequence[Optional[int]], *, jsonl: bool,
                seconds: float = 0.0) -> List[Tuple[int, Optional[int], str]]:
    """Write a finished shard (JSONL, rejects, summary, then the DocBin that marks it done); return its
    failures as (index, line, error)."""
    if len(docs) != shard.n_docs:
        raise RuntimeError(f"{shard.path}: {len(docs)} output docs for {shard.n_docs} input docs")
    failures = [(i, line, doc._.get(ERROR_ATTR)) for i, (doc, line) in enumerate(zip(docs, lines))
                if doc._.get(ERROR_ATTR)]
    docbin = DocBin(store_user_data=True)
    for doc in docs:
        docbin.add(doc)
    if jsonl:
        atomic_write(shard.jsonl_out, _jsonl_bytes(docs, lines))
    _write_rejects(shard)
    summary = {"input": str(shard.path), "docs": len(docs), "failed": len(failures), "rejected": len(shard.rejects),
               "seconds": round(seconds, 3)}
    atomic_write(shard.state, json.dumps(summary).encode("utf8"))
    atomic_write(shard.out, docbin.to_bytes())
    return failures


def finished_failures(shard: Shard) -> int:
    """Failed docs in a shard written by an earlier run (its summary, else counted in the DocBin)."""
    try:
        return int(json.loads(shard.state.read_text())["failed"])
    except (OSError, ValueError, KeyError, TypeError):
        from spacy.vocab import Vocab

        return sum(1 for doc in DocBin().from_disk(shard.out).get_docs(Vocab()) if doc._.get(ERROR_ATTR))


def finished_rejects(shard: Shard) -> int:
    """Input records rejected from a shard written by an earlier run (its summary, else its rejects file)."""
    try:
        return int(json.loads(shard.state.read_text()).get("rejected", 0))
    except (OSError, ValueError, AttributeError, TypeError):
        if not shard.rejects_out.exists():
            return 0
        return sum(1 for line in shard.rejects_out.read_text(encoding="utf8").splitlines() if line.strip())


def complete_jsonl(shard: Shard, text_field: str) -> None:
    """A shard finished by a run without ``--jsonl``: write its JSONL from the DocBin, not the model."""
    from spacy.vocab import Vocab

    docs = list(DocBin().from_disk(shard.out).get_docs(Vocab()))
    lines: List[Optional[int]] = [None] * len(docs)
    if shard.path.exists():
        skipped: List[Reject] = []  # the rejects file has them already
        records = [line for line, _ in read_shard(shard.path, shard.fmt, text_field, rejects=skipped)]
        if len(records) == len(docs):
            lines = records
    atomic_write(shard.jsonl_out, _jsonl_bytes(docs, lines))
